"""Start a run from another run's trained weights: the transfer step of "pre-train on a
plentiful source, adapt to a scarce target".

The source run is read back through its own strategy (so a LoRA or any structural source
arrives merged into plain weights). The backbone's tensors are loaded by name; the task head's
only when it has the same shape and the source run saw the same class names in the same order,
because a head trained on other classes would start the target with wrong answers rather
than none.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from adaptlab.errors import AdaptlabError


def finished_run_config(run_dir: str | Path) -> dict:
    """The config of a finished source run, or an error naming what is missing."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise AdaptlabError(f"init_from {run_dir}: not a run folder (config.json missing)")
    if not (run_dir / "metrics.json").is_file():
        raise AdaptlabError(f"init_from {run_dir}: the run has not finished (metrics.json missing)")
    try:
        return json.loads((run_dir / "config.json").read_text())
    except ValueError as exc:
        raise AdaptlabError(f"init_from {run_dir}: config.json is not JSON ({exc})") from exc


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
    finished_run_config(run_dir)
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


def _source_state(model: nn.Module, layer_map, run_dir: Path) -> tuple[dict, list[str]]:
    """The source run's adapted model as a plain state dict of ``model``'s kind: its strategy
    applied to a copy of ``model`` (adapters, prompts), its saved tensors loaded (those of
    another shape, a head for other classes, skipped) and folded back in. Also the names of
    the tensors its weights file holds, to name one in an error."""
    import copy

    from adaptlab.strategies.registry import get_strategy_class, recorded_strategy_options

    config = finished_run_config(run_dir)
    name = config.get("strategy") or "full"
    strategy = get_strategy_class(name).from_options(
        recorded_strategy_options(name, config.get("strategy_options")))
    saved = strategy.final_tensors(run_dir)
    try:
        applied = strategy.apply(copy.deepcopy(model), layer_map)
        strategy.load_saved(applied, saved, ignore_mismatched=True)
    except AdaptlabError as exc:
        raise AdaptlabError(f"init_from {run_dir}: its weights do not fit this model ({exc}); "
                            "was it trained with another backbone?") from exc
    return strategy.merged_state_dict(applied), sorted(saved)


def load_source_weights(model: nn.Module, layer_map, run_dir: str | Path,
                        class_names: list[str] | None, dry_run: bool = False
                        ) -> dict[str, int]:
    """Copy the source run's backbone (and, for the same classes, head) into ``model``,
    whatever strategy trained it (a LoRA source arrives merged).

    Returns how many tensors the source changed per part (backbone tensors that differ from
    ``model``'s, head tensors taken); raises when it changed none of the backbone (a source of
    another backbone, or one that trained only its head). ``dry_run`` checks and counts
    without loading: a model whose backbone module is shared with a later one must stay as
    pre-trained, or the later count would compare the source with itself."""
    run_dir = Path(run_dir)
    state, saved_names = _source_state(model, layer_map, run_dir)
    own = model.state_dict()
    head = (layer_map.head + ".") if layer_map.head else None
    same_classes = class_names is not None and _class_names(run_dir) == list(class_names)
    chosen: dict[str, torch.Tensor] = {}
    changed_backbone = 0
    for name, tensor in state.items():
        if name not in own or own[name].shape != tensor.shape:
            continue
        if name.startswith("backbone."):
            chosen[name] = tensor
            changed_backbone += int(not torch.equal(own[name], tensor))
        elif same_classes and head and name.startswith(head):
            chosen[name] = tensor
    if not changed_backbone:
        example = saved_names[0] if saved_names else "none"
        raise AdaptlabError(f"init_from {run_dir}: none of its backbone tensors fit this model "
                            f"(e.g. {example!r}); was it trained with another backbone?")
    taken = sum(1 for name in chosen if head and name.startswith(head))
    if not dry_run:
        model.load_state_dict(chosen, strict=False)
        if taken:
            # A head trained on the same classes is no new head: it trains at the run's rate,
            # not the new-head floor (Strategy.param_groups).
            model.head_is_pretrained = True
    return {"backbone": changed_backbone, "head": taken}
