"""Series in the formats users have: CSV or Parquet tables with a time column and value
columns (pandas), NetCDF variables with a time dimension (xarray), or a folder of them.

Every series lands on a regular grid (missing time stamps become missing values), then the
gap rule of :func:`adaptlab.data.series.apply_gap_rule` fills short gaps or refuses the file.
Errors name the file, the column and the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.data.series import MAX_GAP_DEFAULT, Series, apply_gap_rule
from adaptlab.errors import AdaptlabError

TIME_NAMES = ("time", "date", "datetime", "timestamp", "ds", "month", "year")
# A column of these names is a plain position (a step index, seconds since the start of a
# recording), never a calendar date: 1990 in a "step" column is step 1990, not a year.
STEP_NAMES = ("step", "index", "idx", "sample", "tick", "t", "seconds", "elapsed")
TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".parquet", ".pq")
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")
# (pandas period frequency, steps in one seasonal cycle, spacing, cycle) by median spacing
# in days. Calendar periods absorb months of 28-31 days; other spacings get a fixed step.
_FREQUENCIES = ((0.9 / 24, 1.1 / 24, "h", 24, "hourly", "a day"),
                (0.9, 1.1, "D", 7, "daily", "a week"), (6.5, 7.5, "W", 52, "weekly", "a year"),
                (27.5, 31.5, "M", 12, "monthly", "a year"),
                (88, 93, "Q", 4, "quarterly", "a year"), (364, 367, "Y", 1, "yearly", None))
# A daily cycle inferred for sub-daily fixed steps only while four cycles (the shortest
# context a window gets) fit in the forecaster's 2048-step context: 10-minute data gets
# 144 steps, 100 Hz data none.
MAX_INFERRED_SEASON = 512
# A time stamp further than this fraction of a step from the grid is not jitter.
_GRID_TOLERANCE = 0.25
# netCDF's default float fill value: files that store it without a _FillValue attribute
# would otherwise pass it through xarray's masking as a temperature of 1e37.
NETCDF_DEFAULT_FILL = 9.9e36
_SPATIAL_DIMS = ("lat", "latitude", "lon", "longitude", "x", "y", "rlat", "rlon")


@dataclass
class ReadLog:
    """What reading did besides returning series: gap-filling notes, and (when ``skip_refused``)
    series the gap rule refused, each named with its reason instead of failing the read.
    ``seasons`` gathers, per spacing and season, the files read with them."""

    skip_refused: bool = False
    notes: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    seasons: dict[str, list[str]] = field(default_factory=dict)

    def season_notes(self) -> list[str]:
        """One line per spacing: the season seasonal naive and MASE use, and its files."""
        out = []
        for text, files in self.seasons.items():
            named = ", ".join(Path(f).name for f in files[:4])
            more = f" and {len(files) - 4} more" if len(files) > 4 else ""
            out.append(f"{text} ({named}{more})")
        return out


@dataclass(frozen=True)
class Grid:
    """The regular grid a file's time stamps lie on: calendar periods (``freq``), a fixed
    clock step (``step``, a pandas Timedelta) or a plain numeric step (``step``, a float),
    with the season the file's series get and words for the data notes."""

    kind: str  # "period", "clock" or "number"
    season: int
    spacing: str
    freq: str | None = None
    step: Any = None
    cycle: str | None = None  # "a day": what one season spans
    set_by_user: bool = False

    def note(self) -> str:
        if self.set_by_user:
            why = f"season={self.season} as set"
        elif self.season > 1:
            why = f"{self.cycle}, inferred from the spacing"
        else:
            why = "no cycle inferred; --set season=N gives one"
        baseline = ("the last value (season 1)" if self.season == 1
                    else f"the value {self.season} steps earlier")
        return f"{self.spacing} spacing: seasonal naive and MASE repeat {baseline}: {why}"

    def label(self, position: float) -> str:
        """The text of a fixed-step grid's position (``position`` steps after its origin)."""
        if self.kind == "number":
            return f"{self.step[0] + position * self.step[1]:.10g}"
        origin, step, fmt = self.step
        return (origin + step * position).strftime(fmt)

    def after(self, last: str, steps: int) -> list[str]:
        """Labels of the ``steps`` positions after the label ``last`` of a fixed-step grid."""
        if self.kind == "number":
            base = (float(last) - self.step[0]) / self.step[1]
        else:
            import pandas as pd

            base = (pd.Timestamp(last) - self.step[0]) / self.step[1]
        return [self.label(round(base) + k) for k in range(1, steps + 1)]


def find_time_column(columns) -> Any:
    """The table column read as time: a calendar name first, then a step name."""
    for names in (TIME_NAMES, STEP_NAMES):
        found = next((c for c in columns if str(c).strip().lower() in names), None)
        if found is not None:
            return found
    return None


