"""Per strategy on a domain's demo: trainable parameters, memory breakdown, seconds per epoch,
held-out metrics. All strategies run in one process, one after the other, with the domain's
default settings (learning rate per strategy below).

Domains whose backbones are built in (point clouds, weather fields) have no pre-trained
weights to adapt: every strategy there starts from the demo's source run (trained once,
``full``, and shared), as in the seed papers' "pre-train on the source, then adapt".

    python bench/strategies.py [--domain wildlife] [--seeds 0 1 2] [--device cpu]

``--every`` instead runs every registered strategy that applies to the domain's backbone,
each at its own defaults (learning rate and options unset, as a user who picks it gets them),
and checks issue 17's floor: each at least matches head-only at its defaults.

    python bench/strategies.py --domain code --every --epochs 3 --train-samples 256
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write_section  # noqa: E402

STRATEGIES = {
    "wildlife": {
        "head": {"lr": 3e-3, "strategy_options": {}},
        "freeze": {"lr": 5e-4, "strategy_options": {"k": -2}},
        "lora": {"lr": 3e-3, "strategy_options": {"r": 8}},
        "full": {"lr": 3e-4, "strategy_options": {}},
    },
    "code": {
        "head": {"lr": 3e-2, "strategy_options": {}},
        "freeze": {"lr": 1e-3, "strategy_options": {"k": -2}},
        "lora": {"lr": 1e-3, "strategy_options": {"r": 8}},
        "full": {"lr": 1e-4, "strategy_options": {}},
    },
    "medical": {
        "head": {"lr": 3e-3, "strategy_options": {}},
        "freeze": {"lr": 1e-3, "strategy_options": {"k": -2}},
        "lora": {"lr": 3e-3, "strategy_options": {"r": 8}},
        "full": {"lr": 5e-4, "strategy_options": {}},
    },
    "timeseries": {
        "head": {"lr": 1e-3, "strategy_options": {}},
        "lora": {"lr": 1e-3, "strategy_options": {"r": 8}},
        "full": {"lr": 3e-4, "strategy_options": {}},
    },
    "pointcloud": {
        "head": {"lr": 3e-3, "strategy_options": {}},
        "freeze": {"lr": 2e-3, "strategy_options": {"k": -1}},
        "lora": {"lr": 3e-3, "strategy_options": {"r": 8}},
        "full": {"lr": 2e-3, "strategy_options": {}},
    },
    "weather": {
        "head": {"lr": 3e-3, "strategy_options": {}},
        "freeze": {"lr": 3e-3, "strategy_options": {"k": -1}},
        "lora": {"lr": 3e-3, "strategy_options": {"r": 8}},
        "full": {"lr": 3e-3, "strategy_options": {}},
    },
    "timeseries:cmip6-warming": {
        "head": {"lr": 1e-3, "strategy_options": {}},
        "lora": {"lr": 1e-3, "strategy_options": {"r": 8}},
        "full": {"lr": 3e-4, "strategy_options": {}},
    },
}
# (headline metric, second metric, lower is better) per task
FROM_SOURCE = ("pointcloud", "weather")  # built-in backbones: adapt the source run
METRICS = {"classification": ("accuracy", "macro_f1", False),
           "segmentation": ("miou", "point_accuracy", False),
           "retrieval": ("mrr", "recall_at_1", False),
           "forecasting": ("mase", "mae", True)}


def mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.2f}"


def _source_run(domain: str, dataset, device: str, tmp: Path, backbone: str | None = None) -> str:
    from adaptlab.run import config_for
    from adaptlab.transfer.source_cache import ensure_source_run

    config = config_for(domain, dataset=dataset.source_dataset, strategy="full", seed=0,
                        device=device, backbone=backbone)
    return str(ensure_source_run(config, tmp / "cache", progress=False).run_dir)


def every_applicable(domain, dataset, backbone: str | None = None) -> dict[str, dict]:
    """Every strategy that applies to ``backbone`` (default: the dataset's), head first,
    unset options."""
    from adaptlab.plugins.spec import resolve_reference
    from adaptlab.strategies.applicability import backbone_applicability

    spec = domain.backbone(backbone or dataset.backbone or domain.default_backbone)
    verdicts = backbone_applicability(resolve_reference(spec.builder)(dict(spec.options)))
    # bridge joins an encoder to a language model: the generation task's strategy only.
    names = [n for n, reason in verdicts.items() if reason is None and n != "bridge"]
    names.sort(key=lambda n: n != "head")
    return {name: {"lr": None, "strategy_options": {}} for name in names}


def main() -> None:
    from adaptlab.plugins.registry import get_domain
    from adaptlab.run import config_for

    parser = argparse.ArgumentParser()
    parser.add_argument("--domain", default="wildlife",
                        choices=sorted({key.split(":")[0] for key in STRATEGIES}))
    parser.add_argument("--dataset", default=None, help="a dataset of the domain (default: its "
                                                        "default dataset)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--strategies", nargs="+", default=None,
                        help="a subset of the domain's strategies (default: all)")
    parser.add_argument("--every", action="store_true",
                        help="every strategy that applies to the backbone, at its defaults")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--train-samples", type=int, default=None)
    parser.add_argument("--results", default=None,
                        help="a folder keeping each run's outcome: runs found there are not "
                             "repeated, so an interrupted bench goes on where it stopped and "
                             "two processes (disjoint --strategies) can share the work")
    parser.add_argument("--note", default="",
                        help="a sentence on how the bench ran (e.g. beside another one), "
                             "printed under the table")
    parser.add_argument("--no-write", action="store_true",
                        help="print the section without writing BENCHMARKS.md")
    args = parser.parse_args()
    domain = get_domain(args.domain)
    dataset = domain.dataset(args.dataset or domain.default_dataset)
    table = every_applicable(domain, dataset) if args.every else \
        STRATEGIES.get(f"{args.domain}:{dataset.name}") or STRATEGIES[args.domain]
    limits = {k: v for k, v in (("epochs", args.epochs),
                                 ("train_samples", args.train_samples)) if v is not None}

    results = Path(args.results) if args.results else None
    rows, baselines, rates, failed, scores, fits = [], {}, {}, {}, {}, {}
    train_samples = None  # the training split's size, as the runs evaluated it
    method, last = "", None
    with tempfile.TemporaryDirectory() as tmp:
        sources: list[str] = []  # trained on first need: every run may be kept in results

        def source() -> str | None:
            if args.domain not in FROM_SOURCE or not dataset.source_dataset:
                return None
            if not sources:
                sources.append(_source_run(args.domain, dataset, args.device, Path(tmp)))
            return sources[0]

        for name, settings in table.items():
            if args.strategies and name not in args.strategies:
                continue
            accs, f1s, seconds, costs = [], [], [], None
            scores[name] = accs
            fits[name] = []
            for seed in args.seeds:
                def configure(init_from, name=name, settings=settings, seed=seed):
                    return config_for(args.domain, dataset=dataset.name, strategy=name,
                                      seed=seed, device=args.device, lr=settings["lr"],
                                      strategy_options=settings["strategy_options"],
                                      init_from=init_from, **limits,
                                      out=str(Path(tmp) / f"{name}-{seed}"))

                config = configure(None)
                outcome = _outcome(config, lambda: configure(source()), results,
                                   args.domain, dataset.name, name, seed)
                if "error" in outcome:
                    failed[name] = outcome["error"]
                    print(f"{name} seed {seed}: {outcome['error']}", flush=True)
                    break
                last = outcome
                test = outcome["metrics"]["final"]["test"]
                first, second, _ = METRICS[outcome["metrics"]["task"]]
                accs.append(test[first])
                f1s.append(test[second])
                fitted = outcome["metrics"]["final"]["train"]
                fits[name].append(fitted[first])
                train_samples = fitted.get("samples", train_samples)
                seconds.append(outcome["costs"]["seconds_per_epoch"])
                rates[name] = outcome["lr"]
                costs = outcome["costs"]
                method = outcome["metrics"]["baseline_method"]
                if not baselines:
                    baselines.update({key: [] for key in ("baseline",
                                                          *outcome["metrics"]["reference"])})
                if len(baselines["baseline"]) < len(args.seeds):
                    baselines["baseline"].append(outcome["metrics"]["baseline"]["test"][first])
                    for ref, value in outcome["metrics"]["reference"].items():
                        baselines[ref].append(value["test"][first])
                print(f"{name} seed {seed}: test {first} {test[first]:.3f}", flush=True)
            if name in failed:
                del scores[name]
                rows.append(f"| {name} | failed: {failed[name]} |" + " |" * (9 if args.every
                                                                              else 8))
                continue
            memory = costs["memory_bytes"]
            rows.append(
                f"| {name} |" + (f" {rates[name]:g} |" if args.every else "")
                + f" {costs['trainable_params']:,} ({costs['trainable_percent']:.2f} %) | "
                f"{mib(memory['parameters'])} | {mib(memory['gradients'])} | "
                f"{mib(memory['optimizer'])} | {mib(memory['activations'])} | "
                f"{mib(memory['peak_cuda'])} | {statistics.median(seconds):.2f} | "
                f"{statistics.mean(accs):.3f} ± {statistics.pstdev(accs):.3f} | "
                f"{statistics.mean(f1s):.3f} |")
    if last is None:
        raise SystemExit(f"no strategy ran: {failed}")

    first, second, lower = METRICS[last["metrics"]["task"]]
    # a sample's share of the metric: accuracy moves in steps of one test sample
    test_samples = last["metrics"]["final"]["test"].get("samples") \
        if last["metrics"]["task"] == "classification" else None

    def mean(values):
        return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"

    body = (f"## Strategies on the {args.domain} demo `{dataset.name}` ({args.device})\n\n"
            f"{machine()}. {config.backbone or dataset.backbone or domain.default_backbone} on "
            f"`{dataset.name}`: {dataset.description}. "
            f"{config.epochs} epochs, batch {config.batch_size}, input size "
            f"{config.image_size or 'native'}, training samples {config.train_samples or 'all'}, "
            f"seeds {args.seeds}; "
            + (f"every strategy starts from one source run (`{dataset.source_dataset}`, "
               "`full`, seed 0); " if args.domain in FROM_SOURCE and dataset.source_dataset
               else "")
            + f"{first} is mean ± sd over seeds on the held-out test split "
            f"({'lower' if lower else 'higher'} is better). Memory in MiB: activations are the "
            f"bytes autograd saved for one batch of {config.batch_size}.\n\n"
            + ("Every strategy that applies to the backbone, each at its own defaults (the lr "
               "column: its default learning rate, or the domain's rate for its default "
               "strategy; options unset). " if args.every else "")
            + "\n\n| strategy |" + (" lr |" if args.every else "")
            + " trainable params | params | grads | optimizer | activations | "
            f"CUDA peak | s/epoch | test {first} | test {second} |\n"
            + "|---" * (11 if args.every else 10) + "|\n" + "\n".join(rows) + "\n\n"
            f"Unadapted baseline (`baseline`: {method}) test {first} "
            f"{mean(baselines['baseline'])}" + "".join(
                f"; `{ref}` {mean(values)}" for ref, values in baselines.items()
                if ref != "baseline") + ".\n" + (floor(scores, lower, test_samples, fits, train_samples)
                                                   if args.every else ""))
    suffix = "" if dataset.name == domain.default_dataset else f"-{dataset.name}"
    kind = "every-strategy" if args.every else "strategies"
    if args.every:
        body = body.replace("## Strategies on", "## Every strategy at its defaults on", 1)
    if args.note:
        body += f"\n{args.note}\n"
    print(body)
    if not args.no_write:
        write_section(f"{kind}-{args.domain}{suffix}-{args.device}", body)


def _outcome(config, configure, results: Path | None, domain: str, dataset: str, name: str,
             seed: int) -> dict:
    """One run's metrics, costs and learning rate: read back from ``results`` where an earlier
    bench kept them for the same settings (``config``), else trained from ``configure()``
    (and kept; it adds the source run, trained only when a run needs it). A strategy the engine
    refuses or that fails is an outcome too (its message), so one failure does not throw
    away an hour of other runs."""
    from adaptlab.errors import AdaptlabError
    from adaptlab.run import run

    key = {"domain": domain, "dataset": dataset, "strategy": name, "seed": seed,
           "epochs": config.epochs, "train_samples": config.train_samples,
           "lr": config.lr, "options": config.strategy_options, "device": config.device}
    path = None
    if results is not None:
        results.mkdir(parents=True, exist_ok=True)
        path = results / f"{domain}-{dataset}-{name}-{seed}.json"
        if path.exists():
            kept = json.loads(path.read_text())
            if kept["key"] == json.loads(json.dumps(key)):
                return kept
    try:
        result = run(configure(), progress=False)
    except AdaptlabError as error:
        outcome = {"key": key, "error": str(error).splitlines()[0]}
    except Exception as error:  # a crash is reported in the table, with its type
        outcome = {"key": key, "error": f"{type(error).__name__}: {error}".splitlines()[0]}
    else:
        config_json = json.loads((result.run_dir / "config.json").read_text())
        outcome = {"key": key, "metrics": result.metrics, "costs": result.costs,
                   "lr": config_json["lr"], "epochs": config_json["epochs"],
                   "batch_size": config_json["batch_size"]}
    if path is not None:
        path.write_text(json.dumps(outcome))
    return outcome


def floor(scores: dict[str, list[float]], lower: bool, test_samples: int | None,
          fits: dict[str, list[float]] | None = None, train_samples: int | None = None) -> str:
    """Issue 17's floor: each strategy at its defaults at least matches head-only's metric;
    then why the misses miss: a gap within head-only's own seed-to-seed spread (or within
    one test sample) does not tell the strategy apart from head-only; a larger one is a loss,
    and ``fits`` (each run's metric on its training split, at the epoch it kept) says which
    kind: fitting the training split less than head-only does (underfitting at this budget),
    or as well or better and still losing on test (generalising worse)."""
    if "head" not in scores:
        return ""
    sign = -1 if lower else 1
    head = statistics.mean(scores["head"])
    gaps = {name: sign * (statistics.mean(values) - head) * 100
            for name, values in scores.items() if name != "head"}
    verdicts = [f"{name} {gap:+.1f} points ({'met' if gap >= 0 else 'NOT met'})"
                for name, gap in gaps.items()]
    missed = {name: -gap for name, gap in gaps.items() if gap < 0}
    text = ("\nFloor (issue 17: every strategy at its defaults at least matches head-only at "
            f"its defaults; positive is better): {', '.join(verdicts)}. "
            f"{len(verdicts) - len(missed)} of {len(verdicts)} meet it.")
    if missed:
        spread = statistics.pstdev(scores["head"]) * 100
        sample = 100 / test_samples if test_samples else 0.0
        within = sorted(n for n, gap in missed.items() if gap <= max(spread, sample))
        beyond = sorted(n for n, gap in missed.items() if gap > max(spread, sample))
        text += (f" Head-only's seed-to-seed sd is {spread:.1f} points"
                 + (f" and one of the {test_samples} test samples is {sample:.1f}"
                    if test_samples else "") + ": ")
        text += (f"{', '.join(within)} miss{'es' if len(within) == 1 else ''} by no more than "
                 f"that, so this run does not tell {'it' if len(within) == 1 else 'them'} "
                 "apart from head-only" if within else "no miss is within it")
        text += (f"; {', '.join(beyond)} lose{'s' if len(beyond) == 1 else ''} by more"
                 if beyond else "") + "."
        if beyond and fits and fits.get("head"):
            text += " " + _fit_diagnosis(beyond, fits, sign, train_samples
                                         if test_samples else None)
    return text + "\n"


def _fit_diagnosis(losers: list[str], fits: dict[str, list[float]], sign: int,
                   train_samples: int | None) -> str:
    """Which losers fit their training split less than head-only (mean metric on the
    training split at the kept epoch, by more than one training sample where the metric is
    accuracy over ``train_samples``) and which fit it as well or better."""
    head = statistics.mean(fits["head"])
    margin = 1 / train_samples if train_samples else 0.0
    train = {name: statistics.mean(fits[name]) for name in losers if fits.get(name)}
    under = sorted(n for n, value in train.items() if sign * (value - head) < -margin)
    over = sorted(n for n in train if n not in under)
    parts = []
    if under:
        parts.append(f"{', '.join(f'{n} {train[n]:.3f}' for n in under)} fit the training "
                     f"split less than head-only ({head:.3f}): underfitting at this budget")
    if over:
        parts.append(f"{', '.join(f'{n} {train[n]:.3f}' for n in over)} fit it as well as "
                     f"head-only ({head:.3f}"
                     + (f", within one of its {train_samples} samples" if train_samples else "")
                     + ") or better and still lose on test: they generalise worse")
    return "On the training split at the kept epoch, " + "; ".join(parts) + "."


if __name__ == "__main__":
    main()
