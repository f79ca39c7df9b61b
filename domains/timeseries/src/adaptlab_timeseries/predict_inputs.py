"""New series to predict (``adaptlab predict RUN --data PATH``), read as ``--data`` reads them
for training: the same readers, the same gap rule (the run's ``max_gap``).

A forecasting run forecasts each series beyond its last observation; the time stamps of the
forecast steps continue the file's own time grid, written as the file writes its stamps
(``2011-01`` after ``2010-12``, ``2011-01-31`` after ``2010-12-31``, ``1971`` after ``1970``).
A classification run classifies each series as training saw them: cut into the run's clips
(the CMIP6 warming demo), or whole (class folders). Series too short for what the model was
trained on are skipped and listed by name, with both lengths; if none is left, the
prediction is refused with the reasons.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptlab.data.series import MAX_GAP_DEFAULT, Series, SeriesWindow
from adaptlab.errors import AdaptlabError
from adaptlab.predict.inputs import NO_LABEL, PredictionInputs
from adaptlab_timeseries.datasets import min_context
from adaptlab_timeseries.readers import (
    TABLE_SUFFIXES,
    Grid,
    ReadLog,
    find_time_column,
    netcdf_columns,
    read_series,
    regular_grid,
)

if TYPE_CHECKING:
    import pandas as pd

    from adaptlab.run_loading import LoadedRun

# How files write time stamps: the first that reproduces a file's own stamp is used for the
# forecast's stamps (none: the period's own label, such as 2011Q1).
_STAMP_FORMATS = ("%Y", "%Y-%m", "%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S",
                  "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y/%m/%d",
                  "%Y/%m", "%m/%d/%Y", "%d/%m/%Y", "%d.%m.%Y", "%Y%m%d", "%Y%m")


def read_prediction_series(path: Path, run: LoadedRun) -> PredictionInputs:
    """The domain's ``predict_reader``: series to forecast or to classify, by the run's task."""
    from adaptlab_timeseries.cases import case_files

    log = ReadLog(skip_refused=True)  # a series the gap rule refuses is listed, not fatal
    max_gap = MAX_GAP_DEFAULT if run.config.max_gap is None else run.config.max_gap
    files = case_files(Path(path)) if Path(path).exists() else None
    if files is not None:
        return _cases_to_classify(path, files, run, max_gap, log)
    series = read_series(path, max_gap=max_gap, log=log,
                         season=getattr(run.config, "season", None))
    if run.data.modality == "series-labelled":
        return _series_to_classify(path, series, run, log.skipped)
    return _series_to_forecast(path, series, run, log.skipped)


def _series_to_forecast(path: Path, series: list[Series], run: LoadedRun,
                        skipped: list[dict[str, str]]) -> PredictionInputs:
    """One window per series, its origin the step after the last observation."""
    horizon = _run_horizon(run)
    samples, names, times = [], [], []
    stamps: dict[str, _FileStamps] = {}
    for item in series:
        needed = min_context(item.season)
        if len(item) < needed:
            skipped.append({"file": item.origin or item.name,
                            "reason": f"{len(item)} steps, fewer than the {needed}-step context "
                                      "the run's forecaster needs"})
            continue
        file = _file_of(item)
        if file not in stamps:
            stamps[file] = _FileStamps.of(Path(file))
        samples.append((SeriesWindow(item, len(item), horizon), NO_LABEL))
        names.append(item.name)
        times.append(stamps[file].after(item, horizon))
    return PredictionInputs(samples=samples, names=names, modality="series-windows",
                            skipped=skipped, source=str(path), details={"times": times})


def _series_to_classify(path: Path, series: list[Series], run: LoadedRun,
                        skipped: list[dict[str, str]]) -> PredictionInputs:
    """Clips of the run's clip length, or whole series no shorter than training's shortest."""
    clip = run.data.preprocessing.get("clip_steps")
    shortest = int(clip or run.data.preprocessing.get("min_steps", 1))
    samples, names = [], []
    for item in series:
        name = _series_label(item)
        if len(item) < shortest:
            what = f"the {shortest}-step clips" if clip else f"its shortest series ({shortest} steps)"
            skipped.append({"file": name, "reason": f"{len(item)} steps, shorter than {what} "
                                                    "the run was trained on"})
            continue
        if not clip:
            samples.append((SeriesWindow(item, len(item), 0), NO_LABEL))
            names.append(name)
            continue
        # Clips aligned on the series' end, so the latest span is always classified.
        stride = int(run.data.preprocessing.get("clip_stride", clip))
        for start in reversed(range(len(item) - clip, -1, -stride)):
            window = SeriesWindow(item, start + clip, 0, start)
            samples.append((window, NO_LABEL))
            names.append(f"{name} {window.describe().rsplit(' ', 1)[-1]}")
    return PredictionInputs(samples=samples, names=names, modality="series-labelled",
                            skipped=skipped, source=str(path))


def _cases_to_classify(path: Path, files: tuple[Path, Path | None], run: LoadedRun,
                       max_gap: int, log: ReadLog) -> PredictionInputs:
    """Case files (.ts, .arff, .npz) to classify: every case of the file (of a pair, the
    test file), joined into one sequence as training joined them; labels, if any, unused."""
    from adaptlab_timeseries.cases import cases_to_series, read_cases

    if run.data.modality != "series-labelled":
        raise AdaptlabError(f"{path}: labelled cases are classified; run {run.run_dir} "
                            "forecasts series")
    read = read_cases(files[1] or files[0], labelled=False)
    cases = read[1] if isinstance(read, tuple) else read
    trained = run.data.preprocessing.get("channels", 1)
    if len(cases.values[0]) != trained:
        raise AdaptlabError(f"{cases.path}: cases have {len(cases.values[0])} channel(s); the "
                            f"run was trained on {trained}")
    series = [item for item, _ in cases_to_series(cases, max_gap, log)]
    return _series_to_classify(path, series, run, log.skipped)


def _run_horizon(run: LoadedRun) -> int:
    """The run's forecast horizon: from data.json, or its data's windows."""
    horizon = run.data.task_options.get("horizon")
    if horizon is None:
        windows = next((items for items in run.data.samples.values() if items), [])
        horizon = windows[0][0].horizon if windows else None
    if horizon is None:
        raise AdaptlabError(f"run {run.run_dir}: its data.json records no forecast horizon")
    return int(horizon)


def _file_of(item: Series) -> str:
    """The file a series was read from (its origin is ``file [column]``)."""
    return (item.origin or item.name).rsplit(" [", 1)[0]


def _series_label(item: Series) -> str:
    """``file:column``, the name a classified series' row carries."""
    file, _, column = (item.origin or item.name).rpartition(" [")
    return f"{file}:{column.rstrip(']')}" if file else item.name


