"""How long ``adaptlab domains --json`` takes, against a bare Python start, side by side.

    python bench/discovery.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write_section  # noqa: E402


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    bare, domains, torch_import = [], [], []
    for _ in range(args.repeats):
        bare.append(timed([sys.executable, "-c", "pass"]))
        domains.append(timed([sys.executable, "-m", "adaptlab.cli", "domains", "--json"]))
        torch_import.append(timed([sys.executable, "-c", "import torch"]))
    b, d, t = (statistics.median(x) for x in (bare, domains, torch_import))
    body = (f"## Domain discovery\n\n{machine()}. Median of {args.repeats} fresh processes.\n\n"
            "| command | seconds |\n|---|---|\n"
            f"| `python -c pass` | {b:.3f} |\n| `adaptlab domains --json` | {d:.3f} |\n"
            f"| `python -c 'import torch'` (what discovery avoids) | {t:.3f} |\n\n"
            f"Discovery costs {d - b:.3f} s over a bare interpreter start; importing torch alone "
            f"would cost {t - b:.3f} s.\n")
    write_section("discovery", body)
    print(body)


if __name__ == "__main__":
    main()
