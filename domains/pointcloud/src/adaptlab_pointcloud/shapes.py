"""Procedural shapes in the demo's three coarse classes, each with per-point part labels.

- animal: quadrupeds (body, four legs, neck and head, tail; proportions from pig to
  giraffe to sauropod) and sitting animals (bunny-like);
- human body: standing figures in varied poses, hands, long bones, busts;
- manufactured object: plates with holes, gears, turned parts, brackets, aircraft.

The proportions are drawn wide on purpose: the source must cover the target's variety (CGAL's
meshes) without copying any of them.
"""

from __future__ import annotations

import numpy as np

from adaptlab_pointcloud.primitives import (
    Box,
    Capsule,
    Cylinder,
    Ellipsoid,
    compose,
    rotation_between,
)

CLASSES = ["animal", "human body", "manufactured object"]
PARTS = ["body", "limb", "head", "tail"]
BODY, LIMB, HEAD, TAIL = range(4)
EYE = np.eye(3)
Z = np.array([0.0, 0, 1])


def _rot(rng, spread: float = np.pi) -> np.ndarray:
    axis = rng.normal(size=3)
    angle = rng.uniform(-spread, spread)
    axis /= np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return EYE + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _v(*xs) -> np.ndarray:
    return np.array(xs, dtype=float)


def quadruped(rng):
    length, height = rng.uniform(0.45, 0.9), rng.uniform(0.18, 0.35)
    body = Ellipsoid(_v(0, 0, 0), _v(length, height * rng.uniform(0.8, 1.2), height), EYE, BODY)
    leg_length, leg_r = rng.uniform(0.25, 0.8), rng.uniform(0.04, 0.1)
    solids = [body]
    for x in (-0.65, 0.65):
        for y in (-0.5, 0.5):
            top = _v(x * length, y * height, -0.4 * height)
            splay = _v(rng.normal(0, 0.08), y * rng.uniform(0, 0.2), -1)
            solids.append(Capsule(top, top + leg_length * splay / np.linalg.norm(splay),
                                  leg_r, LIMB))
    neck_angle = rng.uniform(0.1, 1.3)
    neck_length = rng.uniform(0.1, 0.9)
    neck_start = _v(0.8 * length, 0, 0.3 * height)
    neck_end = neck_start + neck_length * _v(np.cos(neck_angle), 0, np.sin(neck_angle))
    solids.append(Capsule(neck_start, neck_end, rng.uniform(0.05, 0.12), HEAD))
    head = rng.uniform(0.08, 0.2)
    solids.append(Ellipsoid(neck_end + _v(head * 0.6, 0, 0), _v(head * 1.5, head, head),
                            _rot(rng, 0.4), HEAD))
    tail_length = rng.uniform(0.05, 1.0)
    tail_start = _v(-0.95 * length, 0, 0.2 * height)
    solids.append(Capsule(tail_start, tail_start + tail_length * _v(-1, 0, rng.uniform(-0.8, 0.6)),
                          rng.uniform(0.02, 0.08), TAIL))
    return solids, []


def sitting_animal(rng):
    size = rng.uniform(0.4, 0.6)
    solids = [Ellipsoid(_v(0, 0, 0), _v(size, size * 0.8, size * rng.uniform(0.8, 1.2)), EYE,
                        BODY)]
    head_centre = _v(size * 0.6, 0, size * 1.1)
    head = rng.uniform(0.18, 0.3)
    solids.append(Ellipsoid(head_centre, _v(head * 1.3, head, head), EYE, HEAD))
    for y in (-0.4, 0.4):
        ear = head_centre + _v(0, y * head, head * 0.8)
        solids.append(Capsule(ear, ear + _v(-0.1, y * 0.3, rng.uniform(0.2, 0.5)),
                              rng.uniform(0.03, 0.06), HEAD))
        paw = _v(size * 0.7, y * size, -size * 0.7)
        solids.append(Capsule(paw, paw + _v(0.25, 0, 0), 0.06, LIMB))
    solids.append(Ellipsoid(_v(-size, 0, -size * 0.4), _v(0.1, 0.1, 0.1), EYE, TAIL))
    return solids, []


def figure(rng):
    torso_h = rng.uniform(0.3, 0.45)
    solids = [Ellipsoid(_v(0, 0, 0), _v(0.18, 0.12, torso_h) * rng.uniform(0.8, 1.2), EYE, BODY)]
    head = rng.uniform(0.1, 0.16)
    solids.append(Ellipsoid(_v(0, 0, torso_h + head * 1.1), _v(head, head, head * 1.2), EYE,
                            HEAD))
    for side in (-1, 1):
        shoulder = _v(0, side * 0.18, torso_h * 0.75)
        arm = rng.uniform(0.4, 0.65)
        angle = rng.uniform(-0.3, 2.8)
        direction = _v(rng.normal(0, 0.3), side * np.sin(angle), -np.cos(angle))
        solids.append(Capsule(shoulder, shoulder + arm * direction / np.linalg.norm(direction),
                              rng.uniform(0.035, 0.06), LIMB))
        hip = _v(0, side * 0.08, -torso_h * 0.8)
        leg = rng.uniform(0.55, 0.9)
        direction = _v(rng.normal(0, 0.25), side * rng.uniform(0, 0.4), -1)
        solids.append(Capsule(hip, hip + leg * direction / np.linalg.norm(direction),
                              rng.uniform(0.05, 0.08), LIMB))
    return solids, []


