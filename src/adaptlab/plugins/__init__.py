"""Domain plugins: light metadata (`spec`) and entry-point discovery (`registry`)."""

from adaptlab.plugins.registry import (
    DiscoveryResult,
    clear_discovery_cache,
    discover_domains,
    get_domain,
)
from adaptlab.plugins.spec import BackboneSpec, DatasetSpec, DomainSpec

__all__ = [
    "BackboneSpec",
    "DatasetSpec",
    "DiscoveryResult",
    "DomainSpec",
    "clear_discovery_cache",
    "discover_domains",
    "get_domain",
]
