"""Read the formats medical users have into a SplitDataset of 2D arrays.

- a MedMNIST ``.npz`` (``{train,val,test}_images`` and ``_labels``): its splits are kept;
- a folder with one sub-folder per class holding DICOM files (``.dcm``; one image each, slices
  of one series are kept in one split) or NIfTI files (``.nii``/``.nii.gz``; 2D images as one
  sample, 3D volumes read slice-wise along the last axis, all slices of a volume in one split);
- a folder of PNG/JPEG images per class: adaptlab's image-folder reader.

Unreadable files are skipped with a warning naming them and counted; a shape that is not an
image, or a volume with no class folder (no label), stops with a message naming the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from adaptlab.data.array_images import check_array_image
from adaptlab.data.splits import SplitDataset, stratified_split
from adaptlab.errors import AdaptlabError

MEDMNIST_KEYS = ("train_images", "train_labels", "val_images", "val_labels", "test_images",
                 "test_labels")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def read_medical_data(path: str | Path, seed: int = 0) -> SplitDataset:
    """Dispatch on what ``path`` holds."""
    path = Path(path)
    if not path.exists():
        raise AdaptlabError(f"data path {path} does not exist")
    if path.is_file():
        if path.suffix == ".npz":
            return read_medmnist_npz(path)
        raise AdaptlabError(f"data file {path}: expected a MedMNIST .npz or a folder")
    files = [p for p in path.rglob("*") if p.is_file()]
    if any(p.suffix.lower() == ".dcm" for p in files):
        return read_array_folder(path, "dicom", seed)
    if any(p.name.endswith(NIFTI_SUFFIXES) for p in files):
        return read_array_folder(path, "nifti", seed)
    from adaptlab.data.image_folder import read_image_folder

    return read_image_folder(path, seed=seed)


def read_medmnist_npz(path: Path) -> SplitDataset:
    """A MedMNIST archive (the format its loader downloads), read without pickle."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise AdaptlabError(f"{path}: not a readable .npz archive ({exc})") from exc
    try:
        return _medmnist_splits(path, archive)
    except ValueError as exc:  # an object array: loading it would run pickle
        raise AdaptlabError(f"{path}: not a readable .npz archive ({exc})") from exc


def _medmnist_splits(path: Path, archive) -> SplitDataset:
    with archive:
        missing = [key for key in MEDMNIST_KEYS if key not in archive.files]
        if missing:
            raise AdaptlabError(f"{path}: MedMNIST key {missing[0]!r} is missing "
                                f"(found {sorted(archive.files)})")
        samples, labels_seen = {}, set()
        for split in ("train", "val", "test"):
            images, labels = archive[f"{split}_images"], archive[f"{split}_labels"]
            labels = labels.reshape(len(labels), -1)
            if labels.shape[1] != 1:
                raise AdaptlabError(f"{path}: {split}_labels has shape {archive[f'{split}_labels'].shape}"
                                    "; multi-label MedMNIST sets are not supported yet")
            if len(images) != len(labels):
                raise AdaptlabError(f"{path}: {len(images)} {split}_images but {len(labels)} labels")
            for i, image in enumerate(images[:1]):
                check_array_image(image, f"{path} {split}_images[{i}]")
            samples[split] = list(zip(images, labels[:, 0].astype(int).tolist(), strict=True))
            labels_seen.update(labels[:, 0].astype(int).tolist())
    num_classes = max(labels_seen) + 1
    return SplitDataset(class_names=[str(i) for i in range(num_classes)], samples=samples,
                        source=str(path), modality="array-image")


def _read_dicom(path: Path) -> tuple[list[np.ndarray], str]:
    import pydicom

    dataset = pydicom.dcmread(path)
    pixels = dataset.pixel_array.astype(np.float32)
    # Stored values -> modality units (e.g. Hounsfield) as the header says.
    pixels = pixels * float(getattr(dataset, "RescaleSlope", 1)) + \
        float(getattr(dataset, "RescaleIntercept", 0))
    group = str(getattr(dataset, "SeriesInstanceUID", "") or path)
    frames = list(pixels) if pixels.ndim == 3 and getattr(dataset, "NumberOfFrames", 1) > 1 \
        else [pixels]
    return frames, group


def _read_nifti(path: Path) -> tuple[list[np.ndarray], str]:
    import nibabel as nib

    volume = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    volume = np.squeeze(volume)
    if not np.isfinite(volume).all():  # else a NaN slice would pass the empty-slice test unseen
        voxel = tuple(np.argwhere(~np.isfinite(volume))[0].tolist())
        raise AdaptlabError(f"NIfTI {path}: NaN or infinite value at voxel {voxel}")
    if volume.ndim == 2:
        return [volume], str(path)
    if volume.ndim != 3:
        raise AdaptlabError(f"NIfTI {path} has shape {volume.shape}; expected a 2D image or a "
                            "3D volume (4D series: pick a volume first)")
    # Slice-wise along the last axis, skipping empty slices (background only).
    slices = [volume[..., k] for k in range(volume.shape[-1]) if np.ptp(volume[..., k]) > 0]
    return slices, str(path)


def read_array_folder(root: Path, kind: str, seed: int) -> SplitDataset:
    reader = {"dicom": _read_dicom, "nifti": _read_nifti}[kind]
    loose = [p for p in root.iterdir() if p.is_file() and (p.suffix == ".dcm" or
                                                           p.name.endswith(NIFTI_SUFFIXES))]
    if loose:
        raise AdaptlabError(f"{loose[0]}: {kind.upper()} file with no label; put each file in "
                            "a folder named after its class")
    class_names = sorted(p.name for p in root.iterdir() if p.is_dir() and
                         not p.name.startswith("."))
    if len(class_names) < 2:
        raise AdaptlabError(f"data folder {root} has {len(class_names)} class folder(s); "
                            "classification needs at least two")
    items, groups, skipped = [], [], []
    for label, name in enumerate(class_names):
        for path in sorted((root / name).rglob("*")):
            if not path.is_file() or not (path.suffix == ".dcm" or path.name.endswith(NIFTI_SUFFIXES)):
                continue
            try:
                frames, group = reader(path)
                for frame in frames:
                    check_array_image(frame, str(path))
            except AdaptlabError:
                raise
            except Exception as exc:  # corrupt file: pydicom/nibabel raise many types
                reason = f"{type(exc).__name__}: {exc}"
                skipped.append({"file": str(path), "reason": reason})
                warnings.warn(f"skipping {path}: {reason}", stacklevel=2)
                continue
            items += [(frame, label) for frame in frames]
            groups += [group] * len(frames)
    if not items:
        raise AdaptlabError(f"data folder {root}: no readable {kind.upper()} images")
    samples = stratified_split(items, seed=seed, groups=groups)
    # A class with fewer than 3 files stays in train: with none of 3+, nothing is held out.
    for split in ("val", "test"):
        if not samples[split]:
            raise AdaptlabError(f"data folder {root}: the {split} split is empty; a class needs "
                                f"at least 3 readable {kind.upper()} files (scans) to be held out")
    return SplitDataset(class_names=class_names, samples=samples, skipped=skipped,
                        source=str(root), modality="array-image")
