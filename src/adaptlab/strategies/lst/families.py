"""Which backbones a ladder side network can shadow, and how: one entry per family.

An entry reads the frozen backbone and its blocks (in layer-map order) and returns a
:class:`SideDesign` (the pruned side blocks, the widths the ladder taps, how the side output
is pooled the way the backbone pools), or None when the backbone is not of its family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from adaptlab.strategies.lst.pruning import (
    conv_input_scores,
    hidden_scores,
    is_prunable_conv_block,
    prune_conv_block,
    pruned_layer_norm,
    select_transformer_units,
    side_width,
    top_indices,
)
from adaptlab.strategies.lst.side_blocks import (
    bert_layer_weights,
    point_block_weights,
    side_transformer_block,
    timm_vit_block_weights,
)

# Pooling rules of the side output (:func:`adaptlab.strategies.lst.ladder.pool`).
POOLS = ("mask_mean", "cls", "token_mean", "max_mean", "map_mean", "series")


@dataclass
class SideDesign:
    """``blocks[i]`` shadows backbone block ``i``; ``tap_widths[0]`` is the width of block 0's
    input (the embeddings' output), ``tap_widths[i + 1]`` that of block ``i``'s output, and
    ``side_widths`` the side stream's width at the same points. ``layout``: ``tokens`` (the
    last axis holds the units), ``map`` (``[B, C, h, w]``) or ``series`` (per-step states
    ``[B, W, D]`` added to the backbone's own final states, then pooled as the backbone pools
    them: :mod:`.series`)."""

    blocks: list[nn.Module]
    tap_widths: list[int]
    side_widths: list[int]
    norm: nn.Module
    pool: str
    num_features: int
    layout: str = "tokens"
    prefix_tokens: int = 0
    mask_input: str | None = None  # the keyword argument holding a token padding mask
    # Modules (names relative to the backbone) whose calls, in order, are the rungs, where
    # they are not the layer map's blocks (a block shared across stages runs once per stage).
    rungs: list[str] | None = None


@dataclass
class UnitScores:
    """What pruning ranks units by: a module shaped as the backbone, and its blocks, whose
    weights hold each weight's importance. For magnitude pruning that is the backbone itself;
    for Fisher pruning (:mod:`.fisher`) a copy holding each weight's squared gradients summed
    over training samples. A family reads scores from here and copies weights from the
    backbone, so the side's structure never depends on which ranking chose its units."""

    backbone: nn.Module
    blocks: list[nn.Module | None]


SideFamily = Callable[[nn.Module, list[nn.Module], int, UnitScores], "SideDesign | None"]
FAMILIES: dict[str, SideFamily] = {}


def side_family(name: str) -> Callable[[SideFamily], SideFamily]:
    """Register a family builder under ``name`` (a taken name fails loudly)."""
    def add(builder: SideFamily) -> SideFamily:
        if name in FAMILIES:
            raise ValueError(f"side-network family {name!r} is already registered")
        FAMILIES[name] = builder
        return builder
    return add


def _transformer_design(blocks: list[nn.Module], scores: UnitScores, reader, reduction: int,
                        norm: nn.Module | None, **design) -> SideDesign | None:
    weights = [reader(block) for block in blocks]
    if not weights or any(w is None for w in weights):
        return None
    ranked = [reader(block) for block in scores.blocks]
    width = weights[0].width
    hidden = top_indices(hidden_scores(ranked), side_width(width, reduction))
    side = [side_transformer_block(w, select_transformer_units(r, hidden, reduction))
            for w, r in zip(weights, ranked, strict=True)]
    taps = [width] * (len(blocks) + 1)
    final = pruned_layer_norm(norm, hidden) if isinstance(norm, nn.LayerNorm) else nn.Identity()
    return SideDesign(blocks=side, tap_widths=taps, side_widths=[len(hidden)] * len(taps),
                      norm=final, **design)


