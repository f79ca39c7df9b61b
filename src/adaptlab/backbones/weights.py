"""Read weight files safely: safetensors, or a tensor-only checkpoint (never arbitrary pickles)."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError

from adaptlab.errors import AdaptlabError


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` dict from ``.safetensors`` or ``.pth``/``.pt``/``.bin``.

    Torch checkpoints load with ``weights_only=True``: only tensors and plain containers are
    accepted, so an untrusted file cannot run code.
    """
    if not path.is_file():
        raise AdaptlabError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file: name it, show why
        raise AdaptlabError(f"weights file {path} cannot be read ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AdaptlabError(f"weights file {path} does not hold a flat name-to-tensor state dict")
    return state


def load_weights_option(module: torch.nn.Module, options: dict) -> None:
    """Built-in networks: ``options["weights"]`` (a file of this network's state dict, e.g.
    from another project), when given, replaces the initialisation."""
    if options.get("weights"):
        module.load_state_dict(load_state_dict_file(Path(options["weights"])))


TORCH_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# What a weights file that is not what it claims raises from a loader: refused unread.
UNREADABLE_WEIGHTS = (pickle.UnpicklingError, SafetensorError)


def pretrained_failure(source: str, exc: Exception) -> str:
    """Why ``from_pretrained(source)`` failed, in one line.

    transformers refuses a pickled weights file holding more than tensors (``weights_only``)
    with a long message that names no file; a user needs the file, and to know nothing in
    it ran. A ``model.safetensors`` that is not one (a pickle renamed) is named the same way.
    """
    folder = Path(source)
    if isinstance(exc, UNREADABLE_WEIGHTS):
        suffixes = TORCH_WEIGHT_SUFFIXES if isinstance(exc, pickle.UnpicklingError) \
            else (".safetensors",)
        files = sorted(str(p) for p in folder.glob("*") if p.suffix in suffixes) \
            if folder.is_dir() else []
        return (f"weights file {' or '.join(files) or 'in it'} is not plain tensors "
                f"({type(exc).__name__}); refused without running anything in it")
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
