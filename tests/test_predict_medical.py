"""Predictions of medical-imaging runs: the run's own test split gives back the reported
metrics, a loose folder of scans (.npy, .npz, NIfTI, DICOM; no class folders) is predicted one
row per image or slice without the training data, unreadable files are skipped and listed,
and a scan of a shape the model cannot take is refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, roc_auc_score

from adaptlab.config import RunConfig
from adaptlab.errors import AdaptlabError
from adaptlab.run import run
from adaptlab.run_loading import load_run
from conftest import run_cli

pytestmark = pytest.mark.slow

CLASSES = ["0", "1", "2"]
PROBABILITIES = [f"probability_{c}" for c in CLASSES]


def _planted(rng, label: int, size: int = 28) -> np.ndarray:
    """A noisy image whose class is where a bright square sits."""
    image = rng.normal(100, 20, size=(size, size))
    r, c = [(2, 2), (2, 16), (16, 9)][label]
    image[r:r + 8, c:c + 8] += 80
    return image.clip(0, 255)


def _stack(rng, count: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(count) % 3
    return np.stack([_planted(rng, y) for y in labels]).astype(np.uint8), labels.reshape(-1, 1)


@pytest.fixture(scope="module")
def scans_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("medical-predict")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", 24), ("val", 9), ("test", 12)):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = _stack(rng, count)
    np.savez(root / "scans.npz", **arrays)
    config = RunConfig(domain="medical", data=str(root / "scans.npz"), strategy="head",
                       device="cpu", epochs=1, image_size=32, batch_size=8, train_samples=12,
                       out=str(root / "run"))
    run(config, progress=False)
    return root / "run"


def test_own_test_split_gives_the_reported_metrics(scans_run: Path, tmp_path: Path) -> None:
    table = load_run(scans_run).predict(split="test", out=tmp_path / "test.csv").table
    reported = load_run(scans_run, with_data=False).metrics["final"]["test"]
    with np.load(scans_run.parent / "scans.npz") as archive:
        truth = archive["test_labels"][:, 0]
    assert list(table["label"]) == list(truth) and len(table) == reported["samples"]
    probabilities = table[PROBABILITIES].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert list(table["prediction"]) == list(probabilities.argmax(axis=1))
    assert accuracy_score(truth, table["prediction"]) == pytest.approx(reported["accuracy"])
    assert f1_score(truth, table["prediction"], labels=[0, 1, 2], average="macro",
                    zero_division=0) == pytest.approx(reported["macro_f1"])
    assert cohen_kappa_score(truth, table["prediction"], labels=[0, 1, 2]) == pytest.approx(
        reported["kappa"])
    auc = np.mean([roc_auc_score(truth == c, probabilities[:, c]) for c in range(3)])
    assert auc == pytest.approx(reported["auc"], abs=1e-5)


def test_loose_scans_are_predicted_without_training_data(scans_run: Path, tmp_path: Path):
    """One row per image or slice, named file, file:slice or file:key[i]; the same image as a
    .npy gives the probabilities it has in the run's own split (the run's scaling and size)."""
    import nibabel as nib
    from test_medical import _write_dicom

    new = tmp_path / "new"
    (new / "2").mkdir(parents=True)  # a folder named like a class: its name is ignored
    rng = np.random.default_rng(5)
    with np.load(scans_run.parent / "scans.npz") as archive:
        np.save(new / "first.npy", archive["test_images"][0])
    np.save(new / "rgb.npy", np.repeat(_planted(rng, 1)[..., None], 3, axis=-1))
    # Five slices (1, 3 or 4 along an end would be an image's channels); the constant one is
    # background and left out, as training leaves it out.
    volume = np.stack([_planted(rng, k % 3) for k in range(5)], axis=-1)
    volume[..., 1] = 7.0
    np.save(new / "2" / "volume.npy", volume)
    images, labels = _stack(rng, 2)
    np.savez(new / "stack.npz", images=images, labels=labels)
    nib.save(nib.Nifti1Image(np.stack([_planted(rng, 0, 16)] * 2, axis=-1).astype(np.float32),
                             np.eye(4)), new / "brain.nii.gz")
    _write_dicom(new / "slice.dcm", _planted(rng, 1, 16), "1.2.3")
    (new / "broken.npz").write_bytes(b"PK not a zip")
    (new / "notes.txt").write_text("not a scan")
    out = tmp_path / "out.csv"
    table = load_run(scans_run, with_data=False).predict(new, out=out, batch_size=4).table
    expected = [*(f"{new / '2' / 'volume.npy'}:{k}" for k in (0, 2, 3, 4)),
                f"{new / 'brain.nii.gz'}:0", f"{new / 'brain.nii.gz'}:1", str(new / "first.npy"),
                str(new / "rgb.npy"), str(new / "slice.dcm"), f"{new / 'stack.npz'}:images[0]",
                f"{new / 'stack.npz'}:images[1]"]
    assert list(table["path"]) == expected and "label" not in table.columns
    np.testing.assert_allclose(table[PROBABILITIES].to_numpy().sum(axis=1), 1.0, atol=1e-5)
    own = load_run(scans_run).predict(split="test", out=tmp_path / "test.csv").table
    np.testing.assert_allclose(table.set_index("path").loc[str(new / "first.npy"), PROBABILITIES]
                               .to_numpy(float), own.loc[0, PROBABILITIES].to_numpy(float),
                               atol=1e-5)
    skipped = pd.read_csv(tmp_path / "out.skipped.csv")
    assert sorted(skipped["file"]) == [str(new / "broken.npz"), str(new / "notes.txt")]


def test_shapes_the_model_cannot_take_are_refused_by_name(scans_run: Path, tmp_path: Path,
                                                          capsys) -> None:
    np.save(tmp_path / "series.npy", np.zeros((2, 3, 8, 8)))
    loaded = load_run(scans_run, with_data=False)
    with pytest.raises(AdaptlabError, match=r"series.npy: shape \(2, 3, 8, 8\) is not a 2D image"):
        loaded.predict(tmp_path / "series.npy")
    folder = tmp_path / "folder"
    folder.mkdir()
    np.save(folder / "fine.npy", np.ones((8, 8)))
    np.savez(folder / "two_channel.npz", images=np.zeros((4, 16, 16, 2)))
    code, _, err = run_cli(["predict", str(scans_run), "--data", str(folder), "--quiet"], capsys)
    assert code != 0
    assert "two_channel.npz:images[0]: shape (16, 16, 2) is not a 2D image" in err


def test_the_run_exports_as_a_merged_folder_with_the_runs_logits(scans_run: Path,
                                                                  tmp_path: Path) -> None:
    """Safetensors only: the backbone is EfficientNet-Lite0, whose ONNX and TorchScript
    graphs tests/test_export.py checks on a wildlife run; what differs here is the scans'
    preprocessing, which the folder records."""
    import json

    from export_checks import TOLERANCE, export_and_compare, held_out

    reference = held_out(scans_run)
    check = export_and_compare(scans_run, tmp_path / "export", "safetensors", reference)
    assert check.config["adaptlab"]["merged"] is True
    assert check.differences["folder"] < TOLERANCE
    saved = json.loads((tmp_path / "export" / "preprocessing.json").read_text())
    assert saved["modality"] == "array-image" and saved["class_names"] == CLASSES
