"""New code to predict, read as ``--data`` reads training code, labels ignored.

Classification runs (one row per input):

- a source file, or every source file under a folder (class sub-folders or none: their names
  are ignored), named by its path;
- a JSONL of ``{"code"}`` records (a ``label`` is ignored), named by their ``id`` or
  ``file:line``.

Retrieval runs (queries, and the documents they search):

- a JSONL whose records hold a ``query``, a ``code`` document, or both (a training pair: the
  code is the query's known answer); named by their ``id`` or ``file:line``;
- a ``.txt`` file: one query per non-empty line;
- a source file or folder: documents only (give it as ``--set corpus=PATH``); a Python file
  gives one document per function (its code without the docstring, as training pairs hold
  it), named ``file:line``; another file is one document.

Generation runs (code to write a docstring summary for, one input per Python function):

- a Python file, or every one under a folder: each function, method or nested function,
  named ``file:qualified_name:line``; a file that does not parse is skipped and listed, other
  source files too;
- a JSONL of ``{"code"}`` records, named by their ``id`` or ``file:line``.

Each function's code is made as the training data's was (``strip_docstring``: docstring and
decorators removed, laid out by ``ast.unparse``), so the encoder reads what it was trained
on; a record's code that parses as one function is made the same way, other code is read as
it is.

Files that are not UTF-8 text (binary files, legacy encodings), empty, or not source files
are skipped and listed, as training skips them.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptlab.errors import AdaptlabError
from adaptlab.predict.inputs import NO_LABEL, PredictionInputs, input_files
from adaptlab_code.extract import strip_docstring
from adaptlab_code.readers import SOURCE_SUFFIXES, _read_text, jsonl_lines

if TYPE_CHECKING:
    from adaptlab.run_loading import LoadedRun


def read_code_inputs(path: Path, run: LoadedRun) -> PredictionInputs:
    """The run's modality decides: code to classify, queries and code to search, or functions
    to write a docstring for."""
    if run.data.modality == "text-pairs":
        return _retrieval_inputs(path)
    if run.data.modality == "text-to-text":
        return _generation_inputs(path)
    return _classification_inputs(path)


def _classification_inputs(path: Path) -> PredictionInputs:
    if path.suffix == ".jsonl":
        records = [(name, record["code"]) for name, record in _jsonl_records(path, {"code"})]
        skipped = []
    else:
        records, skipped = _source_texts(path)
    return PredictionInputs(samples=[(code, NO_LABEL) for _, code in records],
                            names=[name for name, _ in records], modality="text",
                            skipped=skipped, source=str(path))


def _retrieval_inputs(path: Path) -> PredictionInputs:
    # Each query is paired with a document, as the runner's batches hold pairs: its own code
    # where the record gives it, else nothing (only the query's embedding is ranked).
    queries: list[tuple[str, str, str | None]] = []  # (name, query, its own code)
    corpus: list[tuple[str, str]] = []  # (name, code)
    skipped: list[dict[str, str]] = []
    if path.suffix == ".jsonl":
        for name, record in _jsonl_records(path, {"query", "code"}):
            if "code" in record:
                corpus.append((name, record["code"]))
            if "query" in record:
                queries.append((name, record["query"], record.get("code")))
    elif path.suffix == ".txt":
        text = _read_text(path, skipped) or ""
        queries = [(f"{path}:{number}", line.strip(), None)
                   for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    else:
        for name, text in _source_texts(path, skipped)[0]:
            corpus += _documents(Path(name), text, skipped)
    return PredictionInputs(
        samples=[((query, code or ""), NO_LABEL) for _, query, code in queries],
        names=[name for name, _, _ in queries], modality="text-pairs", skipped=skipped,
        source=str(path),
        details={"corpus": corpus,
                 "answers": [name if code is not None else None for name, _, code in queries]})


def _generation_inputs(path: Path) -> PredictionInputs:
    skipped: list[dict[str, str]] = []
    if path.suffix == ".jsonl":
        functions = [(name, _as_trained(record["code"]))
                     for name, record in _jsonl_records(path, {"code"})]
    elif path.is_file() and path.suffix != ".py":
        raise AdaptlabError(f"{path}: a generation run writes docstrings for Python functions; "
                            "give a .py file, a folder of them or a JSONL of {\"code\"} records")
    else:
        functions = []
        for name, text in _source_texts(path, skipped)[0]:
            functions += _functions(Path(name), text, skipped)
        if not functions:
            found = f" (skipped {skipped[0]['file']}: {skipped[0]['reason']})" if skipped else ""
            raise AdaptlabError(f"{path}: no Python function to write a docstring for{found}")
    # The target slot stays empty: the runner's batches hold (source, target) pairs.
    return PredictionInputs(samples=[((code, ""), NO_LABEL) for _, code in functions],
                            names=[name for name, _ in functions], modality="text-to-text",
                            skipped=skipped, source=str(path))


def _as_trained(code: str) -> str:
    """A record's code as training code was made, where it is one parseable function."""
    try:
        body = ast.parse(code).body
    except SyntaxError:
        return code
    if len(body) == 1 and isinstance(body[0], ast.FunctionDef | ast.AsyncFunctionDef):
        return strip_docstring(body[0])
    return code


