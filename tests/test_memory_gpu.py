"""The memory-efficient strategies and the planner on CUDA (skipped without a GPU): the plan
against the allocator's own peak, and SlimFit and LST training under mixed precision and
reloading to their logits."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from adaptlab.config import RunConfig
from adaptlab.costs.planner import KINDS, plan_memory
from conftest import write_colour_folder

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def _config(root, strategy: str, **fields) -> RunConfig:
    data = root / "data"
    if not data.exists():
        write_colour_folder(data, per_class=12)
    base = RunConfig(domain="wildlife", data=str(data), strategy=strategy, device="cuda",
                     epochs=1, image_size=224, batch_size=32, mixed_precision="no",
                     out=str(root / strategy))
    return dataclasses.replace(base, **fields)


@pytest.mark.parametrize("strategy", ["full", "lora", "lst", "slimfit"])
def test_plan_within_15_percent_of_the_cuda_peak(tmp_path, strategy):
    """At batch 32 and 224 pixels the saved activations dominate what the allocator holds, so
    the planned total (parameters, gradients, AdamW state, activations) must come within 15 %
    of ``torch.cuda.max_memory_allocated`` over the training steps."""
    from adaptlab.run import run

    config = _config(tmp_path, strategy, epochs=2 if strategy == "slimfit" else 1)
    planned = plan_memory(config, [strategy]).plans[0]
    result = run(config, progress=False)
    peak = result.costs["memory_bytes"]["peak_cuda"]
    assert peak and abs(planned.total_bytes - peak) <= 0.15 * peak, \
        (planned.memory_bytes, peak)
    for kind in KINDS:  # and the meter's own counts on the GPU, kind by kind
        measured = result.costs["memory_bytes"][kind]
        assert abs(planned.memory_bytes[kind] - measured) <= 0.15 * max(measured, 1), kind


@pytest.mark.parametrize("strategy", ["slimfit", "lst"])
def test_trains_in_bf16_and_reloads_to_its_logits(tmp_path, strategy):
    from adaptlab import load_run
    from adaptlab.run import run

    config = _config(tmp_path, strategy, image_size=64, batch_size=8, epochs=2,
                     mixed_precision="bf16")
    result = run(config, progress=False)
    assert result.costs["memory_bytes"]["peak_cuda"] > 0
    loaded = load_run(result.run_dir, device="cuda")
    batch = torch.rand(4, 3, 64, 64, device="cuda")
    with torch.no_grad():
        first = loaded.model.eval()(batch)
    assert torch.isfinite(first).all()
    # The run's own reload check ran on the GPU under autocast: within bf16 rounding.
    assert result.costs["reload_max_abs_diff"] <= 2e-2 * max(1.0, first.abs().max().item())
