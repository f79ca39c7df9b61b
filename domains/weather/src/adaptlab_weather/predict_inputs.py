"""New fields to predict: a NetCDF file or Zarr store read as training reads them, without
a label (a ``label`` variable is ignored).

The inputs are made exactly as the run's training inputs were, from what its loader recorded
(``SplitDataset.preprocessing``, kept in the run's ``data.json``): the same variable, anomalies
against the RUN's training climatology (never one recomputed from the new file, whose own mean
would remove the very signal to predict), the same scale, windows of the same number of time
steps as channels. The grid must be the run's: a network trained on one grid would run on
another without a word, on other places and resolutions, so another grid is refused, naming
what differs. So is a mask (cells NaN at every time step) other than the run's training
mask, with how many cells differ; the predicted fields are NaN at the masked cells.

One input per time step with a full window behind it: the first ``history - 1`` steps only
start the first window. Each input is named ``file:time``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptlab.errors import AdaptlabError
from adaptlab.predict.fields import time_label
from adaptlab.predict.inputs import NO_LABEL, PredictionInputs
from adaptlab_weather.masks import check_same_mask, fixed_mask, with_valid_channel
from adaptlab_weather.readers import LAT_NAMES, LON_NAMES, grid_dim, open_fields

if TYPE_CHECKING:
    import xarray as xr

    from adaptlab.run_loading import LoadedRun

GRID_TOLERANCE = 1e-4  # degrees: the same grid written in float32 or float64


def to_anomalies(values: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """``(values - climatology) / scale`` as float32, computed as the loaders compute it (in
    float64, rounded once), so a training file read again gives its training inputs exactly."""
    anomalies = np.asarray(values, dtype=np.float64)
    if record.get("climatology") is not None:
        anomalies = anomalies - np.asarray(record["climatology"], dtype=np.float64)
    return (anomalies / float(record.get("scale", 1.0))).astype(np.float32)


def _field_variable(data: xr.Dataset, record: dict[str, Any], path: Path) -> str:
    names = sorted(str(name) for name in data.data_vars)
    wanted = record.get("variable")
    if wanted is not None:
        if wanted not in data.data_vars:
            raise AdaptlabError(f"{path}: no variable {wanted!r} (the run was trained on it); "
                                f"variables: {names}")
        return wanted
    fields = [name for name in names if name != "label" and data[name].ndim == 3]
    if len(fields) != 1:
        raise AdaptlabError(f"{path}: needs exactly one (time, lat, lon) field variable, found "
                            f"{fields or 'none'} among {names}")
    return fields[0]


def _describe(name: str, values: list[float]) -> str:
    return f"{name} {len(values)} points {values[0]:g}..{values[-1]:g}" if values else \
        f"{name} no points"


def check_grid(path: Path, grid: dict[str, list[float] | int], run: LoadedRun) -> None:
    """Refuse a grid that is not the run's: ``grid`` holds each axis's coordinates, or only its
    size where the file has none (then only the size is compared)."""
    shape = run.data.preprocessing.get("shape") or [None, None]
    differences = []
    for axis, size in zip(("lat", "lon"), shape, strict=True):
        here, there = grid[axis], run.data.coords.get(axis)
        if isinstance(here, int) or there is None:
            count = here if isinstance(here, int) else len(here)
            expected = len(there) if there is not None else size
            if expected is not None and count != expected:
                differences.append(f"{axis} {count} points here, {expected} in the run")
        elif len(here) != len(there) or not np.allclose(here, there, rtol=0,
                                                        atol=GRID_TOLERANCE):
            differences.append(f"{_describe(axis, here)} here, {_describe(axis, there)} in "
                               "the run")
    if differences:
        raise AdaptlabError(f"{path}: another grid than run {run.run_dir} was trained on "
                            f"({'; '.join(differences)}); regrid it to the run's grid")


def _coordinate(data: xr.Dataset, dim: str) -> xr.Variable:
    """A coordinate as the output is to carry it: its values, attributes and encoding (a model
    calendar's time units survive), but not its ``bounds``, whose variable is not copied."""
    variable = data[dim].variable.load().copy()
    variable.attrs.pop("bounds", None)
    return variable


def _read(path: Path, record: dict[str, Any], run: LoadedRun):
    """``(values (time, lat, lon), the file's coordinates, their dims, the variable's name)``,
    the grid checked before the values are read."""
    import xarray as xr

    data = open_fields(path)
    try:
        name = _field_variable(data, record, path)
        field = data[name]
        lat = grid_dim(field, LAT_NAMES, "latitude", path, name)
        lon = grid_dim(field, LON_NAMES, "longitude", path, name)
        if field.ndim != 3:
            raise AdaptlabError(f"{path}: variable {name!r} has dims {list(field.dims)}; "
                                "expected (time, latitude, longitude)")
        time = next(dim for dim in field.dims if dim not in (lat, lon))
        grid = {axis: [float(v) for v in data[dim].values] if dim in data.coords
                else int(data.sizes[dim]) for axis, dim in (("lat", lat), ("lon", lon))}
        check_grid(path, grid, run)
        values = np.asarray(field.transpose(time, lat, lon).values, dtype=np.float64)
        template = xr.Dataset(coords={dim: _coordinate(data, dim) for dim in (time, lat, lon)})
    finally:
        data.close()
    masked = fixed_mask(values, path, name, (time, lat, lon),
                        lambda step: time_label(template[time].values[step]))
    check_same_mask(path, name, masked, run.data.task_options.get("valid_cells"), run.run_dir)
    return values, template, (time, lat, lon), name


def read_field_inputs(path: Path, run: LoadedRun) -> PredictionInputs:
    """Windows of the run's variable in ``path``, as the run's inputs, one per time step with
    a full window behind it; ``details`` keeps the file's coordinates for the field writer."""
    record = run.data.preprocessing
    if not record:
        raise AdaptlabError(f"run {run.run_dir} records no field preprocessing (data.json "
                            "has none: it predates prediction); train it again to predict")
    path = Path(path)
    values, template, dims, name = _read(path, record, run)
    history = int(record.get("history", 1))
    if len(values) < history:
        raise AdaptlabError(f"{path}: variable {name!r} has {len(values)} time steps; the run "
                            f"reads windows of {history}, so at least {history} are needed")
    # Windows are views of one float32 array: memory stays that of the file's field.
    anomalies = to_anomalies(values, record)
    valid = run.data.task_options.get("valid_cells")
    if valid is not None:  # the mask as training had it: 0 in the cells, channel 0 the map
        valid = np.asarray(valid, dtype=bool)
        anomalies[:, ~valid] = 0.0
    steps = list(range(history - 1, len(anomalies)))
    times = template[dims[0]].values
    return PredictionInputs(
        samples=[(with_valid_channel(anomalies[end - history + 1:end + 1], valid), NO_LABEL)
                 for end in steps],
        names=[f"{path}:{time_label(times[end])}" for end in steps], modality="field",
        source=str(path), details={"coords": run.data.coords, "grid": template, "dims": dims,
                                   "steps": steps, "variable": name})
