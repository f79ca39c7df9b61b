"""Processes on several machines, and the processes ``accelerate launch`` starts.

Two machines are simulated on this one: two torchrun agents (``--nnodes 2``) rendezvous over the
loopback interface, and each works in a folder of its own, so that a relative ``--out`` and a
cache named per machine behave as on machines that share no filesystem. Global rank 0 alone
writes the run folder, which every machine must see; the first process of each machine
(LOCAL_RANK 0) builds the caches its machine lacks.

``accelerate launch`` (Accelerate 1.15): ``--cpu`` sends the command to its simple launcher,
which runs it once, without a rank, unless ``--mpirun_hostfile`` wraps it in mpirun
(accelerate issue #2741); ``--multi_gpu --num_processes N`` goes through torchrun, which on a
machine without GPUs starts N processes that train on CPU. So the tests
run ``--multi_gpu`` and, where Open MPI is installed, ``--cpu --mpirun_hostfile``, and check
that a bare ``--cpu --num_processes 2`` is refused instead of training alone.

Every subprocess runs with CUDA hidden: two processes of a GPU machine would share one GPU.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from test_processes import AUDIT, _args, _assert_close_metrics, _max_weight_difference, reference

pytestmark = pytest.mark.slow

__all__ = ["reference"]  # the one-process run these runs must equal (a fixture)

TRAIN_TIMEOUT = 480  # seconds; a process that waits for a peer that died waits longer
QUICK_TIMEOUT = 240

# Run by every process of a two-machine launch: two caches built under main_first, one
# folder both machines see and one per machine, then the Accelerator a run would make.
CACHE_SCRIPT = '''
import json, os, sys, time
from pathlib import Path
from adaptlab.engine import distributed
from adaptlab.engine.accelerator import make_accelerator

results, shared = Path(sys.argv[1]), Path(sys.argv[2])
distributed.join("auto")
entry = {"rank": distributed.rank(), "local_rank": distributed.local_rank(),
         "machine": os.environ["MACHINE"]}
for kind, cache in (("shared", shared), ("own", Path(os.environ["MACHINE_CACHE"]))):
    with distributed.main_first():
        marker = cache / "model"
        entry[kind] = "found" if marker.is_file() else "built"
        if entry[kind] == "built":
            time.sleep(1)  # a build takes a while: a second builder would overlap this one
            cache.mkdir(parents=True, exist_ok=True)
            marker.write_text(os.environ["MACHINE"])
entry["processes"] = make_accelerator("auto", "no", 1).num_processes
(results / f"{entry['rank']}.json").write_text(json.dumps(entry))
'''


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment(extra: dict | None = None) -> dict:
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", **(extra or {})}


def _kill_with_workers(process: subprocess.Popen) -> None:
    # torchrun starts each worker in a session of its own, so the launcher's descendants are
    # listed before it goes.
    try:
        workers = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    for worker in [*workers, psutil.Process(process.pid)]:
        try:
            worker.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait()


def _together(commands: list[tuple[list[str], Path, dict]], timeout: int) -> list:
    """Start every command at once (each in its own folder) and wait for all; whatever is
    still running after ``timeout``, or when waiting fails, is killed with its workers."""
    started = [subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
               for command, cwd, env in commands]
    finished = []
    try:
        for process in started:
            out, err = process.communicate(timeout=timeout)
            finished.append(subprocess.CompletedProcess(process.args, process.returncode,
                                                        out, err))
    finally:
        for process in started:
            if process.poll() is None:
                _kill_with_workers(process)
    return finished


def _machines(target: list[str], root: Path, processes: int = 1,
              env: dict | None = None) -> tuple[list, list[Path]]:
    """``target`` (``-m module ...`` or a script) on two simulated machines, each running
    ``processes`` processes in its own folder ``root/machine{0,1}``."""
    port, folders, commands = _free_port(), [], []
    for node in (0, 1):
        folder = root / f"machine{node}"
        folder.mkdir(parents=True, exist_ok=True)
        folders.append(folder)
        commands.append(([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
                          "--node_rank", str(node), "--nproc_per_node", str(processes),
                          "--master_addr", "127.0.0.1", "--master_port", str(port), *target],
                         folder, _environment({**(env or {}), "MACHINE": f"machine{node}",
                                               "MACHINE_CACHE": str(folder / "cache")})))
    return commands, folders


def _audit(tmp_path: Path, watched: Path, audit: str = AUDIT) -> tuple[dict, Path]:
    """test_processes' audit hook on every Python process: writes under ``watched`` by any
    process whose rank is not 0 are logged."""
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "sitecustomize.py").write_text(audit)
    log = tmp_path / "writes.log"
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path / "audit"),
                                           os.environ.get("PYTHONPATH", "")]),
            "AUDIT_RUN_DIR": str(watched), "AUDIT_LOG": str(log)}, log


def _assert_one_writer(log: Path, processes: int) -> None:
    lines = log.read_text().splitlines()
    assert {f"{rank} started" for rank in range(processes)} <= set(lines)
    assert any(line.startswith("0 ") and "metrics.json" in line for line in lines)
    assert [line for line in lines if not line.startswith("0 ")
            and not line.endswith(" started")] == []


def _assert_equals_one_process(one, run_dir: Path, processes: int) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert json.loads((run_dir / "costs.json").read_text())["processes"] == processes
    assert metrics["split_sizes"] == one.metrics["split_sizes"]
    _assert_close_metrics(one.metrics, metrics)
    assert _max_weight_difference(one.run_dir, run_dir) < 1e-5
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "run_end" for e in events) == 1


def test_two_machines_train_as_one_with_one_writer(reference, tmp_path):
    data, one = reference
    root = tmp_path / "machines"
    out = root / "shared" / "run"  # one path both machines see
    env, log = _audit(tmp_path, root)
    commands, _ = _machines(["-m", "adaptlab.cli", *_args(data, out)], root, env=env)
    for node, done in enumerate(_together(commands, TRAIN_TIMEOUT)):
        assert done.returncode == 0, (node, done.stderr[-3000:])
    _assert_one_writer(log, 2)
    _assert_equals_one_process(one, out, 2)


def test_a_run_folder_each_machine_keeps_to_itself_is_refused(reference, tmp_path):
    """Every process reads back what the main one writes in the run folder (the best epoch's
    weights): machines that do not share it are refused before training, with the process
    and machine named, and machine 1's own folder at that path (an earlier run there) neither
    refuses the run as taken nor changes."""
    data, one = reference
    root = tmp_path / "machines"
    stale = root / "machine1" / "run"
    stale.mkdir(parents=True)
    for name in ("config.json", "metrics.json", "baseline.json"):
        shutil.copy(one.run_dir / name, stale / name)
    before = {p.name: p.read_bytes() for p in stale.iterdir()}
    commands, (first, _) = _machines(["-m", "adaptlab.cli", *_args(data, Path("run"))], root)
    main, other = _together(commands, QUICK_TIMEOUT)
    assert main.returncode != 0 and other.returncode != 0
    errors = [line for line in main.stderr.splitlines() if line.startswith("adaptlab: error")]
    assert errors == [f"adaptlab: error: --out run: process 1 on {socket.gethostname()} cannot "
                      "see the files process 0 writes there; with several machines the run "
                      "folder must be on a filesystem they all share"]
    assert "adaptlab: error" not in other.stderr  # the main process reports
    assert not (first / "run").exists()  # what the main process made for the run is gone
    assert {p.name: p.read_bytes() for p in stale.iterdir()} == before


def test_caches_are_built_once_per_filesystem(tmp_path):
    """Two machines of two processes: a cache folder both see is built once, by the main
    process; a folder of each machine's own is built once on each, by its first process."""
    results, shared = tmp_path / "results", tmp_path / "shared-cache"
    results.mkdir()
    script = tmp_path / "caches.py"
    script.write_text(CACHE_SCRIPT)
    commands, folders = _machines([str(script), str(results), str(shared)], tmp_path,
                                  processes=2)
    for node, done in enumerate(_together(commands, QUICK_TIMEOUT)):
        assert done.returncode == 0, (node, done.stderr[-3000:])
    entries = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]
    assert sorted(e["rank"] for e in entries) == [0, 1, 2, 3]
    assert [e["rank"] for e in entries if e["shared"] == "built"] == [0]
    assert (shared / "model").read_text() == "machine0"
    # one build on each machine, by its first process
    assert sorted((e["machine"], e["local_rank"]) for e in entries if e["own"] == "built") \
        == [("machine0", 0), ("machine1", 0)]
    for folder in folders:
        assert (folder / "cache" / "model").read_text() == folder.name
    # device "auto" without CUDA: the Accelerator joins all four processes (gloo)
    assert {e["processes"] for e in entries} == {4}


