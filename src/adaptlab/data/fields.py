"""Gridded fields as tensors: (channels, lat, lon) arrays, already in the units the loader
chose (standardised anomalies), passed on as they are. Unlike photos or scans they are not
rescaled per sample: the amplitude of an anomaly is the signal.

Training augmentation on grids that go round the globe is a random shift along longitude,
the one transformation under which a mid-latitude flow's statistics are (nearly) unchanged;
a target field (field-to-field regression) is shifted with its input. Regional grids are
not augmented: their edges are real places.

An image backbone (EfficientNet-Lite0, pre-trained on photos) reads a field rendered as an
image: the channels (days) become red, green and blue (a single field is repeated), each
anomaly mapped to brightness by a fixed contrast (0.5 + anomaly / 6, clipped: +-3 units of
anomaly span the range, the same for every sample so amplitudes stay comparable), resized
to the backbone's input size and normalised with its mean and std.
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


def is_periodic(coords: dict[str, list[float]]) -> bool:
    """A grid without coordinates is taken as global (the simulator's); otherwise its
    longitudes must span the whole circle."""
    lon = coords.get("lon")
    if not lon:
        return True
    step = abs(lon[1] - lon[0]) if len(lon) > 1 else 0.0
    return step * len(lon) >= 359.0


RENDER_SPAN = 3.0  # anomaly units from black to white, either side of grey


def render_field(field: torch.Tensor, preprocessing, size: int | None = None) -> torch.Tensor:
    """A (C, lat, lon) anomaly field as a normalised (3, H, W) image for an image backbone."""
    channels = field.shape[0]
    if channels >= 3:
        rgb = field[-3:]
    else:
        rgb = field[[i % channels for i in range(3)]]
    image = (0.5 + rgb / (2 * RENDER_SPAN)).clamp(0, 1)
    height, width = (size, size) if size else preprocessing.input_size[1:]
    image = torch.nn.functional.interpolate(image[None], size=(height, width),
                                            mode="bilinear", align_corners=False)[0]
    mean = torch.tensor(preprocessing.mean).view(-1, 1, 1)
    std = torch.tensor(preprocessing.std).view(-1, 1, 1)
    return (image - mean) / std


class FieldDataset(EpochSeeded):
    def __init__(self, samples, train: bool, seed: int | None = None,
                 periodic: bool = True, render=None, size: int | None = None,
                 coords: dict[str, list[float]] | None = None) -> None:
        self.samples = samples
        self.coords = coords or {}  # the grid's lat / lon, for drawing maps
        self.train = train and periodic
        self.seed = seed if train else None
        self.render = render  # an image backbone's Preprocessing, or None for field networks
        self.size = size

    def __len__(self) -> int:
        return len(self.samples)

    @staticmethod
    def _roll(pair):
        field, target = pair
        shift = int(torch.randint(0, field.shape[-1], ()).item())
        if torch.is_tensor(target) and target.ndim >= 2 and target.shape[-1] == field.shape[-1]:
            target = torch.roll(target, shifts=shift, dims=-1)
        return torch.roll(field, shifts=shift, dims=-1), target

    def __getitem__(self, index: int):
        array, label = self.samples[index]
        field = torch.from_numpy(np.asarray(array, dtype=np.float32))
        if isinstance(label, np.ndarray):  # a regression target: a field or a vector
            label = torch.from_numpy(label.astype(np.float32))
        if self.train:
            field, label = self.seeded(index, self._roll, (field, label))
        if self.render is not None:
            field = render_field(field, self.render, self.size)
        return field, label
