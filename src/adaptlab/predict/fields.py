"""Predicted fields (field regression): a NetCDF file on the input's grid, and a table with one
row per predicted field.

The NetCDF holds one variable per predicted quantity over (time, lat, lon), on the input's own
coordinates (copied with their attributes and encoding, so a model calendar's time stamps come
back as they went in; the run's own split, which has no time stamps, gets a ``sample`` axis).
The field at time ``t`` is the one predicted from the window of inputs ending at ``t``, for
``lead`` steps after ``t`` (the variable's attributes say so); steps without a full window
behind them, and inputs that could not be read, hold the fill value (NaN).

Values are in the data's own units: where training scaled the anomalies (divided them by the
training data's spread), the scale is undone. They remain anomalies from the run's training
climatology (the variable's ``anomaly_from`` attribute says which), as the model predicts and
as the run's metrics measure them. On the run's own split the true fields are written beside
(``<name>_target``), so the metrics can be recomputed from the file alone.

The file is written as batches come (one HDF5 chunk per field), to a temporary name renamed
into place at the end, so memory stays bounded and an interrupted run leaves no half file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptlab.errors import AdaptlabError
from adaptlab.predict.writer import CsvTable, Predictions, PredictionWriter, number

if TYPE_CHECKING:
    import torch
    import xarray as xr

    from adaptlab.predict.inputs import PredictionInputs
    from adaptlab.run_loading import LoadedRun


def _variable_names(run: LoadedRun) -> list[str]:
    """The input variable's name for a single predicted field (``_anomaly`` added where it is
    one), else each output's name made a NetCDF name."""
    record = run.data.preprocessing
    names = list(run.data.class_names)
    if len(names) == 1 and record.get("variable"):
        suffix = "_anomaly" if record.get("climatology") is not None else ""
        return [f"{record['variable']}{suffix}"]
    return [re.sub(r"\W+", "_", name).strip("_") or f"output_{i}" for i, name in enumerate(names)]


def _own_grid(run: LoadedRun, count: int) -> tuple[xr.Dataset, tuple[str, str, str]]:
    """Coordinates for inputs without a file (the run's own split): samples on the run's grid."""
    import xarray as xr

    coords: dict[str, Any] = {"sample": np.arange(count)}
    for axis, units in (("lat", "degrees_north"), ("lon", "degrees_east")):
        if run.data.coords.get(axis):
            coords[axis] = xr.Variable(axis, run.data.coords[axis], {"units": units})
    return xr.Dataset(coords=coords), ("sample", "lat", "lon")