def test_resume_needs_the_run_on_every_machine(reference, tmp_path):
    """Every process of a resumed run reads the run folder: a machine that cannot see it
    stops them all, and the main process names the process and machine."""
    _, one = reference
    root = tmp_path / "machines"
    (root / "machine0" / "run").mkdir(parents=True)
    shutil.copy(one.run_dir / "config.json", root / "machine0" / "run" / "config.json")
    commands, _ = _machines(["-m", "adaptlab.cli", "run", "wildlife", "--out", "run",
                             "--resume", "--quiet"], root)
    first, second = _together(commands, QUICK_TIMEOUT)
    assert first.returncode != 0 and second.returncode != 0
    errors = [line for line in first.stderr.splitlines() if line.startswith("adaptlab: error")]
    assert errors == ["adaptlab: error: --resume: run holds no run (config.json missing) "
                      f"(in process 1, on {socket.gethostname()})"]
    assert "adaptlab: error" not in second.stderr  # one process reports
    assert [p.name for p in (root / "machine0" / "run").iterdir()] == ["config.json"]


def test_an_error_one_machine_meets_alone_is_printed_there(reference, tmp_path):
    """Data missing on machine 1 only: its process says what failed and where, instead of
    leaving the launcher's exit status as the only trace; the main process, which met no
    error, does not claim it."""
    data, _ = reference
    root = tmp_path / "machines"
    shutil.copytree(data, root / "machine0" / "photos")
    commands, _ = _machines(["-m", "adaptlab.cli", *_args(Path("photos"), root / "run")], root)
    first, second = _together(commands, QUICK_TIMEOUT)
    assert second.returncode != 0
    errors = [line for line in second.stderr.splitlines() if line.startswith("adaptlab: error")]
    assert len(errors) == 1, second.stderr[-3000:]
    assert errors[0].startswith(f"adaptlab: error in process 1 on {socket.gethostname()}: ")
    assert "photos" in errors[0]
    assert "adaptlab: error" not in first.stderr


