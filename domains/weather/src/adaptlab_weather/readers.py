"""Your own fields with an event label, as xarray reads them: NetCDF (h5netcdf) or Zarr.

The file holds one field variable over (time, lat, lon), e.g. 500 hPa height, and a variable
``label`` over time (1 where the event holds: a blocking day that persists, a heatwave
onset). Fields become anomalies: the training period's mean per grid point is removed and
the result divided by the training period's standard deviation, so the units do not matter.
Samples are windows of the last days, split chronologically as the demo is.

``label`` may instead be a (time, lat, lon) field of the same quantity (the next step's
field, say): the task is then field regression, the target standardised as the inputs are
and the model predicting the change from the window's last step. Cells NaN at every time
step (sea-surface temperature over land) are a mask (:mod:`adaptlab_weather.masks`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adaptlab.data.fields import check_field
from adaptlab.data.splits import SplitDataset
from adaptlab.errors import AdaptlabError
from adaptlab_weather.datasets import HISTORY, anomaly_record, chronological_splits, windows
from adaptlab_weather.masks import fixed_mask, mask_note, mask_record, with_valid_channel

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


def _time_dim(field, lat: str, lon: str) -> str | None:
    return next((d for d in field.dims if d not in (lat, lon)), None)


def read_event_fields(path: str | Path, seed: int = 0, **_: object) -> SplitDataset:
    path = Path(path)
    data = open_fields(path)
    names = sorted(str(name) for name in data.data_vars)
    if "label" not in data.data_vars:
        raise AdaptlabError(f"{path}: no variable 'label' (1 where the event holds, per time "
                            "step, or the field to predict at each time step); variables: "
                            f"{names}")
    fields = [name for name in names if name != "label" and data[name].ndim == 3]
    if len(fields) != 1:
        raise AdaptlabError(f"{path}: needs exactly one (time, lat, lon) field variable besides "
                            f"'label', found {fields or 'none'} among {names}")
    field = data[fields[0]]
    lat = grid_dim(field, LAT_NAMES, "latitude", path, fields[0])
    lon = grid_dim(field, LON_NAMES, "longitude", path, fields[0])
    time = _time_dim(field, lat, lon)
    dims = (time, lat, lon)
    values = np.asarray(field.transpose(*dims).values, dtype=np.float64)
    masked = fixed_mask(values, path, fields[0], dims)
    field_target = data["label"].ndim == 3
    if field_target:
        labels = np.asarray(data["label"].transpose(*dims).values, dtype=np.float64)
        if labels.shape != values.shape:
            raise AdaptlabError(f"{path}: 'label' has shape {labels.shape}, the field "
                                f"{values.shape}")
        label_masked = fixed_mask(labels, path, "label", dims)
        if label_masked is not None:
            masked = label_masked if masked is None else masked | label_masked
    else:
        labels = np.asarray(data["label"].values)
        if labels.shape != (values.shape[0],):
            raise AdaptlabError(f"{path}: 'label' has shape {labels.shape}, the field has "
                                f"{values.shape[0]} time steps")
        if not np.isin(labels, (0, 1)).all():
            raise AdaptlabError(f"{path}: 'label' holds {sorted(set(labels.tolist()))[:5]}; "
                                "use 0 and 1")
    train_end = int(len(values) * 0.6)
    train = values[:train_end]
    if masked is not None:
        train = np.where(masked, 0.0, train)  # a masked cell's climatology is 0, not NaN
    mean = train.mean(axis=0)
    spread = float(train[:, ~masked].std() if masked is not None else train.std()) or 1.0

    def standardised(array):
        # Masked cells become the neutral anomaly 0: no NaN reaches the model.
        return np.nan_to_num((array - mean) / spread) if masked is not None \
            else (array - mean) / spread

    valid = None if masked is None else ~masked
    anomalies = standardised(values)
    where = f"{path}:{fields[0]}"
    if field_target:
        targets = standardised(labels).astype(np.float32)
        items = [(with_valid_channel(check_field(anomalies[t - HISTORY + 1:t + 1],
                                                 f"{where}, step {t}"), valid), targets[t][None])
                 for t in range(HISTORY - 1, len(anomalies))]
    else:
        items = [(with_valid_channel(window, valid), label) for window, label in
                 windows(anomalies, labels.astype(np.int64), HISTORY, where=where, scale=1.0)]
    coords = {name: [float(v) for v in data[dim].values] for name, dim in
              (("lat", lat), ("lon", lon)) if dim in data.coords}
    extra, task_options, notes = {}, {}, []
    if field_target:
        # The label is the field's own quantity (a later step's): the model predicts the change.
        extra["target_shape"] = [1, *values.shape[1:]]
        task_options["residual_channel"] = -1
    if masked is not None:
        extra["mask"] = mask_record(masked, fields[0])
        task_options.update(valid_cells=valid.tolist(), in_channels=HISTORY + 1)
        notes.append(mask_note(extra["mask"], masked.size))
    return SplitDataset(class_names=[f"{fields[0]} (label)"] if field_target
                        else ["no event", "event"],
                        samples=chronological_splits(items, lookahead=int(field_target)),
                        source=str(path), modality="field", coords=coords, notes=notes,
                        task="field-regression" if field_target else "classification",
                        task_options=task_options,
                        preprocessing=anomaly_record(
                            fields[0], mean, spread, field.attrs.get("units"),
                            "the training period's mean per grid point (the first 60% of the "
                            "time steps), divided by their standard deviation", mean.shape,
                            **extra))
