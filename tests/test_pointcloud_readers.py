"""Point-cloud files in every format the plugin reads, written here, and the bad inputs."""

from __future__ import annotations

import laspy
import numpy as np
import pytest
import torch
import trimesh

from adaptlab.errors import AdaptlabError
from adaptlab_pointcloud import readers  # part of the install: broken fails, never skips


def _box_mesh():
    return trimesh.creation.box(extents=(2.0, 1.0, 0.5))


def _cloud(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) * (3.0, 1.0, 0.5) + (100.0, -20.0, 5.0)


def test_every_mesh_format_is_sampled_on_the_surface(tmp_path):
    mesh = _box_mesh()
    for suffix in (".ply", ".off", ".obj", ".stl"):
        path = tmp_path / f"box{suffix}"
        mesh.export(path)
        cloud = readers.read_points(path, sampled=500)
        assert cloud.points.shape == (500, 3) and cloud.points.dtype == np.float32
        # Every sample lies on the box's surface: one coordinate at its face.
        on_face = np.isclose(np.abs(cloud.points), (1.0, 0.5, 0.25), atol=1e-4).any(axis=1)
        assert on_face.all(), suffix
        assert cloud.name == str(path)


def test_point_files_and_scans_keep_their_coordinates_and_labels(tmp_path):
    points = _cloud()
    labels = np.arange(len(points)) % 4
    table = np.column_stack([points, labels])
    np.savetxt(tmp_path / "a.xyz", table, fmt="%.6f")
    with open(tmp_path / "a.pts", "w") as handle:
        handle.write(f"{len(points)}\n")
        np.savetxt(handle, table, fmt="%.6f")
    np.save(tmp_path / "a.npy", table)
    cloud = trimesh.PointCloud(points)
    header = trimesh.exchange.ply.export_ply(cloud, encoding="ascii").decode()
    # A PLY point cloud with a per-point label property, as CloudCompare writes them.
    lines = header.split("end_header\n")[0].splitlines()
    body = "\n".join(f"{x} {y} {z} {int(k)}" for (x, y, z), k in zip(points, labels,
                                                                     strict=True))
    ply = "\n".join(lines + ["property int label", "end_header", body]) + "\n"
    (tmp_path / "a.ply").write_text(ply)
    # The same in binary, as most scanners and our own part labels write PLY.
    record = np.zeros(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                          ("label", "<i4")])
    record["x"], record["y"], record["z"], record["label"] = *points.T, labels
    (tmp_path / "b.ply").write_bytes(
        f"ply\nformat binary_little_endian 1.0\nelement vertex {len(points)}\nproperty float x\n"
        "property float y\nproperty float z\nproperty int label\nend_header\n".encode()
        + record.tobytes())
    las = laspy.create(point_format=3, file_version="1.2")
    las.header.scales = (0.001, 0.001, 0.001)
    las.header.offsets = points.min(axis=0)
    las.x, las.y, las.z = points[:, 0], points[:, 1], points[:, 2]
    las.classification = labels.astype(np.uint8)
    las.write(tmp_path / "a.las")
    las.write(tmp_path / "a.laz")
    for name in ("a.xyz", "a.pts", "a.npy", "a.ply", "b.ply", "a.las", "a.laz"):
        read = readers.read_points(tmp_path / name, labels=True)
        np.testing.assert_allclose(read.points, points, atol=2e-3, err_msg=name)
        np.testing.assert_array_equal(read.point_labels, labels, err_msg=name)
        assert read.up_axis == (2 if name.startswith("a.la") else None)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("flat.off", "OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n", "a mesh with no faces"),
    ("noz.ply", "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
                "end_header\n0 0\n1 1\n", "PLY vertex element has no property 'z'"),
    ("nan.xyz", "0 0 0\n1 nan 2\n3 3 3\n", "NaN or infinite coordinate at point 1, y"),
    ("words.xyz", "0 0 0\n1 two 3\n", "line 2: not numbers"),
    ("ragged.pts", "2\n0 0 0 5\n1 1 1\n", "line 3: 3 columns, the first point has 4"),
    ("scan.ply", "not a ply at all", "cannot read as a PLY mesh"),
    ("scan.las", "not a las file", "cannot read as LAS"),
    ("cloud.pcd", "x", "unknown point-cloud format"),
])
def test_bad_files_are_named_with_what_is_wrong(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(AdaptlabError) as error:
        readers.read_points(path)
    assert str(path) in str(error.value) and message in str(error.value)
    assert "\n" not in str(error.value)


def test_pickled_npy_and_missing_labels_are_refused(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(AdaptlabError, match="objects.npy: not a numeric NPY array"):
        readers.read_points(tmp_path / "objects.npy")
    np.save(tmp_path / "xyz.npy", _cloud())
    with pytest.raises(AdaptlabError, match="xyz.npy: no label column"):
        readers.read_points(tmp_path / "xyz.npy", labels=True)
    _box_mesh().export(tmp_path / "box.stl")
    with pytest.raises(AdaptlabError, match="box.stl: a mesh carries no per-point labels"):
        readers.read_points(tmp_path / "box.stl", labels=True)


def test_a_folder_of_classes_reads_every_format_and_lists_what_it_skipped(tmp_path):
    for i in range(4):
        (tmp_path / "boxes").mkdir(exist_ok=True)
        trimesh.creation.box(extents=(1 + i, 1, 1)).export(tmp_path / "boxes" / f"b{i}.off")
        (tmp_path / "blobs").mkdir(exist_ok=True)
        np.save(tmp_path / "blobs" / f"s{i}.npy", _cloud(600, seed=i))
    (tmp_path / "blobs" / "broken.xyz").write_text("1 2\n3 4 5\n")
    data = readers.read_point_folder(tmp_path)
    assert data.class_names == ["blobs", "boxes"] and data.modality == "points"
    assert sum(data.counts().values()) == 8
    assert data.skipped == [{"file": str(tmp_path / "blobs" / "broken.xyz"),
                             "reason": f"{tmp_path / 'blobs' / 'broken.xyz'}, line 2: 3 columns, "
                                       "the first point has 2"}]


def test_a_cloud_with_fewer_points_than_the_network_samples_is_named(tmp_path):
    from adaptlab.backbones.point_nets import point_transformer
    from adaptlab.data.torch_datasets import make_torch_dataset

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            np.save(tmp_path / cls / f"{i}.npy", _cloud(600, seed=i))
    np.save(tmp_path / "a" / "small.npy", _cloud(100))
    data = readers.read_point_folder(tmp_path)
    split = next(s for s, items in data.samples.items()
                 if any(c.name.endswith("small.npy") for c, _ in items))
    with pytest.raises(AdaptlabError, match=r"small\.npy .*100 points, fewer than the 512"):
        make_torch_dataset(data, split, point_transformer({"num_points": 512}), split == "train")


def test_training_views_are_augmented_and_evaluation_views_fixed():
    from adaptlab.data.points import Cloud, PointCloudDataset

    samples = [(Cloud(_cloud(800).astype(np.float32), "c"), 1)]
    train = PointCloudDataset(samples, 256, train=True, seed=3)
    evaluation = PointCloudDataset(samples, 256, train=False)
    a, b = train[0][0], train[0][0]
    assert torch.equal(a, b)  # seeded per (seed, epoch, index)
    train.set_epoch(1)
    assert not torch.equal(a, train[0][0])
    assert torch.equal(evaluation[0][0], evaluation[0][0])
    view = evaluation[0][0]
    assert view.shape == (256, 3)
    assert torch.allclose(view.mean(0), torch.zeros(3), atol=1e-5)
    assert float(view.norm(dim=1).max()) == pytest.approx(1.0, abs=1e-5)
