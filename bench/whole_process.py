"""Timing whole benchmark processes on a shared machine: wait for other benchmarks, and
measure again when something else kept the cores busy during a run."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

OTHERS = ("bench/trainer_peft.py", "bench/fastai_wildlife.py", "bench/processes.py")
CROWDED: list[tuple[float, bool]] = []  # (cores others kept busy, run kept anyway)


def wait_for_others() -> None:
    """Wait while another benchmark (not this one) runs: their timings would skew ours."""
    mine = Path(sys.argv[0]).name
    while any(subprocess.run(["pgrep", "-f", name], capture_output=True).returncode == 0
              for name in OTHERS if not name.endswith(mine)):
        print(f"waiting for {' / '.join(OTHERS)} to finish", flush=True)
        time.sleep(20)


def busyseconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (0 where /proc is missing)."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except OSError:
        return 0.0
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle, iowait


def timed(command: list[str], env: dict, log: Path, out: Path | None = None
          ) -> tuple[float, float, float]:
    """(launch time, end time, wall seconds) of one process (writing into a fresh ``out``
    where given); its output goes to ``log``.

    On two shared cores a neighbour taking one of them leaves two OpenMP threads spinning for
    each other, which slows a run several-fold: a run during which other processes kept the
    machine busy (over a tenth of a core on average) is measured again, up to three times."""
    for attempt in range(3):
        wait_for_others()
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
        own, busy = resource.getrusage(resource.RUSAGE_CHILDREN), busyseconds()
        with open(log, "w") as handle:
            launch, started = time.time(), time.perf_counter()
            code = subprocess.call(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
            wall, end = time.perf_counter() - started, time.time()
        if code:
            print(log.read_text()[-4000:], file=sys.stderr)
            raise SystemExit(f"{command[:4]} failed with exit status {code}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        others = busyseconds() - busy - (after.ru_utime + after.ru_stime - own.ru_utime
                                          - own.ru_stime)
        if others <= 0.1 * wall:
            break
        CROWDED.append((others / wall, attempt == 2))  # the third is kept whatever it found
        print(f"  others kept {others / wall:.2f} cores busy during that run", flush=True)
    return launch, end, wall
