"""A backbone: a feature extractor plus what it needs to be used correctly.

Like torchvision's weights API, the backbone carries its preprocessing (input size, mean,
std, channels), so no notebook re-types normalisation constants.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adaptlab.backbones.features import BlockOutputs, block_outputs, feature_map
from adaptlab.backbones.layer_map import LayerMap

# What ``module.forward_features`` returns, by ``Backbone.feature_layout``; D or C is
# ``Backbone.feature_dim``.
FEATURE_LAYOUTS = {
    "map": "[B, C, h, w]: a spatial map at the network's stride (timm CNNs, the field CNN)",
    "map-nhwc": "[B, h, w, C]: a spatial map, channels last (timm models with NHWC output)",
    "tokens": "[B, T, D]: one row per token, prefix tokens included (ViTs, text encoders)",
    "points": "[B, N, C]: one row per input point (point-cloud backbones)",
    "grid": "[B, C, H, W]: a map on the input grid itself (the field U-Net)",
    "series": "[B, W, D]: one row per context time step (forecasters)",
}


@dataclass(frozen=True)
class Preprocessing:
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875


@dataclass(frozen=True)
class SeriesPreprocessing:
    """What a forecasting backbone expects: a fixed context length (shorter contexts are
    left-padded and masked), its native horizon, its quantile levels and its scaling rule."""

    context_length: int
    horizon: int
    quantiles: tuple[float, ...] = (0.5,)
    scaling: str = "minmax"


@dataclass
class Backbone:
    """``module(x)`` returns pooled features of size ``num_features``;
    ``module.forward_features(x)`` the features before pooling, laid out as
    ``feature_layout`` says (a key of ``FEATURE_LAYOUTS``) with ``feature_dim`` channels."""

    name: str
    module: nn.Module
    num_features: int
    layer_map: LayerMap
    preprocessing: Preprocessing | None = None
    source: str = ""
    tokenizer: Any = None  # text backbones: turns strings into the module's inputs
    max_length: int = 128
    series: SeriesPreprocessing | None = None  # forecasting backbones
    # A task head pre-trained with the backbone (a forecaster's quantile head, called as
    # ``head(hidden, context, observed)`` -> [B, native horizon, quantiles]); None when every
    # task brings a new head.
    pretrained_head: Any = None
    num_points: int | None = None  # point-cloud backbones: points sampled per cloud
    feature_layout: str = "map"
    feature_dim: int | None = None  # channels of forward_features; num_features when None

    def __post_init__(self) -> None:
        if self.feature_layout not in FEATURE_LAYOUTS:
            raise ValueError(f"feature_layout {self.feature_layout!r} is not one of "
                             f"{sorted(FEATURE_LAYOUTS)}")
        if self.feature_dim is None:
            self.feature_dim = self.num_features

    def forward_features(self, inputs: Any) -> torch.Tensor:
        """The features before pooling (a tensor, or a dict of token tensors, as input)."""
        return feature_map(self, inputs)

    def forward_intermediates(self, inputs: Any, indices: list[int] | None = None
                              ) -> BlockOutputs:
        """The outputs of blocks ``indices`` of the layer map (negatives count from the top,
        ``None`` means all) and the feature map, from one forward."""
        return block_outputs(self, inputs, indices)


def seeded_init(factory: Callable[[], nn.Module], options: dict) -> nn.Module:
    """Build a randomly initialised network from ``options["init_seed"]`` (the run's seed),
    without touching the global RNG: the same options give the same weights, so a built-in
    backbone can be rebuilt exactly (an adapter reloaded onto it, a run replayed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(options.get("init_seed", 0)))
        return factory()