def _functions(path: Path, text: str, skipped: list[dict[str, str]]) -> list[tuple[str, str]]:
    """``(file:qualified_name:line, code without docstring)`` of every function in a Python
    file, in source order; a file that is not Python or does not parse is skipped and listed."""
    if path.suffix != ".py":
        skipped.append({"file": str(path), "reason": f"not a Python file (suffix {path.suffix!r})"})
        return []
    tree = _parsed(path, text, skipped)
    if tree is None:
        return []
    return [(f"{path}:{name}:{node.lineno}", strip_docstring(node))
            for name, node in sorted(_qualified_functions(tree), key=lambda f: f[1].lineno)]


def _parsed(path: Path, text: str, skipped: list[dict[str, str]]) -> ast.Module | None:
    """The Python file's syntax tree, or None with the file skipped and listed."""
    try:
        return ast.parse(text)
    except SyntaxError as exc:
        skipped.append({"file": str(path), "reason": f"SyntaxError: {exc.msg} (line {exc.lineno})"})
        return None


def _qualified_functions(node: ast.AST, prefix: str = ""):
    """``(Class.method, node)`` for every function under ``node``, nested ones included (as
    the training data's ``ast.walk`` found them)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield f"{prefix}{child.name}", child
            yield from _qualified_functions(child, f"{prefix}{child.name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _qualified_functions(child, f"{prefix}{child.name}.")
        else:
            yield from _qualified_functions(child, prefix)


def _jsonl_records(path: Path, keys: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """``(name, record)`` for each record holding one of ``keys``; anything else is refused
    by its line, as training refuses it."""
    records = []
    for number, record in jsonl_lines(path):
        if not isinstance(record, dict) or not keys & set(record):
            found = sorted(record) if isinstance(record, dict) else record
            raise AdaptlabError(f"{path} line {number}: expected key "
                                f"{' or '.join(map(repr, sorted(keys)))}, found {found!r}")
        bad = [key for key in sorted(keys & set(record)) if not isinstance(record[key], str)]
        if bad:
            raise AdaptlabError(f"{path} line {number}: {bad[0]!r} is not text")
        records.append((str(record.get("id", f"{path}:{number}")), record))
    return records


def _source_texts(path: Path, skipped: list[dict[str, str]] | None = None,
                  ) -> tuple[list[tuple[str, str]], list[dict[str, str]]]:
    """``(path, text)`` of one file or of every source file under a folder (hidden ones
    left out), and the files skipped with the reason."""
    skipped = [] if skipped is None else skipped
    texts = []
    for file in input_files(path):
        if path.is_dir() and file.suffix not in SOURCE_SUFFIXES:
            skipped.append({"file": str(file),
                            "reason": f"not a source file (suffix {file.suffix or 'none'!r})"})
            continue
        text = _read_text(file, skipped)
        if text is None:
            continue
        if "\0" in text:  # valid UTF-8 can still be binary (NUL bytes)
            skipped.append({"file": str(file), "reason": "binary (holds NUL bytes)"})
        elif not text.strip():
            skipped.append({"file": str(file), "reason": "empty"})
        else:
            texts.append((str(file), text))
    return texts, skipped


def _documents(path: Path, text: str, skipped: list[dict[str, str]]) -> list[tuple[str, str]]:
    """A Python file's functions (code without docstring), or the whole file; a Python file
    that does not parse is skipped and listed."""
    if path.suffix != ".py":
        return [(str(path), text)]
    tree = _parsed(path, text, skipped)
    if tree is None:
        return []
    functions = [(f"{path}:{node.lineno}", strip_docstring(node)) for node in ast.walk(tree)
                 if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
    return functions or [(str(path), text)]
