"""A run stopped mid-epoch and resumed ends with the same weights as an uninterrupted run (CPU,
deterministic), and the freezing state survives the resume. Kills: test_crash_safety.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adaptlab.backbones.offline import efficientnet_lite0
from adaptlab.config import RunConfig
from adaptlab.run import run

pytestmark = pytest.mark.slow


def _config(data: Path, out: Path, strategy: str = "freeze", epochs: int = 3) -> RunConfig:
    return RunConfig(domain="wildlife", data=str(data), strategy=strategy, out=str(out),
                     device="cpu", epochs=epochs, image_size=64, batch_size=8, lr=3e-3,
                     strategy_options={"k": -3})


def _assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_file(str(a)), load_file(str(b))
    assert first.keys() == second.keys()
    for name in first:
        assert (first[name] == second[name]).all(), name


def test_stop_mid_epoch_then_resume_matches(tmp_path, colour_folder):
    reference = run(_config(colour_folder, tmp_path / "reference", epochs=2), progress=False)

    holder = {}

    def stop_after_first_step(event):
        if event["event"] == "step" and event["global_step"] == 1:
            holder["trainer"].request_stop()

    stopped = run(_config(colour_folder, tmp_path / "stopped", epochs=2), progress=False,
                  subscribers=[stop_after_first_step],
                  on_trainer=lambda trainer: holder.setdefault("trainer", trainer))
    assert stopped.metrics == {}  # interrupted: no final metrics yet
    state = json.loads(next((tmp_path / "stopped" / "checkpoints").glob("epoch-*/state.json"))
                       .read_text())
    assert state["train"]["step_in_epoch"] == 1 and state["train"]["epoch"] == 0

    checkpoint = load_file(str(next((tmp_path / "stopped" / "checkpoints")
                                    .glob("epoch-*/model.safetensors"))))
    seen, at = {}, {}

    def at_resume(event):
        if event["event"] == "resume":
            for name, param in seen["trainer"].unwrapped.named_parameters():
                at[name] = (param.requires_grad, param.detach().clone())

    resumed = run(RunConfig(domain="wildlife", out=str(tmp_path / "stopped")), resume=True,
                  progress=False, subscribers=[at_resume],
                  on_trainer=lambda trainer: seen.setdefault("trainer", trainer))
    # Freezing survived, seen in the resumed process's model (costs.json's trainable count is
    # itself restored from the checkpoint, so it cannot tell): the stem and the bottom 13
    # blocks, named from the network, are frozen at their pre-trained values, and the rest
    # holds the checkpoint's trained values, which a fresh configure would not give.
    network = efficientnet_lite0().module
    blocks = [f"blocks.{s}.{i}." for s, stage in enumerate(network.blocks)
              for i in range(len(stage))]
    pretrained = {f"backbone.{name}": p for name, p in network.named_parameters()}
    frozen = {name for name in pretrained
              if name.startswith(("backbone.conv_stem.", "backbone.bn1.", *(
                  f"backbone.{b}" for b in blocks[:-3])))}
    assert {name for name, (grad, _) in at.items() if not grad} == frozen
    assert all(torch.equal(at[name][1], pretrained[name]) for name in frozen)
    trained = [name for name in at if name not in frozen]
    assert all(torch.equal(at[name][1], checkpoint[name]) for name in trained)
    assert not all(torch.equal(at[name][1], pretrained[name]) for name in trained
                   if name in pretrained)
    _assert_same_weights(reference.run_dir / "weights.safetensors",
                         resumed.run_dir / "weights.safetensors")
    # The interrupted epoch's training metrics cover the whole epoch (sums are checkpointed).
    assert [h["train"] for h in resumed.metrics["history"]] == \
        [h["train"] for h in reference.metrics["history"]]
    assert set(resumed.metrics["history"][0]["train"]) == {"loss", "accuracy"}
