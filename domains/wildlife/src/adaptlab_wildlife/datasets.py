"""The embedded demo sets: real photos and cartoon drawings, read as ImageFolders."""

from __future__ import annotations

from pathlib import Path

from adaptlab.data.image_folder import read_image_folder
from adaptlab.data.splits import SplitDataset

DEMO_ROOT = Path(__file__).resolve().parent / "demo_data"
# The demo is small (85 photos), so a larger held-out share keeps the test metric from
# hinging on one or two images.
DEMO_FRACTIONS = (0.2, 0.35)


def load_photos(options: dict) -> SplitDataset:
    return read_image_folder(DEMO_ROOT / "photos", seed=options.get("seed", 0),
                             fractions=DEMO_FRACTIONS)


def load_cartoons(options: dict) -> SplitDataset:
    return read_image_folder(DEMO_ROOT / "cartoons", seed=options.get("seed", 0),
                             fractions=DEMO_FRACTIONS)
