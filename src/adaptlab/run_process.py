"""Runs in a child process that stays up between them, with each run's engine events
streamed back and a stop request sent in.

Why a process and not a thread of the caller (a notebook kernel): measured here, PyTorch's
CPU kernels run about 1.2-1.6x slower on a second thread of a process whose main thread has
already used them (two OpenMP thread teams share the cores; BENCHMARKS.md), and a process
keeps a crash of the run out of the kernel. Why one process for many runs: a fresh process
pays the first-run costs again (imports, kernel selection and JIT for every layer shape,
a few seconds on a CPU), which a warm one has behind it. A process that dies is replaced for
the next run.

Protocol, one JSON object per line:
- parent -> child stdin: a run ``{"config": {...}, "resume": bool, "processes": N}``;
  ``"stop"`` while it runs; end of input (the parent is done or went away) stops the current run, with a
  checkpoint, and ends the process;
- child -> parent stdout: ``{"event": "ready"}`` once the engine is imported; per run, every
  engine event, ``{"event": "stop_received", "global_step"}`` when a stop arrives, and last
  ``{"event": "run_result", ...}`` or ``{"event": "run_error", "error", "details"}``.
  Anything a run prints goes to stderr, never stdout.

A run with ``processes`` > 1 is started by the child through torchrun (``--rank-job``
below): the main process streams the engine's events on the same stdout, a stop reaches it
through a file it looks for after every step (the engine then stops every process at the same
step), and the outcome comes back in a file the child reports from.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Any

RESULT, ERROR, STOP_RECEIVED, READY = "run_result", "run_error", "stop_received", "ready"
FINISHED = "_job_finished"  # put on a job's queue after its last event


def drain_queue(events: queue.SimpleQueue) -> list[dict]:
    """Every event queued so far, without waiting."""
    drained = []
    while True:
        try:
            drained.append(events.get_nowait())
        except queue.Empty:
            return drained


class RunJob:
    """One run in a :class:`RunWorker`: its events arrive on ``events`` (a queue the caller
    drains), then ``FINISHED``; ``result`` is the ``RunResult`` of a completed or stopped
    run, ``error`` one line when it failed."""

    def __init__(self, worker: RunWorker, config, resume: bool) -> None:
        self.worker, self.config, self.resume = worker, config, resume
        self.events: queue.SimpleQueue[dict] = queue.SimpleQueue()
        self.result = None
        self.error: str | None = None
        self.error_details = ""
        self.global_step: int | None = None  # the last step the run reported
        self._stop_sent = False
        self._done = threading.Event()

    def _receive(self, event: dict[str, Any]) -> None:
        if event["event"] == "step":
            self.global_step = event["global_step"]
        self.events.put(event)

    def _finish(self, result=None, error: str | None = None, details: str = "") -> None:
        self.result, self.error, self.error_details = result, error, details
        self._done.set()
        self.events.put({"event": FINISHED})

    def request_stop(self) -> None:
        """Ask the run to stop after its current step (it checkpoints first)."""
        if not self._done.is_set() and not self._stop_sent:
            self._stop_sent = True
            self.worker._send("stop")

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def drain(self) -> list[dict]:
        return drain_queue(self.events)

    def join(self, timeout: float | None = None) -> None:
        self._done.wait(timeout)


class RunWorker:
    """The parent's handle on one child process; ``submit`` a run when it is free."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._job: RunJob | None = None
        self._ready = threading.Event()
        self._stderr: deque[str] = deque(maxlen=40)
        self._lock = threading.Lock()

    def spawn(self) -> RunWorker:
        # Its own session: the kernel's interrupt (SIGINT to the kernel's process group) must
        # not kill a run mid-step; the kernel turns it into a stop request instead.
        self._process = subprocess.Popen(
            [sys.executable, "-m", "adaptlab.run_process"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
            start_new_session=True)
        for target, name in ((self._read_events, "events"), (self._read_stderr, "stderr")):
            threading.Thread(target=target, daemon=True, name=f"adaptlab-worker-{name}").start()
        return self

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the process has imported the engine (True) or the timeout passed."""
        return self._ready.wait(timeout)

    def submit(self, config, resume: bool = False, processes: int = 1) -> RunJob:
        """Start ``config`` (a ``RunConfig``) in ``processes`` data-parallel processes; the
        worker must be alive and free."""
        import dataclasses

        if self._process is None:
            self.spawn()
        if self._job is not None:
            raise RuntimeError("this worker is already running a job")
        self._job = job = RunJob(self, config, resume)
        self._send(json.dumps({"config": dataclasses.asdict(config), "resume": resume,
                               "processes": processes}))
        return job

    def close(self) -> None:
        """End the process (a run in progress stops at its next step, checkpointed)."""
        if self._process is not None and self._process.stdin and not self._process.stdin.closed:
            with self._lock:
                self._process.stdin.close()

    def _send(self, line: str) -> None:
        with self._lock:
            try:
                self._process.stdin.write(line + "\n")
                self._process.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # the process has ended; its reader reports that

    # -- reader threads (they only parse and queue; the caller's thread applies) --------------
    def _read_events(self) -> None:
        for line in self._process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                self._stderr.append(line)
                continue
            kind, job = event.get("event"), self._job
            if kind == READY:
                self._ready.set()
            elif job is None:
                continue
            elif kind == RESULT:
                from adaptlab.assembly import RunResult

                self._job = None
                job._finish(RunResult(Path(event["run_dir"]), event["metrics"], event["costs"],
                                      event["headline"]))
            elif kind == ERROR:
                self._job = None
                job._finish(error=event["error"], details=event.get("details", ""))
            else:
                job._receive(event)
        code = self._process.wait()
        job, self._job = self._job, None
        if job is not None:
            tail = "".join(self._stderr).strip().splitlines()[-3:]
            job._finish(error=f"the run's process ended with exit code {code}"
                              + (f": {' | '.join(tail)}" if tail else ""),
                        details="".join(self._stderr))

    def _read_stderr(self) -> None:
        for line in self._process.stderr:
            self._stderr.append(line)


# -- child side ------------------------------------------------------------------------------
_EMIT_LOCK = threading.Lock()  # the engine and the stdin listener both write lines


def _emit(event: dict[str, Any]) -> None:
    line = json.dumps(event, default=float) + "\n"
    with _EMIT_LOCK:
        sys.__stdout__.write(line)
        sys.__stdout__.flush()


class _Current:
    """The run in progress, shared by the main thread and the stdin listener."""

    def __init__(self) -> None:
        self.trainer = None
        self.stop = False
        self.lock = threading.Lock()

    def attach(self, trainer) -> None:
        with self.lock:
            self.trainer = trainer
            if self.stop:  # the stop came while the data or the baseline loaded
                trainer.request_stop()

    def request_stop(self, announce: bool) -> None:
        with self.lock:
            self.stop = True
            trainer = self.trainer
        if announce:
            state = getattr(trainer, "state", None)
            _emit({"event": STOP_RECEIVED,
                   "global_step": state.global_step if state else None})
        if trainer is not None:
            trainer.request_stop()


def _listen(jobs: queue.SimpleQueue, current: _Current) -> None:
    for line in sys.stdin:
        line = line.strip()
        if line == "stop":
            current.request_stop(announce=True)
        elif line:
            with current.lock:  # in order: a stop sent after this run is for this run
                current.trainer, current.stop = None, False
            jobs.put(json.loads(line))
    current.request_stop(announce=False)  # the parent is done or went away
    jobs.put(None)


def _outcome(job: dict, subscriber, on_trainer) -> dict:
    """Run ``job`` here; its last event (a result or an error)."""
    import traceback

    from adaptlab.config import RunConfig
    from adaptlab.errors import AdaptlabError
    from adaptlab.run import run

    try:
        result = run(RunConfig(**job["config"]), resume=job["resume"], subscribers=[subscriber],
                     progress=False, on_trainer=on_trainer)
    except AdaptlabError as exc:
        return {"event": ERROR, "error": str(exc)}
    except Exception as exc:  # reported to the notebook with its traceback
        return {"event": ERROR, "error": f"{type(exc).__name__}: {exc}",
                "details": traceback.format_exc()}
    return {"event": RESULT, "run_dir": str(result.run_dir), "metrics": result.metrics,
            "costs": result.costs, "headline": result.headline}


def _run_one(job: dict, current: _Current) -> None:
    processes = int(job.get("processes", 1))
    if processes > 1:
        _run_in_processes(job, processes, current)
    else:
        _emit(_outcome(job, _emit, current.attach))


class _StopFile:
    """Stands for the trainer of a run in other processes: a stop creates the file."""

    def __init__(self, path: Path) -> None:
        self.path, self.state = path, None

    def request_stop(self) -> None:
        self.path.touch()


def _run_in_processes(job: dict, processes: int, current: _Current) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="adaptlab-ranks-") as folder:
        job_file, stop_file, result_file = (Path(folder) / n for n in
                                            ("job.json", "stop", "result.json"))
        job_file.write_text(json.dumps(job))
        current.attach(_StopFile(stop_file))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes",
                   "1", "--nproc_per_node", str(processes), "-m", "adaptlab.run_process",
                   "--rank-job", str(job_file), str(stop_file), str(result_file)]
        # The main rank writes its events straight to this process's stdout (the protocol
        # pipe); torchrun's own messages go to stderr.
        code = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=sys.__stdout__,
                              stderr=sys.stderr, check=False).returncode
        if result_file.is_file():
            _emit(json.loads(result_file.read_text()))
        else:
            _emit({"event": ERROR, "error": f"one of the {processes} processes ended with exit "
                                            f"code {code}; the log shows its message"})


def _rank_main(job_file: Path, stop_file: Path, result_file: Path) -> int:
    """One process of a several-process run (under torchrun)."""
    sys.stdout = sys.stderr
    from adaptlab.engine import distributed
    from adaptlab.engine.atomic import atomic_write_text

    trainer = {}

    def forward(event: dict) -> None:  # only the main process's bus has subscribers
        _emit(event)
        if event["event"] == "step" and stop_file.exists() and "it" in trainer:
            trainer["it"].request_stop()

    outcome = _outcome(json.loads(job_file.read_text()), forward,
                       lambda it: trainer.setdefault("it", it))
    if distributed.is_main():
        atomic_write_text(result_file, json.dumps(outcome, default=float))
    return 0


def main() -> int:
    import gc

    sys.stdout = sys.stderr  # the protocol owns stdout; prints and progress go to stderr
    import torch

    import adaptlab.session  # noqa: F401 - the engine's imports, before "ready"

    jobs: queue.SimpleQueue = queue.SimpleQueue()
    current = _Current()
    threading.Thread(target=_listen, args=(jobs, current), daemon=True,
                     name="adaptlab-stdin").start()
    _emit({"event": READY})
    while (job := jobs.get()) is not None:
        _run_one(job, current)
        with current.lock:
            current.trainer = None
        gc.collect()  # the finished run's model and optimizer go before the next run
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rank-job"]:
        sys.exit(_rank_main(*(Path(arg) for arg in sys.argv[2:5])))
    sys.exit(main())
