"""Forecasts: one row per series (or window) and forecast step, in the data's own units.

The model reads each context min-max scaled on its own (``adaptlab.data.series``) and
forecasts on that scale; every batch carries the scale (``loc``, ``span``), so the writer
turns the quantiles back into the data's units: ``value * span + loc``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from adaptlab.errors import AdaptlabError
from adaptlab.predict.writer import CsvTable, Predictions, PredictionWriter


def forecast_number(value: float) -> str:
    """Ten significant digits: metrics recomputed from the table (MAE, MASE) match the
    run's own to well under 1e-4, whatever the data's magnitude."""
    return f"{value:.10g}"


class ForecastWriter(PredictionWriter):
    """``series, time, step, median, q<level>...`` (and ``actual`` for the run's own split,
    whose windows hold the true values), one row per series and forecast step.

    ``time`` is the step's time stamp: the reader's (new data: the file's grid continued
    beyond its end, in the file's format), else the series' own label of that step, else
    the step's position in the series. Option ``quantiles``: the levels to write (default
    every level the model forecasts).

    >>> run.predict("levels.csv", options={"quantiles": [0.1, 0.9]})  # doctest: +SKIP
    """

    option_defaults: dict[str, Any] = {"quantiles": None}

    def __init__(self, run, inputs, out: Path, options: dict | None = None) -> None:
        super().__init__(run, inputs, out, options)
        levels = [float(level) for level in run.backbone.series.quantiles]
        self.median = min(range(len(levels)), key=lambda i: abs(levels[i] - 0.5))
        self.columns = self._chosen(levels, self.options["quantiles"])
        header = ["series", "time", "step", "median",
                  *(f"q{levels[i]:g}" for i in self.columns)]
        if inputs.labels_known:
            header.append("actual")
        self.levels = levels
        self.table = CsvTable(out, header)
        self.forecasts = 0

    @staticmethod
    def _chosen(levels: list[float], wanted) -> list[int]:
        """Indices of the quantile levels to write; a level the model lacks is refused."""
        if wanted is None:
            return list(range(len(levels)))
        wanted = wanted if isinstance(wanted, list | tuple) else [wanted]
        chosen = []
        for level in wanted:
            match = next((i for i, have in enumerate(levels)
                          if isinstance(level, int | float) and abs(have - level) < 1e-9), None)
            if match is None:
                raise AdaptlabError(f"quantiles: {level!r} is not a level the model forecasts "
                                    f"({', '.join(f'{have:g}' for have in levels)})")
            chosen.append(match)
        return chosen

    def add(self, outputs: torch.Tensor, indices: list[int], batch: Any) -> None:
        if outputs.shape[-1] != len(self.levels):
            raise AdaptlabError(f"the model forecasts {outputs.shape[-1]} quantiles, its backbone "
                                f"declares {len(self.levels)}")
        span = batch["span"].double().reshape(-1, 1, 1)
        values = outputs.detach().double().cpu() * span + batch["loc"].double().reshape(-1, 1, 1)
        rows = []
        for index, forecast in zip(indices, values.tolist(), strict=True):
            window = self.inputs.samples[index][0]
            times = self._times(index, window, len(forecast))
            actual = window.target().tolist() if self.inputs.labels_known else None
            for step, quantiles in enumerate(forecast):
                line = [self.inputs.names[index], times[step], step + 1,
                        forecast_number(quantiles[self.median]),
                        *(forecast_number(quantiles[i]) for i in self.columns)]
                if actual is not None:
                    line.append(forecast_number(actual[step]) if step < len(actual) else "")
                rows.append(line)
        self.table.add(rows)
        self.forecasts += len(indices)

    def _times(self, index: int, window, steps: int) -> list[str]:
        given = self.inputs.details.get("times")
        if given:
            return given[index]
        times, first = window.series.times, window.origin
        if times and first + steps <= len(times):
            return list(times[first:first + steps])
        return [str(first + step) for step in range(steps)]

    def finish(self) -> Predictions:
        return Predictions(self.table.close(), count=self.forecasts)

    def abandon(self) -> None:
        self.table.abandon()
