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

from adaptlab.backbones.layer_map import LayerMap


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
    """``module(x)`` returns pooled features of size ``num_features``."""

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


def seeded_init(factory: Callable[[], nn.Module], options: dict) -> nn.Module:
    """Build a randomly initialised network from ``options["init_seed"]`` (the run's seed),
    without touching the global RNG: the same options give the same weights, so a built-in
    backbone can be rebuilt exactly (an adapter reloaded onto it, a run replayed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(options.get("init_seed", 0)))
        return factory()
