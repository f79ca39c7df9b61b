"""Engine overhead: adaptlab's Trainer against a hand-written PyTorch loop.

Same model (EfficientNet-Lite0 + linear head, full fine-tuning), same data (the wildlife demo
photos' training split), same batch size and optimizer. Each round runs both, the one first
alternating from round to round, so drift in machine load and any advantage of going second hit
both; the ratio of median throughputs is reported.

    python bench/engine_overhead.py [--rounds 10] [--epochs 2] [--image-size 160] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write_section  # noqa: E402


def build(seed: int, image_size: int):
    from adaptlab.backbones.offline import efficientnet_lite0
    from adaptlab.data.torch_datasets import make_torch_dataset
    from adaptlab.tasks.classification import build_model
    from adaptlab_wildlife.datasets import load_photos

    torch.manual_seed(seed)
    backbone = efficientnet_lite0()
    data = load_photos({"seed": seed})
    model, layer_map = build_model(backbone, len(data.class_names))
    dataset = make_torch_dataset(data, "train", backbone, True,
                                 {"image_size": image_size, "seed": seed})
    return model, layer_map, data, dataset


def hand_loop(model, dataset, epochs: int, batch_size: int, device: str) -> float:
    model.to(device).train()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    # No weight decay: the engine runs with weight_decay=0.0 below (AdamW's default is 0.01).
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    samples, started = 0, time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            samples += len(y)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return samples / (time.perf_counter() - started)


def engine_loop(model, layer_map, data, dataset, epochs: int, batch_size: int,
                device: str) -> float:
    from adaptlab.costs.meter import CostMeter
    from adaptlab.engine.accelerator import make_accelerator
    from adaptlab.engine.events import EventBus, JsonlEventWriter
    from adaptlab.engine.train_state import TrainSettings
    from adaptlab.engine.trainer import Trainer
    from adaptlab.strategies.base import StrategyConfig
    from adaptlab.strategies.full import FullFineTuning
    from adaptlab.tasks.classification import ClassificationTask

    accelerator = make_accelerator(device, "no", 1)
    # BatchNorm in training mode, as the hand-written loop runs it: the same work on both sides
    # (the default, norm_stats=auto, would skip the batch statistics the hand loop computes).
    strategy = FullFineTuning(StrategyConfig(norm_stats="update"))
    model = strategy.setup(model, layer_map)
    with tempfile.TemporaryDirectory() as tmp:
        bus = EventBus()
        writer = JsonlEventWriter(Path(tmp) / "events.jsonl")
        bus.subscribe(writer)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
        # Evaluation and checkpoints are switched off by timing only the training epochs:
        # the engine's own epoch timer is the measurement, as costs.json reports it.
        meter = CostMeter(device=device)
        trainer = Trainer(model=model, strategy=strategy,
                          task=ClassificationTask(data.class_names),
                          settings=TrainSettings(epochs=epochs, lr=1e-4, weight_decay=0.0,
                                                 warmup_ratio=0.0, schedule="constant"),
                          train_loader=loader, eval_loaders={}, run_dir=Path(tmp), bus=bus,
                          accelerator=accelerator, meter=meter)
        for _ in range(epochs):
            trainer._train_one_epoch()
        writer.close()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return meter.train_samples / meter.train_seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    # One unrecorded round of each first: thread pools, allocator and caches warm up.
    model, _, _, dataset = build(0, args.image_size)
    hand_loop(model, dataset, 1, args.batch_size, args.device)
    model, layer_map, data, dataset = build(0, args.image_size)
    engine_loop(model, layer_map, data, dataset, 1, args.batch_size, args.device)

    def run_loop() -> None:
        model, _, _, dataset = build(round_index, args.image_size)
        loop_rates.append(hand_loop(model, dataset, args.epochs, args.batch_size, args.device))

    def run_engine() -> None:
        model, layer_map, data, dataset = build(round_index, args.image_size)
        engine_rates.append(engine_loop(model, layer_map, data, dataset, args.epochs,
                                        args.batch_size, args.device))

    loop_rates, engine_rates = [], []
    for round_index in range(args.rounds):
        # The order alternates (loop first, then engine first): whatever the second of a pair
        # gains or loses from following the first (caches, the allocator, the machine's
        # clock) falls on each side in half the rounds.
        for run in ((run_loop, run_engine) if round_index % 2 == 0 else (run_engine, run_loop)):
            run()
        print(f"round {round_index}: loop {loop_rates[-1]:.1f} samples/s, "
              f"engine {engine_rates[-1]:.1f} samples/s", flush=True)
    loop, engine = statistics.median(loop_rates), statistics.median(engine_rates)
    ratio = engine / loop
    # Each round runs the two loops back to back: their ratio cancels the machine's drift
    # between rounds, which on a shared 2-core machine moves throughput by 10-20 %.
    paired = sorted(e / h for e, h in zip(engine_rates, loop_rates, strict=True))
    body = (f"## Engine overhead ({args.device})\n\n"
            f"{machine()}. EfficientNet-Lite0 + linear head, full fine-tuning, demo photos "
            f"(train split), batch {args.batch_size}, {args.image_size}px, {args.epochs} epochs x "
            f"{args.rounds} rounds, each running both, which goes first alternating; median "
            "throughput.\n\n"
            "| loop | samples/s (median) | rounds |\n|---|---|---|\n"
            f"| hand-written PyTorch | {loop:.1f} | {', '.join(f'{r:.1f}' for r in loop_rates)} |\n"
            f"| adaptlab engine | {engine:.1f} | "
            f"{', '.join(f'{r:.1f}' for r in engine_rates)} |\n\n"
            f"**Engine / hand loop throughput ratio: {ratio:.3f}** (goal: at least 0.98); "
            f"paired per-round ratios: median {statistics.median(paired):.3f}, range "
            f"{paired[0]:.3f}-{paired[-1]:.3f}. The "
            "engine does more per step: events to events.jsonl, LR schedule, gradient clipping, "
            "the strategy hooks (fit, epoch, before/after backward, before the optimizer step, "
            "step end), a check of the trainable set, and the per-step cost record (gradient "
            "and optimizer-state bytes; saved activations counted on the first step and when "
            "the trainable set changes).\n")
    write_section(f"engine-overhead-{args.device.split(':')[0]}", body)
    print(f"ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
