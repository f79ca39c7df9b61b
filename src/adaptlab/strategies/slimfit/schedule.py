"""SlimFit's inter-layer scheduling (ILS): each optimizer step trains only the units whose
weights changed most the last time they trained, and freezes the rest.

Per optimizer step, as the reference's loop (``ViT/CIFAR10.py``) does it:
1. before the forward (``on_step_start``), sort the scores and freeze the lowest-scoring
   ``floor(freeze_ratio * units)`` units (``requires_grad`` off: no gradient, no optimizer
   state, since the engine drops the state of a parameter frozen since its last step, and no
   saved input of a frozen linear layer);
2. just before the optimizer step, copy the weights of the units that train (the reference
   copies every unit's weights; only the trained ones can change, so only they are copied);
3. after the step, refresh those units' scores to their relative change. Frozen units keep
   their old scores and come back as the others' scores fall.

Under gradient accumulation the set is chosen once per optimizer step (at its first
micro-batch), never between micro-batches of one step.

State (scores, the current mask, the per-step log, the step counter) lives in
:class:`ScheduleState`, which the strategy checkpoints, so a resumed run picks the same units.
"""

from __future__ import annotations

import torch
from torch import nn

from adaptlab.engine.callbacks import EngineCallback, HookContext
from adaptlab.engine.sharding import gathered
from adaptlab.strategies.slimfit.units import Unit, relative_change, select_trained


class ScheduleState:
    """Scores (float64 ``[units]``), the mask of units training now (bool ``[units]``), the
    log of masks per optimizer step (bool ``[steps, units]``) and the steps done."""

    def __init__(self, units: list[Unit], scores: torch.Tensor, freeze_ratio: float) -> None:
        self.units = units
        self.freeze_ratio = freeze_ratio
        self.scores = scores
        self.mask = select_trained(scores, freeze_ratio)
        self.log = torch.zeros(0, len(units), dtype=torch.bool)
        self.steps = 0
        self.in_step = False  # a mask chosen, its optimizer step not yet taken

    def choose(self) -> None:
        """The mask for the next optimizer step, from the scores as they are now."""
        self.mask = select_trained(self.scores, self.freeze_ratio)
        self.log = torch.cat([self.log, self.mask.unsqueeze(0)])
        self.in_step = True

    def apply(self, model: nn.Module) -> None:
        """``requires_grad`` of every unit's parameters from the mask."""
        params = dict(model.named_parameters())
        for unit, trains in zip(self.units, self.mask.tolist(), strict=True):
            for name in unit.params:
                params[name].requires_grad_(trains)

    def trained(self) -> list[int]:
        return torch.nonzero(self.mask).flatten().tolist()

    def to_json(self) -> dict:
        return {"steps": self.steps, "in_step": self.in_step}

    def load_json(self, state: dict) -> None:
        self.steps, self.in_step = int(state["steps"]), bool(state["in_step"])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"scores": self.scores.clone(), "mask": self.mask.clone(),
                "log": self.log.clone()}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if tensors["scores"].shape != self.scores.shape:
            from adaptlab.errors import AdaptlabError

            raise AdaptlabError(f"strategy 'slimfit': the checkpoint scores "
                                f"{tensors['scores'].numel()} units, this model has "
                                f"{self.scores.numel()}")
        self.scores = tensors["scores"].clone()
        self.mask = tensors["mask"].clone()
        self.log = tensors["log"].clone()


class InterLayerSchedule(EngineCallback):
    """The engine hooks that drive a :class:`ScheduleState`."""

    def __init__(self, state: ScheduleState) -> None:
        self.state = state
        self._before: dict[int, torch.Tensor] = {}  # unit index -> weight before the step

    def on_fit_start(self, ctx: HookContext) -> None:
        self.state.apply(ctx.model)  # a resumed run: the mask it stopped with

    def on_step_start(self, ctx: HookContext) -> None:
        if not self.state.in_step:
            self.state.choose()
            self.state.apply(ctx.model)

    def on_before_optimizer_step(self, ctx: HookContext) -> None:
        params = dict(ctx.model.named_parameters())
        self._before = {index: params[self.state.units[index].name].detach().clone()
                        for index in self.state.trained()}

    def on_step_end(self, ctx: HookContext) -> None:
        if not self._before:  # an accumulation micro-batch: no optimizer step yet
            return
        params = dict(ctx.model.named_parameters())
        indices = list(self._before)
        # Sharded, every process scores the whole weights, as one process does, and so
        # freezes the same units (gathered in the same order everywhere).
        changes = torch.stack([relative_change(
            gathered(self._before[i]), gathered(params[self.state.units[i].name].detach()))
            for i in indices]).cpu()
        self.state.scores[indices] = changes
        self._before = {}
        self.state.steps += 1
        self.state.in_step = False
