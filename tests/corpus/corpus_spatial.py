"""Bad point clouds and weather fields for the corpus (see make_corpus.py, which registers
every builder named in ``BUILDERS``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


# -- point clouds ---------------------------------------------------------------------------------
def _ply(path: Path, properties: list[str], rows: np.ndarray, faces: list[list[int]] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ["ply", "format ascii 1.0", f"element vertex {len(rows)}"]
    header += [f"property float {name}" for name in properties]
    if faces:
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    lines = header + ["end_header"] + [" ".join(f"{v:g}" for v in row) for row in rows]
    lines += [" ".join(map(str, [len(face), *face])) for face in faces]
    path.write_text("\n".join(lines) + "\n")


def _points(seed: int, columns: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).random((64, columns))


def ply_missing_z(root: Path) -> Path:
    for name in ("chair", "table"):
        _ply(root / "shapes" / name / "a.ply", ["x", "y"], _points(1, 2), faces=[[0, 1, 2]])
    return root / "shapes"


def obj_no_faces(root: Path) -> Path:
    for name in ("chair", "table"):
        folder = root / "shapes" / name
        folder.mkdir(parents=True)
        (folder / "a.obj").write_text("".join(f"v {x:g} {y:g} {z:g}\n" for x, y, z in _points(2)))
    return root / "shapes"


def ply_no_label_property(root: Path) -> Path:
    # No class folders: part segmentation, which needs a label per point.
    _ply(root / "parts" / "a.ply", ["x", "y", "z"], _points(3))
    _ply(root / "parts" / "b.ply", ["x", "y", "z", "intensity"], _points(4, 4))
    return root / "parts"


def xyz_not_numbers(root: Path) -> Path:
    (root / "parts").mkdir()
    (root / "parts" / "scan.xyz").write_text("0 0 0 1\n1 1 1 0\nx y z label\n")
    return root / "parts"


def xyz_nan(root: Path) -> Path:
    (root / "parts").mkdir()
    (root / "parts" / "scan.xyz").write_text("0 0 0 1\nnan 1 1 0\n2 2 2 1\n")
    return root / "parts"


def npy_pickled(root: Path) -> Path:
    for name in ("chair", "table"):
        (root / "shapes" / name).mkdir(parents=True)
        np.save(root / "shapes" / name / "a.npy", np.array([{"x": 1}], dtype=object))
    return root / "shapes"


def points_no_files(root: Path) -> Path:
    for name in ("chair", "table"):
        (root / "shapes" / name).mkdir(parents=True)
        (root / "shapes" / name / "notes.txt").write_text("scans pending\n")
    return root / "shapes"


def points_labels_file_short(root: Path) -> Path:
    (root / "parts").mkdir()
    for i in range(3):
        rows = np.hstack([_points(i), np.full((64, 1), i + 1)])
        np.savetxt(root / "parts" / f"s{i}.xyz", rows, fmt="%g")
    (root / "parts" / "labels.txt").write_text("seat\nleg\n")
    return root / "parts"


def points_one_class(root: Path) -> Path:
    for i in range(4):
        _ply(root / "shapes" / "chair" / f"c{i}.ply", ["x", "y", "z"], _points(i))
    return root / "shapes"


def stl_zero_area(root: Path) -> Path:
    facet = ("facet normal 0 0 0\n outer loop\n  vertex 0 0 0\n  vertex 1 1 1\n"
             "  vertex 2 2 2\n endloop\nendfacet\n")
    for name in ("chair", "table"):
        (root / "shapes" / name).mkdir(parents=True)
        (root / "shapes" / name / "a.stl").write_text(f"solid flat\n{facet}endsolid flat\n")
    return root / "shapes"


# -- weather fields -------------------------------------------------------------------------------
def _fields(days: int = 40, lat=None, lon=None, label=True, variable: str = "z500",
            lat_name: str = "lat"):
    import xarray as xr

    lat = np.linspace(30, 70, 6) if lat is None else np.asarray(lat, dtype=float)
    lon = np.arange(8) * 45.0 if lon is None else np.asarray(lon, dtype=float)
    rng = np.random.default_rng(0)
    data = {variable: (("time", lat_name, "lon"),
                       rng.normal(5500, 20, (days, len(lat), len(lon))).astype("float32"))}
    if label:
        data["label"] = (("time",), (rng.random(days) < 0.4).astype(np.int64))
    return xr.Dataset(data, coords={"time": np.arange(days), lat_name: lat, "lon": lon})


def _nc(dataset, path: Path) -> Path:
    dataset.to_netcdf(path, engine="h5netcdf")
    return path


def fields_no_label(root: Path) -> Path:
    return _nc(_fields(label=False), root / "z500.nc")


def fields_no_variable(root: Path) -> Path:
    return _nc(_fields().drop_vars("z500"), root / "z500.nc")


def fields_no_latitude(root: Path) -> Path:
    return _nc(_fields(lat_name="row"), root / "z500.nc")


def fields_label_mismatch(root: Path) -> Path:
    import xarray as xr

    dataset = _fields().drop_vars("label")
    dataset["label"] = xr.DataArray(np.zeros(25, np.int64), dims=("day",))
    return _nc(dataset, root / "z500.nc")


def fields_label_values(root: Path) -> Path:
    dataset = _fields()
    dataset["label"][:3] = [0, 1, 2]
    return _nc(dataset, root / "z500.nc")


def fields_nan(root: Path) -> Path:
    dataset = _fields()
    dataset["z500"][5, 2, 3] = np.nan
    return _nc(dataset, root / "z500.nc")


def fields_corrupt(root: Path) -> Path:
    (root / "z500.nc").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 30)
    return root / "z500.nc"


def fields_csv(root: Path) -> Path:
    (root / "z500.csv").write_text("time,z500,label\n0,5500,0\n")
    return root / "z500.csv"


def fields_empty_zarr(root: Path) -> Path:
    (root / "z500.zarr").mkdir()
    return root / "z500.zarr"


def fields_other_grid(root: Path) -> Path:
    return _nc(_fields(lat=np.linspace(-20, 20, 6)), root / "z500-tropics.nc")


def fields_renamed_variable(root: Path) -> Path:
    return _nc(_fields(variable="geopotential"), root / "z500-renamed.nc")


def fields_good(root: Path) -> Path:
    return _nc(_fields(), root / "z500.nc")


BUILDERS = {builder.__name__: builder for builder in (
    ply_missing_z,
    obj_no_faces,
    ply_no_label_property,
    xyz_not_numbers,
    xyz_nan,
    npy_pickled,
    points_no_files,
    points_labels_file_short,
    points_one_class,
    stl_zero_area,
    fields_no_label,
    fields_no_variable,
    fields_no_latitude,
    fields_label_mismatch,
    fields_label_values,
    fields_nan,
    fields_corrupt,
    fields_csv,
    fields_empty_zarr,
    fields_other_grid,
    fields_renamed_variable,
    fields_good,
)}
