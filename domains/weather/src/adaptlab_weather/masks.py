"""Fixed masks: cells that are NaN at every time step (sea-surface temperature over land).

Such a cell is not a gap in the data but a place the variable does not exist, so it is read
as a mask rather than refused: its values become 0 (the neutral anomaly), and the mask itself
goes to the model as an input channel (channel 0: 1 where there are data, 0 where not), so the
network can tell a masked cell from a zero anomaly. The run names the cells with data in
``task_options["valid_cells"]``, which the loss, the metrics, the predicted fields and the
attribution maps honour. A NaN that comes and goes at a cell is a gap, and is still refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.errors import AdaptlabError


def fixed_mask(values: np.ndarray, path: Path, variable: str, dims: tuple[str, str, str],
               time_label: Callable[[int], str] | None = None) -> np.ndarray | None:
    """``(time, lat, lon)`` values -> the (lat, lon) cells NaN at every time step, or None
    when there are none; any other NaN or infinite value is refused, naming a cell and time."""
    missing = np.isnan(values)
    always = missing.all(axis=0)
    bad = np.argwhere(~np.isfinite(values) & ~always[None])
    if len(bad):
        step, y, x = bad[0].tolist()
        time, lat, lon = dims
        when = f"{time}={step}" if time_label is None else f"{time} {time_label(step)}"
        raise AdaptlabError(f"{path}: variable {variable!r} is NaN or infinite at {when}, "
                            f"{lat}={y}, {lon}={x} ({len(bad)} values) and not at every time "
                            "step there: only a cell missing at every time step is read as a "
                            "mask; fill or drop the gaps")
    if always.all():
        raise AdaptlabError(f"{path}: variable {variable!r} is NaN everywhere")
    return always if always.any() else None


def mask_record(masked: np.ndarray, variable: str) -> dict[str, Any]:
    return {"variable": variable, "cells": int(masked.sum()),
            "fraction": round(float(masked.mean()), 6),
            "meaning": "grid cells NaN at every time step: filled with 0, given to the model "
                       "as input channel 0 (1 = data), left out of the loss, metrics and "
                       "attributions, written as NaN in predictions"}


def mask_note(record: dict[str, Any], total: int) -> str:
    return (f"mask: {record['cells']} of {total} grid cells ({100 * record['fraction']:.1f}%) "
            f"of {record['variable']!r} are NaN at every time step; they are masked (input "
            "channel 0, out of the loss and metrics)")


def with_valid_channel(window: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """A (channels, lat, lon) window with the valid-cell map as channel 0 (unchanged when the
    data have no mask): first, so the latest time step stays the last channel."""
    if valid is None:
        return window
    return np.concatenate([valid[None].astype(np.float32), window], axis=0)


def check_same_mask(path: Path, variable: str, masked: np.ndarray | None,
                    valid_cells: list | None, run_dir: Any) -> None:
    """Refuse new fields whose mask is not the run's training mask."""
    shape = masked.shape if masked is not None else np.shape(valid_cells)
    trained = np.zeros(shape, bool) if valid_cells is None else ~np.asarray(valid_cells, bool)
    here = np.zeros(shape, bool) if masked is None else masked
    if trained.shape != here.shape:
        return  # a grid mismatch is refused by the grid check, naming the grid
    differ = trained != here
    if differ.any():
        y, x = np.argwhere(differ)[0].tolist()
        raise AdaptlabError(f"{path}: variable {variable!r} has another mask than run {run_dir} "
                            f"was trained with: {int(differ.sum())} cells differ (first at lat "
                            f"index {y}, lon index {x}; {int(here.sum())} cells NaN at every "
                            f"time step here, {int(trained.sum())} in training)")
