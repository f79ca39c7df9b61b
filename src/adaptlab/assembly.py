"""From a config to the parts it names: the domain's defaults filled in, the data loaded, the
backbone and the strategy built. The same for a new run (:mod:`adaptlab.run`), a finished run
read back (:mod:`adaptlab.run_loading`) and the checks before either."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.config import RunConfig
from adaptlab.errors import AdaptlabError
from adaptlab.plugins.registry import get_domain
from adaptlab.plugins.spec import DomainSpec, resolve_reference
from adaptlab.strategies.registry import get_strategy_class


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    costs: dict[str, Any]
    headline: str = ""  # the held-out metric against the baseline, for a terminal


def complete_config(config: RunConfig, domain: DomainSpec) -> RunConfig:
    """Fill unset choices with the domain's defaults (an unset ``lr`` with
    :func:`default_lr`, unset strategy options with the strategy's) and range-check the
    training fields; the result is what ``config.json`` records, so a replay does not depend
    on defaults that may change. A run recorded before runs listed every strategy option is
    completed here too, with today's defaults."""
    dataset = config.dataset or (None if config.data else domain.default_dataset)
    preferred = domain.dataset(dataset).backbone if dataset else None
    strategy = config.strategy or domain.default_strategy
    backbone = config.backbone or preferred or domain.default_backbone
    changes: dict[str, Any] = {
        "dataset": dataset,
        "backbone": backbone,
        "strategy": strategy,
        "lr": config.lr if config.lr is not None else default_lr(domain, dataset, strategy, backbone),
    }
    completed = dataclasses.replace(config, **changes).validated().with_resolved_options()
    _warn_lr_outside_range(strategy, completed.lr)
    return completed


def default_lr(domain: DomainSpec, dataset: str | None, strategy: str,
               backbone: str | None = None) -> float:
    """The learning rate of a run that sets none: the rate the domain (or its dataset) chose
    for this strategy on this backbone on its validation split (:func:`strategy_rates`), else
    the domain's recipe when the strategy is the domain's default strategy, whose recipe it
    is, else the strategy's own ``default_lr`` (LoRA's rate is not full fine-tuning's)."""
    chosen = strategy_rates(domain, dataset, backbone)
    return chosen[strategy] if strategy in chosen else unchosen_lr(domain, dataset, strategy)


def unchosen_lr(domain: DomainSpec, dataset: str | None, strategy: str) -> float:
    """The rate before any choice on validation: the domain's recipe for its default
    strategy, the strategy's own default for the others (what a choice starts from)."""
    recipe = {**domain.defaults, **(domain.dataset(dataset).defaults if dataset else {})}
    if strategy == domain.default_strategy and recipe.get("lr") is not None:
        return float(recipe["lr"])
    return float(get_strategy_class(strategy).default_lr)


def strategy_rates(domain: DomainSpec, dataset: str | None,
                   backbone: str | None = None) -> dict[str, float]:
    """The rates the domain and the dataset (which wins) chose per strategy on validation,
    for runs on ``backbone`` (default: the dataset's own). A rate suits the backbone it was
    chosen on: ``defaults["strategy_lr"]`` keys a rate by ``"strategy"`` for the dataset's
    own backbone, or by ``"backbone:strategy"`` for another."""
    own = (domain.dataset(dataset).backbone if dataset else None) or domain.default_backbone
    rates: dict[str, float] = {}
    for defaults in (domain.defaults, domain.dataset(dataset).defaults if dataset else {}):
        # The qualified keys last: "backbone:strategy" says more than "strategy".
        for key, rate in sorted(defaults.get("strategy_lr", {}).items(), key=lambda kv: ":" in kv[0]):
            on, _, name = key.rpartition(":")
            if (on or own) == (backbone or own):
                rates[name] = float(rate)
    return rates


_WARNED_LR: set[tuple[str, float]] = set()


def _warn_lr_outside_range(strategy: str, lr: float) -> None:
    """Warn once per (strategy, lr) when the rate is outside the strategy's usual range: a
    setup panel completes its config at every change, a run once per check and start."""
    low, high = get_strategy_class(strategy).lr_range
    if low <= lr <= high or (strategy, lr) in _WARNED_LR:
        return
    _WARNED_LR.add((strategy, lr))
    warnings.warn(f"lr={lr:g} is outside strategy {strategy!r}'s usual range "
                  f"{low:g}..{high:g}; the run goes ahead with it", stacklevel=3)


