"""The embedded demo sets (see scripts/derive_demo.py): standard-library functions (source)
and HumanEval (target)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from adaptlab.data.splits import SplitDataset, stratified_split

DEMO_ROOT = Path(__file__).resolve().parent / "demo_data"


def _records(name: str) -> list[dict]:
    with gzip.open(DEMO_ROOT / name, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def load_stdlib_modules(options: dict) -> SplitDataset:
    records = _records("stdlib_functions.jsonl.gz")
    modules = sorted({r["module"] for r in records})
    items = [(r["code"], modules.index(r["module"])) for r in records]
    return SplitDataset(class_names=modules, samples=stratified_split(items, seed=options.get("seed", 0)),
                        source="Python standard library", modality="text")


def load_docstring_to_code(options: dict) -> SplitDataset:
    """Train/val: standard-library docstring -> code pairs (85/15). Test: HumanEval's 164
    problems, none of which is in the standard library set."""
    import random

    stdlib = [(r["docstring"], r["code"]) for r in _records("stdlib_functions.jsonl.gz")]
    random.Random(options.get("seed", 0)).shuffle(stdlib)
    n_val = round(0.15 * len(stdlib))
    humaneval = [(r["query"], r["code"]) for r in _records("humaneval_pairs.jsonl.gz")]
    samples = {"train": stdlib[n_val:], "val": stdlib[:n_val], "test": humaneval}
    return SplitDataset(class_names=[], samples={split: [(pair, i) for i, pair in enumerate(pairs)]
                                                 for split, pairs in samples.items()},
                        source="stdlib docstrings (train) / HumanEval (test)",
                        modality="text-pairs", task="retrieval")
