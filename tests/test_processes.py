"""Several processes (torchrun, gloo on CPU) train the same run as one process: same global
batches, same weights and metrics, one writer for the run folder, and a resume with another
process count ends where an uninterrupted run ends.

The strategy is ``head`` on a frozen CNN, whose forward pass has no batch statistics in
training: two processes then compute exactly one process's gradients, up to the order of a
float sum. (A BatchNorm layer that trains normalises each process's half-batch on its own on
CPU, where PyTorch has no SyncBatchNorm; that difference is the layer's, not the engine's.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from adaptlab.config import RunConfig
from adaptlab.run import run
from conftest import write_unequal_colour_folder

pytestmark = pytest.mark.slow

# 6 red, 14 green and 14 blue images: 20 train, 7 val and 7 test here. Unequal classes give
# the balanced loss unequal weights, whose weighted mean two processes must reproduce; a
# global batch of 4 splits as 2 + 2 and divides the training split (no padded training
# batch); each evaluation split ends in a batch of 3, which two processes can only share
# with a padding duplicate.
BATCH = 4
TOLERANCE = 1e-5  # float32 sums in another order

# Records every write under the run folder from a process whose RANK is not 0: Python's
# audit events see files opened for writing, folders made and files renamed or removed.
AUDIT = '''
import os, sys
_rank = os.environ.get("RANK")
_root = os.path.realpath(os.environ["AUDIT_RUN_DIR"])
_log = os.environ["AUDIT_LOG"]
_busy = []

def _note(line):
    _busy.append(1)
    try:
        with open(_log, "a") as handle:
            handle.write(line + "\\n")
    finally:
        _busy.pop()

def _under(path):
    try:
        return os.path.realpath(os.fsdecode(path)).startswith(_root)
    except (TypeError, ValueError):
        return False

_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def _hook(event, args):
    if _busy:
        return
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \\
            (isinstance(flags, int) and flags & _WRITE)
        paths = [path] if writing else []
    elif event in ("os.rename", "os.replace"):
        paths = list(args[:2])
    elif event in ("os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree"):
        paths = [args[0]]
    else:
        return
    for path in paths:
        if isinstance(path, (str, bytes, os.PathLike)) and _under(path):
            _note(f"{_rank} {event} {os.fsdecode(path)}")

if _rank is not None:
    sys.addaudithook(_hook)
    _note(f"{_rank} started")
'''


def _args(data: Path, out: Path) -> list[str]:
    return ["run", "wildlife", "--data", str(data), "--strategy", "head", "--device", "cpu",
            "--epochs", "2", "--set", "image_size=32", "--set", f"batch_size={BATCH}",
            "--set", "lr=0.01", "--out", str(out), "--quiet"]


def _config(data: Path, out: Path) -> RunConfig:
    return RunConfig(domain="wildlife", data=str(data), strategy="head", out=str(out),
                     device="cpu", epochs=2, image_size=32, batch_size=BATCH, lr=0.01)


def _adaptlab(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adaptlab.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600)


def _max_weight_difference(a: Path, b: Path) -> float:
    first, second = load_file(str(a / "weights.safetensors")), load_file(str(b / "weights.safetensors"))
    assert first.keys() == second.keys()
    return max(float((first[k].float() - second[k].float()).abs().max()) for k in first)


def _assert_close_metrics(one: dict, other: dict) -> None:
    for split, metrics in one["final"].items():
        theirs = other["final"][split]
        assert theirs["samples"] == metrics["samples"], split
        assert theirs["accuracy"] == metrics["accuracy"], split
        assert abs(theirs["loss"] - metrics["loss"]) < TOLERANCE, split


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The data and one uninterrupted run in one process."""
    root = tmp_path_factory.mktemp("processes")
    data = write_unequal_colour_folder(root / "data")
    result = run(_config(data, root / "one"), progress=False)
    return data, result


def test_split_sizes_are_awkward(reference):
    """The evaluation splits do not divide over two processes' batches, so the last batch
    is padded and only a gather that drops the padding counts each sample once."""
    _, result = reference
    sizes = result.metrics["split_sizes"]
    assert sizes["train"] % BATCH == 0
    assert sizes["val"] % BATCH % 2 and sizes["test"] % BATCH % 2


