"""Forecasts: one row per series (or window) and forecast step, in the data's own units.

The model reads each context min-max scaled on its own (``adaptlab.data.series``) and
forecasts on that scale; every batch carries the scale (``loc``, ``span``), so the writer
turns the quantiles back into the data's units: ``value * span + loc``.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import Any

import torch

from adaptlab.errors import AdaptlabError
from adaptlab.predict.writer import CsvTable, Predictions, PredictionWriter, csv_field


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
        # A row as the csv module writes it: names and time stamps quoted where needed,
        # values with forecast_number's ten significant digits.
        self._row = ("%s,%s,%d" + ",%.10g" * (1 + len(self.columns))
                     + (",%s" if inputs.labels_known else "") + "\r\n")
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
        # [window, step, column]: the median, then the chosen levels
        written = values[..., [self.median, *self.columns]].numpy()
        steps = written.shape[1]
        cells: list[Any] = []
        for index, forecast in zip(indices, written, strict=True):
            window = self.inputs.samples[index][0]
            columns = [[csv_field(self.inputs.names[index])] * steps,
                       [csv_field(str(time)) for time in self._times(index, window, steps)[:steps]],
                       range(1, steps + 1), *forecast.T.tolist()]
            if self.inputs.labels_known:
                actual = window.target().tolist()[:steps]
                columns.append([*map(forecast_number, actual), *[""] * (steps - len(actual))])
            cells.extend(chain.from_iterable(zip(*columns, strict=True)))
        # One % over the batch's rows: formatting is the per-row cost
        self.table.add_lines(self._row * (len(indices) * steps) % tuple(cells),
                             len(indices) * steps)
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
