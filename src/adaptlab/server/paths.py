"""Confine user-given paths to the Jupyter server's root folder.

Every path a request names is relative to the root. It is refused when it is absolute,
climbs out with ``..``, holds a NUL or a backslash, names a hidden file or folder (unless the
server allows hidden files), or leads out of the root through a symbolic link: the check is
made on the fully resolved path, so a link inside the root pointing elsewhere is caught too.
The same checks are made on the path URL-decoded, as far as decoding changes it, so that a
layer that decodes once more (a proxy, a front end) cannot turn an accepted path into an
escape.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

# Linux's NAME_MAX: a longer name fails deep inside the write with an OSError, after folders
# may have been made; refusing it up front leaves nothing behind.
MAX_NAME_BYTES = 255
# A value decoded more often than this is not a path anyone meant.
MAX_DECODINGS = 3


class PathRefused(ValueError):
    """A requested path that would leave the server's root (or is otherwise not allowed)."""


def _check_form(relative: str, form: str, allow_hidden: bool) -> tuple[str, ...]:
    """Refuse ``form`` (``relative`` itself or one of its URL-decodings) by what it says."""
    said = f"path {relative!r}" + (f" (URL-decoded: {form!r})" if form != relative else "")
    if "\x00" in form:
        raise PathRefused(f"{said} holds a NUL character")
    # Jupyter paths are API paths: forward slashes, relative to the root. A backslash or a
    # drive letter is refused rather than guessed at.
    if "\\" in form:
        raise PathRefused(f"{said} holds a backslash; use '/' between folders")
    if form.startswith("/") or (len(form) > 1 and form[1] == ":"):
        raise PathRefused(f"{said} is absolute; give it relative to the server root")
    parts = PurePosixPath(form).parts
    if ".." in parts:
        raise PathRefused(f"{said} climbs out with '..'")
    if not allow_hidden and any(part.startswith(".") for part in parts):
        raise PathRefused(f"{said} names a hidden file or folder")
    try:
        encoded = [part.encode("utf-8") for part in parts]
    except UnicodeEncodeError:  # a lone surrogate: JSON allows it, no file name holds it
        raise PathRefused(f"{said} holds a character no file name can hold") from None
    if any(len(name) > MAX_NAME_BYTES for name in encoded):
        raise PathRefused(f"{said} has a name longer than {MAX_NAME_BYTES} bytes")
    return parts


def resolve_inside(root: str | Path, relative: str, allow_hidden: bool = False) -> Path:
    """The absolute path of ``relative`` under ``root``; raises :class:`PathRefused`."""
    if not isinstance(relative, str) or not relative.strip():
        raise PathRefused(f"path {relative!r} is empty")
    parts = _check_form(relative, relative, allow_hidden)
    form = relative
    for _ in range(MAX_DECODINGS):
        decoded = unquote(form)
        if decoded == form:
            break
        _check_form(relative, decoded, allow_hidden)
        form = decoded
    else:
        if unquote(form) != form:
            raise PathRefused(f"path {relative!r} is URL-encoded more than "
                              f"{MAX_DECODINGS} times")
    real_root = Path(os.path.realpath(root))
    candidate = Path(os.path.realpath(real_root.joinpath(*parts)))
    if candidate != real_root and real_root not in candidate.parents:
        raise PathRefused(f"path {relative!r} leads outside the server root (a symbolic link)")
    # A visible link to a hidden folder would otherwise serve what the name check refuses.
    if not allow_hidden and any(part.startswith(".")
                                for part in candidate.relative_to(real_root).parts):
        raise PathRefused(f"path {relative!r} leads into a hidden folder (a symbolic link)")
    return candidate


def relative_to_root(root: str | Path, path: str | Path) -> str | None:
    """``path`` as an API path relative to ``root``, or None when it lies outside."""
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    if real != real_root and real_root not in real.parents:
        return None
    return real.relative_to(real_root).as_posix()
