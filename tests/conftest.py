"""Shared fixtures: small image folders generated on the fly, the MiniLM code encoder and a
batch of code for it, and CLI helpers."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

# Fast settings for runs inside tests: small images, few epochs, CPU.
FAST = ["--device", "cpu", "--epochs", "2", "--set", "image_size=64", "--set", "batch_size=8",
        "--quiet"]


@contextlib.contextmanager
def scratch_dir(tmp_path_factory, name: str):
    """A folder for a module's shared runs, removed when the module is done: pytest keeps
    ``mktemp`` folders to the session's end, and the suite's runs (checkpoints with optimizer
    state) would otherwise add up to more disk than a CI machine has."""
    root = tmp_path_factory.mktemp(name)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def write_colour_folder(root: Path, classes=("red", "green", "blue"), per_class: int = 8,
                        seed: int = 0) -> Path:
    """Images whose class is their dominant colour channel, with noise: learnable, not trivial."""
    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, size=(48, 48, 3))
            pixels[..., index % 3] += 120
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{name}{i}.png")
    return root


def write_unequal_colour_folder(root: Path) -> Path:
    """6 red, 14 green and 14 blue images: 20 train, 7 val and 7 test. Unequal classes give
    the balanced loss unequal weights, and evaluation splits ending in a batch of 3 that two
    processes share only with a padding duplicate (the several-process tests)."""
    data = write_colour_folder(root, per_class=14)
    for index in range(8):
        (data / "red" / f"red{index}.png").unlink()
    return data


def write_shape_folder(root: Path, counts: tuple[int, ...] = (6, 6, 6)) -> Path:
    """Scanned point files (.xyz, 256 points) of the point-cloud plugin's generated shapes,
    ``counts[i]`` of class i, seeded."""
    import numpy as np

    from adaptlab_pointcloud import shapes

    rng = np.random.default_rng(0)
    for label, (name, count) in enumerate(zip(shapes.CLASSES, counts, strict=True)):
        (root / name).mkdir(parents=True)
        for index in range(count):
            np.savetxt(root / name / f"{index}.xyz", shapes.generate(label, rng, 256)[0],
                       fmt="%.5f")
    return root


@pytest.fixture
def colour_folder(tmp_path: Path) -> Path:
    return write_colour_folder(tmp_path / "data")


@pytest.fixture(scope="module")
def minilm_backbone():
    """The offline MiniLM code encoder, built once per test module (tests adapt copies)."""
    from adaptlab.backbones.hf_encoders import minilm

    return minilm()


CODE_SNIPPETS = [f"def f{i}(x):\n    return x * {i} + sum(range({i}))  # helper {'n' * i}"
                 for i in range(6)]


@pytest.fixture(scope="module")
def text_batch(minilm_backbone):
    """Six code snippets tokenised for MiniLM, padded: the attention mask matters."""
    tokens = minilm_backbone.tokenizer(CODE_SNIPPETS, padding=True, return_tensors="pt")
    assert (tokens["attention_mask"] == 0).any()
    return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}


@pytest.fixture(scope="session")
def wildlife_lora_run(tmp_path_factory) -> Path:
    """One small finished LoRA run on generated colour photos (``ROOT/data``, ``ROOT/run``),
    shared by the test modules that only read a finished run (predict, export): training it
    once saves a run per module. Tests leave it as they found it."""
    from adaptlab.config import RunConfig
    from adaptlab.run import run

    root = tmp_path_factory.mktemp("wildlife-lora")
    data = write_colour_folder(root / "data", per_class=10)
    config = RunConfig(domain="wildlife", data=str(data), strategy="lora", out=str(root / "run"),
                       device="cpu", epochs=2, image_size=64, batch_size=8, lr=3e-3)
    return run(config, progress=False).run_dir


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def fresh_discovery():
    """Plugin discovery re-read before and after the test: discovery is cached per process,
    and a test that installs a fake plugin must neither see a stale list nor leave its
    plugin in the cache for the tests after it."""
    from adaptlab.plugins.registry import clear_discovery_cache

    clear_discovery_cache()
    yield
    clear_discovery_cache()


def install_fake_dist(site: Path, dist: str, module: str, source: str, target: str) -> None:
    """A real installed distribution as importlib.metadata sees one: a dist-info folder with
    an entry_points.txt, and its module, on a path that is on sys.path."""
    info = site / f"{dist}-0.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[adaptlab.domains]\n{dist} = {target}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(source))


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from adaptlab.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def pytest_collection_modifyitems(config, items):
    """GPU tests skip cleanly where no CUDA device exists (CI never has one)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
