"""The task registry: ``@register_task`` plus a lazy table of the built-in tasks.

A task's name is the one vocabulary for what a dataset is for: ``SplitDataset.task``,
``DatasetSpec.task``, ``DomainSpec.tasks``, ``metrics.json`` and ``adaptlab domains --json``
all use it. What kind of input the task reads (images, series, point clouds) is the
dataset's ``modality``, not part of the task name.

Listing the names imports no task module (and so no torch): plugin discovery validates a
domain's task names against :func:`task_names`. Third-party packages add tasks through the
``adaptlab.tasks`` entry-point group (``name = "package.module"``; importing that module runs
its ``@register_task``).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from adaptlab.errors import AdaptlabError

if TYPE_CHECKING:
    from adaptlab.data.splits import SplitDataset
    from adaptlab.tasks.base import Task

ENTRY_POINT_GROUP = "adaptlab.tasks"
_BUILTIN_MODULES = {
    "classification": "adaptlab.tasks.classification",
    "segmentation": "adaptlab.tasks.segmentation",
    "field-regression": "adaptlab.tasks.field_regression",
    "retrieval": "adaptlab.tasks.retrieval",
    "forecasting": "adaptlab.tasks.forecasting",
}
_REGISTERED: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` the task called ``cls.name``.

    A second class under a name already taken is an error, not a silent replacement.
    """
    name = getattr(cls, "name", None)
    if not name:
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
    taken = _REGISTERED.get(name)
    if taken is not None and taken is not cls:
        raise AdaptlabError(f"task name {name!r} is already registered by "
                            f"{taken.__module__}.{taken.__qualname__}; cannot register "
                            f"{cls.__module__}.{cls.__qualname__} under it")
    _REGISTERED[name] = cls
    return cls


def _module_table() -> dict[str, str]:
    table = dict(_BUILTIN_MODULES)
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        table.setdefault(entry_point.name, entry_point.value)
    return table


def task_names() -> list[str]:
    """Every known task name, without importing any task module."""
    return sorted(set(_module_table()) | set(_REGISTERED))


def get_task_class(name: str) -> type[Task]:
    """The task class registered as ``name`` (imports its module on first use)."""
    if name not in _REGISTERED:
        module = _module_table().get(name)
        if module is None:
            raise AdaptlabError(f"no task implementation for {name!r}; known tasks: "
                                f"{task_names()}")
        importlib.import_module(module)
    if name not in _REGISTERED:
        raise AdaptlabError(f"task module for {name!r} did not register it")
    return _REGISTERED[name]


def make_task(data: SplitDataset, class_weighting: str = "balanced", backbone: Any = None,
              forecast_loss: str = "quantile") -> Task:
    """The task ``data.task`` names, built for this dataset and backbone.

    >>> task = make_task(data, "balanced", backbone)  # doctest: +SKIP
    """
    from adaptlab.tasks.base import TaskOptions

    options = TaskOptions(class_weighting=class_weighting, forecast_loss=forecast_loss)
    return get_task_class(data.task).from_data(data, backbone, options)
