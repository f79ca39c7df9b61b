"""Engine events (step, epoch, eval, checkpoint, cost, ...) and who receives them.

The CLI's progress bar, ``events.jsonl`` and the notebook widgets are all subscribers of one
bus; the engine never knows which are attached.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Event = dict[str, Any]
Subscriber = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Attach ``subscriber``; returns a function that detaches it."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def emit(self, kind: str, **payload: Any) -> None:
        event = {"event": kind, "time": time.time(), **payload}
        for subscriber in list(self._subscribers):
            subscriber(event)


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as file:
        file.seek(-1, 2)
        return file.read(1)


class JsonlEventWriter:
    """Appends each event as one JSON line (flushed, so a crash loses at most one line)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        torn = path.is_file() and path.stat().st_size and _last_byte(path) != b"\n"
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        if torn:  # a killed run's half line stays one bad line instead of spoiling the next
            self._file.write("\n")

    def __call__(self, event: Event) -> None:
        self._file.write(json.dumps(event, default=float) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TerminalProgress:
    """A tqdm bar per epoch plus one line per evaluation."""

    def __init__(self, file=None) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self._bar = None
        self._file = file

    def __call__(self, event: Event) -> None:
        tqdm = self._tqdm
        kind = event["event"]
        if kind == "epoch_start":
            self._bar = tqdm(total=event["steps"], desc=f"epoch {event['epoch']}",
                             unit="batch", leave=False, file=self._file, dynamic_ncols=True)
        elif kind == "step" and self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{event['loss']:.4f}", lr=f"{event['lr']:.2e}")
        elif kind == "epoch_end" and self._bar is not None:
            self._bar.close()
            self._bar = None
        elif kind == "eval":
            metrics = " ".join(f"{k}={v:.4f}" for k, v in event["metrics"].items()
                               if isinstance(v, float))
            tqdm.write(f"epoch {event['epoch']} {event['split']}: {metrics}", file=self._file)
        elif kind in ("early_stop", "resume", "baseline"):
            tqdm.write(f"{kind}: " + ", ".join(f"{k}={v}" for k, v in event.items()
                                              if k not in ("event", "time")), file=self._file)
