"""New scans to predict, read as ``--data`` reads training scans, labels ignored.

``--data`` is one file or a folder of them (class sub-folders or none: their names are
ignored); one row per image or slice:

- a ``.npz`` (MedMNIST's, or any): each ``*images`` array (else each array of two or more
  dimensions) is a stack of images along its first axis, named ``file:key[i]``;
- a ``.npy``: a 2D image, an image with 1, 3 or 4 channels (first or last), or a 3D volume
  read slice-wise along its last axis like a NIfTI volume, named ``file`` or ``file:slice``;
- a DICOM (``.dcm``; a multi-frame one gives ``file:frame``) or NIfTI file
  (``.nii``/``.nii.gz``; a 3D volume gives ``file:slice``, empty slices left out as training
  leaves them out).

A run trained on a PNG/JPEG folder reads images as photos are read. Files are listed and
checked here, and read again, one at a time, when their batch comes: a folder of many scans
runs in bounded memory. A scan whose shape is not an image the model takes is refused by
name; a file that does not read is skipped and listed, as in training.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptlab.data.array_images import check_array_image
from adaptlab.errors import AdaptlabError
from adaptlab.predict.inputs import NO_LABEL, PredictionInputs, input_files
from adaptlab_medical.readers import NIFTI_SUFFIXES, _read_dicom

if TYPE_CHECKING:
    from adaptlab.run_loading import LoadedRun


@dataclass(frozen=True)
class ScanImage:
    """One image of a scan file (``index``: its slice or frame, None for the whole file),
    read when its batch is: the dataset builder takes it as an array."""

    path: str
    kind: str  # "npy", "nifti" or "dicom"
    index: int | None = None

    def describe(self) -> str:
        """The row's name: ``file``, or ``file:slice`` for one slice or frame of a scan."""
        return self.path if self.index is None else f"{self.path}:{self.index}"

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        try:
            scan = _read_scan(self.path, self.kind)
            image = scan if self.index is None else (
                scan[self.index] if self.kind == "dicom" else scan[..., self.index])
        except Exception as exc:  # a file changed or gone since it was listed
            raise ValueError(f"{self.describe()}: {type(exc).__name__}: {exc}") from exc
        return np.asarray(image, dtype=dtype)


@functools.lru_cache(maxsize=1)  # one scan at a time: its slices come in order
def _read_scan(path: str, kind: str) -> Any:
    """A scan's images: a memory-mapped .npy, a NIfTI volume, or a DICOM's frames (rescaled
    to modality units, as training reads them)."""
    if kind == "npy":
        return np.load(path, mmap_mode="r", allow_pickle=False)
    if kind == "nifti":
        return _nifti_volume(Path(path))
    return _read_dicom(Path(path))[0]


def _nifti_volume(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.squeeze(np.asarray(nib.load(path).dataobj, dtype=np.float32))


def scan_kind(path: Path) -> str | None:
    """What a file holds by its name: ``npz``, ``npy``, ``nifti``, ``dicom`` or None."""
    if path.name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    return {".npz": "npz", ".npy": "npy", ".dcm": "dicom"}.get(path.suffix.lower())


def read_scan_inputs(path: Path, run: LoadedRun) -> PredictionInputs:
    """Every scan under ``path`` as ``(image, NO_LABEL)`` samples, with their names."""
    if run.data.modality == "image":
        from adaptlab.predict.image_inputs import read_image_inputs

        return read_image_inputs(path, run)
    _read_scan.cache_clear()  # a file rewritten since an earlier prediction is read anew
    samples, names, skipped = [], [], []
    for file in input_files(path):
        kind = scan_kind(file)
        if kind is None:
            skipped.append({"file": str(file), "reason": "not a scan file (.npz, .npy, .dcm, "
                                                        ".nii, .nii.gz)"})
            continue
        try:
            images = _list_images(file, kind)
        except AdaptlabError:
            raise
        except Exception as exc:  # corrupt file: numpy, nibabel, pydicom raise many types
            reason = f"{type(exc).__name__}: {exc}"
            skipped.append({"file": str(file), "reason": reason})
            warnings.warn(f"skipping {file}: {reason}", stacklevel=2)
            continue
        samples += [(image, NO_LABEL) for _, image in images]
        names += [name for name, _ in images]
    return PredictionInputs(samples=samples, names=names, modality="array-image",
                            skipped=skipped, source=str(path))


def _list_images(path: Path, kind: str) -> list[tuple[str, Any]]:
    """``(name, image)`` for each image of a file, checked as training checks them."""
    if kind == "npz":
        return _npz_images(path)
    if kind == "dicom":
        frames = _read_dicom(path)[0]
        for k, frame in enumerate(frames):
            check_array_image(frame, f"{path}:{k}" if len(frames) > 1 else str(path))
        if len(frames) == 1:
            return [(str(path), ScanImage(str(path), kind))]
        return [(f"{path}:{k}", ScanImage(str(path), kind, k)) for k in range(len(frames))]
    volume = _read_scan.__wrapped__(str(path), kind)
    # A 3D .npy may be one image with channels; a 3D NIfTI is a volume, as training reads it.
    if volume.ndim == 2 or (kind == "npy" and volume.ndim == 3 and _is_image(volume.shape)):
        check_array_image(volume, str(path))
        return [(str(path), ScanImage(str(path), kind))]
    if volume.ndim != 3:
        raise AdaptlabError(f"{path}: shape {volume.shape} is not a 2D image, an image with 1, 3 "
                            "or 4 channels, or a 3D volume")
    # Slice-wise along the last axis, leaving out empty slices (background only).
    keep = [k for k in range(volume.shape[-1]) if np.ptp(volume[..., k]) > 0]
    for k in keep[:1]:
        check_array_image(volume[..., k], f"{path}:{k}")
    return [(f"{path}:{k}", ScanImage(str(path), kind, k)) for k in keep]


def _is_image(shape: tuple[int, ...]) -> bool:
    """A 3D shape that is one image with channels, as check_array_image takes it."""
    return shape[0] in (1, 3, 4) or shape[-1] in (1, 3, 4)


def _npz_images(path: Path) -> list[tuple[str, np.ndarray]]:
    """Each image stack of an archive, kept as stored (uint8 stays uint8); read without
    pickle."""
    with np.load(path, allow_pickle=False) as archive:
        keys = [key for key in archive.files if key.endswith("images")] or \
            [key for key in archive.files if archive[key].ndim >= 2]
        if not keys:
            raise AdaptlabError(f"{path}: no image arrays (found {sorted(archive.files)})")
        images = []
        for key in keys:
            stack = archive[key]
            if stack.ndim == 2:
                stack = stack[None]  # one image
            check_array_image(stack[0], f"{path}:{key}[0]")
            images += [(f"{path}:{key}[{i}]", image) for i, image in enumerate(stack)]
    return images
