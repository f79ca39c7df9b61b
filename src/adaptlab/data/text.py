"""Text samples (source code, docstrings) for token backbones: tokenised per batch."""

from __future__ import annotations

import torch


class TextDataset:
    """``(text, label)`` samples; ``collate`` tokenises a batch with padding to its longest."""

    def __init__(self, samples, tokenizer, max_length: int) -> None:
        self.samples = samples
        self.tokenizer = tokenizer
        self.max_length = max_length
        self._lengths: list[int] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return self.samples[index]

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(texts, padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def lengths(self) -> list[int]:
        """Each sample's token count as ``collate`` truncates it (summed over the texts of a
        sample that holds several): the width a batch is padded to grows with it, so
        evaluation batches samples of similar length together (adaptlab.engine.length_order).
        Counted once per dataset."""
        if self._lengths is None:
            pieces = [[texts] if isinstance(texts, str) else list(texts)
                      for texts, _ in self.samples]
            flat = [text for texts in pieces for text in texts]
            ids = self.tokenizer(flat, truncation=True,
                                 max_length=self.max_length)["input_ids"] if flat else []
            counts = iter([len(row) for row in ids])
            self._lengths = [sum(next(counts) for _ in texts) for texts in pieces]
        return self._lengths

    def collate(self, batch):
        texts, labels = zip(*batch, strict=True)
        return self.tokenize(list(texts)), torch.tensor(labels)


class TextPairDataset(TextDataset):
    """``((query, document), index)`` samples for retrieval; a batch holds both sides."""

    # The other pairs of a batch are each query's negatives: batches grouped by length would
    # change what the contrastive loss learns, not only how much padding it computes.
    group_by_length = False

    def collate(self, batch):
        pairs, labels = zip(*batch, strict=True)
        queries, documents = zip(*pairs, strict=True)
        return ({"query": self.tokenize(list(queries)), "document": self.tokenize(list(documents))},
                torch.tensor(labels))
