"""Learning curves of transfer (source pre-training, then the target) against the control
(the target alone, same settings), over target fractions and seeds, for every installed
domain whose demo names a source dataset. One run, side by side.

    python bench/transfer_curves.py [--domains weather,pointcloud] [--seeds 0,1,2]
        [--fractions 0.05,0.1,0.2,0.5,1] [--epochs N]

Each domain's curve is its own section of BENCHMARKS.md (one run of that domain).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write_section  # noqa: E402

# Per domain: the settings both arms share (small images keep the CPU run short).
# "domain" uses the domain's default dataset as the target; "domain:dataset" names another.
SETTINGS = {"wildlife": {"image_size": 96}, "medical": {}, "weather": {},
            "weather:scenario-e1": {}, "pointcloud": {}}
INTRO = ("`adaptlab transfer` on the demos that name a source dataset: transfer starts from the "
         "source run's weights (the backbone, and the head: the classes are the same), the "
         "control from the backbone's own starting weights (pre-trained, or the built-in "
         "networks' random initialisation); both train on the same target subset for the same "
         "epochs.")


def main() -> None:
    from adaptlab.plugins.registry import discover_domains
    from adaptlab.run import config_for
    from adaptlab.transfer.curve import learning_curve

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--fractions", default="0.05,0.1,0.2,0.5,1")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of every run (default: each dataset's own)")
    parser.add_argument("--strategy", default="full")
    parser.add_argument("--domains", default=",".join(SETTINGS))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    fractions = [float(f) for f in args.fractions.split(",")]
    domains = discover_domains().domains
    with tempfile.TemporaryDirectory() as tmp:
        for entry in args.domains.split(","):
            settings = SETTINGS.get(entry, {})
            name, _, dataset = entry.partition(":")
            if name not in domains:
                print(f"{name}: not installed, skipped", file=sys.stderr)
                continue
            domain = domains[name]
            target_set = dataset or domain.default_dataset
            source_set = domain.dataset(target_set).source_dataset
            common = {"device": "cpu", **settings,
                      **({"epochs": args.epochs} if args.epochs else {})}
            target = config_for(name, dataset=target_set, strategy=args.strategy, **common)
            source = config_for(name, dataset=source_set, strategy="full", **common)
            backbone = target.backbone or domain.dataset(target_set).backbone or \
                domain.default_backbone
            target = dataclasses.replace(target, backbone=backbone)
            source = dataclasses.replace(source, backbone=backbone)
            started = time.perf_counter()
            folder = Path(tmp) / entry.replace(":", "-")
            result = learning_curve(target, source, folder, fractions, seeds,
                                    cache_dir=Path(tmp) / "cache", progress=False)
            seconds = time.perf_counter() - started
            table = (folder / "learning_curve.md").read_text()
            body = (
                f"## Transfer learning curve: {name}, `{source_set}` -> `{target_set}` (cpu)"
                f"\n\n{machine()}. {INTRO}\n\n{table}\n"
                f"Target strategy `{args.strategy}`, source `full`, {target.epochs} epochs on "
                f"the target, {source.epochs} on the source, "
                f"backbone `{target.backbone}`, settings {settings or 'the domain defaults'}; "
                f"{len(result['points'])} target runs and one source run in {seconds:.0f} s.\n")
            write_section(f"transfer-curves-{entry.replace(':', '-')}", body)
            print(body)


if __name__ == "__main__":
    main()
