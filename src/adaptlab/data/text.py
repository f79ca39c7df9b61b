"""Text samples (source code, docstrings) for token backbones: tokenised per batch."""

from __future__ import annotations

import torch


class TextDataset:
    """``(text, label)`` samples; ``collate`` tokenises a batch with padding to its longest."""

    def __init__(self, samples, tokenizer, max_length: int) -> None:
        self.samples = samples
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return self.samples[index]

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(texts, padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def collate(self, batch):
        texts, labels = zip(*batch, strict=True)
        return self.tokenize(list(texts)), torch.tensor(labels)


class TextPairDataset(TextDataset):
    """``((query, document), index)`` samples for retrieval; a batch holds both sides."""

    def collate(self, batch):
        pairs, labels = zip(*batch, strict=True)
        queries, documents = zip(*pairs, strict=True)
        return ({"query": self.tokenize(list(queries)), "document": self.tokenize(list(documents))},
                torch.tensor(labels))
