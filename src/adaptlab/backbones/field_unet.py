"""A small U-Net for gridded fields, built in the project for field-to-field regression (a
next-year temperature map from the last years' maps) where the output is a map on the input
grid; pooled, it serves scalar targets and classification too.

Two downsampling stages and their mirror, skip connections at each resolution; upsampling
goes to the skip's exact size, so grids of any size work (37 x 49 included). Convolutions
are the field CNN's: circular in longitude on global grids, zero-padded on regional ones.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from adaptlab.backbones.backbone import Backbone, seeded_init
from adaptlab.backbones.field_cnn import conv_stage, periodic_lon
from adaptlab.backbones.layer_map import LayerMap, norm_modules
from adaptlab.backbones.weights import load_weights_option


class FieldUNet(nn.Module):
    def __init__(self, in_channels: int, widths: tuple[int, int, int] = (16, 32, 64),
                 periodic: bool = True) -> None:
        super().__init__()
        a, b, c = widths
        self.stem = conv_stage(in_channels, a, 1, periodic)
        self.down1 = conv_stage(a, b, 2, periodic)
        self.down2 = conv_stage(b, c, 2, periodic)
        self.up1 = conv_stage(c + b, b, 1, periodic)
        self.up2 = conv_stage(b + a, a, 1, periodic)
        self.num_features = c
        self.num_map_features = a

    def _encode(self, x: torch.Tensor):
        s0 = self.stem(x)
        s1 = self.down1(s0)
        return s0, s1, self.down2(s1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._encode(x)[2].mean(dim=(-2, -1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features [B, num_map_features, lat, lon] on the input grid (the decoder's output;
        the pooled ``forward`` reads the encoder alone)."""
        s0, s1, s2 = self._encode(x)
        up = F.interpolate(s2, size=s1.shape[-2:], mode="bilinear", align_corners=False)
        up = self.up1(torch.cat([up, s1], dim=1))
        up = F.interpolate(up, size=s0.shape[-2:], mode="bilinear", align_corners=False)
        return self.up2(torch.cat([up, s0], dim=1))


def field_unet(options: dict) -> Backbone:
    """``options``: ``in_channels`` (required), ``widths`` (3), ``periodic_lon`` (default:
    whether ``grid`` goes round the globe), ``weights``, ``init_seed``."""
    widths = tuple(options.get("widths", (16, 32, 64)))
    periodic = periodic_lon(options)
    module = seeded_init(lambda: FieldUNet(int(options["in_channels"]), widths, periodic),
                         options)
    load_weights_option(module, options)
    layer_map = LayerMap(embeddings=["stem"],
                         blocks=[["down1"], ["down2"], ["up1"], ["up2"]],
                         norms=norm_modules(module))
    return Backbone(name="field_unet", module=module, num_features=module.num_features,
                    layer_map=layer_map, source="built in, random initialisation",
                    feature_layout="grid", feature_dim=module.num_map_features)
