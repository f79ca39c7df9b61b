"""Class predictions: the class and every class's probability, per input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from adaptlab.predict.writer import CsvTable, Predictions, PredictionWriter, number


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

    def add(self, outputs: torch.Tensor, indices: list[int], batch: Any) -> None:
        probabilities = outputs.float().softmax(dim=-1).cpu()
        chosen = probabilities.argmax(dim=-1).tolist()
        rows = []
        for index, best, row in zip(indices, chosen, probabilities.tolist(), strict=True):
            line = [self.inputs.names[index], self.class_names[best], *map(number, row)]
            if self.inputs.labels_known:
                line.append(self.class_names[self.inputs.samples[index][1]])
            rows.append(line)
        self.table.add(rows)

    def finish(self) -> Predictions:
        return Predictions(self.table.close(), count=self.table.rows)

    def abandon(self) -> None:
        self.table.abandon()
