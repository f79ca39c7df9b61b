"""Time series for forecasting: the gap rule, walk-forward windows, and model-ready tensors.

Every forecasting split here is walk-forward (the issue's rule and the only honest one): the
test span is the end of each series, validation the span before it, and training windows
forecast only values that lie before validation starts. Series read from one file share a
time axis, so the cut falls on the same date for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from adaptlab.errors import AdaptlabError

MAX_GAP_DEFAULT = 3


@dataclass(frozen=True, eq=False)
class Series:
    """One univariate series on a regular time grid, free of NaN after :func:`apply_gap_rule`.

    ``season`` is the number of steps in one seasonal cycle (12 for monthly data, 1 for none):
    the seasonal-naive baseline and the MASE scale use it. ``times`` holds ISO labels of the
    steps for reports (may be empty).
    """

    name: str
    values: np.ndarray
    season: int = 1
    times: tuple[str, ...] = ()
    origin: str = ""  # the file (and column) it came from, for error messages

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True, eq=False)
class SeriesWindow:
    """Forecast ``horizon`` steps of ``series`` from step ``origin`` on, seeing what precedes
    (from ``start`` on). A classification clip is a window with horizon 0: the steps
    ``start:origin``."""

    series: Series
    origin: int
    horizon: int
    start: int = 0

    def context(self, length: int) -> np.ndarray:
        return self.series.values[max(self.start, self.origin - length):self.origin]

    def target(self) -> np.ndarray:
        return self.series.values[self.origin:self.origin + self.horizon]

    def describe(self) -> str:
        """A forecast window by its first forecast step, a clip by its span (a clip or a
        forecast from the series' end has an origin past the last time stamp)."""
        if self.horizon == 0:
            return f"{self.series.name} {self._label(self.start)}..{self._label(self.origin - 1)}"
        return f"{self.series.name} from {self._label(self.origin)}"

    def _label(self, step: int) -> str:
        times = self.series.times
        return times[step] if 0 <= step < len(times) else f"step {step}"


@dataclass
class GapReport:
    """What the gap rule did to one series: interpolated values and trimmed ends."""

    name: str
    filled: int = 0
    trimmed: int = 0
    notes: list[str] = field(default_factory=list)


def apply_gap_rule(values: np.ndarray, name: str, max_gap: int = MAX_GAP_DEFAULT,
                   times: tuple[str, ...] = ()) -> tuple[np.ndarray, int, GapReport]:
    """The documented NaN rule: leading and trailing missing values are trimmed; an interior
    gap of at most ``max_gap`` steps is filled by linear interpolation between its neighbours;
    a longer gap is refused with an error naming the series, where the gap starts and its
    length. Infinite values count as missing. Returns (values, index of the first kept step,
    report)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise AdaptlabError(f"{name}: a series must be one-dimensional, got shape {values.shape}")
    missing = ~np.isfinite(values)
    report = GapReport(name)
    if missing.all():
        raise AdaptlabError(f"{name}: no finite value at all")
    first = int(np.argmax(~missing))
    last = len(values) - int(np.argmax(~missing[::-1]))
    report.trimmed = first + len(values) - last
    values, missing = values[first:last].copy(), missing[first:last]
    start = None
    for i, gap in enumerate(np.append(missing, False)):
        if gap and start is None:
            start = i
        elif not gap and start is not None:
            length = i - start
            if length > max_gap:
                where = times[first + start] if times else f"step {first + start}"
                raise AdaptlabError(
                    f"{name}: {length} missing values in a row from {where} (the gap rule fills "
                    f"at most {max_gap}); fill or cut the series, or raise max_gap")
            before, after = values[start - 1], values[i]
            values[start:i] = before + (after - before) * np.arange(1, length + 1) / (length + 1)
            report.filled += length
            start = None
    if report.filled:
        report.notes.append(f"{name}: {report.filled} missing value(s) filled by linear "
                            f"interpolation (gaps of at most {max_gap} steps)")
    return values.astype(np.float32), first, report


def walk_forward_windows(series: list[Series], horizon: int, val_steps: int, test_steps: int,
                         min_context: int, train_stride: int = 1, eval_stride: int = 1,
                         eval_names: set[str] | None = None) -> dict[str, list[SeriesWindow]]:
    """Windows per split, cut by position from each series' end.

    Test windows start in the last ``test_steps`` steps and end inside the series; validation
    windows start in the ``val_steps`` before and end before the test span; training windows
    end before the validation span. Only series named in ``eval_names`` (all when None) give
    validation and test windows: the others are source data for training.
    """
    if horizon < 1:
        raise AdaptlabError(f"horizon must be at least 1, got {horizon}")
    out: dict[str, list[SeriesWindow]] = {"train": [], "val": [], "test": []}
    for item in series:
        n = len(item)
        needed = min_context + horizon + (val_steps + test_steps if _evaluated(item, eval_names)
                                          else 0)
        if n < min_context + horizon:
            raise AdaptlabError(
                f"{item.origin or item.name}: {n} steps cannot hold a context of {min_context} "
                f"and a horizon of {horizon}; shorten the horizon or add data")
        test_start, val_start = n - test_steps, n - test_steps - val_steps
        if _evaluated(item, eval_names):
            if n < needed:
                raise AdaptlabError(
                    f"{item.origin or item.name}: {n} steps are too few for horizon {horizon} "
                    f"with {val_steps} validation and {test_steps} test steps "
                    f"(needs {needed}); shorten the horizon or the held-out spans")
            out["test"] += [SeriesWindow(item, o, horizon)
                            for o in range(test_start, n - horizon + 1, eval_stride)]
            out["val"] += [SeriesWindow(item, o, horizon)
                           for o in range(val_start, test_start - horizon + 1, eval_stride)]
        out["train"] += [SeriesWindow(item, o, horizon)
                         for o in range(min_context, val_start - horizon + 1, train_stride)]
    for split, windows in out.items():
        if not windows:
            raise AdaptlabError(f"walk-forward split leaves no {split} window (horizon {horizon}, "
                                f"val {val_steps}, test {test_steps} steps)")
    return out


def _evaluated(item: Series, eval_names: set[str] | None) -> bool:
    return eval_names is None or item.name in eval_names


def minmax_scale(context: np.ndarray) -> tuple[float, float]:
    """(loc, span) that map the context onto [0, 1]: Fracast's own input normalisation."""
    loc = float(np.min(context))
    return loc, max(float(np.max(context)) - loc, 1e-5)


class SeriesWindowDataset:
    """Windows -> (inputs, normalised target) with the backbone's context length and scaling.

    The context is left-padded to ``context_length`` with an ``observed`` mask; context and
    target share one (loc, span) computed from the context alone, so the loss sees no future
    value through the scaling. ``loc``/``span``/``season`` travel with the batch so metrics
    come back in the data's own units.
    """

    def __init__(self, windows: list[SeriesWindow], context_length: int) -> None:
        self.windows = windows
        self.context_length = context_length

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int):
        window = self.windows[index]
        context = window.context(self.context_length)
        loc, span = minmax_scale(context)
        padded = np.zeros(self.context_length, dtype=np.float32)
        observed = np.zeros(self.context_length, dtype=bool)
        padded[self.context_length - len(context):] = (context - loc) / span
        observed[self.context_length - len(context):] = True
        inputs = {"context": torch.from_numpy(padded), "observed": torch.from_numpy(observed),
                  "loc": torch.tensor(loc, dtype=torch.float64),
                  "span": torch.tensor(span, dtype=torch.float64),
                  "season": torch.tensor(window.series.season)}
        target = torch.from_numpy(((window.target() - loc) / span).astype(np.float32))
        return inputs, target


class LabelledSeriesDataset(SeriesWindowDataset):
    """Clips (windows of horizon 0) with class labels, for series classification."""

    def __init__(self, samples: list[tuple[SeriesWindow, int]], context_length: int) -> None:
        super().__init__([window for window, _ in samples], context_length)
        self.labels = [label for _, label in samples]

    def __getitem__(self, index: int):
        inputs, _ = super().__getitem__(index)
        return inputs, self.labels[index]
