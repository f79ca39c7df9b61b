"""Kill a training run with SIGKILL at random moments, resume it after each kill, and check
what the engine promises: no checkpoint is ever unreadable, every resume starts from the last
complete checkpoint, and the final weights equal an uninterrupted run's.

Run as a script (the test and ``bench/reliability.py`` both do), so the heavy imports are paid
once: every attempt is a fork of this process, killed from outside (a timer) or from inside (an
audit hook that kills the process at its N-th file operation in the run folder, which lands
kills in the middle of checkpoint, best-epoch and event writes). The process does no tensor
work before forking, so each child starts with the thread pools unstarted.

    python tests/fault_injection.py --data FOLDER --strategy lora --kills 20 --out DIR

prints one JSON object: kills, where each one landed, the resumes checked and the result.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
import traceback
from pathlib import Path

# The audit events of file operations (open, rename/replace, mkdir, rmtree, remove) that
# belong to writing the run folder.
FILE_EVENTS = {"open", "os.rename", "os.mkdir", "shutil.rmtree", "os.remove"}


def _config(args, out: Path):
    from adaptlab.config import RunConfig

    options = json.loads(args.options)
    return RunConfig(domain="wildlife", data=str(args.data), strategy=args.strategy,
                     out=str(out), device="cpu", epochs=args.epochs, image_size=32,
                     batch_size=8, lr=3e-3, strategy_options=options)


def _kill_at_file_operation(run_dir: Path, n: int) -> None:
    """Kill this process at its n-th file operation under ``run_dir``."""
    prefix, seen = str(run_dir), [0]

    def hook(event: str, args: tuple) -> None:
        if event not in FILE_EVENTS or not args or not isinstance(args[0], (str, bytes,
                                                                            os.PathLike)):
            return
        if not os.fsdecode(args[0]).startswith(prefix):
            return
        if event == "open" and len(args) > 1 and args[1] in ("r", "rb"):
            return  # reading does not change the folder
        seen[0] += 1
        if seen[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(hook)


def fork_child(log: Path, body) -> int:
    """Run ``body()`` in a forked child whose output goes to ``log``; the child's pid. The
    child exits with ``body``'s status, or 3 after printing a traceback."""
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        code = body() or 0
    except BaseException:  # noqa: BLE001 - reported to the parent through the status
        traceback.print_exc()
        code = 3
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _attempt(args, run_dir: Path, resume: bool, log: Path, file_kill: int | None) -> int:
    """Fork one attempt; returns the child's pid."""
    def body() -> None:
        if file_kill:
            _kill_at_file_operation(run_dir, file_kill)
        from adaptlab.config import RunConfig
        from adaptlab.run import run

        config = RunConfig(domain="wildlife", out=str(run_dir)) if resume \
            else _config(args, run_dir)
        run(config, resume=resume, progress=False)

    _attempt.started = time.time()
    return fork_child(log, body)


def _wait(pid: int, events_file: Path, kill) -> int:
    """The child's exit status (negative: the signal). ``kill(new_events, seconds)`` says
    when to kill it, from the events it has written so far and the seconds since the fork."""
    started, before = time.monotonic(), len(_events(events_file))
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        if kill is not None and kill(_events(events_file)[before:], time.monotonic() - started):
            os.kill(pid, signal.SIGKILL)
            kill = None
        time.sleep(0.003)


def _events(path: Path) -> list[dict]:
    out = []
    for line in (path.read_text().splitlines() if path.is_file() else []):
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"event": "<torn line>"})
    return out


def _after(kind: str, index: int, delay: float):
    """Kill ``delay`` seconds after this attempt's ``index``-th ``kind`` event."""
    seen_at = []

    def kill(new: list[dict], seconds: float) -> bool:
        if not seen_at and sum(e["event"] == kind for e in new) >= index:
            seen_at.append(seconds)
        return bool(seen_at) and seconds - seen_at[0] >= delay
    return kill


def _before_training(limit: float):
    """Kill after ``limit`` seconds, or at the latest when training starts."""
    return lambda new, seconds: seconds >= limit or any(e["event"] == "epoch_start"
                                                       for e in new)


def _check_checkpoints(root: Path) -> int | None:
    """Read every checkpoint back with safetensors and json (not the engine's reader); the
    epoch of the newest, or None when there is none yet."""
    from safetensors.torch import load_file

    newest = None
    for folder in sorted(root.glob("epoch-*")):
        for path in folder.iterdir():
            if path.suffix == ".safetensors":
                load_file(str(path))
        train = json.loads((folder / "state.json").read_text())["train"]
        assert train["step_in_epoch"] == 0, "a SIGKILL leaves no mid-epoch checkpoint"
        newest = train["epoch"]
    return newest


def _final_tensors(run_dir: Path) -> dict[str, object]:
    """Every safetensors file the finished run wrote outside its checkpoints."""
    from safetensors.torch import load_file

    return {str(p.relative_to(run_dir)): load_file(str(p))
            for p in sorted(run_dir.rglob("*.safetensors")) if "checkpoints" not in p.parts}


