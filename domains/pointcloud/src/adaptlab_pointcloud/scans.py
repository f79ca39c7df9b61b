"""What a scanner does to a surface: one viewpoint (the far side and an occluder missing),
density falling off with distance from the sensor, and range noise.

Applied alike to generated shapes (the source) and to the sampled CGAL meshes (the target),
so the shift between them is the shapes, not the sensor.
"""

from __future__ import annotations

import numpy as np


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def scan(points: np.ndarray, normals: np.ndarray, rng: np.random.Generator,
         min_points: int = 768) -> tuple[np.ndarray, np.ndarray]:
    """A scan of a surface sample, in a random orientation: (points float32, the kept
    indices into ``points``). At least ``min_points`` survive (the least occluded ones)."""
    rotation = random_rotation(rng)
    points, normals = points @ rotation.T, normals @ rotation.T
    view = rng.normal(size=3)
    view /= np.linalg.norm(view)
    visibility = normals @ view + rng.uniform(0.05, 0.3)
    occluder = rng.normal(size=3)
    occluder /= np.linalg.norm(occluder)
    if rng.uniform() < 0.5:  # something between the sensor and the object
        visibility -= 2.0 * (points @ occluder > rng.uniform(0.3, 0.7))
    depth = (points @ view + 1) / 2  # 1 nearest the sensor
    keep_probability = 1 - rng.uniform(0, 0.5) * (1 - depth)
    kept = (visibility > 0) & (rng.uniform(size=len(points)) < keep_probability)
    if kept.sum() < min_points:
        kept = np.zeros(len(points), bool)
        kept[np.argsort(-visibility)[:min_points]] = True
    index = np.flatnonzero(kept)
    noisy = points[index] + rng.normal(size=(len(index), 3)) * rng.uniform(0.002, 0.012)
    return noisy.astype(np.float32), index
