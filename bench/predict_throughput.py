"""Prediction throughput: ``LoadedRun.predict`` against a plain PyTorch loop over the same
exported module, per domain demo.

For each domain's default dataset a small run is trained (head only, one epoch: what is timed
is inference, not accuracy), exported as a merged safetensors folder, and the run's test
inputs, repeated to at least ``--inputs`` items, are predicted both ways in rounds:
- adaptlab: ``load_run(..., with_data=False).predict(inputs)``, which reads the items through
  the run's preprocessing, skips unreadable ones, and streams the table to CSV;
- plain loop: ``load_exported(folder)`` (the exported module, no strategy) over a DataLoader of
  the same preprocessed items, softmax (or the raw outputs) collected in a list.
Both use the same batch size and no worker processes. The ratio of median throughputs is
reported (goal: at least 0.95).

    python bench/predict_throughput.py [--rounds 6] [--inputs 256] [--seconds 3] [--batch-size 64]
        [--domains timeseries,weather] [--no-write]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, default_collate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write_section  # noqa: E402

MAX_INPUTS = 50_000
DOMAINS = ("wildlife", "medical", "code", "timeseries", "pointcloud", "weather")


def train_small(domain: str, out: Path, device: str) -> Path:
    from adaptlab.run import config_for, run

    config = config_for(domain, strategy="head", epochs=1, train_samples=16, device=device,
                        out=str(out / domain))
    run(config, progress=False)
    return out / domain


def repeated_inputs(run_dir: Path, count: int):
    """The run's test inputs, repeated to ``count`` items, as new (unlabelled) inputs."""
    from adaptlab.predict.inputs import split_inputs
    from adaptlab.run_loading import load_run

    inputs = split_inputs(load_run(run_dir).data, "test")
    times = -(-count // len(inputs.samples))
    return dataclasses.replace(inputs, samples=(inputs.samples * times)[:count],
                               names=(inputs.names * times)[:count], labels_known=False)


def adaptlab_rate(run_dir: Path, inputs, batch_size: int, device: str, out: Path) -> float:
    from adaptlab.run_loading import load_run

    loaded = load_run(run_dir, device=device, with_data=False)
    gc.collect()  # the previous round's models go now, not inside either side's timing
    started = time.perf_counter()
    result = loaded.predict(inputs, out=out / "table.csv", batch_size=batch_size)
    return len(inputs.samples) / (time.perf_counter() - started) if result.count else 0.0


@torch.inference_mode()
def plain_rate(export_dir: Path, run_dir: Path, inputs, batch_size: int, device: str) -> float:
    from adaptlab.data.splits import SplitDataset
    from adaptlab.data.torch_datasets import make_torch_dataset
    from adaptlab.export import load_exported
    from adaptlab.run_loading import load_run
    from adaptlab.tasks.base import move_to

    loaded = load_run(run_dir, device=device, with_data=False)
    model = load_exported(export_dir, device=device).eval()
    data = SplitDataset(loaded.data.class_names, {"predict": inputs.samples},
                        modality=inputs.modality, task=loaded.data.task,
                        coords=loaded.data.coords)
    dataset = make_torch_dataset(data, "predict", loaded.backbone, False,
                                 {"image_size": loaded.config.image_size})
    loader = DataLoader(dataset, batch_size=batch_size,
                        collate_fn=getattr(dataset, "collate", default_collate))
    classify = loaded.data.task == "classification"
    gc.collect()
    started = time.perf_counter()
    kept = []
    for batch, _ in loader:
        outputs = model(move_to(batch, device))
        kept.append((outputs.float().softmax(-1) if classify else outputs).cpu())
    return len(inputs.samples) / (time.perf_counter() - started)


def measure(domain: str, root: Path, args) -> dict:
    from adaptlab.export import export_run

    run_dir = train_small(domain, root, args.device)
    export_dir = root / f"{domain}-export"
    export_run(run_dir, export_dir, format="safetensors", merge=True)
    inputs = repeated_inputs(run_dir, args.inputs)
    # One unrecorded round of each first: thread pools, allocator and caches warm up. A fast
    # model gets more inputs, so that a round lasts seconds and what is timed is the
    # per-input work, not the few milliseconds of opening a table.
    adaptlab_rate(run_dir, inputs, args.batch_size, args.device, root)
    rate = plain_rate(export_dir, run_dir, inputs, args.batch_size, args.device)
    if rate * args.seconds > args.inputs:
        inputs = repeated_inputs(run_dir, min(int(rate * args.seconds), MAX_INPUTS))
    ours, plain = [], []
    for round_index in range(args.rounds):
        # Who goes first alternates: the second of a pair meets a warmer (or more loaded)
        # machine, which must not favour one side.
        order = (0, 1) if round_index % 2 == 0 else (1, 0)
        for side in order:
            if side == 0:
                plain.append(plain_rate(export_dir, run_dir, inputs, args.batch_size,
                                        args.device))
            else:
                ours.append(adaptlab_rate(run_dir, inputs, args.batch_size, args.device, root))
    paired = sorted(o / p for o, p in zip(ours, plain, strict=True))
    return {"domain": domain, "task": f"{inputs.modality}", "count": len(inputs.samples),
            "ours": statistics.median(ours),
            "plain": statistics.median(plain), "paired": statistics.median(paired),
            "range": (paired[0], paired[-1])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--inputs", type=int, default=256, help="at least this many inputs")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="fast models get inputs for about this long a round")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--domains", default=",".join(DOMAINS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-write", action="store_true",
                        help="print the rows, leave BENCHMARKS.md as it is (the section is "
                             "rewritten whole: a subset of domains would drop the others' rows)")
    args = parser.parse_args()
    rows, failures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for domain in args.domains.split(","):
            try:
                rows.append(measure(domain, Path(tmp), args))
            except Exception as exc:  # one domain's failure is reported, not fatal
                failures.append(f"{domain}: {type(exc).__name__}: {exc}")
                print(f"{domain} failed: {exc}", flush=True)
                continue
            row = rows[-1]
            print(f"{domain}: {row['count']} inputs, adaptlab {row['ours']:.1f}/s, plain "
                  f"{row['plain']:.1f}/s, ratio {row['ours'] / row['plain']:.3f}, paired "
                  f"{row['paired']:.3f} ({row['range'][0]:.3f}-{row['range'][1]:.3f})", flush=True)
    if args.no_write:
        return
    table = "".join(
        f"| {r['domain']} | {r['task']} | {r['count']} | {r['plain']:.1f} | {r['ours']:.1f} | "
        f"**{r['ours'] / r['plain']:.3f}** | {r['paired']:.3f} ({r['range'][0]:.3f}-"
        f"{r['range'][1]:.3f}) |\n" for r in rows)
    failed = "".join(f"\n- not measured: {line}" for line in failures)
    body = (f"## Prediction throughput ({args.device})\n\n"
            f"{machine()}. Each domain's default demo dataset, a head-only run (1 epoch), "
            f"exported merged; its test inputs repeated to at least {args.inputs} items (more "
            f"for a fast model: about {args.seconds:g} s a round), batch {args.batch_size}, no "
            f"loader workers, {args.rounds} rounds after one warm-up, the two sides' order "
            "alternating; inputs per second (median).\n\n"
            "| domain | inputs | items | plain loop over the export | adaptlab predict | ratio | "
            "paired ratio (range) |\n|---|---|---|---|---|---|---|\n" + table +
            "\nGoal: adaptlab at least 0.95 of the plain loop. adaptlab does more per batch: it "
            "guards each item's loading (an unreadable file is listed, not fatal), writes every "
            "row to the CSV (a chunk of rows at a time), and (for forecasts, fields, clouds) the "
            f"task's own output files.{failed}\n")
    write_section(f"predict-throughput-{args.device.split(':')[0]}", body)


if __name__ == "__main__":
    main()