def hand(rng):
    solids = [Ellipsoid(_v(0, 0, 0), _v(0.35, 0.3, 0.1), EYE, BODY)]
    for i, y in enumerate(np.linspace(-0.24, 0.24, 4)):
        base = _v(0.3, y, 0)
        length = rng.uniform(0.3, 0.5) * (0.8 if i in (0, 3) else 1.0)
        bend = rng.uniform(0, 0.8)
        solids.append(Capsule(base, base + length * _v(np.cos(bend), 0, -np.sin(bend)),
                              0.05, LIMB))
    thumb = _v(0.05, 0.3, 0)
    solids.append(Capsule(thumb, thumb + _v(0.25, 0.25, 0), 0.06, LIMB))
    solids.append(Capsule(_v(-0.3, 0, 0), _v(-0.6, 0, 0), rng.uniform(0.1, 0.16), BODY))
    return solids, []


def bone(rng):
    length = rng.uniform(0.6, 1.0)
    shaft = Capsule(_v(0, 0, -length), _v(0, 0, length), rng.uniform(0.06, 0.12), BODY)
    ends = [Ellipsoid(_v(rng.normal(0, 0.05), 0, sign * length), _v(0.2, 0.15, 0.12)
                      * rng.uniform(0.8, 1.3), _rot(rng, 0.5), HEAD) for sign in (-1, 1)]
    return [shaft, *ends], []


def bust(rng):
    head = rng.uniform(0.25, 0.35)
    return [Ellipsoid(_v(0, 0, 0.35), _v(head, head * 0.9, head * 1.25), _rot(rng, 0.2), HEAD),
            Capsule(_v(0, 0, -0.05), _v(0, 0, 0.15), 0.12, BODY),
            Ellipsoid(_v(0, 0, -0.3), _v(0.2, rng.uniform(0.4, 0.55), 0.18), EYE, BODY)], []


def plate(rng):
    half = _v(rng.uniform(0.4, 0.7), rng.uniform(0.3, 0.6), rng.uniform(0.04, 0.15))
    holes = []
    for _ in range(rng.integers(1, 5)):
        centre = _v(*(rng.uniform(-0.7, 0.7, 2) * half[:2]), 0)
        holes.append(Cylinder(centre, rng.uniform(0.05, 0.15), half[2] * 1.5, EYE, BODY))
    return [Box(_v(0, 0, 0), half, EYE, BODY)], holes


def gear(rng):
    radius, half_h = rng.uniform(0.4, 0.6), rng.uniform(0.06, 0.2)
    solids = [Cylinder(_v(0, 0, 0), radius, half_h, EYE, BODY)]
    teeth = int(rng.integers(8, 20))
    for i in range(teeth):
        angle = 2 * np.pi * i / teeth
        rotation = rotation_between(_v(1, 0, 0), _v(np.cos(angle), np.sin(angle), 0))
        solids.append(Box(radius * _v(np.cos(angle), np.sin(angle), 0),
                          _v(0.08, np.pi * radius / teeth / 2, half_h), rotation, LIMB))
    if rng.uniform() < 0.6:
        solids.append(Cylinder(_v(0, 0, 0), rng.uniform(0.1, 0.2), half_h * 3, EYE, BODY))
    holes = [Cylinder(_v(0, 0, 0), rng.uniform(0.04, 0.09), half_h * 4, EYE, BODY)]
    return solids, holes


def turned(rng):
    solids, z = [], -0.6
    for _ in range(rng.integers(2, 5)):
        h = rng.uniform(0.08, 0.35)
        solids.append(Cylinder(_v(0, 0, z + h), rng.uniform(0.1, 0.5), h, EYE, BODY))
        z += 2 * h
    holes = [Cylinder(_v(0, 0, 0), 0.06, 2.0, EYE, BODY)] if rng.uniform() < 0.5 else []
    return solids, holes


def bracket(rng):
    solids = []
    for axis in rng.permutation(3)[:int(rng.integers(2, 4))]:
        half = _v(0.06, 0.06, 0.06)
        half[axis] = rng.uniform(0.3, 0.6)
        centre = np.zeros(3)
        centre[axis] = half[axis] * rng.choice([-0.8, 0.8])
        solids.append(Box(centre, half + _v(*rng.uniform(0, 0.15, 3)), EYE, BODY))
    return solids, []


def aircraft(rng):
    length = rng.uniform(0.7, 1.0)
    radius = rng.uniform(0.06, 0.12)
    solids = [Capsule(_v(-length, 0, 0), _v(length, 0, 0), radius, BODY),
              Box(_v(rng.uniform(-0.1, 0.2), 0, 0), _v(rng.uniform(0.12, 0.25),
                                                        rng.uniform(0.6, 1.0), 0.025),
                  EYE, LIMB),
              Box(_v(-length * 0.9, 0, 0.15), _v(0.1, 0.02, 0.15), EYE, TAIL),
              Box(_v(-length * 0.9, 0, 0.02), _v(0.08, 0.3, 0.02), EYE, TAIL)]
    return solids, []


KINDS = {
    "animal": (quadruped, quadruped, quadruped, sitting_animal),
    "human body": (figure, figure, hand, bone, bust),
    "manufactured object": (plate, gear, turned, bracket, aircraft),
}


def generate(label: int, rng: np.random.Generator, count: int = 2048):
    """One shape of class ``CLASSES[label]``: (points, normals, parts), in the unit sphere."""
    kinds = KINDS[CLASSES[label]]
    solids, holes = kinds[int(rng.integers(len(kinds)))](rng)
    points, normals, parts = compose(rng, solids, holes, count)
    points = points - points.mean(axis=0)
    points /= np.linalg.norm(points, axis=1).max()
    return points, normals, parts
