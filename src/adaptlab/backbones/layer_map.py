"""The layer map: a backbone's ordered trainable blocks, derived from the model itself.

Freezing, PEFT target selection, layer-wise learning rates and analysis all read this one
map instead of guessing module names. For timm models it comes from the model's own
``group_matcher`` (the grouping timm uses for layer-wise LR decay); for Hugging Face encoders
from the ``embeddings`` module and the encoder's repeated-layer ``ModuleList``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
              nn.modules.instancenorm._InstanceNorm)


@dataclass
class LayerMap:
    """Module names (relative to the model the map describes), bottom to top.

    ``embeddings``: the input stem; ``blocks``: one list of module names per block;
    ``head``: the task head's module name (``None`` for a bare backbone).
    """

    embeddings: list[str]
    blocks: list[list[str]]
    head: str | None = None
    norms: list[str] = field(default_factory=list)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def prefixed(self, prefix: str, head: str | None = None) -> LayerMap:
        """The same map for a model that holds this one under attribute ``prefix``."""
        def add(name: str) -> str:
            return f"{prefix}.{name}" if name else prefix

        return LayerMap(embeddings=[add(n) for n in self.embeddings],
                        blocks=[[add(n) for n in block] for block in self.blocks],
                        head=head, norms=[add(n) for n in self.norms])

    def bottom_modules(self, k: int) -> list[str]:
        """Embeddings plus the bottom ``k`` blocks (what Telly-style freezing freezes)."""
        return self.embeddings + [name for block in self.blocks[:k] for name in block]

    def to_dict(self) -> dict:
        return {"embeddings": self.embeddings, "blocks": self.blocks, "head": self.head,
                "norms": self.norms}


def _norm_modules(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, NORM_TYPES)]


def _owner(param_name: str) -> str:
    """The module that owns ``param_name`` directly (drop the tensor's own name)."""
    return param_name.rsplit(".", 1)[0] if "." in param_name else ""


def layer_map_from_timm(model: nn.Module) -> LayerMap:
    """Read a timm model's ``group_matcher`` (fine-grained) into a layer map.

    Group 0 is the stem; later groups are blocks in forward order. Parameters timm assigns to
    no group, or the classifier, are left out (the task head is ours, not timm's).
    """
    from timm.models._manipulate import group_parameters

    if not hasattr(model, "group_matcher"):
        raise TypeError(f"{type(model).__name__} has no group_matcher; not a timm model")
    groups = group_parameters(model, model.group_matcher(coarse=False))
    ordered = [groups[key] for key in sorted(groups)]
    modules: list[list[str]] = []
    for params in ordered:
        owners: list[str] = []
        for name in params:
            owner = _owner(name)
            if owner not in owners:
                owners.append(owner)
        modules.append(owners)
    if len(modules) < 2:
        raise ValueError(f"{type(model).__name__}: timm grouping gives {len(modules)} group(s)")
    return LayerMap(embeddings=modules[0], blocks=modules[1:], head=None,
                    norms=_norm_modules(model))


def _repeated_layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The longest ModuleList whose children share one class: a transformer's layer stack."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if len({type(child) for child in module}) == 1 and (
                    best is None or len(module) > len(best[1])):
                best = (name, module)
    if best is None:
        raise ValueError(f"{type(model).__name__}: no repeated layer stack (ModuleList) found")
    return best


def layer_map_from_hf_encoder(model: nn.Module) -> LayerMap:
    """Layer map of a Hugging Face encoder (BERT, RoBERTa, MiniLM, ...)."""
    embeddings = [name for name, module in model.named_modules()
                  if name.split(".")[-1] == "embeddings" and any(
                      isinstance(m, nn.Embedding) for m in module.modules())]
    if not embeddings:
        raise ValueError(f"{type(model).__name__}: no embeddings module found")
    stack_name, stack = _repeated_layer_list(model)
    blocks = [[f"{stack_name}.{i}"] for i in range(len(stack))]
    return LayerMap(embeddings=embeddings[:1], blocks=blocks, norms=_norm_modules(model))


def modules_under(model: nn.Module, names: list[str]) -> list[tuple[str, nn.Module]]:
    """Every module at or below the given module names."""
    out = []
    wanted = tuple(names)
    for name, module in model.named_modules():
        if name in wanted or any(name.startswith(n + ".") for n in wanted if n):
            out.append((name, module))
    return out


def parameters_under(model: nn.Module, names: list[str]) -> list[tuple[str, torch.nn.Parameter]]:
    """Every parameter owned by the given modules or their children."""
    wanted = tuple(names)
    return [(name, p) for name, p in model.named_parameters()
            if any(name == n or name.startswith(n + ".") for n in wanted) or "" in wanted]
