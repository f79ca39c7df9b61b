"""Train / validation / test splits with class names, whatever the modality."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from adaptlab.errors import AdaptlabError

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
    # "retrieval": samples are ((query, document), pair id); "forecasting": (SeriesWindow,
    # series index)
    task: str = "classification"
    notes: list[str] = field(default_factory=list)  # repairs the loader made (gap filling)
    # Gridded fields: the grid's coordinates ({"lat": [...], "lon": [...]}, degrees), for
    # latitude weighting and for refusing a source run trained on another grid.
    coords: dict[str, list[float]] = field(default_factory=dict)
    # What the loader knows that its task needs (field regression: {"residual_channel": -1}
    # when the target is the same quantity as that input channel, a step later).
    task_options: dict[str, Any] = field(default_factory=dict)
    # What the loader derived from the training data that new inputs need the same way (a
    # climatology anomalies are taken against), JSON-able: a finished run keeps it in
    # ``data.json``, so predicting on new data needs no training data.
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def description(self) -> dict[str, Any]:
        """Everything but the samples, as JSON-able data (a run's ``data.json``)."""
        return {"class_names": self.class_names, "modality": self.modality, "task": self.task,
                "source": self.source, "coords": self.coords, "task_options": self.task_options,
                "preprocessing": self.preprocessing, "counts": self.counts()}

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> SplitDataset:
        """A dataset with no samples that describes one as :meth:`description` wrote it."""
        keys = ("class_names", "modality", "task", "source", "coords", "task_options",
                "preprocessing")
        return cls(samples={split: [] for split in SPLITS},
                   **{key: description[key] for key in keys if key in description})

    def labels(self, split: str) -> list[int]:
        return [label for _, label in self.samples[split]]

    def counts(self) -> dict[str, int]:
        return {split: len(items) for split, items in self.samples.items()}

    def with_train_subset(self, count: int | None, seed: int) -> SplitDataset:
        """A copy whose training split keeps ``count`` samples (for classification, classes in
        proportion, each keeping at least one), picked by ``seed``; val and test unchanged."""
        train = self.samples["train"]
        if count is None or count >= len(train):
            return self
        rng = random.Random(seed)
        if self.task != "classification":  # labels are pair ids, not classes
            return replace(self, samples={**self.samples, "train": rng.sample(train, count)})
        by_class: dict[int, list] = {}
        for item in train:
            by_class.setdefault(item[1], []).append(item)
        keep = []
        for label in sorted(by_class):
            members = list(by_class[label])
            rng.shuffle(members)
            keep += members[:max(1, round(count * len(members) / len(train)))]
        return replace(self, samples={**self.samples, "train": keep})


def stratified_split(items: Sequence[tuple[Any, int]], fractions: tuple[float, float] = (0.2, 0.2),
                     seed: int = 0, groups: Sequence[Any] | None = None
                     ) -> dict[str, list[tuple[Any, int]]]:
    """Split per class so every class with 3+ groups appears in val and test.

    ``groups`` (one key per item: a patient, a volume, a DICOM series; a group's items share
    one label) keeps all items of a group in one split, so slices of one scan never sit on
    both sides. Written by hand because
    scikit-learn's stratified splitters round per class in a way that can leave a rare class
    out of the held-out split entirely, and have no stratified group variant with a fixed test
    fraction. Classes with fewer than 3 groups stay in train.
    """
    keys = list(groups) if groups is not None else list(range(len(items)))
    by_class: dict[int, dict[Any, list[tuple[Any, int]]]] = {}
    label_of: dict[Any, int] = {}
    for key, item in zip(keys, items, strict=True):
        if label_of.setdefault(key, item[1]) != item[1]:
            raise AdaptlabError(f"group {key!r} holds items of two classes ({label_of[key]} and "
                                f"{item[1]}); one scan or series must have one label")
        by_class.setdefault(item[1], {}).setdefault(key, []).append(item)
    rng = random.Random(seed)
    out: dict[str, list[tuple[Any, int]]] = {split: [] for split in SPLITS}
    for label in sorted(by_class):
        members = list(by_class[label].values())  # input order: deterministic
        rng.shuffle(members)
        n = len(members)
        if n < 3:
            out["train"] += [item for grp in members for item in grp]
            continue
        # A positive fraction gives every class at least one held-out item; zero gives none.
        n_val, n_test = (max(1, round(f * n)) if f > 0 else 0 for f in fractions)
        for split, chunk in (("val", members[:n_val]), ("test", members[n_val:n_val + n_test]),
                             ("train", members[n_val + n_test:])):
            out[split] += [item for grp in chunk for item in grp]
    return out
