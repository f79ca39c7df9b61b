"""The tutorials (``notebooks/``, one per core seed paper) as the launcher lists them.

A wheel carries them inside the package (``adaptlab/tutorials/``, see ``pyproject.toml``); a
source checkout installed in place reads the repository's ``notebooks/``. Listing reads the
notebooks' JSON only (no torch), so the server can list them at start.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from adaptlab.errors import AdaptlabError


def tutorials_folder() -> Path:
    packaged = Path(__file__).parent / "tutorials"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "notebooks"


def _title(notebook: dict[str, Any], fallback: str) -> str:
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "markdown":
            text = "".join(cell.get("source", ""))
            first = text.strip().splitlines()[0] if text.strip() else ""
            return first.lstrip("# ").strip() or fallback
    return fallback


def list_tutorials() -> list[dict[str, str]]:
    """``[{"name", "title", "paper", "domain"}]``, by name; a notebook without the
    ``adaptlab`` metadata is not a tutorial and is left out."""
    folder = tutorials_folder()
    found = []
    for path in sorted(folder.glob("*.ipynb")) if folder.is_dir() else []:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        meta = notebook.get("metadata", {}).get("adaptlab", {})
        if "domain" not in meta:
            continue
        found.append({"name": path.stem, "title": _title(notebook, path.stem),
                      "paper": meta.get("paper", path.stem), "domain": meta["domain"]})
    return found


def copy_tutorial(name: str, target: Path) -> Path:
    """Write tutorial ``name`` at ``target`` (never over an existing file)."""
    known = {t["name"] for t in list_tutorials()}
    if name not in known:
        raise AdaptlabError(f"tutorial {name!r} does not exist; the tutorials: {sorted(known)}")
    if target.exists():
        raise AdaptlabError(f"{target} exists; a tutorial never replaces a notebook")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tutorials_folder() / f"{name}.ipynb", target)
    return target
