"""Two data-parallel processes against one, for the same global batch.

The same run (dataset, strategy, batch, epochs, seed) in one process and under
``adaptlab run --processes 2`` (torchrun, gloo on CPU), alternately, each a fresh command so
start-up is included. Reported: wall seconds, the engine's training throughput (samples/s,
all processes together), and how far the two runs' held-out metrics and weights are apart.
On CPU the two processes share the machine's cores (each gets half the threads), so the
gain can only come from less time per sample in smaller, better-cached matrices; on GPUs
each process has its own device.

    python bench/processes.py [--rounds 2] [--epochs 3] [--strategy head] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write_section  # noqa: E402


def _command(args, out: Path, processes: int) -> list[str]:
    return [sys.executable, "-m", "adaptlab.cli", "run", args.domain, "--dataset", args.dataset,
            "--strategy", args.strategy, "--epochs", str(args.epochs), "--device", args.device,
            "--set", f"batch_size={args.batch_size}", "--set", f"image_size={args.image_size}",
            "--set", f"train_samples={args.train_samples}",
            "--out", str(out), "--quiet", *(["--processes", str(processes)]
                                           if processes > 1 else [])]


def _one(args, out: Path, processes: int) -> dict:
    env = dict(os.environ)
    # One process may use every core; two get half each (torchrun's default is 1 thread).
    env["OMP_NUM_THREADS"] = str(max(1, args.threads // processes))
    started = time.perf_counter()
    subprocess.run(_command(args, out, processes), check=True, env=env,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    costs = json.loads((out / "costs.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    return {"wall": wall, "throughput": costs["samples_per_second"],
            "test": metrics["final"]["test"], "weights": out / "weights.safetensors"}


def _weight_gap(a: Path, b: Path) -> float:
    first, second = load_file(str(a)), load_file(str(b))
    return max(float((first[k].float() - second[k].float()).abs().max()) for k in first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", default="wildlife")
    parser.add_argument("--dataset", default="animals")
    parser.add_argument("--strategy", default="head")
    parser.add_argument("--epochs", type=int, default=3)
    # 32 training photos in batches of 8: no padded batch, so the runs can agree exactly
    parser.add_argument("--train-samples", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rows: dict[int, list[dict]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for processes in (1, 2):
                rows[processes].append(_one(args, Path(tmp) / f"p{processes}-r{round_}",
                                            processes))
        gap = _weight_gap(rows[1][0]["weights"], rows[2][0]["weights"])
    write_section(f"processes-{args.domain}-{args.device}", _section(args, rows, gap))


def _section(args, rows: dict[int, list[dict]], gap: float) -> str:
    med = {p: {k: statistics.median(r[k] for r in rows[p]) for k in ("wall", "throughput")}
           for p in rows}
    lines = [f"## Two processes against one: {args.domain} `{args.dataset}`, `{args.strategy}` "
             f"({args.device})", "",
             f"{machine()}. {args.train_samples} training photos, global batch "
             f"{args.batch_size}, {args.image_size} px, "
             f"{args.epochs} epochs, {args.rounds} alternating rounds; one process with "
             f"{args.threads} threads, two with {max(1, args.threads // 2)} each "
             "(torchrun, gloo).", "",
             "| processes | wall s (median) | train samples/s (median) | test accuracy | "
             "test macro-F1 |", "|---|---|---|---|---|"]
    for processes, runs in rows.items():
        test = runs[0]["test"]
        lines.append(f"| {processes} | {med[processes]['wall']:.1f} | "
                     f"{med[processes]['throughput']:.1f} | {test['accuracy']:.3f} | "
                     f"{test['macro_f1']:.3f} |")
    ratio = med[2]["throughput"] / med[1]["throughput"]
    lines += ["", f"**Throughput, two processes / one: {ratio:.2f}**; wall time ratio "
              f"{med[2]['wall'] / med[1]['wall']:.2f}. Largest weight difference between the "
              f"one- and two-process runs: {gap:.2e} (a BatchNorm layer that trains would "
              "normalise each process's half-batch on its own on CPU; `head` has none)."]
    if med[2]["wall"] > med[1]["wall"]:
        lines += ["", "Two processes lose on wall time here: start-up (the launcher, and every "
                  "process importing and loading the model) and the unadapted baselines "
                  "(every process computes them) do not divide over processes, and on a run "
                  "this short they outweigh the faster training."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
