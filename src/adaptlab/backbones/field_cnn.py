"""A small CNN for gridded fields (weather and climate maps), built in the project because
no pre-trained weather network exists offline: it is pre-trained on a source (a simulator,
another scenario) and adapted to the target.

Inputs are (channels, lat, lon) on any grid size: convolutions pad circularly in longitude
(the globe wraps; a block straddling the seam is one block) and with zeros in latitude, and
the features are pooled globally. The layer map lists the stem and each stage, so freezing,
bottom-K and LoRA address it as they do any timm backbone.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from adaptlab.backbones.backbone import Backbone, seeded_init
from adaptlab.backbones.layer_map import LayerMap


class LonPeriodicConv(nn.Conv2d):
    """3x3 convolution, circular along longitude (the last axis), zero-padded in latitude."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, 3, stride=stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 0, 0), mode="circular")
        x = F.pad(x, (0, 0, 1, 1))
        return super().forward(x)


def _stage(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(LonPeriodicConv(in_channels, out_channels, stride),
                         nn.BatchNorm2d(out_channels), nn.GELU(),
                         LonPeriodicConv(out_channels, out_channels),
                         nn.BatchNorm2d(out_channels), nn.GELU())


class FieldCNN(nn.Module):
    def __init__(self, in_channels: int, widths: tuple[int, ...] = (12, 24, 48)) -> None:
        super().__init__()
        self.stem = nn.Sequential(LonPeriodicConv(in_channels, widths[0]),
                                  nn.BatchNorm2d(widths[0]), nn.GELU())
        stages, previous = [], widths[0]
        for width in widths:
            stages.append(_stage(previous, width, 2))
            previous = width
        self.stages = nn.ModuleList(stages)
        self.num_features = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x.mean(dim=(-2, -1))


def field_cnn(options: dict) -> Backbone:
    """``options``: ``in_channels`` (required), ``widths``, ``weights`` (a safetensors file of
    this network's state dict, e.g. from another project), ``init_seed``."""
    widths = tuple(options.get("widths", (12, 24, 48)))
    module = seeded_init(lambda: FieldCNN(int(options["in_channels"]), widths), options)
    if options.get("weights"):
        from adaptlab.backbones.weights import load_state_dict_file

        module.load_state_dict(load_state_dict_file(options["weights"]))
    layer_map = LayerMap(embeddings=["stem"],
                         blocks=[[f"stages.{i}"] for i in range(len(widths))],
                         norms=[])
    return Backbone(name="field_cnn", module=module, num_features=module.num_features,
                    layer_map=layer_map, source="built in, random initialisation")
