"""``model.onnx`` through ``torch.onnx.export`` (the ``torch.export``-based exporter), checked
with onnxruntime against the run's own outputs.

The batch axis is dynamic (and a text's sequence length); the export's example is two rows
and the check runs a larger batch, so a graph that fixed the batch size fails the check
rather than a user's first call.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
from torch import nn

from adaptlab.errors import AdaptlabError
from adaptlab.export.model_io import FlatModel, InputLayout, dynamic_shapes, example_rows

ONNX_FILE = "model.onnx"
# Protobuf caps one file at 2 GiB; larger models keep their weights in ``model.onnx.data``.
_SINGLE_FILE_BYTES = 1.5 * 2**30


def require_onnx() -> None:
    """Refuse early, naming the extra, when the ONNX packages are not installed."""
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise AdaptlabError(f"--format onnx needs {', '.join(missing)}: "
                            "pip install 'adaptlab[export]'")


def write_onnx(folder: Path, model: nn.Module, layout: InputLayout, modality: str,
               tensors: tuple[torch.Tensor, ...], outputs: list[str]) -> Path:
    """Export ``model`` (a plain task model on the CPU) to ``folder/model.onnx``."""
    path = folder / ONNX_FILE
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    # The exporter warns when two inputs share the batch axis; they do, by design.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*The axis name: .* will not be used")
        try:
            torch.onnx.export(FlatModel(model, layout).eval(), example_rows(tensors), str(path),
                              input_names=list(layout.names), output_names=outputs,
                              dynamic_shapes=dynamic_shapes(layout, modality),
                              external_data=size > _SINGLE_FILE_BYTES, verbose=False)
        except Exception as exc:  # the exporter raises many types, each naming the failing op
            raise AdaptlabError(f"ONNX export failed: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return path


def run_onnx(path: Path, layout: InputLayout, tensors: tuple[torch.Tensor, ...]
             ) -> list[torch.Tensor]:
    """The ONNX model's outputs under onnxruntime (CPU) for ``tensors``."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    given = dict(zip(layout.names, tensors, strict=True))
    # Only the inputs the graph declares: one the model never reads (a series window's scale
    # factors) may have been left out of it.
    feeds = {inp.name: given[inp.name].cpu().numpy() for inp in session.get_inputs()}
    return [torch.from_numpy(array) for array in session.run(None, feeds)]
