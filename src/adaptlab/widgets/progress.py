"""What the training view shows, accumulated from engine events (no widgets here, so it is
tested without a kernel and drawn the same live and in the saved record)."""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOG_LINES = 200
RATE_WINDOW = 20  # steps the live samples-per-second figure averages over


def _metric_text(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))


@dataclass
class RunProgress:
    """The state of one run as its events arrive."""

    # preparing, training, stopping, stopped, finishing (final evaluation and files written,
    # the run's process ending), finished, failed
    status: str = "preparing"
    epochs: int = 0
    epoch: int = 0
    steps_per_epoch: int = 0
    step: int = 0
    global_step: int = 0
    trainable_params: int | None = None
    total_params: int | None = None
    train_loss: list[tuple[int, float]] = field(default_factory=list)  # (global step, loss)
    epoch_ends: list[int] = field(default_factory=list)  # global step at each epoch end
    validation: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    training: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # epoch means
    costs: dict[str, Any] = field(default_factory=dict)
    stop_received_at: int | None = None  # global step when the run got the stop request
    baseline: dict[str, Any] = field(default_factory=dict)
    log: deque = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    _recent: deque = field(default_factory=lambda: deque(maxlen=RATE_WINDOW))

    def apply(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(event)

    @classmethod
    def replay(cls, events_file: Path) -> RunProgress:
        """The progress an ``events.jsonl`` records (a torn last line is skipped: the writer
        flushes line by line, so only a crash mid-line leaves one)."""
        progress = cls()
        if events_file.is_file():
            for line in events_file.read_text().splitlines():
                try:
                    progress.apply(json.loads(line))
                except (ValueError, KeyError):
                    continue
        progress._recent.clear()  # the live rate starts afresh, not across the pause
        return progress

    def note(self, line: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {line}")

    # -- one handler per engine event ------------------------------------------------------
    def _on_baseline(self, event):
        self.baseline = {k: v for k, v in event.items() if k not in ("event", "time")}
        for name, metrics in self.baseline.items():
            self.note(f"unadapted ({name}) test: {_metric_text(metrics)}")

    def _on_train_start(self, event):
        self.status = "training"
        self.epochs = event["epochs"]
        self.trainable_params = event["trainable_params"]
        self.total_params = event["total_params"]
        self.note(f"training {event['strategy']}: {event['trainable_params']:,} of "
                  f"{event['total_params']:,} parameters trainable")

    def _on_resume(self, event):
        self.epoch, self.step = event["epoch"], event["step_in_epoch"]
        if event.get("checkpoint", "") is None:
            self.note("no checkpoint was written before the run stopped: starting over")
        else:
            self.note(f"resumed after epoch {event['epoch']}, step {event['step_in_epoch']}")

    def _on_epoch_start(self, event):
        self.epoch, self.steps_per_epoch, self.step = event["epoch"], event["steps"], event["start"]

    def _on_step(self, event):
        self.step, self.global_step = event["step"], event["global_step"]
        self.train_loss.append((event["global_step"], float(event["loss"])))
        self._recent.append((event["time"], int(event.get("samples", 0))))

    def _on_eval(self, event):
        metrics = {k: float(v) for k, v in event["metrics"].items() if isinstance(v, float)}
        self.validation.append((event["epoch"], metrics))
        self.note(f"epoch {event['epoch']} {event['split']}: {_metric_text(metrics)}")

    def _on_train_metrics(self, event):
        self.training.append((event["epoch"], {k: float(v) for k, v in event["metrics"].items()}))

    def _on_epoch_end(self, event):
        self.epoch_ends.append(self.global_step)

    def _on_cost(self, event):
        self.costs = {k: v for k, v in event.items() if k not in ("event", "time")}

    def _on_checkpoint(self, event):
        self.note(f"checkpoint: {event['path']}")

    def _on_early_stop(self, event):
        self.note(f"early stop at epoch {event['epoch']} (best epoch {event['best_epoch']})")

    def _on_restore_best(self, event):
        self.note(f"restored the best validation epoch ({event['epoch']})")

    def _on_stop_received(self, event):
        self.stop_received_at = event["global_step"]
        self.note(f"stop reached the run after step {event['global_step']}")

    def _on_stopped(self, event):
        self.note(f"stopped in epoch {event['epoch']} after step {event['step']}")

    def _on_run_interrupted(self, event):
        self.status = "stopped"
        self.note("stopped with a checkpoint: Resume continues from it")

    def _on_run_end(self, event):
        self.status = "finishing"  # "finished" once the run's process has ended
        self.note(f"finished; test: {_metric_text(event['test'])}")

    # -- derived ----------------------------------------------------------------------------
    @property
    def fraction(self) -> float:
        """Share of all training steps done."""
        total = self.epochs * self.steps_per_epoch
        if not total:
            return 1.0 if self.status in ("finishing", "finished") else 0.0
        done = (self.epoch - 1) * self.steps_per_epoch + self.step if self.epoch else 0
        return 1.0 if self.status in ("finishing", "finished") else \
            min(1.0, max(0.0, done / total))

    @property
    def samples_per_second(self) -> float | None:
        """Throughput over the last few steps (the cost meter's figure covers whole epochs)."""
        if len(self._recent) < 2:
            return None
        elapsed = self._recent[-1][0] - self._recent[0][0]
        samples = sum(count for _, count in list(self._recent)[1:])
        return samples / elapsed if elapsed > 0 else None

    def position_text(self) -> str:
        if not self.epochs:
            return self.status
        return (f"{self.status}: epoch {max(self.epoch, 1)}/{self.epochs}, step "
                f"{self.step}/{self.steps_per_epoch or '?'}")
