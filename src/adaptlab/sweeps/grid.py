"""What a sweep varies and the run it makes of each value and seed.

A sweep varies one thing on one base config: the freeze strategy's ``k`` (``--k 0:L``: every
number of frozen blocks, ``L`` being the backbone's block count), the backbone
(``--backbones a,b,c``: the wildlife paper's frozen-backbone comparison across families) or
the learning rate (``--lrs 1e-4,1e-3,1e-2``: a strategy's rate chosen on the validation split,
which a new domain needs: one rate does not suit every strategy on every data).
Every value is checked here, before any folder exists, so bad input writes nothing: a K
outside the backbone's blocks, an unknown backbone, a strategy option a backbone cannot take,
a rate that is not a positive number.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.config import EXECUTION_FIELDS, RunConfig
from adaptlab.errors import AdaptlabError

VARIED = ("k", "backbone", "lr")
# Fields that do not change what a run learns, and the one the sweep sets per run.
NOT_SETTINGS = ("out", "seed", *EXECUTION_FIELDS)


@dataclass(frozen=True)
class SweepGrid:
    """One run per (value, seed), each ``base`` with ``varied`` set to the value."""

    base: RunConfig
    varied: str  # one of VARIED
    values: tuple[Any, ...]
    seeds: tuple[int, ...]

    def run_name(self, value: Any, seed: int) -> str:
        return f"{self.varied}={shown_value(value)}-seed={seed}"

    def config(self, value: Any, seed: int, out: str | Path) -> RunConfig:
        """The run of ``value`` at ``seed`` in ``out``: exactly what ``adaptlab run`` builds
        from the same options, so a sweep's run and a separate run are the same run."""
        folder = str(Path(out) / self.run_name(value, seed))
        if self.varied == "k":
            options = {**self.base.strategy_options, "k": value}
            return dataclasses.replace(self.base, strategy_options=options, seed=seed, out=folder)
        if self.varied == "lr":
            return dataclasses.replace(self.base, lr=value, seed=seed, out=folder)
        return dataclasses.replace(self.base, backbone=value, seed=seed, out=folder)

    def runs(self, out: str | Path) -> list[tuple[Any, int, RunConfig]]:
        """(value, seed, config) of every run, value by value."""
        return [(value, seed, self.config(value, seed, out)) for value in self.values for seed in self.seeds]

    def settings(self) -> dict[str, Any]:
        """What every run shares: a sweep continued with other settings would mix two
        experiments in one table."""
        fields = {k: v for k, v in dataclasses.asdict(self.base).items() if k not in NOT_SETTINGS}
        return comparable_settings(fields, self.varied)


