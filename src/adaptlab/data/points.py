"""Point clouds as tensors: (points, 3) arrays, centred and scaled into the unit sphere per
cloud, subsampled to the fixed count the backbone reads.

Each sample is a :class:`Cloud`, which carries its name (a file, a mesh, a scan id) so an
error or a report can say which cloud it was. Training draws a random subset of points and
augments it: a rotation (any angle about the cloud's known up axis; a small tilt for clouds
without one, which are put in their principal frame first: sampled meshes come in arbitrary
orientations), anisotropic scaling, jitter and point dropout, the augmentations of the
PointNet++ / DGCNN training recipes. Evaluation always
reads the same subset of a cloud, so metrics do not move between calls.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from adaptlab.data.seeded import EpochSeeded
from adaptlab.errors import AdaptlabError


@dataclass
class Cloud:
    """One point cloud: ``points`` (N, 3) float32, ``name`` for messages, ``point_labels``
    (N,) int64 for segmentation, ``up_axis`` (0, 1 or 2) when the data have a known vertical
    (scans), None when orientation is arbitrary."""

    points: np.ndarray
    name: str
    point_labels: np.ndarray | None = None
    up_axis: int | None = None


def check_points(array, where: str) -> np.ndarray:
    """``array`` as (N, 3) float32 coordinates, or an error naming ``where`` and the problem."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] < 3:
        raise AdaptlabError(f"{where}: shape {array.shape} is not a point array (N, 3)")
    array = array[:, :3]
    if len(array) == 0:
        raise AdaptlabError(f"{where}: no points")
    if not np.isfinite(array).all():
        row, column = np.argwhere(~np.isfinite(array))[0].tolist()
        raise AdaptlabError(f"{where}: NaN or infinite coordinate at point {row}, "
                            f"{'xyz'[column]}")
    return np.ascontiguousarray(array)


def principal_frame(centred: np.ndarray) -> np.ndarray:
    """The cloud in its principal axes (largest variance first), each axis signed so the
    cloud's third moment along it is positive: the same shape in any orientation lands in
    (nearly) the same pose, which point networks without rotation invariance need when
    orientations are arbitrary (sampled meshes, scans of loose objects)."""
    _, vectors = np.linalg.eigh(np.cov(centred.T.astype(np.float64)))
    aligned = centred @ vectors[:, ::-1]
    signs = np.where((aligned ** 3).mean(axis=0) < 0, -1.0, 1.0)
    return (aligned * signs).astype(np.float32)


def normalise(points: np.ndarray, align: bool = False) -> np.ndarray:
    """Centred on the mean (and turned into its principal frame when ``align``), scaled so
    the farthest point lies on the unit sphere."""
    centred = points - points.mean(axis=0, keepdims=True)
    if align:
        centred = principal_frame(centred)
    radius = float(np.linalg.norm(centred, axis=1).max())
    return centred / max(radius, 1e-9)


def check_point_counts(samples, num_points: int, split: str) -> None:
    for cloud, _ in samples:
        if len(cloud.points) < num_points:
            raise AdaptlabError(f"{cloud.name} ({split} split): {len(cloud.points)} points, "
                                f"fewer than the {num_points} the backbone samples per cloud; "
                                "resample it more densely or pick a smaller num_points")


def random_rotation(up_axis: int | None, tilt: float = 0.25) -> torch.Tensor:
    """A random rotation (3, 3): any angle about ``up_axis``; when there is none (clouds
    already in their principal frame), a small one (up to ``tilt`` radians) about a random
    axis, which the frame's estimation error is of the order of."""
    if up_axis is None:
        axis = torch.nn.functional.normalize(torch.randn(3), dim=0)
        angle = float((torch.rand(()) * 2 - 1) * tilt)
        k = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]],
                          [-axis[1], axis[0], 0]])
        return torch.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    angle = float(torch.rand(()) * 2 * torch.pi)
    c, s = np.cos(angle), np.sin(angle)
    rotation = torch.eye(3)
    a, b = [axis for axis in range(3) if axis != up_axis]
    rotation[a, a], rotation[a, b], rotation[b, a], rotation[b, b] = c, -s, s, c
    return rotation


@dataclass(frozen=True)
class PointAugment:
    scale: tuple[float, float] = (0.8, 1.25)
    jitter_sigma: float = 0.01
    jitter_clip: float = 0.05
    max_dropout: float = 0.3


class PointCloudDataset(EpochSeeded):
    """``(points [num_points, 3], label)``; for segmentation ``(points, point_labels)``."""

    def __init__(self, samples, num_points: int, train: bool, seed: int | None = None,
                 augment: PointAugment = PointAugment(), segmentation: bool = False) -> None:
        self.samples = samples
        self.num_points = num_points
        self.train = train
        self.seed = seed if train else None
        self.augment = augment
        self.segmentation = segmentation

    def __len__(self) -> int:
        return len(self.samples)

    def _eval_subset(self, cloud: Cloud) -> np.ndarray:
        rng = np.random.default_rng(zlib.crc32(cloud.name.encode()))
        return np.sort(rng.choice(len(cloud.points), self.num_points, replace=False))

    def _train_view(self, cloud: Cloud) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(cloud.points)
        chosen = torch.randperm(n)[:self.num_points]
        points = torch.from_numpy(normalise(cloud.points[chosen.numpy()],
                                            align=cloud.up_axis is None)).float()
        aug = self.augment
        points = points @ random_rotation(cloud.up_axis).T
        low, high = aug.scale
        points = points * (low + (high - low) * torch.rand(1, 3))
        noise = (torch.randn_like(points) * aug.jitter_sigma).clamp(-aug.jitter_clip,
                                                                     aug.jitter_clip)
        points = points + noise
        # Dropout as in PointNet++: dropped points repeat the first one, so the count stays.
        dropped = torch.rand(len(points)) < float(torch.rand(())) * aug.max_dropout
        points[dropped] = points[0].clone()
        indices = chosen.clone()  # which stored point each row is (its label, segmenting)
        indices[dropped] = chosen[0]
        return points, indices

    def __getitem__(self, index: int):
        cloud, label = self.samples[index]
        if self.train:
            points, chosen = self.seeded(index, self._train_view, cloud)
            chosen = chosen.numpy()
        else:
            chosen = self._eval_subset(cloud)
            points = torch.from_numpy(normalise(cloud.points[chosen],
                                                align=cloud.up_axis is None)).float()
        if self.segmentation:
            return points, torch.from_numpy(cloud.point_labels[chosen].astype(np.int64))
        return points, label
