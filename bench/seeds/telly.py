"""Telly on the code demo (MiniLM): which blocks full fine-tuning changes (linear CKA and RSA
per block, ``adaptlab analyse``), and freezing the k the analysis suggests against full
fine-tuning and against Telly's own k = L-2, over several seeds.

    python bench/seeds/telly.py --seeds 0 1 2

Claims (``../shared`` catalogue, Telly, seed 000): "only the representations of the top two
layers change most during fine-tuning", and freezing lower layers greatly reduces "training
parameters and the corresponding time cost ... while performances are similar or better".
Goals: the top two blocks' CKA below the bottom two's; freezing the suggested k within 1 point
of full fine-tuning's test accuracy at a fraction of its trainable parameters and time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from report import machine, write_section  # noqa: E402

METRIC = "accuracy"


def _mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"


def _train(domain: str, strategy: str, options: dict, seed: int, out: Path, args):
    from adaptlab.run import config_for, run

    training = {k: v for k, v in {"epochs": args.epochs,
                                  "train_samples": args.train_samples}.items() if v is not None}
    config = config_for(domain, strategy=strategy, strategy_options=options, seed=seed,
                        device=args.device, out=str(out), **training)
    result = run(config, progress=False)
    print(f"{strategy} {options} seed {seed}: test {METRIC} "
          f"{result.metrics['final']['test'][METRIC]:.3f}, trainable "
          f"{result.costs['trainable_params']:,}, {result.costs['seconds_per_epoch']:.1f} "
          "s/epoch", flush=True)
    return result


def main() -> None:
    from adaptlab.analysis import analyse

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: the demo's")
    parser.add_argument("--train-samples", type=int, default=None)
    parser.add_argument("--threshold", type=float, default=None,
                        help="the analyser's CKA threshold (default: its own)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--print-only", action="store_true")
    args = parser.parse_args()
    rows: dict[str, list] = {"full": [], "freeze k=suggested": [], "freeze k=L-2 (Telly)": []}
    curves, suggested = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            full = _train("code", "full", {}, seed, Path(tmp) / f"full-{seed}", args)
            analysis = analyse(full.run_dir, threshold=args.threshold, device=args.device)
            print(analysis.text(), flush=True)
            curves.append(analysis.layers)
            suggested.append(analysis.suggested_k)
            rows["full"].append(full)
            rows["freeze k=suggested"].append(_train(
                "code", "freeze", {"k": analysis.suggested_k}, seed,
                Path(tmp) / f"suggested-{seed}", args))
            # The same run when the suggestion is Telly's own k (freeze resolves -2 to L-2).
            rows["freeze k=L-2 (Telly)"].append(
                rows["freeze k=suggested"][-1] if analysis.suggested_k == analysis.num_blocks - 2
                else _train("code", "freeze", {"k": -2}, seed, Path(tmp) / f"telly-{seed}", args))
        section = _section(args, rows, curves, suggested, analysis)
    if args.print_only:
        print(section)
    else:
        write_section(f"seeds-telly-code-{args.device}", section)


def _section(args, rows: dict, curves: list, suggested: list[int], analysis) -> str:
    from adaptlab.config import RunConfig

    config = RunConfig.from_file(Path(rows["full"][0].run_dir) / "config.json")
    full_scores = [r.metrics["final"]["test"][METRIC] for r in rows["full"]]
    full_params = rows["full"][0].costs["trainable_params"]
    full_seconds = statistics.median(r.costs["seconds_per_epoch"] for r in rows["full"])
    table = []
    for label, results in rows.items():
        scores = [r.metrics["final"]["test"][METRIC] for r in results]
        params = [r.costs["trainable_params"] for r in results]
        seconds = statistics.median(r.costs["seconds_per_epoch"] for r in results)
        gap = 100 * (statistics.mean(scores) - statistics.mean(full_scores))
        table.append(f"| {label} | {statistics.median(params):,.0f} "
                     f"({statistics.median(params) / full_params:.0%}) | {seconds:.1f} "
                     f"({seconds / full_seconds:.2f}) | {_mean_sd(scores)} | {gap:+.1f} |")
    blocks = len(curves[0])
    cka = [[curve[b]["cka"] for curve in curves] for b in range(blocks)]
    rsa = [[curve[b]["rsa"] for curve in curves] for b in range(blocks)]
    curve_rows = [f"| {b} | {_mean_sd(cka[b])} | {_mean_sd(rsa[b])} |" for b in range(blocks)]
    return (f"## Telly on the code demo `{config.dataset}` ({args.device})\n\n"
            f"{machine()}. minilm ({blocks} blocks), {config.epochs} epochs, batch "
            f"{config.batch_size}, training samples {config.train_samples or 'all'}, seeds "
            f"{args.seeds}, every strategy at its default learning rate. Each seed: full "
            "fine-tuning, `adaptlab analyse` of that run (linear CKA and RSA of each block's "
            f"outputs against the pre-trained model on {analysis.probe} validation examples), "
            f"then `freeze` at the k it suggested ({analysis.rule}) and at Telly's k = L-2. "
            "Trainable parameters and seconds per epoch are medians over seeds, with their "
            "ratio to full fine-tuning; Δ is the test accuracy against full fine-tuning in "
            "points.\n\n"
            "| run | trainable (of full) | s/epoch (of full) | test accuracy | Δ |\n"
            "|---|---|---|---|---|\n" + "\n".join(table) + "\n\n"
            f"Suggested k per seed: {suggested}. Similarity of each block to the pre-trained "
            "model after full fine-tuning (mean ± sd over seeds):\n\n"
            "| block | linear CKA | RSA |\n|---|---|---|\n" + "\n".join(curve_rows) + "\n\n"
            + _claims(cka, rows, full_scores) + "\n")


def _claims(cka: list[list[float]], rows: dict, full_scores: list[float]) -> str:
    top = statistics.mean(cka[-1] + cka[-2])
    bottom = statistics.mean(cka[0] + cka[1])
    changed = "met" if top < bottom else "not met"
    lines = [f"Telly (the top two layers change most): top two blocks' mean CKA {top:.3f}, "
             f"bottom two's {bottom:.3f}: {changed}."]
    for label in ("freeze k=suggested", "freeze k=L-2 (Telly)"):
        scores = [r.metrics["final"]["test"][METRIC] for r in rows[label]]
        gap = 100 * (statistics.mean(scores) - statistics.mean(full_scores))
        params = statistics.median(r.costs["trainable_params"] for r in rows[label]) \
            / rows["full"][0].costs["trainable_params"]
        seconds = statistics.median(r.costs["seconds_per_epoch"] for r in rows[label]) \
            / statistics.median(r.costs["seconds_per_epoch"] for r in rows["full"])
        met = "met" if gap >= -1.0 and params < 1 and seconds < 1 else "not met"
        lines.append(f"{label} (goal: within 1 point of full fine-tuning at fewer parameters "
                     f"and less time): {gap:+.1f} points at {params:.0%} of the trainable "
                     f"parameters and {seconds:.2f} of the time per epoch: {met}.")
    return "\n\n".join(lines)


if __name__ == "__main__":
    main()