def _accelerate(options: list[str], args: list[str], cwd: Path, env: dict | None = None,
                timeout: int = TRAIN_TIMEOUT) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch", *options,
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "adaptlab.cli", *args]
    return _together([(command, cwd, _environment(env))], timeout)[0]


def test_accelerate_launch_multi_gpu_trains_two_cpu_processes_as_one(reference, tmp_path):
    data, one = reference
    out = tmp_path / "run"
    env, log = _audit(tmp_path, out)
    done = _accelerate(["--multi_gpu", "--num_processes", "2"], _args(data, out), tmp_path, env)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_one_writer(log, 2)
    _assert_equals_one_process(one, out, 2)


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs Open MPI's mpirun")
def test_accelerate_launch_cpu_through_mpirun_trains_as_one(reference, tmp_path):
    """mpirun gives its processes MPI's variables, not torchrun's; Accelerate sets RANK from
    them only when it joins, after the interpreter starts, so the audit reads MPI's."""
    data, one = reference
    out, hostfile = tmp_path / "run", tmp_path / "hostfile"
    hostfile.write_text("localhost slots=2\n")
    rank = 'os.environ.get("RANK")'
    assert rank in AUDIT
    env, log = _audit(tmp_path, out, AUDIT.replace(
        rank, 'os.environ.get("RANK", os.environ.get("OMPI_COMM_WORLD_RANK"))'))
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    done = _accelerate(["--cpu", "--mpirun_hostfile", str(hostfile), "--num_processes", "2"],
                       _args(data, out), tmp_path, env)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_one_writer(log, 2)
    _assert_equals_one_process(one, out, 2)


def test_accelerate_launch_cpu_without_mpirun_is_refused(reference, tmp_path):
    data, _ = reference
    out = tmp_path / "run"
    done = _accelerate(["--cpu", "--num_processes", "2"], _args(data, out), tmp_path,
                       timeout=QUICK_TIMEOUT)
    assert done.returncode != 0
    assert "adaptlab: error: accelerate launch --cpu started one process without a rank" \
        in done.stderr
    assert not out.exists()


def test_a_resumed_run_joins_its_group_for_the_device_it_trained_on(tmp_path, monkeypatch):
    """`--resume` comes with the CLI's default device (`auto`); the processes must join for
    the saved run's device (a CPU run resumed on a GPU machine would otherwise form an NCCL
    group and run its CPU collectives through it)."""
    from adaptlab.config import RunConfig
    from adaptlab.engine import distributed
    from adaptlab.run import run

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(
        RunConfig(domain="wildlife", device="cpu", out=str(folder)).to_json())
    joined = []

    def record(device):
        joined.append(device)
        raise RuntimeError("stop after joining")

    monkeypatch.setattr(distributed, "join", record)
    with pytest.raises(RuntimeError, match="stop after joining"):
        run(RunConfig(domain="wildlife", device="auto", out=str(folder)), resume=True)
    with pytest.raises(RuntimeError, match="stop after joining"):
        run(RunConfig(domain="wildlife", device="auto", out=str(tmp_path / "new")))
    assert joined == ["cpu", "auto"]
