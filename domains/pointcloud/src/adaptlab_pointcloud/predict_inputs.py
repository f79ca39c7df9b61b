"""New point clouds to predict, and the labelled files part segmentation writes back.

``--data`` is one file or a folder (searched to any depth: class sub-folders are read but
their names ignored) of the formats training reads. Each file is read as training reads it
(meshes sampled to points with the run's seed); one that cannot be read, or holds fewer points
than the run's backbone reads per cloud, is skipped and listed with the reason.

A shape-classification run keeps only the points its evaluation reads of each cloud (chosen
by the run's own dataset builder), so a folder of large scans costs ``num_points`` points per
file in memory. A part-segmentation run labels every point, so it keeps whole clouds; it reads
point files only (PLY points, XYZ / PTS / NPY, LAS / LAZ), as its training does: a mesh has no
points of its own to label. Each labelled file is its input's format with the label added:

- PLY: every vertex property kept, ``label`` added (an input ``label`` is kept as
  ``label_input``), written as binary PLY;
- XYZ / PTS: the label appended to each point's line (comments and the PTS count kept);
- NPY: an NPZ with the input array as ``points`` and ``labels``;
- LAS / LAZ: the labels in ``classification``, the field LiDAR tools colour by.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from adaptlab.data.points import Cloud
from adaptlab.errors import AdaptlabError
from adaptlab.predict.inputs import NO_LABEL, PredictionInputs, input_files
from adaptlab_pointcloud.readers import MESH_SUFFIXES, SUFFIXES, read_points

if TYPE_CHECKING:
    from adaptlab.run_loading import LoadedRun

CLASS_NAMES_FILE = "labels.txt"  # a segmentation folder's class names: not an input
PLY_TYPES = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int",
             "u4": "uint", "f4": "float", "f8": "double"}


def _ply_header(path: Path) -> list[str]:
    with path.open("rb") as handle:
        header = handle.read(65536).split(b"end_header")[0]
    return header.decode("ascii", errors="replace").splitlines()


def _ply_has_faces(path: Path) -> bool:
    """Whether a PLY file's header declares faces (a mesh, not a point cloud)."""
    return any(line.split()[:2] == ["element", "face"] and line.split()[2:3] != ["0"]
               for line in _ply_header(path))


def _not_readable(file: Path, segmentation: bool) -> str | None:
    """Why ``file`` is no input for this run, when that shows before reading it."""
    suffix = file.suffix.lower()
    if suffix not in SUFFIXES:
        return f"not a point-cloud file (suffix {file.suffix or 'none'!r}; reads {', '.join(SUFFIXES)})"
    if segmentation and suffix in MESH_SUFFIXES and (suffix != ".ply" or _ply_has_faces(file)):
        return ("a mesh: part segmentation labels the points of a point file (PLY points, XYZ / "
                "PTS / NPY, LAS / LAZ), as its training reads them")
    return None


def read_point_inputs(path: Path, run: LoadedRun) -> PredictionInputs:
    """The point clouds at ``path`` as inputs to ``run`` (see the module's docstring)."""
    from adaptlab.predict.segmentation import evaluated_points

    segmentation = run.data.modality == "point-segments"
    needed = run.backbone.num_points
    samples, names, files, skipped = [], [], [], []
    for file in input_files(path):
        if file.name == CLASS_NAMES_FILE and file.parent == path:
            continue
        reason = _not_readable(file, segmentation)
        if reason is None:
            try:
                cloud = read_points(file, seed=run.config.seed)
            except AdaptlabError as exc:
                reason = str(exc)
            else:
                if len(cloud.points) < needed:
                    reason = (f"{len(cloud.points)} points, fewer than the {needed} the run's "
                              "backbone reads per cloud")
        if reason is not None:
            skipped.append({"file": str(file), "reason": reason})
            continue
        if segmentation:  # unknown per point; the dataset builder passes them through
            cloud.point_labels = np.full(len(cloud.points), NO_LABEL, dtype=np.int64)
        else:
            # Exactly num_points points: the dataset builder reads them all, in this order.
            cloud = Cloud(cloud.points[evaluated_points(run, cloud)], cloud.name,
                          up_axis=cloud.up_axis)
        samples.append((cloud, NO_LABEL))
        names.append(str(file))
        files.append(file)
    details = {"files": files, "root": path if path.is_dir() else path.parent}
    if segmentation:
        details["write_labels"] = write_labelled_file
    return PredictionInputs(samples=samples, names=names, modality=run.data.modality,
                            skipped=skipped, source=str(path), details=details)


