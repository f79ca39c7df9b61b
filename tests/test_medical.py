"""Medical domain: the MRI demo adapts beyond the unadapted backbone; every user format reads."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from adaptlab.errors import AdaptlabError
from adaptlab_medical.datasets import load_colin27
from conftest import FAST, run_cli


def _planted(rng, label: int, size: int = 32) -> np.ndarray:
    """A noisy image whose class is where a bright square sits (learnable, not trivial)."""
    image = rng.normal(100, 20, size=(size, size))
    r, c = [(4, 4), (4, 20), (20, 12)][label]
    image[r:r + 8, c:c + 8] += 80
    return image


@pytest.mark.slow
def test_mri_demo_beats_the_unadapted_backbone(tmp_path, capsys):
    out = tmp_path / "demo"
    code, _, err = run_cli(["run", "medical", "--device", "cpu", "--out", str(out), "--quiet"],
                           capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["final"]["test"]
    assert metrics["split_sizes"]["test"] == 360  # the right hemisphere, never trained on
    # Zero-shot: prototypes from the ICBM152 average brain; 6 classes, chance 0.167.
    assert test["accuracy"] > metrics["baseline"]["test"]["accuracy"] + 0.08
    assert test["kappa"] > metrics["baseline"]["test"]["kappa"]
    assert test["accuracy"] > 0.45 and test["auc"] > 0.75


@pytest.mark.slow
def test_mri_demo_with_lora_end_to_end(tmp_path, capsys):
    out = tmp_path / "lora"
    code, _, err = run_cli(["run", "medical", "--strategy", "lora", "--set", "r=4",
                            "--epochs", "3", "--device", "cpu", "--out", str(out), "--quiet"],
                           capsys)
    assert code == 0, err
    costs = json.loads((out / "costs.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert costs["reload_max_abs_diff"] < 1e-5
    assert costs["trainable_params"] < 0.1 * costs["total_params"]
    # Chance from the data: the most common test class's share, plus four standard errors of
    # a predictor at that rate on this many samples (one without the signal stays below).
    labels = load_colin27({}).labels("test")
    chance = max(Counter(labels).values()) / len(labels)
    test = metrics["final"]["test"]
    assert test["samples"] == len(labels)
    assert test["accuracy"] > chance + 4 * math.sqrt(chance * (1 - chance) / len(labels))
    assert test["macro_f1"] > metrics["baseline"]["test"]["macro_f1"]


def _write_medmnist(path, rng, n=(30, 9, 9), drop_key=None):
    arrays = {}
    for split, count in zip(("train", "val", "test"), n, strict=True):
        labels = np.arange(count) % 3
        arrays[f"{split}_images"] = np.stack([_planted(rng, y, 28) for y in labels]).clip(0, 255) \
            .astype(np.uint8)
        arrays[f"{split}_labels"] = labels.reshape(-1, 1)
    arrays.pop(drop_key, None)
    np.savez(path, **arrays)
    return path


def test_medmnist_npz_reads_and_trains(tmp_path, capsys):
    from adaptlab_medical.readers import read_medical_data

    path = _write_medmnist(tmp_path / "toy_mnist.npz", np.random.default_rng(0))
    data = read_medical_data(path)
    assert data.counts() == {"train": 30, "val": 9, "test": 9}
    assert data.class_names == ["0", "1", "2"]
    code, _, err = run_cli(["run", "medical", "--data", str(path), "--out",
                            str(tmp_path / "run")] + FAST, capsys)
    assert code == 0, err

    broken = _write_medmnist(tmp_path / "broken.npz", np.random.default_rng(0),
                             drop_key="val_labels")
    with pytest.raises(AdaptlabError, match="broken.npz: MedMNIST key 'val_labels' is missing"):
        read_medical_data(broken)


def test_nifti_volumes_are_read_slice_wise_and_split_by_volume(tmp_path):
    import nibabel as nib

    from adaptlab_medical.readers import read_medical_data

    rng = np.random.default_rng(1)
    for label, name in enumerate(("a", "b", "c")):
        (tmp_path / "vols" / name).mkdir(parents=True)
        for v in range(4):
            volume = np.stack([_planted(rng, label, 16) for _ in range(5)], axis=-1)
            nib.save(nib.Nifti1Image(volume.astype(np.float32), np.eye(4)),
                     tmp_path / "vols" / name / f"vol{v}.nii.gz")
    data = read_medical_data(tmp_path / "vols")
    assert sum(data.counts().values()) == 3 * 4 * 5 and data.modality == "array-image"
    # All five slices of a volume stay together: split sizes are multiples of 5.
    assert all(count % 5 == 0 for count in data.counts().values())

    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)),
             tmp_path / "vols" / "loose.nii.gz")
    with pytest.raises(AdaptlabError, match="loose.nii.gz: NIFTI file with no label"):
        read_medical_data(tmp_path / "vols")
    (tmp_path / "vols" / "loose.nii.gz").unlink()
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2, 2), np.float32), np.eye(4)),
             tmp_path / "vols" / "a" / "series.nii.gz")
    with pytest.raises(AdaptlabError, match=r"series.nii.gz has shape \(4, 4, 4, 2, 2\)"):
        read_medical_data(tmp_path / "vols")


def _write_dicom(path, pixels: np.ndarray, series: str) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_folder_reads_rescales_and_skips_corrupt_files(tmp_path, recwarn):
    from pydicom.uid import generate_uid

    from adaptlab_medical.readers import read_medical_data

    rng = np.random.default_rng(2)
    for label, name in enumerate(("x", "y", "z")):
        for s in range(3):
            series = generate_uid()
            folder = tmp_path / "dcm" / name / f"series{s}"
            folder.mkdir(parents=True)
            for k in range(2):
                _write_dicom(folder / f"{k}.dcm", _planted(rng, label, 16).clip(0, 4000), series)
    bad = tmp_path / "dcm" / "x" / "broken.dcm"
    bad.write_bytes(b"DICM? no")
    data = read_medical_data(tmp_path / "dcm")
    assert sum(data.counts().values()) == 3 * 3 * 2
    assert any(str(bad) in str(w.message) for w in recwarn)
    assert data.skipped == [{"file": str(bad), "reason": data.skipped[0]["reason"]}]
    # RescaleIntercept applied: stored ~100 becomes ~-924 in modality units.
    assert data.samples["train"][0][0].mean() < 0


def test_array_images_refuse_bad_shapes_and_nan():
    from adaptlab.data.array_images import check_array_image

    with pytest.raises(AdaptlabError, match=r"slice 3: shape \(2, 3, 4, 5\) is not a 2D image"):
        check_array_image(np.zeros((2, 3, 4, 5)), "slice 3")
    with pytest.raises(AdaptlabError, match="slice 4: contains NaN"):
        check_array_image(np.full((4, 4), np.nan), "slice 4")
    assert check_array_image(np.zeros((8, 8, 3)), "rgb").shape == (3, 8, 8)
