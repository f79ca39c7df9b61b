"""Series in the formats users have: CSV or Parquet tables with a time column and value
columns (pandas), NetCDF variables with a time dimension (xarray), or a folder of them.

Every series lands on a regular grid (missing time stamps become missing values), then the
gap rule of :func:`adaptlab.data.series.apply_gap_rule` fills short gaps or refuses the file.
Errors name the file, the column and the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adaptlab.data.series import MAX_GAP_DEFAULT, Series, apply_gap_rule
from adaptlab.errors import AdaptlabError

TIME_NAMES = ("time", "date", "datetime", "timestamp", "ds", "month", "year")
TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".parquet", ".pq")
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")
# (pandas period frequency, steps in one seasonal cycle) by median spacing in days
_FREQUENCIES = ((0.9 / 24, 1.1 / 24, "h", 24), (0.9, 1.1, "D", 7), (6.5, 7.5, "W", 52),
                (27.5, 31.5, "M", 12), (88, 93, "Q", 4), (364, 367, "Y", 1))
# netCDF's default float fill value: files that store it without a _FillValue attribute
# would otherwise pass it through xarray's masking as a temperature of 1e37.
NETCDF_DEFAULT_FILL = 9.9e36
_SPATIAL_DIMS = ("lat", "latitude", "lon", "longitude", "x", "y", "rlat", "rlon")


@dataclass
class ReadLog:
    """What reading did besides returning series: gap-filling notes, and (when ``skip_refused``)
    series the gap rule refused, each named with its reason instead of failing the read."""

    skip_refused: bool = False
    notes: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def regular_grid(times, path: Path, column: str):
    """Times -> (pandas PeriodIndex of the whole span, periods of the given rows, season)."""
    import pandas as pd

    stamps = pd.to_datetime(pd.Series(times), errors="coerce")
    bad = stamps.isna()
    if bad.any():
        raise AdaptlabError(f"{path}: column {column!r} value {times[int(bad.idxmax())]!r} is "
                            "not a date or time")
    spacing = np.median(np.diff(np.sort(stamps.to_numpy()))) / np.timedelta64(1, "D") \
        if len(stamps) > 1 else 0.0
    match = next(((freq, season) for low, high, freq, season in _FREQUENCIES
                  if low <= spacing <= high), None)
    if match is None:
        raise AdaptlabError(f"{path}: time column {column!r} has a median spacing of "
                            f"{spacing:.3g} days; hourly, daily, weekly, monthly, quarterly "
                            "or yearly data is supported")
    freq, season = match
    periods = pd.PeriodIndex(stamps, freq=freq)
    duplicated = periods.duplicated()
    if duplicated.any():
        raise AdaptlabError(f"{path}: time {periods[int(np.argmax(duplicated))]} appears twice "
                            f"in column {column!r}")
    full = pd.period_range(periods.min(), periods.max(), freq=freq)
    return full, periods, season


def _series_from_columns(path: Path, full, periods, season: int, columns: dict[str, np.ndarray],
                         max_gap: int, log: ReadLog | None) -> list[Series]:
    position = {period: i for i, period in enumerate(full)}
    rows = np.array([position[p] for p in periods])
    labels = tuple(str(p) for p in full)
    out = []
    for name, raw in columns.items():
        values = np.full(len(full), np.nan)
        values[rows] = raw
        try:
            filled, first, report = apply_gap_rule(values, f"{path}: column {name!r}", max_gap,
                                                   labels)
        except AdaptlabError as exc:
            if log is None or not log.skip_refused:
                raise
            log.skipped.append({"file": f"{path} [{name}]", "reason": str(exc)})
            continue
        if log is not None:
            log.notes += report.notes
        out.append(Series(name=name, values=filled, season=season,
                          times=labels[first:first + len(filled)], origin=f"{path} [{name}]"))
    return out


def read_table(path: Path, time_column: str | None = None, max_gap: int = MAX_GAP_DEFAULT,
               log: ReadLog | None = None) -> list[Series]:
    """A CSV/TSV/Parquet table: one series per numeric value column."""
    import pandas as pd

    path = Path(path)
    try:
        if path.name.endswith((".parquet", ".pq")):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="\t" if path.name.endswith(".tsv") else ",")
    except Exception as exc:  # pandas and pyarrow raise many types for a damaged file
        raise AdaptlabError(f"{path}: cannot read as a table ({type(exc).__name__}: {exc})") from exc
    if frame.empty:
        raise AdaptlabError(f"{path}: the table has no rows")
    time_column = time_column or next(
        (c for c in frame.columns if str(c).strip().lower() in TIME_NAMES), None)
    if time_column is None or time_column not in frame.columns:
        raise AdaptlabError(f"{path}: no time column (looked for {list(TIME_NAMES)}; columns "
                            f"are {[str(c) for c in frame.columns][:8]})")
    columns = {}
    for column in frame.columns:
        if column == time_column:
            continue
        numeric = pd.to_numeric(frame[column], errors="coerce")
        broken = numeric.isna() & frame[column].notna()
        if broken.any():
            row = int(np.argmax(broken.to_numpy()))
            raise AdaptlabError(f"{path}: column {column!r} row {row + 1} holds "
                                f"{frame[column].iloc[row]!r}, not a number")
        columns[str(column)] = numeric.to_numpy(dtype=np.float64)
    if not columns:
        raise AdaptlabError(f"{path}: no value column besides the time column {time_column!r}")
    full, periods, season = regular_grid(frame[time_column].astype(str).tolist(), path,
                                         str(time_column))
    return _series_from_columns(path, full, periods, season, columns, max_gap,
                                log)


def netcdf_columns(path: Path, variable: str | None = None
                   ) -> tuple[list[str], dict[str, np.ndarray]]:
    """(ISO times, {series name: raw values with NaN}) of a NetCDF variable with a ``time``
    dimension. Latitude/longitude are averaged (weighted by cos(latitude), so a grid box
    counts by its area); every other dimension (pressure level, station, member) gives one
    series per value."""
    import xarray as xr

    path = Path(path)
    try:
        dataset = xr.open_dataset(path, engine="h5netcdf",
                                  decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
    except Exception as exc:  # h5py/xarray raise OSError, ValueError, KeyError...
        raise AdaptlabError(f"{path}: cannot read as NetCDF4 ({type(exc).__name__}: {exc})") from exc
    with dataset:
        candidates = [name for name, var in dataset.data_vars.items()
                      if "time" in var.dims and not name.endswith("_bnds")]
        variable = variable or (candidates[0] if len(candidates) == 1 else None)
        if variable is None or variable not in dataset.data_vars:
            raise AdaptlabError(f"{path}: choose a variable with a time dimension among "
                                f"{candidates}")
        data = dataset[variable]
        data = data.where(np.abs(data) < NETCDF_DEFAULT_FILL)  # before averaging over cells
        spatial = [d for d in data.dims if d in _SPATIAL_DIMS]
        lat = next((d for d in spatial if d in ("lat", "latitude")), None)
        if lat is not None:
            weights = np.cos(np.deg2rad(data[lat]))
            data = data.weighted(weights).mean(dim=spatial)
        elif spatial:
            data = data.mean(dim=spatial)
        times = [_standard_time(t) for t in data["time"].values]
        others = [d for d in data.dims if d != "time"]
        stacked = data.transpose("time", *others).values.reshape(len(times), -1)
        names = _column_names(variable, data, others)
        return times, {name: stacked[:, i].astype(np.float64) for i, name in enumerate(names)}


def read_netcdf(path: Path, variable: str | None = None, max_gap: int = MAX_GAP_DEFAULT,
                log: ReadLog | None = None) -> list[Series]:
    """A NetCDF variable as series on a regular grid, after the gap rule."""
    times, columns = netcdf_columns(Path(path), variable)
    full, periods, season = regular_grid(times, Path(path), "time")
    return _series_from_columns(Path(path), full, periods, season, columns, max_gap,
                                log)


def _standard_time(stamp) -> str:
    """A cftime date (any model calendar) as a standard-calendar ISO string. A 360-day
    calendar's 29/30 February become 28 February: monthly and coarser data keep their order;
    daily data from such a calendar is refused as duplicated times."""
    day = min(stamp.day, 28) if stamp.month == 2 else stamp.day
    return f"{stamp.year:04d}-{stamp.month:02d}-{day:02d}T{stamp.hour:02d}:{stamp.minute:02d}"


def _column_names(variable: str, data, dims: list[str]) -> list[str]:
    if not dims:
        return [variable]
    grids = np.meshgrid(*[data[d].values for d in dims], indexing="ij")
    return [variable + "".join(f"_{d}{value:g}" if np.issubdtype(type(value), np.number)
                               else f"_{d}{value}" for d, value in zip(dims, combo, strict=True))
            for combo in zip(*(g.ravel() for g in grids), strict=True)]


def read_series_file(path: Path, max_gap: int = MAX_GAP_DEFAULT,
                     log: ReadLog | None = None) -> list[Series]:
    name = Path(path).name.lower()
    if name.endswith(TABLE_SUFFIXES):
        return read_table(Path(path), max_gap=max_gap, log=log)
    if name.endswith(NETCDF_SUFFIXES):
        return read_netcdf(Path(path), max_gap=max_gap, log=log)
    raise AdaptlabError(f"{path}: not a series file (expected one of "
                        f"{TABLE_SUFFIXES + NETCDF_SUFFIXES})")


def read_series(path: str | Path, max_gap: int = MAX_GAP_DEFAULT,
                log: ReadLog | None = None) -> list[Series]:
    """A file, or every series file in a folder (names made unique by file stem)."""
    path = Path(path)
    if not path.exists():
        raise AdaptlabError(f"{path}: no such file or folder")
    if path.is_file():
        return read_series_file(path, max_gap, log)
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(
        TABLE_SUFFIXES + NETCDF_SUFFIXES))
    if not files:
        raise AdaptlabError(f"{path}: the folder holds no CSV, Parquet or NetCDF file")
    out = []
    for file in files:
        for item in read_series_file(file, max_gap, log):
            out.append(Series(f"{file.stem}/{item.name}", item.values, item.season, item.times,
                              item.origin))
    return out
