"""The training curves: loss (train per step and per epoch, validation per epoch) and the
metrics per epoch, training (where the task measures it while training) beside validation.

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

    # Fixed margins: constrained layout would double the cost of every redraw.
    fig = Figure(figsize=(8.5, 2.8))
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.16, top=0.9, wspace=0.15)
    loss_axis, metric_axis = fig.subplots(1, 2)
    per_epoch = max(progress.steps_per_epoch, 1)
    if progress.train_loss:
        steps = [s / per_epoch for s, _ in progress.train_loss]
        losses = [v for _, v in progress.train_loss]
        loss_axis.plot(steps, losses, color="#9ecae1", linewidth=0.8, label="train (step)")
        loss_axis.plot(steps, _smoothed(losses), color="#1f77b4", label="train (smoothed)")
    for history, style, color, label in ((progress.training, "s--", "#1f77b4", "train (epoch)"),
                                         (progress.validation, "o-", "#d62728", "validation")):
        points = [(epoch, m["loss"]) for epoch, m in history if "loss" in m]
        if points:
            loss_axis.plot(*zip(*points, strict=True), style, color=color, label=label)
    names = [k for k in (progress.validation[-1][1] if progress.validation else {}) if k != "loss"]
    # Metrics measured on both splits first: the train-validation gap is what to look at.
    trained = {k for _, m in progress.training for k in m}
    names.sort(key=lambda k: k not in trained)
    for index, name in enumerate(names[:MAX_METRICS]):
        color = f"C{index}"
        points = [(epoch, m[name]) for epoch, m in progress.validation if name in m]
        metric_axis.plot(*zip(*points, strict=True), "o-", color=color, label=f"validation {name}")
        train_points = [(epoch, m[name]) for epoch, m in progress.training if name in m]
        if train_points:
            metric_axis.plot(*zip(*train_points, strict=True), "s--", color=color,
                             label=f"train {name}")
    for axis, title in ((loss_axis, "loss"), (metric_axis, "metrics")):
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
