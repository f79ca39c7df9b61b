"""Crash safety: a run killed at random moments (SIGKILL, 20 times) and resumed after each
kill ends with the weights of a run never interrupted; a run killed before its first
checkpoint resumes from its start; a checkpoint damaged on disk is named and passed over."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from adaptlab.config import RunConfig
from adaptlab.run import run
from conftest import run_cli, write_colour_folder

pytestmark = pytest.mark.slow
DRIVER = Path(__file__).with_name("fault_injection.py")


@pytest.mark.parametrize("strategy, options", [
    ("freeze", {"k": -3}),
    ("lora", {}),
    # SlimFit's trainable set changes every step; its scores and masks must survive too.
    ("slimfit", {"freeze_ratio": 0.9}),
])
def test_twenty_random_kills_end_on_the_uninterrupted_weights(tmp_path, colour_folder,
                                                              strategy, options):
    result = subprocess.run(
        [sys.executable, str(DRIVER), "--data", str(colour_folder), "--strategy", strategy,
         "--options", json.dumps(options), "--kills", "20", "--epochs", "4",
         "--out", str(tmp_path / "fi")],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONHASHSEED": "0"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:] + \
        (tmp_path / "fi" / "attempts.log").read_text()[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["kills"] >= 20
    # Every attempt that got as far as loading resumed from the newest complete checkpoint
    # (the driver checks each against the folders it read back after the kill).
    assert report["resumes_checked"] >= 10
    assert report["weight_files"], "the finished run wrote no weights"
    assert report["weights_equal"], report["differing"]
    assert report["final_metrics_equal"]
    # The kills landed in every phase: start-up, steps, evaluation and file writes.
    assert {k["mode"] for k in report["landed"]} >= {"start", "step", "file"}


COMMANDS = Path(__file__).with_name("command_faults.py")


def _killed_and_continued(out: Path, command: list[str], copy: Path | None = None) -> dict:
    """Kill ``command`` three times at random moments, run it again after each kill, and
    compare what it finally wrote with an uninterrupted run of it (command_faults.py)."""
    result = subprocess.run(
        [sys.executable, str(COMMANDS), "--kills", "3", "--out", str(out),
         *(["--copy", str(copy)] if copy else []), "--", *command],
        capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONHASHSEED": "0"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:] + \
        (out / "attempts.log").read_text()[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # At least one kill landed (the comparison below is then a continuation's); a continued
    # attempt may finish before a later kill comes, so not always all three.
    assert report["kills"] >= 1, report
    assert report["json_files"] and not report["differing"], report
    return report


def test_sweep_soup_explanation_and_curve_continue_after_kills(tmp_path):
    # Data already split, so that runs of two seeds share their splits and make a soup.
    for index, (split, per_class) in enumerate((("train", 6), ("val", 3), ("test", 3))):
        write_colour_folder(tmp_path / "data" / split, per_class=per_class, seed=index)
    sweep = _killed_and_continued(tmp_path / "sweep", [
        "sweep", "wildlife", "--data", str(tmp_path / "data"), "--strategy", "freeze",
        "--k", "2", "--seeds", "0,1", "--epochs", "2", "--device", "cpu", "--set",
        "image_size=32", "--set", "batch_size=8", "--quiet", "--out", "{OUT}"])
    assert sweep["weight_files"] == 2  # both runs of the sweep, equal to the uninterrupted's
    runs = tmp_path / "sweep" / "reference"
    soup = _killed_and_continued(tmp_path / "soup", [
        "soup", str(runs / "k=2-seed=0"), str(runs / "k=2-seed=1"), "--device", "cpu",
        "--out", "{OUT}"])
    assert soup["weight_files"] == 1
    explained = _killed_and_continued(tmp_path / "explain", [
        "explain", "{OUT}", "--samples", "2", "--no-compare", "--device", "cpu"],
        copy=runs / "k=2-seed=0")
    assert explained["report_pages"] == 1 and explained["report_pages_whole"]
    curve = _killed_and_continued(tmp_path / "curve", [
        "transfer", "wildlife", "--fractions", "1", "--seeds", "0", "--epochs", "1", "--device",
        "cpu", "--set", "image_size=32", "--source-set", "image_size=32", "--cache",
        "{OUT}/cache", "--quiet", "--out", "{OUT}/curve"])
    assert curve["weight_files"] == 3  # the source run and both arms


def _config(data: Path, out: Path, epochs: int = 2) -> RunConfig:
    return RunConfig(domain="wildlife", data=str(data), strategy="freeze", out=str(out),
                     device="cpu", epochs=epochs, image_size=32, batch_size=8, lr=3e-3,
                     strategy_options={"k": -3})


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def test_run_killed_before_its_first_checkpoint_resumes_from_its_start(tmp_path, colour_folder,
                                                                       capsys):
    reference = run(_config(colour_folder, tmp_path / "reference"), progress=False)
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "adaptlab.cli", "run", "wildlife", "--data", str(colour_folder),
         "--strategy", "freeze", "--set", "k=-3", "--out", str(killed), "--device", "cpu",
         "--epochs", "2", "--set", "image_size=32", "--set", "batch_size=8",
         "--set", "lr=0.003", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if (killed / "events.jsonl").is_file() and "baseline" in \
                (killed / "events.jsonl").read_text():
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not list((killed / "checkpoints").glob("epoch-*"))
    # A leftover of an atomic write cut short is not a run: a fresh run could use the folder.
    (killed / ".metrics.json.tmp-1").write_text("{")

    code, _, err = run_cli(["run", "wildlife", "--out", str(killed), "--resume", "--quiet"],
                           capsys)
    assert code == 0, err
    resumed = [e for e in _events(killed) if e["event"] == "resume"]
    assert resumed and resumed[0]["checkpoint"] is None and resumed[0]["epoch"] == 0
    for name in ("weights.safetensors",):
        first, second = load_file(str(reference.run_dir / name)), load_file(str(killed / name))
        assert all((first[k] == second[k]).all() for k in first)

    leftovers_only = tmp_path / "leftovers"
    leftovers_only.mkdir()
    (leftovers_only / ".config.json.tmp-99").write_text("{")
    fresh = run(_config(colour_folder, leftovers_only, epochs=1), progress=False)
    assert (fresh.run_dir / "metrics.json").is_file()


def test_damaged_checkpoint_is_named_and_the_previous_one_taken(tmp_path, colour_folder,
                                                                capsys):
    finished = run(_config(colour_folder, tmp_path / "run"), progress=False)
    run_dir = finished.run_dir
    expected = load_file(str(run_dir / "weights.safetensors"))
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("epoch-*")) == ["epoch-0001", "epoch-0002"]
    truncated = checkpoints / "epoch-0002" / "model.safetensors"
    truncated.write_bytes(truncated.read_bytes()[:100])

    code, _, err = run_cli(["run", "wildlife", "--out", str(run_dir), "--resume", "--quiet"],
                           capsys)
    assert code == 0, err
    assert str(truncated) in err and "damaged" in err
    events = _events(run_dir)
    assert [e["path"] for e in events if e["event"] == "checkpoint_damaged"] == [str(truncated)]
    assert [e["epoch"] for e in events if e["event"] == "resume"] == [1]
    # Epoch 2 trained again from epoch 1's checkpoint gives the same weights.
    again = load_file(str(run_dir / "weights.safetensors"))
    assert all((again[k] == expected[k]).all() for k in expected)

    # Every checkpoint damaged: one line naming the newest damaged file, nothing removed.
    (checkpoints / "epoch-0002" / "model.safetensors").write_bytes(b"not safetensors at all")
    (checkpoints / "epoch-0001" / "state.json").write_text("{ torn")
    before = sorted(str(p) for p in run_dir.rglob("*"))
    metrics = (run_dir / "metrics.json").read_text()
    code, out, err = run_cli(["run", "wildlife", "--out", str(run_dir), "--resume", "--quiet"],
                             capsys)
    assert code == 2
    message = [line for line in err.splitlines() if line.startswith("adaptlab:") and
               "warning" not in line]
    assert len(message) == 1 and "epoch-0002" in message[0] and "model.safetensors" in \
        message[0], err
    assert "Traceback" not in err
    assert sorted(str(p) for p in run_dir.rglob("*")) == before
    assert (run_dir / "metrics.json").read_text() == metrics


def test_a_half_written_hidden_folder_is_never_loaded(tmp_path):
    """Only ``epoch-NNNN`` folders are checkpoints: a half-written hidden folder or a
    leftover from a removal is never loaded."""
    import torch

    from adaptlab.engine.checkpoint import load_latest_checkpoint, save_checkpoint

    root = tmp_path / "checkpoints"
    state = {"train": {"epoch": 1}, "optimizer_layout": []}
    save_checkpoint(root, 1, {"w": torch.ones(2)}, {"state": {}, "param_groups": []}, state)
    shutil.copytree(root / "epoch-0001", root / ".epoch-0002.tmp")
    (root / ".epoch-0002.tmp" / "model.safetensors").write_bytes(b"x")
    loaded = load_latest_checkpoint(root)
    assert loaded.folder.name == "epoch-0001" and loaded.model["w"].tolist() == [1.0, 1.0]
