"""The training curves: loss (train per step, validation per epoch) and validation metrics.

Drawn with matplotlib's object API (no pyplot state), on the main thread, as PNG bytes that
go both into the live image widget and into the saved record.
"""

from __future__ import annotations

from adaptlab.compare import figure_png
from adaptlab.widgets.progress import RunProgress

SMOOTHING = 0.8  # exponential moving average of the per-step training loss
MAX_METRICS = 3


def _smoothed(values: list[float]) -> list[float]:
    out, level = [], None
    for value in values:
        level = value if level is None else SMOOTHING * level + (1 - SMOOTHING) * value
        out.append(level)
    return out


def curves_png(progress: RunProgress) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 2.8), layout="constrained")
    loss_axis, metric_axis = fig.subplots(1, 2)
    per_epoch = max(progress.steps_per_epoch, 1)
    if progress.train_loss:
        steps = [s / per_epoch for s, _ in progress.train_loss]
        losses = [v for _, v in progress.train_loss]
        loss_axis.plot(steps, losses, color="#9ecae1", linewidth=0.8, label="train (step)")
        loss_axis.plot(steps, _smoothed(losses), color="#1f77b4", label="train (smoothed)")
    val_loss = [(epoch, m["loss"]) for epoch, m in progress.validation if "loss" in m]
    if val_loss:
        loss_axis.plot(*zip(*val_loss, strict=True), "o-", color="#d62728", label="validation")
    names = [k for k in (progress.validation[-1][1] if progress.validation else {}) if k != "loss"]
    for name in names[:MAX_METRICS]:
        points = [(epoch, m[name]) for epoch, m in progress.validation if name in m]
        metric_axis.plot(*zip(*points, strict=True), "o-", label=f"validation {name}")
    for axis, title in ((loss_axis, "loss"), (metric_axis, "validation metrics")):
        axis.set_xlabel("epoch", fontsize=8)
        axis.set_title(title, fontsize=9)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=7)
        else:
            axis.text(0.5, 0.5, "waiting for the first " + ("step" if axis is loss_axis else
                                                             "evaluation"),
                      ha="center", va="center", fontsize=8, transform=axis.transAxes)
    return figure_png(fig)