def regular_grid(times, path: Path, column: str, season: int | None = None
                 ) -> tuple[tuple[str, ...], np.ndarray, Grid]:
    """Times -> (labels of the whole span's grid, grid position of each given row, grid).

    Dates at an hourly..yearly spacing become calendar periods; other regular spacings of
    dates (100 Hz, 10 minutes, 2 days) and numbers (a step index, seconds) a fixed step.
    ``season`` (``--set season=N``) replaces the season the spacing implies."""
    import pandas as pd

    texts = pd.Series([str(t).strip() for t in times])
    numbers = pd.to_numeric(texts, errors="coerce")
    # Whole numbers of 4, 6 or 8 digits may be dates (1871, 202001, 20200101): as before.
    date_like = texts.str.fullmatch(r"\d{4}|\d{6}|\d{8}").all()
    stamps = pd.to_datetime(texts, errors="coerce") if date_like or numbers.isna().any() \
        else None
    if str(column).strip().lower() in STEP_NAMES or (numbers.notna().all() and (
            stamps is None or stamps.isna().any())):
        bad = numbers.isna()
        if bad.any():
            raise AdaptlabError(f"{path}: column {column!r} value {texts[int(bad.idxmax())]!r} "
                                "is not a number (a step column holds positions)")
        labels, rows, grid = _fixed_grid(numbers.to_numpy(np.float64), path, column, "number")
    else:
        bad = stamps.isna()
        if bad.any():
            raise AdaptlabError(f"{path}: column {column!r} value {texts[int(bad.idxmax())]!r} "
                                "is not a date or time")
        labels, rows, grid = _calendar_grid(stamps, path, column)
    if season is not None:
        grid = replace(grid, season=int(season), set_by_user=True)
    return labels, rows, grid


def _calendar_grid(stamps, path: Path, column: str):
    import pandas as pd

    spacing = np.median(np.diff(np.sort(stamps.to_numpy()))) / np.timedelta64(1, "D") \
        if len(stamps) > 1 else 0.0
    match = next((row for row in _FREQUENCIES if row[0] <= spacing <= row[1]), None)
    if match is None:
        return _fixed_grid(stamps, path, column, "clock")
    _, _, freq, season, words, cycle = match
    periods = pd.PeriodIndex(stamps, freq=freq)
    duplicated = periods.duplicated()
    if duplicated.any():
        raise AdaptlabError(f"{path}: time {periods[int(np.argmax(duplicated))]} appears twice "
                            f"in column {column!r}")
    full = pd.period_range(periods.min(), periods.max(), freq=freq)
    position = {period: i for i, period in enumerate(full)}
    rows = np.array([position[p] for p in periods])
    return (tuple(str(p) for p in full), rows,
            Grid("period", season, words, freq=freq, cycle=cycle))


def _fixed_grid(values, path: Path, column: str, kind: str):
    """A grid of one fixed step, the median spacing: stamps may jitter by a quarter step."""
    import pandas as pd

    if len(values) < 2:
        raise AdaptlabError(f"{path}: column {column!r} has one time stamp; a series needs "
                            "at least two to have a spacing")
    if kind == "clock":
        ordered = np.sort(values.to_numpy())
        step = pd.Timedelta(np.median(np.diff(ordered))).round("us")
        origin = pd.Timestamp(ordered[0])
    else:
        ordered = np.sort(values)
        step = float(np.median(np.diff(ordered)))
        origin = float(ordered[0])
    if not step > (pd.Timedelta(0) if kind == "clock" else 0):
        raise AdaptlabError(f"{path}: column {column!r} repeats most of its time stamps; "
                            "its spacing is zero")
    offsets = (values - origin) / step
    offsets = np.asarray(offsets, dtype=np.float64)
    rows = np.rint(offsets).astype(np.int64)
    off = np.abs(offsets - rows) > _GRID_TOLERANCE
    if off.any():
        raise AdaptlabError(f"{path}: column {column!r} value "
                            f"{_text(values, int(np.argmax(off)))!r} lies off the regular "
                            f"spacing of {_describe_step(step)} (the median); resample the "
                            "series to one spacing")
    if rows.max() + 1 > 100 * len(rows):
        raise AdaptlabError(f"{path}: column {column!r} spans {rows.max() + 1} steps of "
                            f"{_describe_step(step)} for {len(rows)} rows; it is not one "
                            "regular series")
    seen = np.zeros(rows.max() + 1, dtype=bool)
    for i, row in enumerate(rows):
        if seen[row]:
            raise AdaptlabError(f"{path}: time {_text(values, i)} appears twice in column "
                                f"{column!r} (at a step of {_describe_step(step)})")
        seen[row] = True
    if kind == "number":
        grid = Grid("number", 1, f"a step of {step:g} in column {column!r}",
                    step=(origin, step))
    else:
        season, words, cycle = _clock_season(step)
        grid = Grid("clock", season, words, cycle=cycle, step=(origin, step, _clock_format(step)))
    return tuple(grid.label(k) for k in range(rows.max() + 1)), rows, grid