def write_labelled_file(source: Path, labels: np.ndarray, stem: Path) -> Path:
    """``source`` with a label per point added, written to ``stem`` plus the suffix its
    format takes (the module's docstring says how); returns the path written."""
    suffix = source.suffix.lower()
    if suffix == ".ply":
        return _labelled_ply(source, labels, stem.with_suffix(source.suffix))
    if suffix in (".xyz", ".pts"):
        return _labelled_text(source, labels, stem.with_suffix(source.suffix))
    if suffix == ".npy":
        target = stem.with_suffix(".npz")
        np.savez(target, points=np.load(source, allow_pickle=False), labels=labels)
        return target
    if suffix in (".las", ".laz"):
        return _labelled_scan(source, labels, stem.with_suffix(source.suffix))
    raise AdaptlabError(f"{source}: cannot write per-point labels in {suffix} files")


def _labelled_ply(source: Path, labels: np.ndarray, target: Path) -> Path:
    import trimesh

    loaded = trimesh.load(source, process=False)
    # trimesh keeps a PLY's vertex element as read: a structured array (binary) or a dict of
    # columns (ASCII), with the properties in file order.
    vertex = loaded.metadata.get("_ply_raw", {}).get("vertex", {})
    columns = {name: np.asarray(vertex["data"][name]).reshape(-1)
               for name in vertex.get("properties", {})}
    if not columns or any(len(column) != len(labels) for column in columns.values()):
        raise AdaptlabError(f"{source}: changed since it was read (vertex count differs)")
    renamed = {name: "label_input" if name == "label" else name for name in columns}
    fields = [(renamed[name], column.dtype.newbyteorder("<")) for name, column in columns.items()]
    fields.append(("label", np.dtype("<i4")))
    table = np.empty(len(labels), dtype=fields)
    for name, column in columns.items():
        table[renamed[name]] = column
    table["label"] = labels
    properties = []
    for name, dtype in fields:
        kind = f"{dtype.kind}{dtype.itemsize}"
        if kind not in PLY_TYPES:
            raise AdaptlabError(f"{source}: vertex property {name!r} ({dtype}) is not a PLY "
                                "scalar; cannot write it back with labels")
        properties.append(f"property {PLY_TYPES[kind]} {name}")
    ascii_input = any(line.split()[:2] == ["format", "ascii"] for line in _ply_header(source))
    encoding = "ascii" if ascii_input else "binary_little_endian"  # the input's own
    header = ["ply", f"format {encoding} 1.0", "comment per-point labels predicted",
              f"element vertex {len(table)}", *properties, "end_header"]
    with target.open("wb") as handle:
        handle.write(("\n".join(header) + "\n").encode("ascii"))
        if ascii_input:
            formats = ["%d" if dtype.kind in "iu" else "%.9g" if dtype.itemsize == 4 else "%.17g"
                       for _, dtype in fields]
            np.savetxt(handle, table, fmt=formats)
        else:
            handle.write(table.tobytes())
    return target


def _labelled_text(source: Path, labels: np.ndarray, target: Path) -> Path:
    """Each point's line with its label appended; the lines the reader passes over (blank,
    ``#`` comments, a PTS file's count) are kept as they are."""
    lines = source.read_text(errors="replace").splitlines()
    counted = source.suffix.lower() == ".pts" and lines and len(lines[0].split()) == 1
    out, point = [], 0
    for number, line in enumerate(lines):
        fields = line.replace(",", " ").split()
        if fields and not fields[0].startswith("#") and not (counted and number == 0):
            if point == len(labels):
                break
            line = f"{line.rstrip()}{',' if ',' in line else ' '}{labels[point]}"
            point += 1
        out.append(line)
    if point != len(labels):
        raise AdaptlabError(f"{source}: changed since it was read ({point} points now, "
                            f"{len(labels)} labelled)")
    target.write_text("\n".join(out) + "\n")
    return target


def _labelled_scan(source: Path, labels: np.ndarray, target: Path) -> Path:
    import laspy

    scan = laspy.read(source)
    if len(scan.points) != len(labels):
        raise AdaptlabError(f"{source}: changed since it was read (point count differs)")
    # Point formats 0-5 keep 5 bits of class; 6 and above a full byte.
    limit = 31 if scan.header.point_format.id < 6 else 255
    if labels.max(initial=0) > limit:
        raise AdaptlabError(f"{source}: label {int(labels.max())} does not fit LAS point format "
                            f"{scan.header.point_format.id}'s classification (0-{limit})")
    scan.classification = labels.astype(np.uint8)
    scan.write(target)
    return target
