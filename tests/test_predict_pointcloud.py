"""Predictions of point-cloud runs: the class of each new cloud in a folder, and a part label
for every point of new point files, written back in their own format.

Two tiny runs trained once for the module: shapes (round and stretched clouds, in class
folders) and parts (clouds of two blobs, each point labelled by its blob).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

import adaptlab_pointcloud  # noqa: F401 - part of the install: broken fails, never skips
from adaptlab.errors import AdaptlabError

pytestmark = pytest.mark.slow

NUM_POINTS = 256  # the point backbones' default: the domain's NUM_POINTS
PARTS = ["large", "small"]


def _blob(rng, n: int, stretch=(1.0, 1.0, 1.0)) -> np.ndarray:
    return rng.normal(size=(n, 3)) * stretch + rng.normal(size=3) * 5


def _two_blobs(rng, n: int) -> np.ndarray:
    """x y z label: a large blob (0) and a small one (1) apart along a random axis, the small
    one with a quarter of the points. The blobs' spreads are equal, so the cloud's third
    moment along the axis joining them is large (skewness about 0.8, over five standard
    errors at 256 points): every subset the model reads lands in the same principal frame
    with the blobs on the same sides, so a few epochs learn them. (Unequal spreads cancel
    most of that moment, and the frame's sign would then flip from subset to subset.)"""
    small = rng.uniform(size=n) < 1 / 4
    points = rng.normal(size=(n, 3)) * 0.4
    axis = rng.normal(size=3)
    points += np.where(small, 1.35, -0.45)[:, None] * axis / np.linalg.norm(axis)
    return np.column_stack([points + rng.normal(size=3) * 5, small])


def _write_binary_ply(path: Path, points: np.ndarray, intensity: np.ndarray) -> None:
    table = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                         ("intensity", "<f4")])
    table["x"], table["y"], table["z"] = points.T
    table["intensity"] = intensity
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(points)}\n"
              "property float x\nproperty float y\nproperty float z\nproperty float intensity\n"
              "end_header\n")
    path.write_bytes(header.encode() + table.tobytes())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from adaptlab.config import RunConfig
    from adaptlab.run import run

    root = tmp_path_factory.mktemp("pointcloud-predict")
    rng = np.random.default_rng(0)
    for name, stretch in (("round", (1, 1, 1)), ("long", (3, 0.4, 0.4))):
        (root / "shapes" / name).mkdir(parents=True)
        for i in range(6):
            np.savetxt(root / "shapes" / name / f"{name}{i}.xyz", _blob(rng, 300, stretch),
                       fmt="%.5f")
    (root / "parts").mkdir()
    for i in range(12):
        np.savetxt(root / "parts" / f"cloud{i}.xyz", _two_blobs(rng, 400), fmt="%.5f")
    (root / "parts" / "labels.txt").write_text("\n".join(PARTS) + "\n")
    out = {}
    # The part run trains to tell the blobs apart (about 0.95 of points right), so labels
    # put on the wrong points would show; the shape run needs no skill, one epoch.
    for name, epochs, lr in (("shapes", 1, 2e-3), ("parts", 3, 5e-3)):
        out[name] = root / f"{name}-run"
        run(RunConfig(domain="pointcloud", data=str(root / name), strategy="full", device="cpu",
                      epochs=epochs, lr=lr, batch_size=4, out=str(out[name])), progress=False)
    return out


def _evaluated(points: np.ndarray, name: str) -> np.ndarray:
    """The indices of the points the run's evaluation reads of a cloud, drawn by the
    evaluation's own dataset (the point labels carry the indices through it)."""
    from adaptlab.data.points import Cloud, PointCloudDataset

    cloud = Cloud(points.astype(np.float32), name, np.arange(len(points)))
    return PointCloudDataset([(cloud, 0)], NUM_POINTS, train=False,
                             segmentation=True)[0][1].numpy()


def _load(run_dir: Path, with_data: bool = False):
    from adaptlab.run_loading import load_run

    return load_run(run_dir, device="cpu", with_data=with_data)


