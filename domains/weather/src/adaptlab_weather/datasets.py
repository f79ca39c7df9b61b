"""The blocking demo: windows of daily fields labelled by block persistence, from the
simulator (the plentiful source) and from a shifted configuration of it standing in for
observations (the scarce target).

No observed blocking catalogue exists offline, so the target is the same kind of flow seen
differently: slower waves, weaker and longer blocks, stronger ridges, noisier and smoothed
fields, as a reanalysis differs from a model. Splits are chronological with a gap as long as
a window plus the label's look-ahead, so no day feeds both training and testing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from adaptlab.data.fields import check_field
from adaptlab.data.splits import SplitDataset
from adaptlab_weather import HISTORY
from adaptlab_weather.simulator import FlowConfig, simulate

CLASSES = ["no persistent block", "persistent block"]
SCALE_M = 100.0  # metres per unit: fields are passed on as anomalies in hectometres

SOURCE = FlowConfig()
TARGET = FlowConfig(wave_speed=0.25, block_amplitude=130.0, block_mean_days=8.0,
                    ridge_amplitude=140.0, width=3.0, noise=25.0, smoothing=1)


def anomaly_record(variable: str | None, climatology: np.ndarray | None, scale: float,
                   units: str | None, reference: str, shape: tuple[int, ...],
                   **extra: Any) -> dict[str, Any]:
    """What a loader took from the training data that new fields need the same way
    (``SplitDataset.preprocessing``): inputs are ``(values - climatology) / scale``, windows of
    ``history`` time steps of ``variable`` on a (lat, lon) grid of ``shape``. JSON-able: the
    climatology (per grid point, or None where the fields are anomalies already) as nested
    lists of the exact values training used."""
    return {"variable": variable, "units": units, "reference": reference,
            "climatology": None if climatology is None else np.asarray(climatology).tolist(),
            "scale": float(scale), "history": HISTORY, "shape": [int(n) for n in shape],
            **extra}


def windows(fields, labels, history: int = HISTORY, where: str = "fields",
            scale: float = SCALE_M):
    """``(array (history, lat, lon), label)`` for every day with ``history`` days behind it."""
    items = []
    for day in range(history - 1, len(fields)):
        array = check_field(fields[day - history + 1:day + 1] / scale, f"{where}, day {day}")
        items.append((array, int(labels[day])))
    return items


def chronological_splits(items, lookahead: int, fractions=(0.6, 0.2)) -> dict[str, list]:
    gap = HISTORY + lookahead
    n = len(items)
    train_end = int(n * fractions[0])
    val_end = int(n * (fractions[0] + fractions[1]))
    return {"train": items[:train_end], "val": items[train_end + gap:val_end],
            "test": items[val_end + gap:]}


def _dataset(config: FlowConfig, days: int, seed: int, source: str) -> SplitDataset:
    fields, labels = simulate(days, config, seed)
    items = windows(fields, labels, where=source)
    return SplitDataset(class_names=list(CLASSES),
                        samples=chronological_splits(items, config.persistence_days),
                        source=source, modality="field",
                        preprocessing=anomaly_record(None, None, SCALE_M, "m",
                                                     "the simulator's fields are anomalies",
                                                     fields.shape[1:]))


def blocking_simulated(options: dict) -> SplitDataset:
    """2,400 simulated days (the source); the simulation's seed is fixed, so every run and
    every seed of a learning curve sees the same flow."""
    return _dataset(SOURCE, 2400, seed=11, source="simulator, 2,400 days")


def blocking_observed(options: dict) -> SplitDataset:
    """1,000 days of the shifted flow (the target; learning curves use a fraction of its
    training split)."""
    return _dataset(TARGET, 1000, seed=23, source="pseudo-observations, 1,000 days")
