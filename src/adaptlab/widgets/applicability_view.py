"""The setup panel's line under the strategy dropdown: which strategies apply to the selected
backbone (:mod:`adaptlab.strategies.applicability`), and why the chosen one does not.

Knowing it means building the backbone (seconds: weights load) and asking every strategy's
``check_model``, too slow for the panel's change handler; so it runs once per backbone on a
worker thread (as the memory plan does, :mod:`adaptlab.widgets.memory_view`) and the answer is
kept. Only the main thread touches the widget: the job's end is applied by a task on the
kernel's loop, or by :meth:`ApplicabilityLine.wait` in a plain script.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from adaptlab.widgets.jobs import BUILD_LOCK, BackgroundJob, running_loop, wait_async, wait_blocking

Key = tuple[str, str]  # (domain, backbone)


class ApplicabilityLine(widgets.HTML):
    """``show((domain, backbone), build, strategy)``: the strategies that apply to the
    backbone ``build()`` returns, worked out once per backbone on a worker thread."""

    def __init__(self) -> None:
        super().__init__()
        self.verdicts: dict[Key, dict[str, str | None]] = {}
        self.errors: dict[Key, str] = {}
        self._key: Key | None = None
        self._strategy: str | None = None
        self._job: BackgroundJob | None = None
        self._job_key: Key | None = None
        self._waiting: tuple[Key, Callable[[], Any]] | None = None  # asked while a job ran

    def show(self, key: Key, build: Callable[[], Any], strategy: str) -> None:
        """Show the line for ``key`` and ``strategy``; work it out first when not known (in a
        kernel with a running loop at once, in a plain script on :meth:`wait`)."""
        self._key, self._strategy = key, strategy
        if key in self.verdicts or key in self.errors:
            self._render()
            return
        self._waiting = (key, build)
        if running_loop() is None:
            self.value = "<small>which strategies apply: not checked yet</small>"
        elif self._job is None or not self._job.running:
            self._start_waiting()

    def wait(self) -> None:
        """Work out the line asked for last and wait for it (scripts and tests)."""
        if self._waiting is not None and (self._job is None or not self._job.running):
            self._start_waiting()
        if self._job is not None and self._job_key not in self.verdicts \
                and self._job_key not in self.errors:
            wait_blocking(self._job, self._finished)

    def applies(self, strategy: str) -> bool | None:
        """Whether ``strategy`` applies to the backbone shown (None: not known yet)."""
        verdicts = self.verdicts.get(self._key) if self._key else None
        return None if verdicts is None or strategy not in verdicts else \
            verdicts[strategy] is None

    def _start_waiting(self) -> None:
        from adaptlab.strategies.applicability import backbone_applicability

        (key, build), self._waiting = self._waiting, None
        self._job_key = key
        def work(emit):
            with BUILD_LOCK:
                return backbone_applicability(build())

        self._job = BackgroundJob(work, name="adaptlab-applicability").start()
        self.value = "<small>checking which strategies apply to this backbone...</small>"
        loop = running_loop()
        if loop is not None:
            loop.create_task(wait_async(self._job, self._finished))

    def _finished(self, events: list[dict]) -> None:
        from adaptlab.run_process import FINISHED

        if not any(e["event"] == FINISHED for e in events):
            return
        job, key = self._job, self._job_key
        if job.error:
            self.errors[key] = job.error
        else:
            self.verdicts[key] = job.result
        if self._waiting is not None and self._waiting[0] in (*self.verdicts, *self.errors):
            self._waiting = None
        if self._waiting is not None and running_loop() is not None:
            self._start_waiting()
        elif self._key in self.verdicts or self._key in self.errors:
            self._render()

    def _render(self) -> None:
        key = self._key
        if key in self.errors:
            self.value = ("<small>could not check which strategies apply: "
                          f"{html.escape(self.errors[key])}</small>")
            return
        verdicts = self.verdicts[key]
        applying = [name for name, reason in verdicts.items() if reason is None]
        text = f"applies to {html.escape(key[1])}: {html.escape(', '.join(applying))}"
        reason = verdicts.get(self._strategy)
        if reason is not None:
            text += ("<br><span class='adaptlab-strategy-refused' style='color:"
                     f"var(--jp-error-color1,#b00020)'>&#9888; {html.escape(reason)}</span>")
        self.value = f"<small>{text}</small>"
