"""The formats users keep code in.

- a folder with one sub-folder per label holding source files -> classification;
- a JSONL file of ``{"code", "label"}`` (classification) or ``{"query", "code"}`` (retrieval);
- a git working tree (has ``.git``): its documented Python functions as docstring -> code
  retrieval pairs, files listed by ``git ls-files`` so ignored files stay out.

Files that are not valid UTF-8 are skipped with a warning naming them and counted. Pairs or
functions whose code appears twice are kept once, so nothing sits in two splits.
"""

from __future__ import annotations

import json
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adaptlab.data.splits import SplitDataset, stratified_split
from adaptlab.errors import AdaptlabError
from adaptlab_code.extract import code_key, documented_functions

SOURCE_SUFFIXES = {".py", ".java", ".js", ".ts", ".go", ".rb", ".php", ".c", ".h", ".cc",
                   ".cpp", ".cs", ".rs", ".kt", ".scala", ".swift", ".sh"}


def read_code_data(path: str | Path, seed: int = 0) -> SplitDataset:
    path = Path(path)
    if not path.exists():
        raise AdaptlabError(f"data path {path} does not exist")
    if path.is_file():
        if path.suffix != ".jsonl":
            raise AdaptlabError(f"data file {path}: expected a .jsonl file or a folder")
        return read_jsonl(path, seed)
    if (path / ".git").exists():
        return read_git_tree(path, seed)
    return read_labelled_folder(path, seed)


def _read_text(path: Path, skipped: list[dict[str, str]]) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
        reason = "a binary file (NUL bytes), not source text" if "\x00" in text else None
    except UnicodeDecodeError as exc:
        text, reason = None, (f"not valid UTF-8 (byte {exc.start}: "
                              f"{exc.object[exc.start:exc.start + 1]!r})")
    if reason is None:
        return text
    skipped.append({"file": str(path), "reason": reason})
    warnings.warn(f"skipping {path}: {reason}", stacklevel=3)
    return None


def _retrieval(pairs: list[tuple[str, str]], seed: int, source: str,
               skipped: list[dict[str, str]]) -> SplitDataset:
    unique, seen = [], set()
    for query, code in pairs:
        if code_key(code) not in seen:
            seen.add(code_key(code))
            unique.append((query, code))
    if len(unique) < 10:
        raise AdaptlabError(f"{source}: {len(unique)} distinct query/code pairs; retrieval needs "
                            "at least 10")
    split = stratified_split([(pair, 0) for pair in unique], seed=seed)
    samples = {name: [(pair, i) for i, (pair, _) in enumerate(items)]
               for name, items in split.items()}
    return SplitDataset(class_names=[], samples=samples, skipped=skipped, source=source,
                        modality="text-pairs", task="retrieval")


def jsonl_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """Each non-blank line's number and parsed value; a line that is not JSON is refused by
    its number."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AdaptlabError(f"{path}: not valid UTF-8 (byte {exc.start}); JSONL is UTF-8 "
                            "text") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise AdaptlabError(f"{path} line {number}: not JSON ({exc.msg})") from exc


def read_jsonl(path: Path, seed: int) -> SplitDataset:
    records = []
    for number, record in jsonl_lines(path):
        if not isinstance(record, dict) or "code" not in record or not (
                {"label", "query"} & set(record)):
            raise AdaptlabError(f"{path} line {number}: expected keys 'code' and 'label' or "
                                f"'query', found {sorted(record) if isinstance(record, dict) else record!r}")
        records.append(record)
    if not records:
        raise AdaptlabError(f"{path} holds no records")
    if "query" in records[0]:
        return _retrieval([(r["query"], r["code"]) for r in records], seed, str(path), [])
    labels = sorted({str(r["label"]) for r in records})
    if len(labels) < 2:
        raise AdaptlabError(f"{path}: one label ({labels[0]!r}); classification needs two or more")
    items, seen = [], set()
    for r in records:
        if code_key(r["code"]) not in seen:
            seen.add(code_key(r["code"]))
            items.append((r["code"], labels.index(str(r["label"]))))
    return SplitDataset(class_names=labels, samples=stratified_split(items, seed=seed),
                        source=str(path), modality="text")


def read_labelled_folder(root: Path, seed: int) -> SplitDataset:
    labels = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(labels) < 2:
        raise AdaptlabError(f"data folder {root} has {len(labels)} label folder(s); "
                            "classification needs at least two")
    items, skipped, seen = [], [], set()
    for index, label in enumerate(labels):
        for path in sorted((root / label).rglob("*")):
            if path.is_file() and path.suffix in SOURCE_SUFFIXES:
                text = _read_text(path, skipped)
                if text is not None and text.strip() and code_key(text) not in seen:
                    seen.add(code_key(text))
                    items.append((text, index))
    if not items:
        first = f" ({skipped[0]['file']}: {skipped[0]['reason']})" if skipped else ""
        raise AdaptlabError(f"data folder {root}: no readable source files{first}")
    empty = sorted(set(range(len(labels))) - {label for _, label in items})
    if empty:  # else the run trains a class it never sees
        raise AdaptlabError(f"data folder {root}: label folder {labels[empty[0]]!r} has no "
                            "readable source files")
    return SplitDataset(class_names=labels, samples=stratified_split(items, seed=seed),
                        skipped=skipped, source=str(root), modality="text")


def read_git_tree(root: Path, seed: int) -> SplitDataset:
    try:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "*.py"], check=True,
                                capture_output=True, text=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise AdaptlabError(f"{root}: cannot list files with git ({exc})") from exc
    pairs, skipped = [], []
    for name in listed:
        path = root / name
        text = _read_text(path, skipped) if path.is_file() else None
        if text is None:
            continue
        try:
            functions = documented_functions(text)
        except SyntaxError as exc:
            skipped.append({"file": str(path), "reason": f"SyntaxError: {exc.msg} (line {exc.lineno})"})
            continue
        pairs += [(f["docstring"], f["code"]) for f in functions]
    return _retrieval(pairs, seed, str(root), skipped)
