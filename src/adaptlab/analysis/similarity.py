"""How alike two sets of representations of the same examples are: linear CKA and RSA.

Both compare examples-by-examples structure, so the two representations may have different
widths (a block before and after fine-tuning, or two backbones). Written here because no
maintained library in our dependencies computes them (torchmetrics and scikit-learn have
neither), and both are a few lines of linear algebra on an ``[N, N]`` matrix.

>>> import torch
>>> x = torch.randn(32, 8, dtype=torch.float64)
>>> round(linear_cka(x, 3 * x @ torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))[0]), 6)
1.0
"""

from __future__ import annotations

import torch


def _centred_gram(x: torch.Tensor) -> torch.Tensor:
    """``H X Xᵀ H`` (``H`` the centring matrix), computed as the Gram of centred rows."""
    x = x - x.mean(dim=0, keepdim=True)
    return x @ x.T


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) of ``x`` ``[N, p]`` and ``y``
    ``[N, q]``, rows the same N examples: 1 for representations equal up to rotation and
    isotropic scaling, near 0 for unrelated ones.

    The Gram form (``N x N``) keeps wide feature maps (a flattened CNN map) cheap."""
    _check_pair(x, y)
    gx, gy = _centred_gram(x.double()), _centred_gram(y.double())
    denominator = gx.norm() * gy.norm()
    if denominator == 0:
        # A representation that is the same for every example carries no structure to
        # compare: equal if both are constant, else nothing in common.
        return 1.0 if gx.norm() == gy.norm() else 0.0
    return float((gx * gy).sum() / denominator)


def dissimilarity_matrix(x: torch.Tensor) -> torch.Tensor:
    """The representational dissimilarity matrix: ``1 - Pearson correlation`` between every
    two examples' representations (Kriegeskorte et al. 2008's usual choice)."""
    x = x.double()
    x = x - x.mean(dim=1, keepdim=True)
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return 1.0 - x @ x.T


def rsa(x: torch.Tensor, y: torch.Tensor) -> float:
    """Representational similarity analysis: the Spearman correlation of the two
    representations' dissimilarity matrices over the example pairs (their upper triangles)."""
    from scipy.stats import spearmanr

    _check_pair(x, y)
    rows, cols = torch.triu_indices(x.shape[0], x.shape[0], offset=1)
    dx = dissimilarity_matrix(x)[rows, cols].numpy()
    dy = dissimilarity_matrix(y)[rows, cols].numpy()
    if dx.std() == 0 or dy.std() == 0:
        return 1.0 if (dx == dy).all() else 0.0
    return float(spearmanr(dx, dy).statistic)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"representations must be [examples, features], got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"the two representations hold {x.shape[0]} and {y.shape[0]} examples")
    if x.shape[0] < 3:
        raise ValueError(f"similarity needs at least 3 examples, got {x.shape[0]}")
