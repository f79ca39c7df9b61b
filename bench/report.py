"""Write one benchmark's section of BENCHMARKS.md, leaving the other sections as they are."""

from __future__ import annotations

import fcntl
import os
import platform
import re
from datetime import date
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = ("# Benchmarks\n\nWritten by the scripts in `bench/`; each section is one run, "
          "measured side by side. Where a table gives a mean ± sd over seeds, the sd is the "
          "population standard deviation (divided by the number of seeds, not one less: with "
          "three seeds the sample sd is 1.22 times it).\n")


def machine() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return (f"{date.today().isoformat()}, {platform.machine()}, {torch.get_num_threads()} "
            f"threads, {device}, torch {torch.__version__}")


def write_section(name: str, body: str) -> None:
    # Benchmarks often run side by side on the two halves of a machine: the lock keeps one
    # bench's read-modify-write from dropping the section another wrote in between, and the
    # rename keeps a reader from ever seeing half a file.
    with open(BENCHMARKS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = BENCHMARKS.read_text() if BENCHMARKS.is_file() else HEADER
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        block = f"{start}\n{body.rstrip()}\n{end}"
        pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
        text = pattern.sub(lambda _: block, text) if pattern.search(text) else \
            text.rstrip() + "\n\n" + block + "\n"
        partial = BENCHMARKS.with_suffix(".md.partial")
        partial.write_text(text)
        os.replace(partial, BENCHMARKS)


def held_out_metric(runs: list[dict], name: str) -> str:
    """A held-out metric over rounds: the value when every round agrees, else median (range)."""
    import statistics

    values = sorted(r["test"][name] for r in runs)
    return f"{values[0]:.3f}" if values[0] == values[-1] else \
        f"{statistics.median(values):.3f} ({values[0]:.3f}-{values[-1]:.3f})"


def seconds(value: float | None) -> str:
    """A phase's seconds for a table; a dash where the tool has no such phase."""
    return "—" if value is None else f"{value:.2f}" if value < 1 else f"{value:.1f}"
