"""The learning curve of target skill against the number of target training samples, for
transfer (start from the source run) and for the control (the target alone, same settings,
same epochs, same subsets), over several seeds: the weather seed paper's recipe made general.

Each point is an ordinary run folder under ``OUT/runs/``; a curve that was interrupted
continues where it stopped (finished points are read back, a stopped one resumes). The
table, the plot and every point's numbers go to ``OUT/learning_curve.{json,md,png}``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path
from typing import Any

from adaptlab.config import EXECUTION_FIELDS, RunConfig
from adaptlab.engine.atomic import atomic_write_text, atomic_write_with
from adaptlab.errors import AdaptlabError
from adaptlab.transfer.source_cache import SourceRun, complete_run, ensure_source_run

ARMS = ("transfer", "control")
DEFAULT_FRACTIONS = (0.05, 0.1, 0.2, 0.5, 1.0)


def check_fractions(fractions) -> tuple[float, ...]:
    fractions = tuple(float(f) for f in fractions)
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise AdaptlabError(f"fractions {list(fractions)} must lie in (0, 1]")
    return tuple(sorted(set(fractions)))


def _sample_counts(target: RunConfig, fractions: tuple[float, ...]) -> tuple[int, list[int]]:
    from adaptlab.assembly import load_data
    from adaptlab.plugins.registry import get_domain

    data = load_data(target, get_domain(target.domain))
    total = len(data.samples["train"])
    return total, [max(1, math.ceil(f * total)) for f in fractions]


def _point(config: RunConfig, progress: bool) -> dict[str, Any]:
    complete_run(config, progress)
    metrics = json.loads((Path(config.out) / "metrics.json").read_text())
    monitor = metrics["monitor"]
    return {"run_dir": config.out, "monitor": monitor,
            "higher_is_better": metrics.get("higher_is_better", True),
            "metric": metrics["final"]["test"][monitor]}


def _summary(points: list[dict], fractions, counts) -> list[dict[str, Any]]:
    rows = []
    for fraction, count in zip(fractions, counts, strict=True):
        row: dict[str, Any] = {"fraction": fraction, "samples": count}
        for arm in ARMS:
            values = [p["metric"] for p in points if p["arm"] == arm and p["fraction"] == fraction]
            row[arm] = {"mean": statistics.fmean(values),
                        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                        "seeds": len(values)}
        row["gain"] = row["transfer"]["mean"] - row["control"]["mean"]
        rows.append(row)
    return rows


def _table(result: dict) -> str:
    monitor = result["monitor"]
    better = "higher" if result["higher_is_better"] else "lower"
    lines = [f"Test {monitor} ({better} is better), mean ± std over seeds "
             f"{result['seeds']}; target train split {result['train_size']} samples.", "",
             "| target fraction | samples | transfer | control | transfer - control |",
             "|---|---|---|---|---|"]
    for row in result["summary"]:
        lines.append(f"| {row['fraction']:g} | {row['samples']} | "
                     f"{row['transfer']['mean']:.4f} ± {row['transfer']['std']:.4f} | "
                     f"{row['control']['mean']:.4f} ± {row['control']['std']:.4f} | "
                     f"{row['gain']:+.4f} |")
    return "\n".join(lines) + "\n"


def curve_figure(result: dict):
    """Target metric against target samples, transfer and control, mean ± std over seeds."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    axis = fig.subplots()
    samples = [row["samples"] for row in result["summary"]]
    for arm, colour in zip(ARMS, ("tab:blue", "tab:grey"), strict=True):
        means = [row[arm]["mean"] for row in result["summary"]]
        stds = [row[arm]["std"] for row in result["summary"]]
        label = "transfer (source, then target)" if arm == "transfer" else "control (target only)"
        axis.plot(samples, means, marker="o", color=colour, label=label)
        axis.fill_between(samples, [m - s for m, s in zip(means, stds, strict=True)],
                          [m + s for m, s in zip(means, stds, strict=True)], color=colour,
                          alpha=0.2)
    axis.set_xscale("log")
    # The sample counts themselves as ticks: log-scale minor labels collide on short ranges.
    from matplotlib.ticker import NullFormatter

    axis.set_xticks(samples, [str(count) for count in samples])
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.set_xlabel("target training samples")
    axis.set_ylabel(f"test {result['monitor']}")
    axis.set_title(f"{result['target']['domain']}: {result['source']['dataset']} -> "
                   f"{result['target']['dataset']}", fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return fig


def learning_curve(target: RunConfig, source: RunConfig, out: str | Path,
                   fractions=DEFAULT_FRACTIONS, seeds=(0, 1, 2), cache_dir=None,
                   progress: bool = True) -> dict[str, Any]:
    """Train the source once (cached), then transfer and control at every fraction and seed;
    returns what ``learning_curve.json`` holds."""
    fractions = check_fractions(fractions)
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise AdaptlabError("a learning curve needs at least one seed")
    if target.domain != source.domain:
        raise AdaptlabError(f"source domain {source.domain!r} differs from the target's "
                            f"{target.domain!r}")
    out = Path(out)
    _check_same_curve(out, target, source)
    source_run: SourceRun = ensure_source_run(source, cache_dir, progress)
    total, counts = _sample_counts(target, fractions)
    points = []
    for fraction, count in zip(fractions, counts, strict=True):
        for seed in seeds:
            for arm in ARMS:
                name = f"{arm}-{fraction:g}-seed{seed}"
                config = dataclasses.replace(
                    target, seed=seed, train_samples=None if fraction == 1 else count,
                    init_from=str(source_run.run_dir) if arm == "transfer" else None,
                    out=str(out / "runs" / name))
                points.append({"arm": arm, "fraction": fraction, "seed": seed,
                               **_point(config, progress)})
    result = {"monitor": points[0]["monitor"], "higher_is_better": points[0]["higher_is_better"],
              "train_size": total, "fractions": list(fractions), "seeds": list(seeds),
              "source": {"dataset": source.dataset or source.data, **source_run.to_dict()},
              "target": {"domain": target.domain, "dataset": target.dataset or target.data},
              "summary": _summary(points, fractions, counts), "points": points}
    atomic_write_text(out / "learning_curve.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "learning_curve.md", _table(result))
    from adaptlab.compare import figure_png

    png = figure_png(curve_figure(result), dpi=100)
    atomic_write_with(out / "learning_curve.png", lambda tmp: Path(tmp).write_bytes(png))
    return result


def _check_same_curve(out: Path, target: RunConfig, source: RunConfig) -> None:
    """A curve folder holds one experiment: continuing it with other settings would mix
    points of two experiments in one table."""
    from adaptlab.strategies.registry import resolved_strategy_options

    recorded = out / "curve_config.json"
    # Strategy options resolved on both sides: one given at its default is the same setting
    # as one left unset, and a folder recorded before configs listed every option is read
    # with today's defaults.
    wanted = {side: dataclasses.asdict(dataclasses.replace(config, out="").with_resolved_options())
              for side, config in (("target", target), ("source", source))}
    if recorded.is_file():
        saved = json.loads(recorded.read_text())
        for side in ("target", "source"):
            if saved[side].get("strategy"):
                saved[side]["strategy_options"] = resolved_strategy_options(
                    saved[side]["strategy"], saved[side].get("strategy_options"))
            differing = sorted(k for k in wanted[side] if saved[side].get(k) != wanted[side][k]
                               and k not in EXECUTION_FIELDS)
            if differing:
                raise AdaptlabError(f"{out} holds a curve with other {side} settings "
                                    f"({', '.join(differing)}); choose another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(recorded, json.dumps(wanted, indent=2) + "\n")
