"""Per-epoch checkpoints: safetensors for tensors, JSON for everything else, written atomically.

Layout under ``RUN/checkpoints/``: ``epoch-NNNN/{model,optimizer,strategy}.safetensors`` and
``state.json`` (optimizer structure, scheduler, RNG, epoch, strategy and engine state), a
``latest`` pointer replaced atomically once the folder is complete, and ``best.safetensors``.
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
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_path(root)
    atomic_write_text(root / "latest", name + "\n")
    for old in sorted(p for p in root.glob("epoch-*") if p.is_dir())[:-KEEP_LAST]:
        shutil.rmtree(old)
    return final


def load_latest_checkpoint(root: Path) -> Checkpoint | None:
    """The last complete checkpoint, or None when there is none."""
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    folder = root / pointer.read_text().strip()
    try:
        model_tensors = load_file(str(folder / "model.safetensors"))
        opt_tensors = load_file(str(folder / "optimizer.safetensors"))
        strategy_file = folder / "strategy.safetensors"
        strategy_tensors = load_file(str(strategy_file)) if strategy_file.is_file() else {}
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise AdaptlabError(f"checkpoint {folder} cannot be read ({exc})") from exc
    return Checkpoint(model_tensors, join_optimizer_state(opt_tensors, state.pop("optimizer")),
                      strategy_tensors, state)
