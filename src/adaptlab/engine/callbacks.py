"""Engine hooks. A strategy whose behaviour depends on training (dynamic freezing, running
averages, schedules per epoch) returns :class:`EngineCallback` instances from
``Strategy.callbacks``; each hook receives one :class:`HookContext`.

Order within a step: ``on_step_start`` -> forward and loss -> ``on_before_backward`` ->
backward -> ``on_after_backward`` (gradients visible; once per micro-batch under gradient
accumulation) -> ``on_before_optimizer_step`` (only on the micro-batch that steps; gradients
clipped) -> optimizer step, scheduler step, gradients cleared -> ``on_step_end``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from adaptlab.engine.optimizer import OptimizerControl
    from adaptlab.engine.trainer import Trainer


@dataclass
class HookContext:
    """What a hook may look at and act on.

    ``model`` is the unwrapped model (parameters by their own names); ``optimizer`` adds
    parameters, drops state and sets per-group learning rates; ``epoch`` is the epoch being
    trained (1-based; outside an epoch, the last one finished), ``step`` the batch within it
    (1-based, 0 outside a step);
    ``loss`` is set from the forward pass to the end of the step."""

    trainer: Trainer
    model: torch.nn.Module
    optimizer: OptimizerControl
    epoch: int
    step: int
    global_step: int
    loss: torch.Tensor | None = None
    outputs: Any = None

    def trainable_changed(self) -> None:
        """Tell the engine the trainable set changed outside ``requires_grad`` (the engine
        notices ``requires_grad`` changes itself): the cost meter measures again."""
        self.trainer.remeasure_costs()


class EngineCallback:
    """Override the hooks you need; each is a no-op here."""

    def on_fit_start(self, ctx: HookContext) -> None:
        """Once per ``fit``, after a resume has restored state, before the first step."""

    def on_epoch_start(self, ctx: HookContext) -> None:
        """Before an epoch's first batch (also a resumed, partly done epoch)."""

    def on_step_start(self, ctx: HookContext) -> None:
        """Before the forward pass of each batch."""

    def on_before_backward(self, ctx: HookContext) -> None:
        """After the loss, before ``backward`` (``ctx.loss`` and ``ctx.outputs`` are set)."""

    def on_after_backward(self, ctx: HookContext) -> None:
        """After ``backward``: the parameters' ``.grad`` hold this micro-batch's gradients."""

    def on_before_optimizer_step(self, ctx: HookContext) -> None:
        """Before the optimizer steps (gradients accumulated and clipped)."""

    def on_step_end(self, ctx: HookContext) -> None:
        """After the optimizer step (or the accumulation micro-step) of each batch."""

    def on_epoch_end(self, ctx: HookContext) -> None:
        """After an epoch's last batch, before its evaluation and checkpoint."""

    def on_fit_end(self, ctx: HookContext) -> None:
        """Once ``fit`` ends (finished, stopped early or interrupted), before the best
        epoch's weights are restored."""
