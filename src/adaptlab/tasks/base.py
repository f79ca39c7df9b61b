"""What the engine and the session need from a task, and helpers every task shares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def move_to(inputs: Any, device) -> Any:
    """Tensors, or (nested) dicts of tensors, on ``device``."""
    if isinstance(inputs, Mapping):
        return {key: move_to(value, device) for key, value in inputs.items()}
    return inputs.to(device)


def call_backbone(backbone: nn.Module, inputs: Any) -> torch.Tensor:
    """Image backbones take a tensor; token backbones take keyword tensors."""
    return backbone(**inputs) if isinstance(inputs, Mapping) else backbone(inputs)


class Task:
    """Override points: ``build_model``, ``loss``, ``evaluate``, ``baselines``.

    ``monitor`` names the validation metric early stopping and best-epoch selection follow;
    ``higher_is_better`` says which way it improves.
    """

    name = ""
    monitor = ""
    higher_is_better = True  # of ``monitor``
    # True when the model before training is already a working model (a pre-trained
    # forecaster, an identity-headed retrieval encoder), so it competes for the best epoch.
    initial_is_candidate = False

    def build_model(self, backbone, head_options) -> tuple[nn.Module, Any]:
        raise NotImplementedError

    def loss(self, outputs: Any, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, loader) -> dict:
        raise NotImplementedError

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
