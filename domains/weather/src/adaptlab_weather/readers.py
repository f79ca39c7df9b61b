"""Your own fields with an event label, as xarray reads them: NetCDF (h5netcdf) or Zarr.

The file holds one field variable over (time, lat, lon), e.g. 500 hPa height, and a variable
``label`` over time (1 where the event holds: a blocking day that persists, a heatwave
onset). Fields become anomalies: the training period's mean per grid point is removed and
the result divided by the training period's standard deviation, so the units do not matter.
Samples are windows of the last days, split chronologically as the demo is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adaptlab.data.splits import SplitDataset
from adaptlab.errors import AdaptlabError
from adaptlab_weather.datasets import HISTORY, anomaly_record, chronological_splits, windows

LAT_NAMES = ("lat", "latitude")
LON_NAMES = ("lon", "longitude")
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".h5")


def open_fields(path: str | Path):
    """An ``xarray.Dataset`` from a NetCDF file or a Zarr store."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise AdaptlabError(f"{path}: no such file or folder")
    try:
        if path.suffix == ".zarr" or (path / ".zgroup").exists() or (path / "zarr.json").exists():
            return xr.open_zarr(path)
        if path.suffix.lower() in NETCDF_SUFFIXES:
            return xr.open_dataset(path, engine="h5netcdf")
    except (OSError, ValueError, KeyError) as exc:
        raise AdaptlabError(f"{path}: cannot read as {'Zarr' if path.is_dir() else 'NetCDF'} "
                            f"({type(exc).__name__}: {exc})") from exc
    raise AdaptlabError(f"{path}: not a NetCDF file ({', '.join(NETCDF_SUFFIXES)}) or a Zarr "
                        "store (.zarr)")


def grid_dim(variable, names: tuple[str, ...], what: str, path: Path, field: str) -> str:
    for name in variable.dims:
        if name.lower() in names:
            return name
    raise AdaptlabError(f"{path}: variable {field!r} has no {what} dimension (dims "
                        f"{list(variable.dims)}; expected one of {list(names)})")


def read_event_fields(path: str | Path, seed: int = 0, **_: object) -> SplitDataset:
    path = Path(path)
    data = open_fields(path)
    names = sorted(str(name) for name in data.data_vars)
    if "label" not in data.data_vars:
        raise AdaptlabError(f"{path}: no variable 'label' (1 where the event holds, per time "
                            f"step); variables: {names}")
    fields = [name for name in names if name != "label" and data[name].ndim == 3]
    if len(fields) != 1:
        raise AdaptlabError(f"{path}: needs exactly one (time, lat, lon) field variable besides "
                            f"'label', found {fields or 'none'} among {names}")
    field = data[fields[0]]
    lat = grid_dim(field, LAT_NAMES, "latitude", path, fields[0])
    lon = grid_dim(field, LON_NAMES, "longitude", path, fields[0])
    time = next((d for d in field.dims if d not in (lat, lon)), None)
    labels = np.asarray(data["label"].values)
    values = np.asarray(field.transpose(time, lat, lon).values, dtype=np.float64)
    if labels.shape != (values.shape[0],):
        raise AdaptlabError(f"{path}: 'label' has shape {labels.shape}, the field has "
                            f"{values.shape[0]} time steps")
    if not np.isin(labels, (0, 1)).all():
        raise AdaptlabError(f"{path}: 'label' holds {sorted(set(labels.tolist()))[:5]}; use 0 "
                            "and 1")
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        step, y, x = bad[0].tolist()
        raise AdaptlabError(f"{path}: variable {fields[0]!r} is NaN or infinite at {time}={step}, "
                            f"{lat}={y}, {lon}={x} ({len(bad)} values)")
    train_end = int(len(values) * 0.6)
    mean = values[:train_end].mean(axis=0)
    spread = float(values[:train_end].std()) or 1.0
    items = windows((values - mean) / spread, labels.astype(np.int64), HISTORY,
                    where=f"{path}:{fields[0]}", scale=1.0)
    coords = {name: [float(v) for v in data[dim].values] for name, dim in
              (("lat", lat), ("lon", lon)) if dim in data.coords}
    return SplitDataset(class_names=["no event", "event"],
                        samples=chronological_splits(items, lookahead=0),
                        source=str(path), modality="field", coords=coords,
                        preprocessing=anomaly_record(
                            fields[0], mean, spread, field.attrs.get("units"),
                            "the training period's mean per grid point (the first 60% of the "
                            "time steps), divided by their standard deviation", mean.shape))
