"""The embedded CMIP6 demo and the walk-forward split of user series.

Demo: monthly Arctic air temperature (1000 and 925 hPa) from 41 CMIP6 climate models. The
target is one held-out model (MIROC6): its last five years are the test span, the five before
them validation. Training windows come from every other model (the source domain) and from the
target's own earlier years, and none of them forecasts a month that falls inside the held-out
spans (the cut is the same calendar month for every model, since all end in 2014-12).

Series classification demo (detection of the forced warming): is a 20-year record of Arctic
temperature from the early industrial period (1850-1899) or from the recent one (1965-2014)?
Only the models whose runs start in 1850 can say; one of them (CanESM5) is the held-out test
model, another (NorCPM1) the validation model, and clips never cross models between splits.
Inputs are min-max scaled per clip, so the absolute warming is hidden: the trend within a
clip and the shape of its seasonal cycle are what is left to go by.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

from adaptlab.data.series import MAX_GAP_DEFAULT, Series, SeriesWindow, walk_forward_windows
from adaptlab.data.splits import SplitDataset, stratified_split
from adaptlab.errors import AdaptlabError
from adaptlab_timeseries.readers import ReadLog, read_series, read_table

DEMO_FILE = "cmip6_arctic_ta_monthly.csv.gz"
TARGET_MODEL = "MIROC6"
DEMO_HORIZON = 24
HELD_OUT_MONTHS = 60
MIN_CONTEXT_SEASONS = 4  # a window sees at least four seasonal cycles before its origin


def min_context(season: int) -> int:
    """The shortest context a training window sees: a forecast needs at least as much."""
    return max(MIN_CONTEXT_SEASONS * season, 16)


def to_split_dataset(series: list[Series], horizon: int, val_steps: int, test_steps: int,
                     log: ReadLog, source: str, eval_names: set[str] | None = None,
                     train_stride: int = 1) -> SplitDataset:
    shortest = min_context(max(s.season for s in series))
    windows = walk_forward_windows(series, horizon, val_steps, test_steps, shortest,
                                   train_stride=train_stride, eval_names=eval_names)
    index = {id(item): i for i, item in enumerate(series)}
    samples = {split: [(w, index[id(w.series)]) for w in items] for split, items in windows.items()}
    return SplitDataset(class_names=[], samples=samples, skipped=log.skipped, source=source,
                        modality="series-windows", task="forecasting", notes=log.notes,
                        task_options={"horizon": horizon})


def load_cmip6_arctic(options: dict) -> SplitDataset:
    horizon = int(options.get("horizon", DEMO_HORIZON))
    log = ReadLog(skip_refused=True)
    series = _demo_series(log, options.get("max_gap"), season=options.get("season"))
    targets = {s.name for s in series if s.name.startswith(TARGET_MODEL + "_")}
    if not targets:
        raise AdaptlabError(f"{DEMO_FILE}: no series of the target model {TARGET_MODEL}")
    # Every sixth month as a training origin: consecutive origins overlap by all but one
    # month, so denser origins add compute, not information.
    return to_split_dataset(series, horizon, HELD_OUT_MONTHS, HELD_OUT_MONTHS, log,
                            source=f"CMIP6 Arctic ta, target {TARGET_MODEL}",
                            eval_names=targets, train_stride=6)


WARMING_PERIODS = {"early (1850-1899)": ("1850-01", "1899-12"),
                   "recent (1965-2014)": ("1965-01", "2014-12")}
WARMING_TARGET, WARMING_VAL = "CanESM5", "NorCPM1"
CLIP_STEPS, CLIP_STRIDE = 240, 12


def _clips(item: Series, first: str, last: str) -> list[SeriesWindow]:
    inside = [i for i, t in enumerate(item.times) if first <= t <= last]
    if len(inside) < CLIP_STEPS:
        return []
    lo, hi = inside[0], inside[-1] + 1
    return [SeriesWindow(item, start + CLIP_STEPS, 0, start)
            for start in range(lo, hi - CLIP_STEPS + 1, CLIP_STRIDE)]


def load_cmip6_warming(options: dict) -> SplitDataset:
    log = ReadLog(skip_refused=True)  # the split is by model: no seed
    samples: dict[str, list] = {"train": [], "val": [], "test": []}
    for item in _demo_series(log, options.get("max_gap")):
        model = item.name.rsplit("_", 1)[0]
        split = "test" if model == WARMING_TARGET else "val" if model == WARMING_VAL else "train"
        per_class = [_clips(item, first, last) for first, last in WARMING_PERIODS.values()]
        if not all(per_class):  # runs that start in 1950 have no early clips: left out
            continue
        for label, clips in enumerate(per_class):
            samples[split] += [(clip, label) for clip in clips]
    return SplitDataset(class_names=list(WARMING_PERIODS), samples=samples, skipped=log.skipped,
                        source=f"CMIP6 Arctic ta, {CLIP_STEPS // 12}-year clips, target "
                               f"{WARMING_TARGET}", modality="series-labelled",
                        notes=log.notes,
                        # New series are cut into the same clips to be classified.
                        preprocessing={"clip_steps": CLIP_STEPS, "clip_stride": CLIP_STRIDE})


def _demo_series(log: ReadLog, max_gap: int | None, name: str = DEMO_FILE,
                 season: int | None = None) -> list[Series]:
    path = resources.files("adaptlab_timeseries") / "demo_data" / name
    with resources.as_file(path) as file:
        return read_table(Path(file), log=log, max_gap=MAX_GAP_DEFAULT if max_gap is None
                          else max_gap, season=season)


# Single-series demos from the statsmodels datasets: (file, default horizon, longest gap the
# gap rule fills). Each series' last 2 x horizon steps are its test span, the 2 x horizon
# before them validation; the years before are its own few-shot training history.
SINGLE_SERIES = {"co2": ("co2_weekly.csv", 26, 4), "elnino": ("elnino_monthly.csv", 12, 0),
                 "sunspots": ("sunspots_yearly.csv", 11, 0), "nile": ("nile_yearly.csv", 10, 0)}


def _single_series(name: str, options: dict) -> SplitDataset:
    file, horizon, max_gap = SINGLE_SERIES[name]
    horizon = int(options.get("horizon", horizon))
    log = ReadLog()
    series = _demo_series(log, options.get("max_gap", max_gap), file,
                          season=options.get("season"))
    return to_split_dataset(series, horizon, 2 * horizon, 2 * horizon, log, source=file)


def load_co2(options: dict) -> SplitDataset:
    return _single_series("co2", options)


def load_elnino(options: dict) -> SplitDataset:
    return _single_series("elnino", options)


def load_sunspots(options: dict) -> SplitDataset:
    return _single_series("sunspots", options)


def load_nile(options: dict) -> SplitDataset:
    return _single_series("nile", options)


def read_labelled_series(root: Path, seed: int, max_gap: int = MAX_GAP_DEFAULT) -> SplitDataset:
    """One sub-folder per class of series files; every series is one sample (its last
    steps, as many as the backbone reads). All series of one file stay in one split."""
    log = ReadLog(skip_refused=True)
    class_names = sorted(p.name for p in root.iterdir() if p.is_dir())
    items, groups = [], []
    for label, name in enumerate(class_names):
        for item in read_series(root / name, max_gap=max_gap, log=log):
            # Named under its class folder: flat/site5.csv and rising/site5.csv are two series.
            item = dataclasses.replace(item, name=f"{name}/{item.name}")
            items.append((SeriesWindow(item, len(item), 0), label))
            groups.append(item.origin.rsplit(" [", 1)[0])
    if len(items) < 2:
        raise AdaptlabError(f"{root}: found {len(items)} usable series in its class folders")
    # The model never saw a shorter series: new ones that are shorter are refused by name.
    shortest = min(len(window.series) for window, _ in items)
    return SplitDataset(class_names=class_names, samples=stratified_split(items, seed=seed,
                                                                          groups=groups),
                        skipped=log.skipped, source=str(root), modality="series-labelled",
                        notes=log.notes, preprocessing={"min_steps": shortest})


def read_case_data(files: tuple[Path, Path | None], seed: int,
                   max_gap: int = MAX_GAP_DEFAULT) -> SplitDataset:
    """Labelled cases (.ts, .arff, .npz): a test file is the test split and a fifth of the
    train file's cases (per class) validation; a lone file is split 60/20/20 per class."""
    from adaptlab_timeseries.cases import cases_to_series, read_cases

    train_file, test_file = files
    log = ReadLog(skip_refused=True)
    read = read_cases(train_file)
    train, test = read if isinstance(read, tuple) else (read, None)
    if test is None and test_file is not None:
        test = read_cases(test_file)
        if isinstance(test, tuple):
            raise AdaptlabError(f"{test_file}: a test file holds X and y, not X_train/X_test")
    classes = train.classes
    channels = {len(case) for part in (train, test) if part for case in part.values}
    if len(channels) > 1:
        raise AdaptlabError(f"{train_file}: cases have {sorted(channels)} channels; train and "
                            "test cases need the same channels")
    labelled = {}
    for part in (train, test):
        if part is None:
            continue
        items = []
        for item, label in cases_to_series(part, max_gap, log):
            if label not in classes:
                raise AdaptlabError(f"{part.path}: {item.origin.rsplit(' [', 1)[-1][:-1]} has "
                                    f"class {label!r}, which the train file {train.path.name} "
                                    f"does not declare ({' '.join(classes)})")
            items.append((SeriesWindow(item, len(item), 0), classes.index(label)))
        labelled[part is test] = items
    if len(labelled.get(False, [])) < 2 or (test is not None and not labelled.get(True)):
        reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in log.skipped[:3])
        raise AdaptlabError(f"{train_file}: too few usable cases ({reasons or 'none read'})")
    if test is None:
        samples = stratified_split(labelled[False], seed=seed)
    else:
        samples = stratified_split(labelled[False], fractions=(0.2, 0.0), seed=seed)
        samples["test"] = labelled[True]
    everything = [window for split in samples.values() for window, _ in split]
    return SplitDataset(class_names=classes, samples=samples, skipped=log.skipped,
                        source=" + ".join(str(f) for f in files if f is not None),
                        modality="series-labelled", notes=log.notes,
                        preprocessing={"min_steps": min(len(w.series) for w in everything),
                                       "channels": channels.pop()})


