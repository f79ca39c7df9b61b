"""The embedded CMIP6 demo and the walk-forward split of user series.

Demo: monthly Arctic air temperature (1000 and 925 hPa) from 41 CMIP6 climate models. The
target is one held-out model (MIROC6): its last five years are the test span, the five before
them validation. Training windows come from every other model (the source domain) and from the
target's own earlier years, and none of them forecasts a month that falls inside the held-out
spans (the cut is the same calendar month for every model, since all end in 2014-12).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from adaptlab.data.series import Series, walk_forward_windows
from adaptlab.data.splits import SplitDataset
from adaptlab.errors import AdaptlabError
from adaptlab_timeseries.readers import ReadLog, read_series, read_table

DEMO_FILE = "cmip6_arctic_ta_monthly.csv.gz"
TARGET_MODEL = "MIROC6"
DEMO_HORIZON = 24
HELD_OUT_MONTHS = 60
MIN_CONTEXT_SEASONS = 4  # a window sees at least four seasonal cycles before its origin


def to_split_dataset(series: list[Series], horizon: int, val_steps: int, test_steps: int,
                     log: ReadLog, source: str, eval_names: set[str] | None = None,
                     train_stride: int = 1) -> SplitDataset:
    min_context = max(MIN_CONTEXT_SEASONS * max(s.season for s in series), 16)
    windows = walk_forward_windows(series, horizon, val_steps, test_steps, min_context,
                                   train_stride=train_stride, eval_names=eval_names)
    index = {id(item): i for i, item in enumerate(series)}
    samples = {split: [(w, index[id(w.series)]) for w in items] for split, items in windows.items()}
    return SplitDataset(class_names=[], samples=samples, skipped=log.skipped, source=source,
                        modality="series-windows", task="forecasting", notes=log.notes)


def load_cmip6_arctic(options: dict) -> SplitDataset:
    horizon = int(options.get("horizon", DEMO_HORIZON))
    log = ReadLog(skip_refused=True)
    path = resources.files("adaptlab_timeseries") / "demo_data" / DEMO_FILE
    with resources.as_file(path) as file:
        series = read_table(Path(file), log=log)
    targets = {s.name for s in series if s.name.startswith(TARGET_MODEL + "_")}
    if not targets:
        raise AdaptlabError(f"{DEMO_FILE}: no series of the target model {TARGET_MODEL}")
    # Every sixth month as a training origin: consecutive origins overlap by all but one
    # month, so denser origins add compute, not information.
    return to_split_dataset(series, horizon, HELD_OUT_MONTHS, HELD_OUT_MONTHS, log,
                            source=f"CMIP6 Arctic ta, target {TARGET_MODEL}",
                            eval_names=targets, train_stride=6)


def read_series_data(path: str, seed: int = 0, horizon: int | None = None) -> SplitDataset:
    """User series (``--data``): a CSV/Parquet/NetCDF file or a folder of them. Each series'
    last ``2 * horizon`` steps are the test span and the ``2 * horizon`` before validation, so
    every held-out span holds ``horizon + 1`` forecast origins. Series the gap rule refuses
    are skipped and listed while others remain; ``seed`` is unused (the split is by time)."""
    del seed
    horizon = int(horizon or DEMO_HORIZON)
    log = ReadLog(skip_refused=True)
    series = read_series(path, log=log)
    if not series:
        reasons = "; ".join(item["reason"] for item in log.skipped[:3])
        raise AdaptlabError(f"{path}: every series was refused ({reasons})")
    return to_split_dataset(series, horizon, 2 * horizon, 2 * horizon, log, source=str(path))
