"""Confine user-given paths to the Jupyter server's root folder.

Every path a request names is relative to the root. It is refused when it is absolute,
climbs out with ``..``, names a hidden file or folder (unless the server allows hidden
files), or leads out of the root through a symbolic link: the check is made on the fully
resolved path, so a link inside the root pointing elsewhere is caught too.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath


class PathRefused(ValueError):
    """A requested path that would leave the server's root (or is otherwise not allowed)."""


def resolve_inside(root: str | Path, relative: str, allow_hidden: bool = False) -> Path:
    """The absolute path of ``relative`` under ``root``; raises :class:`PathRefused`."""
    if not isinstance(relative, str) or not relative.strip():
        raise PathRefused("path is empty")
    if "\x00" in relative:
        raise PathRefused(f"path {relative!r} holds a NUL character")
    # Jupyter paths are API paths: forward slashes, relative to the root. A backslash or a
    # drive letter is refused rather than guessed at.
    if relative.startswith(("/", "\\")) or "\\" in relative or (len(relative) > 1
                                                                  and relative[1] == ":"):
        raise PathRefused(f"path {relative!r} is absolute; give it relative to the server root")
    parts = PurePosixPath(relative).parts
    if ".." in parts:
        raise PathRefused(f"path {relative!r} climbs out with '..'")
    if not allow_hidden and any(part.startswith(".") for part in parts):
        raise PathRefused(f"path {relative!r} names a hidden file or folder")
    real_root = Path(os.path.realpath(root))
    candidate = Path(os.path.realpath(real_root.joinpath(*parts)))
    if candidate != real_root and real_root not in candidate.parents:
        raise PathRefused(f"path {relative!r} leads outside the server root (a symbolic link)")
    return candidate


def relative_to_root(root: str | Path, path: str | Path) -> str | None:
    """``path`` as an API path relative to ``root``, or None when it lies outside."""
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    if real != real_root and real_root not in real.parents:
        return None
    return real.relative_to(real_root).as_posix()
