"""Full fine-tuning: every parameter trains."""

from __future__ import annotations

from torch import nn

from adaptlab.backbones.layer_map import LayerMap
from adaptlab.strategies.base import Strategy, set_requires_grad
from adaptlab.strategies.registry import register_strategy


@register_strategy
class FullFineTuning(Strategy):
    name = "full"
    description = "train every parameter of the backbone and the new head"

    def select_trainable(self, model: nn.Module, layer_map: LayerMap) -> None:
        set_requires_grad([model], True)
