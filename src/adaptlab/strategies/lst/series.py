"""The ladder for Fracast, a dilated-convolution series encoder: one rung per stage of its
dilation ladder, each side stage the backbone's block (and its scale conditioning) narrowed
to ``d / r`` channels and run at that stage's dilation.

Fracast applies one shared block at ten dilations, so the rungs are the block's calls, not
its layer-map entries. Its task heads read per-step hidden states: the pre-trained quantile
head (forecasting) reads them as they are, and the classification encoder pools them. The
side's last state is therefore projected back to the backbone's width at every step and
added to the frozen backbone's own final states, with the projection starting at zero: the
pre-trained head keeps reading the states it was trained on, and the ladder starts as the
zero-shot model (LST's side output replaces the backbone's; a replacement here would start
the pre-trained head from states it has never seen). The backbone's final states come from
the same no-grad forward as the taps, so nothing of the backbone is saved for backward.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from adaptlab.strategies.lst.families import SideDesign, UnitScores, side_family
from adaptlab.strategies.lst.pruning import (
    columns_l1,
    pruned_linear,
    rows_l1,
    side_width,
    top_indices,
)


class SideStage(nn.Module):
    """One rung of the side: the stage's scale conditioning (FiLM) and block, narrowed, at
    the stage's dilation, as the backbone runs ``block(scale(x, d), d)``."""

    def __init__(self, scale: nn.Module | None, block: nn.Module, dilation: int) -> None:
        super().__init__()
        self.scale, self.block, self.dilation = scale, block, int(dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            x = self.scale(x, self.dilation)
        return self.block(x, self.dilation)


def pruned_rms_norm(norm: nn.RMSNorm, units: torch.Tensor) -> nn.RMSNorm:
    out = nn.RMSNorm(len(units), eps=norm.eps, elementwise_affine=norm.elementwise_affine)
    if norm.elementwise_affine:
        with torch.no_grad():
            out.weight.copy_(norm.weight.detach()[units])
    return out


def _unit_scores(core: nn.Module, stages: list[nn.Module]) -> torch.Tensor:
    """Per channel of the residual stream: the L1 norm of every weight that writes or reads
    it (input projection, each stage's convolution, SwiGLU and norms, the final norm)."""
    scores = rows_l1(core.in_proj.weight) + core.norm.weight.detach().abs()
    for block in {id(b): b for b in stages}.values():  # a shared block counts once
        conv = block.dw_weight if block.separable else block.conv_weight
        scores = scores + rows_l1(conv)
        if block.separable:
            scores = scores + rows_l1(block.pw.weight) + columns_l1(block.pw.weight)
        else:
            scores = scores + columns_l1(conv)
        scores = scores + columns_l1(block.ffn.up.weight) + rows_l1(block.ffn.down.weight)
        scores = scores + block.norm1.weight.detach().abs() + block.norm2.weight.detach().abs()
    return scores


def _narrowed_block(block: nn.Module, units: torch.Tensor, reduction: int,
                    ranked: nn.Module) -> nn.Module:
    """``block`` (Fracast's ``SelfSimilarBlock``) keeping ``units`` of its channels and the
    ``1/r`` of its SwiGLU's hidden units ``ranked`` (its score-holding twin) ranks highest; a
    copy, so its forward stays the package's own."""
    hidden = block.ffn.down.in_features
    scores = rows_l1(ranked.ffn.up.weight[:hidden]) + rows_l1(ranked.ffn.up.weight[hidden:]) \
        + columns_l1(ranked.ffn.down.weight)
    inner = top_indices(scores, side_width(hidden, reduction))
    side = copy.deepcopy(block)
    side.d = len(units)
    with torch.no_grad():
        if block.separable:
            side.dw_weight = nn.Parameter(block.dw_weight.detach()[units].clone())
            side.dw_bias = nn.Parameter(block.dw_bias.detach()[units].clone())
            side.pw = pruned_linear(block.pw, units, units)
        else:
            side.conv_weight = nn.Parameter(block.conv_weight.detach()[units][:, units].clone())
            side.conv_bias = nn.Parameter(block.conv_bias.detach()[units].clone())
    side.ffn.up = pruned_linear(block.ffn.up, torch.cat([inner, hidden + inner]), units)
    side.ffn.down = pruned_linear(block.ffn.down, units, inner)
    side.norm1 = pruned_rms_norm(block.norm1, units)
    side.norm2 = pruned_rms_norm(block.norm2, units)
    return side


def _narrowed_scale(scale: nn.Module | None, units: torch.Tensor) -> nn.Module | None:
    """The FiLM scale conditioning for ``units``: its gamma and beta rows for them."""
    if scale is None:
        return None
    side = copy.deepcopy(scale)
    side.d = len(units)
    every = torch.arange(scale.to_gb.in_features)
    side.to_gb = pruned_linear(scale.to_gb, torch.cat([units, scale.d + units]), every)
    return side


def _stages(core: nn.Module) -> list[nn.Module]:
    """The block each stage of the dilation ladder runs (one shared block, or one each)."""
    return [core.block] * len(core.dilations()) if core.share_stages else list(core.blocks)


@side_family("fracast")
def fracast_design(frozen: nn.Module, blocks: list[nn.Module], reduction: int,
                   scores: UnitScores) -> SideDesign | None:
    """Fracast (forecaster or pooled classification encoder): one side stage per dilation,
    rungs at the shared block's calls (or at each stage's own block when unshared)."""
    from adaptlab.backbones.fracast import FracastEncoder

    if not isinstance(frozen, FracastEncoder):
        return None
    core, ranked_core = frozen.core, scores.backbone.core
    dilations = core.dilations()
    stages, ranked_stages = _stages(core), _stages(ranked_core)
    rungs = ["core.block"] if core.share_stages else \
        [f"core.blocks.{i}" for i in range(len(stages))]
    units = top_indices(_unit_scores(ranked_core, ranked_stages), side_width(core.d, reduction))
    side = [SideStage(_narrowed_scale(core.scale, units),
                      _narrowed_block(block, units, reduction, ranked), dilation)
            for block, ranked, dilation in zip(stages, ranked_stages, dilations, strict=True)]
    widths = [core.d] * (len(side) + 1)
    return SideDesign(blocks=side, tap_widths=widths, side_widths=[len(units)] * len(widths),
                      norm=pruned_rms_norm(core.norm, units), pool="series",
                      num_features=core.d, layout="series", rungs=rungs)
