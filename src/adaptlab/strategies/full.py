"""Full fine-tuning: every parameter trains."""

from __future__ import annotations

from torch import nn

from adaptlab.backbones.layer_map import LayerMap
from adaptlab.strategies.base import Strategy, set_requires_grad
from adaptlab.strategies.registry import register_strategy


@register_strategy
class FullFineTuning(Strategy):
    name = "full"
    shards = True
    description = "train every parameter of the backbone and the new head"
    # BERT-style encoders fine-tune at 2e-5..1e-4 (Devlin et al. 2019; AutoGluon's multimodal
    # default 1e-4). The small built-in networks (point clouds, weather fields) want up to
    # 3e-3: their domains' recipes set it.
    default_lr = 1e-4
    lr_range = (1e-5, 5e-3)

    def select_trainable(self, model: nn.Module, layer_map: LayerMap) -> None:
        set_requires_grad([model], True)
