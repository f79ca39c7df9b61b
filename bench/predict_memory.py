"""Prediction memory: ``adaptlab predict`` over folders of 1,000 to 100,000 new images, each in
its own process, with the process's peak resident memory.

A wildlife head-only run (1 epoch, 64 px) is trained once; a folder of distinct photo-sized
JPEGs (random content, 128 x 96) is written once, and the smaller folders hard-link its first
files. Each count is predicted by ``adaptlab predict RUN --data FOLDER`` in a fresh process
(batch 64, no loader workers), which reports its own peak resident set size
(``ru_maxrss``) and seconds. Streaming holds one batch of decoded images at a time, so the
peak should not grow with the count; holding every decoded input would cost
``count x 3 x 64 x 64 x 4`` bytes (4.7 GiB at 100,000).

    python bench/predict_memory.py [--counts 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write_section  # noqa: E402

IMAGE_SIZE = 64
BATCH = 64
# Run in a fresh interpreter: its peak RSS is the prediction's alone, not this script's.
MEASURE = """
import json, resource, sys, time
from adaptlab.cli import main
started = time.perf_counter()
code = main(["predict", sys.argv[1], "--data", sys.argv[2], "--out", sys.argv[3],
             "--batch-size", sys.argv[4], "--quiet"])
seconds = time.perf_counter() - started
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
print(json.dumps({"code": code, "seconds": seconds, "peak_mib": peak_kib / 1024}))
"""


def train(out: Path) -> Path:
    from adaptlab.run import config_for, run

    config = config_for("wildlife", strategy="head", epochs=1, train_samples=16,
                        image_size=IMAGE_SIZE, device="cpu", out=str(out))
    run(config, progress=False)
    return out


def write_images(folder: Path, count: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    generator = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"photo-{index:06d}.jpg"
        # A coarse random colour field, enlarged: distinct photos that compress as photos do
        # (noise would make 100,000 files gigabytes).
        coarse = generator.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((128, 96), Image.BILINEAR).save(path, quality=85)
        paths.append(path)
    return paths


def linked_folder(folder: Path, paths: list[Path]) -> Path:
    folder.mkdir(parents=True)
    for path in paths:
        os.link(path, folder / path.name)
    return folder


def measure(run_dir: Path, folder: Path, out: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", MEASURE, str(run_dir), str(folder),
                             str(out), str(BATCH)], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"predict on {folder} failed: {result.stderr[-2000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    with out.open(newline="") as file:
        measured["rows"] = sum(1 for _ in csv.reader(file)) - 1
    return measured


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="1000,10000,100000")
    args = parser.parse_args()
    counts = sorted(int(c) for c in args.counts.split(","))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_dir = train(root / "run")
        paths = write_images(root / "all", counts[-1])
        for count in counts:
            folder = root / "all" if count == counts[-1] else \
                linked_folder(root / f"first-{count}", paths[:count])
            row = {"count": count, **measure(run_dir, folder, root / f"table-{count}.csv")}
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = "".join(
        f"| {r['count']:,} | {r['rows']:,} | {r['seconds']:.0f} | {r['peak_mib']:.0f} | "
        f"{r['count'] * 3 * IMAGE_SIZE ** 2 * 4 / 2 ** 20:,.0f} |\n"
        for r in rows)
    growth = rows[-1]["peak_mib"] - rows[0]["peak_mib"]
    body = (f"## Prediction memory: folders of new images (cpu)\n\n"
            f"{machine()}. `python bench/predict_memory.py`: a wildlife head-only run "
            f"(EfficientNet-Lite0, {IMAGE_SIZE} px); `adaptlab predict RUN --data FOLDER` on "
            f"folders of 128 x 96 JPEGs, batch {BATCH}, each count in its own process; peak "
            "resident memory of that process. The seconds are wall time with whatever else "
            "the machine ran; prediction speed is measured in \"Prediction throughput\".\n\n"
            "| images | CSV rows | seconds | peak RSS (MiB) | decoded inputs, if all were held "
            "(MiB) |\n|---|---|---|---|---|\n" + table +
            f"\nFrom {rows[0]['count']:,} to {rows[-1]['count']:,} images the peak grows by "
            f"{growth:.0f} MiB; holding every decoded input would have taken "
            f"{(rows[-1]['count'] - rows[0]['count']) * 3 * IMAGE_SIZE ** 2 * 4 / 2 ** 20:,.0f} "
            "MiB more.\n")
    write_section("predict-memory-cpu", body)


if __name__ == "__main__":
    main()
