"""Gridded fields as tensors: (channels, lat, lon) arrays, already in the units the loader
chose (standardised anomalies), passed on as they are. Unlike photos or scans they are not
rescaled per sample: the amplitude of an anomaly is the signal.

Training augmentation is a random shift along longitude, the one transformation under which
a mid-latitude flow's statistics are (nearly) unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

from adaptlab.data.seeded import EpochSeeded
from adaptlab.errors import AdaptlabError


def check_field(array, where: str) -> np.ndarray:
    """``array`` as (C, lat, lon) float32, or an error naming ``where`` and the problem."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise AdaptlabError(f"{where}: shape {array.shape} is not a field (lat, lon) or "
                            "(channels, lat, lon)")
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0].tolist()
        raise AdaptlabError(f"{where}: NaN or infinite value at (channel, lat, lon) {bad}")
    return array


class FieldDataset(EpochSeeded):
    def __init__(self, samples, train: bool, seed: int | None = None) -> None:
        self.samples = samples
        self.train = train
        self.seed = seed if train else None

    def __len__(self) -> int:
        return len(self.samples)

    def _roll(self, field: torch.Tensor) -> torch.Tensor:
        shift = int(torch.randint(0, field.shape[-1], ()).item())
        return torch.roll(field, shifts=shift, dims=-1)

    def __getitem__(self, index: int):
        array, label = self.samples[index]
        field = torch.from_numpy(np.asarray(array, dtype=np.float32))
        if self.train:
            field = self.seeded(index, self._roll, field)
        return field, label
