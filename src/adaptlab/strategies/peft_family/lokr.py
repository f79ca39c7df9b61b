"""LoKr through peft: the update is a Kronecker product ``W1 (x) W2`` of two small matrices
whose shapes factor the weight's (each dimension split near its square root); the larger
factor is itself low-rank (``r``) when that is smaller."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from adaptlab.strategies.peft_family.base import PeftStrategy, PeftStrategyConfig
from adaptlab.strategies.registry import register_strategy


@dataclass
class LokrStrategyConfig(PeftStrategyConfig):
    r: int = field(default=8, metadata={"min": 1, "max": 1024,
                                        "help": "rank of the larger Kronecker factor"})
    alpha: float = field(default=8.0, metadata={"min": 1e-6, "max": 1e6,
                                                 "help": "scaling numerator (alpha / r)"})
    dropout: float = field(default=0.0, metadata={"min": 0.0, "max": 0.95,
                                                  "help": "rank dropout"})


@register_strategy
class LokrStrategy(PeftStrategy):
    name = "lokr"
    shards = True
    config_class = LokrStrategyConfig
    description = "Kronecker-product adapters (peft) on the blocks; head and BatchNorm saved"
    # peft 0.21's LoKr dispatch: Linear, Conv1d, Conv2d.
    layer_types = (nn.Linear, nn.Conv1d, nn.Conv2d)
    default_lr = 1e-3  # LyCORIS's usual range is 1e-4 .. 1e-3
    lr_range = (1e-5, 5e-2)

    def method_config(self, model: nn.Module, plan: dict[str, list[str]]):
        from peft import LoKrConfig

        return LoKrConfig(r=self.config.r, alpha=self.config.alpha,
                          rank_dropout=self.config.dropout,
                          target_modules=plan["target_modules"],
                          modules_to_save=plan["modules_to_save"])
