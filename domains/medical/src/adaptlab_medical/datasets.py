"""The embedded MRI demo: derived patches (see scripts/derive_demo.py and demo_data/SOURCES.json)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adaptlab.data.splits import SplitDataset, stratified_split

DEMO_ROOT = Path(__file__).resolve().parent / "demo_data"


def _load(name: str) -> dict[str, np.ndarray]:
    with np.load(DEMO_ROOT / name, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def load_colin27(options: dict) -> SplitDataset:
    """Train/val from the left hemisphere (val: 20 % of it, stratified), test = right."""
    data = _load("colin27_aal_patches.npz")
    left = list(zip(data["train_x"], data["train_y"].tolist(), strict=True))
    split = stratified_split(left, fractions=(0.2, 0.0), seed=options.get("seed", 0))
    test = list(zip(data["test_x"], data["test_y"].tolist(), strict=True))
    return SplitDataset(class_names=data["classes"].tolist(),
                        samples={"train": split["train"], "val": split["val"], "test": test},
                        source="Colin27 T1 + AAL (mricron-data)", modality="array-image")


def load_icbm152(options: dict) -> SplitDataset:
    data = _load("icbm152_aal_patches.npz")
    items = list(zip(data["x"], data["y"].tolist(), strict=True))
    return SplitDataset(class_names=data["classes"].tolist(),
                        samples=stratified_split(items, seed=options.get("seed", 0)),
                        source="MNI ICBM152 2009a + AAL", modality="array-image")
