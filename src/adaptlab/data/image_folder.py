"""Read an ImageFolder (one sub-folder per class) the way users keep their photos.

Either ``ROOT/<class>/*.jpg`` (we make a stratified split) or ``ROOT/{train,val,test}/<class>/``
(their split is kept). Every image is decoded once at scan time: a corrupt or non-image file is
skipped with a warning naming it, and counted, instead of failing mid-epoch.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from adaptlab.data.seeded import EpochSeeded
from adaptlab.data.splits import SPLITS, SplitDataset, stratified_split
from adaptlab.errors import AdaptlabError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


def check_image(path: Path) -> str | None:
    """``None`` if the image decodes, else the reason it does not."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))  # JPEG decodes at reduced scale: a full check, fast
            image.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan_classes(root: Path, class_names: list[str], skipped: list[dict[str, str]]
                  ) -> list[tuple[Path, int]]:
    items = []
    for label, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            reason = (check_image(path) if path.suffix.lower() in IMAGE_SUFFIXES
                      else f"not an image file (suffix {path.suffix or 'none'!r})")
            if reason is None:
                items.append((path, label))
            else:
                skipped.append({"file": str(path), "reason": reason})
                warnings.warn(f"skipping {path}: {reason}", stacklevel=2)
    return items


def read_image_folder(root: str | Path, seed: int = 0,
                      fractions: tuple[float, float] = (0.2, 0.2)) -> SplitDataset:
    """Scan ``root`` into a :class:`SplitDataset` of ``(path, label)`` samples."""
    root = Path(root)
    if not root.exists():
        raise AdaptlabError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise AdaptlabError(f"data path {root} is not a folder")
    skipped: list[dict[str, str]] = []
    presplit = (root / "train").is_dir() and any((root / s).is_dir() for s in ("val", "test"))
    if presplit:
        class_names = [p.name for p in _class_folders(root / "train")]
        _require_classes(root / "train", class_names)
        samples = {split: _scan_classes(root / split, class_names, skipped)
                   if (root / split).is_dir() else [] for split in SPLITS}
        if not samples["val"]:
            samples["val"] = samples["test"]
        if not samples["test"]:
            samples["test"] = samples["val"]
    else:
        class_names = [p.name for p in _class_folders(root)]
        _require_classes(root, class_names)
        items = _scan_classes(root, class_names, skipped)
        samples = stratified_split(items, fractions=fractions, seed=seed)
    for split, items in samples.items():
        if not items:
            raise AdaptlabError(f"data folder {root}: the {split} split has no readable images")
    present = {label for _, label in samples["train"]}
    empty = [class_names[i] for i in range(len(class_names)) if i not in present]
    if empty:
        raise AdaptlabError(f"data folder {root}: class folder {empty[0]!r} has no readable "
                            "images in the training split")
    return SplitDataset(class_names=class_names, samples=samples, skipped=skipped,
                        source=str(root))


def _require_classes(root: Path, class_names: list[str]) -> None:
    if not class_names:
        loose = [p.name for p in root.iterdir() if p.is_file()][:1]
        hint = f" (found files such as {loose[0]!r}; put each class in its own folder)" \
            if loose else ""
        raise AdaptlabError(f"data folder {root} is empty: expected one sub-folder per class{hint}")
    if len(class_names) < 2:
        raise AdaptlabError(f"data folder {root} has one class ({class_names[0]!r}); "
                            "classification needs at least two class folders")


class ImageSampleDataset(EpochSeeded):
    """A torch-style dataset over ``(path, label)`` samples with a transform; training
    augmentation is seeded per sample when ``seed`` is set (see :mod:`adaptlab.data.seeded`)."""

    def __init__(self, samples: list[tuple[Path, int]], transform, seed: int | None = None) -> None:
        self.samples = samples
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, ValueError) as exc:  # changed on disk since the scan
            raise AdaptlabError(f"image {path} can no longer be read ({exc})") from exc
        return self.seeded(index, self.transform, rgb), label
