"""Training throughput and model FLOP utilisation (MFU) of ViT-B/16 through adaptlab's engine.

Full fine-tuning and LoRA of ViT-B/16 at 224 px in bf16, each a whole ``adaptlab run`` on a
generated image folder (the weights are a random initialisation written to a local file:
throughput does not depend on them, and the machine may be offline). Reported per strategy:
steady-state samples/s (the step events of the last epoch, its first tenth left out), the
FLOPs of one training step per sample counted by PyTorch's ``FlopCounterMode`` on the same
model (forward and backward, so LoRA's missing weight gradients are not counted), and MFU
against the device's dense bf16 matmul peak, both the datasheet's and the one measured here
in the same run (an 8192^3 bf16 matmul).

    python bench/gpu_throughput.py [--batch-size 256] [--images 4096] [--epochs 2]
    python bench/gpu_throughput.py --device cpu --batch-size 4 --images 16 --image-size 64 \
        --epochs 1 --print   # the plumbing, on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write_section  # noqa: E402

DATASHEET_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}
BACKBONE = "vit_base_patch16_224"


def write_images(root: Path, count: int, size: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for index in range(count):
        folder = root / f"class{index % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


def write_weights(path: Path) -> Path:
    import timm
    from safetensors.torch import save_file

    model = timm.create_model(BACKBONE, pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def matmul_peak(device: str) -> float | None:
    """Dense bf16 matmul FLOP/s measured on this device (None on a CPU)."""
    if device != "cuda":
        return None
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    started, rounds = time.perf_counter(), 50
    for _ in range(rounds):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * rounds / (time.perf_counter() - started)


def step_flops_per_sample(strategy: str, weights: Path, image_size: int) -> float:
    """FLOPs of one forward and backward pass, per sample, on the model the run trains."""
    from torch.utils.flop_counter import FlopCounterMode

    from adaptlab.assembly import assemble
    from adaptlab.config import RunConfig

    config = RunConfig(domain="medical", backbone=BACKBONE, strategy=strategy,
                       backbone_weights=str(weights), data=str(weights.parent / "images"),
                       image_size=image_size, device="cpu", out=str(weights.parent / "x"))
    parts = assemble(config)
    from adaptlab.tasks.registry import make_task

    task = make_task(parts.data, "none", parts.backbone, "quantile")
    model, layer_map = task.build_model(parts.backbone, parts.strategy.config)
    model = parts.strategy.setup(model, layer_map)
    batch = 2
    inputs = torch.randn(batch, 3, image_size, image_size)
    with FlopCounterMode(display=False) as counter:
        model(inputs).sum().backward()
    return counter.get_total_flops() / batch


def steady_throughput(events_file: Path) -> float:
    """Samples/s over the last epoch's steps, its first tenth left out."""
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    steps = [e for e in events if e["event"] == "step"]
    last = [e for e in steps if e["epoch"] == steps[-1]["epoch"]]
    kept = last[max(1, len(last) // 10):]
    seconds = kept[-1]["time"] - kept[0]["time"]
    return sum(e["samples"] for e in kept[1:]) / seconds if seconds > 0 else 0.0


def one_run(args, strategy: str, root: Path, weights: Path) -> dict:
    out = root / f"run-{strategy}"
    command = [sys.executable, "-m", "adaptlab.cli", "run", "medical", "--data",
               str(root / "images"), "--backbone", BACKBONE, "--strategy", strategy,
               "--device", args.device, "--epochs", str(args.epochs), "--out", str(out),
               "--set", f"backbone_weights={weights}", "--set", f"batch_size={args.batch_size}",
               "--set", f"image_size={args.image_size}", "--set", f"num_workers={args.workers}",
               "--set", f"mixed_precision={'bf16' if args.device == 'cuda' else 'no'}",
               "--quiet"]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    costs = json.loads((out / "costs.json").read_text())
    return {"wall": time.perf_counter() - started,
            "throughput": steady_throughput(out / "events.jsonl"),
            "peak_cuda": costs["memory_bytes"].get("peak_cuda")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--strategies", default="full,lora")
    parser.add_argument("--print", action="store_true",
                        help="print the section instead of writing BENCHMARKS.md")
    args = parser.parse_args()
    peak = matmul_peak(args.device)
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    sheet = next((v for k, v in DATASHEET_BF16.items() if k in name), None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root / "images", args.images, max(args.image_size, 64))
        weights = write_weights(root / "vit_base_random.safetensors")
        for strategy in args.strategies.split(","):
            run = one_run(args, strategy, root, weights)
            flops = step_flops_per_sample(strategy, weights, args.image_size)
            rows.append({"strategy": strategy, **run, "flops": flops})
    section = _section(args, rows, peak, sheet, name)
    if args.print:
        print(section)
    else:
        write_section(f"gpu-throughput-{args.device}", section)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _section(args, rows: list[dict], peak: float | None, sheet: float | None,
             name: str) -> str:
    lines = [f"## Training throughput and MFU: ViT-B/16 ({args.device})", "",
             f"{machine()}. {args.images} generated 224 px images, batch {args.batch_size}, "
             f"{args.epochs} epochs, bf16 on CUDA, {args.workers} loader workers; steady-state "
             "samples/s from the last epoch's step events. Measured dense bf16 matmul peak: "
             + (f"{peak / 1e12:.0f} TFLOP/s" if peak else "n/a") + "; datasheet: "
             + (f"{sheet / 1e12:.0f} TFLOP/s" if sheet else "n/a") + ".", "",
             "| strategy | samples/s | GFLOP per sample (fwd+bwd) | achieved TFLOP/s | "
             "MFU (measured peak) | MFU (datasheet) | peak CUDA MiB | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        achieved = row["throughput"] * row["flops"]
        cuda = row["peak_cuda"]
        lines.append(f"| `{row['strategy']}` | {row['throughput']:.1f} | "
                     f"{row['flops'] / 1e9:.1f} | {achieved / 1e12:.2f} | "
                     f"{_pct(achieved / peak if peak else None)} | "
                     f"{_pct(achieved / sheet if sheet else None)} | "
                     f"{cuda / 2**20 if cuda else 0:.0f} | {row['wall']:.0f} |")
    full = next((r for r in rows if r["strategy"] == "full"), None)
    if full and sheet:
        mfu = full["throughput"] * full["flops"] / sheet
        verdict = "met" if mfu >= 0.5 else "not met"
        lines += ["", f"**Goal (at least 50 % MFU for full fine-tuning, datasheet peak): "
                      f"{verdict}** ({_pct(mfu)})."]
    if args.device != "cuda":
        lines += ["", "CPU run: the plumbing only; MFU is defined against a GPU's peak."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
