"""How a task's outputs become prediction files: the writer interface and the CSV table every
task writes (one row per input), streamed so a large folder runs in bounded memory."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from adaptlab.predict.inputs import PredictionInputs
    from adaptlab.run_loading import LoadedRun


@dataclass
class Predictions:
    """What a prediction produced: the table (one row per input; also at ``table_path``), the
    other files written (labelled clouds, fields), and the inputs skipped with the reason."""

    table_path: Path
    files: list[Path] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    count: int = 0
    inputs: PredictionInputs | None = None  # what was predicted (the gallery draws them)

    @property
    def table(self) -> pd.DataFrame:
        import pandas as pd

        return pd.read_csv(self.table_path)


class CsvTable:
    """Rows appended as they come to a temporary file renamed into place on close: an
    interrupted prediction leaves no half table under the final name."""

    def __init__(self, path: Path, header: list[str]) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = path.with_name(f".{path.name}.partial")
        self._file = self._partial.open("w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        self._csv.writerow(header)
        self.rows = 0

    def add(self, rows: list[list[Any]]) -> None:
        self._csv.writerows(rows)
        self.rows += len(rows)

    def add_lines(self, text: str, count: int) -> None:
        """``count`` rows already formatted as CSV lines (fields through :func:`csv_field`):
        the fast path of a table with one row per input, where the csv module's per-field
        work costs more than a small model's forward."""
        self._file.write(text)
        self.rows += count

    def close(self) -> Path:
        self._file.close()
        os.replace(self._partial, self.path)
        return self.path

    def abandon(self) -> None:
        self._file.close()
        self._partial.unlink(missing_ok=True)


class PredictionWriter:
    """Override points: ``__init__`` (open what is written), ``add`` (one batch's outputs),
    ``finish`` (close, and name the files), and ``model_outputs`` where a batch's outputs are
    not the model's forward. ``suffix`` is the table's default file suffix.

    A task names its writer in ``Task.prediction_writer`` (``"module:Class"``, imported when
    a prediction runs)."""

    suffix = ".csv"
    # The options this writer reads (``top_k``, ``quantiles``...), with their defaults; any
    # other option given is refused by name.
    option_defaults: dict[str, Any] = {}

    def __init__(self, run: LoadedRun, inputs: PredictionInputs, out: Path,
                 options: dict[str, Any] | None = None) -> None:
        from adaptlab.errors import AdaptlabError

        self.run = run
        self.inputs = inputs
        self.out = out
        unknown = sorted(set(options or {}) - set(self.option_defaults))
        if unknown:
            raise AdaptlabError(f"prediction option {unknown[0]!r} does not apply to "
                                f"{run.data.task} runs; options: {sorted(self.option_defaults)}")
        self.options = {**self.option_defaults, **(options or {})}

    def model_outputs(self, model: torch.nn.Module, batch: Any) -> Any:
        """What ``add`` receives for one batch (on the model's device): its forward output."""
        return model(batch)

    def add(self, outputs: torch.Tensor, indices: list[int], batch: Any) -> None:
        raise NotImplementedError

    def finish(self) -> Predictions:
        raise NotImplementedError

    def abandon(self) -> None:
        """Called instead of ``finish`` when the prediction fails midway."""


def csv_field(text: str) -> str:
    """``text`` as one CSV field, quoted as the csv module quotes (only where needed)."""
    if "," in text or '"' in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def number(value: float) -> str:
    """A probability or value as the table writes it: enough digits to recompute metrics."""
    return f"{value:.6g}"