def _loader_options(config: RunConfig, tasks: tuple[str, ...], modalities: list[str],
                    what: str) -> dict[str, Any]:
    """``seed``, plus the series options that are set (a loader of images has none).

    ``horizon`` belongs to the forecasting task; ``max_gap`` (gap filling) and ``season`` to
    any series input, forecast or classified, which the dataset's modality says."""
    options: dict[str, Any] = {"seed": config.seed}
    series = any(modality.startswith("series") for modality in modalities)
    for key, allowed, needs in (("horizon", "forecasting" in tasks, "forecasting task"),
                                ("max_gap", series, "series data"),
                                ("season", series, "series data")):
        value = getattr(config, key)
        if value is None:
            continue
        if not allowed:
            raise AdaptlabError(f"{key}={value}: {what} has no {needs}")
        options[key] = value
    return options


def load_data(config: RunConfig, domain: DomainSpec):
    if config.data:
        if not domain.user_data_loader:
            raise AdaptlabError(f"domain {domain.name!r} does not read user data (--data)")
        options = _loader_options(config, domain.tasks, domain.modalities(),
                                  f"domain {domain.name!r}")
        return resolve_reference(domain.user_data_loader)(config.data, **options)
    spec = domain.dataset(config.dataset or domain.default_dataset)
    options = _loader_options(config, (spec.task,), [spec.modality],
                              f"dataset {spec.name!r}")
    return resolve_reference(spec.loader)(options)


def load_source_data(config: RunConfig, domain: DomainSpec, target):
    """The dataset's declared source domain (same classes), or None."""
    if config.data or not domain.dataset(config.dataset).source_dataset:
        return None
    source_name = domain.dataset(config.dataset).source_dataset
    source = resolve_reference(domain.dataset(source_name).loader)({"seed": config.seed})
    if source.class_names != target.class_names:
        raise AdaptlabError(f"source dataset {source_name!r} has classes {source.class_names}, "
                            f"the target has {target.class_names}")
    return source


def build_backbone(config: RunConfig, domain: DomainSpec, data=None):
    """The configured backbone; ``data``'s grid (gridded fields) goes along as
    ``options["grid"]``, from which field networks decide whether longitude wraps."""
    spec = domain.backbone(config.backbone)
    options = {**spec.options, **data_backbone_options(spec.options, data)}
    options["init_seed"] = config.seed  # built-in networks start from it; others ignore it
    if config.backbone_weights:
        options["weights"] = config.backbone_weights
    return resolve_reference(spec.builder)(options)


def data_backbone_options(spec_options: dict[str, Any], data) -> dict[str, Any]:
    """What the data tells a backbone: its grid, and, for a backbone with an ``in_channels``
    option, the channel count a loader records in ``task_options["in_channels"]`` when its
    inputs carry more than the backbone's default (a mask channel)."""
    options: dict[str, Any] = {}
    if data is None:
        return options
    if data.coords:
        options["grid"] = data.coords
    if "in_channels" in spec_options and data.task_options.get("in_channels"):
        options["in_channels"] = int(data.task_options["in_channels"])
    return options


@dataclass
class Assembled:
    """A config completed with its domain's defaults, and what it names, built."""

    config: RunConfig
    domain: DomainSpec
    strategy: Any
    data: Any
    backbone: Any


def assemble(config: RunConfig, data=None) -> Assembled:
    """Complete ``config`` and build its strategy, data (training subset applied) and
    backbone: the same for a new run and for a finished run read back (``explain``).

    ``data`` given (a finished run's description of its data, without samples) is used as it
    is instead of loading the data."""
    domain = get_domain(config.domain)
    config = complete_config(config, domain)
    strategy = get_strategy_class(config.strategy).from_options(config.strategy_options)
    if data is None:
        data = load_data(config, domain).with_train_subset(config.train_samples, config.seed)
    return Assembled(config, domain, strategy, data, build_backbone(config, domain, data))


