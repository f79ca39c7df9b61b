"""VeRA through peft: one pair of frozen random projections shared by every target, and per
target two trained scaling vectors (``lambda_d`` over the rank, ``lambda_b`` over the output).

Targets of different shapes share the projections the way peft does it: the projections are
drawn at the largest input and output width among the targets and each layer uses a slice.
They are drawn from ``projection_seed`` and saved with the adapter, so a reload does not
depend on the random generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from adaptlab.strategies.peft_family.base import PeftStrategy, PeftStrategyConfig
from adaptlab.strategies.registry import register_strategy


@dataclass
class VeraStrategyConfig(PeftStrategyConfig):
    r: int = field(default=256, metadata={"min": 1, "max": 8192,
                                          "help": "rank of the shared random projections"})
    dropout: float = field(default=0.0, metadata={"min": 0.0, "max": 0.95})
    d_initial: float = field(default=0.1, metadata={"min": 0.0, "max": 10.0,
                                                    "help": "initial value of lambda_d"})
    projection_seed: int = field(default=0, metadata={
        "min": 0, "max": 2**31 - 1, "help": "seed of the shared random projections"})


@register_strategy
class VeraStrategy(PeftStrategy):
    name = "vera"
    shards = True
    config_class = VeraStrategyConfig
    description = "VeRA (peft): shared frozen random projections, trained scaling vectors"
    # peft 0.21's VeRA dispatch: Linear (and transformers' Conv1D) only.
    layer_types = (nn.Linear,)
    # Scaling vectors only: the VeRA paper trains them at 1e-2 .. 4e-2.
    default_lr = 1e-2
    lr_range = (1e-4, 1e-1)

    def method_config(self, model: nn.Module, plan: dict[str, list[str]]):
        from peft import VeraConfig

        return VeraConfig(r=self.config.r, vera_dropout=self.config.dropout,
                          d_initial=self.config.d_initial,
                          projection_prng_key=self.config.projection_seed,
                          save_projection=True,
                          target_modules=plan["target_modules"],
                          modules_to_save=plan["modules_to_save"])
