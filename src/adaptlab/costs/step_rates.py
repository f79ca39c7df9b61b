"""The learning rate and weight decay every parameter will step with at each optimizer step of
a run, known before the run: what a strategy whose trainable set follows training (SlimFit,
whose scores are the relative change of each unit's last step) replays its schedule from.

The rates come from the engine's own optimizer and schedule
(:class:`adaptlab.engine.optimizer.OptimizerControl` over the strategy's ``param_groups``),
stepped without gradients, so warm-up, decay, a new head's floor and layer-wise decay are the
run's, not a copy of their rules. Which entries a step moves by its rate is where its gradient
reaches, known from one real backward of the run's first batch (:func:`reached_entries`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class StepRates:
    """``rates[step][group]``: the rate of optimizer group ``group`` at optimizer step ``step``
    (from 0); ``group_of``: each parameter's group; ``weight_decay[group]``: AdamW's decoupled
    decay; ``seed``: the run's seed (a replay draws what it cannot know from it);
    ``reached``: per parameter, the entries its gradient reaches (:func:`reached_entries`; a
    parameter absent from it is taken to be reached everywhere)."""

    rates: list[list[float]]
    group_of: dict[str, int]
    weight_decay: list[float]
    seed: int
    reached: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rates)

    def rate(self, step: int, name: str) -> float:
        return self.rates[step][self.group_of[name]]

    def decay(self, name: str) -> float:
        return self.weight_decay[self.group_of[name]]


def step_rates(model: nn.Module, strategy, lr: float, schedule: str, steps: int,
               warmup_ratio: float, weight_decay: float, seed: int) -> StepRates:
    """The rates of a run of ``steps`` optimizer steps, as the engine builds its optimizer
    (``warmup_ratio`` of the steps warm up, as in the trainer). ``strategy`` has run
    ``setup`` on ``model``."""
    from adaptlab.engine.optimizer import OptimizerControl

    control = OptimizerControl(model, strategy.param_groups(model, weight_decay), lr,
                               schedule, steps, int(warmup_ratio * steps))
    groups = control.optimizer.param_groups
    group_of = {control.name_of(p): index for index, group in enumerate(groups)
                for p in group["params"]}
    rates = []
    for _ in range(steps):
        rates.append([group["lr"] for group in groups])
        # No parameter has a gradient: AdamW steps nothing and creates no state, and the
        # scheduler, stepped after it as the engine steps it, moves every group's rate.
        with torch.no_grad():
            control.optimizer.step()
        control.scheduler.step()
    return StepRates(rates=rates, group_of=group_of,
                     weight_decay=[group["weight_decay"] for group in groups], seed=seed)


def reached_entries(model: nn.Module, task, batch, names: list[str]) -> dict[str, torch.Tensor]:
    """Per parameter in ``names``, the entries with a nonzero gradient after a real forward,
    loss and backward of ``batch`` with every one of them trainable.

    AdamW moves an entry whose gradient is zero by its decay alone (both moments stay zero),
    not by the rate. Pre-trained CNNs hold many such entries: EfficientNet-Lite0's channels
    that its ReLU6 never opens got no gradient in pre-training, and weight decay shrank them
    to 1e-11 to 1e-8 (17,672 of 17,739 entries under 1e-6 had a zero gradient on a wildlife
    batch), so counting them as moved by the rate made their relative change, which divides
    by the magnitude, rule a unit's score. The first batch stands for every batch: channels
    dead in pre-training are dead on any data, and a token embedding's reached rows are about
    as many per batch as the batch has distinct tokens; a channel that closes on some images
    only is where it errs."""
    params = dict(model.named_parameters())
    before = {name: param.requires_grad for name, param in params.items()}
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    inputs, labels = batch
    try:
        for name, param in params.items():
            param.requires_grad_(name in names)
            param.grad = None
        model.train()
        # Dropout draws from torch's generator; the caller's stream is kept.
        with torch.random.fork_rng(devices=[]):
            task.loss(model(inputs), labels).backward()
        # Zero or not, and no more: a convolution's summation order varies from call to call
        # on several threads and changes a gradient's last bits, not whether it is zero;
        # replaying with AdamW's first move from the magnitudes, |g| / (|g| + eps), made two
        # plans of one run differ, and followed the runs no better.
        return {name: params[name].grad != 0 if params[name].grad is not None
                else torch.zeros_like(params[name], dtype=torch.bool) for name in names}
    finally:
        for name, param in params.items():
            param.grad = None
            param.requires_grad_(before[name])
        with torch.no_grad():  # BatchNorm's running statistics, as they were
            for name, buffer in model.named_buffers():
                buffer.copy_(buffers[name])
