"""``model.pt``: the merged model traced to TorchScript, loadable with ``torch.jit.load``
alone (no adaptlab, no peft), from Python or C++ (LibTorch).

``torch.jit`` is deprecated in torch 2.14 but still the format LibTorch and most serving tools
load; its deprecation warning is kept out of the user's terminal, the tracer's own warnings
(a shape-dependent branch) are not.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from adaptlab.errors import AdaptlabError
from adaptlab.export.model_io import FlatModel, InputLayout, example_rows, flatten_outputs

TORCHSCRIPT_FILE = "model.pt"


@contextlib.contextmanager
def _quiet_deprecation() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated",
                                category=FutureWarning)
        yield


def write_torchscript(folder: Path, model: nn.Module, layout: InputLayout,
                      tensors: tuple[torch.Tensor, ...]) -> Path:
    """Trace ``model`` (a plain task model on the CPU) into ``folder/model.pt``."""
    path = folder / TORCHSCRIPT_FILE
    with _quiet_deprecation():
        try:
            traced = torch.jit.trace(FlatModel(model, layout).eval(), example_rows(tensors),
                                     check_trace=False)
        except Exception as exc:  # the tracer raises many types, each naming what failed
            raise AdaptlabError(f"TorchScript trace failed: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
        traced.save(str(path))
    return path


@torch.no_grad()
def run_torchscript(path: Path, tensors: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """The saved TorchScript model's outputs for ``tensors``, loaded as a user would."""
    with _quiet_deprecation():
        loaded = torch.jit.load(str(path), map_location="cpu")
    return flatten_outputs(loaded(*(t.cpu() for t in tensors)))
