"""The climate-scenario demo: next year's surface air temperature map from the last three
years' maps, over North America (15-60N, 225-315E, 37 x 49 cells), in the Met Office Unified
Model's A1B scenario (the source, 1860-2099) and its E1 scenario (the target).

Both runs share their history up to 1999, then A1B warms by about 5.2 K and E1 by 2.5 K by
the 2090s, so the target uses E1's own years only (2000-2099: about 95 samples, scarce) and
a model trained on A1B has learnt a faster warming than the target has. Fields are anomalies
from the 1860-1899 mean per grid point (the same reference for both: they share it), in K.
Splits are chronological with a gap as long as a window plus the lead, so no year feeds
both training and testing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adaptlab.data.fields import check_field
from adaptlab.data.splits import SplitDataset
from adaptlab.errors import AdaptlabError
from adaptlab_weather import HISTORY
from adaptlab_weather.datasets import anomaly_record
from adaptlab_weather.readers import LAT_NAMES, LON_NAMES, grid_dim, open_fields

VARIABLE = "air_temperature"
REFERENCE_YEARS = (1860, 1899)


def sample_file(name: str) -> Path:
    import iris_sample_data

    return Path(iris_sample_data.__file__).parent / "sample_data" / name


def _years(time, path: Path, name: str) -> np.ndarray:
    """Calendar years of a decoded time axis (numpy datetimes or cftime dates, whatever the
    model calendar)."""
    if np.issubdtype(time.dtype, np.datetime64):
        return time.astype("datetime64[Y]").astype(int) + 1970
    if len(time) and hasattr(time[0], "year"):
        return np.array([t.year for t in time])
    raise AdaptlabError(f"{path}: time coordinate {name!r} holds {time.dtype} values, not "
                        "dates (CF units such as 'days since 1860-01-01' decode to dates)")


def read_scenario(path: str | Path, variable: str = VARIABLE):
    """``(years, fields (year, lat, lon) float32, {"lat", "lon"})`` from a NetCDF file or Zarr
    store, with errors naming the file, the variable and what is missing."""
    path = Path(path)
    data = open_fields(path)
    if variable not in data.data_vars:
        raise AdaptlabError(f"{path}: no variable {variable!r}; variables: "
                            f"{sorted(str(v) for v in data.data_vars)}")
    lat = grid_dim(data[variable], LAT_NAMES, "latitude", path, variable)
    lon = grid_dim(data[variable], LON_NAMES, "longitude", path, variable)
    field = data[variable].transpose(..., lat, lon)
    if field.ndim != 3:
        raise AdaptlabError(f"{path}: variable {variable!r} has dims {list(field.dims)}; "
                            "expected (time, latitude, longitude)")
    values = np.asarray(field.values, dtype=np.float32)
    if not np.isfinite(values).all():
        t, i, j = np.argwhere(~np.isfinite(values))[0].tolist()
        raise AdaptlabError(f"{path}: variable {variable!r} is NaN at time index {t}, "
                            f"{lat} {float(data[lat][i]):g}, {lon} {float(data[lon][j]):g}")
    years = _years(field[field.dims[0]].values, path, str(field.dims[0]))
    coords = {"lat": [float(v) for v in data[lat].values],
              "lon": [float(v) for v in data[lon].values]}
    return years, values, coords


def windows(years, anomalies, first_year: int, lead: int = 1):
    """``(input (HISTORY, lat, lon), target (1, lat, lon))`` for every year whose window
    and target fall in the series, the target ``lead`` years after the window's end."""
    items = []
    for end in range(HISTORY - 1, len(years) - lead):
        if years[end - HISTORY + 1] < first_year:
            continue
        window = check_field(anomalies[end - HISTORY + 1:end + 1], f"year {years[end]}")
        items.append((window, anomalies[end + lead][None].astype(np.float32)))
    return items


def chronological(items, fractions=(0.6, 0.2), gap: int = HISTORY + 1):
    n = len(items)
    train_end, val_end = int(n * fractions[0]), int(n * (fractions[0] + fractions[1]))
    return {"train": items[:train_end], "val": items[train_end + gap:val_end],
            "test": items[val_end + gap:]}


def _scenario(name: str, first_year: int, source: str) -> SplitDataset:
    path = sample_file(f"{name}_north_america.nc")
    years, fields, coords = read_scenario(path)
    reference = (years >= REFERENCE_YEARS[0]) & (years <= REFERENCE_YEARS[1])
    climatology = fields[reference].mean(axis=0)
    anomalies = fields - climatology[None]
    items = windows(years, anomalies, first_year)
    period = f"{REFERENCE_YEARS[0]}-{REFERENCE_YEARS[1]}"
    # The target shape lets a run be rebuilt from data.json alone, without these files.
    record = anomaly_record(VARIABLE, climatology, 1.0, "K",
                            f"the {period} mean per grid point", climatology.shape,
                            lead=1, target_shape=[1, *climatology.shape])
    return SplitDataset(class_names=["air temperature anomaly (K)"],
                        samples=chronological(items), source=source, modality="field",
                        task="field-regression", coords=coords,
                        task_options={"residual_channel": HISTORY - 1}, preprocessing=record)


def scenario_a1b(options: dict) -> SplitDataset:
    """A1B, 1860-2099: 236 samples (the source)."""
    return _scenario("A1B", 1860, "Met Office UM, scenario A1B, 1860-2099")


def scenario_e1(options: dict) -> SplitDataset:
    """E1 from 2000 (where it leaves A1B): 96 samples (the target)."""
    return _scenario("E1", 2000, "Met Office UM, scenario E1, 2000-2099")