def test_two_processes_train_as_one_with_one_writer(reference, tmp_path):
    data, one = reference
    out, log = tmp_path / "two", tmp_path / "writes.log"
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "sitecustomize.py").write_text(AUDIT)
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "audit"),
                                          os.environ.get("PYTHONPATH", "")]),
           "AUDIT_RUN_DIR": str(out), "AUDIT_LOG": str(log)}
    done = _adaptlab([*_args(data, out), "--processes", "2"], env)
    assert done.returncode == 0, done.stderr[-3000:]

    lines = log.read_text().splitlines()
    assert {"0 started", "1 started"} <= set(lines)  # both ranks ran under the audit
    assert any(line.startswith("0 ") and "metrics.json" in line for line in lines)
    assert [line for line in lines if line.startswith("1 ") and line != "1 started"] == []

    costs = json.loads((out / "costs.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert costs["processes"] == 2
    assert metrics["split_sizes"] == one.metrics["split_sizes"]
    for split, size in one.metrics["split_sizes"].items():
        assert metrics["final"][split]["samples"] == size, split  # no padding counted
    _assert_close_metrics(one.metrics, metrics)
    assert _max_weight_difference(one.run_dir, out) < TOLERANCE
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "run_end" for e in events) == 1  # one process wrote the events


def test_resume_with_another_process_count(reference, tmp_path):
    """Stopped after one step in one process, finished by two."""
    data, one = reference
    holder = {}

    def stop_after_first_step(event):
        if event["event"] == "step" and event["global_step"] == 1:
            holder["trainer"].request_stop()

    out = tmp_path / "resumed"
    stopped = run(_config(data, out), progress=False, subscribers=[stop_after_first_step],
                  on_trainer=lambda trainer: holder.setdefault("trainer", trainer))
    assert stopped.metrics == {}

    done = _adaptlab(["run", "wildlife", "--out", str(out), "--resume", "--processes", "2",
                      "--quiet"])
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    resumed = [e for e in events if e["event"] == "resume"]
    assert [(e["processes"], e["saved_processes"], e["step_in_epoch"]) for e in resumed] \
        == [(2, 1, 1)]
    _assert_close_metrics(one.metrics, json.loads((out / "metrics.json").read_text()))
    assert _max_weight_difference(one.run_dir, out) < TOLERANCE


def test_refusals_before_any_process_starts(reference, tmp_path):
    data, _ = reference
    done = _adaptlab([*_args(data, tmp_path / "odd"), "--processes", "3"])
    assert done.returncode == 2
    assert done.stderr.strip() == ("adaptlab: error: batch_size=4 is the global batch and must "
                                   "divide evenly over 3 processes; use a multiple of 3")
    assert not (tmp_path / "odd").exists()
    done = _adaptlab([*_args(data, tmp_path / "zero"), "--processes", "0"])
    assert done.returncode == 2 and "--processes 0" in done.stderr


def test_training_view_worker_runs_stops_and_resumes_two_processes(reference, tmp_path):
    """The notebook's worker with two processes: events stream back from the main process, a
    stop reaches every process at the same step, and a resume (two processes again) ends on
    the uninterrupted run's weights."""
    from adaptlab.run_process import FINISHED, RunWorker

    data, one = reference
    out = tmp_path / "view"
    worker = RunWorker().spawn()
    try:
        job = worker.submit(_config(data, out), processes=2)
        seen = []
        while True:
            event = job.events.get(timeout=600)
            if event["event"] == FINISHED:
                break
            seen.append(event)
            if event["event"] == "step" and event["global_step"] == 2:
                job.request_stop()
        assert job.error is None, job.error_details
        assert job.result.metrics == {}  # stopped, checkpointed
        steps = [e["global_step"] for e in seen if e["event"] == "step"]
        assert steps[:2] == [1, 2] and len(steps) < 10  # it stopped before the 10 steps
        stopped = [e for e in seen if e["event"] == "stopped"]
        assert len(stopped) == 1 and stopped[0]["step"] == steps[-1]

        resumed = worker.submit(RunConfig.from_file(out / "config.json"), resume=True,
                                processes=2)
        resumed.join(600)
        assert resumed.error is None, resumed.error_details
        assert resumed.result.costs["processes"] == 2
    finally:
        worker.close()
    _assert_close_metrics(one.metrics, json.loads((out / "metrics.json").read_text()))
    assert _max_weight_difference(one.run_dir, out) < TOLERANCE


def test_slimfit_under_two_processes_keeps_the_replicas_equal(reference, tmp_path):
    """SlimFit's trainable set changes every step, which DistributedDataParallel cannot
    follow: the engine averages its gradients itself. The engine compares the processes'
    weights after every epoch and stops the run when they differ, so finishing is the proof
    (without the averaging it stops after epoch 1)."""
    data, _ = reference
    out = tmp_path / "slimfit"
    args = [a if a != "head" else "slimfit" for a in _args(data, out)]
    done = _adaptlab([*args, "--processes", "2"])
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2
    assert json.loads((out / "costs.json").read_text())["processes"] == 2
