"""Images that arrive as arrays (MRI slices, DICOM pixels, MedMNIST, fields): intensity scaling,
channel matching and resizing for an ImageNet-style backbone, in one place.

Grey inputs are repeated to the backbone's channel count here, from its preprocessing, so no
notebook or domain converts channels by hand.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from adaptlab.backbones.backbone import Preprocessing
from adaptlab.data.seeded import EpochSeeded
from adaptlab.errors import AdaptlabError


def check_array_image(array: np.ndarray, where: str) -> np.ndarray:
    """Return ``array`` as (C, H, W) float32, or refuse a shape that is not an image."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4) and array.shape[0] not in (1, 3, 4):
        array = np.moveaxis(array, -1, 0)  # channels-last (H, W, C), as PNG-derived arrays are
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] not in (1, 3, 4):
        raise AdaptlabError(f"{where}: shape {tuple(np.asarray(array).shape)} is not a 2D image "
                            "(H, W), (C, H, W) or (H, W, C) with 1, 3 or 4 channels")
    if array.shape[0] == 4:
        array = array[:3]  # drop alpha
    if not np.isfinite(array).all():
        raise AdaptlabError(f"{where}: contains NaN or infinite values")
    return array.astype(np.float32)


def scale_intensity(image: torch.Tensor) -> torch.Tensor:
    """Robust min-max to [0, 1] per image (1st and 99th percentiles), as MRI intensities have
    no fixed range; a constant image maps to zeros."""
    flat = image.flatten()
    low, high = torch.quantile(flat, 0.01), torch.quantile(flat, 0.99)
    if high <= low:
        return torch.zeros_like(image)
    return ((image - low) / (high - low)).clamp(0, 1)


class ArrayImageDataset(EpochSeeded):
    """``(array, label)`` samples -> normalised (C, size, size) tensors for the backbone."""

    def __init__(self, samples, preprocessing: Preprocessing, train: bool,
                 size: int | None = None, seed: int | None = None) -> None:
        self.samples = samples
        self.pre = preprocessing
        self.train = train
        self.size = size or preprocessing.input_size[-1]
        self.channels = preprocessing.input_size[0]
        self.seed = seed if train else None
        self.mean = torch.tensor(preprocessing.mean).view(-1, 1, 1)
        self.std = torch.tensor(preprocessing.std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def _augment(self, image: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        if torch.rand(()) < 0.5:
            image = image.flip(-2)
        return image

    def __getitem__(self, index: int):
        array, label = self.samples[index]
        image = scale_intensity(torch.from_numpy(check_array_image(array, f"sample {index}")))
        if image.shape[0] != self.channels:
            image = image.mean(0, keepdim=True).repeat(self.channels, 1, 1)
        image = F.interpolate(image[None], size=(self.size, self.size), mode="bilinear",
                              align_corners=False)[0]
        if self.train:
            image = self.seeded(index, self._augment, image)
        return (image - self.mean) / self.std, label
