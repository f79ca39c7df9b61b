"""Re-initialising the top blocks before fine-tuning (the biomedical fine-tuning stability
recipe: for small data, the top layers' pre-trained weights are too specialised to the
pre-training task, and fresh weights of the same shape fine-tune more stably).

The weights are drawn with the backbone's own initialisation: a Hugging Face model's
``_init_weights`` (its ``initializer_range``, norms to one, biases to zero); for other
backbones (timm, the built-in networks) each layer's ``reset_parameters``, torch's default,
because timm exposes no uniform per-module init across its families. Drawn from a generator
seeded by ``seed`` with the global stream forked, so the rest of the run draws the same
numbers with or without a re-initialisation.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from adaptlab.backbones.layer_map import LayerMap
from adaptlab.errors import AdaptlabError
from adaptlab.strategies.layer_rates import under_entry


def top_block_entries(layer_map: LayerMap, k: int) -> list[str]:
    """The entries of the top ``k`` blocks."""
    return [entry for block in layer_map.blocks[layer_map.num_blocks - k:] for entry in block]


def resolve_entries(model: nn.Module, entries: list[str]) -> dict[str, nn.Parameter]:
    """Every parameter of ``model`` under the given entries, also where a strategy has wrapped
    the model (peft's ``base_model.model.`` prefix)."""
    return {name: param for name, param in model.named_parameters()
            if any(under_entry(name, entry) for entry in entries)}


def _hf_owner(model: nn.Module, module_name: str):
    """The innermost Hugging Face ``PreTrainedModel`` holding ``module_name``, or None. Read
    from ``sys.modules``: a model built without transformers imported holds none."""
    transformers = sys.modules.get("transformers")
    if transformers is None:
        return None
    owner = None
    for name, module in model.named_modules():
        inside = not name or module_name == name or module_name.startswith(name + ".")
        if inside and isinstance(module, transformers.PreTrainedModel):
            owner = module  # named_modules goes outside in: the last one is the innermost
    return owner


def _reinit_module(model: nn.Module, name: str, module: nn.Module) -> None:
    owner = _hf_owner(model, name)
    for sub in module.modules():
        if owner is not None:
            # Loaded weights carry transformers' "already initialised" mark, which makes
            # _init_weights skip them; lift it for the re-draw.
            marks = {p: getattr(p, "_is_hf_initialized", None)
                     for p in sub.parameters(recurse=False)}
            for param in marks:
                param._is_hf_initialized = False
            owner._init_weights(sub)
            for param, mark in marks.items():
                if mark is not None:
                    param._is_hf_initialized = mark
        elif hasattr(sub, "reset_parameters"):
            sub.reset_parameters()


def reinitialise_top_blocks(model: nn.Module, layer_map: LayerMap, k: int,
                            seed: int) -> list[str]:
    """Re-draw the weights of the top ``k`` blocks in place; returns the parameter names
    that changed. A parameter no initialiser reaches (a bare tensor the block holds) is
    refused by name rather than left pre-trained inside a "re-initialised" block."""
    if not 0 <= k <= layer_map.num_blocks:
        raise AdaptlabError(f"reinit_top={k} is out of range for a backbone with "
                            f"{layer_map.num_blocks} blocks (use 0..{layer_map.num_blocks})")
    if k == 0:
        return []
    entries = top_block_entries(layer_map, k)
    params = resolve_entries(model, entries)
    if not params:
        raise AdaptlabError(f"reinit_top={k}: the top blocks ({entries[0]!r}, ...) are not in "
                            "this model as the strategy built it")
    before = {name: param.detach().clone() for name, param in params.items()}
    modules = [(name, module) for name, module in model.named_modules()
               if any(name == e or ("." + name).endswith("." + e) for e in entries)]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for name, module in modules:
            _reinit_module(model, name, module)
    unchanged = [name for name, param in params.items() if torch.equal(param, before[name])]
    if unchanged:
        raise AdaptlabError(f"reinit_top={k}: no initialiser reaches {unchanged[0]!r} of this "
                            "backbone's top blocks")
    return sorted(params)
