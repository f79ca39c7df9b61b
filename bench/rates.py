"""Every strategy at the learning rate its validation split chooses, beside its default rate.

A strategy's default rate is one number for every domain; on a new domain it can be a factor
off (the point-cloud demo's head-only and VPT both scored best a factor of 3 and 5 below their
defaults). Per strategy, ``adaptlab sweep --lrs`` trains its rate before any choice
(``assembly.unchosen_lr``: the domain's recipe for its default strategy, the strategy's own
default for the others) times each factor, at each seed; the rate with the best mean
validation metric (the run's monitor) is chosen, and its test metric is reported beside the
default's. The test split plays no part in the choice; the rate best on test is shown too, as
the ceiling a choice on validation could reach.

    python bench/rates.py --domain pointcloud --results /tmp/rates [--strategies head lora]
    python bench/rates.py --domain pointcloud --backbone point_transformer --results /tmp/rates

Runs are ordinary sweep folders under ``--results``: an interrupted bench continues, and two
processes with disjoint ``--strategies --share`` share the work; a last call without
``--share`` reads them all back and writes the section.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from strategies import FROM_SOURCE, METRICS, _source_run, every_applicable, floor  # noqa: E402

from report import machine, write_section  # noqa: E402


def _rates(default: float, factors: list[float]) -> list[float]:
    # Two significant digits: 3e-3 / 3 is 1e-3, not 0.0009999999999999998.
    return sorted({float(f"{default * factor:.2g}") for factor in factors})


def _mean(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"


def main() -> None:
    from adaptlab.assembly import unchosen_lr
    from adaptlab.plugins.registry import get_domain
    from adaptlab.run import config_for
    from adaptlab.sweeps import sweep

    parser = argparse.ArgumentParser()
    parser.add_argument("--domain", default="pointcloud")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--backbone", default=None, help="default: the dataset's own")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--factors", type=float, nargs="+", default=[1 / 3, 1.0, 3.0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--extend", type=int, default=2,
                        help="steps the grid may go beyond its edge where the best rate on "
                             "validation lies there")
    parser.add_argument("--strategies", nargs="+", default=None,
                        help="these strategies only (default: every one that applies)")
    parser.add_argument("--share", action="store_true",
                        help="a share of the work: train and print, leave BENCHMARKS.md alone")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--train-samples", type=int, default=None)
    parser.add_argument("--results", required=True, help="the folder of the sweeps (kept)")
    parser.add_argument("--note", default="")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    domain = get_domain(args.domain)
    dataset = domain.dataset(args.dataset or domain.default_dataset)
    results = Path(args.results)
    limits = {k: v for k, v in (("epochs", args.epochs), ("train_samples", args.train_samples))
              if v is not None}
    source = None
    if args.domain in FROM_SOURCE and dataset.source_dataset:
        source = _source_run(args.domain, dataset, args.device, results, args.backbone)

    def folder(name: str) -> str:
        return "-".join([args.domain, dataset.name, *([args.backbone] if args.backbone else []),
                         name])

    names = [n for n in every_applicable(domain, dataset, args.backbone) if not args.strategies
             or n in args.strategies]
    sweeps, defaults, failed = {}, {}, {}

    def sweep_and_read(base, out: Path, rates: list[float]) -> dict:
        sweep(base, out, lrs=rates, seeds=args.seeds, progress=False,
              say=lambda line: print(line, flush=True))
        return json.loads((out / "sweep.json").read_text())

    for name in names:
        defaults[name] = unchosen_lr(domain, dataset.name, name)
        base = config_for(args.domain, dataset=dataset.name, strategy=name, device=args.device,
                          backbone=args.backbone, init_from=source, out="", **limits)
        out = results / folder(name)
        rates = _rates(defaults[name], args.factors)
        try:
            for _ in range(args.extend + 1):
                result = sweep_and_read(base, out, rates)
                # The best on validation at the grid's edge: the best may lie beyond it, so
                # the grid goes one step further that way (the runs made are read back).
                best = result["chosen_on_val"]["value"]
                if len(rates) < 2 or best not in (rates[0], rates[-1]):
                    break
                step = rates[1] / rates[0]
                rates = _rates(best, [1 / step]) + rates if best == rates[0] else \
                    rates + _rates(best, [step])
        except Exception as error:  # one strategy's failure is a row, not the end of the bench
            failed[name] = f"{type(error).__name__}: {error}".splitlines()[0]
            print(f"{name}: {failed[name]}", flush=True)
            continue
        sweeps[name] = result

    last = next(iter(sweeps.values()))
    first_run = results / folder(next(iter(sweeps))) / last["rows"][0]["run"]
    config = json.loads((first_run / "config.json").read_text())
    task = json.loads((first_run / "metrics.json").read_text())["task"]
    first, _, lower = METRICS[task]
    sign = -1 if lower else 1
    monitor = last["monitor"]
    rows, at_default, at_chosen, fits, moved, chosen_rates = [], {}, {}, {}, [], {}
    test_samples = train_samples = None
    for name, result in sweeps.items():
        def of(value, split, key, result=result):
            return [row[split][key] for row in result["rows"] if row["value"] == value]

        default = float(f"{defaults[name]:.2g}")
        best_val = result["chosen_on_val"]["value"]
        # A default moves only for a clear win on validation: the best rate's mean beats the
        # default's by more than the default's own seed-to-seed sd there (a small validation
        # split moves in coarse steps: a smaller gain would be chosen by noise).
        noise = statistics.pstdev(of(default, "val", monitor))
        margin = sign * (statistics.mean(of(best_val, "val", monitor))
                         - statistics.mean(of(default, "val", monitor)))
        # Nor for a best still at the grid's edge after the extension: the optimum is not
        # bracketed there, and a validation split that prefers ever smaller rates prefers
        # the starting model, which is no choice of rate.
        edge = len(result["values"]) > 1 and best_val in (result["values"][0], result["values"][-1])
        chosen = best_val if margin > noise and not edge else default
        best_test = max(result["values"], key=lambda v: sign * statistics.mean(of(v, "test", first)))
        at_default[name], at_chosen[name] = of(default, "test", first), of(chosen, "test", first)
        fits[name] = of(chosen, "train", first)
        test_samples = int(result["rows"][0]["test"].get("samples") or 0) or test_samples
        train_samples = int(result["rows"][0]["train"].get("samples") or 0) or train_samples
        gap = sign * (statistics.mean(at_chosen[name]) - statistics.mean(at_default[name])) * 100
        if chosen != default:
            moved.append(f"{name} {gap:+.1f}")
            chosen_rates[f"{args.backbone}:{name}" if args.backbone else name] = chosen
        vals = ", ".join(f"{v:g}: {statistics.mean(of(v, 'val', monitor)):.3f}"
                         for v in result["values"])
        rows.append(f"| {name} | {default:g} | {_mean(at_default[name])} | {vals} | "
                    f"{best_val:g} (+{100 * margin:.1f}, sd {100 * noise:.1f}"
                    f"{', edge' if edge else ''}) | {chosen:g} | "
                    f"{_mean(at_chosen[name])} | {gap:+.1f} | {best_test:g} "
                    f"({statistics.mean(of(best_test, 'test', first)):.3f}) |")
    body = (
        f"## Learning rates chosen on validation on the {args.domain} demo `{dataset.name}`"
        + (f", {args.backbone}" if args.backbone else "")
        + f" ({args.device})\n\n{machine()}. {config['backbone']} on `{dataset.name}`: "
        f"{dataset.description}. {config['epochs']} epochs, batch {config['batch_size']}, "
        f"training samples {config['train_samples'] or 'all'}, seeds {args.seeds}"
        + (f"; every run starts from one source run (`{dataset.source_dataset}`, `full`, seed 0)"
           if source else "")
        + f". Per strategy, `adaptlab sweep --lrs` at its default rate (before any choice) "
        f"times {', '.join(f'{f:.3g}' for f in args.factors)}, and one factor further where "
        f"the best on validation lay at the grid's edge (at most {args.extend} more); *best on "
        "val* is the rate with "
        f"the best mean validation {monitor} over the seeds (what `sweep` prints as chosen), "
        "with its gain over the default's mean and the default's seed-to-seed sd there, in "
        "points (*edge*: still at the grid's edge); *chosen* is that rate where the gain "
        "exceeds the sd and the rate is not at the edge, else the default (a smaller gain "
        "would be chosen by noise, and an edge brackets no optimum). The test split plays "
        "no part in either. Test "
        f"{first} is mean ± population sd over seeds; *change* is the chosen rate's against "
        "the default's, in points; *best on test* is the rate a choice on test would have "
        "made (a ceiling, not a result).\n\n"
        f"| strategy | default lr | test {first} at default | val {monitor} by rate | "
        f"best on val | chosen lr | test {first} at chosen | change | best on test |\n"
        + "|---" * 9 + "|\n" + "\n".join(rows + [f"| {n} | failed: {why} |" + " |" * 7
                                                  for n, why in failed.items()]) + "\n\n"
        + f"The validation split moved {len(moved)} of {len(rows)} strategies off their "
        f"default rate ({', '.join(moved) or 'none'} points on test); as a dataset's "
        f"`strategy_lr`: `{json.dumps(chosen_rates)}`.\n"
        + floor(at_chosen, lower, test_samples, fits, train_samples).replace(
            "every strategy at its defaults at least matches head-only at its defaults",
            "every strategy at the rate its validation split chooses, against head-only at "
            "its chosen rate"))
    if args.note:
        body += f"\n{args.note}\n"
    print(body)
    if not args.no_write and not args.share:
        write_section("-".join(["rates", args.domain, dataset.name,
                                *([args.backbone] if args.backbone else []), args.device]), body)


if __name__ == "__main__":
    main()
