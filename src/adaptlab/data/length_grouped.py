"""Training batches of text grouped by token length, in a seeded order that changes every epoch.

A text batch is padded to its longest member, and drawn at random nearly every batch holds a
sample at the tokenizer's limit: on the code demo (248 training samples, batch 32) 44 % of the
positions a training step computes are padding, 16 % in batches grouped as here. Hugging Face's
Trainer offers length grouping against this (off by default); here it is on for text wherever a
sample's loss does not depend on the others in its batch.

The order is a *noisy sort* (as speech and translation toolkits batch): each sample's length is
scaled by its own random factor in ``[1 - spread, 1 + spread]``, the samples are sorted by that
key, cut into batches, and the batches shuffled; so batches hold samples of similar length, and
which samples share one changes from epoch to epoch. The longest batch goes first, as Trainer's
sampler puts it: a run that runs out of memory does so at its first step, and the memory planner,
which measures the first batch, sees the largest one. A short last batch stays last, where the
loader's batching expects it.

This is a sampler of indices, not a batch sampler: Accelerate shards, skips and seeds the batches
of a plain sampler as it does a shuffled loader's, so several processes, resumes mid-epoch and
the planner need nothing else. Written here because no library offers a seeded, epoch-aware
length-grouped sampler that does not bring its trainer along.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

# How far a sample's length may be scaled in the sort (plus or minus): wide enough that batch
# mates change between epochs, narrow enough that a batch pads little.
SPREAD = 0.25


class LengthGroupedSampler(Sampler[int]):
    """Dataset indices in batches of similar length (see the module); the engine sets the epoch
    (``set_epoch``), and ``(seed, epoch)`` alone decide the order."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int,
                 spread: float = SPREAD) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.float64)
        self.batch_size = batch_size
        self.seed = seed
        self.spread = spread
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self) -> list[list[int]]:
        """This epoch's batches, in order."""
        count = len(self.lengths)
        if count == 0:
            return []
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        scale = 1 + self.spread * (2 * torch.rand(count, generator=generator, dtype=torch.float64)
                                   - 1)
        # Ties (equal keys) broken by a random permutation, not by the dataset's order.
        shuffled = torch.randperm(count, generator=generator)
        keys = (self.lengths * scale)[shuffled]
        order = shuffled[torch.sort(keys, descending=True, stable=True).indices].tolist()
        batches = [order[start:start + self.batch_size]
                   for start in range(0, count, self.batch_size)]
        short = [batches.pop()] if len(batches[-1]) < self.batch_size else []
        if len(batches) <= 1:
            return batches + short
        longest = max(range(len(batches)),
                      key=lambda index: max(self.lengths[i].item() for i in batches[index]))
        first = batches.pop(longest)
        rest = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return [first, *rest, *short]

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch


def groups_by_length(dataset: Any) -> bool:
    """Whether ``dataset``'s training batches may be grouped by length: it states its items'
    lengths and does not ask otherwise (``group_by_length = False``: a contrastive pair
    dataset, whose in-batch negatives would all be of one length)."""
    return callable(getattr(dataset, "lengths", None)) and \
        getattr(dataset, "group_by_length", True)


def training_order(dataset: Any, batch_size: int, seed: int, group_by_length: bool
                   ) -> dict[str, Any]:
    """The ``DataLoader`` arguments that order a run's training samples: grouped by length
    where the run asks for it and the dataset allows it, else shuffled from the run's seed
    (Accelerate's seedable sampler then reseeds the shuffle every epoch). The engine and the
    memory planner build their loaders from this, so the planner sees the run's batches."""
    # The loader's own generator keeps its per-epoch seed draws (each iterator draws one, the
    # sampler or not) off the global RNG, which a resumed run restores to the exact step where
    # the original stopped: a draw from it when the resumed epoch's iterator starts would
    # shift every dropout mask after it.
    generator = torch.Generator().manual_seed(seed)
    if group_by_length and groups_by_length(dataset):
        return {"sampler": LengthGroupedSampler(dataset.lengths(), batch_size, seed),
                "generator": generator}
    return {"shuffle": True, "generator": generator}
