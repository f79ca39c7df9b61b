"""One shape for every extension point that classes register into (strategies, tasks): a
decorator that adds a class under its ``name``, a lazy table of built-in modules plus an
entry-point group for third-party packages, and a lookup that imports a module only when its
name is first asked for. Listing names imports nothing, so discovery stays free of torch."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from adaptlab.errors import AdaptlabError

T = TypeVar("T", bound=type)


class LazyRegistry(Generic[T]):
    """``kind`` names what is registered in messages ("strategy", "task")."""

    def __init__(self, kind: str, entry_point_group: str, builtin_modules: dict[str, str]
                 ) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.builtin_modules = dict(builtin_modules)
        self._registered: dict[str, T] = {}

    def register(self, cls: T) -> T:
        """Class decorator: ``cls`` under ``cls.name``; a second class under a name already
        taken is an error, not a silent replacement."""
        name = getattr(cls, "name", None)
        if not name:
            raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
        taken = self._registered.get(name)
        if taken is not None and taken is not cls:
            raise AdaptlabError(f"{self.kind} name {name!r} is already registered by "
                                f"{taken.__module__}.{taken.__qualname__}; cannot register "
                                f"{cls.__module__}.{cls.__qualname__} under it")
        self._registered[name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Remove a class :meth:`register` added for a while only (a test's)."""
        self._registered.pop(name, None)

    def _module_table(self) -> dict[str, str]:
        table = dict(self.builtin_modules)
        for entry_point in entry_points(group=self.entry_point_group):
            table.setdefault(entry_point.name, entry_point.value)
        return table

    def names(self) -> list[str]:
        """Every known name, without importing any module."""
        return sorted(set(self._module_table()) | set(self._registered))

    def get(self, name: str) -> T:
        """The class registered as ``name`` (imports its module on first use)."""
        if name not in self._registered:
            module = self._module_table().get(name)
            if module is None:
                raise AdaptlabError(f"unknown {self.kind} {name!r}; choose from {self.names()}")
            importlib.import_module(module)
        if name not in self._registered:
            raise AdaptlabError(f"{self.kind} module for {name!r} did not register it")
        return self._registered[name]
