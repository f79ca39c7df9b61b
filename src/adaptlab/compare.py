"""Runs side by side: one row per run folder (strategy, trainable parameters, memory, time,
metrics) and the trade-off plot of the target metric against trainable parameters and memory.

``adaptlab compare`` and the notebook's comparison view both read run folders through
:func:`summarise_run`, so a terminal and a notebook show the same numbers.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adaptlab.errors import AdaptlabError

MEMORY_PARTS = ("parameters", "gradients", "optimizer", "activations")


@dataclass
class RunSummary:
    """What one run folder says about itself; ``status`` is ``finished``, ``stopped``
    (a checkpoint to resume from) or ``incomplete`` (nothing to resume)."""

    run_dir: str
    status: str
    domain: str = ""
    dataset: str = ""
    backbone: str = ""
    strategy: str = ""
    strategy_options: dict[str, Any] = field(default_factory=dict)
    monitor: str = ""
    higher_is_better: bool = True
    test: dict[str, float] = field(default_factory=dict)
    # The training and validation splits' final metrics, apart from the held-out test: a
    # training figure is not a result (the wildlife paper's headline is one).
    train: dict[str, float] = field(default_factory=dict)
    val: dict[str, float] = field(default_factory=dict)
    baseline_test: dict[str, float] = field(default_factory=dict)
    trainable_params: int | None = None
    total_params: int | None = None
    trainable_percent: float | None = None
    memory_bytes: dict[str, int | None] = field(default_factory=dict)
    seconds_per_epoch: float | None = None
    samples_per_second: float | None = None
    epochs_run: int | None = None
    notebook: str | None = None  # the notebook whose kernel started the run, when known
    report: str | None = None  # report/index.html, once the run has been explained

    @property
    def label(self) -> str:
        options = ",".join(f"{k}={v}" for k, v in sorted(self.chosen_options().items()))
        return f"{Path(self.run_dir).name} ({self.strategy}{' ' + options if options else ''})"

    def chosen_options(self) -> dict[str, Any]:
        """The strategy options that differ from the strategy's defaults, for a label or a
        table: a run records every option, and the defaults would bury what was chosen.
        Imports the strategy (listing runs, :func:`summarise_run`, does not)."""
        try:
            from adaptlab.strategies.registry import resolved_strategy_options

            used = resolved_strategy_options(self.strategy, self.strategy_options)
            defaults = resolved_strategy_options(self.strategy, {})
        except Exception:  # noqa: BLE001 - an unknown or broken strategy: show what is recorded
            return dict(self.strategy_options)
        return {k: v for k, v in used.items() if v != defaults.get(k)}

    @property
    def training_memory(self) -> int | None:
        """Bytes training holds: parameters + gradients + optimizer state + saved activations
        (the measured breakdown; the CUDA peak where a GPU ran it)."""
        if not self.memory_bytes:
            return None
        peak = self.memory_bytes.get("peak_cuda")
        return peak if peak else sum(int(self.memory_bytes.get(k) or 0) for k in MEMORY_PARTS)

    @property
    def target_metric(self) -> float | None:
        return self.test.get(self.monitor)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label, "training_memory": self.training_memory}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AdaptlabError(f"{path}: cannot read ({exc})") from exc


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)
            and not isinstance(v, bool)}


def resumable(run_dir: str | Path) -> bool:
    """True when the run folder holds a complete checkpoint: the engine names a checkpoint
    folder ``epoch-*`` only once it is complete (``engine.checkpoint.save_checkpoint``). Read
    here without importing the engine, so listing runs never imports torch."""
    return any(p.is_dir() for p in (Path(run_dir) / "checkpoints").glob("epoch-*"))


def can_resume(run_dir: str | Path) -> bool:
    """True when ``--resume`` continues the run: from its last checkpoint, or from its start
    when it was killed before writing one (its config is all a restart needs)."""
    return (Path(run_dir) / "config.json").is_file()


def summarise_run(run_dir: str | Path) -> RunSummary:
    """Read ``config.json``, ``metrics.json`` and ``costs.json`` of one run folder."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise AdaptlabError(f"{run_dir} is not a run folder (config.json missing)")
    config = _read_json(run_dir / "config.json")
    finished = (run_dir / "metrics.json").is_file()
    summary = RunSummary(run_dir=str(run_dir),
                         status="finished" if finished else "stopped" if resumable(run_dir)
                         else "incomplete",
                         domain=config.get("domain") or "", dataset=config.get("dataset") or
                         config.get("data") or "", backbone=config.get("backbone") or "",
                         strategy=config.get("strategy") or "",
                         strategy_options=config.get("strategy_options") or {})
    if finished:
        metrics = _read_json(run_dir / "metrics.json")
        summary.test = _scalars(metrics["final"].get("test", {}))
        summary.train = _scalars(metrics["final"].get("train", {}))
        summary.val = _scalars(metrics["final"].get("val", {}))
        summary.baseline_test = _scalars(metrics.get("baseline", {}).get("test", {}))
        # Runs written before metrics.json named its monitor: the first metric stands in.
        summary.monitor = metrics.get("monitor") or next(
            (k for k in summary.test if k != "loss"), "")
        summary.higher_is_better = metrics.get("higher_is_better", True)
        summary.epochs_run = metrics.get("epochs_run")
    if (run_dir / "costs.json").is_file():
        costs = _read_json(run_dir / "costs.json")
        for key in ("trainable_params", "total_params", "trainable_percent",
                    "seconds_per_epoch", "samples_per_second"):
            setattr(summary, key, costs.get(key))
        summary.memory_bytes = costs.get("memory_bytes") or {}
    if (run_dir / "origin.json").is_file():
        summary.notebook = _read_json(run_dir / "origin.json").get("notebook")
    if (run_dir / "report" / "index.html").is_file():
        summary.report = str(run_dir / "report" / "index.html")
    return summary


