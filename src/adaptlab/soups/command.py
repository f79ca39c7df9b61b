"""``adaptlab soup RUN_DIR... [--greedy] --out DIR``: average runs fine-tuned from the same
start into a new run folder (imports nothing heavy until it runs)."""

from __future__ import annotations

import argparse

HELP = "average runs fine-tuned from the same start (a uniform or greedy weight soup)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="finished run folders from the same start (backbone, weights, "
                             "strategy, data); the first one's config and data are the soup's")
    parser.add_argument("--out", required=True, help="the soup's run folder (new or empty)")
    parser.add_argument("--greedy", action="store_true",
                        help="rank the runs by validation score and keep each only where it "
                             "improves the soup's (default: the uniform average of all)")
    parser.add_argument("--device", help="where the soup is evaluated: cpu, cuda, ... "
                                         "(default: cuda when available)")


def main(args: argparse.Namespace) -> int:
    import json

    from adaptlab.soups import make_soup
    from adaptlab.soups.folder import SOUP_FILE

    out = make_soup(args.run_dirs, args.out, greedy=args.greedy, device=args.device)
    recipe = json.loads((out / SOUP_FILE).read_text())
    print(f"soup folder: {out}")
    print(f"{recipe['method']} soup of {len(recipe['kept'])} of {len(recipe['ingredients'])} runs; "
          f"val {recipe['monitor']} {recipe['val']:.4f} (best ingredient "
          f"{_best(recipe):.4f})")
    return 0


def _best(recipe: dict) -> float:
    scores = [entry["val"] for entry in recipe["ingredients"]]
    return max(scores) if recipe.get("higher_is_better", True) else min(scores)
