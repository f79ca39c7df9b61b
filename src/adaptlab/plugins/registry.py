"""Find installed domain plugins through the ``adaptlab.domains`` entry-point group.

Each plugin loads in isolation: an import error or invalid metadata is recorded with its
reason and the plugin is skipped; the others still load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points

from adaptlab.errors import AdaptlabError
from adaptlab.plugins.spec import DomainSpec

ENTRY_POINT_GROUP = "adaptlab.domains"


@dataclass
class DiscoveryResult:
    domains: dict[str, DomainSpec] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)


def _load_one(entry_point) -> DomainSpec:
    loaded = entry_point.load()
    spec = loaded() if callable(loaded) and not isinstance(loaded, DomainSpec) else loaded
    if not isinstance(spec, DomainSpec):
        raise TypeError(f"entry point gives {type(spec).__name__}, expected a DomainSpec")
    spec.validate()
    return spec


def discover_domains() -> DiscoveryResult:
    """Load every installed domain's metadata; never raises for a broken plugin."""
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
    return result


def get_domain(name: str) -> DomainSpec:
    """The installed domain called ``name``, or an error listing what is installed."""
    found = discover_domains()
    if name in found.domains:
        return found.domains[name]
    broken = [e for e in found.errors if e["plugin"] == name]
    if broken:
        raise AdaptlabError(f"domain {name!r} failed to load: {broken[0]['error']}")
    raise AdaptlabError(f"unknown domain {name!r}; installed: {sorted(found.domains)}")
