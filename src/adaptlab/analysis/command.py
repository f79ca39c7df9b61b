"""``adaptlab analyse RUN_DIR``: what fine-tuning changed, block by block, and a suggested k."""

from __future__ import annotations

import argparse
import json

HELP = "per-block similarity of the pre-trained and fine-tuned model, and a k for freeze"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--probe", type=int, default=None,
                        help="examples in the probe batch (default 64)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="CKA a block must keep to count as unchanged (default 0.95)")
    parser.add_argument("--split", choices=("train", "val", "test"), default=None,
                        help="split the probe batch comes from (default val, else test)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def main(args: argparse.Namespace) -> int:
    from adaptlab.analysis import analyse

    result = analyse(args.run_dir, args.probe, args.threshold, args.split, args.device)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.text())
    return 0
