"""Point clouds in the formats users have, and folders of them.

- meshes: PLY, OFF, OBJ, STL (trimesh), sampled uniformly by area to points; a PLY with
  vertices and no faces is a point cloud already and is read as one;
- point arrays: XYZ and PTS text (x y z, then any columns; PTS may start with the point
  count), NPY (N, 3+) read without pickle;
- scans: LAS and LAZ (laspy; LAZ through lazrs), in real coordinates, z up.

Per-point labels for part segmentation come from a PLY vertex property ``label`` (or
``class``, ``scalar_label``), the 4th column of XYZ / PTS / NPY, or a LAS file's
``classification``. Every problem is one line naming the file and what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adaptlab.data.points import Cloud, check_points
from adaptlab.data.splits import SplitDataset, stratified_split
from adaptlab.errors import AdaptlabError

MESH_SUFFIXES = (".ply", ".off", ".obj", ".stl")
ARRAY_SUFFIXES = (".xyz", ".pts", ".npy")
SCAN_SUFFIXES = (".las", ".laz")
SUFFIXES = MESH_SUFFIXES + ARRAY_SUFFIXES + SCAN_SUFFIXES
PLY_LABELS = ("label", "class", "scalar_label")
SAMPLED_POINTS = 2048


def _mesh(path: Path, labels: bool, sampled: int, seed: int) -> Cloud:
    import trimesh

    try:
        loaded = trimesh.load(path, force=None, process=False)
    except KeyError as exc:  # trimesh's PLY reader indexes the properties it needs
        raise AdaptlabError(f"{path}: PLY vertex element has no property {exc.args[0]!r} "
                            "(x, y and z are required)") from exc
    except Exception as exc:  # noqa: BLE001 - trimesh raises many types for bad files
        raise AdaptlabError(f"{path}: cannot read as a {path.suffix[1:].upper()} mesh "
                            f"({type(exc).__name__}: {exc})") from exc
    if isinstance(loaded, trimesh.Scene):
        if not loaded.geometry:
            raise AdaptlabError(f"{path}: the file holds no geometry")
        loaded = loaded.to_mesh()
    if isinstance(loaded, trimesh.PointCloud):
        if path.suffix.lower() != ".ply":
            raise AdaptlabError(f"{path}: a mesh with no faces (only vertices)")
        raw = loaded.metadata.get("_ply_raw", {}).get("vertex", {}).get("data", {})
        point_labels = None
        if labels:
            # ASCII PLY comes as a dict of columns, binary PLY as one structured array.
            fields = raw.dtype.names or () if isinstance(raw, np.ndarray) else tuple(raw)
            name = next((n for n in PLY_LABELS if n in fields), None)
            if name is None:
                raise AdaptlabError(f"{path}: PLY vertex element has no per-point label "
                                    f"property (one of {list(PLY_LABELS)})")
            point_labels = np.asarray(raw[name]).reshape(-1).astype(np.int64)
        return Cloud(check_points(loaded.vertices, str(path)), str(path), point_labels)
    if labels:
        raise AdaptlabError(f"{path}: a mesh carries no per-point labels; segmentation reads "
                            "point files (PLY points with a 'label' property, XYZ / PTS / NPY "
                            "with a 4th column, LAS / LAZ)")
    if len(loaded.faces) == 0:
        raise AdaptlabError(f"{path}: a mesh with no faces (only vertices)")
    check_points(loaded.vertices, str(path))
    if not loaded.area > 0:
        raise AdaptlabError(f"{path}: every face has zero area; nothing to sample")
    points, _ = trimesh.sample.sample_surface(loaded, sampled, seed=seed)
    return Cloud(check_points(points, str(path)), str(path))


def _text_array(path: Path) -> np.ndarray:
    lines = path.read_text(errors="replace").splitlines()
    rows, start = [], 0
    if path.suffix.lower() == ".pts" and lines and len(lines[0].split()) == 1:
        start = 1  # the point count
    for number, line in enumerate(lines[start:], start=start + 1):
        fields = line.replace(",", " ").split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            rows.append([float(value) for value in fields])
        except ValueError:
            raise AdaptlabError(f"{path}, line {number}: not numbers: {line.strip()[:60]!r}"
                                ) from None
        if len(rows[-1]) != len(rows[0]):
            raise AdaptlabError(f"{path}, line {number}: {len(rows[-1])} columns, the first "
                                f"point has {len(rows[0])}")
    if not rows:
        raise AdaptlabError(f"{path}: no points")
    return np.asarray(rows)


def _array(path: Path, labels: bool) -> Cloud:
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise AdaptlabError(f"{path}: not a numeric NPY array ({exc})") from exc
    else:
        array = _text_array(path)
    points = check_points(array, str(path))
    point_labels = None
    if labels:
        if array.ndim != 2 or array.shape[1] < 4:
            raise AdaptlabError(f"{path}: no label column (segmentation needs x y z label)")
        column = array[:, 3]
        if not np.isfinite(column).all() or (column != np.round(column)).any() \
                or (column < 0).any():
            bad = int(np.flatnonzero(~np.isfinite(column) | (column != np.round(column))
                                     | (column < 0))[0])
            raise AdaptlabError(f"{path}: label of point {bad} is {column[bad]!r}, not a class "
                                "index")
        point_labels = column.astype(np.int64)
    return Cloud(points, str(path), point_labels)


def _scan(path: Path, labels: bool) -> Cloud:
    import laspy

    try:
        data = laspy.read(path)
    except Exception as exc:  # noqa: BLE001 - laspy raises its own and OS errors
        raise AdaptlabError(f"{path}: cannot read as {path.suffix[1:].upper()} "
                            f"({type(exc).__name__}: {exc})") from exc
    points = check_points(np.stack([data.x, data.y, data.z], axis=1), str(path))
    point_labels = np.asarray(data.classification, dtype=np.int64) if labels else None
    return Cloud(points, str(path), point_labels, up_axis=2)


def read_points(path: str | Path, labels: bool = False, sampled: int = SAMPLED_POINTS,
                seed: int = 0) -> Cloud:
    """One file as a :class:`Cloud` (meshes sampled to ``sampled`` points)."""
    path = Path(path)
    if not path.is_file():
        raise AdaptlabError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in MESH_SUFFIXES:
        return _mesh(path, labels, sampled, seed)
    if suffix in ARRAY_SUFFIXES:
        return _array(path, labels)
    if suffix in SCAN_SUFFIXES:
        return _scan(path, labels)
    raise AdaptlabError(f"{path}: unknown point-cloud format; reads {', '.join(SUFFIXES)}")


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)


def read_point_folder(root: str | Path, seed: int = 0, **_: object) -> SplitDataset:
    """A folder of class subfolders (shape classification), or a folder of labelled point
    files (part segmentation; class names from ``labels.txt``, one per line, when present).

    Unreadable files are skipped and listed with their reason, as image folders are."""
    root = Path(root)
    if not root.is_dir():
        raise AdaptlabError(f"{root}: not a folder")
    skipped: list[dict[str, str]] = []
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    segmentation = not classes
    if len(classes) == 1:
        raise AdaptlabError(f"{root} has one class folder ({classes[0].name!r}); "
                            "classification needs at least two")
    entries = [(path, 0) for path in _files(root)] if segmentation else \
        [(path, label) for label, folder in enumerate(classes) for path in _files(folder)]
    if not entries:
        raise AdaptlabError(f"{root}: no point-cloud files ({', '.join(SUFFIXES)}) in it or "
                            "in class subfolders")
    items = []
    for path, label in entries:
        try:
            items.append((read_points(path, labels=segmentation, seed=seed), label))
        except AdaptlabError as exc:
            skipped.append({"file": str(path), "reason": str(exc)})
    if not items:
        raise AdaptlabError(f"{root}: no readable file; first problem: {skipped[0]['reason']}")
    if segmentation:
        return _segmentation_set(root, items, skipped, seed)
    names = [folder.name for folder in classes]
    empty = sorted(set(range(len(names))) - {label for _, label in items})
    if empty:
        raise AdaptlabError(f"{root}: class folder {names[empty[0]]!r} has no readable file")
    return SplitDataset(class_names=names, samples=stratified_split(items, seed=seed),
                        skipped=skipped, source=str(root), modality="points")


def _segmentation_set(root: Path, items, skipped, seed: int) -> SplitDataset:
    top = max(int(cloud.point_labels.max()) for cloud, _ in items)
    names_file = root / "labels.txt"
    if names_file.is_file():
        names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        if top >= len(names):
            culprit = next(c.name for c, _ in items if c.point_labels.max() == top)
            raise AdaptlabError(f"{culprit}: label {top}, but {names_file} names only "
                                f"{len(names)} classes")
    else:
        names = [f"class {i}" for i in range(top + 1)]
    if len(names) < 2:
        raise AdaptlabError(f"{root}: segmentation needs at least 2 part classes, the files "
                            f"hold {len(names)}")
    return SplitDataset(class_names=names, samples=stratified_split(items, seed=seed),
                        skipped=skipped, source=str(root), modality="point-segments",
                        task="segmentation")
