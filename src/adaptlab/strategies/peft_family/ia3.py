"""(IA)^3 through peft: one learned vector per target that rescales its output, or its input
for a feed-forward layer (``feedforward_modules``).

The feed-forward layers are derived from the model, not guessed from names: in each block,
the targets whose input is wider than their output (the MLP's second layer in a transformer,
the projection of an inverted residual in a CNN). IA3 rescales their input, which is the
block's expanded hidden activation, as the paper rescales the inner activation of the FFN.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from adaptlab.strategies.peft_family.base import PeftStrategy, PeftStrategyConfig
from adaptlab.strategies.registry import register_strategy


@dataclass
class Ia3StrategyConfig(PeftStrategyConfig):
    pass


def in_out_width(module: nn.Module) -> tuple[int, int]:
    """(input, output) width of a Linear or a convolution (channels)."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.in_channels, module.out_channels


def derive_feedforward(model: nn.Module, targets: list[str]) -> list[str]:
    """The targets that project down from a wider input (see the module docstring)."""
    modules = dict(model.named_modules())
    return [name for name in targets
            if (lambda io: io[0] > io[1])(in_out_width(modules[name]))]


@register_strategy
class Ia3Strategy(PeftStrategy):
    name = "ia3"
    shards = True
    config_class = Ia3StrategyConfig
    description = ("(IA)^3 (peft): learned rescaling vectors on the blocks' layers; head and "
                   "BatchNorm saved")
    # peft 0.21's IA3 dispatch: Linear, Conv2d, Conv3d (and transformers' Conv1D).
    layer_types = (nn.Linear, nn.Conv2d, nn.Conv3d)
    default_lr = 3e-3  # T-Few, the (IA)^3 paper's recipe
    lr_range = (1e-4, 1e-1)

    def method_config(self, model: nn.Module, plan: dict[str, list[str]]):
        from peft import IA3Config

        return IA3Config(target_modules=plan["target_modules"],
                         feedforward_modules=derive_feedforward(model, plan["target_modules"]),
                         modules_to_save=plan["modules_to_save"])
