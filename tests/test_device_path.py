"""The speed and memory switches: gradient checkpointing recomputes instead of keeping, and
changes nothing else; ``torch.compile`` trains as eager mode does (on the CPU); on CUDA, mixed
precision, channels-last, pinned loaders and ``torch.compile`` train to a working model (those
skip without a GPU)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from adaptlab.config import RunConfig
from adaptlab.errors import AdaptlabError
from adaptlab.run import run
from conftest import write_colour_folder

pytestmark = pytest.mark.slow


def _code(out, **fields) -> RunConfig:
    base = RunConfig(domain="code", dataset="stdlib-modules", strategy="lora", out=str(out),
                     device="cpu", epochs=1, batch_size=8, lr=3e-3, train_samples=32)
    return dataclasses.replace(base, **fields)


def test_gradient_checkpointing_keeps_less_and_trains_the_same(tmp_path):
    """MiniLM has LayerNorm and dropout, no batch statistics: recomputation with the saved
    random state gives the same gradients, so the adapter must come out equal while the
    saved activations shrink to the blocks' inputs."""
    kept = run(_code(tmp_path / "kept"), progress=False)
    recomputed = run(_code(tmp_path / "recomputed", gradient_checkpointing=True),
                     progress=False)
    first = load_file(str(kept.run_dir / "adapter" / "adapter_model.safetensors"))
    second = load_file(str(recomputed.run_dir / "adapter" / "adapter_model.safetensors"))
    assert max(float((first[k] - second[k]).abs().max()) for k in first) < 1e-6
    before = kept.costs["memory_bytes"]["activations"]
    after = recomputed.costs["memory_bytes"]["activations"]
    assert after < before / 5, (before, after)
    assert recomputed.metrics["final"]["test"]["loss"] == pytest.approx(
        kept.metrics["final"]["test"]["loss"], abs=1e-6)


def test_a_compiled_model_trains_and_saves_as_the_eager_one(tmp_path, monkeypatch):
    """``torch_compile=true`` on the CPU (inductor; the weather demo's small CNN, whose compile
    takes about half a minute here): the strategy saves and reloads by the model's own names,
    not the compiled wrapper's ``_orig_mod.`` ones, and the weights come out as in eager mode."""
    # Inductor's generated code goes to the test's folder, removed after it, not a cache
    # under the system's temporary folder that outlives the suite.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    def config(out, compiled):
        return RunConfig(domain="weather", strategy="full", out=str(tmp_path / out),
                         device="cpu", epochs=1, batch_size=8, train_samples=16,
                         torch_compile=compiled)

    eager = run(config("eager", False), progress=False)
    compiled = run(config("compiled", True), progress=False)
    first = load_file(str(eager.run_dir / "weights.safetensors"))
    second = load_file(str(compiled.run_dir / "weights.safetensors"))
    assert sorted(first) == sorted(second)
    # Inductor fuses and reorders float32 arithmetic, and Adam's first steps move a weight by
    # about the learning rate whatever its gradient's size: 5e-5 apart here after two steps.
    assert max(float((first[k] - second[k]).abs().max()) for k in first) < 2e-4
    assert compiled.costs["reload_max_abs_diff"] < 1e-5
    assert compiled.metrics["final"]["test"]["loss"] == pytest.approx(
        eager.metrics["final"]["test"]["loss"], abs=1e-4)


def test_channels_last_on_the_cpu_in_float32_only_and_for_convolutions_only():
    from torch import nn

    from adaptlab.engine.device_path import use_channels_last

    cpu = torch.device("cpu")

    def convolutional():
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))

    model = convolutional()
    assert use_channels_last(model, cpu, True, "no")
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    for wanted, precision in ((True, "bf16"), (False, "no")):
        model = convolutional()
        assert not use_channels_last(model, cpu, wanted, precision)
        assert not model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not use_channels_last(nn.Linear(4, 2), cpu, True, "no")


def test_a_channels_last_run_is_read_back_channels_last(tmp_path):
    """A CNN trained channels-last (the CPU's float32 default) is reloaded so by the reload
    check and by ``load_run`` (predictions, explanations, soups), and gives back its outputs
    exactly: read in NCHW, the weather CNN's differ by 3.7e-9 and the medical demo's by 1.1e-5,
    over the reload check's tolerance (the run failed)."""
    from torch import nn

    from adaptlab import load_run

    result = run(RunConfig(domain="weather", strategy="full", out=str(tmp_path / "run"),
                           device="cpu", epochs=1, batch_size=8, train_samples=16),
                 progress=False)
    assert result.costs["reload_max_abs_diff"] == 0.0
    loaded = load_run(result.run_dir, device="cpu")
    convolutions = [m for m in loaded.model.modules()
                    if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convolutions and all(m.weight.is_contiguous(memory_format=torch.channels_last)
                                for m in convolutions)


def test_loader_workers_train_exactly_as_the_main_process_alone(tmp_path):
    """Two loader workers, augmented photos, two epochs: the same weights bit for bit as
    without workers (each item's augmentation is seeded by its epoch, which reaches workers
    started for each pass; the global random state, dropout's, is drawn from as often)."""
    photos = write_colour_folder(tmp_path / "photos", per_class=6)
    weights = []
    for workers in (0, 2):
        config = RunConfig(domain="wildlife", data=str(photos), strategy="full", device="cpu",
                           epochs=2, batch_size=4, image_size=32, num_workers=workers,
                           out=str(tmp_path / f"workers-{workers}"))
        weights.append(load_file(str(run(config, progress=False).run_dir
                                     / "weights.safetensors")))
    assert sorted(weights[0]) == sorted(weights[1])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_gradient_checkpointing_refused_where_the_backbone_has_none(tmp_path):
    out = tmp_path / "refused"
    config = RunConfig(domain="pointcloud", dataset="generated-shapes", backbone="dgcnn",
                       strategy="full", out=str(out), device="cpu", epochs=1,
                       train_samples=16, gradient_checkpointing=True)
    with pytest.raises(AdaptlabError, match="gradient_checkpointing: backbone 'dgcnn'"):
        run(config, progress=False)
    assert not out.exists()


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_path_trains_with_every_switch(tmp_path, precision):
    """Mixed precision, channels-last images, pinned loaders with workers and the compiled
    model together: the run must beat its untrained baseline on a planted colour signal."""
    data = write_colour_folder(tmp_path / "data", per_class=12)
    config = RunConfig(domain="wildlife", data=str(data), strategy="full", device="cuda",
                       out=str(tmp_path / precision), epochs=4, image_size=64, batch_size=8,
                       lr=1e-3, mixed_precision=precision, num_workers=2, torch_compile=True)
    result = run(config, progress=False)
    assert result.costs["memory_bytes"]["peak_cuda"]
    assert result.metrics["final"]["test"]["accuracy"] >= 0.9