def shown_value(value: Any) -> str:
    """A swept value as tables and run names show it (a rate as 0.0003, not 0.00030000000000000003)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def comparable_settings(fields: dict[str, Any], varied: str) -> dict[str, Any]:
    """A sweep's shared settings as they are compared: the strategy's options resolved (one
    given at its default and one left unset are the same setting; a ``sweep.json`` written
    before runs listed every option is read with today's defaults) and the varied one left
    out."""
    from adaptlab.strategies.registry import resolved_strategy_options

    fields = dict(fields)
    if fields.get("strategy"):
        fields["strategy_options"] = resolved_strategy_options(fields["strategy"],
                                                               fields.get("strategy_options"))
    if varied == "k":
        fields["strategy_options"] = {k: v for k, v in (fields.get("strategy_options") or {}).items()
                                      if k != "k"}
    else:
        fields.pop("lr" if varied == "lr" else "backbone", None)
    return fields


def _layer_map(config: RunConfig) -> tuple[str, Any]:
    """(backbone name, layer map) of the backbone ``config`` names, built as a run builds it:
    the layer map says how many blocks it has, and building is the first thing a run would
    fail on (a backbone whose weights cannot load)."""
    from adaptlab.assembly import build_backbone, complete_config
    from adaptlab.plugins.registry import get_domain

    domain = get_domain(config.domain)
    completed = complete_config(config, domain)
    return completed.backbone, build_backbone(completed, domain).layer_map


def _check_run(config: RunConfig, layer_map: Any, option: str) -> None:
    """The strategy's own checks of its options against this backbone, as the run makes them."""
    from adaptlab.strategies.registry import get_strategy_class

    try:
        get_strategy_class(config.strategy).from_options(config.strategy_options).check(layer_map)
    except AdaptlabError as exc:
        raise AdaptlabError(f"{option}: {exc}") from exc


def _k_value(part: str, text: str, num_blocks: int) -> int:
    part = part.strip()
    if part.upper() == "L":
        return num_blocks
    try:
        return int(part)
    except ValueError as exc:
        raise AdaptlabError(
            f"--k {text}: {part!r} is neither a number nor L; give FIRST:LAST (0:L is every K) "
            "or a comma list (0,2,L)"
        ) from exc


def parse_k(text: str, num_blocks: int, backbone: str) -> tuple[int, ...]:
    """``FIRST:LAST`` (inclusive; either end may be ``L``, the number of blocks) or a comma
    list, each K within ``0..L``; returned sorted, each once."""
    text = str(text).strip()
    if ":" in text:
        first, _, last = text.partition(":")
        low, high = _k_value(first, text, num_blocks), _k_value(last, text, num_blocks)
        if low > high:
            raise AdaptlabError(f"--k {text}: the range runs backwards; give FIRST:LAST with FIRST <= LAST")
        values = list(range(low, high + 1))
    else:
        values = [_k_value(part, text, num_blocks) for part in text.split(",") if part.strip()]
    if not values:
        raise AdaptlabError(f"--k {text!r}: give FIRST:LAST (0:L is every K) or a comma list (0,2,L)")
    outside = [value for value in values if not 0 <= value <= num_blocks]
    if outside:
        # A sweep counts frozen blocks from the bottom: negative K (from the top) would put
        # one K at two places on the table's axis.
        raise AdaptlabError(
            f"--k {text}: K={outside[0]} is outside 0..{num_blocks}; backbone {backbone!r} has "
            f"{num_blocks} blocks (L = {num_blocks})"
        )
    return tuple(sorted(set(values)))


def parse_backbones(text: str | Sequence[str], domain_name: str) -> tuple[str, ...]:
    """Backbone names of the domain, comma-separated (or a sequence), each once, in order."""
    from adaptlab.plugins.registry import get_domain

    offered = get_domain(domain_name).backbone_names()
    given = text.split(",") if isinstance(text, str) else list(text)
    names = list(dict.fromkeys(name.strip() for name in given if name.strip()))
    shown = text if isinstance(text, str) else ",".join(given)
    if not names:
        raise AdaptlabError(
            f"--backbones {shown!r}: name at least one; domain {domain_name!r} offers {offered}"
        )
    for name in names:
        if name not in offered:
            raise AdaptlabError(
                f"--backbones {shown}: {name!r} is not a backbone of domain {domain_name!r}; "
                f"choose from {', '.join(offered)}"
            )
    return tuple(names)


def _seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    seeds = tuple(dict.fromkeys(int(seed) for seed in seeds))
    if not seeds:
        raise AdaptlabError("--seeds: give at least one seed")
    if any(seed < 0 for seed in seeds):
        raise AdaptlabError(f"--seeds {','.join(map(str, seeds))}: seeds are 0 or more")
    return seeds


def parse_lrs(text: str | Sequence[float]) -> tuple[float, ...]:
    """Learning rates, comma-separated (or a sequence), each a positive number; returned
    sorted, each once."""
    shown = text if isinstance(text, str) else ",".join(str(value) for value in text)
    parts = [part.strip() for part in shown.split(",") if part.strip()]
    if not parts:
        raise AdaptlabError(f"--lrs {shown!r}: give learning rates, comma-separated (1e-4,1e-3,1e-2)")
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError as exc:
            raise AdaptlabError(f"--lrs {shown}: {part!r} is not a number") from exc
        if not (value > 0 and math.isfinite(value)):
            raise AdaptlabError(f"--lrs {shown}: {part} is not a positive learning rate")
        values.append(value)
    values = sorted(set(values))
    shown_values = [shown_value(value) for value in values]
    if len(set(shown_values)) < len(values):  # two runs would share one folder name
        raise AdaptlabError(f"--lrs {shown}: rates that agree to 6 significant digits "
                            f"({', '.join(shown_values)}); give distinct rates")
    return tuple(values)


def plan_sweep(
    base: RunConfig,
    k: str | Sequence[int] | None = None,
    backbones: str | Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    lrs: str | Sequence[float] | None = None,
) -> SweepGrid:
    """The checked grid of a ``k`` sweep (``base.strategy`` must be ``freeze``), a
    ``backbones`` sweep or an ``lrs`` sweep; raises :class:`AdaptlabError` naming the option
    and value."""
    if sum(option is not None for option in (k, backbones, lrs)) != 1:
        raise AdaptlabError("a sweep varies one thing: give --k (with --strategy freeze), "
                            "--backbones or --lrs")
    seeds = _seeds(seeds)
    if k is not None:
        return _k_grid(base, k, seeds)
    if lrs is not None:
        # The rate of each run replaces base's (config_for fills in the domain's recipe rate
        # for its default strategy; the command refuses a --set lr).
        values = parse_lrs(lrs)
        grid = SweepGrid(base, "lr", values, seeds)
        _check_run(grid.config(values[0], seeds[0], ""), _layer_map(base)[1], f"--lrs {lrs}")
        return grid
    if base.backbone is not None:
        raise AdaptlabError(f"--backbone {base.backbone} and --backbones: give one of them")
    grid = SweepGrid(base, "backbone", parse_backbones(backbones, base.domain), seeds)
    for name in grid.values:  # every backbone builds and takes the strategy before any run
        config = grid.config(name, seeds[0], "")
        _check_run(config, _layer_map(config)[1], f"--backbones {name}")
    return grid


def _k_grid(base: RunConfig, k: str | Sequence[int], seeds: tuple[int, ...]) -> SweepGrid:
    text = k if isinstance(k, str) else ",".join(str(value) for value in k)
    if base.strategy != "freeze":
        raise AdaptlabError(
            f"--k {text}: K is the freeze strategy's option; add --strategy freeze "
            f"(the strategy is {base.strategy!r})"
        )
    if "k" in base.strategy_options:
        raise AdaptlabError(f"--set k={base.strategy_options['k']}: the sweep sets k (--k); drop it")
    backbone, layer_map = _layer_map(base)
    grid = SweepGrid(base, "k", parse_k(text, layer_map.num_blocks, backbone), seeds)
    for value in grid.values:
        _check_run(grid.config(value, seeds[0], ""), layer_map, f"--k {text}")
    return grid