def test_a_folder_without_class_folders_gets_a_row_per_readable_cloud(runs, tmp_path):
    rng = np.random.default_rng(1)
    new = tmp_path / "new"
    (new / "more").mkdir(parents=True)
    new_ply = trimesh.exchange.ply.export_ply(trimesh.PointCloud(_blob(rng, 500)))
    (new / "a.ply").write_bytes(new_ply)
    np.savetxt(new / "b.xyz", _blob(rng, 400, (3, 0.4, 0.4)))
    np.savetxt(new / "more" / "c.xyz", _blob(rng, 300))
    trimesh.creation.box(extents=(2.0, 1.0, 0.5)).export(new / "d.off")  # sampled, as in training
    (new / "broken.xyz").write_text("0 0 0\n1 two 3\n")
    np.savetxt(new / "tiny.xyz", _blob(rng, 100))
    (new / "notes.txt").write_text("not a cloud")
    result = _load(runs["shapes"]).predict(new, out=tmp_path / "classes.csv")
    table = result.table
    assert sorted(table["path"]) == sorted(str(new / name) for name in
                                           ("a.ply", "b.xyz", "more/c.xyz", "d.off"))
    reasons = {Path(s["file"]).name: s["reason"] for s in result.skipped}
    assert set(reasons) == {"broken.xyz", "tiny.xyz", "notes.txt"}
    assert "line 2: not numbers" in reasons["broken.xyz"]
    assert "100 points" in reasons["tiny.xyz"] and str(NUM_POINTS) in reasons["tiny.xyz"]
    assert (tmp_path / "classes.skipped.csv").is_file()


def test_a_cloud_too_small_or_of_the_wrong_shape_is_refused_by_name(runs, tmp_path):
    rng = np.random.default_rng(2)
    np.savetxt(tmp_path / "tiny.xyz", _blob(rng, 100))
    np.savetxt(tmp_path / "flat.xyz", rng.normal(size=(400, 2)))
    run = _load(runs["shapes"])
    with pytest.raises(AdaptlabError, match=rf"tiny\.xyz.*100 points, fewer than the {NUM_POINTS}"):
        run.predict(tmp_path / "tiny.xyz", out=tmp_path / "tiny.csv")
    with pytest.raises(AdaptlabError, match=r"flat\.xyz.*shape \(400, 2\)"):
        run.predict(tmp_path / "flat.xyz", out=tmp_path / "flat.csv")
    assert not (tmp_path / "tiny.csv").exists()


def test_a_file_of_the_runs_data_is_predicted_as_its_evaluation_read_it(runs, tmp_path):
    """The test split's predictions recompute the run's test accuracy; the same file given
    as --data gets the same probabilities (the same points, the same preprocessing)."""
    from sklearn.metrics import accuracy_score, f1_score

    run = _load(runs["shapes"], with_data=True)
    split = run.predict(split="test", out=tmp_path / "test.csv").table
    test = json.loads((runs["shapes"] / "metrics.json").read_text())["final"]["test"]
    assert accuracy_score(split["label"], split["prediction"]) == pytest.approx(test["accuracy"],
                                                                                abs=1e-6)
    assert f1_score(split["label"], split["prediction"], average="macro") == \
        pytest.approx(test["macro_f1"], abs=1e-6)
    one = run.predict(split["path"][0], out=tmp_path / "one.csv").table
    columns = ["probability_long", "probability_round"]
    # Alone or in a batch of others, the float sums run in another order (CI saw 1.2e-6).
    np.testing.assert_allclose(one[columns].to_numpy(), split[columns].to_numpy()[:1], atol=1e-5)


def test_every_point_of_new_point_files_gets_a_part_label_in_its_own_format(runs, tmp_path):
    rng = np.random.default_rng(3)
    new = tmp_path / "new"
    new.mkdir()
    cloud = _two_blobs(rng, 700)
    points, truth = cloud[:, :3].astype(np.float32), cloud[:, 3].astype(int)
    intensity = rng.uniform(size=700).astype(np.float32)
    _write_binary_ply(new / "scan.ply", points, intensity)
    np.save(new / "array.npy", points[:300])
    np.savetxt(new / "rows.xyz", points[:400], fmt="%.6f", header="x y z", comments="# ")
    (new / "few.pts").write_text("3\n" + "\n".join(" ".join(map(str, p)) for p in points[:3])
                                 + "\n")
    trimesh.creation.box().export(new / "mesh.off")
    result = _load(runs["parts"]).predict(new, out=tmp_path / "parts.csv")
    table = result.table.set_index("path")
    reasons = {Path(s["file"]).name: s["reason"] for s in result.skipped}
    assert set(reasons) == {"mesh.off", "few.pts"}
    assert reasons["mesh.off"].startswith("a mesh") and "3 points" in reasons["few.pts"]

    row = table.loc[str(new / "scan.ply")]
    labelled = Path(row["labels_file"])
    assert labelled == tmp_path / "parts_labels" / "scan.ply"
    vertices = trimesh.load(labelled, process=False).metadata["_ply_raw"]["vertex"]["data"]
    assert len(vertices) == row["points"] == 700
    for axis, name in enumerate("xyz"):
        np.testing.assert_array_equal(vertices[name], points[:, axis])
    np.testing.assert_array_equal(vertices["intensity"], intensity)  # kept
    labels = vertices["label"]
    assert labels.min() >= 0 and labels.max() < len(PARTS)
    for index, part in enumerate(PARTS):
        assert row[f"fraction_{part}"] == pytest.approx(np.mean(labels == index), abs=1e-6)
    # The points outside the evaluation's subset are labelled from the other views: as right
    # as the rest (a label put on the wrong point would be right about half the time).
    unseen = np.setdiff1d(np.arange(700), _evaluated(points, str(new / "scan.ply")))
    assert len(unseen) == 700 - NUM_POINTS
    assert np.mean(labels[unseen] == truth[unseen]) > 0.85

    arrays = np.load(table.loc[str(new / "array.npy"), "labels_file"])
    np.testing.assert_array_equal(arrays["points"], points[:300])
    assert arrays["labels"].shape == (300,)
    assert np.mean(arrays["labels"] == truth[:300]) > 0.85

    rows = Path(table.loc[str(new / "rows.xyz"), "labels_file"])
    assert rows.read_text().startswith("# x y z\n")  # the comment kept
    written = np.loadtxt(rows)
    np.testing.assert_allclose(written[:, :3], points[:400], atol=1e-6)
    assert set(written[:, 3]) <= {0, 1} and np.mean(written[:, 3] == truth[:400]) > 0.85


