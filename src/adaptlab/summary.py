"""Plain rows that summarise a finished run (for notebooks, terminals and reports)."""

from __future__ import annotations

from typing import Any

_HIDDEN = {"loss", "samples"}


def comparison_rows(metrics: dict[str, Any], split: str = "test") -> list[list[str]]:
    """Header plus one row per scalar metric: each unadapted baseline, then the adapted model."""
    baselines = {metrics.get("baseline_method", "baseline").split(":")[0]: metrics["baseline"]}
    baselines.update(metrics.get("reference", {}))
    names = list(baselines)
    rows = [["metric", *names, "adapted"]]
    for key, value in metrics["final"][split].items():
        if key in _HIDDEN or not isinstance(value, float):
            continue
        cells = [_number(baselines[name].get(split, {}).get(key)) for name in names]
        rows.append([key, *cells, _number(value)])
    return rows


def cost_rows(costs: dict[str, Any]) -> list[tuple[str, str]]:
    memory = costs.get("memory_bytes", {})
    rows = [("trainable parameters", f"{costs['trainable_params']:,} of {costs['total_params']:,} "
                                     f"({costs['trainable_percent']:.2f} %)")]
    rows += [(f"memory: {part}", f"{value / 2**20:.1f} MiB") for part, value in memory.items()
             if value is not None]
    if costs.get("peak_total_bytes") is not None:
        rows.append(("memory: peak total over steps",
                     f"{costs['peak_total_bytes'] / 2**20:.1f} MiB"))
    rows += [("seconds per epoch", f"{costs['seconds_per_epoch']:.1f}"),
             ("samples per second", f"{costs['samples_per_second']:.1f}"),
             ("device", str(costs.get("device")))]
    return rows


def text_table(rows: list[list[str]] | list[tuple[str, ...]]) -> str:
    """Rows as aligned plain text (terminals, and the text/plain side of saved outputs)."""
    if not rows:
        return ""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in
                               zip(row, widths, strict=True)).rstrip() for row in rows)


def _number(value) -> str:
    return "-" if value is None else f"{value:.4f}"
