"""The adapted weight, as a ``torch.nn.utils.parametrize`` parametrization of the layer's own
``weight``: the layer keeps its type (a Linear stays a Linear to every other part of the
library: the layer map, explainers, the cost meter) and torch recomputes the weight from the
trained singular values at each forward.

SVFit splits ``W = U_r diag(S_r) V_r^T + W_e`` and trains the top-r singular values ``s`` with
``U_r``, ``V_r`` and the residual ``W_e`` frozen. This layer computes the same matrix as

    W_adapted = W_e + U_r diag(s) V_r^T = W + U_r diag(s - S_r) V_r^T

from the pre-trained ``W`` it already holds: the residual is never stored as a second
``out x in`` matrix, and before training (``s == S_r``) the shift is exactly zero, so the
adapted layer reproduces ``W`` bit for bit rather than up to the SVD's rounding.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from adaptlab.strategies.svfit.spectrum import Spectrum

PARAMETRIZED = "weight"
# State-dict infix of this parametrization's own tensors, and the key of the frozen weight.
OWN_INFIX = f".parametrizations.{PARAMETRIZED}.0."
ORIGINAL_SUFFIX = f".parametrizations.{PARAMETRIZED}.original"


class SingularValueShift(nn.Module):
    """``weight -> weight + left diag(singular_values - pretrained_values) right^T`` (reshaped
    to the weight's shape). ``singular_values`` is the one trained tensor; ``left``, ``right``
    and ``pretrained_values`` are recomputed by the strategy's ``apply`` on every build, so
    they are not part of the state dict (non-persistent buffers). ``enabled = False`` gives
    the pre-trained weight back (the unadapted model)."""

    def __init__(self, spectrum: Spectrum) -> None:
        super().__init__()
        self.register_buffer("left", spectrum.left, persistent=False)
        self.register_buffer("right", spectrum.right, persistent=False)
        self.register_buffer("pretrained_values", spectrum.values, persistent=False)
        self.singular_values = nn.Parameter(spectrum.values.clone())
        self.enabled = True

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        scaled = self.left * (self.singular_values - self.pretrained_values)
        return weight + (scaled @ self.right.T).reshape(weight.shape).to(weight.dtype)

    def extra_repr(self) -> str:
        return f"rank={self.singular_values.numel()}"


def attach(module: nn.Module, spectrum: Spectrum) -> SingularValueShift:
    """Parametrize ``module.weight`` with the shift; returns it."""
    shift = SingularValueShift(spectrum)
    # unsafe=True: skip torch's trial forward at registration (a full out x in product per
    # layer for nothing: the shift is zero by construction and keeps shape and dtype).
    parametrize.register_parametrization(module, PARAMETRIZED, shift, unsafe=True)
    return shift


def shifts(model: nn.Module) -> list[tuple[str, SingularValueShift]]:
    """(name of the layer, its shift) for every layer of ``model`` this strategy adapted."""
    found = []
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, PARAMETRIZED):
            for item in module.parametrizations[PARAMETRIZED]:
                if isinstance(item, SingularValueShift):
                    found.append((name, item))
    return found


@torch.no_grad()
def folded_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict with every shift folded into a plain ``weight`` under the
    layer's own key: the state dict of the model before ``apply``."""
    owners = {name for name, _ in shifts(model)}
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        owner = key.split(".parametrizations.", 1)[0]
        if owner not in owners:
            out[key] = value.detach()
        elif key == owner + ORIGINAL_SUFFIX:
            weight = getattr(model.get_submodule(owner), PARAMETRIZED)
            out[f"{owner}.{PARAMETRIZED}"] = weight.detach().clone()
        elif not key.startswith(owner + OWN_INFIX):
            out[key] = value.detach()  # the layer's other tensors (its bias)
    return out
