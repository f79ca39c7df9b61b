"""A sweep's numbers: one row per run (read from its run folder, as ``adaptlab compare``
reads it), one line per swept value (mean over seeds, with the spread when there are several),
the printed table and the plot.

Train and held-out metrics stay apart everywhere: a training accuracy is not a result (the
wildlife paper's headline is one), and the gap between the two is what a sweep over frozen
blocks shows.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from adaptlab.compare import summarise_run
from adaptlab.sweeps.grid import shown_value

SPLITS = ("train", "val", "test")


def run_row(run_dir: Path, value: Any, seed: int) -> dict[str, Any]:
    """One finished run's row: its costs and every split's final scalar metrics."""
    summary = summarise_run(run_dir)
    return {
        "run": run_dir.name,  # relative to the sweep folder, so the folder can move
        "value": value,
        "seed": seed,
        "monitor": summary.monitor,
        "higher_is_better": summary.higher_is_better,
        "trainable_params": summary.trainable_params,
        "total_params": summary.total_params,
        "seconds_per_epoch": summary.seconds_per_epoch,
        "train": summary.train,
        "val": summary.val,
        "test": summary.test,
    }


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "seeds": len(values),
    }


def summarise(rows: list[dict[str, Any]], values: list[Any], monitor: str) -> list[dict[str, Any]]:
    """Per swept value: mean trainable parameters and seconds per epoch, and the headline
    metric of each split as mean and standard deviation over seeds."""
    lines = []
    for value in values:
        mine = [row for row in rows if row["value"] == value]
        line: dict[str, Any] = {"value": value, "runs": len(mine)}
        for key in ("trainable_params", "seconds_per_epoch"):
            numbers = [row[key] for row in mine if row[key] is not None]
            line[key] = statistics.fmean(numbers) if numbers else None
        for split in SPLITS:
            line[split] = _spread([row[split][monitor] for row in mine if monitor in row[split]])
        lines.append(line)
    return lines


def chosen_on_validation(summary: list[dict[str, Any]], higher_is_better: bool,
                         seeds: int) -> dict[str, Any] | None:
    """The swept value whose mean validation metric is best, with its test metric beside it;
    None until every value has all its seeds' runs, or where the data has no validation
    split. The test split plays no part in the choice: a value chosen on test would report a
    test score the choice itself had seen."""
    complete = [line for line in summary if line["runs"] == seeds and line["val"] is not None]
    if not complete or len(complete) < len(summary):
        return None
    sign = 1 if higher_is_better else -1
    # The first of equal means: values are listed in order, so the smallest K or rate wins a tie.
    best = max(complete, key=lambda line: sign * line["val"]["mean"])
    return {"value": best["value"], "val": best["val"], "test": best["test"]}


def _cell(spread: dict[str, float] | None, with_std: bool) -> str:
    if spread is None:
        return "-"
    return f"{spread['mean']:.4f} ± {spread['std']:.4f}" if with_std else f"{spread['mean']:.4f}"


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """Header plus one row per swept value, for :func:`adaptlab.summary.text_table`."""
    monitor, with_std = result["monitor"], len(result["seeds"]) > 1
    header = [result["varied"], "seeds", "trainable", "s/epoch", *[f"{split} {monitor}" for split in SPLITS]]
    rows = [header]
    for line in result["summary"]:
        params, seconds = line["trainable_params"], line["seconds_per_epoch"]
        rows.append(
            [
                shown_value(line["value"]),
                str(line["runs"]),
                "-" if params is None else f"{round(params):,}",
                "-" if seconds is None else f"{seconds:.1f}",
                *[_cell(line[split], with_std) for split in SPLITS],
            ]
        )
    return rows


def table_text(result: dict[str, Any]) -> str:
    """The printed table, with a line saying what its numbers are."""
    from adaptlab.summary import text_table

    better = "higher" if result["higher_is_better"] else "lower"
    spread = "mean ± std over seeds" if len(result["seeds"]) > 1 else "one seed"
    text = (
        f"{result['domain']}: {result['monitor']} ({better} is better; {spread} "
        f"{','.join(map(str, result['seeds']))}); train is the training split, val and test "
        "are held out\n" + text_table(table_rows(result))
    )
    chosen, with_std = result.get("chosen_on_val"), len(result["seeds"]) > 1
    if chosen:
        text += (f"\nchosen on validation: {result['varied']}={shown_value(chosen['value'])} (val "
                 f"{result['monitor']} {_cell(chosen['val'], with_std)}; its test "
                 f"{_cell(chosen['test'], with_std)})")
    return text


def sweep_figure(result: dict[str, Any]):
    """The headline metric against the swept value, held-out (test, val) and train apart, mean ±
    std over seeds (a matplotlib ``Figure``, made without pyplot, as compare.py's are)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    axis = fig.subplots()
    values = [line["value"] for line in result["summary"]]
    numeric = result["varied"] in ("k", "lr")
    # Backbones are names, not numbers: one evenly spaced position each.
    xs = values if numeric else list(range(len(values)))
    if result["varied"] == "lr":
        axis.set_xscale("log")  # rates are tried a factor apart
    for split, colour, style, label in (
        ("test", "tab:blue", "-", "held-out (test)"),
        ("val", "tab:green", ":", "held-out (val): what the choice reads"),
        ("train", "tab:orange", "--", "train"),
    ):
        points = [(x, line[split]) for x, line in zip(xs, result["summary"], strict=True) if line[split]]
        if not points:
            continue
        px = [x for x, _ in points]
        means = [spread["mean"] for _, spread in points]
        stds = [spread["std"] for _, spread in points]
        axis.errorbar(px, means, yerr=stds, color=colour, linestyle=style, marker="o", capsize=3, label=label)
    # K is a count: a tick at each swept value, not at fractions between them.
    axis.set_xticks(xs, [f"{value:g}" if numeric else str(value) for value in values],
                    rotation=0 if numeric else 20, fontsize=8)
    axis.set_xticks([], minor=True)
    axis.set_xlabel({"k": "frozen blocks K", "lr": "learning rate"}.get(result["varied"], "backbone"))
    axis.set_ylabel(result["monitor"])
    seeds = len(result["seeds"])
    axis.set_title(
        f"{result['domain']}: {result['monitor']} by {result['varied']} "
        f"({'mean ± std over ' + str(seeds) + ' seeds' if seeds > 1 else 'one seed'})",
        fontsize=9,
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return fig
