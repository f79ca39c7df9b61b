"""The soup as a run folder like any other: ``config.json``, ``data.json``, ``origin.json``,
``metrics.json``, ``costs.json`` and the strategy's own weights, so ``load_run``, ``explain``,
``predict``, ``compare`` and the runs panel read it as they read a trained run; plus
``soup.json``, the recipe.

Everything is written into a hidden folder beside ``--out`` and moved into place once the
soup reloads to the same outputs: an interrupted soup leaves no half-written run folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from adaptlab.config import RunConfig
from adaptlab.engine.atomic import atomic_write_text
from adaptlab.errors import AdaptlabError
from adaptlab.soups.average import Ingredient
from adaptlab.soups.recipe import Kitchen, Recipe

SOUP_FILE = "soup.json"


def check_out(out: Path, run_dirs: list[Path]) -> None:
    """Refuse an ``--out`` that holds anything, is a file, or lies inside an ingredient."""
    if out.is_file():
        raise AdaptlabError(f"--out {out}: is a file; give a new folder")
    if out.is_dir() and any(out.iterdir()):
        raise AdaptlabError(f"--out {out}: folder exists and is not empty; give a new folder")
    target = out.resolve()
    for run_dir in run_dirs:
        if target == run_dir.resolve() or run_dir.resolve() in target.parents:
            raise AdaptlabError(f"--out {out}: inside the ingredient run {run_dir}")


def _write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def soup_metrics(first: Ingredient, kitchen: Kitchen, recipe: Recipe,
                 final: dict[str, dict]) -> dict[str, Any]:
    """``metrics.json``: the soup's own evaluation on every split; the baselines, class names
    and split sizes of the first ingredient (same start, same data); no training history,
    since the soup trained nothing."""
    return {**first.metrics, "monitor": kitchen.task.monitor,
            "higher_is_better": kitchen.task.higher_is_better, "final": final,
            "history": [], "best_epoch": None, "epochs_run": 0, "stopped_early": False,
            "soup": {"method": recipe.method, "ingredients": len(recipe.scores),
                     "kept": len(recipe.kept)}}


def _training_memory(memory: dict[str, Any]) -> int:
    parts = ("parameters", "gradients", "optimizer", "activations")
    return int(memory.get("peak_cuda") or sum(int(memory.get(k) or 0) for k in parts))


def soup_costs(ingredients: list[Ingredient], kitchen: Kitchen, artefacts: dict[str, Any],
               soup_seconds: float) -> dict[str, Any]:
    """``costs.json``. The soup has the first ingredient's parameter counts; its training
    memory is the largest any ingredient needed (they train one at a time); the seconds are
    what the ingredients' training took in all, and apart from them the seconds averaging and
    evaluating took. There is no per-epoch throughput: no epoch ran, so those keys are left
    out (readers show "-")."""
    first = ingredients[0].costs
    memories = [i.costs.get("memory_bytes") or {} for i in ingredients]
    seconds = [(i.costs.get("seconds_per_epoch"), i.metrics.get("epochs_run")) for i in ingredients]
    training = None if any(s is None or e is None for s, e in seconds) else \
        float(sum(s * e for s, e in seconds))
    return {**{key: first.get(key) for key in ("trainable_params", "total_params",
                                               "trainable_percent")},
            "memory_bytes": max(memories, key=_training_memory),
            # Unknown if any ingredient's run predates the key.
            "peak_total_bytes": None if any(i.costs.get("peak_total_bytes") is None
                                            for i in ingredients)
            else max(i.costs["peak_total_bytes"] for i in ingredients),
            "ingredients_training_seconds": training, "soup_seconds": soup_seconds,
            "device": str(kitchen.device), **artefacts}


def _reload_difference(kitchen: Kitchen, folder: Path) -> float:
    """Load the written folder as ``load_run`` does and compare outputs with the soup in
    memory: the folder is only trusted once it gives the same model."""
    from adaptlab.run_loading import load_run
    from adaptlab.strategies.roundtrip import ROUNDTRIP_TOLERANCE, max_logit_difference

    loaded = load_run(folder, device=str(kitchen.device), with_data=False)
    batch = next(iter(kitchen.loaders["test"]))[0]
    difference = max_logit_difference(kitchen.model, loaded.model, batch)
    if difference > ROUNDTRIP_TOLERANCE:
        raise AdaptlabError(f"soup: the written weights reload {difference:.3g} away from the "
                            f"averaged model (tolerance {ROUNDTRIP_TOLERANCE})")
    return difference


def write_soup_folder(out: Path, ingredients: list[Ingredient], kitchen: Kitchen, recipe: Recipe,
                      final: dict[str, dict], started: float) -> Path:
    """Write the soup run folder for the model now in ``kitchen`` (the soup's tensors loaded)."""
    from adaptlab.session import _origin  # the same record of where a run was started

    first = ingredients[0]
    tmp = out.parent / f".{out.name}.soup-tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        artefacts = kitchen.strategy.save_final(kitchen.model, tmp)
        # Every option listed, as a run records them (the first run may predate that).
        config = replace(RunConfig.from_file(first.run_dir / "config.json"),
                         out=str(out)).with_resolved_options()
        atomic_write_text(tmp / "config.json", config.to_json() + "\n")
        _write_json(tmp / "origin.json", _origin())
        atomic_write_text(tmp / "data.json", json.dumps(kitchen.data.description(), indent=1) + "\n")
        if (first.run_dir / "baseline.json").is_file():
            atomic_write_text(tmp / "baseline.json", (first.run_dir / "baseline.json").read_text())
        _write_json(tmp / "metrics.json", soup_metrics(first, kitchen, recipe, final))
        artefacts["reload_max_abs_diff"] = _reload_difference(kitchen, tmp)
        _write_json(tmp / "costs.json",
                    soup_costs(ingredients, kitchen, artefacts, time.monotonic() - started))
        _write_json(tmp / SOUP_FILE, {
            "method": recipe.method,
            "ingredients": [{"run": str(run_dir), "val": score} for run_dir, score in recipe.scores],
            "kept": [str(run_dir) for run_dir in recipe.kept],
            "monitor": kitchen.task.monitor, "higher_is_better": kitchen.task.higher_is_better,
            "val": kitchen.score(final["val"])})
        if out.is_dir():
            out.rmdir()  # empty (check_out): the finished folder takes its place
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
