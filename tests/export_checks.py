"""The export check the modalities' tests share: held-out inputs built with the run's own
preprocessing, the run's outputs for them computed here from the model ``load_run`` rebuilds
(never the export's own check), and the same inputs through the exported folder
(``load_exported``) and through its ONNX graph (onnxruntime) or TorchScript module.

The inputs are the last rows of the run's test split, once as one batch and once a row at a
time: the export traced two rows and checked the split's first eight, so a graph that fixed
the batch size (or, for text, the sequence length) fails here.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

TOLERANCE = 1e-4  # absolute: the bound the export promises against the run's own outputs


def as_list(outputs: Any) -> list[torch.Tensor]:
    """A model's output (a tensor or a tuple of them) as a flat list of float tensors."""
    if torch.is_tensor(outputs):
        return [outputs.float()]
    return [tensor for item in outputs for tensor in as_list(item)]


def named_inputs(inputs: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """A batch's tensors under the names a user feeds a graph: nested dict keys joined by
    ``_`` (``query_input_ids``); a bare tensor under ``""``."""
    if torch.is_tensor(inputs):
        return {prefix: inputs}
    out: dict[str, torch.Tensor] = {}
    for key, value in inputs.items():
        out.update(named_inputs(value, f"{prefix}_{key}" if prefix else key))
    return out


def held_out(run: Path | Any, rows: int = 3) -> list[tuple[Any, list[torch.Tensor]]]:
    """``(inputs, the run's outputs)`` for the test split's last ``rows`` rows as one batch,
    then for each of them alone; ``run`` is a run folder or a run ``load_run`` returned."""
    from torch.utils.data import default_collate

    from adaptlab.data.torch_datasets import make_torch_dataset
    from adaptlab.run_loading import load_run

    loaded = load_run(run, device="cpu") if isinstance(run, str | Path) else run
    dataset = make_torch_dataset(loaded.data, "test", loaded.backbone, False,
                                 {"image_size": loaded.config.image_size})
    collate = getattr(dataset, "collate", None) or default_collate
    indices = list(range(len(dataset)))[-rows:]
    batches = [collate([dataset[i] for i in indices])[0]]
    batches += [collate([dataset[i]])[0] for i in indices]
    with torch.no_grad():
        return [(inputs, as_list(loaded.model(inputs))) for inputs in batches]


def largest_difference(outputs: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    assert [o.shape for o in outputs] == [e.shape for e in expected]
    return max(float((o.float() - e).abs().max()) for o, e in zip(outputs, expected, strict=True))


@dataclass
class ExportCheck:
    config: dict[str, Any]  # the folder's config.json
    differences: dict[str, float]  # per route ("folder", "onnx", "torchscript"): the largest
    graph_inputs: list[str]  # the ONNX graph's input names (empty for other formats)


def _onnx_outputs(session, inputs: Any) -> list[torch.Tensor]:
    given = named_inputs(inputs)
    names = [i.name for i in session.get_inputs()]
    if list(given) == [""]:  # a bare tensor: the graph's one input, whatever its name
        assert len(names) == 1
        feeds = {names[0]: given[""]}
    else:  # a graph may leave out an input its model never reads
        assert set(names) <= set(given), (names, list(given))
        feeds = {name: given[name] for name in names}
    return [torch.from_numpy(a) for a in session.run(None, {k: v.numpy()
                                                             for k, v in feeds.items()})]


def export_and_compare(run_dir: Path, out: Path, format: str,
                       reference: list[tuple[Any, list[torch.Tensor]]],
                       merge: bool = True) -> ExportCheck:
    """Export ``run_dir`` into ``out`` and run every reference batch through the reloaded
    folder and through the ``format`` file a user would load."""
    from adaptlab.export import export_run, load_exported

    export_run(run_dir, out, format=format, merge=merge)
    config = json.loads((out / "config.json").read_text())
    model = load_exported(out)
    routes = {"folder": lambda inputs: as_list(model(inputs))}
    graph_inputs: list[str] = []
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out / "model.onnx"),
                                               providers=["CPUExecutionProvider"])
        graph_inputs = [i.name for i in session.get_inputs()]
        routes["onnx"] = lambda inputs: _onnx_outputs(session, inputs)
    elif format == "torchscript":
        with warnings.catch_warnings():  # torch.jit's deprecation: the format is still served
            warnings.simplefilter("ignore", FutureWarning)
            scripted = torch.jit.load(str(out / "model.pt"))
        order = config["adaptlab"]["inputs"]  # the traced module's positional inputs

        def run_scripted(inputs):
            given = named_inputs(inputs)
            flat = [given[""]] if list(given) == [""] else [given[name] for name in order]
            return as_list(scripted(*flat))

        routes["torchscript"] = run_scripted
    differences = {}
    with torch.no_grad():
        for route, call in routes.items():
            differences[route] = max(largest_difference(call(inputs), expected)
                                     for inputs, expected in reference)
    return ExportCheck(config, differences, graph_inputs)
