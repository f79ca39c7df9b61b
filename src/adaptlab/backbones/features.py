"""What a backbone computes before pooling: its feature map and its blocks' outputs.

Every backbone module has ``forward_features`` (timm's name and contract): the token or
spatial features the pooled output is computed from. Block outputs come from forward hooks
on the layer map's block entries, so every family gets them without code of its own, as
timm's ``forward_intermediates`` gives them for timm models:

>>> from adaptlab.backbones.timm_backbones import timm_backbone
>>> import torch
>>> vit = timm_backbone("vit_tiny_patch16_224", pretrained=False)
>>> out = block_outputs(vit, torch.randn(1, 3, 224, 224), [0, -1])
>>> [tuple(t.shape) for t in out.blocks], tuple(out.features.shape)
([(1, 197, 192), (1, 197, 192)], (1, 197, 192))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from adaptlab.backbones.layer_map import LayerMap

if TYPE_CHECKING:
    from adaptlab.backbones.backbone import Backbone


class BlockOutputs(NamedTuple):
    """``blocks``: one tensor per requested block, in the order asked; ``features``: what
    the forward returned (the feature map, for :func:`block_outputs`)."""

    blocks: list[torch.Tensor]
    features: Any


def call_forward_features(module: nn.Module, inputs: Any) -> Any:
    """``module.forward_features`` on a tensor, or on a dict of tensors as keywords (token
    backbones take ``input_ids=..., attention_mask=...``)."""
    if isinstance(inputs, Mapping):
        return module.forward_features(**inputs)
    return module.forward_features(inputs)


def feature_map(backbone: Backbone, inputs: Any) -> torch.Tensor:
    """The backbone's features before pooling; their layout is ``backbone.feature_layout``
    (e.g. ``[B, tokens, D]`` for a ViT, ``[B, C, h, w]`` for a CNN)."""
    return call_forward_features(backbone.module, inputs)


def block_indices(layer_map: LayerMap, indices: Sequence[int] | None) -> list[int]:
    """``indices`` into the layer map's blocks, negatives counted from the top; ``None``
    means every block."""
    count = layer_map.num_blocks
    if indices is None:
        return list(range(count))
    out = []
    for index in indices:
        if not -count <= index < count:
            raise IndexError(f"block {index} is out of range for a backbone with {count} blocks")
        out.append(index % count)
    return out


def _output_module(model: nn.Module, layer_map: LayerMap, index: int) -> nn.Module:
    """A block's last module entry: the one whose output leaves the block (a parameter entry
    has no output)."""
    modules = dict(model.named_modules())
    for name in reversed(layer_map.blocks[index]):
        if name in modules:
            return modules[name]
    raise ValueError(f"block {index} ({layer_map.blocks[index]}) has no module to read an "
                     "output from")


def capture_block_outputs(model: nn.Module, layer_map: LayerMap, indices: Sequence[int] | None,
                          run: Callable[[], Any]) -> BlockOutputs:
    """Call ``run()`` and record the outputs of the chosen blocks of ``model`` (names in
    ``layer_map`` are relative to ``model``; a task model and its prefixed map work too).

    A module called several times in one forward (a block shared across scales) gives its
    last call's output; a tuple output (Hugging Face layers) gives its first tensor. Outputs
    keep their autograd graph, so the caller decides about ``torch.no_grad``. Hooks are
    removed whatever happens.
    """
    chosen = block_indices(layer_map, indices)
    seen: dict[int, torch.Tensor] = {}

    def hook_for(index: int):
        def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
            seen[index] = output[0] if isinstance(output, (tuple, list)) else output
        return record

    handles = [_output_module(model, layer_map, index).register_forward_hook(hook_for(index))
               for index in sorted(set(chosen))]
    try:
        features = run()
    finally:
        for handle in handles:
            handle.remove()
    missing = [index for index in chosen if index not in seen]
    if missing:
        raise RuntimeError(f"block(s) {missing} did not run in the forward")
    return BlockOutputs([seen[index] for index in chosen], features)


def block_outputs(backbone: Backbone, inputs: Any, indices: Sequence[int] | None = None
                  ) -> BlockOutputs:
    """The outputs of blocks ``indices`` (into ``backbone.layer_map.blocks``, negatives from
    the top, ``None`` for all) and the feature map, from one ``forward_features`` pass."""
    return capture_block_outputs(backbone.module, backbone.layer_map, indices,
                                 lambda: call_forward_features(backbone.module, inputs))
