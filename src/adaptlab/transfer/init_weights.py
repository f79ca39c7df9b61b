"""Start a run from another run's trained weights: the transfer step of "pre-train on a
plentiful source, adapt to a scarce target".

The source run's ``weights.safetensors`` holds every tensor its strategy trained (all of them
for ``full``). The backbone's tensors are loaded by name; the task head's only when it has
the same shape and the source run saw the same class names in the same order, because a
head trained on other classes would start the target with wrong answers rather than none.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from adaptlab.errors import AdaptlabError


def source_weights_file(run_dir: str | Path) -> Path:
    """The weights file of a finished source run, or an error naming what is missing."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise AdaptlabError(f"init_from {run_dir}: not a run folder (config.json missing)")
    if not (run_dir / "metrics.json").is_file():
        raise AdaptlabError(f"init_from {run_dir}: the run has not finished (metrics.json missing)")
    path = run_dir / "weights.safetensors"
    if not path.is_file():
        raise AdaptlabError(f"init_from {run_dir}: no weights.safetensors (a run with strategy "
                            "full, freeze or head saves one; a lora run saves an adapter)")
    return path


def _describe(grid: dict[str, list[float]]) -> str:
    if not grid:
        return "no recorded grid"
    parts = [f"{name} {len(values)} points {min(values):g}..{max(values):g}"
             for name, values in grid.items()]
    return ", ".join(parts)


def check_same_grid(run_dir: str | Path, grid: dict[str, list[float]]) -> None:
    """Refuse a source run trained on fields of another grid: convolutions run on any grid
    and pooling hides the size, so a mismatch would train without a word and transfer
    features of other places and resolutions."""
    source_weights_file(run_dir)
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    source = metrics.get("grid") or {}
    if not source and not grid:
        return
    same = source.keys() == grid.keys() and all(
        len(source[k]) == len(grid[k])
        and all(abs(a - b) < 1e-3 for a, b in zip(source[k], grid[k], strict=True))
        for k in grid)
    if not same:
        raise AdaptlabError(f"init_from {run_dir}: the source was trained on another grid "
                            f"({_describe(source)}) than this data ({_describe(grid)}); "
                            "regrid one of them to the other")


def _class_names(run_dir: Path) -> list[str] | None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    names = metrics.get("class_names")
    return list(names) if isinstance(names, list) else None


def load_source_weights(model: nn.Module, run_dir: str | Path,
                        class_names: list[str] | None) -> dict[str, int]:
    """Copy the source run's backbone (and, where it fits, head) tensors into ``model``.

    Returns how many tensors were loaded per part; raises when nothing of the backbone
    matched (a source run of another backbone)."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    tensors = load_file(str(source_weights_file(run_dir)))
    own = model.state_dict()
    same_classes = class_names is not None and _class_names(run_dir) == list(class_names)
    chosen: dict[str, torch.Tensor] = {}
    skipped_shape = []
    for name, tensor in tensors.items():
        if name not in own:
            continue
        if own[name].shape != tensor.shape:
            skipped_shape.append(name)
            continue
        if name.startswith("backbone.") or same_classes:
            chosen[name] = tensor
    backbone = sum(1 for name in chosen if name.startswith("backbone."))
    if not backbone:
        example = skipped_shape[0] if skipped_shape else next(iter(tensors), "none")
        raise AdaptlabError(f"init_from {run_dir}: none of its backbone tensors fit this model "
                            f"(e.g. {example!r}); was it trained with another backbone?")
    model.load_state_dict(chosen, strict=False)
    return {"backbone": backbone, "head": len(chosen) - backbone}
