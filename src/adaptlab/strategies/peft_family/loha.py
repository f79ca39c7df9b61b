"""LoHa through peft: the update is the Hadamard product of two low-rank products,
``(B1 A1) * (B2 A2)``, reaching rank r^2 with the parameters of two rank-r LoRAs."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from adaptlab.strategies.peft_family.base import PeftStrategy, PeftStrategyConfig
from adaptlab.strategies.registry import register_strategy


@dataclass
class LohaStrategyConfig(PeftStrategyConfig):
    r: int = field(default=8, metadata={"min": 1, "max": 1024, "help": "rank of each factor"})
    alpha: float = field(default=8.0, metadata={"min": 1e-6, "max": 1e6,
                                                 "help": "scaling numerator (alpha / r)"})
    dropout: float = field(default=0.0, metadata={"min": 0.0, "max": 0.95,
                                                  "help": "rank dropout"})


@register_strategy
class LohaStrategy(PeftStrategy):
    name = "loha"
    shards = True
    config_class = LohaStrategyConfig
    description = "low-rank Hadamard product adapters (peft) on the blocks; head and BatchNorm saved"
    # peft 0.21's LoHa dispatch: Linear, Conv1d, Conv2d.
    layer_types = (nn.Linear, nn.Conv1d, nn.Conv2d)
    default_lr = 1e-3  # LyCORIS's usual range is 1e-4 .. 1e-3
    lr_range = (1e-5, 5e-2)

    def method_config(self, model: nn.Module, plan: dict[str, list[str]]):
        from peft import LoHaConfig

        return LoHaConfig(r=self.config.r, alpha=self.config.alpha,
                          rank_dropout=self.config.dropout,
                          target_modules=plan["target_modules"],
                          modules_to_save=plan["modules_to_save"])