# Folders that never hold runs and can be huge (environments, caches, package trees).
_NOT_RUNS = {"node_modules", "site-packages", "__pycache__", "checkpoints", "report", "adapter"}


def find_runs(root: str | Path, max_depth: int | None = None,
              limit: int | None = None) -> list[Path]:
    """Every run folder under ``root`` (a folder holding ``config.json`` beside
    ``events.jsonl`` or ``metrics.json``), oldest first.

    Hidden folders and package trees are skipped and a run folder's own subfolders are not
    searched; ``max_depth`` and ``limit`` bound the walk where ``root`` may be a whole home
    folder (the Jupyter server lists runs under its root with both set).
    """
    root = Path(root)
    if not root.is_dir():
        raise AdaptlabError(f"{root} is not a folder")
    found: list[Path] = []
    base_depth = len(root.parts)
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        if "config.json" in files and ("events.jsonl" in files or "metrics.json" in files):
            found.append(here)
            subfolders[:] = []
            if limit is not None and len(found) >= limit:
                break
            continue
        if max_depth is not None and len(here.parts) - base_depth >= max_depth:
            subfolders[:] = []
            continue
        subfolders[:] = sorted(d for d in subfolders
                               if not d.startswith(".") and d not in _NOT_RUNS)
    return sorted(found, key=lambda p: (p / "config.json").stat().st_mtime)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def runs_table(summaries: list[RunSummary]) -> list[list[str]]:
    """Header plus one row per run: what it trained, what it cost, what it scored."""
    metric_names: list[str] = []
    for summary in summaries:
        for name in summary.test:
            if name not in ("loss", "samples") and name not in metric_names:
                metric_names.append(name)
    header = ["run", "status", "strategy", "trainable", "trainable %", "memory MiB",
              "s/epoch", "samples/s", *[f"test {m}" for m in metric_names]]
    rows = [header]
    for s in summaries:
        options = ", ".join(f"{k}={v}" for k, v in sorted(s.chosen_options().items()))
        rows.append([Path(s.run_dir).name, s.status, s.strategy + (f" ({options})" if options else ""),
                     "-" if s.trainable_params is None else f"{s.trainable_params:,}",
                     _fmt(s.trainable_percent, ".2f"), _mib(s.training_memory),
                     _fmt(s.seconds_per_epoch, ".1f"), _fmt(s.samples_per_second, ".1f"),
                     *[_fmt(s.test.get(m)) for m in metric_names]])
    return rows


def tradeoff_figure(summaries: list[RunSummary]):
    """Target metric against trainable parameters and against training memory (a matplotlib
    ``Figure``, made without pyplot so it is safe beside a running notebook)."""
    from matplotlib.figure import Figure

    finished = [s for s in summaries if s.target_metric is not None]
    fig = Figure(figsize=(8.5, 3.0), layout="constrained")
    axes = fig.subplots(1, 2)
    monitor = finished[0].monitor if finished else "metric"
    for axis, xlabel, value in ((axes[0], "trainable parameters", lambda s: s.trainable_params),
                                (axes[1], "training memory (MiB)",
                                 lambda s: (s.training_memory or 0) / 2**20)):
        for s in finished:
            x = value(s)
            if not x:
                continue
            axis.scatter([x], [s.target_metric], s=36)
            axis.annotate(Path(s.run_dir).name, (x, s.target_metric), fontsize=7,
                          textcoords="offset points", xytext=(4, 3))
        axis.set_xscale("log")
        axis.set_xlabel(xlabel, fontsize=8)
        axis.set_ylabel(f"test {monitor}", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    if not finished:
        fig.text(0.5, 0.5, "no finished run yet", ha="center", va="center")
    return fig


def figure_png(fig, dpi: int = 80) -> bytes:
    """PNG bytes of a matplotlib ``Figure``."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
