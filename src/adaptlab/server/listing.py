"""What the server's endpoints return, as plain JSON-ready data (no tornado here, so the
listings are testable on their own and usable from other front ends).

Nothing here imports torch: domains come from plugin metadata (``DomainSpec``), runs from
their folders' JSON files (``adaptlab.compare``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from adaptlab.compare import find_runs, summarise_run
from adaptlab.errors import AdaptlabError
from adaptlab.plugins.registry import discover_domains
from adaptlab.plugins.spec import DomainSpec
from adaptlab.server.paths import relative_to_root

# Runs are searched this deep below the root and no more are listed: the root is often a
# whole home folder.
RUNS_MAX_DEPTH = 6
RUNS_LIMIT = 500
# A run whose event log changed this recently and has no final metrics is still training.
ACTIVE_SECONDS = 30.0


def domain_entry(spec: DomainSpec) -> dict[str, Any]:
    return {"name": spec.name, "title": spec.title, "description": spec.description,
            "tasks": list(spec.tasks), "icon": spec.icon,
            "default_strategy": spec.default_strategy, "default_dataset": spec.default_dataset,
            "datasets": [{"name": d.name, "task": d.task, "modality": d.modality,
                          "description": d.description, "source": d.source}
                         for d in spec.datasets],
            "backbones": [{"name": b.name, "description": b.description,
                           "params_millions": b.params_millions} for b in spec.backbones],
            "data_help": spec.data_help}


def domains_payload() -> dict[str, Any]:
    """Every installed domain's metadata, and the plugins that failed to load with why."""
    found = discover_domains()
    return {"domains": [domain_entry(spec) for spec in found.domains.values()],
            "errors": found.errors}


# What a run folder written by hand, by an older version or half-deleted can raise while it
# is read: the listing shows it as unreadable instead of failing for every run.
UNREADABLE = (AdaptlabError, OSError, ValueError, KeyError, TypeError, AttributeError)


def run_entry(root: Path, run_dir: Path, now: float) -> dict[str, Any]:
    path = relative_to_root(root, run_dir) or "."
    try:
        return _run_entry(root, run_dir, path, now)
    except UNREADABLE as exc:
        return {"path": path, "name": run_dir.name, "status": "unreadable",
                "error": str(exc) if isinstance(exc, AdaptlabError)
                else f"{type(exc).__name__}: {exc}"}


def _run_entry(root: Path, run_dir: Path, path: str, now: float) -> dict[str, Any]:
    summary = summarise_run(run_dir)
    events = run_dir / "events.jsonl"
    modified = events.stat().st_mtime if events.is_file() else (
        run_dir / "config.json").stat().st_mtime
    notebook = relative_to_root(root, summary.notebook) if summary.notebook else None
    return {"path": path, "name": run_dir.name, "status": summary.status,
            "active": summary.status != "finished" and now - modified < ACTIVE_SECONDS,
            "modified": modified, "domain": summary.domain, "dataset": summary.dataset,
            "backbone": summary.backbone, "strategy": summary.strategy,
            "strategy_options": summary.strategy_options, "monitor": summary.monitor,
            "higher_is_better": summary.higher_is_better, "metric": summary.target_metric,
            "baseline_metric": summary.baseline_test.get(summary.monitor),
            "test": summary.test, "trainable_params": summary.trainable_params,
            "total_params": summary.total_params,
            "trainable_percent": summary.trainable_percent,
            "training_memory": summary.training_memory,
            "seconds_per_epoch": summary.seconds_per_epoch,
            "samples_per_second": summary.samples_per_second,
            "epochs_run": summary.epochs_run,
            "notebook": notebook if notebook and Path(summary.notebook).is_file() else None,
            # The report endpoint refuses a report that is a link out of the root.
            "report": summary.report is not None
            and relative_to_root(root, summary.report) is not None}


def runs_payload(root: str | Path) -> dict[str, Any]:
    """Runs under the server root, newest first, with status, target metric and costs."""
    root = Path(root)
    # One more than shown tells a root with exactly RUNS_LIMIT runs from one with more.
    for attempt in (1, 2):
        try:
            folders = find_runs(root, max_depth=RUNS_MAX_DEPTH, limit=RUNS_LIMIT + 1)
            break
        except FileNotFoundError:  # a run deleted between the walk and its sort
            if attempt == 2:
                raise
    now = time.time()
    # os.walk does not follow links, so no run outside the root is found; checked anyway,
    # since a listed run is one the report endpoint is asked for.
    runs = [run_entry(root, folder, now) for folder in reversed(folders[-RUNS_LIMIT:])
            if relative_to_root(root, folder) is not None]
    return {"runs": runs, "truncated": len(folders) > RUNS_LIMIT}
