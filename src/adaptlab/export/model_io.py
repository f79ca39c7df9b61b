"""What an exported graph reads and returns: flat, named tensors.

Task models take a tensor (images, fields, point clouds) or a (nested) dict of tensors
(tokens, series windows, retrieval pairs) and return a tensor or a tuple. ONNX and TorchScript
want positional tensors with names, so :class:`FlatModel` takes the inputs as one flat
positional list and rebuilds the structure the task model expects; the names come from the
dict keys (``input_ids``, ``attention_mask``, ``query_input_ids``) or, for a bare tensor,
from the modality (``pixel_values`` for images).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adaptlab.errors import AdaptlabError

# A bare tensor input, named by what it holds (Hugging Face's name for images).
TENSOR_INPUT_NAMES = {"image": "pixel_values", "array-image": "pixel_values",
                      "field": "fields", "points": "points", "point-segments": "points"}
# Tasks whose output is one score per class: named ``logits`` as Hugging Face names them.
LOGIT_TASKS = ("classification", "segmentation")
TEXT_MODALITIES = ("text", "text-pairs")


@dataclass(frozen=True)
class InputLayout:
    """Where each flat input goes: ``paths[i]`` is the key path of input ``names[i]`` in the
    task model's nested dict, or ``()`` for a model that takes one bare tensor."""

    names: tuple[str, ...]
    paths: tuple[tuple[str, ...], ...]

    def rebuild(self, tensors: tuple[torch.Tensor, ...]) -> Any:
        """The task model's input from the flat tensors."""
        if self.paths == ((),):
            return tensors[0]
        nested: dict[str, Any] = {}
        for path, tensor in zip(self.paths, tensors, strict=True):
            node = nested
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = tensor
        return nested


def _leaves(inputs: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], torch.Tensor]]:
    if isinstance(inputs, Mapping):
        return [leaf for key, value in inputs.items() for leaf in _leaves(value, (*path, str(key)))]
    if not torch.is_tensor(inputs):
        raise AdaptlabError(f"model input {'.'.join(path) or 'x'} is a {type(inputs).__name__}; "
                            "only tensors and dicts of tensors can be exported")
    return [(path, inputs)]


def flatten_inputs(inputs: Any, modality: str) -> tuple[InputLayout, tuple[torch.Tensor, ...]]:
    """The layout of ``inputs`` (a batch as the task model takes it) and its tensors."""
    leaves = _leaves(inputs)
    if leaves[0][0] == ():
        return InputLayout((TENSOR_INPUT_NAMES.get(modality, "inputs"),), ((),)), (leaves[0][1],)
    names = tuple("_".join(path) for path, _ in leaves)
    return InputLayout(names, tuple(path for path, _ in leaves)), tuple(t for _, t in leaves)


def flatten_outputs(outputs: Any) -> list[torch.Tensor]:
    """A model's output as a list of tensors (a tuple's items in order)."""
    if torch.is_tensor(outputs):
        return [outputs]
    if isinstance(outputs, tuple | list):
        return [t for item in outputs for t in flatten_outputs(item)]
    raise AdaptlabError(f"model output is a {type(outputs).__name__}; only tensors and tuples "
                        "of tensors can be exported")


def output_names(task: str, count: int) -> list[str]:
    base = "logits" if task in LOGIT_TASKS else "outputs"
    return [base] if count == 1 else [f"{base}_{i}" for i in range(count)]


class FlatModel(nn.Module):
    """``model`` called with flat positional tensors; returns a tensor or a tuple of them."""

    def __init__(self, model: nn.Module, layout: InputLayout) -> None:
        super().__init__()
        self.model = model
        self.layout = layout

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        outputs = flatten_outputs(self.model(self.layout.rebuild(tensors)))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def dynamic_shapes(layout: InputLayout, modality: str) -> tuple[tuple[dict, ...]]:
    """``torch.export`` dynamic dimensions: the batch everywhere, and for token inputs the
    sequence length (one per text: a query and its document differ)."""
    batch = torch.export.Dim("batch")
    shapes = []
    for _ in layout.paths:
        dims: dict[int, Any] = {0: batch}
        if modality in TEXT_MODALITIES:
            dims[1] = torch.export.Dim.DYNAMIC
        shapes.append(dims)
    return (tuple(shapes),)  # one entry: FlatModel's ``*tensors``


def example_rows(tensors: tuple[torch.Tensor, ...], rows: int = 2) -> tuple[torch.Tensor, ...]:
    """The first ``rows`` of every input, as the export's example: more than one row, or the
    exporter fixes the batch size at 1."""
    if tensors[0].shape[0] < rows:
        tensors = tuple(torch.cat([t] * rows) for t in tensors)
    return tuple(t[:rows] for t in tensors)


def max_difference(outputs: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """Largest absolute difference between matching outputs."""
    if len(outputs) != len(reference):
        raise AdaptlabError(f"the export returns {len(outputs)} outputs, the run's model "
                            f"{len(reference)}")
    return max(float((o.float().cpu() - r.float().cpu()).abs().max()) if o.numel() else 0.0
               for o, r in zip(outputs, reference, strict=True))


def allowed_difference(reference: list[torch.Tensor], tolerance: float) -> float:
    """``tolerance`` absolute, scaled up for outputs larger than 1 (float32 keeps about seven
    significant digits, so a forecast in the thousands cannot match to 1e-4). Integer outputs
    (token ids in the hundreds) set no scale: they must match exactly."""
    largest = max((float(r.float().abs().max()) for r in reference
                   if r.numel() and r.is_floating_point()), default=0.0)
    return tolerance * max(1.0, largest)