def test_the_own_test_split_labels_recompute_the_runs_test_metrics(runs, tmp_path):
    """Every point is labelled; evaluation reads a fixed subset of num_points points per
    cloud, so the metrics are recomputed on that subset (drawn here by the evaluation's own
    dataset) against the labels in the files the clouds came from."""
    from sklearn.metrics import confusion_matrix

    run = _load(runs["parts"], with_data=True)
    table = run.predict(split="test", out=tmp_path / "test.csv",
                        batch_size=run.config.batch_size).table
    truth, predicted = [], []
    for path, labels_file in zip(table["path"], table["labels_file"], strict=True):
        source = np.loadtxt(path)
        written = np.load(labels_file)
        assert len(written["labels"]) == len(source) and (written["labels"] >= 0).all()
        evaluated = _evaluated(source[:, :3], path)
        np.testing.assert_array_equal(np.flatnonzero(written["evaluated"]), np.sort(evaluated))
        truth.append(source[evaluated, 3].astype(int))
        predicted.append(written["labels"][evaluated])
    truth, predicted = np.concatenate(truth), np.concatenate(predicted)
    assert set(predicted) == {0, 1}  # both parts predicted: a misplaced label would count
    matrix = confusion_matrix(truth, predicted, labels=range(len(PARTS)))
    union = matrix.sum(0) + matrix.sum(1) - np.diag(matrix)
    ious = np.diag(matrix)[union > 0] / union[union > 0]
    test = json.loads((runs["parts"] / "metrics.json").read_text())["final"]["test"]
    assert test["points"] == len(truth)
    assert np.mean(truth == predicted) == pytest.approx(test["point_accuracy"], abs=1e-6)
    assert ious.mean() == pytest.approx(test["miou"], abs=1e-6)


def test_covering_views_hold_every_point_in_the_runs_preprocessing(runs):
    """The views a cloud is labelled from: the evaluation's subset first, then the rest; each
    view's tensor is its points centred, aligned and scaled as the dataset does it."""
    from adaptlab.data.points import Cloud, normalise
    from adaptlab.predict.segmentation import covering_views

    points = _two_blobs(np.random.default_rng(4), 1000)[:, :3].astype(np.float32)
    cloud = Cloud(points, "covered")
    views = covering_views(_load(runs["parts"]), cloud)
    assert len(views) == int(np.ceil(1000 / NUM_POINTS))
    held = np.concatenate([where for _, where in views])
    assert set(held) == set(range(1000))
    assert len(np.unique(np.concatenate([where for _, where in views[:-1]]))) == \
        NUM_POINTS * (len(views) - 1)  # disjoint but for the last view's top-up
    for tensor, where in views:
        assert len(where) == NUM_POINTS and len(set(where)) == NUM_POINTS
        torch.testing.assert_close(tensor, torch.from_numpy(normalise(points[where], align=True)),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name, output", [("shapes", (2,)), ("parts", (NUM_POINTS, 2))])
def test_both_runs_export_to_onnx_with_the_runs_outputs(runs, name, output, tmp_path):
    """The merged folder and its ONNX graph give the run's logits (per cloud; per point for
    the part run) for the test split's clouds, as the evaluation samples their points."""
    from export_checks import TOLERANCE, export_and_compare, held_out

    reference = held_out(runs[name])
    assert reference[0][1][0].shape[1:] == output
    check = export_and_compare(runs[name], tmp_path / "export", "onnx", reference)
    assert check.graph_inputs == ["points"]
    assert check.differences["folder"] < TOLERANCE and check.differences["onnx"] < TOLERANCE
