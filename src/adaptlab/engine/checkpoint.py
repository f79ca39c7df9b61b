"""Per-epoch checkpoints: safetensors for tensors, JSON for everything else, written atomically.

Layout under ``RUN/checkpoints/``: ``epoch-NNNN/{model,optimizer,strategy}.safetensors`` and
``state.json`` (optimizer structure, scheduler, RNG, epoch, strategy and engine state), written
in a hidden folder and renamed into place when complete; a ``latest`` pointer for readers, and
``best.safetensors``. Resuming takes the newest folder that reads back.
No pickle anywhere: a checkpoint from an untrusted source cannot run code.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from adaptlab.engine.atomic import _fsync_path, atomic_write_text
from adaptlab.errors import AdaptlabError

KEEP_LAST = 2


def split_optimizer_state(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Separate an optimizer state dict into tensors and a JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict] = {}
    for param_id, entries in state["state"].items():
        plain[str(param_id)] = {}
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{param_id}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain[str(param_id)][key] = value
    return tensors, {"state": plain, "param_groups": state["param_groups"]}


def join_optimizer_state(tensors: dict[str, torch.Tensor], plain: dict) -> dict:
    state: dict[int, dict] = {int(pid): dict(entries) for pid, entries in plain["state"].items()}
    for name, tensor in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = tensor
    return {"state": state, "param_groups": plain["param_groups"]}


@dataclass
class Checkpoint:
    """What one checkpoint holds: the strategy's declared model tensors, the optimizer state,
    the strategy's own tensors (scores, masks) and the JSON engine state."""

    model: dict[str, torch.Tensor]
    optimizer: dict
    strategy: dict[str, torch.Tensor]
    state: dict[str, Any]
    folder: Path | None = None


def save_checkpoint(root: Path, epoch: int, model_tensors: dict[str, torch.Tensor],
                    optimizer_state: dict, state: dict[str, Any],
                    strategy_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``root/epoch-NNNN`` completely, then point ``root/latest`` at it."""
    root.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch:04d}"
    tmp = root / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    opt_tensors, opt_plain = split_optimizer_state(optimizer_state)
    save_file({k: v.detach().cpu().contiguous() for k, v in model_tensors.items()},
              str(tmp / "model.safetensors"))
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    save_file({k: v.detach().cpu().contiguous() for k, v in (strategy_tensors or {}).items()},
              str(tmp / "strategy.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**state, "optimizer": opt_plain}, indent=1))
    for child in tmp.iterdir():
        _fsync_path(child)
    final = root / name
    if final.exists():
        # Renamed away before removal: a kill mid-removal must not leave a half folder
        # under a checkpoint's name.
        doomed = root / f".{name}.old"
        if doomed.exists():
            shutil.rmtree(doomed)
        os.replace(final, doomed)
        shutil.rmtree(doomed)
    os.replace(tmp, final)
    _fsync_path(root)
    atomic_write_text(root / "latest", name + "\n")
    for old in sorted(p for p in root.glob("epoch-*") if p.is_dir())[:-KEEP_LAST]:
        shutil.rmtree(old)
    return final


class DamagedCheckpoint(AdaptlabError):
    def __init__(self, path: Path, cause: Exception) -> None:
        super().__init__(f"checkpoint file {path} is damaged ({type(cause).__name__}: {cause})")
        self.path = path


_UNREADABLE = (OSError, ValueError, KeyError, TypeError, SafetensorError)


def _read_folder(folder: Path) -> Checkpoint:
    """One checkpoint folder; a file that cannot be read raises ``DamagedCheckpoint`` naming it."""
    tensors = {}
    for name in ("model", "optimizer", "strategy"):
        path = folder / f"{name}.safetensors"
        if name == "strategy" and not path.is_file():
            tensors[name] = {}  # written by versions before strategies held tensors
            continue
        try:
            tensors[name] = load_file(str(path))
        except _UNREADABLE as exc:
            raise DamagedCheckpoint(path, exc) from exc
    path = folder / "state.json"
    try:
        state = json.loads(path.read_text())
        optimizer = join_optimizer_state(tensors["optimizer"], state.pop("optimizer"))
    except _UNREADABLE as exc:
        raise DamagedCheckpoint(path, exc) from exc
    return Checkpoint(tensors["model"], optimizer, tensors["strategy"], state, folder)


def _candidates(root: Path) -> list[Path]:
    """Checkpoint folders, newest first.

    A folder gets its ``epoch-*`` name only once every file in it is written and synced, so
    each one was complete when written; the newest is taken even when the process died
    before moving the ``latest`` pointer to it.
    """
    return sorted((p for p in root.glob("epoch-*") if p.is_dir()), reverse=True)


def load_latest_checkpoint(root: Path, on_damaged=None) -> Checkpoint | None:
    """The last complete checkpoint that reads back, or None when none was ever written.

    A checkpoint damaged on disk (truncated, overwritten, not safetensors) is reported to
    ``on_damaged(path, message)`` and the previous one is taken; when every one is damaged,
    one error names the newest damaged file.
    """
    candidates = _candidates(root)
    if not candidates:
        return None
    damaged: list[DamagedCheckpoint] = []
    for folder in candidates:
        try:
            loaded = _read_folder(folder)
        except DamagedCheckpoint as exc:
            damaged.append(exc)
            if on_damaged is not None:
                on_damaged(exc.path, str(exc))
            continue
        return loaded
    raise AdaptlabError(f"{damaged[0]}; no earlier checkpoint in {root} reads back either: "
                        "start a new run") from damaged[0]
