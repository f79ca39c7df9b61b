"""Surface samples of simple solids, and their unions and differences, as (points, normals,
part) arrays: the parts generated shapes are assembled from.

Each solid samples its own surface (with outward normals) and answers whether points lie
inside it; a shape keeps a solid's samples that no other added solid contains, and cuts
holes by dropping what a subtracted solid contains and adding the hole's inner wall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rotation taking unit vector ``a`` to unit vector ``b`` (Rodrigues)."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    v, c = np.cross(a, b), float(np.dot(a, b))
    if c < -0.999999:
        axis = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    skew = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + skew + skew @ skew / (1 + c)


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    u = rng.normal(size=(n, 3))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


@dataclass
class Ellipsoid:
    centre: np.ndarray
    radii: np.ndarray
    rotation: np.ndarray
    part: int = 0

    def area(self) -> float:
        a, b, c = self.radii
        p = 1.6075
        return 4 * np.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)

    def sample(self, rng, n):
        u = _unit(rng, n)
        points = self.centre + (u * self.radii) @ self.rotation.T
        normals = (u / self.radii) @ self.rotation.T
        return points, normals / np.linalg.norm(normals, axis=1, keepdims=True)

    def inside(self, points):
        local = (points - self.centre) @ self.rotation / self.radii
        return (local ** 2).sum(axis=1) < 0.98


@dataclass
class Capsule:
    """A limb: all points within ``radius`` of the segment ``start``-``end``."""

    start: np.ndarray
    end: np.ndarray
    radius: float
    part: int = 0

    def area(self) -> float:
        return 2 * np.pi * self.radius * np.linalg.norm(self.end - self.start) \
            + 4 * np.pi * self.radius ** 2

    def _closest(self, points):
        axis = self.end - self.start
        t = np.clip((points - self.start) @ axis / max(float(axis @ axis), 1e-12), 0, 1)
        return self.start + t[:, None] * axis

    def sample(self, rng, n):
        axis = self.end - self.start
        length = np.linalg.norm(axis)
        side = int(round(n * length / (length + 2 * self.radius)))
        t = rng.uniform(size=(side, 1))
        ring = _unit(rng, side)
        direction = axis / max(length, 1e-12)
        ring -= (ring @ direction)[:, None] * direction
        ring /= np.maximum(np.linalg.norm(ring, axis=1, keepdims=True), 1e-12)
        caps = _unit(rng, n - side)
        ends = np.where(((caps @ direction) > 0)[:, None], self.end, self.start)
        normals = np.concatenate([ring, caps])
        points = np.concatenate([self.start + t * axis + self.radius * ring,
                                 ends + self.radius * caps])
        return points, normals

    def inside(self, points):
        return np.linalg.norm(points - self._closest(points), axis=1) < 0.98 * self.radius


@dataclass
class Box:
    centre: np.ndarray
    half: np.ndarray
    rotation: np.ndarray
    part: int = 0

    def area(self) -> float:
        x, y, z = 2 * self.half
        return 2 * (x * y + x * z + y * z)

    def sample(self, rng, n):
        x, y, z = self.half
        faces = np.array([y * z, y * z, x * z, x * z, x * y, x * y])
        face = rng.choice(6, size=n, p=faces / faces.sum())
        local = rng.uniform(-1, 1, size=(n, 3)) * self.half
        axis, sign = face // 2, np.where(face % 2 == 0, 1.0, -1.0)
        local[np.arange(n), axis] = sign * self.half[axis]
        normals = np.zeros((n, 3))
        normals[np.arange(n), axis] = sign
        return self.centre + local @ self.rotation.T, normals @ self.rotation.T

    def inside(self, points):
        local = np.abs((points - self.centre) @ self.rotation)
        return (local < 0.98 * self.half).all(axis=1)


@dataclass
class Cylinder:
    """A capped cylinder around the rotation's z axis."""

    centre: np.ndarray
    radius: float
    half_height: float
    rotation: np.ndarray
    part: int = 0

    def area(self) -> float:
        return 2 * np.pi * self.radius * 2 * self.half_height + 2 * np.pi * self.radius ** 2

    def sample(self, rng, n):
        r, h = self.radius, self.half_height
        side = int(round(n * 2 * h / (2 * h + r)))
        angle = rng.uniform(0, 2 * np.pi, n)
        ring = np.stack([np.cos(angle), np.sin(angle), np.zeros(n)], axis=1)
        local = np.empty((n, 3))
        normals = np.empty((n, 3))
        local[:side] = r * ring[:side]
        local[:side, 2] = rng.uniform(-h, h, side)
        normals[:side] = ring[:side]
        cap_r = r * np.sqrt(rng.uniform(size=n - side))
        local[side:] = cap_r[:, None] * ring[side:]
        top = rng.uniform(size=n - side) < 0.5
        local[side:, 2] = np.where(top, h, -h)
        normals[side:] = 0
        normals[side:, 2] = np.where(top, 1.0, -1.0)
        return self.centre + local @ self.rotation.T, normals @ self.rotation.T

    def inside(self, points):
        local = (points - self.centre) @ self.rotation
        return (np.linalg.norm(local[:, :2], axis=1) < 0.98 * self.radius) \
            & (np.abs(local[:, 2]) < 0.98 * self.half_height)


def compose(rng: np.random.Generator, solids: list, holes: list, count: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Surface samples of the union of ``solids`` minus ``holes``: (points, normals, parts),
    about ``count`` points spread by area."""
    areas = np.array([solid.area() for solid in solids + holes])
    shares = np.maximum((areas / areas.sum() * count * 1.6).astype(int), 8)
    points, normals, parts = [], [], []
    for i, solid in enumerate(solids):
        p, n = solid.sample(rng, shares[i])
        keep = ~np.any([other.inside(p) for j, other in enumerate(solids) if j != i] +
                       [hole.inside(p) for hole in holes] + [np.zeros(len(p), bool)], axis=0)
        points.append(p[keep])
        normals.append(n[keep])
        parts.append(np.full(keep.sum(), solid.part))
    for i, hole in enumerate(holes):
        p, n = hole.sample(rng, shares[len(solids) + i])
        keep = np.any([solid.inside(p) for solid in solids], axis=0)
        points.append(p[keep])
        normals.append(-n[keep])  # the wall of a hole faces into it
        parts.append(np.full(keep.sum(), hole.part))
    points, normals, parts = (np.concatenate(a) for a in (points, normals, parts))
    pick = rng.choice(len(points), size=min(count, len(points)), replace=False)
    return points[pick], normals[pick], parts[pick]
