"""A run killed after a checkpoint and resumed ends with the same weights as an uninterrupted
run (CPU, deterministic), and the freezing state survives the resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

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


def test_killed_run_resumes_to_identical_weights(tmp_path, colour_folder):
    reference = run(_config(colour_folder, tmp_path / "reference"), progress=False)

    crashed = tmp_path / "crashed"
    command = [sys.executable, "-m", "adaptlab.cli", "run", "wildlife", "--data",
               str(colour_folder), "--strategy", "freeze", "--set", "k=-3", "--out",
               str(crashed), "--device", "cpu", "--epochs", "3", "--set", "image_size=64",
               "--set", "batch_size=8", "--set", "lr=0.003", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONHASHSEED": "0"})
    events = crashed / "events.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if events.is_file() and '"event": "checkpoint"' in events.read_text():
            process.send_signal(signal.SIGKILL)  # a crash: no cleanup, no final files
            break
        time.sleep(0.02)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (crashed / "metrics.json").exists()

    resumed = run(RunConfig(domain="wildlife", out=str(crashed)), resume=True, progress=False)
    kinds = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert "resume" in kinds
    _assert_same_weights(reference.run_dir / "weights.safetensors",
                         resumed.run_dir / "weights.safetensors")
    assert resumed.metrics["final"] == reference.metrics["final"]
    assert resumed.costs["trainable_params"] == reference.costs["trainable_params"]


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

    resumed = run(RunConfig(domain="wildlife", out=str(tmp_path / "stopped")), resume=True,
                  progress=False)
    _assert_same_weights(reference.run_dir / "weights.safetensors",
                         resumed.run_dir / "weights.safetensors")
    # Freezing survived: the resumed run trained exactly the same parameter set.
    assert resumed.costs["trainable_params"] == reference.costs["trainable_params"]
    # The interrupted epoch's training metrics cover the whole epoch (sums are checkpointed).
    assert [h["train"] for h in resumed.metrics["history"]] == \
        [h["train"] for h in reference.metrics["history"]]
    assert set(resumed.metrics["history"][0]["train"]) == {"loss", "accuracy"}
