"""A small CNN for gridded fields (weather and climate maps), built in the project because
no pre-trained weather network exists offline: it is pre-trained on a source (a simulator,
another scenario) and adapted to the target.

Inputs are (channels, lat, lon) on any grid size: convolutions pad circularly in longitude
when the grid goes round the globe (a block straddling the seam is one block; regional
grids pass ``periodic_lon=False``) and with zeros in latitude, and the features are pooled
globally. The layer map lists the stem and each stage, so freezing,
bottom-K and LoRA address it as they do any timm backbone.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from adaptlab.backbones.backbone import Backbone, seeded_init
from adaptlab.backbones.layer_map import LayerMap, norm_modules
from adaptlab.backbones.weights import load_weights_option


class LonPeriodicConv(nn.Module):
    """3x3 convolution, circular along longitude (the last axis) unless ``periodic`` is
    False, zero-padded in latitude.

    The padding wraps a plain ``nn.Conv2d`` instead of subclassing it: peft builds LoRA's
    low-rank convolutions with the base layer's class and Conv2d's arguments, and LoRA on
    the inner convolution sees the padded input exactly as the base weight does."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 periodic: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=0,
                              bias=False)
        self.periodic = periodic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 0, 0), mode="circular" if self.periodic else "constant")
        x = F.pad(x, (0, 0, 1, 1))
        return self.conv(x)


def conv_stage(in_channels: int, out_channels: int, stride: int,
               periodic: bool = True) -> nn.Sequential:
    return nn.Sequential(LonPeriodicConv(in_channels, out_channels, stride, periodic),
                         nn.BatchNorm2d(out_channels), nn.GELU(),
                         LonPeriodicConv(out_channels, out_channels, 1, periodic),
                         nn.BatchNorm2d(out_channels), nn.GELU())


class FieldCNN(nn.Module):
    def __init__(self, in_channels: int, widths: tuple[int, ...] = (12, 24, 48),
                 periodic: bool = True) -> None:
        super().__init__()
        self.stem = nn.Sequential(LonPeriodicConv(in_channels, widths[0], 1, periodic),
                                  nn.BatchNorm2d(widths[0]), nn.GELU())
        stages, previous = [], widths[0]
        for width in widths:
            stages.append(conv_stage(previous, width, 2, periodic))
            previous = width
        self.stages = nn.ModuleList(stages)
        self.num_features = widths[-1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's map [B, num_features, lat / 8, lon / 8] (three stride-2 stages)."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=(-2, -1))


def periodic_lon(options: dict) -> bool:
    """``periodic_lon`` when given, else whether the data's grid (``options["grid"]``) goes
    round the globe."""
    if "periodic_lon" in options:
        return bool(options["periodic_lon"])
    from adaptlab.data.fields import is_periodic

    return is_periodic(options.get("grid") or {})


def field_cnn(options: dict) -> Backbone:
    """``options``: ``in_channels`` (required), ``widths``, ``periodic_lon`` (default: from ``grid``),
    ``weights`` (a safetensors file of this network's state dict, e.g. from another
    project), ``init_seed``."""
    widths = tuple(options.get("widths", (12, 24, 48)))
    periodic = periodic_lon(options)
    module = seeded_init(lambda: FieldCNN(int(options["in_channels"]), widths, periodic),
                         options)
    load_weights_option(module, options)
    layer_map = LayerMap(embeddings=["stem"],
                         blocks=[[f"stages.{i}"] for i in range(len(widths))],
                         norms=norm_modules(module))
    return Backbone(name="field_cnn", module=module, num_features=module.num_features,
                    layer_map=layer_map, source="built in, random initialisation",
                    feature_layout="map")
