"""The data's licences, as a model card states them: the plugin's one-line summary, then the
distinct licences and sources its per-item attribution file lists.

Attribution files differ by plugin (a list of per-file entries, an object per data file, a
licence text mapped to the models it covers), so the reader walks any JSON and collects the
``license``/``licence`` values and the ``source``/``from`` values it finds.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any
from urllib.parse import urlparse

from adaptlab.errors import AdaptlabError
from adaptlab.plugins.spec import DatasetSpec

LICENCE_KEYS = ("license", "licence")
SOURCE_KEYS = ("source", "from")
SHOWN_SOURCES = 5
SHOWN_CHARS = 200
# "CMIP6 model data produced by X is licensed under a Creative Commons ... License (url)."
_LICENSED_UNDER = re.compile(r"licen[sc]ed under (?:an? |the )?(.+?)(?: \(|\.(?:\s|$)|$)")


@dataclass
class LicenceSummary:
    """Distinct licence values and sources of one attribution file, with their counts."""

    reference: str
    licences: Counter = field(default_factory=Counter)
    sources: Counter = field(default_factory=Counter)


def read_attribution(reference: str) -> Any:
    """The JSON an ``"package:path#selector"`` reference names, narrowed to the selector:
    a top-level key of an object, or a ``file`` prefix of a list's items."""
    location, _, selector = reference.partition("#")
    package, sep, path = location.partition(":")
    if not sep or not package or not path:
        raise AdaptlabError(f"attribution {reference!r} is not of the form 'package:path'")
    try:
        data = json.loads(files(package).joinpath(path).read_text(encoding="utf-8"))
    except (ModuleNotFoundError, OSError, ValueError) as exc:
        raise AdaptlabError(f"attribution {reference!r}: cannot read ({exc})") from exc
    if not selector:
        return data
    if isinstance(data, dict):
        if selector not in data:
            raise AdaptlabError(f"attribution {reference!r}: no key {selector!r}")
        return data[selector]
    chosen = [item for item in data if str(item.get("file", "")).startswith(selector)]
    if not chosen:
        raise AdaptlabError(f"attribution {reference!r}: no item's file starts with {selector!r}")
    return chosen


def _collect(node: Any, summary: LicenceSummary) -> None:
    if isinstance(node, list):
        for item in node:
            _collect(item, summary)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        name = key.lower()
        if name in LICENCE_KEYS and isinstance(value, str):
            summary.licences[value.strip()] += 1
        elif name.rstrip("s") in LICENCE_KEYS and isinstance(value, dict):
            # {licence text: [the items it covers]} (CMIP6 models per producer's licence)
            for text, covered in value.items():
                summary.licences[text.strip()] += len(covered) if isinstance(covered, list) else 1
        elif name in SOURCE_KEYS and isinstance(value, str):
            # Per-file URLs say little one by one; their sites say where the data came from.
            summary.sources[urlparse(value).netloc or value.strip()] += 1
        else:
            _collect(value, summary)


def summarise(reference: str) -> LicenceSummary:
    """Read the attribution file ``reference`` names and count its licences and sources."""
    summary = LicenceSummary(reference)
    _collect(read_attribution(reference), summary)
    return summary


def _short(text: str) -> str:
    """A licence statement's licence ("... is licensed under X (url). Consult ..." -> X:
    CMIP6's paragraphs differ only in the producer), else the text, cut to a table cell."""
    found = _LICENSED_UNDER.search(text)
    short = found.group(1) if found else text
    return short if len(short) <= SHOWN_CHARS else short[:SHOWN_CHARS - 1].rstrip() + "…"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def licence_lines(spec: DatasetSpec, role: str = "") -> list[str]:
    """Markdown lines for one dataset: its declared licence, then what its attribution file
    lists (distinct licences with counts, sources) and where that file is."""
    label = f"{role} `{spec.name}`" if role else f"`{spec.name}`"
    declared = spec.licence or "not declared by the plugin; ask its authors before sharing"
    lines = [f"- **Licence of {label}:** {declared}"]
    if not spec.attribution:
        return lines
    summary = summarise(spec.attribution)
    shown = Counter()
    for text, count in summary.licences.items():
        shown[_short(text)] += count
    if shown:
        lines += ["", "  | licence (from the attribution file) | items |", "  |---|---|"]
        lines += [f"  | {_cell(text)} | {count} |" for text, count in shown.most_common()]
        lines.append("")
    if summary.sources:
        sources = [_cell(source) + (f" ({count} items)" if count > 1 else "")
                   for source, count in summary.sources.most_common(SHOWN_SOURCES)]
        more = len(summary.sources) - SHOWN_SOURCES
        lines.append(f"  - Sources: {'; '.join(sources)}" + (f"; and {more} more" if more > 0 else ""))
    lines.append(f"  - Per-item attribution: `{spec.attribution}`, installed with the plugin "
                 "(copyright holders, licences and sources; keep it with the data)")
    return lines


def single_licence_id(spec: DatasetSpec | None) -> str | None:
    """The licence for the card's front matter: only where the data has one licence, known
    by an identifier the Hugging Face Hub accepts; otherwise None (the text says more)."""
    if spec is None:
        return None
    candidates = {spec.licence.strip()} if spec.licence else set()
    if spec.attribution:
        candidates = set(summarise(spec.attribution).licences)
    if len(candidates) != 1:
        return None
    value = candidates.pop().lower()
    return value if value in HUB_LICENCE_IDS else None


# The Hub's licence identifiers that data in adaptlab's plugins can carry.
HUB_LICENCE_IDS = {"apache-2.0", "mit", "bsd-3-clause", "bsd-2-clause", "cc0-1.0", "cc-by-2.0",
                   "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-4.0",
                   "odc-by", "odbl", "pddl", "unlicense"}
