"""Find installed domain plugins through the ``adaptlab.domains`` entry-point group.

Each plugin loads in isolation: an import error or invalid metadata is recorded with its
reason and the plugin is skipped; the others still load.

Discovery runs once per process: the CLI, the server handlers and the widgets all ask for
the domains, and reading every distribution's entry points (and logging a broken plugin)
each time would be slow and noisy. :func:`clear_discovery_cache` forgets the result, for a
test or a notebook that installs a plugin while the process runs.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from adaptlab.errors import AdaptlabError
from adaptlab.plugins.spec import DomainSpec

ENTRY_POINT_GROUP = "adaptlab.domains"

logger = logging.getLogger(__name__)


@dataclass
class DiscoveryResult:
    """The domains that loaded, by name, and ``{"plugin", "error"}`` for those that did not."""

    domains: dict[str, DomainSpec] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)


def _load_one(entry_point) -> DomainSpec:
    loaded = entry_point.load()
    spec = loaded() if callable(loaded) and not isinstance(loaded, DomainSpec) else loaded
    if not isinstance(spec, DomainSpec):
        raise TypeError(f"entry point gives {type(spec).__name__}, expected a DomainSpec")
    spec.validate()
    return spec


@functools.cache
def _discover() -> DiscoveryResult:
    result = DiscoveryResult()
    for entry_point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        try:
            spec = _load_one(entry_point)
        except Exception as exc:  # noqa: BLE001 - isolation is the point: report and go on
            result.errors.append({"plugin": entry_point.name,
                                  "error": f"{type(exc).__name__}: {exc}"})
            continue
        if spec.name in result.domains:
            result.errors.append({"plugin": entry_point.name,
                                  "error": f"domain name {spec.name!r} is already registered"})
            continue
        result.domains[spec.name] = spec
    for error in result.errors:  # once per process: the result is cached
        logger.warning("adaptlab: domain plugin %r skipped: %s", error["plugin"], error["error"])
    return result


def discover_domains() -> DiscoveryResult:
    """Every installed domain's metadata; never raises for a broken plugin.

    Read once per process; the result is a copy, so a caller may change it freely.
    """
    found = _discover()
    return DiscoveryResult(dict(found.domains), [dict(error) for error in found.errors])


def clear_discovery_cache() -> None:
    """Forget the discovered domains: the next call reads the entry points again."""
    _discover.cache_clear()


def get_domain(name: str) -> DomainSpec:
    """The installed domain called ``name``, or an error listing what is installed."""
    found = discover_domains()
    if name in found.domains:
        return found.domains[name]
    broken = [e for e in found.errors if e["plugin"] == name]
    if broken:
        raise AdaptlabError(f"domain {name!r} failed to load: {broken[0]['error']}")
    raise AdaptlabError(f"unknown domain {name!r}; installed: {sorted(found.domains)}")
