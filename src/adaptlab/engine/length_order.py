"""Evaluation passes over text in batches of similar length, results in the loader's order.

A text batch is padded to its longest member. Taken in the dataset's order, nearly every batch
holds a sample at the tokenizer's limit (on the code demo every validation batch is padded to
128 tokens: 23,808 positions for 13,066 real tokens); batched by length, the same samples need
14,752, and a validation pass takes about 40 % less time. The task must not see that order,
though: a class-weighted loss is a mean per batch, so it depends on which samples share one.
The model therefore runs over length-ordered batches, each sample's output is put back in the
dataset's order and into the loader's own batches, and those are replayed to the task's
``evaluate`` (as :mod:`adaptlab.engine.gathered_evaluation` replays several processes'
outputs): the metrics are the in-order ones up to float rounding, since a sample's output does
not depend on its batch's padding beyond that.

Only a plain in-order loader over a dataset that states its items' lengths (``lengths()``: text)
is reordered; any other loader is read as it is. The outputs replayed are per sample (a class's
scores, an embedding), so a task whose outputs are per token would need its own handling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from weakref import WeakKeyDictionary

import torch
from accelerate.utils import send_to_device
from torch.utils.data import DataLoader, SequentialSampler

from adaptlab.engine.gathered_evaluation import ReplayModel, _sample, _stack, _to_cpu

# One length-ordered loader per loader, made once (its workers persist as the loader's do) and
# dropped with the loader.
_ORDERED: WeakKeyDictionary = WeakKeyDictionary()


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Dataset indices in batches of ``batch_size``, longest first; equal lengths keep the
    dataset's order, so a dataset gets the same batches in every run."""
    order = sorted(range(len(lengths)), key=lambda index: -lengths[index])
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def length_ordered(loader) -> DataLoader | None:
    """``loader``'s dataset in :func:`length_batches`, with ``loader``'s collate, workers and
    generator (iterating it draws from the random state as iterating ``loader`` does); None
    where ``loader`` is not a plain in-order ``DataLoader`` keeping its last batch, over a
    dataset with ``lengths()``."""
    if (type(loader) is not DataLoader or type(loader.sampler) is not SequentialSampler
            or loader.batch_size is None or loader.drop_last
            or not callable(getattr(loader.dataset, "lengths", None))):
        return None
    if loader not in _ORDERED:
        batches = length_batches(loader.dataset.lengths(), loader.batch_size)
        _ORDERED[loader] = DataLoader(
            loader.dataset, batch_sampler=batches, collate_fn=loader.collate_fn,
            num_workers=loader.num_workers, pin_memory=loader.pin_memory,
            persistent_workers=loader.persistent_workers, worker_init_fn=loader.worker_init_fn,
            generator=loader.generator)
    return _ORDERED[loader]


@torch.no_grad()
def outputs_in_order(forward: Callable[[Any], Any], loader, device=None
                     ) -> tuple[list[Any], list[Any]]:
    """``forward(inputs)`` over ``loader`` (in length-ordered batches where
    :func:`length_ordered` gives them; inputs moved to ``device`` when given): each sample's
    output and label, on the CPU, in ``loader``'s order."""
    ordered = length_ordered(loader)
    outputs: list[Any] = []
    labels: list[Any] = []
    for inputs, batch_labels in ordered if ordered is not None else loader:
        out = _to_cpu(forward(send_to_device(inputs, device) if device is not None else inputs))
        batch_labels = _to_cpu(batch_labels)
        outputs += [_sample(out, i) for i in range(len(batch_labels))]
        labels += [_sample(batch_labels, i) for i in range(len(batch_labels))]
    if ordered is None:
        return outputs, labels
    positions = [index for batch in ordered.batch_sampler for index in batch]
    back = sorted(range(len(positions)), key=positions.__getitem__)
    return [outputs[j] for j in back], [labels[j] for j in back]


@torch.no_grad()
def evaluate_in_length_order(task, model: torch.nn.Module, loader, device) -> dict | None:
    """``task.evaluate(model, loader)``'s metrics (``loader`` yielding CPU batches, ``model``
    on ``device``) with the model run over length-ordered batches; None where ``loader`` keeps
    its order (:func:`length_ordered`) or the task's ``evaluate`` cannot be replayed its
    outputs (it calls more than the forward, or reads the inputs), to be evaluated in order."""
    if (not getattr(task, "evaluation_replays", True)
            or getattr(task, "evaluation_reads_inputs", False)
            or length_ordered(loader) is None):
        return None
    model.eval()  # as task.evaluate leaves it
    outputs, labels = outputs_in_order(model, loader, device)
    starts = range(0, len(labels), loader.batch_size)
    replay = ReplayModel([_stack(outputs[s:s + loader.batch_size]) for s in starts], device)
    batches = [send_to_device((None, _stack(labels[s:s + loader.batch_size])), device)
               for s in starts]
    return task.evaluate(replay, batches)
