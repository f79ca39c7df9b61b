"""Train / validation / test splits with class names, whatever the modality."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SPLITS = ("train", "val", "test")


@dataclass
class SplitDataset:
    """Three index-able splits of ``(input, label)`` items plus what a report needs.

    ``samples[split]`` is the raw item list (paths, ids) in split order so results can name
    files; ``skipped`` lists unreadable inputs with their reason (they count in metrics).
    ``modality`` picks how :func:`adaptlab.data.torch_datasets.make_torch_dataset` turns the
    samples into tensors, once the backbone's preprocessing is known.
    """

    class_names: list[str]
    samples: dict[str, list[tuple[Any, int]]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    source: str = ""
    modality: str = "image"

    def labels(self, split: str) -> list[int]:
        return [label for _, label in self.samples[split]]

    def counts(self) -> dict[str, int]:
        return {split: len(items) for split, items in self.samples.items()}


def stratified_split(items: Sequence[tuple[Any, int]], fractions: tuple[float, float] = (0.2, 0.2),
                     seed: int = 0) -> dict[str, list[tuple[Any, int]]]:
    """Split per class so every class with 3+ items appears in val and test.

    Written by hand because scikit-learn's stratified splitters round per class in a way that
    can leave a rare class out of the held-out split entirely, and wildlife data are full of
    rare classes. Classes with fewer than 3 items stay in train.
    """
    by_class: dict[int, list[tuple[Any, int]]] = {}
    for item in items:
        by_class.setdefault(item[1], []).append(item)
    rng = random.Random(seed)
    out: dict[str, list[tuple[Any, int]]] = {split: [] for split in SPLITS}
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda it: str(it[0]))
        rng.shuffle(members)
        n = len(members)
        if n < 3:
            out["train"] += members
            continue
        n_val = max(1, round(fractions[0] * n))
        n_test = max(1, round(fractions[1] * n))
        out["val"] += members[:n_val]
        out["test"] += members[n_val:n_val + n_test]
        out["train"] += members[n_val + n_test:]
    return out
