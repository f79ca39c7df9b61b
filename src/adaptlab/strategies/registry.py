"""The strategy registry: ``@register_strategy`` plus a lazy table of the built-in ones.

Third-party packages add strategies through the ``adaptlab.strategies`` entry-point group
(``name = "package.module"``; importing that module runs its ``@register_strategy``).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from adaptlab.errors import AdaptlabError

_BUILTIN_MODULES = {
    "full": "adaptlab.strategies.full",
    "head": "adaptlab.strategies.head",
    "freeze": "adaptlab.strategies.freeze",
    "lora": "adaptlab.strategies.lora",
}
_REGISTERED: dict[str, type] = {}


def register_strategy(cls: type) -> type:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not name:
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
    taken = _REGISTERED.get(name)
    if taken is not None and taken is not cls:
        raise TypeError(f"strategy name {name!r} is already registered by "
                        f"{taken.__module__}.{taken.__qualname__}")
    _REGISTERED[name] = cls
    return cls


def _module_table() -> dict[str, str]:
    table = dict(_BUILTIN_MODULES)
    for entry_point in entry_points(group="adaptlab.strategies"):
        table.setdefault(entry_point.name, entry_point.value)
    return table


def strategy_names() -> list[str]:
    """Every known strategy name, without importing any strategy module."""
    return sorted(set(_module_table()) | set(_REGISTERED))


def get_strategy_class(name: str) -> type:
    """The strategy class registered as ``name`` (imports its module on first use)."""
    if name not in _REGISTERED:
        module = _module_table().get(name)
        if module is None:
            raise AdaptlabError(f"unknown strategy {name!r}; choose from {strategy_names()}")
        importlib.import_module(module)
    if name not in _REGISTERED:
        raise AdaptlabError(f"strategy module for {name!r} did not register it")
    return _REGISTERED[name]
