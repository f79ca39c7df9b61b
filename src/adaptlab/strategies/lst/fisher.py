"""Fisher pruning of the ladder's side network: LST's own ranking (Sung et al. 2022; the
reference's ``pruning/fisher.py``).

A weight's importance is the diagonal of the empirical Fisher information: its squared
gradient of the task loss, summed over training samples taken one at a time (the reference
draws 1,024 at batch size 1), through the pre-trained backbone and the task head as the run
starts them. A unit is then ranked by the L1 norm of the importances of the rows and columns
that read or write it, as magnitude pruning ranks it by its weights (:mod:`.pruning`).

No library computes this: peft and torch's pruning utilities rank weights by magnitude, and
the reference's code is written against its own T5 and LXMERT models.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from adaptlab.engine.micro_batches import split_batch
from adaptlab.tasks.base import move_to


def fisher_importance(model: nn.Module, attribute: str, frozen: nn.Module,
                      batches: Iterable[tuple[Any, torch.Tensor]],
                      loss: Callable[[Any, torch.Tensor], torch.Tensor], device,
                      samples: int) -> tuple[nn.Module, int]:
    """A copy of ``frozen`` whose every parameter holds its squared per-sample gradients,
    summed over the first ``samples`` samples of ``batches``, and how many were used.

    ``model`` is the task model holding the ladder at ``attribute``; for the gradients the
    plain backbone takes the ladder's place (the model the run adapts, head included), in
    eval mode (no dropout: the ranking is a function of the data, not of a draw), and is put
    back afterwards with every ``requires_grad`` and the training mode as they were."""
    ladder = getattr(model, attribute)
    params = dict(frozen.named_parameters())
    flags = {p: p.requires_grad for p in model.parameters()}  # the ladder holds ``frozen``
    sums = {name: torch.zeros_like(p, device=device) for name, p in params.items()}
    was_training = model.training
    setattr(model, attribute, frozen)
    used = 0
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params.values():
            p.requires_grad_(True)
        model.to(device).eval()
        for inputs, labels in batches:
            for one, label in split_batch(inputs, labels, len(labels)):
                if used >= samples:
                    break
                loss(model(move_to(one, device)), move_to(label, device)).backward()
                for name, p in params.items():
                    if p.grad is not None:
                        sums[name] += p.grad.detach().square()
                        p.grad = None
                used += 1
            if used >= samples:
                break
    finally:
        setattr(model, attribute, ladder)
        for p, flag in flags.items():
            p.requires_grad_(flag)
            p.grad = None
        model.to("cpu").train(was_training)
    scored = copy.deepcopy(frozen)
    with torch.no_grad():
        for name, p in scored.named_parameters():
            p.copy_(sums[name].cpu())
    return scored, used
