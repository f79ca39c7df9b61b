"""The plugin contract: what a domain declares, as plain data.

Everything here is metadata a plugin can build without importing torch. Heavy parts
(loaders, backbone builders) are named by ``"module:attribute"`` strings and imported only
when a run uses them, so discovery stays fast (jupyter-ai #1115 is the cautionary tale).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any

from adaptlab.errors import PluginError
from adaptlab.tasks.registry import task_names

_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")


def resolve_reference(reference: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise PluginError(f"reference {reference!r} is not of the form 'module:attribute'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError as exc:
        raise PluginError(f"reference {reference!r}: module has no attribute {attribute!r}") from exc


ICON_MAX_CHARS = 20_000


def package_icon(package: str, filename: str = "icon.svg") -> str:
    """The SVG icon a plugin ships beside its code (its launcher card in JupyterLab).

    An SVG drawn with ``class="jp-icon3"`` follows JupyterLab's light and dark themes."""
    from importlib.resources import files

    return files(package).joinpath(filename).read_text(encoding="utf-8")


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset a domain offers.

    ``task`` is a registered task name (:func:`adaptlab.tasks.registry.task_names`), the
    same name the loaded ``SplitDataset.task`` carries; what the inputs are (images, series)
    is ``modality``, as the loaded ``SplitDataset.modality`` says it.
    ``loader`` names a function ``(options: dict) -> adaptlab.data.SplitDataset``.
    ``source`` is ``"demo"`` (ships offline), ``"path"`` (user data via ``--data``) or
    ``"benchmark"`` (downloads when online). ``source_dataset`` names another dataset of the
    domain with the same classes from a source domain (drawings for photos, a simulator for
    observations): the zero-shot baseline builds its class prototypes there.
    ``licence`` says in one line under which terms the data may be used (the run's
    ``MODEL_CARD.md`` quotes it); ``attribution`` names the per-item licence file the plugin
    ships, as ``"package:path/in/package.json"``, optionally ``#selector`` to keep only this
    set's part: a top-level key of a JSON object, or a ``file`` prefix of a JSON list's items.
    It is read only when a model card is written.
    """

    name: str
    task: str
    description: str
    loader: str
    source: str = "demo"
    source_dataset: str | None = None
    # Training settings for this set; "strategy_lr" maps a strategy ("lora", on this set's own
    # backbone) or a "backbone:strategy" to the rate this set's validation split chose for it
    # (`adaptlab sweep --lrs`, bench/rates.py).
    defaults: dict[str, Any] = field(default_factory=dict)
    backbone: str | None = None  # the backbone this set needs, when not the domain's default
    # The loaded SplitDataset's modality ("image", "text", "series-windows", ...), declared so
    # a run can check modality-bound options (a series' max_gap) before loading anything.
    modality: str = ""
    licence: str = ""  # e.g. "CC0-1.0 and public domain (Wikimedia Commons), per file"
    attribution: str = ""  # e.g. "adaptlab_wildlife:demo_data/ATTRIBUTION.json#photos/"


@dataclass(frozen=True)
class BackboneSpec:
    """A pre-trained backbone a domain offers.

    ``builder`` names a function ``(options: dict) -> adaptlab.backbones.Backbone``.
    ``weights`` says where weights come from: ``"offline-package"``, ``"timm-hub"``,
    ``"hf-hub"`` or ``"local-file"``.
    """

    name: str
    description: str
    builder: str
    weights: str
    params_millions: float
    input_size: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DomainSpec:
    """Everything ``adaptlab domains`` lists and ``adaptlab run`` needs to start."""

    name: str
    title: str
    description: str
    tasks: tuple[str, ...]
    datasets: tuple[DatasetSpec, ...]
    backbones: tuple[BackboneSpec, ...]
    default_dataset: str
    default_backbone: str
    default_strategy: str = "head"
    user_data_loader: str | None = None
    icon: str = ""
    explain_defaults: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    data_help: str = ""  # the formats --data reads, in one line
    # Names ``(path, run: LoadedRun) -> adaptlab.predict.PredictionInputs``: new, unlabelled
    # inputs for ``adaptlab predict``, read as ``user_data_loader`` reads training data.
    predict_reader: str | None = None
    # Extra cells for the domain's template notebook: ("markdown" | "code", source) pairs.
    # They run after training, where ``result`` (the RunResult) and ``view.config`` exist.
    template_cells: tuple[tuple[str, str], ...] = ()
    # One markdown paragraph for the template's intro: the seed paper this domain follows,
    # what it claims, and what the template reproduces of it.
    seed_paper: str = ""

    def validate(self) -> None:
        """Raise PluginError naming the first field that breaks the contract."""
        if not _NAME.match(self.name):
            raise PluginError(f"domain name {self.name!r} must be lower case letters, digits, _-.")
        for attr in ("title", "description"):
            if not isinstance(getattr(self, attr), str) or not getattr(self, attr).strip():
                raise PluginError(f"domain {self.name!r}: field {attr!r} must be a non-empty string")
        if self.icon and (not self.icon.lstrip().startswith("<svg")
                          or len(self.icon) > ICON_MAX_CHARS):
            raise PluginError(f"domain {self.name!r}: field 'icon' must be SVG markup "
                              f"(starting '<svg', at most {ICON_MAX_CHARS} characters)")
        self._validate_tasks()
        for kind, items in (("dataset", self.datasets), ("backbone", self.backbones)):
            names = [item.name for item in items]
            if not names:
                raise PluginError(f"domain {self.name!r}: declares no {kind}s")
            if len(set(names)) != len(names):
                raise PluginError(f"domain {self.name!r}: duplicate {kind} names in {names}")
        for dataset in self.datasets:
            if dataset.task not in self.tasks:
                raise PluginError(f"domain {self.name!r}: dataset {dataset.name!r} has task "
                                  f"{dataset.task!r}, not one of the domain's tasks")
        for dataset in self.datasets:
            if dataset.backbone and dataset.backbone not in self.backbone_names():
                raise PluginError(f"domain {self.name!r}: dataset {dataset.name!r} names "
                                  f"backbone {dataset.backbone!r}, not declared")
            if dataset.source_dataset and dataset.source_dataset not in self.dataset_names():
                raise PluginError(f"domain {self.name!r}: dataset {dataset.name!r} names "
                                  f"source_dataset {dataset.source_dataset!r}, not declared")
        self._validate_strategy_rates()
        for kind, _ in self.template_cells:
            if kind not in ("markdown", "code"):
                raise PluginError(f"domain {self.name!r}: template cell kind {kind!r} is not "
                                  "'markdown' or 'code'")
        if self.default_dataset not in self.dataset_names():
            raise PluginError(f"domain {self.name!r}: default_dataset {self.default_dataset!r} "
                              "is not one of its datasets")
        if self.default_backbone not in self.backbone_names():
            raise PluginError(f"domain {self.name!r}: default_backbone {self.default_backbone!r} "
                              "is not one of its backbones")

    def _validate_strategy_rates(self) -> None:
        from adaptlab.strategies.registry import strategy_names  # names only: no import

        known = strategy_names()
        for where, defaults in (("defaults", self.defaults), *(
                (f"dataset {d.name!r} defaults", d.defaults) for d in self.datasets)):
            rates = defaults.get("strategy_lr", {})
            if not isinstance(rates, dict):
                raise PluginError(f"domain {self.name!r}: {where}: 'strategy_lr' must map "
                                  "strategy names to learning rates")
            for key, rate in rates.items():
                on, _, name = key.rpartition(":")  # "strategy" or "backbone:strategy"
                if on and on not in self.backbone_names():
                    raise PluginError(f"domain {self.name!r}: {where}: strategy_lr key {key!r} "
                                      f"names backbone {on!r}, not declared")
                if name not in known:
                    raise PluginError(f"domain {self.name!r}: {where}: strategy_lr names "
                                      f"{name!r}, not a registered strategy; known: {known}")
                if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
                    raise PluginError(f"domain {self.name!r}: {where}: strategy_lr[{key!r}] = "
                                      f"{rate!r} is not a positive learning rate")

    def _validate_tasks(self) -> None:
        if not self.tasks:
            raise PluginError(f"domain {self.name!r}: declares no tasks")
        known = task_names()  # names only: no task module (and no torch) is imported
        for task in self.tasks:
            if task not in known:
                raise PluginError(f"domain {self.name!r}: task {task!r} is not a registered "
                                  f"task; known tasks: {known}")

    def dataset_names(self) -> list[str]:
        return [dataset.name for dataset in self.datasets]

    def backbone_names(self) -> list[str]:
        return [backbone.name for backbone in self.backbones]

    def modalities(self) -> list[str]:
        """The declared modalities of the domain's datasets (what its user data can be)."""
        return sorted({dataset.modality for dataset in self.datasets if dataset.modality})

    def dataset(self, name: str) -> DatasetSpec:
        for dataset in self.datasets:
            if dataset.name == name:
                return dataset
        from adaptlab.errors import AdaptlabError

        raise AdaptlabError(f"unknown dataset {name!r} for domain {self.name!r}; "
                            f"choose from {self.dataset_names()}")

    def backbone(self, name: str) -> BackboneSpec:
        for backbone in self.backbones:
            if backbone.name == name:
                return backbone
        from adaptlab.errors import AdaptlabError

        raise AdaptlabError(f"unknown backbone {name!r} for domain {self.name!r}; "
                            f"choose from {self.backbone_names()}")

    def summary(self) -> dict[str, Any]:
        """The light JSON shape ``adaptlab domains --json`` prints."""
        return {"name": self.name, "title": self.title, "description": self.description,
                "tasks": list(self.tasks), "datasets": self.dataset_names(),
                "backbones": self.backbone_names()}
