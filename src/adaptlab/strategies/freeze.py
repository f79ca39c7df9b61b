"""Bottom-K freezing (Telly): freeze the embeddings and the bottom K blocks, train the rest.

Telly found lower layers hold lexical/syntactic properties that fine-tuning barely changes, so
freezing them keeps accuracy at a fraction of the trainable parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from adaptlab.backbones.layer_map import LayerMap, parameters_under
from adaptlab.errors import AdaptlabError
from adaptlab.strategies.base import Strategy, StrategyConfig, set_requires_grad
from adaptlab.strategies.registry import register_strategy


@dataclass
class FreezeConfig(StrategyConfig):
    k: int = field(default=-2, metadata={
        "min": -10_000, "max": 10_000, "bound": "num_blocks",
        "help": "blocks to freeze from the bottom; negative counts from the top "
                "(-2 = all but the top two, Telly's choice)"})


@register_strategy
class FreezeBottomLayers(Strategy):
    name = "freeze"
    shards = True
    config_class = FreezeConfig
    description = "freeze the embeddings and the bottom K blocks, train the rest"
    # The top blocks alone move less than a whole network: the demos' benchmarks found
    # 5e-4..3e-3 (1e-3 on the code demo with Telly's K=-2, its best strategy there).
    default_lr = 1e-3
    lr_range = (1e-5, 5e-3)

    def frozen_blocks(self, layer_map: LayerMap) -> int:
        k = self.config.k
        return layer_map.num_blocks + k if k < 0 else k

    def check(self, layer_map: LayerMap) -> None:
        k, n = self.config.k, layer_map.num_blocks
        if not -n <= k <= n:
            raise AdaptlabError(f"strategy 'freeze': k={k} is out of range for a backbone with "
                                f"{n} blocks (use 0..{n}, or -{n}..-1 to count from the top)")

    def select_trainable(self, model: nn.Module, layer_map: LayerMap) -> None:
        set_requires_grad([model], True)
        # By parameter, not by module: a layer map places root-level tensors (a ViT's
        # cls_token and pos_embed) by their own names.
        for _, param in parameters_under(model, layer_map.bottom_modules(
                self.frozen_blocks(layer_map))):
            param.requires_grad_(False)
