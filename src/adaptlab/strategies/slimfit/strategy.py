"""SlimFit (Ardakani et al., arXiv 2305.18513; reference code arashardakani/SlimFit): dynamic
freezing from training dynamics, plus smaller saved activations.

Each optimizer step trains only the ``1 - freeze_ratio`` fraction of units (weight matrices
and norm layers) whose weights moved most when they last trained (:mod:`.schedule`); the task
head always trains. With ``compress`` the tensors the backward pass still needs are stored
smaller (:mod:`.compress`, swapped in by :mod:`.patching`): 8-bit inputs of the MLP output
layers and of both attention products, 4-bit GELU inputs, and the top 10 % of a frozen
LayerNorm's normalised input.

The per-step record of which units trained is written to ``slimfit_schedule.safetensors``
in the run folder (:data:`SCHEDULE_FILE`): ``trained`` (bool ``[steps, units]``, unit order
as in the metadata's ``units``), ``frozen_param_fraction`` (float ``[steps]``, the share of the
backbone's parameters frozen at that step) and ``scores`` (the final scores); the metadata
holds the unit names, their sizes and the freeze ratio (JSON), for a notebook heat-map.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from adaptlab.backbones.layer_map import LayerMap, parameters_under
from adaptlab.strategies.base import Strategy, StrategyConfig, keep_batch_norm_statistics, set_requires_grad
from adaptlab.strategies.registry import register_strategy
from adaptlab.strategies.slimfit.replay import replay_schedule
from adaptlab.strategies.slimfit.schedule import InterLayerSchedule, ScheduleState
from adaptlab.strategies.slimfit.units import Unit, find_units, initial_scores

if TYPE_CHECKING:
    from adaptlab.costs.step_rates import StepRates

SCHEDULE_FILE = "slimfit_schedule.safetensors"


@dataclass
class SlimFitConfig(StrategyConfig):
    freeze_ratio: float = field(default=0.9, metadata={
        "min": 0.0, "max": 0.95,
        "help": "share of the backbone's units frozen at every step (the reference freezes "
                "0.9; the paper reaches 0.95)"})
    compress: bool = field(default=True, metadata={
        "help": "store what backward still needs smaller: 8-bit linear and attention "
                "inputs, 4-bit GELU inputs, top-10 % of frozen LayerNorm inputs"})


@register_strategy
class SlimFit(Strategy):
    name = "slimfit"
    config_class = SlimFitConfig
    description = ("freeze the backbone units that changed least at every step "
                   "(inter-layer scheduling) and compress saved activations")
    # SlimFit trains the backbone's own weights, a changing subset at a time: full
    # fine-tuning's rate (the paper keeps each model's usual fine-tuning recipe).
    changes_trainable_set = True
    shards = True
    default_lr = 1e-4
    lr_range = (1e-5, 5e-3)

    def __init__(self, config: SlimFitConfig) -> None:
        super().__init__(config)
        self.units: list[Unit] = []
        self.schedule: ScheduleState | None = None
        self.first_scores: torch.Tensor | None = None

    def apply(self, model: nn.Module, layer_map: LayerMap) -> nn.Module:
        """Swap in the compressing layers (``compress``); the parameters keep their names, so
        weights load into a patched model as into the plain one."""
        if self.config.compress:
            from adaptlab.strategies.slimfit.patching import patch_model

            patch_model(model, exclude=layer_map.head)
        return model

    def select_trainable(self, model: nn.Module, layer_map: LayerMap) -> None:
        self.units = find_units(model, layer_map)
        # The engine seeds torch with the run's seed just before setup; reading that seed
        # (not drawing from the global stream) seeds the scores' own generator.
        scores = initial_scores(len(self.units), torch.initial_seed())
        self.first_scores = scores.clone()  # where the planner's replay starts
        self.schedule = ScheduleState(self.units, scores, self.config.freeze_ratio)
        set_requires_grad([model], True)
        self.schedule.apply(model)

    def trainable_candidates(self, model: nn.Module, layer_map: LayerMap) -> list[str]:
        """Every unit may train at some step, and the head always does."""
        return [name for name, _ in model.named_parameters()]

    def train_mode(self, model: nn.Module) -> None:
        """Every module stays in training mode: a norm layer frozen for a step is a memory
        decision for that step, not a return to its pre-trained statistics (the base class
        would switch a frozen BatchNorm to eval and make the forward change with the mask).
        The BatchNorm layers ``norm_stats`` keeps are in eval mode at every step alike."""
        keep_batch_norm_statistics(model, self._kept_norms or ())

    def planned_trainable_sets(self, model: nn.Module, layer_map: LayerMap,
                               rates: StepRates) -> list[list[str]]:
        """Each step's units with the head, from the schedule replayed on the run's initial
        scores, starting weights and rates (:mod:`.replay`). Called after :meth:`setup`,
        which drew the initial scores from the run's seed."""
        if self.first_scores is None:
            raise RuntimeError("strategy 'slimfit': setup() has not run")
        params = dict(model.named_parameters())
        head = [name for name, _ in parameters_under(model, [layer_map.head])] \
            if layer_map.head else []
        steps = replay_schedule(self.units, self.first_scores, self.config.freeze_ratio,
                                {unit.name: params[unit.name] for unit in self.units}, rates)
        return [head + [name for i in trained for name in self.units[i].params]
                for trained in steps]

    def callbacks(self) -> list:
        if self.schedule is None:
            raise RuntimeError("strategy 'slimfit': setup() has not run")
        return [InterLayerSchedule(self.schedule)]

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.schedule is not None:
            state["schedule"] = self.schedule.to_json()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.schedule is not None and "schedule" in state:
            self.schedule.load_json(state["schedule"])

    def tensor_state(self) -> dict[str, torch.Tensor]:
        return self.schedule.tensors() if self.schedule is not None else {}

    def load_tensor_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.schedule is not None and tensors:
            self.schedule.load_tensors(tensors)

    def save_final(self, model: nn.Module, out_dir: Path) -> dict[str, Any]:
        facts = super().save_final(model, out_dir)
        if self.schedule is not None:
            facts["schedule_file"] = write_schedule_log(self.schedule, out_dir / SCHEDULE_FILE)
        return facts


def write_schedule_log(state: ScheduleState, path: Path) -> str:
    """The per-step record (see the module docstring); returns the file's name."""
    from safetensors.torch import save_file

    from adaptlab.engine.atomic import atomic_write_with

    sizes = torch.tensor([unit.numel for unit in state.units], dtype=torch.float64)
    frozen = (~state.log).double() @ sizes / max(float(sizes.sum()), 1.0)
    tensors = {"trained": state.log.contiguous(), "frozen_param_fraction": frozen.float(),
               "scores": state.scores.clone()}
    metadata = {"units": json.dumps([unit.name for unit in state.units]),
                "unit_params": json.dumps([unit.numel for unit in state.units]),
                "freeze_ratio": json.dumps(state.freeze_ratio)}
    atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return path.name