def _same(a: dict, b: dict) -> list[str]:
    differ = sorted(set(a) ^ set(b))
    for name in set(a) & set(b):
        if a[name].keys() != b[name].keys():
            differ.append(name)
            continue
        differ += [f"{name}:{k}" for k in a[name] if not (a[name][k] == b[name][k]).all()]
    return differ


def preload() -> None:
    """The heavy imports, once, before any fork (no tensor work: no thread pool started)."""
    import accelerate  # noqa: F401
    import peft  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import timm  # noqa: F401
    import torchvision  # noqa: F401

    import adaptlab.cli  # noqa: F401
    import adaptlab.run  # noqa: F401
    import adaptlab.session  # noqa: F401
    import adaptlab.tasks.classification  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--strategy", required=True)
    parser.add_argument("--options", default="{}", help="strategy options as JSON")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    preload()

    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "attempts.log"

    started = time.monotonic()
    reference = args.out / "reference"
    if _wait(_attempt(args, reference, False, log, None), reference / "events.jsonl", None):
        raise SystemExit(f"the uninterrupted run failed; see {log}")
    whole = time.monotonic() - started
    ref_events = _events(reference / "events.jsonl")
    ready = next(e["time"] for e in ref_events if e["event"] == "train_start") - _attempt.started
    steps = next(e["steps"] for e in ref_events if e["event"] == "epoch_start")
    gap = max(0.002, min(0.2, (ref_events[-1]["time"] - ref_events[0]["time"]) / len(ref_events)))

    crashed = args.out / "crashed"
    events_file = crashed / "events.jsonl"
    kills, landed, resumes_checked, attempts = 0, [], 0, 0
    expected_epoch: int | None = None
    while True:
        attempts += 1
        if attempts > 4 * args.kills + 20:
            raise SystemExit(f"no end after {attempts} attempts; see {log}")
        resume = (crashed / "config.json").is_file()
        mode, kill, file_kill = None, None, None
        if kills < args.kills:
            # Kills spread over the run: while progress runs ahead of the kills, the next
            # kill lands before the attempt can write a new checkpoint.
            ahead = (expected_epoch or 0) / args.epochs > kills / args.kills
            mode = "start" if ahead else rng.choice(["step", "step", "evaluation", "file"])
            if expected_epoch == args.epochs and mode != "start":
                mode = "ending"  # only the final evaluation and files are left
            elif expected_epoch == args.epochs - 1 and mode == "file":
                mode = "step"  # n file operations may outnumber what is left to write
        delay = rng.uniform(0, gap)
        if mode == "start":  # reading data, building the model, baselines, loading
            kill = _before_training(rng.uniform(0.0, ready))
        elif mode == "step":  # in the middle of a training step
            kill = _after("step", rng.randint(1, steps), delay)
        elif mode == "evaluation":  # evaluating, tracking the best epoch, checkpointing
            kill = _after("train_metrics", 1, delay)
        elif mode == "ending":  # between and inside the final files (weights, metrics)
            file_kill = rng.randint(1, 10)
        elif mode == "file":  # at the n-th file operation: inside checkpoint and best writes
            file_kill = rng.randint(1, 30)
        before = len(_events(events_file))
        status = _wait(_attempt(args, crashed, resume, log, file_kill), events_file, kill)
        new = _events(events_file)[before:]
        resumed = [e for e in new if e["event"] == "resume"]
        if resume and resumed:
            if resumed[0]["epoch"] != (expected_epoch or 0) or resumed[0]["step_in_epoch"]:
                raise SystemExit(f"attempt {attempts} resumed at epoch {resumed[0]['epoch']}, "
                                 f"the last complete checkpoint is epoch {expected_epoch}")
            resumes_checked += 1
        if status == 0:
            final_mode = mode
            break
        if status != -signal.SIGKILL:
            raise SystemExit(f"attempt {attempts} failed with status {status}; see {log}")
        kills += 1
        landed.append({"mode": mode, "after_event": new[-1]["event"] if new else "<none>",
                       **({"file_operation": file_kill} if file_kill else {})})
        expected_epoch = _check_checkpoints(crashed / "checkpoints")

    differ = _same(_final_tensors(reference), _final_tensors(crashed))
    final_ref = json.loads((reference / "metrics.json").read_text())["final"]
    final = json.loads((crashed / "metrics.json").read_text())["final"]
    print(json.dumps({
        "strategy": args.strategy, "epochs": args.epochs, "kills": kills,
        "attempts": attempts, "last_attempt_planned_kill": final_mode,
        "resumes_checked": resumes_checked, "landed": landed,
        "weights_equal": not differ, "differing": differ[:10],
        "final_metrics_equal": final == final_ref,
        "weight_files": sorted(_final_tensors(crashed)),
        "seconds_uninterrupted": round(whole, 2), "seconds_to_train_start": round(ready, 2),
        "seconds_total": round(time.monotonic() - started, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
