"""Kill a long adaptlab command (a sweep, a learning curve, a soup, an explanation) with SIGKILL
at random moments, run the same command again after each kill, and check that it continues to
the result an uninterrupted command gives.

    python tests/command_faults.py --kills 4 --out DIR -- sweep wildlife --data D ... --out {OUT}
    python tests/command_faults.py --copy RUN --out DIR -- explain {OUT} --samples 2

``{OUT}`` in the command is replaced by the command's output folder. Prints one JSON object:
kills, the files compared, and which differ. Files are compared as JSON, with this machine's
folder names replaced and timings left out (they differ between any two runs); the report
page is checked to be whole. Like ``fault_injection.py``, every attempt is a fork of this
process, so the imports are paid once.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import sys
import time
from pathlib import Path

# Keys whose values are timings or sizes measured on the machine, not results (an
# explanation's memory plan states the memory free at the time), and what the last
# invocation did (a source run "trained" first, "reused" when continued).
UNSTABLE = re.compile(r"second|time|duration|throughput|per_s|elapsed|environment|peak|rss|"
                      r"memory_plan|budget|^action$")


def _fork(argv: list[str], log: Path) -> int:
    from fault_injection import fork_child

    def body() -> int:
        from adaptlab.cli import main

        return main(argv)
    return fork_child(log, body)


def _wait(pid: int, kill_after: float | None) -> int:
    started = time.monotonic()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        if kill_after is not None and time.monotonic() - started >= kill_after:
            os.kill(pid, signal.SIGKILL)
            kill_after = None
        time.sleep(0.005)


def _stable(value, root: str):
    if isinstance(value, dict):
        return {k: _stable(v, root) for k, v in value.items() if not UNSTABLE.search(k)}
    if isinstance(value, list):
        return [_stable(v, root) for v in value]
    if isinstance(value, str):  # the folder's path, or its name alone (a run's name)
        return "{OUT}" if value == Path(root).name else value.replace(root, "{OUT}")
    return value


def _paths_differing(a, b, path: str = "") -> list[str]:
    """Where two JSON values differ, as paths (the first few, for the report)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in sorted(set(a) | set(b), key=str)
                for p in _paths_differing(a.get(k), b.get(k), f"{path}/{k}")][:5]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b, strict=True))
                for p in _paths_differing(x, y, f"{path}[{i}]")][:5]
    return [] if a == b else [f"{path}: {str(a)[:60]} != {str(b)[:60]}"]


def _results(out: Path) -> dict[str, object]:
    """Every JSON result the command wrote, keyed by its path in the output folder (the
    engine's own checkpoint state and event logs excluded: they record the kills)."""
    found = {}
    for path in sorted(out.rglob("*.json")):
        rel = path.relative_to(out)
        if "checkpoints" in rel.parts or path.name in ("origin.json",):
            continue
        found[str(rel)] = _stable(json.loads(path.read_text()), str(out))
    return found


def _tensors(out: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    return {str(p.relative_to(out)): load_file(str(p)) for p in sorted(out.rglob("*.safetensors"))
            if "checkpoints" not in p.relative_to(out).parts}


def _preload() -> None:
    """The modules of the commands imported before any fork, so that the uninterrupted
    command, which times the kills, pays no import the attempts do not. Nothing that starts
    a thread: a fork copies only the forking thread, and a lock another one held stays held."""
    import fault_injection

    import adaptlab.explain.api  # noqa: F401
    import adaptlab.report.write  # noqa: F401
    import adaptlab.soups  # noqa: F401
    import adaptlab.sweeps  # noqa: F401
    import adaptlab.transfer.curve  # noqa: F401

    fault_injection.preload()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--copy", type=Path, help="a folder copied to the output folder "
                        "first, for a command that writes into its input (explain RUN_DIR)")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    _preload()
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "attempts.log"

    def run(out: Path, kill_after: float | None) -> int:
        if args.copy and not out.exists():
            shutil.copytree(args.copy, out)
        return _wait(_fork([a.replace("{OUT}", str(out)) for a in command], log), kill_after)

    started = time.monotonic()
    reference = args.out / "reference"
    if run(reference, None) != 0:
        raise SystemExit(f"the uninterrupted command failed; see {log}")
    whole = time.monotonic() - started

    crashed = args.out / "crashed"
    kills, attempts, status = 0, 0, None
    while status != 0:
        attempts += 1
        if attempts > 3 * args.kills + 5:
            raise SystemExit(f"no end after {attempts} attempts; see {log}")
        # Anywhere in the first half of an uninterrupted command: the rest of the work is
        # then left to the attempts that follow, which must continue it. Each kill's window
        # shrinks with the kills before it: an attempt that continues has less left to do, and
        # on a loaded machine one could finish before a later kill came.
        kill_after = (rng.uniform(0.05, 0.5) * whole / (1 + kills)
                      if kills < args.kills else None)
        status = run(crashed, kill_after)
        if status == -signal.SIGKILL:
            kills += 1
        elif status != 0:
            raise SystemExit(f"attempt {attempts} failed with status {status}; see {log}")

    expected, got = _results(reference), _results(crashed)
    differ = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
    where = {k: _paths_differing(expected.get(k), got.get(k)) for k in differ}
    tensors_ref, tensors = _tensors(reference), _tensors(crashed)
    differ += sorted(name for name in set(tensors_ref) | set(tensors)
                     if name not in tensors or name not in tensors_ref
                     or any(not (tensors[name][k] == tensors_ref[name][k]).all()
                            for k in tensors_ref[name]))
    pages = sorted(crashed.rglob("index.html"))
    whole_pages = all(page.read_text().rstrip().endswith("</html>") for page in pages)
    print(json.dumps({"command": command[0], "kills": kills, "attempts": attempts,
                      "json_files": len(expected), "weight_files": len(tensors_ref),
                      "differing": differ, "where": where, "report_pages": len(pages),
                      "report_pages_whole": whole_pages,
                      "seconds_uninterrupted": round(whole, 2),
                      "seconds_total": round(time.monotonic() - started, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
