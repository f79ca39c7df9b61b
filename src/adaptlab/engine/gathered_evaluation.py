"""Evaluation over several processes: each runs the model on its shard, the outputs are
gathered without the padding duplicates, and the task's own ``evaluate`` reads them.

Tasks compute their metrics in ``Task.evaluate(model, loader)`` over whole splits (F1, AUC,
BLEU and retrieval ranks do not average over shards). Rather than split every task into a
per-batch half and a metrics half, the gathered outputs are replayed: a stand-in model
returns them batch by batch, in the order a single process would have produced them, so
every task's metrics are computed once, on the whole split, by the same code as in one
process. A task whose ``evaluate`` calls more of the model than its forward (generation's
``generate``) says so with ``Task.evaluation_replays = False`` and is evaluated on the whole
split by every process instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from accelerate.utils import send_to_device
from torch import nn

REPLAY_BATCH = 64


def _to_cpu(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.detach().cpu()
    if isinstance(value, Mapping):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _sample(value: Any, index: int) -> Any:
    if torch.is_tensor(value):
        return value[index]
    if isinstance(value, Mapping):
        return {k: _sample(v, index) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_sample(v, index) for v in value)
    return value


def _stack(items: list[Any]) -> Any:
    first = items[0]
    if torch.is_tensor(first):
        return torch.stack(items)
    if isinstance(first, Mapping):
        return {k: _stack([item[k] for item in items]) for k in first}
    if isinstance(first, tuple | list):
        return type(first)(_stack([item[i] for item in items]) for i in range(len(first)))
    return first


class ReplayModel(nn.Module):
    """Returns the gathered outputs, one batch per call, in order."""

    def __init__(self, outputs: list[Any], device: torch.device) -> None:
        super().__init__()
        # Tasks ask ``next(model.parameters()).device`` for where to put their tensors.
        self.anchor = nn.Parameter(torch.zeros(0, device=device), requires_grad=False)
        self._outputs: Iterator[Any] = iter(outputs)
        self.device = device

    def forward(self, inputs: Any) -> Any:
        return send_to_device(next(self._outputs), self.device)


@torch.no_grad()
def gathered_evaluate(accelerator, task, model: nn.Module, loader) -> dict:
    """``task.evaluate`` over the whole split that ``loader`` (prepared: one shard per
    process) covers, identical on every process."""
    model.eval()
    samples: list[tuple[Any, Any, Any]] = []
    keep_inputs = getattr(task, "evaluation_reads_inputs", False)
    for inputs, labels in loader:
        outputs = _to_cpu(model(inputs))
        labels = _to_cpu(labels)
        kept = _to_cpu(inputs) if keep_inputs else None
        local = [(_sample(outputs, i), _sample(labels, i),
                  _sample(kept, i) if keep_inputs else None) for i in range(len(labels))]
        # Python objects: outputs differ in shape between tasks and token inputs between
        # processes; the last batch's padding duplicates are dropped here.
        samples += accelerator.gather_for_metrics(local, use_gather_object=True)
    # The single-process batches again: a task's per-batch means (a class-weighted loss)
    # then sum exactly as they would there.
    size = getattr(loader, "total_batch_size", None) or REPLAY_BATCH
    batches = [samples[i:i + size] for i in range(0, len(samples), size)]
    replay = ReplayModel([_stack([s[0] for s in batch]) for batch in batches],
                         accelerator.device)
    replay_loader = [send_to_device((_stack([s[2] for s in batch]) if keep_inputs else None,
                                     _stack([s[1] for s in batch])), accelerator.device)
                     for batch in batches]
    return task.evaluate(replay, replay_loader)


class DeviceLoader:
    """A plain (unsharded) loader whose batches are moved to ``device``."""

    def __init__(self, loader, device: torch.device) -> None:
        self.loader, self.device = loader, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            yield send_to_device(batch, self.device)
