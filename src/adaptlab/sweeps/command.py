"""``adaptlab sweep DOMAIN --strategy freeze --k 0:L | --backbones a,b,c | --lrs a,b,c [--set K=V]...
[--seeds 0,1,2] --out DIR``: one run per value and seed, one table, one plot; run again with
the same ``--out`` to continue an interrupted sweep."""

from __future__ import annotations

import argparse
import sys

from adaptlab.errors import AdaptlabError

HELP = (
    "one run per frozen-block count (--strategy freeze --k 0:L), per backbone (--backbones "
    "a,b,c) or per learning rate (--lrs 1e-4,1e-3,1e-2), at each seed: a table, a plot and the "
    "value chosen on validation; run again to continue"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("domain")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", help="a dataset the domain ships")
    source.add_argument("--data", help="your own data: a file or folder in a format the domain reads")
    parser.add_argument(
        "--k",
        help="frozen blocks to sweep (needs --strategy freeze): FIRST:LAST inclusive, L being "
        "the backbone's number of blocks (0:L = every K), or a comma list (0,2,L)",
    )
    parser.add_argument("--backbones", help="backbones of DOMAIN to compare, comma-separated")
    parser.add_argument("--lrs", help="learning rates to compare, comma-separated (1e-4,1e-3,1e-2)")
    parser.add_argument("--backbone", help="the backbone of a --k or --lrs sweep (default: the "
                        "domain's)")
    parser.add_argument("--strategy", help="the strategy of every run (default: the domain's)")
    parser.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training setting or strategy option of every run",
    )
    parser.add_argument("--seeds", default="0", help="seeds, comma-separated (default 0)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--out", default=None, help="sweep folder (default runs/DOMAIN-sweep)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _base_config(args: argparse.Namespace):
    """The settings every run shares, built as ``adaptlab run`` builds its config."""
    from adaptlab.plugins.registry import get_domain
    from adaptlab.run import config_for
    from adaptlab.strategies.registry import get_strategy_class

    strategy = args.strategy or get_domain(args.domain).default_strategy
    for item in args.assignments:
        if item.partition("=")[0].strip() == "seed":
            raise AdaptlabError(f"--set {item}: a sweep runs every seed of --seeds; set those instead")
        if item.partition("=")[0].strip() == "lr" and args.lrs is not None:
            raise AdaptlabError(f"--set {item}: the sweep sets lr (--lrs); drop it")
    fields = {key: getattr(args, key) for key in ("epochs", "device") if getattr(args, key) is not None}
    config = config_for(
        args.domain,
        dataset=args.dataset,
        data=args.data,
        backbone=args.backbone,
        strategy=strategy,
        out="",
        **fields,
    )
    return config.with_overrides(args.assignments, get_strategy_class(strategy).option_names())


def main(args: argparse.Namespace) -> int:
    from adaptlab.cli import _numbers
    from adaptlab.sweeps import read_sweep, sweep
    from adaptlab.sweeps.table import table_text

    given = [f"--{name} {value}" for name, value in (("k", args.k), ("backbones", args.backbones),
                                                    ("lrs", args.lrs)) if value is not None]
    if len(given) > 1:
        raise AdaptlabError(f"{' and '.join(given)}: a sweep varies one of them")
    if not given:
        raise AdaptlabError("sweep: give --k FIRST:LAST (with --strategy freeze), --backbones a,b,c "
                            "or --lrs 1e-4,1e-3,1e-2")
    if args.k is not None and args.strategy != "freeze":
        raise AdaptlabError(
            f"--k {args.k}: K is the freeze strategy's option; add --strategy freeze"
            + (f" (not --strategy {args.strategy})" if args.strategy else "")
        )
    out = args.out or f"runs/{args.domain}-sweep"
    base = _base_config(args)
    seeds = _numbers(args.seeds, int, "--seeds")
    try:
        sweep(base, out, k=args.k, backbones=args.backbones, lrs=args.lrs, seeds=seeds,
              progress=not args.quiet)
    except KeyboardInterrupt:
        print(
            f"adaptlab: sweep interrupted; run the same command again to continue it in {out}",
            file=sys.stderr,
        )
        return 130
    print(table_text(read_sweep(out)))
    print(f"sweep: {out}/sweep.json, plot: {out}/sweep.png")
    return 0
