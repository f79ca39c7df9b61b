"""``adaptlab`` command line: ``domains``, ``run``, ``explain``, ``predict``, ``export``,
``compare``, ``transfer``, ``plan``, ``analyse``, ``soup``, ``sweep`` and ``new-notebook`` (also
called ``template``).

Bad input ends with one line naming the path, key or value, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from adaptlab.errors import AdaptlabError, CollectiveError

# Commands that live beside what they run: each module holds ``HELP``, ``add_arguments(parser)``
# and ``main(args) -> int``, and imports nothing heavy at module level (``--help`` stays fast).
COMMAND_MODULES = {"analyse": "adaptlab.analysis.command", "sweep": "adaptlab.sweeps.command",
                   "soup": "adaptlab.soups.command"}


def _command_module(name: str):
    import importlib

    return importlib.import_module(COMMAND_MODULES[name])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adaptlab", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true",
                        help="with an error, also print where in adaptlab it was raised")
    sub = parser.add_subparsers(dest="command", required=True)

    domains = sub.add_parser("domains", help="list installed domains, datasets, backbones")
    domains.add_argument("--json", action="store_true", help="print JSON")
    domains.add_argument("domain", nargs="?",
                         help="with --backbone (default: the domain's), which strategies apply")
    domains.add_argument("--backbone", help="a backbone of DOMAIN to check every strategy on")

    run = sub.add_parser("run", help="adapt a backbone to a domain's data")
    run.add_argument("domain")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--dataset", help="a dataset the domain ships")
    source.add_argument("--data", help="your own data: a file or folder in a format the domain reads")
    run.add_argument("--backbone")
    run.add_argument("--strategy")
    run.add_argument("--set", dest="assignments", action="append", default=[],
                     metavar="KEY=VALUE", help="a training setting or strategy option")
    run.add_argument("--epochs", type=int)
    run.add_argument("--seed", type=int)
    run.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"))
    run.add_argument("--out", default=None, help="run folder (default runs/DOMAIN-STRATEGY)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--processes", type=int, default=1,
                     help="data-parallel processes on this machine, started by torchrun "
                          "(batch_size stays the global batch)")
    explain = sub.add_parser("explain", help="attributions, checks and a report for a finished run")
    explain.add_argument("run_dir", nargs="?")
    explain.add_argument("--method", help="attribution method (default: the domain's)")
    explain.add_argument("--samples", type=int, help="how many samples to explain (default 8)")
    explain.add_argument("--index", type=int, action="append", default=None,
                         help="explain this sample of the split (repeatable)")
    explain.add_argument("--split", default="test", choices=("train", "val", "test"))
    explain.add_argument("--no-checks", action="store_true",
                         help="skip faithfulness, infidelity/sensitivity and randomisation")
    explain.add_argument("--no-compare", action="store_true",
                         help="skip the unadapted-model comparison")
    explain.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    explain.add_argument("--list-methods", action="store_true", help="print the methods and exit")
    for name in ("new-notebook", "template"):
        template = sub.add_parser(name, help="write a domain's template notebook")
        template.add_argument("domain")
        template.add_argument("path", nargs="?", help="notebook path (default DOMAIN.ipynb)")
        template.add_argument("--out", default=None, help="notebook path, as PATH")
    transfer = sub.add_parser(
        "transfer", help="learning curve: source pre-training then target, against the "
                         "target-only control, over target fractions and seeds")
    transfer.add_argument("domain")
    target = transfer.add_mutually_exclusive_group()
    target.add_argument("--dataset", help="the target dataset (default: the domain's)")
    target.add_argument("--data", help="your own target data")
    transfer.add_argument("--source-dataset", help="the source dataset (default: the one the "
                                                   "target dataset names)")
    transfer.add_argument("--backbone")
    transfer.add_argument("--strategy", help="strategy on the target (default: the domain's)")
    transfer.add_argument("--source-strategy", default="full",
                          help="strategy of the source pre-training (default full)")
    transfer.add_argument("--set", dest="assignments", action="append", default=[],
                          metavar="KEY=VALUE", help="a setting of the target runs")
    transfer.add_argument("--source-set", dest="source_assignments", action="append",
                          default=[], metavar="KEY=VALUE", help="a setting of the source run")
    transfer.add_argument("--fractions", default="0.05,0.1,0.2,0.5,1",
                          help="target training fractions, comma-separated")
    transfer.add_argument("--seeds", default="0,1,2", help="seeds, comma-separated")
    transfer.add_argument("--epochs", type=int)
    transfer.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"))
    transfer.add_argument("--cache", help="source-run cache (default $ADAPTLAB_CACHE or "
                                          "~/.cache/adaptlab)")
    transfer.add_argument("--out", default=None, help="curve folder (default "
                                                      "runs/DOMAIN-transfer)")
    transfer.add_argument("--quiet", action="store_true", help="no progress bars")
    predict = sub.add_parser("predict", help="apply a finished run's model to new data")
    predict.add_argument("run_dir", metavar="RUN_DIR")
    what = predict.add_mutually_exclusive_group(required=True)
    what.add_argument("--data", help="a file or folder, read as the run's domain reads --data "
                                     "(labels, if any, ignored)")
    what.add_argument("--split", choices=("train", "val", "test"),
                      help="the run's own split instead (needs the run's training data)")
    predict.add_argument("--out", help="the table to write (default RUN_DIR/predictions/NAME.csv)")
    predict.add_argument("--batch-size", type=int)
    predict.add_argument("--workers", type=int, default=0, help="data-loading processes")
    predict.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    predict.add_argument("--set", dest="assignments", action="append", default=[],
                         metavar="KEY=VALUE", help="a task's prediction option (top_k=5, ...)")
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    export = sub.add_parser("export", help="a finished run as a Hub-compatible folder "
                                           "(safetensors, ONNX or TorchScript), checked")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--out", required=True, help="a new folder to write")
    export.add_argument("--format", default="safetensors",
                        help="safetensors (default), onnx or torchscript")
    export.add_argument("--merge", action="store_true",
                        help="fold a LoRA adapter into the weights (ONNX and TorchScript always do)")
    export.add_argument("--device", default="cpu", help="where the run's reference outputs are "
                                                       "computed (default cpu)")
    plan = sub.add_parser("plan", help="predict each strategy's training memory, without "
                                       "training")
    plan.add_argument("domain")
    plan_source = plan.add_mutually_exclusive_group()
    plan_source.add_argument("--dataset", help="a dataset the domain ships")
    plan_source.add_argument("--data", help="your own data, as for run")
    plan.add_argument("--backbone")
    plan.add_argument("--strategy", dest="strategies", action="append", default=[],
                      help="a strategy to plan (repeatable; default: every one that applies)")
    plan.add_argument("--set", dest="assignments", action="append", default=[],
                      metavar="KEY=VALUE", help="a training setting or strategy option")
    plan.add_argument("--budget", help="memory to fit in: 8GiB, 512MB, 1.5G (default: the "
                                       "CUDA device's memory; none on the CPU)")
    plan.add_argument("--processes", type=int, default=1,
                      help="plan the main process of N data-parallel processes: its share of "
                           "every batch, and with --set fsdp=true its slice of the weights")
    plan.add_argument("--json", action="store_true", help="print JSON")
    compare = sub.add_parser("compare", help="runs side by side: costs and metrics")
    compare.add_argument("runs", nargs="+", metavar="RUN_DIR",
                         help="run folders, or folders holding run folders")
    compare.add_argument("--json", action="store_true", help="print JSON")
    compare.add_argument("--plot", help="write the metric-vs-cost plot to this PNG file")
    for name in COMMAND_MODULES:
        module = _command_module(name)
        module.add_arguments(sub.add_parser(name, help=module.HELP))
    return parser


def cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from adaptlab.compare import figure_png, find_runs, runs_table, summarise_run, tradeoff_figure

    folders: list[Path] = []
    for given in map(Path, args.runs):
        folders += [given] if (given / "config.json").is_file() else find_runs(given)
    if not folders:
        raise AdaptlabError(f"no run folders in {' '.join(args.runs)}")
    summaries = [summarise_run(folder) for folder in folders]
    if args.json:
        print(json.dumps([s.to_dict() for s in summaries], indent=2))
    else:
        from adaptlab.summary import text_table

        print(text_table(runs_table(summaries)))
    if args.plot:
        from adaptlab.engine.atomic import atomic_write_with

        png = figure_png(tradeoff_figure(summaries), dpi=100)
        atomic_write_with(Path(args.plot), lambda tmp: Path(tmp).write_bytes(png))
        print(f"plot: {args.plot}", file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from adaptlab.costs.planner import plan_config, plan_memory
    from adaptlab.costs.sizes import parse_size

    budget = parse_size(args.budget) if args.budget else None
    config, options = plan_config(args.domain, args.assignments, args.strategies,
                                  dataset=args.dataset, data=args.data, backbone=args.backbone)
    result = plan_memory(config, args.strategies, options, budget, args.processes)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.text())
    return 0


def cmd_template(args: argparse.Namespace) -> int:
    from adaptlab.plugins.registry import get_domain
    from adaptlab.templates import write_template

    if args.path and args.out and args.path != args.out:
        raise AdaptlabError(f"notebook path given twice: {args.path!r} and --out {args.out!r}")
    path = write_template(get_domain(args.domain),
                          args.path or args.out or f"{args.domain}.ipynb")
    print(f"wrote {path}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from adaptlab.explain import method_names

    if args.list_methods:
        print("\n".join(method_names()))
        return 0
    from adaptlab.explain.api import explain
    from adaptlab.run_loading import load_run

    if not args.run_dir:
        raise AdaptlabError("explain needs RUN_DIR (a finished run folder)")
    if args.method and args.method not in method_names():
        raise AdaptlabError(f"--method {args.method!r}: choose from {method_names()}")
    if args.samples is not None and args.samples < 1:
        raise AdaptlabError(f"--samples {args.samples}: explain at least one sample")
    loaded = load_run(args.run_dir, device=args.device)
    result = explain(loaded, args.method, args.index or args.samples, split=args.split,
                     checks=not args.no_checks, compare=not args.no_compare, report=False)
    from adaptlab.report import write_report

    page = write_report(result)
    used = result.result
    print(f"explained {len(result.samples)} samples with {used.method} "
          f"({used.seconds / len(result.samples):.2f} s per sample)")
    for note in used.notes:
        print(f"note: {note}")
    if result.checks:
        check = result.checks["randomisation"]
        mean = check["mean_rank_correlation"]
        print(f"randomisation check: {'passed' if check['passed'] else 'FAILED'} "
              f"(rank correlation {'undefined' if mean is None else f'{mean:.3f}'}"
              + (f"; {check['constant_maps']} constant map(s)" if check.get("constant_maps")
                 else "") + ")")
    print(f"report: {page}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from adaptlab.run_loading import load_run

    if args.batch_size is not None and args.batch_size < 1:
        raise AdaptlabError(f"--batch-size {args.batch_size}: must be at least 1")
    options = {}
    for assignment in args.assignments:
        key, sep, value = assignment.partition("=")
        if not sep:
            raise AdaptlabError(f"--set {assignment!r}: expected KEY=VALUE")
        try:  # numbers and lists as JSON (top_k=5, quantiles=[0.1,0.9]); the rest as text
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    loaded = load_run(args.run_dir, device=args.device, with_data=args.split is not None)
    result = loaded.predict(args.data, split=args.split, out=args.out, batch_size=args.batch_size,
                            progress=not args.quiet, num_workers=args.workers, options=options)
    print(f"predicted {result.count} inputs: {result.table_path}")
    for path in result.files:
        print(f"wrote {path}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} unreadable inputs, e.g. {result.skipped[0]['file']}: "
              f"{result.skipped[0]['reason']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from adaptlab.export import export_run

    summary = export_run(args.run_dir, args.out, format=args.format, merge=args.merge,
                         device=args.device)
    print(f"exported ({'merged' if summary['merged'] else 'base weights + adapter/'}): "
          f"{summary['out_dir']}")
    for name, difference in summary["max_abs_diff"].items():
        print(f"{name}: max abs difference from the run's outputs {difference:.2g} "
              f"(allowed {summary['allowed_diff']:.2g})")
    return 0


def cmd_domains(args: argparse.Namespace) -> int:
    from adaptlab.plugins.registry import discover_domains
    from adaptlab.strategies.registry import strategy_names

    found = discover_domains()
    payload = {"domains": [spec.summary() for spec in found.domains.values()],
               "strategies": strategy_names(), "errors": found.errors}
    verdicts = _strategies_for_backbone(args) if args.domain or args.backbone else None
    if verdicts is not None:
        payload["strategies_for_backbone"] = {
            "domain": args.domain, "backbone": verdicts["backbone"],
            "strategies": [{"name": name, "applies": reason is None, "reason": reason}
                           for name, reason in verdicts["verdicts"].items()]}
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    if verdicts is not None:
        print(f"strategies for {args.domain} / {verdicts['backbone']}:")
        for name, reason in verdicts["verdicts"].items():
            print(f"  {name:10s} {'applies' if reason is None else reason}")
        return 0
    for spec in found.domains.values():
        print(f"{spec.name:12s} {spec.title}: {spec.description}")
        print(f"{'':12s} datasets: {', '.join(spec.dataset_names())}")
        print(f"{'':12s} backbones: {', '.join(spec.backbone_names())}")
    print(f"strategies: {', '.join(payload['strategies'])}")
    for error in found.errors:
        print(f"failed to load plugin {error['plugin']!r}: {error['error']}", file=sys.stderr)
    return 0


def _strategies_for_backbone(args: argparse.Namespace) -> dict:
    """Every strategy's verdict on DOMAIN's backbone (built: this imports torch)."""
    from adaptlab.plugins.registry import get_domain
    from adaptlab.plugins.spec import resolve_reference
    from adaptlab.strategies.applicability import backbone_applicability

    if not args.domain:
        raise AdaptlabError("--backbone needs a domain: adaptlab domains DOMAIN --backbone NAME")
    domain = get_domain(args.domain)
    spec = domain.backbone(args.backbone or domain.default_backbone)
    backbone = resolve_reference(spec.builder)(dict(spec.options))
    return {"backbone": spec.name, "verdicts": backbone_applicability(backbone)}


def build_run_config(args: argparse.Namespace):
    from adaptlab.plugins.registry import get_domain
    from adaptlab.run import config_for
    from adaptlab.strategies.registry import get_strategy_class

    strategy = args.strategy or get_domain(args.domain).default_strategy
    fields = {key: getattr(args, key) for key in ("epochs", "seed", "device")
              if getattr(args, key) is not None}
    config = config_for(args.domain, dataset=args.dataset, data=args.data,
                        backbone=args.backbone, strategy=strategy,
                        out=args.out or f"runs/{args.domain}-{strategy}", **fields)
    return config.with_overrides(args.assignments, get_strategy_class(strategy).option_names())


def _numbers(text: str, kind, option: str) -> list:
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise AdaptlabError(f"{option} {text!r}: give numbers separated by commas") from exc


def cmd_transfer(args: argparse.Namespace) -> int:
    import dataclasses

    from adaptlab.plugins.registry import get_domain
    from adaptlab.run import config_for
    from adaptlab.strategies.registry import get_strategy_class
    from adaptlab.transfer.curve import learning_curve

    domain = get_domain(args.domain)
    target_dataset = None if args.data else (args.dataset or domain.default_dataset)
    source_dataset = args.source_dataset or (
        domain.dataset(target_dataset).source_dataset if target_dataset else None)
    if not source_dataset:
        raise AdaptlabError(f"--source-dataset: the target names no source dataset; choose "
                            f"from {domain.dataset_names()}")
    domain.dataset(source_dataset)
    fields = {key: getattr(args, key) for key in ("epochs", "device")
              if getattr(args, key) is not None}
    strategy = args.strategy or domain.default_strategy
    target = config_for(args.domain, dataset=target_dataset, data=args.data,
                        backbone=args.backbone, strategy=strategy, **fields)
    target = target.with_overrides(args.assignments, get_strategy_class(strategy).option_names())
    source = config_for(args.domain, dataset=source_dataset, backbone=target.backbone,
                        strategy=args.source_strategy, **fields)
    source = source.with_overrides(args.source_assignments,
                                   get_strategy_class(args.source_strategy).option_names())
    source = dataclasses.replace(source, backbone=source.backbone or target.backbone)
    out = args.out or f"runs/{args.domain}-transfer"
    result = learning_curve(target, source, out,
                            fractions=_numbers(args.fractions, float, "--fractions"),
                            seeds=_numbers(args.seeds, int, "--seeds"), cache_dir=args.cache,
                            progress=not args.quiet)
    from pathlib import Path

    print((Path(out) / "learning_curve.md").read_text(), end="")
    print(f"curve: {out}/learning_curve.png; source run: {result['source']['run_dir']} "
          f"({result['source']['action']})")
    return 0


def _check_before_launch(config, args: argparse.Namespace) -> None:
    """What can be refused before N processes start, refused once."""
    from pathlib import Path

    from adaptlab.config import RunConfig
    from adaptlab.engine.distributed import check_batch
    from adaptlab.engine.trackers import check_installed
    from adaptlab.run import _check_run_dir

    _check_run_dir(Path(config.out), args.resume)
    if args.resume:
        config = RunConfig.from_file(Path(config.out) / "config.json")
    check_batch(config.batch_size, args.processes)
    check_installed(config.trackers)


def cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from adaptlab.config import RunConfig
    from adaptlab.engine import distributed
    from adaptlab.engine.launch import launch
    from adaptlab.run import run

    if args.resume:
        if not args.out:
            raise AdaptlabError("--resume needs --out RUN_DIR")
        config = RunConfig(domain=args.domain, out=args.out)
        if (Path(args.out) / "config.json").is_file():
            saved = RunConfig.from_file(Path(args.out) / "config.json")
            if saved.domain != args.domain:
                raise AdaptlabError(f"--resume: {args.out} is a {saved.domain!r} run, "
                                    f"not {args.domain!r}")
    else:
        config = build_run_config(args)
    if args.processes < 1:
        raise AdaptlabError(f"--processes {args.processes}: needs at least 1")
    if args.processes > 1 and distributed.world_size() == 1:
        _check_before_launch(config, args)
        return launch(args.argv, args.processes)
    result = run(config, resume=args.resume, progress=not args.quiet)
    if not distributed.is_main():
        return 0
    if not result.metrics:
        print(f"run stopped; continue with: adaptlab run {args.domain} --out {result.run_dir} "
              "--resume")
        return 0
    print(f"run folder: {result.run_dir}")
    print(f"{result.headline}; trainable {result.costs['trainable_params']:,} of "
          f"{result.costs['total_params']:,} params")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    handler = {"domains": cmd_domains, "run": cmd_run, "template": cmd_template,
               "new-notebook": cmd_template, "explain": cmd_explain,
               "compare": cmd_compare, "transfer": cmd_transfer, "predict": cmd_predict,
               "export": cmd_export, "plan": cmd_plan,
               **{name: _command_module(name).main for name in COMMAND_MODULES}}[args.command]
    try:
        return handler(args)
    except AdaptlabError as exc:
        from adaptlab.engine import distributed

        if distributed.is_main():
            if args.debug:
                import traceback

                traceback.print_exc()
            print(f"adaptlab: error: {exc}", file=sys.stderr)
        elif not isinstance(exc, CollectiveError):
            # An error met here alone (data missing on this machine) would otherwise end the
            # run with nothing but an exit status in the launcher's log. A check every process
            # made together is reported once, by the main process.
            import socket

            print(f"adaptlab: error in process {distributed.rank()} on "
                  f"{socket.gethostname()}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("adaptlab: interrupted; resume with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
