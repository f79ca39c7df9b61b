"""The point-cloud demo: generated shapes (the plentiful source) and scans of CGAL's real
example meshes (the scarce target), in the same three coarse classes; and a part
segmentation set of generated animals and figures.

Every scan is drawn from a fixed seed, so every run and every seed of a learning curve sees
the same clouds; the splits of the meshes keep all scans of one mesh on one side.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from adaptlab.data.points import Cloud
from adaptlab.data.splits import SplitDataset, stratified_split
from adaptlab_pointcloud.scans import scan
from adaptlab_pointcloud.shapes import CLASSES, PARTS, generate

SCANS_PER_MESH = 8


def _generated(count_per_class: int, seed: int, labels=(0, 1, 2)):
    rng = np.random.default_rng(seed)
    for label in labels:
        for i in range(count_per_class):
            points, normals, parts = generate(label, rng)
            scanned, index = scan(points, normals, rng)
            yield label, i, scanned, parts[index]


def generated_shapes(options: dict) -> SplitDataset:
    """600 generated shapes (200 per class), one scan each (the source)."""
    items = [(Cloud(points, f"generated {CLASSES[label]} {i}"), label)
             for label, i, points, _ in _generated(200, seed=5)]
    return SplitDataset(class_names=list(CLASSES), samples=stratified_split(items, seed=0),
                        source="generated shapes, 600 scans", modality="points")


def cgal_meshes(options: dict) -> SplitDataset:
    """Scans of 37 real meshes (CGAL's example data), 8 per mesh, split by mesh."""
    with resources.files("adaptlab_pointcloud").joinpath("demo_data/cgal_meshes.npz") \
            .open("rb") as handle:
        data = np.load(handle, allow_pickle=False)
        clouds, labels, names = data["clouds"], data["labels"], data["names"]
        classes = [str(name) for name in data["classes"]]
    if classes != CLASSES:
        raise AssertionError(f"demo data classes {classes} differ from {CLASSES}")
    rng = np.random.default_rng(17)
    items, groups = [], []
    for cloud, label, name in zip(clouds, labels, names, strict=True):
        cloud = cloud.astype(np.float32)
        for i in range(SCANS_PER_MESH):
            points, _ = scan(cloud[:, :3], cloud[:, 3:], rng)
            items.append((Cloud(points, f"{name}.off scan {i}"), int(label)))
            groups.append(str(name))
    return SplitDataset(class_names=list(CLASSES),
                        samples=stratified_split(items, seed=0, groups=groups),
                        source=f"CGAL example meshes, {len(clouds)} meshes x {SCANS_PER_MESH} "
                               "scans", modality="points")


def generated_parts(options: dict) -> SplitDataset:
    """400 generated animals and figures with a part label per point (body, limb, head,
    tail)."""
    items = [(Cloud(points, f"generated {CLASSES[label]} {i}", point_labels=parts), label)
             for label, i, points, parts in _generated(200, seed=9, labels=(0, 1))]
    return SplitDataset(class_names=list(PARTS), samples=stratified_split(items, seed=0),
                        source="generated animals and figures, 400 scans with part labels",
                        modality="point-segments", task="segmentation")
