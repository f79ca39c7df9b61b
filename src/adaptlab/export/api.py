"""``export_run``: a finished run folder -> a Hub-compatible folder with the adapted model as
safetensors, ONNX or TorchScript, each checked against the run's own outputs.

Everything is written into a hidden folder beside ``out_dir`` and renamed onto it at the end,
so a failed export (a check refused, an operator ONNX lacks) leaves nothing behind.

The check: a batch of the run's held-out split, built with the run's own preprocessing, goes
through the run's model (strategy structure and all, as :func:`adaptlab.run_loading.load_run`
rebuilds it) and through the export; the largest absolute difference must stay within
``TOLERANCE`` (scaled by the outputs' magnitude where they exceed 1).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from adaptlab.errors import AdaptlabError
from adaptlab.export.folder import is_peft_model, write_folder
from adaptlab.export.model_io import (
    allowed_difference,
    flatten_inputs,
    flatten_outputs,
    max_difference,
    output_names,
)
from adaptlab.export.rebuild import load_exported

FORMATS = ("safetensors", "onnx", "torchscript")
TOLERANCE = 1e-4
CHECK_ROWS = 8


def check_out_dir(out_dir: Path) -> None:
    """Refuse to write over anything: a file, or a folder that holds something."""
    if out_dir.is_file() or (out_dir.is_dir() and any(out_dir.iterdir())):
        raise AdaptlabError(f"--out {out_dir}: exists and is not empty; choose a new folder")


@torch.no_grad()
def reference_batch(loaded, rows: int = CHECK_ROWS) -> tuple[Any, list[torch.Tensor]]:
    """Up to ``rows`` held-out inputs (test split, else val, else train) with the run's own
    preprocessing, and the run's model's outputs for them (on the CPU)."""
    from torch.utils.data import DataLoader

    from adaptlab.data.torch_datasets import make_torch_dataset
    from adaptlab.tasks.base import move_to

    split = next((s for s in ("test", "val", "train") if loaded.data.samples.get(s)), None)
    if split is None:
        raise AdaptlabError(f"{loaded.run_dir}: the run's data has no samples to check against")
    dataset = make_torch_dataset(loaded.data, split, loaded.backbone, False,
                                 {"image_size": loaded.config.image_size,
                                  "seed": loaded.config.seed})
    loader = DataLoader(dataset, batch_size=min(rows, len(dataset)),
                        collate_fn=getattr(dataset, "collate", None))
    inputs, _ = next(iter(loader))
    device = next(loaded.model.parameters()).device
    outputs = flatten_outputs(loaded.model(move_to(inputs, device)))
    # Integer outputs (a generation's target token ids) keep their type: they set no scale
    # for the allowed difference (see allowed_difference), so they must match exactly.
    return inputs, [(o.float() if o.is_floating_point() else o).cpu() for o in outputs]


def _checked(what: str, outputs: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    difference = max_difference(outputs, reference)
    allowed = allowed_difference(reference, TOLERANCE)
    if not difference <= allowed:  # also refuses NaN
        raise AdaptlabError(f"{what} export differs from the run's own outputs by "
                            f"{difference:.3g} (allowed {allowed:.3g}); nothing written")
    return difference


def _refuse_graph_export(run_dir: Path, format: str) -> None:
    """Refuse ``format`` (ONNX, TorchScript) in the task's words where its runs are not one
    traced graph; the task is read from ``metrics.json``, so before the run loads."""
    from adaptlab.tasks.registry import get_task_class, task_names

    try:
        task = json.loads((run_dir / "metrics.json").read_text()).get("task")
    except (OSError, ValueError, AttributeError):
        return  # load_run names what is wrong with the folder
    refusal = get_task_class(task).graph_export_refusal if task in task_names() else None
    if refusal:
        raise AdaptlabError(f"--format {format}: {refusal}")


def _publish(tmp: Path, out_dir: Path) -> None:
    if out_dir.is_dir():
        out_dir.rmdir()  # empty: checked before the export began
    tmp.rename(out_dir)


def _export_into(folder: Path, loaded, format: str, merged: bool
                 ) -> tuple[dict[str, float], float]:
    """Write every file into ``folder``; return each checked format's largest difference and
    the difference allowed."""
    inputs, reference = reference_batch(loaded)
    layout, tensors = flatten_inputs(inputs, loaded.data.modality)
    outputs = output_names(loaded.data.task, len(reference))
    base = loaded.model.get_base_model() if is_peft_model(loaded.model) else loaded.model
    write_folder(folder, loaded, merged, type(base).__name__, list(layout.names), outputs)
    # The saved folder, reloaded as a user would, is what the other formats are made from.
    plain = load_exported(folder, "cpu")
    with torch.no_grad():
        rebuilt = flatten_outputs(plain(layout.rebuild(tensors)))
    differences = {"safetensors": _checked("safetensors", rebuilt, reference)}
    if format == "onnx":
        from adaptlab.export.onnx_export import run_onnx, write_onnx

        path = write_onnx(folder, plain, layout, loaded.data.modality, tensors, outputs)
        differences["onnx"] = _checked("ONNX", run_onnx(path, layout, tensors), reference)
    elif format == "torchscript":
        from adaptlab.export.torchscript_export import run_torchscript, write_torchscript

        path = write_torchscript(folder, plain, layout, tensors)
        differences["torchscript"] = _checked("TorchScript", run_torchscript(path, tensors),
                                              reference)
    return differences, allowed_difference(reference, TOLERANCE)


def export_run(run_dir: str | Path, out_dir: str | Path, format: str = "safetensors",
               merge: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Export the finished run in ``run_dir`` into the new folder ``out_dir``.

    ``format``: ``safetensors`` (the Hub folder only), ``onnx`` (plus ``model.onnx``) or
    ``torchscript`` (plus ``model.pt``; neither for a generation run, whose decoding is a
    loop around the model: refused before anything is written). ``merge``: fold a peft
    adapter into the weights; without it a LoRA run is written as base weights plus
    ``adapter/``. ONNX and TorchScript are always merged, and so is every strategy without an
    adapter (their weights are the plain model's). ``device``: where the run's model computes
    the reference outputs.

    Returns ``{"out_dir", "format", "merged", "files", "max_abs_diff": {format: value},
    "allowed_diff"}``.

    >>> export_run("runs/lora", "exports/lora", format="onnx")  # doctest: +SKIP
    """
    from adaptlab.run_loading import load_run

    if format not in FORMATS:
        raise AdaptlabError(f"--format {format!r}: choose from {', '.join(FORMATS)}")
    if format != "safetensors":
        _refuse_graph_export(Path(run_dir), format)
    if format == "onnx":
        from adaptlab.export.onnx_export import require_onnx

        require_onnx()
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    loaded = load_run(run_dir, device=device)
    if merge and loaded.strategy.keeps_structure:
        loaded.strategy.merged_state_dict(loaded.model)  # refuses, in the strategy's words
    merged = merge or format != "safetensors" or not is_peft_model(loaded.model)
    tmp = out_dir.parent / f".{out_dir.name}.export-{os.getpid()}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        differences, allowed = _export_into(tmp, loaded, format, merged)
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        check_out_dir(out_dir)  # nothing appeared there meanwhile
        _publish(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return {"out_dir": str(out_dir), "format": format, "merged": merged, "files": files,
            "max_abs_diff": differences, "allowed_diff": allowed}
