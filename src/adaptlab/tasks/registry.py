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

from typing import TYPE_CHECKING, Any

from adaptlab.registry import LazyRegistry

if TYPE_CHECKING:
    from adaptlab.data.splits import SplitDataset
    from adaptlab.tasks.base import Task

ENTRY_POINT_GROUP = "adaptlab.tasks"
TASKS: LazyRegistry = LazyRegistry("task", ENTRY_POINT_GROUP, {
    "classification": "adaptlab.tasks.classification",
    "segmentation": "adaptlab.tasks.segmentation",
    "field-regression": "adaptlab.tasks.field_regression",
    "retrieval": "adaptlab.tasks.retrieval",
    "forecasting": "adaptlab.tasks.forecasting",
    "generation": "adaptlab.tasks.generation",
})


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` the task called ``cls.name``."""
    return TASKS.register(cls)


def task_names() -> list[str]:
    """Every known task name, without importing any task module."""
    return TASKS.names()


def get_task_class(name: str) -> type[Task]:
    """The task class registered as ``name`` (imports its module on first use)."""
    return TASKS.get(name)


def make_task(data: SplitDataset, class_weighting: str = "balanced", backbone: Any = None,
              forecast_loss: str = "quantile") -> Task:
    """The task ``data.task`` names, built for this dataset and backbone.

    >>> task = make_task(data, "balanced", backbone)  # doctest: +SKIP
    """
    from adaptlab.tasks.base import TaskOptions

    options = TaskOptions(class_weighting=class_weighting, forecast_loss=forecast_loss)
    return get_task_class(data.task).from_data(data, backbone, options)
