"""The learning rate and weight decay every parameter will step with at each optimizer step of
a run, known before the run: what a strategy whose trainable set follows training (SlimFit,
whose scores are the relative change of each unit's last step) replays its schedule from.

The rates come from the engine's own optimizer and schedule
(:class:`adaptlab.engine.optimizer.OptimizerControl` over the strategy's ``param_groups``),
stepped without gradients, so warm-up, decay, a new head's floor and layer-wise decay are the
run's, not a copy of their rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class StepRates:
    """``rates[step][group]``: the rate of optimizer group ``group`` at optimizer step ``step``
    (from 0); ``group_of``: each parameter's group; ``weight_decay[group]``: AdamW's decoupled
    decay; ``seed``: the run's seed (a replay draws what it cannot know from it)."""

    rates: list[list[float]]
    group_of: dict[str, int]
    weight_decay: list[float]
    seed: int

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
    import torch

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