@side_family("hf-encoder")
def hf_encoder_design(frozen: nn.Module, blocks: list[nn.Module], reduction: int,
                      scores: UnitScores) -> SideDesign | None:
    """A mean-pooled Hugging Face BERT-style encoder: the side is averaged over the
    attention mask, as the backbone pools (its blocks are post-norm: no final norm)."""
    from adaptlab.backbones.hf_encoders import MeanPooledEncoder

    if not isinstance(frozen, MeanPooledEncoder):
        return None
    return _transformer_design(blocks, scores, bert_layer_weights, reduction, None,
                               pool="mask_mean", num_features=int(frozen.encoder.config.hidden_size),
                               mask_input="attention_mask")


@side_family("timm-vit")
def timm_vit_design(frozen: nn.Module, blocks: list[nn.Module], reduction: int,
                    scores: UnitScores) -> SideDesign | None:
    """A timm ViT pooled by its class token or by the mean of its patch tokens, with its final
    norm pruned onto the side (a ViT with a norm after pooling, ``fc_norm``, is not one)."""
    pool = {"token": "cls", "avg": "token_mean"}.get(getattr(frozen, "global_pool", None))
    if pool is None or not isinstance(getattr(frozen, "fc_norm", None), nn.Identity):
        return None
    return _transformer_design(blocks, scores, timm_vit_block_weights, reduction,
                               getattr(frozen, "norm", None), pool=pool,
                               num_features=int(frozen.num_features),
                               prefix_tokens=int(getattr(frozen, "num_prefix_tokens", 1)))


@side_family("point-transformer")
def point_transformer_design(frozen: nn.Module, blocks: list[nn.Module], reduction: int,
                             scores: UnitScores) -> SideDesign | None:
    """Our point transformer: patch tokens normed, then max- and mean-pooled side by side."""
    from adaptlab.backbones.point_nets import PointPatchTransformer

    if not isinstance(frozen, PointPatchTransformer):
        return None
    return _transformer_design(blocks, scores, point_block_weights, reduction, frozen.norm,
                               pool="max_mean", num_features=int(frozen.num_features))


def _conv_channels(block: nn.Module, end: str) -> int:
    """A timm conv block's (or stage's) input or output channel count."""
    if isinstance(block, nn.Sequential):
        return _conv_channels(block[0] if end == "in" else block[-1], end)
    if end == "in":
        return (block.conv_pw if hasattr(block, "conv_pwl") else block.conv_dw).in_channels
    return (block.conv_pwl if hasattr(block, "conv_pwl") else block.conv_pw).out_channels


@side_family("timm-cnn")
def timm_cnn_design(frozen: nn.Module, blocks: list[nn.Module], reduction: int,
                    scores: UnitScores) -> SideDesign | None:
    """A timm EfficientNet / MobileNet: each block (or stage) shadowed by itself narrowed to
    ``C / r`` channels, so side features change resolution where the backbone's do; the side
    map is averaged globally, as the backbone pools."""
    if not blocks or not all(is_prunable_conv_block(block) for block in blocks):
        return None
    if not hasattr(frozen, "num_features"):
        return None
    first = _conv_channels(blocks[0], "in")
    units = top_indices(conv_input_scores(scores.blocks[0]), side_width(first, reduction))
    side, taps, widths = [], [first], [len(units)]
    for block, ranked in zip(blocks, scores.blocks, strict=True):
        pruned, units = prune_conv_block(block, units, reduction, ranked)
        side.append(pruned)
        taps.append(_conv_channels(block, "out"))
        widths.append(len(units))
    return SideDesign(blocks=side, tap_widths=taps, side_widths=widths, norm=nn.Identity(),
                      pool="map_mean", num_features=int(frozen.num_features), layout="map")


def design_side(frozen: nn.Module, blocks: list[nn.Module], reduction: int,
                scores: UnitScores | None = None) -> SideDesign:
    """The first family that recognises ``frozen``, its units ranked by ``scores`` (by
    default the weights' magnitudes); refuses a backbone none does."""
    from adaptlab.errors import AdaptlabError

    scores = scores or UnitScores(frozen, blocks)
    for builder in FAMILIES.values():
        design = builder(frozen, blocks, reduction, scores)
        if design is not None:
            return design
    raise AdaptlabError(f"strategy 'lst': backbone {type(frozen).__name__} has no ladder side "
                        f"network; families that work: {', '.join(FAMILIES)}")
