"""Attribution methods, one registry: ``@register_method`` (after timm's ``@register_model``).

A method declares what it can explain (``unsupported``), what it needs from the model
(``needs_clean_graph`` sends it through the pre-flight patcher) and where to route when it
cannot run (``fallback``). Captum and SHAP are imported only when a method runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from adaptlab.errors import AdaptlabError

_METHODS: dict[str, type[AttributionMethod]] = {}


def register_method(cls: type[AttributionMethod]) -> type[AttributionMethod]:
    _METHODS[cls.name] = cls
    return cls


def unregister_method(name: str) -> None:
    """Remove a method :func:`register_method` added (one registered for a while only)."""
    _METHODS.pop(name, None)


@dataclass
class MethodContext:
    """What a method receives: the target, the module to explain (possibly a patched copy),
    the rows one forward/backward may hold (the memory plan) and user settings."""

    target: Any  # ExplainTarget
    score: torch.nn.Module
    rows: int
    settings: dict[str, Any] = field(default_factory=dict)
    others: list = field(default_factory=list)  # every explained sample (SHAP backgrounds)


class AttributionMethod:
    name: ClassVar[str] = ""
    library: ClassVar[str] = ""
    description: ClassVar[str] = ""
    space: ClassVar[str] = "input"  # or "features": returns maps, not input-shaped values
    fallback: ClassVar[str | None] = "integrated_gradients"
    needs_clean_graph: ClassVar[bool] = False  # module hooks that in-place ops break
    one_sample: ClassVar[bool] = False  # explains one sample per call
    reads_inputs: ClassVar[bool] = True  # False when it re-reads the raw sample (text)

    def unsupported(self, target) -> str | None:
        """Why this method cannot explain ``target`` (None when it can)."""
        return None

    def attribute(self, ctx: MethodContext, samples: list, targets: list[int]) -> torch.Tensor:
        raise NotImplementedError


def _load_builtin() -> None:
    from adaptlab.explain.methods import captum_methods, shap_methods  # noqa: F401


def get_method(name: str) -> AttributionMethod:
    _load_builtin()
    if name not in _METHODS:
        raise AdaptlabError(f"unknown attribution method {name!r}; choose from {method_names()}")
    return _METHODS[name]()


def method_names() -> list[str]:
    _load_builtin()
    return sorted(_METHODS)
