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


def _source_run(domain: str, dataset, device: str, tmp: Path) -> str:
    from adaptlab.run import config_for
    from adaptlab.transfer.source_cache import ensure_source_run

    config = config_for(domain, dataset=dataset.source_dataset, strategy="full", seed=0,
                        device=device)
    return str(ensure_source_run(config, tmp / "cache", progress=False).run_dir)


def every_applicable(domain, dataset) -> dict[str, dict]:
    """Every strategy that applies to the dataset's backbone, head first, unset options."""
    from adaptlab.plugins.spec import resolve_reference
    from adaptlab.strategies.applicability import backbone_applicability

    spec = domain.backbone(dataset.backbone or domain.default_backbone)
    verdicts = backbone_applicability(resolve_reference(spec.builder)(dict(spec.options)))
    # bridge joins an encoder to a language model: the generation task's strategy only.
    names = [n for n, reason in verdicts.items() if reason is None and n != "bridge"]
    names.sort(key=lambda n: n != "head")
    return {name: {"lr": None, "strategy_options": {}} for name in names}


def main() -> None:
    from adaptlab.plugins.registry import get_domain
    from adaptlab.run import config_for, run

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
    args = parser.parse_args()
    domain = get_domain(args.domain)
    dataset = domain.dataset(args.dataset or domain.default_dataset)
    table = every_applicable(domain, dataset) if args.every else \
        STRATEGIES.get(f"{args.domain}:{dataset.name}") or STRATEGIES[args.domain]
    limits = {k: v for k, v in (("epochs", args.epochs),
                                 ("train_samples", args.train_samples)) if v is not None}

    rows, baselines, means, rates = [], {}, {}, {}
    method = ""
    with tempfile.TemporaryDirectory() as tmp:
        source = _source_run(args.domain, dataset, args.device, Path(tmp)) \
            if args.domain in FROM_SOURCE and dataset.source_dataset else None
        for name, settings in table.items():
            if args.strategies and name not in args.strategies:
                continue
            accs, f1s, seconds, costs = [], [], [], None
            for seed in args.seeds:
                config = config_for(args.domain, dataset=dataset.name, strategy=name, seed=seed,
                                    device=args.device,
                                    lr=settings["lr"],
                                    strategy_options=settings["strategy_options"],
                                    init_from=source, **limits,
                                    out=str(Path(tmp) / f"{name}-{seed}"))
                result = run(config, progress=False)
                test = result.metrics["final"]["test"]
                first, second, _ = METRICS[result.metrics["task"]]
                accs.append(test[first])
                f1s.append(test[second])
                seconds.append(result.costs["seconds_per_epoch"])
                rates[name] = json.loads((result.run_dir / "config.json").read_text())["lr"]
                costs = result.costs
                method = result.metrics["baseline_method"]
                if not baselines:
                    baselines.update({key: [] for key in ("baseline", *result.metrics["reference"])})
                if len(baselines["baseline"]) < len(args.seeds):
                    baselines["baseline"].append(result.metrics["baseline"]["test"][first])
                    for ref, value in result.metrics["reference"].items():
                        baselines[ref].append(value["test"][first])
                print(f"{name} seed {seed}: test {first} {test[first]:.3f}", flush=True)
            memory = costs["memory_bytes"]
            means[name] = statistics.mean(accs)
            rows.append(
                f"| {name} |" + (f" {rates[name]:g} |" if args.every else "")
                + f" {costs['trainable_params']:,} ({costs['trainable_percent']:.2f} %) | "
                f"{mib(memory['parameters'])} | {mib(memory['gradients'])} | "
                f"{mib(memory['optimizer'])} | {mib(memory['activations'])} | "
                f"{mib(memory['peak_cuda'])} | {statistics.median(seconds):.2f} | "
                f"{statistics.mean(accs):.3f} ± {statistics.pstdev(accs):.3f} | "
                f"{statistics.mean(f1s):.3f} |")

    first, second, lower = METRICS[result.metrics["task"]]

    def mean(values):
        return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"

    body = (f"## Strategies on the {args.domain} demo `{dataset.name}` ({args.device})\n\n"
            f"{machine()}. {config.backbone or dataset.backbone or domain.default_backbone} on "
            f"`{dataset.name}`: {dataset.description}. "
            f"{config.epochs} epochs, batch {config.batch_size}, input size "
            f"{config.image_size or 'native'}, training samples {config.train_samples or 'all'}, "
            f"seeds {args.seeds}; "
            + (f"every strategy starts from one source run (`{dataset.source_dataset}`, "
               "`full`, seed 0); " if source else "")
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
                if ref != "baseline") + ".\n" + (floor(means, lower) if args.every else ""))
    suffix = "" if dataset.name == domain.default_dataset else f"-{dataset.name}"
    kind = "every-strategy" if args.every else "strategies"
    if args.every:
        body = body.replace("## Strategies on", "## Every strategy at its defaults on", 1)
    write_section(f"{kind}-{args.domain}{suffix}-{args.device}", body)


def floor(means: dict[str, float], lower: bool) -> str:
    """Issue 17's floor: each strategy at its defaults at least matches head-only's metric."""
    if "head" not in means:
        return ""
    sign = -1 if lower else 1
    verdicts = [f"{name} {sign * (value - means['head']) * 100:+.1f} points "
                f"({'met' if sign * (value - means['head']) >= 0 else 'NOT met'})"
                for name, value in means.items() if name != "head"]
    missed = sum("NOT met" in v for v in verdicts)
    return ("\nFloor (issue 17: every strategy at its defaults at least matches head-only at "
            f"its defaults; positive is better): {', '.join(verdicts)}. "
            f"{len(verdicts) - missed} of {len(verdicts)} meet it.\n")


if __name__ == "__main__":
    main()
