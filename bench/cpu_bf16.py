"""bf16 mixed precision on the CPU against float32: each demo's default run, once in each
precision, side by side in one process (the order alternating from demo to demo).

bf16 autocast pays where the CPU has native bf16 matrix units (AVX512-BF16, AMX): the table
says whether this one does.

    python bench/cpu_bf16.py [--domains wildlife code] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write_section  # noqa: E402

MIB = 2 ** 20


def native_bf16() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    found = [flag for flag in ("amx_bf16", "avx512_bf16") if f" {flag}" in flags]
    return ", ".join(found) if found else "none found"


def one_run(domain: str, precision: str, root: Path) -> dict:
    from adaptlab.run import config_for, run

    started = time.perf_counter()
    result = run(config_for(domain, out=str(root / f"{domain}-{precision}"), device="cpu",
                            mixed_precision=precision), progress=False)
    wall = time.perf_counter() - started
    monitor = result.metrics["monitor"]
    return {"wall": wall, "epoch": result.costs["seconds_per_epoch"],
            "activations": result.costs["memory_bytes"]["activations"] / MIB,
            "total": result.costs["peak_total_bytes"] / MIB, "monitor": monitor,
            "test": result.metrics["final"]["test"][monitor]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--domains", nargs="+", default=["wildlife", "code"])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, domain in enumerate(args.domains):
            order = ("no", "bf16") if index % 2 == 0 else ("bf16", "no")
            runs = {precision: one_run(domain, precision, Path(tmp)) for precision in order}
            rows.append((domain, runs))
            print(domain, {p: {k: round(v, 3) if isinstance(v, float) else v
                               for k, v in r.items()} for p, r in runs.items()}, flush=True)
    lines = ["| demo (its defaults) | precision | s/epoch | bf16 speed-up | saved activations "
             "MiB | peak total MiB | test metric | wall s |", "|---|---|---|---|---|---|---|---|"]
    for domain, runs in rows:
        for precision in ("no", "bf16"):
            r = runs[precision]
            speed = f"{runs['no']['epoch'] / r['epoch']:.2f}x" if precision == "bf16" else ""
            saved = f"{r['activations']:.{2 if r['activations'] < 10 else 1}f}"
            lines.append(f"| {domain} | {precision} | {r['epoch']:.2f} | {speed} | {saved} | "
                         f"{r['total']:.1f} | {r['monitor']} {r['test']:.3f} | {r['wall']:.1f} |")
    body = (f"## bf16 on the CPU (`mixed_precision=bf16`)\n\n{machine()}; native bf16 "
            f"instructions: {native_bf16()}. `python bench/cpu_bf16.py --domains "
            f"{' '.join(args.domains)}`: each demo's default run (`adaptlab run DOMAIN "
            "--device cpu`), once in float32 (`mixed_precision=no`, the CPU's default) and once "
            "under bf16 autocast, one seed; s/epoch is the training epochs' own time, saved "
            "activations the meter's (the bytes autograd keeps for one batch); wall s is the whole "
            "run, baselines and final evaluation included, and for the process's first run "
            "its imports too.\n\n"
            + "\n".join(lines) + "\n")
    print(body)
    if not args.no_write:
        write_section("cpu-bf16", body)


if __name__ == "__main__":
    main()
