"""The README's demo, end to end on CPU: real photos, real ImageNet weights, offline."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow


def test_wildlife_demo_adapts_and_beats_the_unadapted_model(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, err = run_cli(["run", "wildlife", "--device", "cpu", "--out", str(out),
                                 "--quiet"], capsys)
    assert code == 0, err
    assert "held-out accuracy" in stdout

    metrics = json.loads((out / "metrics.json").read_text())
    costs = json.loads((out / "costs.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["backbone"] == "efficientnet_lite0" and config["dataset"] == "animals"
    assert set(metrics["final"]) == {"train", "val", "test"}
    for split in ("train", "val", "test"):
        assert {"accuracy", "macro_f1", "per_class_f1"} <= set(metrics["final"][split])

    test = metrics["final"]["test"]
    # The unadapted model: ImageNet features with class prototypes from the cartoon source
    # domain (zero-shot for photos). Adaptation must beat it on held-out photos...
    assert test["accuracy"] > metrics["baseline"]["test"]["accuracy"] + 0.2
    assert test["macro_f1"] > metrics["baseline"]["test"]["macro_f1"]
    # ...and must beat always answering the most common class (real data are imbalanced).
    held_out = metrics["split_sizes"]["test"]
    majority = max(Counter(_test_labels(metrics)).values()) / held_out
    assert test["accuracy"] > majority + 0.2

    assert costs["trainable_params"] < costs["total_params"]
    assert set(costs["memory_bytes"]) == {"parameters", "gradients", "optimizer", "activations",
                                          "peak_cuda"}
    assert costs["memory_bytes"]["activations"] > 0 and costs["samples_per_second"] > 0
    assert (out / "weights.safetensors").is_file()
    kinds = {json.loads(line)["event"] for line in (out / "events.jsonl").read_text().splitlines()}
    assert {"step", "epoch_end", "eval", "checkpoint", "baseline"} <= kinds


def _test_labels(metrics: dict) -> list[int]:
    from adaptlab_wildlife.datasets import load_photos

    data = load_photos({"seed": 0})
    assert len(data.samples["test"]) == metrics["split_sizes"]["test"]
    return data.labels("test")
