"""Layer-wise learning-rate decay: where each trainable parameter sits in the backbone's
layer map, and the optimizer groups that give it ``lr * decay ** depth``.

Depth counts down from the top: the top block and the neck have depth 0 (the full rate),
block ``i`` of ``L`` has depth ``L - 1 - i``, the embeddings ``L`` (the lowest rate). The task
head and anything the layer map does not place (a side network, a prompt beside the backbone)
train at the full rate: they are new, nothing pre-trained there to protect.

A strategy may have wrapped or renamed modules before the optimizer is built (peft's
``base_model.model.`` prefix, a LoRA matrix inside ``...layer.3.attention.self.query``), so a
parameter is placed by the layer-map entry its name contains at a name boundary, not only by
an exact prefix.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from adaptlab.backbones.layer_map import LayerMap
from adaptlab.strategies.base import decay_groups


def entry_depths(layer_map: LayerMap) -> dict[str, int]:
    """Every backbone entry of ``layer_map`` and its depth from the top (0 = full rate)."""
    top = layer_map.num_blocks - 1
    depths = {entry: layer_map.num_blocks for entry in layer_map.embeddings}
    for index, block in enumerate(layer_map.blocks):
        depths.update({entry: top - index for entry in block})
    depths.update({entry: 0 for entry in layer_map.neck})
    return depths


def under_entry(name: str, entry: str) -> bool:
    """``entry`` names ``name`` or a module above it, possibly under a wrapper's prefix."""
    wrapped = "." + name
    return (name == entry or name.startswith(entry + ".") or wrapped.endswith("." + entry)
            or ("." + entry + ".") in wrapped)


def parameter_depth(name: str, depths: dict[str, int]) -> int:
    """The depth of the entry that holds parameter ``name`` (the longest matching entry, so
    ``layer.1`` never claims ``layer.10``'s parameters); 0 where none does."""
    matching = [entry for entry in depths if under_entry(name, entry)]
    return depths[max(matching, key=len)] if matching else 0


def layer_decay_groups(named: list[tuple[str, nn.Parameter]], layer_map: LayerMap,
                       decay: float, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer groups per depth (split into decayed weights and undecayed biases and
    norms), each with ``lr_scale = decay ** depth`` for the engine's optimizer."""
    depths = entry_depths(layer_map)
    by_depth: dict[int, list[tuple[str, nn.Parameter]]] = {}
    for name, param in named:
        by_depth.setdefault(parameter_depth(name, depths), []).append((name, param))
    groups = []
    for depth in sorted(by_depth):
        for group in decay_groups(by_depth[depth], weight_decay, prefix=f"depth{depth}_"):
            groups.append({**group, "lr_scale": decay ** depth})
    return groups
