"""What the engine and the session need from a task, and helpers every task shares."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from adaptlab.data.splits import SplitDataset

# How a model's output becomes the ``[B, K]`` scores an attribution explains:
# ``(outputs, inputs) -> scores``, ``inputs`` being the continuous input attributed.
ScoreReduction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def move_to(inputs: Any, device) -> Any:
    """Tensors, or (nested) dicts of tensors, on ``device``."""
    if isinstance(inputs, Mapping):
        return {key: move_to(value, device) for key, value in inputs.items()}
    return inputs.to(device)


def call_backbone(backbone: nn.Module, inputs: Any) -> torch.Tensor:
    """Image backbones take a tensor; token backbones take keyword tensors."""
    return backbone(**inputs) if isinstance(inputs, Mapping) else backbone(inputs)


@dataclass(frozen=True)
class TaskOptions:
    """The run settings a task's construction reads (from ``RunConfig``)."""

    class_weighting: str = "balanced"  # "balanced" or "none"
    forecast_loss: str = "quantile"


class Task:
    """Override points: ``from_data``, ``build_model``, ``loss``, ``evaluate``, ``baselines``,
    and the ``explain_*`` ones below.

    ``monitor`` names the validation metric early stopping and best-epoch selection follow;
    ``higher_is_better`` says which way it improves. A subclass registers itself with
    :func:`adaptlab.tasks.registry.register_task` under ``name``, the name datasets use.
    """

    name = ""
    monitor = ""
    higher_is_better = True  # of ``monitor``
    # True when the model before training is already a working model (a pre-trained
    # forecaster, an identity-headed retrieval encoder), so it competes for the best epoch.
    initial_is_candidate = False
    # How several processes evaluate (adaptlab.engine.gathered_evaluation): ``evaluate``
    # calls only the model's forward, so gathered outputs can be replayed to it; and whether
    # it also reads the batch's inputs (then they are gathered too).
    evaluation_replays = True
    evaluation_reads_inputs = False

    @classmethod
    def from_data(cls, data: SplitDataset, backbone: Any, options: TaskOptions) -> Task:
        """The task for ``data`` (and ``backbone``, None where not yet known); raises
        :class:`adaptlab.errors.AdaptlabError` when the pair cannot work together."""
        return cls()

    def build_model(self, backbone, head_options) -> tuple[nn.Module, Any]:
        raise NotImplementedError

    def loss(self, outputs: Any, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, loader) -> dict:
        raise NotImplementedError

    def loss_denominator(self, labels: Any) -> float:
        """What ``loss`` divides its sum by for these labels (the sample count for a plain
        mean): the engine weighs the losses of a batch's pieces (micro-batches, processes)
        by it, so that they add up to the whole batch's loss."""
        return float(len(labels))

    def batch_metrics(self, outputs: Any, labels: torch.Tensor) -> dict[str, float]:
        """Sums over one training batch of metrics cheap enough to take every step (the
        engine divides by the epoch's sample count): the training curve beside validation,
        where over-fitting shows. Only metrics on the same scale as ``evaluate``'s belong
        here; ``{}`` when there are none."""
        return {}

    def baselines(self, model: nn.Module, loaders: dict, source_loader, device) -> dict:
        """``{name: {split: metrics}}`` for the unadapted model; the first entry is the one
        ``metrics.json`` calls ``baseline``."""
        raise NotImplementedError

    def headline(self, metrics: dict) -> str:
        """One line for the terminal: the held-out metric against the baseline."""
        raise NotImplementedError

    def init_head(self, model: nn.Module, layer_map: Any, loader, device) -> dict | None:
        """Start the new task head from the training split (``loader``, not augmented) once
        the strategy has set the model up; what was done, for the run's events, or ``None``
        where the task keeps the head's random start."""
        return None

    # How predictions on new inputs are written: ``"module:Class"`` naming an
    # :class:`adaptlab.predict.PredictionWriter` (imported when a prediction runs).
    prediction_writer = ""
    # Why runs of this task cannot be exported as one traced graph (ONNX, TorchScript); None
    # where their forward is that graph. Their safetensors export is unaffected.
    graph_export_refusal: str | None = None

    # Explain override points. They are class-level: explain builds its target from a
    # saved run's task name and rebuilt model, and tests and benchmarks from a bare name,
    # without the training data an instance is made from.

    explain_refusal: str | None = None  # why runs of this task cannot be explained (yet)
    explain_probabilities = False  # scores are class logits: checks read their softmax
    explain_by_class = False  # labels are classes: explained samples go round the classes

    @classmethod
    def explain_reduction(cls, model: nn.Module, backbone: Any) -> ScoreReduction | None:
        """How ``model``'s output becomes the ``[B, K]`` scores to explain; None when the
        output already is that (class logits)."""
        return None

    @classmethod
    def explain_output_names(cls, model: nn.Module, class_names: list[str]) -> list[str]:
        """A name for each explained score column (what the report calls a target)."""
        return class_names

    @classmethod
    def explain_label(cls, target: Any) -> int | None:
        """An explained sample's label as an index into the output names, from the item's
        dataset target; None when the target is not one output (a field, a forecast)."""
        if torch.is_tensor(target) and target.ndim > 0:
            return None
        return int(target)

    @classmethod
    def explain_display(cls, target: Any) -> dict[str, Any]:
        """What of the target a renderer draws beside the map (a forecast's future)."""
        return {}
