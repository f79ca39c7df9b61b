"""Generation predictions: each input's text as the run's model writes it, greedily.

The texts come from :meth:`adaptlab.tasks.generation.EncoderToLm.generate`, the decoding the
run's evaluation scored, so on the run's own split (``--split test``) BLEU and exact match
recomputed from the table with :mod:`adaptlab.tasks.bleu` are the run's. A batch's
teacher-forced forward is not computed: a new input has no target to force.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from adaptlab.errors import AdaptlabError
from adaptlab.predict.inputs import PredictionInputs
from adaptlab.predict.writer import CsvTable, Predictions, PredictionWriter
from adaptlab.tasks.generation import MAX_NEW_TOKENS


class GenerationWriter(PredictionWriter):
    """``path, generated`` rows (and ``reference``, the known target, on the run's own split),
    one per input, in input order. Option ``max_new_tokens``: the longest text written, in
    the language model's tokens (the run's evaluation used the default)."""

    option_defaults = {"max_new_tokens": MAX_NEW_TOKENS}

    def __init__(self, run, inputs: PredictionInputs, out: Path,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(run, inputs, out, options)
        limit = self.options["max_new_tokens"]
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise AdaptlabError(f"prediction option max_new_tokens={limit!r}: a whole number "
                                "of at least 1")
        self.table = CsvTable(out, ["path", "generated"] + ["reference"] * inputs.labels_known)

    def model_outputs(self, model: torch.nn.Module, batch: Any) -> list[str]:
        return model.generate(batch["source"], max_new_tokens=self.options["max_new_tokens"])

    def add(self, outputs: list[str], indices: list[int], batch: Any) -> None:
        names, samples = self.inputs.names, self.inputs.samples
        rows = []
        for index, text in zip(indices, outputs, strict=True):
            row = [names[index], text]
            if self.inputs.labels_known:
                (_, target), _ = samples[index]
                row.append(target)
            rows.append(row)
        self.table.add(rows)

    def finish(self) -> Predictions:
        return Predictions(self.table.close(), count=self.table.rows)

    def abandon(self) -> None:
        self.table.abandon()
