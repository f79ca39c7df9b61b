"""Two data-parallel processes against one, for the same global batch.

The same run (dataset, strategy, batch, epochs, seed) in one process and under
``adaptlab run --processes 2`` (torchrun, gloo on CPU), alternately, each a fresh command so
start-up is included; with ``--fsdp`` also two processes with sharded weights
(``--set fsdp=true``). Reported: wall seconds, the engine's training throughput (samples/s,
all processes together), the memory one process holds, and how far the runs' held-out
metrics and weights are from one process's. On CPU the two processes share the machine's
cores (each gets half the threads), so the gain can only come from less time per sample in
smaller, better-cached matrices; on GPUs each process has its own device.

    python bench/processes.py [--rounds 2] [--epochs 3] [--strategy head] [--device cpu]
    python bench/processes.py --domain code --dataset stdlib-modules --strategy full \
        --train-samples 128 --batch-size 16 --epochs 1 --fsdp
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

KINDS = ("parameters", "gradients", "optimizer", "activations")
# (label, processes, sharded) in table order
VARIANTS = [("1", 1, False), ("2", 2, False), ("2, sharded (fsdp)", 2, True)]


def _command(args, out: Path, processes: int, sharded: bool) -> list[str]:
    return [sys.executable, "-m", "adaptlab.cli", "run", args.domain, "--dataset", args.dataset,
            "--strategy", args.strategy, "--epochs", str(args.epochs), "--device", args.device,
            "--set", f"batch_size={args.batch_size}",
            *(["--set", f"image_size={args.image_size}"] if args.image_size else []),
            "--set", f"train_samples={args.train_samples}",
            *(["--set", "fsdp=true"] if sharded else []),
            "--out", str(out), "--quiet", *(["--processes", str(processes)]
                                           if processes > 1 else [])]


def _one(args, out: Path, processes: int, sharded: bool) -> dict:
    env = dict(os.environ)
    # One process may use every core; two get half each (torchrun's default is 1 thread).
    env["OMP_NUM_THREADS"] = str(max(1, args.threads // processes))
    started = time.perf_counter()
    subprocess.run(_command(args, out, processes, sharded), check=True, env=env,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    costs = json.loads((out / "costs.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    return {"wall": wall, "throughput": costs["samples_per_second"],
            "memory": costs["memory_bytes"], "peak": costs["peak_total_bytes"],
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
    parser.add_argument("--image-size", type=int, default=128, help="0: the backbone's own")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fsdp", action="store_true",
                        help="also two processes with sharded weights (fsdp=true)")
    args = parser.parse_args()
    variants = VARIANTS if args.fsdp else VARIANTS[:2]
    rows: dict[str, list[dict]] = {label: [] for label, _, _ in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for index, (label, processes, sharded) in enumerate(variants):
                rows[label].append(_one(args, Path(tmp) / f"v{index}-r{round_}", processes,
                                        sharded))
        gaps = {label: _weight_gap(rows["1"][0]["weights"], runs[0]["weights"])
                for label, runs in rows.items() if label != "1"}
        if args.fsdp:  # the same two processes, replicated or sharded
            gaps["replicated"] = _weight_gap(rows["2"][0]["weights"],
                                             rows[VARIANTS[2][0]][0]["weights"])
    key = f"processes-{args.domain}-{args.device}-{args.strategy}" + ("-fsdp" if args.fsdp
                                                                      else "")
    write_section(key, _section(args, rows, gaps))


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def _section(args, rows: dict[str, list[dict]], gaps: dict[str, float]) -> str:
    med = {label: {k: statistics.median(r[k] for r in runs) for k in ("wall", "throughput")}
           for label, runs in rows.items()}
    size = f"{args.image_size} px, " if args.image_size else ""
    title = "Sharded and replicated processes against one" if args.fsdp \
        else "Two processes against one"
    lines = [f"## {title}: {args.domain} `{args.dataset}`, `{args.strategy}` "
             f"({args.device})", "",
             f"{machine()}. {args.train_samples} training samples, global batch "
             f"{args.batch_size}, {size}{args.epochs} epochs, {args.rounds} alternating "
             f"rounds; one process with {args.threads} threads, two with "
             f"{max(1, args.threads // 2)} each (torchrun, gloo). Memory in MiB is what the "
             "main process holds (the cost meter's peak per kind; activations for its share "
             "of the batch) and the heaviest step's total.", "",
             "| processes | wall s (median) | train samples/s (median) | params | grads | "
             "optimizer | activations | step total | test accuracy | test macro-F1 | "
             "weights vs one process |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, runs in rows.items():
        test, memory = runs[0]["test"], runs[0]["memory"]
        gap = f"{gaps[label]:.1e}" if label in gaps else "—"
        lines.append(f"| {label} | {med[label]['wall']:.1f} | {med[label]['throughput']:.1f} | "
                     + " | ".join(_mib(memory.get(k) or 0) for k in KINDS)
                     + f" | {_mib(runs[0]['peak'])} | {test['accuracy']:.3f} | "
                     f"{test['macro_f1']:.3f} | {gap} |")
    ratio = med["2"]["throughput"] / med["1"]["throughput"]
    lines += ["", f"**Throughput, two processes / one: {ratio:.2f}**; wall time ratio "
              f"{med['2']['wall'] / med['1']['wall']:.2f}. The weight column is the largest "
              "difference from the one-process run's weights: float sums in another order, "
              "and where the model has them, a BatchNorm layer that trains (each process "
              "normalises its half-batch on CPU) and dropout (each process draws its masks "
              "from its own random stream)."]
    sharded = VARIANTS[2][0]
    if sharded in rows:
        whole = rows["1"][0]["memory"]
        held = rows[sharded][0]["memory"]
        state = sum(held.get(k) or 0 for k in KINDS[:3]) / sum(whole.get(k) or 0
                                                               for k in KINDS[:3])
        lines += ["", f"**Sharded: each process holds {state:.2f} of one process's weights, "
                  f"gradients and optimizer state; throughput "
                  f"{med[sharded]['throughput'] / med['2']['throughput']:.2f} of two replicated "
                  f"processes', {med[sharded]['throughput'] / med['1']['throughput']:.2f} of "
                  "one process's.** Sharded, every block gathers its weights before its "
                  "forward and again before its backward, and scatters its gradients after; "
                  "replicated, the processes exchange only the gradients, once per step. "
                  "Largest weight difference between the sharded and the replicated run: "
                  f"{gaps['replicated']:.1e}."]
    if ratio < 1:
        lines += ["", "Training itself is slower in two processes here: on CPU they share the "
                  "machine's cores (one thread each where one process had both) and exchange "
                  "gradients through gloo; the gain two processes bring is on two devices."]
    elif med["2"]["wall"] > med["1"]["wall"]:
        lines += ["", "Two processes lose on wall time here: start-up (the launcher, and every "
                  "process importing and loading the model) and the unadapted baselines "
                  "(every process computes them) do not divide over processes, and on a run "
                  "this short they outweigh the faster training."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
