"""Class predictions: the class and every class's probability, per input."""

from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptlab.predict.writer import CsvTable, Predictions, PredictionWriter, csv_field

# Values (probabilities and the row's other fields) a chunk of rows holds before it is written.
CHUNK_CELLS = 1 << 16


class ClassProbabilityWriter(PredictionWriter):
    """``path, prediction, probability_<class>...`` (and ``label`` when the inputs' labels are
    known: the run's own split), one row per input, in input order."""

    def __init__(self, run, inputs, out: Path, options: dict | None = None) -> None:
        super().__init__(run, inputs, out, options)
        self.class_names = list(run.data.class_names)
        header = ["path", "prediction", *(f"probability_{name}" for name in self.class_names)]
        if inputs.labels_known:
            header.append("label")
        self.table = CsvTable(out, header)
        self._classes = [csv_field(name) for name in self.class_names]
        # One format for a row, applied to many rows at once: the per-row cost is what a fast
        # model's throughput pays (a field classifier predicts ~15,000 inputs a second on two
        # cores).
        self._row = ("%s,%s," + ",".join(["%.6g"] * len(self.class_names))
                     + (",%s" if inputs.labels_known else "") + "\r\n")
        # Batches' logits wait for a chunk of rows: formatted right after each forward, a
        # row costs about three times as much (the forward has left the caches cold), and a
        # chunk bounds the memory whatever the number of inputs.
        self._chunk_rows = max(1, CHUNK_CELLS // (len(self.class_names) + 2))
        self._pending: list[tuple[np.ndarray, list[int]]] = []
        self._pending_rows = 0

    def add(self, outputs: torch.Tensor, indices: list[int], batch: Any) -> None:
        self._pending.append((outputs.detach().float().cpu().numpy(), indices))
        self._pending_rows += len(indices)
        if self._pending_rows >= self._chunk_rows:
            self._write_pending()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        logits = np.concatenate([batch for batch, _ in self._pending])
        indices = [index for _, batch in self._pending for index in batch]
        self._pending, self._pending_rows = [], 0
        # numpy, not torch, for the softmax: torch's CPU thread pool costs more than the
        # arithmetic when the cores are busy loading the next batch.
        exponentials = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probabilities = exponentials / exponentials.sum(axis=-1, keepdims=True)
        names, classes = self.inputs.names, self._classes
        columns = [[csv_field(names[index]) for index in indices],
                   [classes[best] for best in probabilities.argmax(axis=-1).tolist()],
                   *probabilities.T.tolist()]
        if self.inputs.labels_known:
            columns.append([classes[self.inputs.samples[index][1]] for index in indices])
        values = tuple(chain.from_iterable(zip(*columns, strict=True)))
        self.table.add_lines(self._row * len(indices) % values, len(indices))

    def finish(self) -> Predictions:
        self._write_pending()
        return Predictions(self.table.close(), count=self.table.rows)

    def abandon(self) -> None:
        self.table.abandon()