class FieldWriter(PredictionWriter):
    """Table ``path, time, area_mean, min, max, netcdf`` (the area mean weights each grid
    point by cos(latitude)); fields in ``out`` with the suffix ``.nc`` (``out`` itself when it
    has that suffix; the table then takes ``.csv``)."""

    def __init__(self, run: LoadedRun, inputs: PredictionInputs, out: Path,
                 options: dict[str, Any] | None = None) -> None:
        import h5netcdf

        super().__init__(run, inputs, out, options)
        if out.suffix == ".nc":
            out = out.with_suffix(".csv")
        self.netcdf = out.with_suffix(".nc")
        self.record = run.data.preprocessing
        self.scale = float(self.record.get("scale", 1.0))
        grid = inputs.details.get("grid")
        if grid is not None:
            self.dims, self.steps = tuple(inputs.details["dims"]), list(inputs.details["steps"])
        else:
            grid, self.dims = _own_grid(run, len(inputs.samples))
            self.steps = list(range(len(inputs.samples)))
        self.times = grid[self.dims[0]].values
        self.names = _variable_names(run)
        self.netcdf.parent.mkdir(parents=True, exist_ok=True)
        self._partial = self.netcdf.with_name(f".{self.netcdf.name}.partial")
        # Coordinates have no fill value (CF); xarray would give floating ones NaN.
        grid.to_netcdf(self._partial, engine="h5netcdf",
                       encoding={name: {"_FillValue": None} for name in grid.variables})
        self._file = h5netcdf.File(self._partial, "a")
        shape = [grid.sizes.get(dim, 0) for dim in self.dims]
        labels = list(run.data.class_names)
        self.variables = [self._create(name, f"predicted {label}", shape)
                          for name, label in zip(self.names, labels, strict=True)]
        self.targets = [self._create(f"{name}_target", f"true {label}", shape)
                        for name, label in zip(self.names, labels, strict=True)] \
            if inputs.labels_known else []
        self.weights = self._area_weights(grid, shape[1])
        # Cells the run's data has no values at (a fixed mask) are written as missing.
        valid = run.data.task_options.get("valid_cells")
        self.invalid = None if valid is None else ~np.asarray(valid, dtype=bool)
        if self.invalid is not None:
            self.weights = self.weights * ~self.invalid
        stats = ["area_mean", "min", "max"]
        columns = stats if len(self.names) == 1 else \
            [f"{name}_{stat}" for name in self.names for stat in stats]
        self.table = CsvTable(out, ["path", "time", *columns, "netcdf"])

    def _create(self, name: str, long_name: str, shape: list[int]):
        if 0 in shape[1:]:
            raise AdaptlabError(f"run {self.run.run_dir} records no grid for the predicted "
                                "fields; predict on a file with latitude and longitude")
        variable = self._file.create_variable(name, self.dims, "f4", fillvalue=np.float32(np.nan),
                                              chunks=(1, *shape[1:]))
        history, lead = self.record.get("history", 1), self.record.get("lead")
        attrs = {"long_name": long_name,
                 "history_steps": history,
                 "comment": f"at {self.dims[0]} t: predicted from the {history} steps up to t"
                            + (f", for {lead} step(s) after t" if lead else "")}
        if lead:
            attrs["lead_steps"] = lead
        if self.record.get("units"):
            attrs["units"] = self.record["units"]
        if self.record.get("reference") and self.record.get("climatology") is not None:
            attrs["anomaly_from"] = f"the run's training climatology: {self.record['reference']}"
        for key, value in attrs.items():
            variable.attrs[key] = value
        return variable

    def _area_weights(self, grid: xr.Dataset, rows: int) -> np.ndarray:
        lat = self.dims[1]
        if lat not in grid.coords:
            return np.ones((rows, 1))
        weights = np.cos(np.deg2rad(np.asarray(grid[lat].values, dtype=np.float64))).clip(min=0)
        return (weights / weights.mean())[:, None]

    def add(self, outputs: torch.Tensor, indices: list[int], batch: Any) -> None:
        if outputs.ndim != 4:
            raise AdaptlabError(f"run {self.run.run_dir} predicts {tuple(outputs.shape[1:])} "
                                "per input, not fields on a grid; only fields are written")
        fields = outputs.float().cpu().numpy() * np.float32(self.scale)
        if self.invalid is not None:
            fields[..., self.invalid] = np.nan
        rows = []
        for index, field in zip(indices, fields, strict=True):
            step = self.steps[index]
            for variable, channel in zip(self.variables, field, strict=True):
                variable[step] = channel
            if self.targets:
                truth = np.asarray(self.inputs.samples[index][1], dtype=np.float32).copy()
                if self.invalid is not None:
                    truth[..., self.invalid] = np.nan
                for variable, channel in zip(self.targets, truth * np.float32(self.scale),
                                             strict=True):
                    variable[step] = channel
            stats = [number(value) for channel in field for value in (
                float(np.nansum(channel * self.weights) / self.weights.sum()
                      * self.weights.shape[-1] / channel.shape[-1]),
                float(np.nanmin(channel)), float(np.nanmax(channel)))]
            rows.append([self.inputs.names[index], time_label(self.times[step]), *stats,
                         str(self.netcdf)])
        self.table.add(rows)

    def finish(self) -> Predictions:
        self._file.close()
        os.replace(self._partial, self.netcdf)
        return Predictions(self.table.close(), files=[self.netcdf], count=self.table.rows)

    def abandon(self) -> None:
        self._file.close()
        self._partial.unlink(missing_ok=True)
        self.table.abandon()


def time_label(value: Any) -> str:
    """A time stamp as text: ISO 8601 for dates (numpy or cftime, any calendar), else as is."""
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value, unit="s"))
    isoformat = getattr(value, "isoformat", None)
    return isoformat() if callable(isoformat) else str(value)
