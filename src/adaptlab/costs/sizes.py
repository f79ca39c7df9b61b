"""Memory sizes as people write them ("8GiB", "512MB", "1.5G") and as the planner prints them.

Hand-written: a dozen lines of parsing do not justify a dependency. Units follow their names:
``KB``/``MB``/``GB``/``TB`` are powers of 1000, ``KiB``/``MiB``/``GiB``/``TiB`` powers of 1024, and
a bare ``K``/``M``/``G``/``T`` is binary too, as GPU memory is quoted (an "80G" card holds
80 GiB).
"""

from __future__ import annotations

import re

from adaptlab.errors import AdaptlabError

_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(I?B?)\s*$", re.IGNORECASE)


def parse_size(text: str, option: str = "--budget") -> int:
    """Bytes in ``text``; an unreadable size raises AdaptlabError naming ``option`` and it.

    >>> parse_size("8GiB"), parse_size("512MB"), parse_size("1.5G"), parse_size("1024")
    (8589934592, 512000000, 1610612736, 1024)
    """
    match = _SIZE.match(str(text))
    if not match or (match.group(3).upper() == "I" or
                     (match.group(3).upper() == "IB" and not match.group(2))):
        raise AdaptlabError(f"{option} {text!r}: not a memory size; write e.g. 8GiB, 512MB, "
                            "1.5G or a number of bytes")
    number, prefix, suffix = float(match.group(1)), match.group(2).upper(), match.group(3).upper()
    base = 1000 if suffix == "B" and prefix else 1024
    size = int(number * base ** _POWERS[prefix])
    if size <= 0:
        raise AdaptlabError(f"{option} {text!r}: a memory budget must be above zero")
    return size


def format_size(size: int | None) -> str:
    """``size`` bytes in binary units with three significant figures ("1.50 GiB")."""
    if size is None:
        return "-"
    value, unit = float(size), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{size} B" if unit == "B" else f"{value:.3g} {unit}"
