"""The layer map: a backbone's ordered trainable blocks, derived from the model itself.

Freezing, PEFT target selection, layer-wise learning rates and analysis all read this one
map instead of guessing module names. For timm models it comes from the model's own
``group_matcher`` (the grouping timm uses for layer-wise LR decay); for Hugging Face encoders
from the ``embeddings`` module and the encoder's repeated-layer ``ModuleList``.

An entry is the name of a module (relative to the model the map describes) or, for a tensor
that sits directly on a module shared with other groups (a ViT's ``cls_token`` and
``pos_embed`` on the model itself), the name of that parameter. Entries are containers: the
highest module all of whose parameters belong to the entry's group (``blocks.3``, not its
``attn.qkv`` and ``norm1``). No entry is ever ``""``: the whole model is never one group's.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain

import torch
from torch import nn

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
              nn.modules.instancenorm._InstanceNorm)

# timm's marker for "merge into the previous group" (``timm.models._manipulate``): a final
# norm or head convolution is grouped with the last block for layer-wise LR decay.
_MATCH_PREV_GROUP = 99999.0


@dataclass
class LayerMap:
    """Entries (module or parameter names), bottom to top.

    ``embeddings``: the input stem; ``blocks``: one list of entries per block;
    ``neck``: what sits between the last block and the task head (a ViT's final norm, an
    EfficientNet's ``conv_head`` and ``bn2``), frozen only when every block is;
    ``head``: the task head's module name (``None`` for a bare backbone);
    ``norms``: the normalisation layers (module names), wherever they are.
    """

    embeddings: list[str]
    blocks: list[list[str]]
    head: str | None = None
    norms: list[str] = field(default_factory=list)
    neck: list[str] = field(default_factory=list)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def entries(self) -> list[str]:
        """Every entry of the backbone, bottom to top (the head is not the backbone's)."""
        return self.embeddings + [name for block in self.blocks for name in block] + self.neck

    def prefixed(self, prefix: str, head: str | None = None) -> LayerMap:
        """The same map for a model that holds this one under attribute ``prefix``."""
        def add(name: str) -> str:
            return f"{prefix}.{name}"

        return LayerMap(embeddings=[add(n) for n in self.embeddings],
                        blocks=[[add(n) for n in block] for block in self.blocks],
                        head=head, norms=[add(n) for n in self.norms],
                        neck=[add(n) for n in self.neck])

    def bottom_modules(self, k: int) -> list[str]:
        """Embeddings plus the bottom ``k`` blocks (what Telly-style freezing freezes), and the
        neck when ``k`` covers every block. Entries may be parameter names: resolve them with
        :func:`parameters_under`, not ``get_submodule``."""
        frozen = self.embeddings + [name for block in self.blocks[:k] for name in block]
        return frozen + self.neck if k >= self.num_blocks else frozen

    def to_dict(self) -> dict:
        return {"embeddings": self.embeddings, "blocks": self.blocks, "neck": self.neck,
                "head": self.head, "norms": self.norms}

    def check(self, model: nn.Module) -> None:
        """Raise ``ValueError`` when an entry is empty, names nothing in ``model``, or two
        entries hold the same parameter (a map that freezing would misread)."""
        modules = dict(model.named_modules())
        params = dict(model.named_parameters())
        owner: dict[str, str] = {}
        for entry in self.entries():
            if not entry:
                raise ValueError("a layer map entry is '' (the whole model)")
            if entry not in modules and entry not in params:
                raise ValueError(f"layer map entry {entry!r} is neither a module nor a parameter")
            for name, _ in parameters_under(model, [entry]):
                if name in owner:
                    raise ValueError(f"parameter {name!r} is under both {owner[name]!r} and "
                                     f"{entry!r}")
                owner[name] = entry


def norm_modules(model: nn.Module) -> list[str]:
    """Names of the model's normalisation layers (what PEFT strategies may keep trainable)."""
    return [name for name, module in model.named_modules() if isinstance(module, NORM_TYPES)]


def containers(model: nn.Module, groups: Sequence[Sequence[str]]) -> list[list[str]]:
    """Each group of parameter names as entries: for every parameter, the highest module all
    of whose parameters (recursively) are in that parameter's group, or the parameter's own
    name when no such module exists (a tensor on the model itself). Parameters in no group
    (a classifier) keep every module above them out of every group."""
    group_of = {name: index for index, names in enumerate(groups) for name in names}
    below: dict[str, set[int | None]] = defaultdict(set)
    for name, _ in model.named_parameters():
        parts = name.split(".")
        for depth in range(1, len(parts)):
            below[".".join(parts[:depth])].add(group_of.get(name))
    out: list[list[str]] = [[] for _ in groups]
    for index, names in enumerate(groups):
        for name in names:
            parts = name.split(".")
            entry = next((".".join(parts[:depth]) for depth in range(1, len(parts))
                          if below[".".join(parts[:depth])] == {index}), name)
            if entry not in out[index]:
                out[index].append(entry)
    return out


def _timm_ordinal(matcher: dict | Callable) -> Callable[[str], tuple[float, ...]]:
    """The sort key timm's ``group_with_matcher`` gives a parameter before it merges keys into
    groups; the merged groups no longer say which parameters were merged into the last block,
    and those are the neck."""
    if not isinstance(matcher, dict):
        def from_callable(name: str) -> tuple[float, ...]:
            key = matcher(name)
            return tuple(map(float, key)) if isinstance(key, Sequence) else (float(key),)
        return from_callable
    compiled = []
    for ordinal, spec in enumerate(matcher.values()):
        if spec is None:
            continue
        for pattern, suffix in (spec if isinstance(spec, (tuple, list)) else [(spec, None)]):
            compiled.append((re.compile(pattern), (ordinal,), suffix))

    def from_dict(name: str) -> tuple[float, ...]:
        for pattern, prefix, suffix in compiled:
            found = pattern.match(name)
            if found:
                parts = (prefix, found.groups(), suffix)
                return tuple(map(float, chain.from_iterable(filter(None, parts))))
        return (math.inf,)  # timm's key for what no pattern matches: after everything
    return from_dict


def layer_map_from_timm(model: nn.Module) -> LayerMap:
    """Read a timm model's ``group_matcher`` (fine-grained) into a layer map.

    Group 0 is the stem; later groups are blocks in forward order. What timm merges into the
    last block (``MATCH_PREV_GROUP``: a ViT's ``norm``, an EfficientNet's ``conv_head`` and
    ``bn2``) or matches with no pattern (a ConvNeXt's ``head.norm``) after the last block is
    the neck. The classifier, if the model still has one, is left out (the task head is ours).
    """
    from timm.models._manipulate import group_parameters

    if not hasattr(model, "group_matcher"):
        raise TypeError(f"{type(model).__name__} has no group_matcher; not a timm model")
    matcher = model.group_matcher(coarse=False)
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    skip = {id(p) for p in classifier.parameters()} if isinstance(classifier, nn.Module) else set()
    params = {name: p for name, p in model.named_parameters() if id(p) not in skip}
    ordinal = _timm_ordinal(matcher)
    keys = {name: ordinal(name) for name in params}
    regular = [key for key in keys.values() if key[-1] not in (_MATCH_PREV_GROUP, math.inf)]
    last_block = max(regular) if regular else (-math.inf,)
    neck = [name for name in params if keys[name] > last_block]
    grouped = group_parameters(model, matcher)
    groups = [[n for n in grouped[key] if n in params and n not in neck] for key in sorted(grouped)]
    groups = [names for names in groups if names]
    if len(groups) < 2:
        raise ValueError(f"{type(model).__name__}: timm grouping gives {len(groups)} group(s)")
    entries = containers(model, groups + [neck])
    return LayerMap(embeddings=entries[0], blocks=entries[1:-1], neck=entries[-1], head=None,
                    norms=norm_modules(model))


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
    """Layer map of a Hugging Face encoder (BERT, RoBERTa, MiniLM, ...).

    Parameters outside the embeddings and the layer stack (a pooler, a final norm) are the
    neck; a mean-pooled encoder whose pooler is removed has none.
    """
    embeddings = [name for name, module in model.named_modules()
                  if name.split(".")[-1] == "embeddings" and any(
                      isinstance(m, nn.Embedding) for m in module.modules())]
    if not embeddings:
        raise ValueError(f"{type(model).__name__}: no embeddings module found")
    stack_name, stack = _repeated_layer_list(model)
    roots = [embeddings[0]] + [f"{stack_name}.{i}" for i in range(len(stack))]
    groups: list[list[str]] = [[] for _ in range(len(roots) + 1)]
    for name, _ in model.named_parameters():
        index = next((i for i, root in enumerate(roots) if name.startswith(root + ".")),
                     len(roots))
        groups[index].append(name)
    entries = containers(model, groups)
    return LayerMap(embeddings=entries[0], blocks=entries[1:-1], neck=entries[-1],
                    norms=norm_modules(model))


def modules_under(model: nn.Module, names: list[str]) -> list[tuple[str, nn.Module]]:
    """Every module at or below the given module names. A parameter name adds no module (it
    is a tensor, not a module); ``""`` names the whole model."""
    out = []
    wanted = tuple(names)
    for name, module in model.named_modules():
        if any(name == n or not n or name.startswith(n + ".") for n in wanted):
            out.append((name, module))
    return out


def parameters_under(model: nn.Module, names: list[str]) -> list[tuple[str, torch.nn.Parameter]]:
    """Every parameter named, or owned by the named modules or their children; ``""`` names
    the whole model."""
    wanted = tuple(names)
    return [(name, p) for name, p in model.named_parameters()
            if any(name == n or not n or name.startswith(n + ".") for n in wanted)]
