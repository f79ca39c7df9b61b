"""Retrieval predictions: for each query, the best ``top_k`` documents of a corpus.

The corpus is embedded once, in batches, when the writer opens; each batch of queries is
then ranked against it as it comes, so the table streams like every other task's. Which
documents make the corpus:

- the run's own split (``--split test``): the split's documents, the very candidate pool
  evaluation ranks, so MRR and recall@k recomputed from the table equal the run's metrics;
- new inputs: the documents the domain read beside the queries
  (``inputs.details["corpus"]``, ``(name, text)`` pairs), and those it reads from the path
  given as the ``corpus`` option (``--set corpus=PATH``), in that order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from adaptlab.errors import AdaptlabError
from adaptlab.predict.inputs import NO_LABEL, PredictionInputs
from adaptlab.predict.writer import CsvTable, Predictions, PredictionWriter

SNIPPET_CHARACTERS = 80


def snippet(text: str) -> str:
    """A document's opening, whitespace collapsed to single spaces, for the table."""
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARACTERS else flat[:SNIPPET_CHARACTERS - 3] + "..."


def own_split_corpus(inputs: PredictionInputs) -> tuple[list[tuple[str, str]], list[str]]:
    """A run's own split: query ``j``'s relevant document is document ``j`` (evaluation pairs
    them by position), so documents are named by position and each query's answer is its own."""
    corpus = [(str(j), document) for j, ((_, document), _) in enumerate(inputs.samples)]
    return corpus, [name for name, _ in corpus]


def read_corpus(run, path: str | Path) -> PredictionInputs:
    """The documents at ``path``, read by the run's domain as it reads ``--data``."""
    from adaptlab.plugins.spec import resolve_reference

    path = Path(str(path))
    if not path.exists():
        raise AdaptlabError(f"prediction option corpus={path}: does not exist")
    if not run.domain.predict_reader:
        raise AdaptlabError(f"domain {run.domain.name!r} cannot read a corpus to search")
    return resolve_reference(run.domain.predict_reader)(path, run)


class TopKRetrievalWriter(PredictionWriter):
    """``query, rank, document, score, snippet`` rows, ``top_k`` per query, best first (and
    ``answer``, the query's own document, where it is known); ``score`` is the cosine
    similarity the run ranks by."""

    option_defaults = {"top_k": 5, "corpus": ""}

    def __init__(self, run, inputs: PredictionInputs, out: Path,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(run, inputs, out, options)
        top_k = self.options["top_k"]
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise AdaptlabError(f"prediction option top_k={top_k!r}: a whole number of at least 1")
        if inputs.labels_known:
            corpus, self.answers = own_split_corpus(inputs)
        else:
            corpus = list(inputs.details.get("corpus", []))
            self.answers = list(inputs.details.get("answers") or [None] * len(inputs.samples))
        if self.options["corpus"]:
            extra = read_corpus(run, self.options["corpus"])
            corpus += extra.details.get("corpus", [])
            # The runner lists the inputs' skipped files after opening the writer.
            inputs.skipped.extend(extra.skipped)
        if not corpus:
            raise AdaptlabError(f"{inputs.source or 'the inputs'}: no documents to search; give "
                                "documents beside the queries or --set corpus=PATH")
        self.names = [name for name, _ in corpus]
        self.snippets = [snippet(text) for _, text in corpus]
        self.documents = self._embed([text for _, text in corpus])
        self.top_k = min(top_k, len(corpus))
        header = ["query", "rank", "document", "score", "snippet"]
        self.with_answers = any(answer is not None for answer in self.answers)
        self.table = CsvTable(out, header + ["answer"] * self.with_answers)

    @torch.inference_mode()
    def _embed(self, texts: list[str]) -> torch.Tensor:
        """The documents through the run's own tokeniser and adapted encoder, in batches of
        the run's size (on its own split: the padding evaluation saw, so the same scores)."""
        from adaptlab.data.splits import SplitDataset
        from adaptlab.data.torch_datasets import make_torch_dataset
        from adaptlab.tasks.base import move_to

        described = SplitDataset([], {"corpus": [(text, NO_LABEL) for text in texts]},
                                 modality="text")
        dataset = make_torch_dataset(described, "corpus", self.run.backbone, False)
        device = next(self.run.model.parameters()).device
        self.run.model.eval()
        size = self.run.config.batch_size
        chunks = []
        for start in range(0, len(dataset), size):
            tokens, _ = dataset.collate([dataset[i] for i in
                                         range(start, min(start + size, len(dataset)))])
            chunks.append(self.run.model.embed(move_to(tokens, device)).float())
        return torch.cat(chunks)

    def add(self, outputs, indices: list[int], batch: Any) -> None:
        queries = outputs[0].float().to(self.documents.device)  # (queries, their documents)
        scores, best = (queries @ self.documents.T).topk(self.top_k, dim=1)
        rows = []
        for index, row_scores, row_best in zip(indices, scores.tolist(), best.tolist(),
                                               strict=True):
            for rank, (score, document) in enumerate(zip(row_scores, row_best, strict=True), 1):
                # Nine digits hold a float32 exactly: ranks recomputed from the table gain no ties.
                line = [self.inputs.names[index], rank, self.names[document], f"{score:.9g}",
                        self.snippets[document]]
                if self.with_answers:
                    line.append(self.answers[index] or "")
                rows.append(line)
        self.table.add(rows)

    def finish(self) -> Predictions:
        path = self.table.close()
        return Predictions(path, count=self.table.rows // self.top_k)

    def abandon(self) -> None:
        self.table.abandon()
