"""Long work off the kernel's main thread (training in a child process,
``adaptlab.run_process``; explaining on a thread), with every widget update kept on it.

Widgets updated from a background thread are unreliable (ipywidgets #4001; ipykernel 7
drops thread output, #4020), so nothing but the main thread touches a widget: the work puts
its events on a queue, and the main thread drains the queue and updates the widgets. The
main thread drains from an asyncio task on the kernel's own event loop, which keeps the
kernel free to handle button clicks:

- a button (Train, Explain) starts the job and returns at once; a task on the kernel's loop
  drains the queue until the job ends;
- ``await view.train()`` in a cell does the same while the cell waits, so "Run all" and
  headless runs (nbclient, papermill) go on only when the job is done. ipykernel (7.x)
  dispatches widget messages while an async cell awaits, so Stop still works then;
- in a plain script (no running loop), :func:`wait_blocking` drains in a sleep loop.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from adaptlab.errors import AdaptlabError
from adaptlab.run_process import FINISHED, drain_queue

# Building a backbone imports transformers, peft or timm, and two threads doing that at once can
# meet a half-initialised lazy module (CI saw "cannot import name 'AutoModel' from
# 'transformers'" when the setup panel built MiniLM while its applicability job did): every
# build in the widgets, on the main thread or a job, holds this lock.
BUILD_LOCK = threading.RLock()
DRAIN_SECONDS = 0.1  # how often the main thread applies queued events to the widgets


class BackgroundJob:
    """``work(emit)`` on a daemon thread; events it emits, then a final ``FINISHED`` event,
    arrive on ``events``. ``result`` or ``error`` (one line) holds the outcome."""

    def __init__(self, work: Callable[[Callable[[dict], None]], Any], name: str) -> None:
        self._work = work
        self.events: queue.SimpleQueue[dict] = queue.SimpleQueue()
        self.result: Any = None
        self.error: str | None = None
        self.error_details = ""
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> BackgroundJob:
        self._thread.start()
        return self

    def _main(self) -> None:
        try:
            self.result = self._work(self.events.put)
        except AdaptlabError as exc:
            self.error = str(exc)
        except Exception as exc:  # shown in the view with its traceback, never lost
            self.error = f"{type(exc).__name__}: {exc}"
            self.error_details = traceback.format_exc()
        finally:
            self.events.put({"event": FINISHED})

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def drain(self) -> list[dict]:
        return drain_queue(self.events)


class JobResultView:
    """A view that runs one job at a time (``self._job``, pumped by ``self._pump``) and shows
    its outcome in place and in a saved output (``self._record``, when a cell awaits it).
    The view has a ``message`` HTML widget (its status line, :meth:`_say`) and an
    ``_events(events)`` method that calls :meth:`_job_finished`."""

    _job: BackgroundJob | None = None
    _pump: asyncio.Task | None = None
    _record: Any = None
    message_text: str = ""

    def _busy(self, what: str) -> bool:
        """Say so when a job is already running."""
        if self._job is not None and self._job.running:
            self._say(f"{what} is already running", error=True)
            return True
        return False

    def _launch(self, work: Callable, name: str, button, line: str) -> BackgroundJob:
        """Start ``work`` on a worker thread, disable ``button`` until it ends, say ``line``,
        and pump its events from the kernel's loop when there is one."""
        self._job = BackgroundJob(work, name=name).start()
        button.disabled = True
        self._say(line)
        if running_loop() is not None:
            self._pump = asyncio.get_running_loop().create_task(
                wait_async(self._job, self._events))
        return self._job

    async def _await_job(self, started: BackgroundJob | None, record: str, waiting: str) -> None:
        """Wait for the job just ``started`` (None: it was refused, and said why), its
        outcome saved in this cell's output named ``record``."""
        from adaptlab.widgets.record import SavedOutput

        if started is None:
            raise AdaptlabError(self.message_text)
        self._record = SavedOutput(record)
        self._record.show({"text/plain": waiting})
        await asyncio.shield(self._pump)
        if self._job.error:
            raise AdaptlabError(self._job.error)

    def _say(self, text: str, error: bool = False) -> None:
        from adaptlab.widgets.record import message_html

        self.message_text = text
        self.message.value = message_html(text, error)

    def _job_finished(self, events: list[dict], button, what: str,
                      show: Callable[[Any], dict[str, str]]) -> None:
        """On the job's end: the button back, the error said or ``show(result)``'s bundle
        saved."""
        if not any(e["event"] == FINISHED for e in events):
            return
        job, self._pump = self._job, None
        button.disabled = False
        if job.error:
            self._say(job.error, error=True)
            bundle = {"text/plain": f"{what} failed: {job.error}"}
        else:
            bundle = show(job.result)
        if self._record is not None:
            self._record.update(bundle)
            self._record = None


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def wait_async(job: BackgroundJob, apply: Callable[[list[dict]], None]) -> None:
    """Apply the job's events on this (the main) thread until it has finished."""
    while True:
        events = job.drain()
        if events:
            apply(events)
        if any(e["event"] == FINISHED for e in events):
            return
        await asyncio.sleep(DRAIN_SECONDS)


def wait_blocking(job: BackgroundJob, apply: Callable[[list[dict]], None],
                  on_interrupt: Callable[[], None] | None = None) -> None:
    """The same without an event loop; a KeyboardInterrupt (the kernel's interrupt) calls
    ``on_interrupt`` (a stop request) and keeps waiting for the job to wind down."""
    while True:
        try:
            events = job.drain()
            if events:
                apply(events)
            if any(e["event"] == FINISHED for e in events):
                return
            time.sleep(DRAIN_SECONDS)
        except KeyboardInterrupt:
            if on_interrupt is None:
                raise
            on_interrupt()