@dataclass
class _FileStamps:
    """How a file writes its time stamps: its grid's frequency, where a stamp falls in its
    period (``offset`` from the period's start, or from its last day when ``at_end``: month-end
    dates) and the text format; continues a series' grid in the same way. Without a format,
    steps are written as period labels (``2011-01``, ``2011Q1``); a fixed-step grid (100 Hz,
    a step index) continues by its step."""

    freq: str | None
    format: str | None = None
    at_end: bool = False
    offset: Any = None  # a pandas Timedelta
    grid: Grid | None = None

    @classmethod
    def of(cls, path: Path) -> _FileStamps:
        """The style of a table's last time stamp; a NetCDF file's times are numbers, so its
        forecast steps get period labels."""
        import pandas as pd

        column = _table_time_column(path)
        times = column.tolist() if column is not None else netcdf_columns(path)[0]
        grid = regular_grid(times, path, column.name if column is not None else "time")[2]
        if grid.kind != "period":
            return cls(None, grid=grid)
        freq = grid.freq
        stamps = pd.to_datetime(column, errors="coerce") if column is not None else None
        if stamps is None or not stamps.notna().any():
            return cls(freq)
        last = int(stamps.argmax())
        stamp, text = stamps.iloc[last], column.iloc[last].strip()
        period = pd.Period(stamp, freq=freq)
        try:
            last_day = period.end_time.floor("D")
        except (ValueError, OverflowError):  # outside pandas' datetime range: period labels
            return cls(freq)
        at_end = bool(last_day > period.start_time and stamp.floor("D") == last_day)
        offset = stamp - (last_day if at_end else period.start_time)
        written = next((f for f in _STAMP_FORMATS if stamp.strftime(f) == text), None)
        return cls(freq, written, at_end, offset)

    def after(self, item: Series, steps: int) -> list[str]:
        """The ``steps`` time stamps after the series' last one, or step numbers continuing
        its index when it has none."""
        import pandas as pd

        if not item.times:
            return [str(len(item) + step) for step in range(steps)]
        if self.grid is not None:
            return self.grid.after(item.times[-1], steps)
        last = pd.Period(item.times[-1], freq=self.freq)
        return [self._write(last + step) for step in range(1, steps + 1)]

    def _write(self, period) -> str:
        if self.format is None:
            return str(period)
        base = period.end_time.floor("D") if self.at_end else period.start_time
        return min(base + self.offset, period.end_time).strftime(self.format)


def _table_time_column(path: Path) -> pd.Series | None:
    """A table's time column as text (the column the readers take as time), or None for a
    file that is not a table."""
    import pandas as pd

    name = path.name.lower()
    if not name.endswith(TABLE_SUFFIXES):
        return None
    if name.endswith((".parquet", ".pq")):
        frame = pd.read_parquet(path)
    else:
        # The header first: the time column alone is read as text, as the readers read it.
        columns = pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",", nrows=0).columns
        frame = pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",",
                            usecols=[find_time_column(columns)] if find_time_column(columns)
                            is not None else [], dtype=str)
    column = find_time_column(frame.columns)
    return frame[column].astype(str) if column is not None else None
