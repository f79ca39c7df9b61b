"""The setup panel's memory line: the planner's prediction (:mod:`adaptlab.costs.planner`) of
the configured run's training memory, by kind, against the device's memory.

Planning builds the task model and one batch (seconds the first time, when the data and the
backbone load; about a second after that on small models, more with peft wrappers), too slow
to run inside the panel's change handler, which runs on every keystroke. So it runs on a worker
thread, as training and explaining do: a change of strategy, its options, batch size or input
size schedules a new plan after a short pause (the last change wins), and "Plan memory" plans
at once. In a plain script (no event loop) :meth:`MemoryPlanView.plan` plans and waits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
from typing import TYPE_CHECKING

import ipywidgets as widgets

from adaptlab.config import RunConfig
from adaptlab.widgets.jobs import BUILD_LOCK, BackgroundJob, running_loop, wait_async, wait_blocking

if TYPE_CHECKING:  # adaptlab.costs imports torch: only when a plan is made
    from adaptlab.costs.planner import MemoryPlanner, StrategyPlan

DEBOUNCE_SECONDS = 0.6  # a pause in typing before a changed setting is planned
# Fields that change what the planner loads (data, backbone); the rest only change the plan.
_ASSEMBLY_FIELDS = ("domain", "dataset", "data", "backbone", "backbone_weights", "horizon",
                    "max_gap", "season", "train_samples", "seed", "class_weighting",
                    "forecast_loss")
_PLAN_FIELDS = ("strategy", "strategy_options", "batch_size", "image_size", "device",
                "mixed_precision", "fsdp", "gradient_checkpointing")


def _key(config: RunConfig, names: tuple[str, ...]) -> str:
    values = dataclasses.asdict(config)
    return repr([(name, values[name]) for name in names])


class MemoryPlanView(widgets.VBox):
    """Predicted training memory of ``config()``'s run, with a warning when it does not fit
    the device."""

    def __init__(self) -> None:
        self.button = widgets.Button(description="Plan memory", icon="calculator",
                                     tooltip="predict the training memory of this setup "
                                             "(no training)")
        self.summary = widgets.HTML()
        self.budget_bytes: int | None = None  # memory to fit in; None: the device's memory
        self.processes = 1  # the plan is the main process's of these (the training view's)
        self.last_plan: StrategyPlan | None = None
        self.fits: bool | None = None
        self.error = ""
        self._config: RunConfig | None = None
        self._planned_key = ""
        self._planner: MemoryPlanner | None = None
        self._planner_key = ""
        self._job: BackgroundJob | None = None
        self._pending = False  # a change arrived while a plan was running
        self._timer: asyncio.TimerHandle | None = None
        self.button.on_click(lambda _: self.start())
        super().__init__([widgets.HTML("<b>memory</b>"),
                          widgets.HBox([self.button, self.summary])])
        self.add_class("adaptlab-memory-plan")

    # -- what the setup panel calls ---------------------------------------------------------------
    def config_changed(self, config: RunConfig | None) -> None:
        """The panel's checked config (None while it has an error): plan it after a pause when
        something the plan depends on changed."""
        self._config = config
        if config is None:
            self._cancel_timer()
            return
        if self._plan_key(config) == self._planned_key:
            return
        if self.last_plan is not None:
            self.summary.value = self._html(self.last_plan, stale=True)
        loop = running_loop()
        if loop is not None:
            self._cancel_timer()
            self._timer = loop.call_later(DEBOUNCE_SECONDS, self.start)

    def processes_changed(self, processes: int) -> None:
        """The training view's process count: each process holds its share of the batch and,
        with ``fsdp``, of the weights."""
        self.processes = processes
        self.config_changed(self._config)

    def _plan_key(self, config: RunConfig) -> str:
        return _key(config, _ASSEMBLY_FIELDS + _PLAN_FIELDS) + f" x{self.processes}"

    def start(self) -> BackgroundJob | None:
        """Plan the current config on a worker thread (the result shows when it ends)."""
        self._cancel_timer()
        if self._config is None:
            return None
        if self._job is not None and self._job.running:
            self._pending = True
            return self._job
        config, processes = self._config, self.processes
        self._planned_key = self._plan_key(config)
        def work(emit):
            with BUILD_LOCK:
                return self._plan(config, processes)

        self._job = BackgroundJob(work, name="adaptlab-plan").start()
        self.button.disabled = True
        self.summary.value = "<small>planning...</small>"
        loop = running_loop()
        if loop is not None:
            loop.create_task(wait_async(self._job, self._finished))
        return self._job

    def plan(self) -> StrategyPlan | None:
        """Plan the current config and wait (scripts, tests); None when it failed (``error``
        says why)."""
        job = self.start()
        if job is None:
            return None
        wait_blocking(job, self._finished)
        return self.last_plan if not self.error else None

    # -- the work and its result ------------------------------------------------------------------
    def _plan(self, config: RunConfig, processes: int) -> StrategyPlan:
        """On the worker thread: the data and backbone are loaded again only when they
        changed."""
        from adaptlab.costs.planner import MemoryPlanner, device_memory_bytes, planned_device

        key = _key(config, _ASSEMBLY_FIELDS)
        if self._planner is None or key != self._planner_key:
            self._planner, self._planner_key = MemoryPlanner(config), key
        plan = self._planner.plan(config.strategy, config.strategy_options, config,
                                  processes=processes)
        budget = self.budget_bytes or device_memory_bytes(planned_device(config)[0])
        plan.fits = None if budget is None else plan.total_bytes <= budget
        return plan

    def _finished(self, events: list[dict]) -> None:
        from adaptlab.run_process import FINISHED

        if not any(e["event"] == FINISHED for e in events):
            return
        job = self._job
        self.button.disabled = False
        if job.error:
            self.error, self.last_plan, self.fits = job.error, None, None
            self.summary.value = ("<span style='color:var(--jp-error-color1,#b00020)'>"
                                  f"plan failed: {html.escape(job.error)}</span>")
        else:
            self.error, self.last_plan, self.fits = "", job.result, job.result.fits
            self.summary.value = self._html(job.result)
        if self._pending:
            self._pending = False
            if self._config is not None and self._plan_key(self._config) != self._planned_key:
                self.start()

    def _html(self, plan: StrategyPlan, stale: bool = False) -> str:
        from adaptlab.costs.planner import KINDS
        from adaptlab.costs.sizes import format_size

        kinds = ", ".join(f"{kind} {format_size(plan.memory_bytes[kind])}" for kind in KINDS)
        each = "" if self.processes == 1 else (
            f" in each of {self.processes} processes"
            + (", weights sharded" if self._config is not None and self._config.fsdp else ""))
        text = (f"<b>{format_size(plan.total_bytes)}</b> predicted for {html.escape(plan.strategy)}"
                f"{each} ({kinds})")
        if plan.fits is False:
            text += (" <span class='adaptlab-memory-warning' style='color:var(--jp-error-color1,"
                     "#b00020)'>&#9888; will not fit the memory: lower the batch size "
                     "or the input size, or choose a lighter strategy</span>")
        elif plan.fits:
            text += " fits the memory"
        else:
            text += " (CPU: no device memory limit checked)"
        if stale:
            text += " <i>(settings changed: replanning)</i>" if running_loop() else \
                " <i>(settings changed: press Plan memory)</i>"
        return f"<small>{text}</small>"

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
