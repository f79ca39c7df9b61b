"""What the training loop keeps between steps (saved in every checkpoint) and what it is told."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # batches done in the current, unfinished epoch (after a stop)
    global_step: int = 0
    best_metric: float | None = None
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    # ``average_top_k``: the k best validation epochs so far, ``[[score, epoch], ...]``
    top_epochs: list[list[float]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    interrupted: bool = False
    # The current epoch's training sums (loss and ``Task.batch_metrics``, sample-weighted):
    # part of the checkpoint, so an epoch resumed mid-way reports the whole epoch.
    epoch_sums: dict[str, float] = field(default_factory=dict)
    epoch_samples: int = 0


@dataclass
class TrainSettings:
    epochs: int
    lr: float
    weight_decay: float
    warmup_ratio: float
    schedule: str
    early_stopping_patience: int = 0
    max_grad_norm: float = 1.0
    average_top_k: int = 1
