"""The training view: Train / Stop / Resume, progress, live curves, the cost panel and the log.

Training runs in a child process that the view keeps between runs
(:class:`~adaptlab.run_process.RunWorker`, which says why); this view is only ever changed
on the kernel's main thread, from the events the process streams back (see ``jobs.py``).
Stop reaches the engine as a flag it reads after every step, so a run stops within one step
and leaves a checkpoint that Resume continues from.

>>> panel = setup_panel(domain="wildlife")           # doctest: +SKIP
>>> view = training_view(panel); view                 # doctest: +SKIP
>>> await view.train()                                # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import ipywidgets as widgets

from adaptlab.compare import can_resume
from adaptlab.errors import AdaptlabError
from adaptlab.run_process import FINISHED, RunJob, RunWorker
from adaptlab.widgets.jobs import running_loop, wait_async, wait_blocking
from adaptlab.widgets.progress import RunProgress
from adaptlab.widgets.record import SavedOutput, esc, html_table, memory_rows, run_record

# While steps stream in, redraw the curves at most every CURVE_SECONDS, and never more often
# than keeps drawing under 1/CURVE_BUDGET of the main thread (a draw takes ~0.15 s on a laptop
# core, and the main thread shares the cores with training). Evaluations always redraw.
CURVE_SECONDS = 2.0
CURVE_BUDGET = 20
# A stopped run, or one whose process died (killed, out of memory) after a checkpoint.
RESUMABLE = ("stopped", "failed")


def unique_run_dir(out: str) -> str:
    """``out``, or ``out-2``, ``out-3``... when a run already lives there."""
    path, n = Path(out), 1
    while path.exists() and (not path.is_dir() or any(path.iterdir())):
        n += 1
        path = Path(f"{out}-{n}")
    return str(path)


def _check_batch(batch_size: int, processes: int) -> None:
    from adaptlab.engine.distributed import check_batch  # imports torch: only when training

    check_batch(batch_size, processes)


class TrainingView(widgets.VBox):
    """Trains what ``panel`` (a :class:`SetupPanel`) describes; ``result`` holds the last
    finished run (an ``adaptlab.assembly.RunResult``)."""

    def __init__(self, panel) -> None:
        self.panel = panel
        self.job: RunJob | None = None
        # Spawned now, so the engine is imported (and, after the first run, warm) when Train
        # is pressed.
        self.worker = RunWorker().spawn()
        self.progress = RunProgress()
        self.result = None
        self.message_text = ""
        self.run_dir: Path | None = None
        self.config = None
        self._record: SavedOutput | None = None
        self._pump: asyncio.Task | None = None
        self._last_curves = 0.0
        self._draw_seconds = 0.0
        self._drawn_from: tuple[int, ...] | None = None  # data the current curves show
        self._curves_png: bytes | None = None
        self.train_button = widgets.Button(description="Train", icon="play",
                                           button_style="primary")
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True)
        self.resume_button = widgets.Button(description="Resume", icon="step-forward",
                                            disabled=True)
        # Data-parallel processes (torchrun); the panel's batch size stays the global batch.
        self.processes = widgets.BoundedIntText(
            value=1, min=1, max=max(os.cpu_count() or 1, 8), description="Processes",
            layout=widgets.Layout(width="160px"))
        self.bar = widgets.FloatProgress(min=0.0, max=1.0, layout=widgets.Layout(width="60%"))
        self.position = widgets.HTML("not started")
        self.message = widgets.HTML()
        self.curves = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.curves.add_class("adaptlab-curves")
        self.cost_panel = widgets.HTML()
        self.log_box = widgets.Textarea(disabled=True, layout=widgets.Layout(width="98%",
                                                                         height="120px"))
        # The memory plan is one process's: its share of the batch (and, sharded, weights).
        self.processes.observe(lambda change: panel.memory.processes_changed(change["new"]),
                               names="value")
        self.train_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.resume_button.on_click(lambda _: self.start(resume=True))
        super().__init__([
            widgets.HBox([self.train_button, self.stop_button, self.resume_button,
                          self.processes]),
            widgets.HBox([self.bar, self.position]), self.message, self.curves,
            widgets.HBox([self.cost_panel]), self.log_box])
        self.add_class("adaptlab-training-view")

    # -- the buttons --------------------------------------------------------------------------
    def start(self, resume: bool = False) -> RunJob | None:
        """Start a run (or resume the stopped one) and return at once; ``None`` when the
        panel's values are invalid or a run is already going (the message says which)."""
        if self.job is not None and self.job.running:
            self._say("a run is already training; Stop it first", error=True)
            return None
        try:
            job = self._resume_job() if resume else self._new_job()
        except AdaptlabError as exc:
            self._say(str(exc), error=True)
            return None
        self.job, self.result = job, None
        # A resumed run's curves continue from what its events file already holds.
        self.progress = RunProgress.replay(self.run_dir / "events.jsonl") if resume \
            else RunProgress()
        self.progress.note(("resuming " if resume else "starting ") + str(self.run_dir))
        self._say(f"run folder: {self.run_dir}")
        self._set_buttons(running=True)
        self._drawn_from = None
        self._refresh(force_curves=resume)  # a resumed run shows its history at once
        if running_loop() is not None:
            self._pump = asyncio.get_running_loop().create_task(wait_async(job, self._apply))
        return job

    def _new_job(self) -> RunJob:
        import dataclasses

        config = self.panel.config()
        config = dataclasses.replace(config, out=unique_run_dir(config.out))
        self.config, self.run_dir = config, Path(config.out)
        _check_batch(config.batch_size, self.processes.value)
        return self._worker().submit(config, processes=self.processes.value)

    def _resume_job(self) -> RunJob:
        from adaptlab.config import RunConfig

        if self.run_dir is None or self.progress.status not in RESUMABLE:
            raise AdaptlabError("Resume: no stopped or failed run in this view; press Train")
        if not can_resume(self.run_dir):
            raise AdaptlabError(f"Resume: {self.run_dir} holds no run (config.json missing); "
                                "press Train")
        config = RunConfig.from_file(self.run_dir / "config.json")
        _check_batch(config.batch_size, self.processes.value)
        return self._worker().submit(config, resume=True, processes=self.processes.value)

    def _worker(self) -> RunWorker:
        """The view's process, or a new one where the last has died (killed, out of
        memory)."""
        if not self.worker.alive:
            self.worker = RunWorker().spawn()
        return self.worker

    def close(self) -> None:
        """Close the widgets and end the view's run process."""
        self.worker.close()
        super().close()

    def stop(self) -> None:
        """Ask the running job to stop after its current step."""
        if self.job is None or not self.job.running:
            return
        self.job.request_stop()
        self.progress.status = "stopping"
        self.progress.note(f"stop requested (last step seen: {self.job.global_step})")
        self.stop_button.disabled = True
        self._refresh()

    @property
    def stop_requested_at(self) -> int | None:
        """The step the run had finished when the stop reached it (None: not stopped)."""
        return self.progress.stop_received_at

    # -- waiting from a cell ------------------------------------------------------------------
    async def train(self, resume: bool = False):
        """Start (or resume) a run and wait for it, writing the saved record into this cell.
        Returns the ``RunResult``, or None when Stop (or the kernel's interrupt) ended the
        run early with a checkpoint; a failed run raises, so "Run all" halts here."""
        if self.start(resume=resume) is None:
            raise AdaptlabError(self.message_text)
        self._record = SavedOutput("adaptlab-run")
        self._record.show(self._record_bundle())
        result = await self.wait()
        if self.job.error:
            raise AdaptlabError(f"the run in {self.run_dir} failed: {self.job.error}")
        return result

    async def wait(self):
        """Wait for the current run to end; returns its ``RunResult`` (None if stopped)."""
        pump = self._pump
        if pump is None:
            return self.result
        try:
            await asyncio.shield(pump)
        except asyncio.CancelledError:
            # The kernel's interrupt cancels an awaiting cell: stop within one step, let the
            # checkpoint be written, and end the cell with an error that says so ("Run all"
            # halts here instead of explaining an unfinished run).
            self.stop()
            await asyncio.shield(pump)
            raise AdaptlabError(f"interrupted: {self.run_dir} {self.progress.status} after step "
                                f"{self.progress.global_step}; press Resume or run "
                                "`await view.train(resume=True)`") from None
        return self.result

    def wait_blocking(self):
        """For scripts without an event loop: wait, applying events on this thread."""
        if self.job is not None and self._pump is None:
            wait_blocking(self.job, self._apply, on_interrupt=self.stop)
        return self.result

    # -- applying events (main thread) --------------------------------------------------------
    def _apply(self, events: list[dict]) -> None:
        finished = False
        redraw = False
        for event in events:
            if event["event"] == FINISHED:
                finished = True
                continue
            self.progress.apply(event)
            redraw |= event["event"] in ("eval", "epoch_end", "run_end")
        if finished:
            self._finish()
        self._refresh(force_curves=redraw or finished)
        if self._record is not None and (redraw or finished):
            self._record.update(self._record_bundle())
            if finished:
                self._record = None

    def _finish(self) -> None:
        job = self.job
        self._pump = None
        if job.error:
            self.progress.status = "failed"
            self.progress.note(f"failed: {job.error}")
            self._say(job.error, error=True, details=job.error_details)
        elif job.result is not None and job.result.metrics:
            self.progress.status = "finished"
            self.result = job.result
            self._say(f"{job.result.headline}; run folder {self.run_dir}")
        else:  # stopped: with a checkpoint, or before the first step
            self.progress.status = "stopped"
        from adaptlab.widgets.compare_view import register_run

        register_run(self.run_dir)
        self._set_buttons(running=False)

    def _set_buttons(self, running: bool) -> None:
        self.train_button.disabled = running
        self.stop_button.disabled = not running
        self.resume_button.disabled = running or self.progress.status not in RESUMABLE or \
            self.run_dir is None or not can_resume(self.run_dir)

    def _refresh(self, force_curves: bool = False) -> None:
        progress = self.progress
        self.bar.value = progress.fraction
        self.bar.bar_style = {"finished": "success", "failed": "danger",
                              "stopped": "warning"}.get(progress.status, "info")
        rate = progress.samples_per_second
        self.position.value = (f"&nbsp;{esc(progress.position_text())}"
                               + (f", {rate:.1f} samples/s" if rate else ""))
        costs = self.result.costs if self.result is not None else progress.costs
        rows = memory_rows(costs)
        self.cost_panel.value = html_table([("cost", "value"), *rows]) if rows else ""
        self.log_box.value = "\n".join(progress.log)
        now = time.monotonic()
        drawn_from = (len(progress.train_loss), len(progress.validation), len(progress.training))
        if drawn_from == self._drawn_from:
            return  # nothing new to draw
        if force_curves or now - self._last_curves >= max(CURVE_SECONDS,
                                                          CURVE_BUDGET * self._draw_seconds):
            from adaptlab.widgets.figures import curves_png

            self._curves_png = curves_png(progress)
            self.curves.value = self._curves_png
            self._last_curves = time.monotonic()
            self._draw_seconds = self._last_curves - now
            self._drawn_from = drawn_from

    def _record_bundle(self) -> dict[str, str]:
        title = f"adaptlab run {self.run_dir}" if self.run_dir else "adaptlab run"
        error = self.job.error if self.job is not None else None
        return run_record(title, self.progress.position_text(), self._curves_png,
                          result=self.result, costs=self.progress.costs, error=error)

    def _say(self, text: str, error: bool = False, details: str = "") -> None:
        """Show one line (and a traceback under it); ``message_text`` keeps the line."""
        body = esc(text) + (f"<pre>{esc(details)}</pre>" if details else "")
        self.message.value = (f"<span style='color:var(--jp-error-color1,#b00020)'>{body}</span>"
                              if error else body)
        self.message_text = text


def training_view(panel) -> TrainingView:
    return TrainingView(panel)
