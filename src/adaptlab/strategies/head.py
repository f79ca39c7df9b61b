"""Head-only transfer: a new classification head on a frozen backbone (the wildlife seed's
recipe: freeze the pre-trained weights, replace only the output layer with new fully
connected layers)."""

from __future__ import annotations

from torch import nn

from adaptlab.backbones.layer_map import LayerMap
from adaptlab.strategies.base import NEW_HEAD_LR, Strategy, set_requires_grad
from adaptlab.strategies.registry import register_strategy


@register_strategy
class HeadOnly(Strategy):
    name = "head"
    shards = True
    description = "freeze the backbone, train a new Linear or MLP head"
    # A new head on frozen features: nothing pre-trained to disturb, so a high rate. The
    # demos' benchmarks found 1e-3..3e-2 (3e-3 on four of six domains, bench/strategies.py).
    default_lr = NEW_HEAD_LR
    lr_range = (1e-4, 1e-1)

    def select_trainable(self, model: nn.Module, layer_map: LayerMap) -> None:
        set_requires_grad([model], False)
        set_requires_grad([model.get_submodule(layer_map.head)], True)
