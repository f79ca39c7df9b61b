"""Domain plugins: light metadata (`spec`) and entry-point discovery (`registry`)."""

from adaptlab.plugins.registry import DiscoveryResult, discover_domains, get_domain
from adaptlab.plugins.spec import BackboneSpec, DatasetSpec, DomainSpec

__all__ = [
    "BackboneSpec",
    "DatasetSpec",
    "DiscoveryResult",
    "DomainSpec",
    "discover_domains",
    "get_domain",
]
