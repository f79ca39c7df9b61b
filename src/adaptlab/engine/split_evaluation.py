"""Which way the engine evaluates a whole split: one process runs text in batches of
similar length (:mod:`.length_order`); several gather their shards' outputs and replay them
(:mod:`.gathered_evaluation`), unless the task's evaluation calls more of the model than
its forward, when every process evaluates the whole split itself."""

from __future__ import annotations

from torch import nn

from adaptlab.engine.gathered_evaluation import DeviceLoader, gathered_evaluate
from adaptlab.engine.length_order import evaluate_in_length_order


def evaluate_split(accelerator, task, model: nn.Module, prepared_loader, plain_loader) -> dict:
    """The task's metrics over the split, the same on every process. ``prepared_loader``:
    the split sharded over the processes (Accelerate's); ``plain_loader``: the whole split."""
    device = accelerator.device
    if accelerator.num_processes == 1:
        # The task still reads its outputs in the loader's own batches.
        metrics = evaluate_in_length_order(task, model, plain_loader, device)
        return metrics if metrics is not None else task.evaluate(model, prepared_loader)
    if getattr(task, "evaluation_replays", True):
        return gathered_evaluate(accelerator, task, model, prepared_loader)
    return task.evaluate(accelerator.unwrap_model(model), DeviceLoader(plain_loader, device))
