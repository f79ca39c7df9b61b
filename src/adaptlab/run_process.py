"""A run in a child process, with its engine events streamed back and a stop request sent in.

Why a process and not a thread of the caller (a notebook kernel): measured here, PyTorch's
CPU kernels run about 1.5x slower on a second thread of a process whose main thread has
already used them (two OpenMP thread teams share the cores), see BENCHMARKS.md; a process
also keeps a crash or a CUDA out-of-memory of the run out of the kernel, hands the GPU's
memory back when the run ends, and is the shape a multi-process launch takes later.

Protocol, one JSON object per line:
- parent -> child stdin: ``{"config": {...}, "resume": bool}``, later ``"stop"``; end of
  input (the parent went away) also stops the run, with a checkpoint;
- child -> parent stdout: ``{"event": "ready"}`` once the engine is imported, every engine
  event, ``{"event": "stop_received", "global_step"}``
  when the stop arrives, then ``{"event": "run_result", ...}`` or ``{"event": "run_error",
  "error", "details"}`` last. Anything the run prints goes to stderr, never stdout.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections import deque
from typing import Any

RESULT, ERROR, STOP_RECEIVED, READY = "run_result", "run_error", "stop_received", "ready"
FINISHED = "_job_finished"  # put on the parent's queue after the child's last line


class RunProcess:
    """Parent side. ``spawn()`` starts ``python -m adaptlab.run_process``, which imports the
    engine and waits: a spare spawned ahead of time starts its run without the import wait.
    ``start(config)`` hands it the run; events arrive on ``events`` (a queue the caller
    drains), then ``FINISHED``; ``result`` is the ``RunResult`` of a completed or stopped
    run, ``error`` one line when it failed."""

    def __init__(self) -> None:
        self.config = None
        self.resume = False
        self.events: queue.SimpleQueue[dict] = queue.SimpleQueue()
        self.result = None
        self.error: str | None = None
        self.error_details = ""
        self.global_step: int | None = None  # the last step the child reported
        self._process: subprocess.Popen | None = None
        self._stderr: deque[str] = deque(maxlen=40)
        self._readers: list[threading.Thread] = []
        self._stop_sent = False
        self._lock = threading.Lock()
        self._ready = threading.Event()

    def spawn(self) -> RunProcess:
        # Its own session: the kernel's interrupt (SIGINT to the kernel's process group) must
        # not kill the run mid-step; the kernel turns it into a stop request instead.
        self._process = subprocess.Popen(
            [sys.executable, "-m", "adaptlab.run_process"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
            start_new_session=True)
        self._readers = [threading.Thread(target=self._read_events, daemon=True,
                                          name="adaptlab-run-events"),
                         threading.Thread(target=self._read_stderr, daemon=True,
                                          name="adaptlab-run-stderr")]
        for reader in self._readers:
            reader.start()
        return self

    def start(self, config, resume: bool = False) -> RunProcess:
        """Run ``config`` (a ``RunConfig``) in the process, spawning it if need be."""
        import dataclasses

        if self._process is None:
            self.spawn()
        self.config, self.resume = config, resume
        job = {"config": dataclasses.asdict(config), "resume": resume}
        self._process.stdin.write(json.dumps(job) + "\n")
        self._process.stdin.flush()
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the process has imported the engine (True) or the timeout passed."""
        return self._ready.wait(timeout)

    @property
    def usable(self) -> bool:
        """A spawned process still waiting for its run."""
        return self._process is not None and self.config is None and \
            self._process.poll() is None

    def discard(self) -> None:
        """End an unused spare (its end of input tells it no run is coming)."""
        if self._process is not None and self.config is None:
            self._process.stdin.close()

    # -- reader threads (they only parse and queue; the caller's thread applies) --------------
    def _read_events(self) -> None:
        finished = False
        for line in self._process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                self._stderr.append(line)
                continue
            kind = event.get("event")
            if kind == READY:
                self._ready.set()
                continue
            if kind == "step":
                self.global_step = event["global_step"]
            if kind == RESULT:
                from pathlib import Path

                from adaptlab.run import RunResult

                self.result = RunResult(Path(event["run_dir"]), event["metrics"],
                                        event["costs"], event["headline"])
                finished = True
            elif kind == ERROR:
                self.error, self.error_details = event["error"], event.get("details", "")
                finished = True
            else:
                self.events.put(event)
        code = self._process.wait()
        self._readers[1].join(timeout=5)
        if not finished:
            tail = "".join(self._stderr).strip().splitlines()[-3:]
            self.error = (f"the run's process ended with exit code {code}"
                          + (f": {' | '.join(tail)}" if tail else ""))
            self.error_details = "".join(self._stderr)
        self.events.put({"event": FINISHED})

    def _read_stderr(self) -> None:
        for line in self._process.stderr:
            self._stderr.append(line)

    # -- control --------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the child to stop after its current step (it checkpoints first)."""
        with self._lock:
            if self._stop_sent or self._process is None or self._process.poll() is not None:
                return
            self._stop_sent = True
            try:
                self._process.stdin.write("stop\n")
                self._process.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass  # it has just ended

    @property
    def stop_requested(self) -> bool:
        return self._stop_sent

    @property
    def running(self) -> bool:
        return self._process is not None and (self._process.poll() is None or
                                              self._readers[0].is_alive())

    def drain(self) -> list[dict]:
        drained = []
        while True:
            try:
                drained.append(self.events.get_nowait())
            except queue.Empty:
                return drained

    def join(self, timeout: float | None = None) -> None:
        if self._readers:
            self._readers[0].join(timeout)


# -- child side ------------------------------------------------------------------------------
_EMIT_LOCK = threading.Lock()  # the engine and the stop listener both write lines


def _emit(event: dict[str, Any]) -> None:
    line = json.dumps(event, default=float) + "\n"
    with _EMIT_LOCK:
        sys.__stdout__.write(line)
        sys.__stdout__.flush()


def main() -> int:
    import traceback

    sys.stdout = sys.stderr  # the protocol owns stdout; prints and progress go to stderr
    # The engine's imports first (seconds): a spare process has them done before its run.
    import adaptlab.session  # noqa: F401 - torch, timm, peft, accelerate
    from adaptlab.config import RunConfig
    from adaptlab.errors import AdaptlabError
    from adaptlab.run import run

    _emit({"event": READY})
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # a spare that was never given a run
    job = json.loads(line)

    holder: dict[str, Any] = {"stop": False}

    def attach(trainer) -> None:
        holder["trainer"] = trainer
        if holder["stop"]:
            trainer.request_stop()

    def listen() -> None:
        # A stop line, or the parent going away (end of input), stops the run.
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        holder["stop"] = True
        trainer = holder.get("trainer")
        _emit({"event": STOP_RECEIVED,
               "global_step": trainer.state.global_step if trainer else None})
        if trainer is not None:
            trainer.request_stop()

    threading.Thread(target=listen, daemon=True, name="adaptlab-stop-listener").start()
    try:
        result = run(RunConfig(**job["config"]), resume=job["resume"], subscribers=[_emit],
                     progress=False, on_trainer=attach)
    except AdaptlabError as exc:
        _emit({"event": ERROR, "error": str(exc)})
        return 2
    except Exception as exc:  # reported to the notebook with its traceback
        _emit({"event": ERROR, "error": f"{type(exc).__name__}: {exc}",
               "details": traceback.format_exc()})
        return 1
    _emit({"event": RESULT, "run_dir": str(result.run_dir), "metrics": result.metrics,
           "costs": result.costs, "headline": result.headline})
    return 0


if __name__ == "__main__":
    sys.exit(main())