def long_enough(series: list[Series], horizon: int, held_out: int, log: ReadLog) -> list[Series]:
    """Series that hold a context, a horizon and both held-out spans; the others are skipped
    and listed (as the gap rule's refusals are), so one short file does not stop a folder."""
    context = min_context(max(s.season for s in series))
    needed = context + horizon + 2 * held_out
    kept = []
    for item in series:
        if len(item) >= needed:
            kept.append(item)
            continue
        log.skipped.append({"file": item.origin or item.name,
                            "reason": f"{item.origin or item.name}: {len(item)} steps are too "
                                      f"few for horizon {horizon} with {held_out} validation "
                                      f"and {held_out} test steps and a {context}-step context "
                                      f"(needs {needed}); shorten the horizon or add data"})
    return kept


def read_series_data(path: str, seed: int = 0, horizon: int | None = None,
                     max_gap: int = MAX_GAP_DEFAULT, season: int | None = None) -> SplitDataset:
    """User series (``--data``). UCR/UEA case files (.ts, .arff, .npz; a NAME_TRAIN file with
    its NAME_TEST, or a folder holding them) and folders holding only class sub-folders are
    classification sets (:func:`read_case_data`, :func:`read_labelled_series`). Otherwise a
    CSV/Parquet/NetCDF file or a folder of them is forecast: each series' last
    ``2 * horizon`` steps are the test span and the ``2 * horizon`` before validation, so
    every held-out span holds ``horizon + 1`` forecast origins (the split is by time;
    ``seed`` is unused). Series the gap rule refuses, or too short for the split, are skipped
    and listed while others remain. ``season`` replaces the season the spacing implies."""
    from adaptlab_timeseries.cases import case_files

    root = Path(path)
    files = case_files(root) if root.exists() else None
    classified = files is not None or (
        root.is_dir() and not any(p.is_file() for p in root.iterdir())
        and len([p for p in root.iterdir() if p.is_dir()]) >= 2)
    if classified and horizon is not None:
        raise AdaptlabError(f"{root}: labelled series are classified; horizon applies to "
                            "forecasting")
    if files is not None:
        return read_case_data(files, seed, max_gap)
    if classified:
        return read_labelled_series(root, seed, max_gap)
    horizon = int(horizon or DEMO_HORIZON)
    log = ReadLog(skip_refused=True)
    series = read_series(path, max_gap=max_gap, log=log, season=season)
    series = long_enough(series, horizon, 2 * horizon, log) if series else []
    if not series:
        names = ", ".join(Path(item["file"]).name for item in log.skipped[:8])
        reasons = "; ".join(item["reason"] for item in log.skipped[:3])
        more = f" and {len(log.skipped) - 8} more" if len(log.skipped) > 8 else ""
        raise AdaptlabError(f"{path}: no usable series left: {names}{more} ({reasons})")
    log.notes += log.season_notes()
    return to_split_dataset(series, horizon, 2 * horizon, 2 * horizon, log, source=str(path))
