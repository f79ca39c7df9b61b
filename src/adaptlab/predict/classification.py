"""Class predictions: the class and every class's probability, per input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptlab.predict.writer import CsvTable, Predictions, PredictionWriter, csv_field


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
        # One format for a whole row: the per-row cost is what a fast model's throughput
        # pays (a field classifier predicts ~10,000 inputs a second on two cores).
        self._line = "{},{}," + ",".join(["{:.6g}"] * len(self.class_names))

    def add(self, outputs: torch.Tensor, indices: list[int], batch: Any) -> None:
        # numpy, not torch, for the softmax of a small batch: torch's CPU thread pool costs
        # more than the arithmetic when the cores are busy loading the next batch.
        logits = outputs.detach().float().cpu().numpy()
        exponentials = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probabilities = exponentials / exponentials.sum(axis=-1, keepdims=True)
        chosen = probabilities.argmax(axis=-1).tolist()
        names, line, classes = self.inputs.names, self._line, self._classes
        if self.inputs.labels_known:
            labels = [classes[self.inputs.samples[index][1]] for index in indices]
        lines = [line.format(csv_field(names[index]), classes[best], *row)
                 + (f",{labels[position]}" if self.inputs.labels_known else "")
                 for position, (index, best, row) in enumerate(
                     zip(indices, chosen, probabilities.tolist(), strict=True))]
        self.table.add_lines("\r\n".join(lines) + "\r\n", len(lines))

    def finish(self) -> Predictions:
        return Predictions(self.table.close(), count=self.table.rows)

    def abandon(self) -> None:
        self.table.abandon()
