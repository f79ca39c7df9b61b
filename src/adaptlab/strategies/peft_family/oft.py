"""OFT through peft: each target's weight is rotated by a learned block-diagonal orthogonal
matrix (Cayley parametrisation of skew-symmetric blocks), which keeps the angles between its
neurons, the pre-trained model's hyperspherical energy."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

from torch import nn

from adaptlab.strategies.peft_family.base import PeftStrategy, PeftStrategyConfig, held_warnings
from adaptlab.strategies.registry import register_strategy

# peft 0.21's per-layer message when it moves the block size (tuners/oft/layer.py).
_ADJUSTED = re.compile(r"Invalid `oft_block_size` \(\d+\)! Adjusted `oft_block_size` to \((\d+)\)")


@dataclass
class OftStrategyConfig(PeftStrategyConfig):
    block_size: int = field(default=32, metadata={
        "min": 2, "max": 4096,
        "help": "size of each orthogonal block (peft moves it to a divisor of the layer's "
                "input width)"})
    dropout: float = field(default=0.0, metadata={"min": 0.0, "max": 0.95,
                                                  "help": "module dropout"})


@register_strategy
class OftStrategy(PeftStrategy):
    name = "oft"
    shards = True
    config_class = OftStrategyConfig
    description = "orthogonal fine-tuning (peft): block-diagonal rotations of the blocks' weights"
    # peft 0.21's OFT dispatch: Linear, Conv2d, Embedding.
    layer_types = (nn.Linear, nn.Conv2d, nn.Embedding)
    default_lr = 1e-3  # rotations from the identity, trained like other adapters
    lr_range = (1e-5, 5e-2)

    @classmethod
    def accepts(cls, module: nn.Module) -> bool:
        # peft 0.21's OFT rotates a Conv2d's input patches through unfold / fold, and fold
        # sums overlapping patches: for a kernel larger than 1x1 even the identity rotation
        # changes the output (measured: up to 5 on a 3x3 conv at initialisation). 1x1 kernels
        # do not overlap, so only those are wrapped.
        return not isinstance(module, nn.Conv2d) or tuple(module.kernel_size) == (1, 1)

    @classmethod
    def layer_types_text(cls) -> str:
        return "Linear, Conv2d (1x1 kernels, groups=1) and Embedding layers"

    def apply(self, model: nn.Module, layer_map) -> nn.Module:
        # peft warns once per layer whose input width block_size does not divide, as it moves
        # the block to a divisor there: one line in our words says it for all of them.
        with held_warnings() as caught:
            model = super().apply(model, layer_map)
            found = [(w, _ADJUSTED.search(str(w.message))) for w in caught]
            caught[:] = [w for w, match in found if not match]
        adjusted = [int(match.group(1)) for _, match in found if match]
        if adjusted:
            warnings.warn(f"strategy 'oft': block_size={self.config.block_size} does not divide "
                          f"the input width of {len(adjusted)} adapted layers; peft uses "
                          f"{', '.join(map(str, sorted(set(adjusted))))} there", stacklevel=2)
        flatten_linear_inputs(model)
        return model

    def method_config(self, model: nn.Module, plan: dict[str, list[str]]):
        from peft import OFTConfig

        return OFTConfig(r=0, oft_block_size=self.config.block_size,
                         module_dropout=self.config.dropout,
                         target_modules=plan["target_modules"],
                         modules_to_save=plan["modules_to_save"])


def flatten_linear_inputs(model: nn.Module) -> None:
    """peft 0.21's OFT rotation takes any 4-D input for a convolution's (it unfolds it into
    patches), so a Linear layer fed [batch, points, neighbours, channels] (DGCNN's edge
    features) fails. A Linear layer's rotation acts on the last dimension alone: give it the
    input flattened to 2-D and restore the shape after."""
    from peft.tuners.oft.layer import Linear as OftLinear

    for module in model.modules():
        if isinstance(module, OftLinear):
            for rotation in module.oft_R.values():
                rotation.forward = _on_last_dimension(rotation.forward)


def _on_last_dimension(rotate):
    def forward(x):
        return rotate(x.reshape(-1, x.shape[-1])).reshape(x.shape)

    return forward
