"""Bad inputs for every domain, written on demand so no broken binary file sits in the repo.

``build(name, root)`` writes the input of one case under ``root`` and returns its path;
``python tests/corpus/make_corpus.py OUT`` writes every case (to look at them by hand).
Each builder makes the smallest input that shows its fault: readers must refuse it before
any training step, so nothing here needs to be learnable.
"""

from __future__ import annotations

import io
import json
import pickle
import sys
from collections.abc import Callable
from pathlib import Path

import corpus_spatial  # the point-cloud and weather builders; this file stays readable
import numpy as np

BUILDERS: dict[str, Callable[[Path], Path]] = dict(corpus_spatial.BUILDERS)


def builder(func: Callable[[Path], Path]) -> Callable[[Path], Path]:
    BUILDERS[func.__name__] = func
    return func


def build(name: str, root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return BUILDERS[name](root)


# -- images (wildlife, medical PNG folders) -----------------------------------------------------
def _png_bytes(seed: int, mode: str = "RGB") -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _image_class(folder: Path, count: int = 4, damage: Callable[[bytes], bytes] | None = None,
                 suffix: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        data = _png_bytes(i + 10 * len(folder.name))
        (folder / f"{folder.name}{i}{suffix}").write_bytes(damage(data) if damage else data)


@builder
def images_empty_folder(root: Path) -> Path:
    (root / "photos").mkdir()
    return root / "photos"


@builder
def images_one_class(root: Path) -> Path:
    _image_class(root / "photos" / "fox")
    return root / "photos"


@builder
def images_truncated_class(root: Path) -> Path:
    # Half a PNG: the header opens, the pixel data ends early (a copy cut short).
    _image_class(root / "photos" / "fox")
    _image_class(root / "photos" / "owl", damage=lambda data: data[: len(data) // 2])
    return root / "photos"


@builder
def images_all_corrupt(root: Path) -> Path:
    def junk(_: bytes) -> bytes:
        return b"\xff\xd8\xff\xe0 this is not really a jpeg"

    for name in ("fox", "owl"):
        _image_class(root / "photos" / name, damage=junk, suffix=".jpg")
    return root / "photos"


@builder
def images_single_file(root: Path) -> Path:
    (root / "fox.png").write_bytes(_png_bytes(0))
    return root / "fox.png"


@builder
def images_good(root: Path) -> Path:
    for name in ("fox", "owl"):
        _image_class(root / "photos" / name)
    return root / "photos"


# -- medical: NIfTI and MedMNIST ------------------------------------------------------------------
def _nifti(path: Path, array: np.ndarray) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(array.astype(np.float32), np.eye(4)).to_filename(path)


def _volume(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((16, 16, 4))


@builder
def nifti_without_label(root: Path) -> Path:
    _nifti(root / "scans" / "tumour" / "a.nii.gz", _volume(0))
    _nifti(root / "scans" / "loose.nii.gz", _volume(1))  # no class folder: no label
    return root / "scans"


@builder
def nifti_4d(root: Path) -> Path:
    _nifti(root / "scans" / "healthy" / "a.nii.gz", _volume(0))
    _nifti(root / "scans" / "tumour" / "series.nii.gz", np.random.default_rng(1).random((8, 8, 3, 2)))
    return root / "scans"


@builder
def nifti_nan(root: Path) -> Path:
    _nifti(root / "scans" / "healthy" / "a.nii.gz", _volume(0))
    volume = _volume(1)
    volume[3, 3, 1] = np.nan
    _nifti(root / "scans" / "tumour" / "holes.nii.gz", volume)
    return root / "scans"


@builder
def nifti_one_class(root: Path) -> Path:
    _nifti(root / "scans" / "tumour" / "a.nii.gz", _volume(0))
    _nifti(root / "scans" / "tumour" / "b.nii.gz", _volume(1))
    return root / "scans"


@builder
def nifti_one_scan_per_class(root: Path) -> Path:
    # Slices of one scan stay in one split, so nothing is left to validate or test on.
    _nifti(root / "scans" / "healthy" / "a.nii.gz", _volume(0))
    _nifti(root / "scans" / "tumour" / "b.nii.gz", _volume(1))
    return root / "scans"


@builder
def nifti_all_corrupt(root: Path) -> Path:
    for name in ("healthy", "tumour"):
        (root / "scans" / name).mkdir(parents=True)
        (root / "scans" / name / "a.nii").write_bytes(b"\x5c\x01\x00\x00" + b"\x00" * 60)
    return root / "scans"


def _medmnist(path: Path, images: np.ndarray | None = None, labels_shape=(10, 1),
              drop: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = images if images is not None else \
            rng.integers(0, 255, (10, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, labels_shape)
    arrays.pop(drop, None)
    np.savez(path, **arrays)
    return path


@builder
def medmnist_missing_key(root: Path) -> Path:
    return _medmnist(root / "organ.npz", drop="val_labels")


@builder
def medmnist_two_channels(root: Path) -> Path:
    return _medmnist(root / "organ.npz", images=np.zeros((10, 28, 28, 2), np.uint8))


@builder
def medmnist_multilabel(root: Path) -> Path:
    return _medmnist(root / "chest.npz", labels_shape=(10, 14))


@builder
def medmnist_pickled(root: Path) -> Path:
    # Object arrays load only through pickle, which a data file must never run.
    objects = np.array([{"x": 1}], dtype=object)
    np.savez(root / "organ.npz", **{f"{split}_{part}": objects for split in ("train", "val", "test")
                                    for part in ("images", "labels")})
    return root / "organ.npz"


@builder
def medical_text_file(root: Path) -> Path:
    (root / "scans.txt").write_text("scan1.nii tumour\n")
    return root / "scans.txt"


# -- code -----------------------------------------------------------------------------------------
def _source(folder: Path, count: int, text: Callable[[int], bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"f{i}.py").write_bytes(text(i))


def _good_code(i: int) -> bytes:
    return f"def f{i}(x):\n    return x + {i}\n".encode()


@builder
def code_one_label(root: Path) -> Path:
    _source(root / "repo" / "maths", 4, _good_code)
    return root / "repo"


@builder
def code_broken_encodings(root: Path) -> Path:
    _source(root / "repo" / "maths", 3, lambda i: f"# café {i}\nx = {i}\n".encode("latin-1"))
    _source(root / "repo" / "text", 3, lambda i: f"s = 'naïve {i}'\n".encode("utf-16"))
    return root / "repo"


@builder
def code_binary_label(root: Path) -> Path:
    # Compiled files renamed .py, and bare NUL bytes (valid UTF-8, yet no source at all).
    _source(root / "repo" / "maths", 4, _good_code)
    _source(root / "repo" / "blobs", 4, lambda i: b"\x00" * 64 if i % 2 else
            b"\xcb\x0d\x0d\x0a" + bytes(range(256)))
    return root / "repo"


def _jsonl(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


@builder
def jsonl_not_json(root: Path) -> Path:
    return _jsonl(root / "funcs.jsonl", ['{"code": "x = 1", "label": "a"}', "{code: x = 2}"])


@builder
def jsonl_missing_code(root: Path) -> Path:
    return _jsonl(root / "funcs.jsonl", ['{"source": "x = 1", "label": "a"}'])


@builder
def jsonl_one_label(root: Path) -> Path:
    return _jsonl(root / "funcs.jsonl", [json.dumps({"code": f"x = {i}", "label": "a"})
                                         for i in range(5)])


@builder
def jsonl_utf16(root: Path) -> Path:
    return _jsonl(root / "funcs.jsonl", [json.dumps({"code": f"x = {i}", "label": "ab"[i % 2]})
                                         for i in range(6)], encoding="utf-16")


@builder
def jsonl_few_pairs(root: Path) -> Path:
    return _jsonl(root / "pairs.jsonl", [json.dumps({"query": f"add {i}", "code": f"x + {i}"})
                                         for i in range(3)])


@builder
def code_text_file(root: Path) -> Path:
    (root / "funcs.txt").write_text("def f(): pass\n")
    return root / "funcs.txt"


# -- time series ----------------------------------------------------------------------------------
def _csv(path: Path, values, times=None, header: str = "date,sales") -> Path:
    times = times if times is not None else [f"2020-{1 + i // 28:02d}-{1 + i % 28:02d}"
                                             for i in range(len(values))]
    rows = [header] + [f"{t},{'' if v is None else v}" for t, v in zip(times, values, strict=True)]
    path.write_text("\n".join(rows) + "\n")
    return path


@builder
def series_long_gap(root: Path) -> Path:
    values = [float(i % 7) for i in range(60)]
    values[20:26] = [None] * 6
    return _csv(root / "shop.csv", values, [f"2020-01-01 {h:02d}:00" if h < 24 else
                                            f"2020-01-0{1 + h // 24} {h % 24:02d}:00"
                                            for h in range(60)])


@builder
def series_too_short(root: Path) -> Path:
    return _csv(root / "shop.csv", [float(i) for i in range(12)])


@builder
def series_no_time_column(root: Path) -> Path:
    return _csv(root / "shop.csv", [1.0, 2.0, 3.0], times=["a", "b", "c"], header="when,sales")


@builder
def series_not_a_number(root: Path) -> Path:
    return _csv(root / "shop.csv", [1.0, 2.0, "lots", 4.0])


@builder
def series_duplicate_time(root: Path) -> Path:
    return _csv(root / "shop.csv", [1.0, 2.0, 3.0, 4.0],
                times=["2020-01", "2020-02", "2020-02", "2020-03"], header="month,sales")


@builder
def series_all_nan(root: Path) -> Path:
    return _csv(root / "shop.csv", [None] * 30)


@builder
def series_netcdf_no_time(root: Path) -> Path:
    import xarray as xr

    xr.Dataset({"tas": (("lat",), np.arange(4.0))}, coords={"lat": np.arange(4.0)}
               ).to_netcdf(root / "tas.nc", engine="h5netcdf")
    return root / "tas.nc"


@builder
def series_no_files(root: Path) -> Path:
    (root / "series").mkdir()
    (root / "series" / "README.md").write_text("the data is elsewhere\n")
    return root / "series"


@builder
def series_corrupt_parquet(root: Path) -> Path:
    (root / "shop.parquet").write_bytes(b"PAR1" + b"\x00" * 40)
    return root / "shop.parquet"


@builder
def series_good(root: Path) -> Path:
    return _csv(root / "shop.csv", [float(i % 7) for i in range(120)])


# -- finished run folders, as another version may have left them ----------------------------------
def finished_run(root: Path, domain: str, data: Path, strategy: str = "full",
                 tensors: dict | None = None) -> Path:
    """A run folder ``load_run`` accepts, made without training: strategies save only what
    they train and load with missing keys allowed, so an empty weights file restores the
    pre-trained model. Cases then damage one file of it."""
    from safetensors.torch import save_file

    from adaptlab.config import RunConfig

    run_dir = root / "run"
    run_dir.mkdir(parents=True)
    config = RunConfig(domain=domain, data=str(data), strategy=strategy, out=str(run_dir),
                       device="cpu", epochs=1, image_size=64, batch_size=4)
    (run_dir / "config.json").write_text(config.to_json())
    (run_dir / "metrics.json").write_text('{"final": {}}\n')
    save_file(dict(tensors or {}), str(run_dir / "weights.safetensors"))
    return run_dir


def _wildlife_run(root: Path) -> Path:
    return finished_run(root, "wildlife", images_good(root))


@builder
def images_beside_a_run(root: Path) -> Path:
    _wildlife_run(root)
    return root / "photos"


@builder
def run_unknown_config_key(root: Path) -> Path:
    run_dir = _wildlife_run(root)
    config = json.loads((run_dir / "config.json").read_text())
    config["lr_schedule"] = "cosine"  # a key an older release wrote
    (run_dir / "config.json").write_text(json.dumps(config))
    return run_dir


@builder
def run_config_not_json(root: Path) -> Path:
    run_dir = _wildlife_run(root)
    (run_dir / "config.json").write_text("domain: wildlife\n")  # an old YAML-era file
    return run_dir


@builder
def run_metrics_not_json(root: Path) -> Path:
    run_dir = _wildlife_run(root)
    (run_dir / "metrics.json").write_text('{"final": {"test": ')  # cut off mid-write
    return run_dir


@builder
def run_old_checkpoint_shapes(root: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    run_dir = _wildlife_run(root)
    # A classifier for 5 classes where the data now has 2: a checkpoint of another layout.
    save_file({"task_head.weight": torch.zeros(5, 7), "task_head.bias": torch.zeros(5)},
              str(run_dir / "weights.safetensors"))
    return run_dir


@builder
def run_old_checkpoint_keys(root: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    run_dir = _wildlife_run(root)
    save_file({"model.fc.weight": torch.zeros(2, 7)}, str(run_dir / "weights.safetensors"))
    return run_dir


@builder
def run_checkpoint_not_safetensors(root: Path) -> Path:
    run_dir = _wildlife_run(root)
    (run_dir / "weights.safetensors").write_bytes(pickle.dumps({"head.weight": [0.0]}))
    return run_dir


@builder
def weather_run(root: Path) -> Path:
    return finished_run(root, "weather", corpus_spatial.fields_good(root))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: make_corpus.py OUT_FOLDER", file=sys.stderr)
        return 2
    for name in BUILDERS:
        print(name, build(name, Path(argv[0]) / name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
