"""SlimFit's units (what the inter-layer scheduler freezes or trains as one) and their scores.

As in the reference (``ViT/CIFAR10.py``: every tensor with ``dim() > 1`` plus the LayerNorm
weights, the classifier excluded), a unit is one weight matrix or one norm layer's weight;
the bias of the same module goes with it, so a unit is frozen or trained whole. Our
extensions, for backbones the reference never met: every normalisation layer (a CNN's
BatchNorm plays the LayerNorm's part) is a unit, and a backbone tensor that fits neither
rule (a 1-D layer-scale) is a unit of its own, so nothing in the backbone escapes the
schedule. The task head is never a unit: it always trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from adaptlab.backbones.layer_map import LayerMap


@dataclass(frozen=True)
class Unit:
    """``name``: the scored tensor (a weight); ``params``: every parameter frozen or trained
    with it (the weight first, then the module's bias); ``numel``: their size together."""

    name: str
    params: tuple[str, ...]
    numel: int


def _under(name: str, prefix: str | None) -> bool:
    return prefix is not None and (name == prefix or name.startswith(prefix + "."))


def find_units(model: nn.Module, layer_map: LayerMap) -> list[Unit]:
    """The backbone's units in parameter order (the task head, ``layer_map.head``, left out):
    a module's ``weight`` with its ``bias`` (a matrix, a convolution, an embedding, a norm
    layer), and every other tensor on its own (a class token, a position embedding)."""
    units: list[Unit] = []
    for module_name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        full = {key: f"{module_name}.{key}" if module_name else key for key in own}
        own = {key: p for key, p in own.items() if not _under(full[key], layer_map.head)}
        if "weight" in own:
            units.append(_unit(full, own, ["weight", "bias"]))
        units += [_unit(full, own, [key]) for key in own
                  if key != "weight" and not (key == "bias" and "weight" in own)]
    return units


def _unit(full: dict[str, str], own: dict[str, nn.Parameter], keys: list[str]) -> Unit:
    keys = [key for key in keys if key in own]
    return Unit(full[keys[0]], tuple(full[key] for key in keys),
                sum(own[key].numel() for key in keys))


def frozen_count(freeze_ratio: float, units: int) -> int:
    """Units frozen each step: ``floor(freeze_ratio * units)``, the reference's
    ``int(0.9 * t)`` (a hair of tolerance so 0.95 * 20 is 19, not 18.999...)."""
    return math.floor(freeze_ratio * units + 1e-9)


def select_trained(scores: torch.Tensor, freeze_ratio: float) -> torch.Tensor:
    """Boolean mask of the units that train: all but the ``frozen_count`` lowest-scoring
    (a stable sort, so equal scores resolve by unit order, the same on every resume)."""
    order = torch.sort(scores, stable=True).indices
    mask = torch.ones(len(scores), dtype=torch.bool)
    mask[order[:frozen_count(freeze_ratio, len(scores))]] = False
    return mask


def initial_scores(count: int, seed: int) -> torch.Tensor:
    """Random and large, as the reference (``torch.rand(t) * 1e7``), from a generator of its
    own: the global RNG's stream (dropout, data order) stays what it would be without us."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, generator=generator, dtype=torch.float64) * 1e7


@torch.no_grad()
def relative_change(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``mean(|(old - new) / old|)``, the reference's score. An entry whose old value is
    exactly zero (a bias or token initialised to zero) would divide by zero: it counts its
    absolute change instead, so the score stays finite and still sees that entry move."""
    old, new = old.double(), new.double()
    denominator = torch.where(old == 0, torch.ones_like(old), old.abs())
    return ((old - new).abs() / denominator).mean()
