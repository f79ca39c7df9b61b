"""Side weights from the backbone's own weights, pruned to the side's width.

A unit is ranked by the L1 norm of the rows and columns that read or write it, taken of the
weights themselves (magnitude pruning, what ``apply`` does: it runs on every reload, where no
data is at hand) or of each weight's Fisher information (LST's own ranking, Sung et al. 2022,
over 1,024 training samples: :mod:`.fisher`, once at the start of a new run). Either ranking
selects the same number of units, so the side's shapes, and with them every reload, are the
same; the functions here read scores and weights from separate modules for that reason.

Every selection is sorted ascending, so a side unit keeps the relative order it had in the
backbone, and ties are broken by position (a stable sort), so the indices are reproducible.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn


def side_width(width: int, reduction: int) -> int:
    """The side's share of ``width`` units: ``width // reduction``, at least one."""
    return max(1, width // reduction)


def top_indices(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Positions of the ``keep`` largest ``scores`` (earlier position first on ties), sorted
    ascending."""
    order = torch.sort(scores.detach().float(), descending=True, stable=True).indices
    return torch.sort(order[:keep]).values


def rows_l1(weight: torch.Tensor) -> torch.Tensor:
    """L1 norm of each output unit's weights (the rows of a Linear, the filters of a conv)."""
    return weight.detach().abs().flatten(1).sum(1)


def columns_l1(weight: torch.Tensor) -> torch.Tensor:
    """L1 norm of the weights reading each input unit of a Linear or conv."""
    return weight.detach().abs().transpose(0, 1).flatten(1).sum(1)


# -- transformer blocks ----------------------------------------------------------------------
@dataclass
class TransformerWeights:
    """One pre-trained transformer block's tensors in a family-neutral form: separate
    query/key/value ``[H*dh, D]``, attention output ``[D, H*dh]``, feed-forward in ``[F, D]``
    and out ``[D, F]``, and the two LayerNorms. ``post_norm``: BERT's order (norm after the
    residual add) rather than the pre-norm order of ViTs."""

    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    proj: nn.Linear
    fc1: nn.Linear
    fc2: nn.Linear
    norm1: nn.LayerNorm
    norm2: nn.LayerNorm
    heads: int
    post_norm: bool
    # The block's dropout while fine-tuned: of the attention probabilities, and of each
    # sublayer's output before the residual add (BERT's attention and hidden dropout).
    attention_dropout: float = 0.0
    output_dropout: float = 0.0

    @property
    def width(self) -> int:
        return self.proj.out_features

    @property
    def head_dim(self) -> int:
        return self.query.out_features // self.heads


def split_fused_qkv(qkv: nn.Linear) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
    """A fused ``qkv`` Linear (timm, our point transformer: rows q, then k, then v) as three
    Linears sharing its tensors' values."""
    out = qkv.out_features // 3
    parts = []
    for index in range(3):
        part = nn.Linear(qkv.in_features, out, bias=qkv.bias is not None)
        rows = slice(index * out, (index + 1) * out)
        with torch.no_grad():
            part.weight.copy_(qkv.weight[rows])
            if qkv.bias is not None:
                part.bias.copy_(qkv.bias[rows])
        parts.append(part)
    return parts[0], parts[1], parts[2]


def hidden_scores(blocks: list[TransformerWeights]) -> torch.Tensor:
    """Importance of each residual-stream unit, summed over every block: the L1 of the
    columns that read it (q, k, v, fc1) and of the rows that write it (proj, fc2). One
    selection serves every side block, since the residual stream's units are shared."""
    total = torch.zeros(blocks[0].width)
    for w in blocks:
        for reader in (w.query, w.key, w.value, w.fc1):
            total += columns_l1(reader.weight)
        for writer in (w.proj, w.fc2):
            total += rows_l1(writer.weight)
    return total


def head_scores(w: TransformerWeights) -> torch.Tensor:
    """Importance of each attention unit ``[H*dh]``: its q, k and v rows and its proj column."""
    return (rows_l1(w.query.weight) + rows_l1(w.key.weight) + rows_l1(w.value.weight)
            + columns_l1(w.proj.weight))


def ffn_scores(w: TransformerWeights) -> torch.Tensor:
    """Importance of each feed-forward neuron: its fc1 row and its fc2 column."""
    return rows_l1(w.fc1.weight) + columns_l1(w.fc2.weight)


@dataclass
class TransformerSelection:
    """The kept units of one block: residual stream, attention (per head, flattened), FFN."""

    hidden: torch.Tensor
    attention: torch.Tensor
    ffn: torch.Tensor


def select_transformer_units(w: TransformerWeights, hidden: torch.Tensor,
                             reduction: int) -> TransformerSelection:
    """Keep every head (LST divides the per-head width, not the head count) with its
    ``head_dim // reduction`` strongest units, and the ``ffn // reduction`` strongest neurons."""
    keep = side_width(w.head_dim, reduction)
    per_head = head_scores(w).reshape(w.heads, w.head_dim)
    attention = torch.cat([top_indices(per_head[h], keep) + h * w.head_dim
                           for h in range(w.heads)])
    ffn = top_indices(ffn_scores(w), side_width(w.fc1.out_features, reduction))
    return TransformerSelection(hidden, attention, ffn)


def pruned_linear(linear: nn.Linear, rows: torch.Tensor, columns: torch.Tensor) -> nn.Linear:
    """A new Linear holding ``linear``'s weights at ``rows`` x ``columns`` (and bias rows)."""
    out = nn.Linear(len(columns), len(rows), bias=linear.bias is not None)
    with torch.no_grad():
        out.weight.copy_(linear.weight.detach()[rows][:, columns])
        if linear.bias is not None:
            out.bias.copy_(linear.bias.detach()[rows])
    return out


def pruned_layer_norm(norm: nn.LayerNorm, units: torch.Tensor) -> nn.LayerNorm:
    out = nn.LayerNorm(len(units), eps=norm.eps, elementwise_affine=norm.elementwise_affine,
                       bias=norm.bias is not None)
    if norm.elementwise_affine:
        with torch.no_grad():
            out.weight.copy_(norm.weight.detach()[units])
            if norm.bias is not None:
                out.bias.copy_(norm.bias.detach()[units])
    return out


# -- convolutional blocks ----------------------------------------------------------------------
def pruned_conv(conv: nn.Conv2d, out_units: torch.Tensor, in_units: torch.Tensor) -> nn.Conv2d:
    """A copy of ``conv`` (its class, stride, padding rule kept: timm's ``Conv2dSame``)
    restricted to ``out_units`` x ``in_units``; a depthwise conv keeps ``out_units`` only."""
    out = copy.deepcopy(conv)
    depthwise = conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1
    if not depthwise and conv.groups != 1:
        raise ValueError(f"grouped convolution ({conv.groups} groups) is not pruned")
    weight = conv.weight.detach()[out_units]
    if not depthwise:
        weight = weight[:, in_units]
    out.weight = nn.Parameter(weight.clone())
    if conv.bias is not None:
        out.bias = nn.Parameter(conv.bias.detach()[out_units].clone())
    out.out_channels = len(out_units)
    out.in_channels = len(out_units) if depthwise else len(in_units)
    out.groups = len(out_units) if depthwise else 1
    return out


def pruned_batch_norm(norm: nn.BatchNorm2d, units: torch.Tensor) -> nn.BatchNorm2d:
    """A copy of ``norm`` (timm's ``BatchNormAct2d`` keeps its activation) on ``units``."""
    out = copy.deepcopy(norm)
    out.num_features = len(units)
    if norm.affine:
        out.weight = nn.Parameter(norm.weight.detach()[units].clone())
        out.bias = nn.Parameter(norm.bias.detach()[units].clone())
    if norm.track_running_stats:
        out.running_mean = norm.running_mean[units].clone()
        out.running_var = norm.running_var[units].clone()
    return out


def _is_depthwise_separable(block: nn.Module) -> bool:
    return all(hasattr(block, n) for n in ("conv_dw", "bn1", "conv_pw", "bn2")) \
        and not hasattr(block, "conv_pwl")


def _is_inverted_residual(block: nn.Module) -> bool:
    return all(hasattr(block, n) for n in ("conv_pw", "bn1", "conv_dw", "bn2", "conv_pwl",
                                           "bn3"))


def is_prunable_conv_block(block: nn.Module) -> bool:
    """timm's EfficientNet / MobileNet blocks (depthwise-separable, inverted residual) without
    squeeze-excitation, or a Sequential of them (a stage)."""
    if isinstance(block, nn.Sequential):
        return len(block) > 0 and all(is_prunable_conv_block(b) for b in block)
    if not (_is_depthwise_separable(block) or _is_inverted_residual(block)):
        return False
    return isinstance(getattr(block, "se", nn.Identity()), nn.Identity)


def conv_input_scores(block: nn.Module) -> torch.Tensor:
    """Importance of a conv block's input channels: the weights of its first convolution
    that read each one."""
    first = block[0] if isinstance(block, nn.Sequential) else block
    if isinstance(first, nn.Sequential):
        return conv_input_scores(first)
    if _is_inverted_residual(first):
        return columns_l1(first.conv_pw.weight)
    return rows_l1(first.conv_dw.weight)  # depthwise: one filter per input channel


def prune_conv_block(block: nn.Module, in_units: torch.Tensor, reduction: int,
                     ranked: nn.Module | None = None) -> tuple[nn.Module, torch.Tensor]:
    """A copy of a timm conv block (or a stage of them) narrowed to ``in_units`` of its input
    and the ``1/reduction`` of its other channels that ``ranked`` (the block shaped module
    holding the scores; by default the block itself) ranks highest; returns it and the kept
    output channels. A block with a residual shortcut keeps its input's channels as its
    output's, so the shortcut still adds matching channels."""
    ranked = block if ranked is None else ranked
    if isinstance(block, nn.Sequential):
        blocks = []
        for inner, inner_ranked in zip(block, ranked, strict=True):
            pruned, in_units = prune_conv_block(inner, in_units, reduction, inner_ranked)
            blocks.append(pruned)
        return nn.Sequential(*blocks), in_units
    out = copy.deepcopy(block)
    skip = bool(getattr(block, "has_skip", False))
    if _is_inverted_residual(block):
        mid_scores = (rows_l1(ranked.conv_pw.weight) + rows_l1(ranked.conv_dw.weight)
                      + columns_l1(ranked.conv_pwl.weight))
        mid = top_indices(mid_scores, side_width(block.conv_pw.out_channels, reduction))
        out_units = in_units if skip else top_indices(
            rows_l1(ranked.conv_pwl.weight), side_width(block.conv_pwl.out_channels, reduction))
        out.conv_pw = pruned_conv(block.conv_pw, mid, in_units)
        out.bn1 = pruned_batch_norm(block.bn1, mid)
        out.conv_dw = pruned_conv(block.conv_dw, mid, mid)
        out.bn2 = pruned_batch_norm(block.bn2, mid)
        out.conv_pwl = pruned_conv(block.conv_pwl, out_units, mid)
        out.bn3 = pruned_batch_norm(block.bn3, out_units)
        return out, out_units
    out_units = in_units if skip else top_indices(
        rows_l1(ranked.conv_pw.weight), side_width(block.conv_pw.out_channels, reduction))
    out.conv_dw = pruned_conv(block.conv_dw, in_units, in_units)
    out.bn1 = pruned_batch_norm(block.bn1, in_units)
    out.conv_pw = pruned_conv(block.conv_pw, out_units, in_units)
    out.bn2 = pruned_batch_norm(block.bn2, out_units)
    return out, out_units
