"""Documented Python functions out of source text: shared by the demo derivation and the
git-working-tree reader."""

from __future__ import annotations

import ast


def strip_docstring(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The function's source as code only: docstring removed, decorators dropped."""
    body = node.body[1:] if ast.get_docstring(node) is not None else node.body
    kind = ast.FunctionDef if isinstance(node, ast.FunctionDef) else ast.AsyncFunctionDef
    clone = kind(name=node.name, args=node.args, body=body or [ast.Pass()], decorator_list=[],
                 returns=node.returns, type_comment=None, type_params=[])
    return ast.unparse(ast.fix_missing_locations(clone))


def documented_functions(source: str, min_words: int = 4) -> list[dict[str, str]]:
    """``{"name", "docstring", "code"}`` for each function with a docstring of a few words."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc and len(doc.split()) >= min_words and not node.name.startswith("__"):
                out.append({"name": node.name, "docstring": doc.strip(),
                            "code": strip_docstring(node)})
    return out


def code_key(code: str) -> str:
    """Whitespace-insensitive identity, for de-duplication across splits."""
    return " ".join(code.split())
