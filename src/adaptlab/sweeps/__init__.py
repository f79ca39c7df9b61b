"""Sweeps: one ordinary run per value of one thing (the freeze strategy's K, the backbone or
the learning rate) and per seed, then one table and one plot, and the value the validation
split chooses.

``OUT/`` holds a run folder per (value, seed), e.g. ``OUT/k=3-seed=0/`` (so
``adaptlab compare OUT`` lists them), ``OUT/sweep.json`` (every run's row, the summary per
value and the value chosen on validation) and ``OUT/sweep.png``. A sweep that was
interrupted continues when run again with the same ``OUT``: finished runs are read back, a
stopped one resumes from its checkpoint, the rest train.

>>> from adaptlab.run import config_for                                   # doctest: +SKIP
>>> sweep(config_for("wildlife", strategy="freeze"), "runs/k", k="0:L")   # doctest: +SKIP
>>> sweep(config_for("pointcloud", strategy="lora"), "runs/lr", lrs="1e-4,1e-3,1e-2",
...       seeds=(0, 1, 2))                                                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from adaptlab.config import RunConfig
from adaptlab.errors import AdaptlabError
from adaptlab.sweeps.grid import SweepGrid, comparable_settings, plan_sweep

__all__ = ["SweepGrid", "plan_sweep", "read_sweep", "sweep"]

SWEEP_FILE = "sweep.json"


def read_sweep(out: str | Path) -> dict[str, Any]:
    """What ``OUT/sweep.json`` holds."""
    path = Path(out) / SWEEP_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AdaptlabError(f"{path}: cannot read a sweep ({exc})") from exc


def _check_same_sweep(out: Path, grid: SweepGrid) -> None:
    """A sweep folder holds one experiment: continuing it with another domain, another varied
    option or other settings would put two experiments in one table."""
    if out.exists() and not out.is_dir():
        raise AdaptlabError(f"--out {out} exists and is not a folder")
    held = {path.name for path in out.iterdir()} if out.is_dir() else set()
    if not held - {SWEEP_FILE, "sweep.png"}:
        return  # nothing trained yet (a first run that failed its checks): start afresh
    if SWEEP_FILE not in held:
        raise AdaptlabError(f"--out {out} already holds files but no {SWEEP_FILE}; choose another folder")
    saved = read_sweep(out)
    if (saved.get("domain"), saved.get("varied")) != (grid.base.domain, grid.varied):
        raise AdaptlabError(
            f"--out {out} holds a sweep of domain {saved.get('domain')!r} over "
            f"{saved.get('varied')!r}; this one is of {grid.base.domain!r} over {grid.varied!r}: "
            "choose another --out"
        )
    wanted, recorded = grid.settings(), comparable_settings(saved.get("settings", {}), grid.varied)
    differing = sorted(k for k in set(wanted) | set(recorded) if wanted.get(k) != recorded.get(k))
    if differing:
        raise AdaptlabError(
            f"--out {out} holds a sweep with other settings ({', '.join(differing)}); choose another --out"
        )


def _write(out: Path, result: dict[str, Any], with_plot: bool) -> None:
    from adaptlab.engine.atomic import atomic_write_text, atomic_write_with

    atomic_write_text(out / SWEEP_FILE, json.dumps(result, indent=2) + "\n")
    if with_plot:
        from adaptlab.compare import figure_png
        from adaptlab.sweeps.table import sweep_figure

        png = figure_png(sweep_figure(result), dpi=100)
        atomic_write_with(out / "sweep.png", lambda tmp: Path(tmp).write_bytes(png))


def _result(grid: SweepGrid, rows: list[dict[str, Any]]) -> dict[str, Any]:
    from adaptlab.sweeps.table import chosen_on_validation, summarise

    monitor = rows[0]["monitor"] if rows else ""
    summary = summarise(rows, list(grid.values), monitor)
    higher = rows[0]["higher_is_better"] if rows else True
    return {
        "domain": grid.base.domain,
        "varied": grid.varied,
        "values": list(grid.values),
        "seeds": list(grid.seeds),
        "monitor": monitor,
        "higher_is_better": higher,
        "settings": grid.settings(),
        "rows": rows,
        "summary": summary,
        "chosen_on_val": chosen_on_validation(summary, higher, len(grid.seeds)),
    }


def _say(line: str) -> None:
    print(line, file=sys.stderr)


def sweep(
    base: RunConfig,
    out: str | Path,
    *,
    k: str | Sequence[int] | None = None,
    backbones: str | Sequence[str] | None = None,
    lrs: str | Sequence[float] | None = None,
    seeds: Sequence[int] = (0,),
    progress: bool = True,
    say: Callable[[str], None] = _say,
) -> list[dict[str, Any]]:
    """Run ``base`` at every K (``k="0:L"``, ``"0,2,L"`` or a list; needs the freeze
    strategy), on every backbone (``backbones="a,b"`` or a list) or at every learning rate
    (``lrs="1e-4,1e-3"`` or a list), at every seed, into ``out``; returns one row per run
    (what ``sweep.json`` holds under ``rows``).

    Everything is checked before ``out`` is touched. ``sweep.json`` is rewritten after each
    run, so an interrupted sweep's folder says what it holds; ``say`` gets one line per run.
    """
    from adaptlab.sweeps.table import run_row
    from adaptlab.transfer.source_cache import complete_run

    grid = plan_sweep(base, k=k, backbones=backbones, seeds=seeds, lrs=lrs)
    out = Path(out)
    _check_same_sweep(out, grid)
    out.mkdir(parents=True, exist_ok=True)
    runs = grid.runs(out)
    rows: list[dict[str, Any]] = []
    _write(out, _result(grid, rows), with_plot=False)
    for index, (value, seed, config) in enumerate(runs, start=1):
        name = grid.run_name(value, seed)
        # complete_run reads a finished run back, resumes a stopped one, trains the rest.
        action = complete_run(config, progress)
        rows.append(run_row(Path(config.out), value, seed))
        say(f"sweep: [{index}/{len(runs)}] {name}: {action}")
        _write(out, _result(grid, rows), with_plot=False)
    _write(out, _result(grid, rows), with_plot=True)
    return rows
