"""Model soups on the code demo (MiniLM): several runs from the same start that differ only in
their learning rate, then the uniform and the greedy soup of them, over several seeds (each
seed its own set of runs); held-out accuracy of the best single run (picked by validation),
the uniform soup and the greedy soup.

    python bench/seeds/soups.py --seeds 0 1 2 --epochs 3 --train-samples 256

Claim (``../shared`` catalogue, Model soups, seed 001; Wortsman et al. 2022): on ImageNet the
greedy soup reaches 81.0 %, the best single fine-tuned model 80.4 %, the uniform soup 80.0 %.
Goal: the greedy soup at least the best single run and at least the uniform soup (mean over
seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from report import machine, write_section  # noqa: E402

METRIC = "accuracy"


def _mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"


def _test(run_dir: Path) -> float:
    return json.loads((run_dir / "metrics.json").read_text())["final"]["test"][METRIC]


def _one_seed(args, seed: int, tmp: Path) -> dict[str, float]:
    from adaptlab.run import config_for, run
    from adaptlab.soups import make_soup

    ingredients = []
    for lr in args.lrs:
        config = config_for("code", strategy=args.strategy, lr=lr, seed=seed,
                            epochs=args.epochs, train_samples=args.train_samples,
                            device=args.device, out=str(tmp / f"{seed}-lr{lr:g}"))
        result = run(config, progress=False)
        ingredients.append(result.run_dir)
        print(f"seed {seed} lr {lr:g}: val {result.metrics['final']['val'][METRIC]:.3f}, test "
              f"{_test(result.run_dir):.3f}", flush=True)
    best = max(ingredients, key=lambda d: json.loads((d / "metrics.json").read_text())
               ["final"]["val"][METRIC])
    uniform = make_soup(ingredients, tmp / f"{seed}-uniform", device=args.device)
    greedy = make_soup(ingredients, tmp / f"{seed}-greedy", greedy=True, device=args.device)
    kept = len(json.loads((greedy / "soup.json").read_text())["kept"])
    row = {"best single (by val)": _test(best), "uniform soup": _test(uniform),
           "greedy soup": _test(greedy), "kept": kept,
           "mean single": statistics.mean(_test(d) for d in ingredients)}
    print(f"seed {seed}: {row}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lrs", type=float, nargs="+", default=[5e-4, 1e-3, 2e-3, 3e-3])
    parser.add_argument("--strategy", default="freeze")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-samples", type=int, default=None, help="default: all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--print-only", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [_one_seed(args, seed, Path(tmp)) for seed in args.seeds]
    section = _section(args, rows)
    if args.print_only:
        print(section)
    else:
        write_section(f"seeds-soups-code-{args.device}", section)


def _section(args, rows: list[dict]) -> str:
    names = ("mean single", "best single (by val)", "uniform soup", "greedy soup")
    table = "\n".join(f"| {name} | {_mean_sd([r[name] for r in rows])} |" for name in names)
    greedy = statistics.mean(r["greedy soup"] for r in rows)
    best = statistics.mean(r["best single (by val)"] for r in rows)
    uniform = statistics.mean(r["uniform soup"] for r in rows)
    met = "met" if greedy >= best and greedy >= uniform else "not met"
    return (f"## Model soups on the code demo `stdlib-modules` ({args.device})\n\n"
            f"{machine()}. minilm, strategy `{args.strategy}` at its defaults, {args.epochs} "
            f"epochs, training samples {args.train_samples or 'all'}; per seed "
            f"{len(args.lrs)} runs from the same start that differ only in the learning rate"
            f" ({', '.join(f'{lr:g}' for lr in args.lrs)}), then "
            "`adaptlab soup` of them, uniform and greedy (runs ranked by validation accuracy, "
            "each kept only if the soup's validation accuracy rises). Test accuracy, mean ± sd "
            f"over seeds {args.seeds}; the greedy soup kept "
            f"{[r['kept'] for r in rows]} runs.\n\n"
            "| model | test accuracy |\n|---|---|\n" + table + "\n\n"
            f"Model soups (paper, ImageNet: greedy 81.0 %, best single 80.4 %, uniform 80.0 %; "
            f"goal: greedy at least the best single run and the uniform soup): greedy "
            f"{greedy:.3f}, best single {best:.3f}, uniform {uniform:.3f}: {met}.\n")


if __name__ == "__main__":
    main()