def _clock_season(step) -> tuple[int, str, str | None]:
    """(season, spacing words, cycle): a day when a whole number of steps make one."""
    import pandas as pd

    day = pd.Timedelta(days=1)
    per_day = day / step
    if step < day and float(per_day).is_integer() and per_day <= MAX_INFERRED_SEASON:
        return int(per_day), _describe_step(step), "a day"
    return 1, _describe_step(step), None


def _clock_format(step) -> str:
    import pandas as pd

    for unit, fmt in ((pd.Timedelta(days=1), "%Y-%m-%d"), (pd.Timedelta(minutes=1),
                      "%Y-%m-%dT%H:%M"), (pd.Timedelta(seconds=1), "%Y-%m-%dT%H:%M:%S")):
        if step % unit == pd.Timedelta(0):
            return fmt
    return "%Y-%m-%dT%H:%M:%S.%f"


def _describe_step(step) -> str:
    if isinstance(step, float):
        return f"{step:g}"
    seconds = step.total_seconds()
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"),
                       (1e-3, "millisecond")):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}-{unit}"
    return f"{seconds:g}-second"


def _text(values, i: int) -> str:
    return str(values.iloc[i]) if hasattr(values, "iloc") else f"{values[i]:g}"


def _series_from_columns(path: Path, labels: tuple[str, ...], rows: np.ndarray, grid: Grid,
                         columns: dict[str, np.ndarray], max_gap: int,
                         log: ReadLog | None) -> list[Series]:
    out = []
    for name, raw in columns.items():
        values = np.full(len(labels), np.nan)
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
        out.append(Series(name=name, values=filled, season=grid.season,
                          times=labels[first:first + len(filled)], origin=f"{path} [{name}]"))
    if log is not None and out:
        log.seasons.setdefault(grid.note(), []).append(str(path))
    return out


def read_table(path: Path, time_column: str | None = None, max_gap: int = MAX_GAP_DEFAULT,
               log: ReadLog | None = None, season: int | None = None) -> list[Series]:
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
    time_column = time_column or find_time_column(frame.columns)
    if time_column is None or time_column not in frame.columns:
        raise AdaptlabError(f"{path}: no time column (looked for "
                            f"{list(TIME_NAMES + STEP_NAMES)}; columns "
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
    labels, rows, grid = regular_grid(frame[time_column].astype(str).tolist(), path,
                                      str(time_column), season)
    return _series_from_columns(path, labels, rows, grid, columns, max_gap, log)


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
                log: ReadLog | None = None, season: int | None = None) -> list[Series]:
    """A NetCDF variable as series on a regular grid, after the gap rule."""
    times, columns = netcdf_columns(Path(path), variable)
    labels, rows, grid = regular_grid(times, Path(path), "time", season)
    return _series_from_columns(Path(path), labels, rows, grid, columns, max_gap, log)


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


def read_series_file(path: Path, max_gap: int = MAX_GAP_DEFAULT, log: ReadLog | None = None,
                     season: int | None = None) -> list[Series]:
    name = Path(path).name.lower()
    if name.endswith(TABLE_SUFFIXES):
        return read_table(Path(path), max_gap=max_gap, log=log, season=season)
    if name.endswith(NETCDF_SUFFIXES):
        return read_netcdf(Path(path), max_gap=max_gap, log=log, season=season)
    raise AdaptlabError(f"{path}: not a series file (expected one of "
                        f"{TABLE_SUFFIXES + NETCDF_SUFFIXES})")


def read_series(path: str | Path, max_gap: int = MAX_GAP_DEFAULT, log: ReadLog | None = None,
                season: int | None = None) -> list[Series]:
    """A file, or every series file in a folder (names made unique by file stem).
    ``season`` replaces the season each file's spacing implies."""
    path = Path(path)
    if not path.exists():
        raise AdaptlabError(f"{path}: no such file or folder")
    if path.is_file():
        return read_series_file(path, max_gap, log, season)
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(
        TABLE_SUFFIXES + NETCDF_SUFFIXES))
    if not files:
        raise AdaptlabError(f"{path}: the folder holds no CSV, Parquet or NetCDF file")
    out = []
    for file in files:
        for item in read_series_file(file, max_gap, log, season):
            out.append(Series(f"{file.stem}/{item.name}", item.values, item.season, item.times,
                              item.origin))
    return out
