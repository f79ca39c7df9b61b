"""The CUDA path end to end (skipped without a GPU): every strategy trains under bf16 on the
setting it applies to, the cost meter against the allocator's peak, the explainers, the
notebook's worker, and two GPUs data-parallel."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from adaptlab.config import RunConfig
from adaptlab.errors import AdaptlabError
from adaptlab.run import run
from adaptlab.strategies.registry import strategy_names
from conftest import write_colour_folder

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_colour_folder(tmp_path_factory.mktemp("gpu") / "data", per_class=12)


def _settings(images) -> list[dict]:
    """Where strategies apply, tried in order: a CNN, a text encoder, a point transformer,
    and the encoder-LM bridge's generation task."""
    return [dict(domain="wildlife", data=str(images), image_size=64),
            dict(domain="code", dataset="stdlib-modules", train_samples=64),
            dict(domain="pointcloud", dataset="generated-shapes",
                 backbone="point_transformer", train_samples=32),
            dict(domain="code", dataset="docstring-generation", train_samples=32)]


@pytest.mark.parametrize("strategy", strategy_names())
def test_every_strategy_trains_on_cuda_in_bf16(tmp_path, images, strategy):
    refusals = []
    for index, setting in enumerate(_settings(images)):
        out = tmp_path / f"{strategy}-{index}"
        config = RunConfig(strategy=strategy, out=str(out), device="cuda", epochs=1,
                           batch_size=8, mixed_precision="bf16", **setting)
        try:
            result = run(config, progress=False)
        except AdaptlabError as exc:
            if out.exists():  # refused after it started: a failure, not a misfit
                raise
            refusals.append(str(exc))
            continue
        assert result.costs["memory_bytes"]["peak_cuda"] > 0
        assert result.costs["environment"]["cuda"]
        assert math.isfinite(result.metrics["final"]["test"]["loss"])
        return
    pytest.fail(f"{strategy} applied to none of the settings: {refusals}")


def test_cost_meter_within_a_quarter_of_the_cuda_peak(tmp_path, images):
    """Full fine-tuning in float32 at 224 px: what the meter adds up (weights, gradients,
    AdamW state, saved activations) against ``torch.cuda.max_memory_allocated``."""
    config = RunConfig(domain="wildlife", data=str(images), strategy="full", device="cuda",
                       epochs=1, image_size=224, batch_size=32, mixed_precision="no",
                       out=str(tmp_path / "full"))
    costs = run(config, progress=False).costs
    memory = costs["memory_bytes"]
    counted = sum(memory[k] for k in ("parameters", "gradients", "optimizer", "activations"))
    assert abs(counted - memory["peak_cuda"]) <= 0.25 * memory["peak_cuda"], memory


def test_explain_a_cuda_run_on_cuda(tmp_path, images):
    config = RunConfig(domain="wildlife", data=str(images), strategy="lora", device="cuda",
                       epochs=1, image_size=64, batch_size=8, out=str(tmp_path / "lora"))
    run_dir = run(config, progress=False).run_dir
    done = subprocess.run([sys.executable, "-m", "adaptlab.cli", "explain", str(run_dir),
                           "--device", "cuda", "--samples", "2", "--no-compare"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "report:" in done.stdout


def test_notebook_worker_trains_on_cuda(tmp_path, images):
    from adaptlab.run_process import RunWorker

    worker = RunWorker().spawn()
    try:
        job = worker.submit(RunConfig(domain="wildlife", data=str(images), strategy="head",
                                      device="cuda", epochs=1, image_size=64, batch_size=8,
                                      out=str(tmp_path / "view")))
        job.join(900)
        assert job.error is None, job.error_details
        assert job.result.costs["memory_bytes"]["peak_cuda"] > 0
    finally:
        worker.close()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpus_train_as_one(tmp_path, images):
    base = RunConfig(domain="wildlife", data=str(images), strategy="head", device="cuda",
                     epochs=2, image_size=64, batch_size=6, mixed_precision="no",
                     out=str(tmp_path / "one"))
    one = run(base, progress=False)
    two = tmp_path / "two"
    done = subprocess.run([sys.executable, "-m", "adaptlab.cli", "run", "wildlife", "--data",
                           str(images), "--strategy", "head", "--device", "cuda", "--epochs",
                           "2", "--set", "image_size=64", "--set", "batch_size=6", "--set",
                           "mixed_precision=no", "--out", str(two), "--processes", "2",
                           "--quiet"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((two / "metrics.json").read_text())
    for split, values in one.metrics["final"].items():
        assert metrics["final"][split]["samples"] == values["samples"]
        assert metrics["final"][split]["accuracy"] == pytest.approx(values["accuracy"], abs=0.1)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_two_gpus_sharded_hold_half_each_and_train_as_one(tmp_path, images, precision):
    """``fsdp=true`` on NCCL, in full precision and under the autocast a placed model runs
    in: each GPU holds half of the weights and the run ends where one GPU's does."""
    settings = ["--set", "image_size=64", "--set", "batch_size=6", "--set",
                f"mixed_precision={precision}"]
    one = run(RunConfig(domain="wildlife", data=str(images), strategy="full", device="cuda",
                        epochs=2, image_size=64, batch_size=6, mixed_precision=precision,
                        out=str(tmp_path / "one")), progress=False)
    two = tmp_path / "two"
    done = subprocess.run([sys.executable, "-m", "adaptlab.cli", "run", "wildlife", "--data",
                           str(images), "--strategy", "full", "--device", "cuda", "--epochs",
                           "2", *settings, "--set", "fsdp=true", "--out", str(two),
                           "--processes", "2", "--quiet"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((two / "metrics.json").read_text())
    for split, values in one.metrics["final"].items():
        assert metrics["final"][split]["samples"] == values["samples"]
        assert metrics["final"][split]["accuracy"] == pytest.approx(values["accuracy"], abs=0.1)
    whole = one.costs["memory_bytes"]["parameters"]
    held = json.loads((two / "costs.json").read_text())["memory_bytes"]
    assert 0.5 * whole <= held["parameters"] <= 0.51 * whole
    assert held["peak_cuda"] < one.costs["memory_bytes"]["peak_cuda"]
