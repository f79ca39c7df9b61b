"""Key-by-key weight averaging, and the check that the ingredients can be averaged at all.

A soup (Wortsman et al. 2022, "Model soups") averages runs fine-tuned from one start: the same
pre-trained backbone and weights, the same transfer source, the same strategy shaping the same
tensors, evaluated on the same data. Runs that differ in any of those are refused by name
before anything is averaged, because their tensors mean different things even where their
shapes happen to agree.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adaptlab.errors import AdaptlabError

# What makes two runs start from the same weights.
START_FIELDS = ("domain", "backbone", "backbone_weights", "init_from", "strategy")
# What the soup is evaluated on: the first ingredient's splits, inputs and targets.
DATA_FIELDS = ("dataset", "data", "image_size", "horizon", "max_gap", "season",
               "forecast_loss")
# Strategy options that change how a run trains, not what its saved tensors mean (the
# model-soups recipe varies exactly such hyperparameters between ingredients).
TRAINING_ONLY_OPTIONS = frozenset({"layer_decay", "head_lr_scale", "head_init", "head_dropout",
                                   "norm_stats"})
# Strategies whose saved tensors do not line up entry by entry between runs.
NOT_AVERAGEABLE = {
    "adalora": "each AdaLoRA run prunes its own ranks, so entries of two runs' adapters do not "
    "correspond",
}


@dataclass
class Ingredient:
    """One finished run offered to the soup: its folder, config and metrics as saved."""

    run_dir: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    costs: dict[str, Any]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AdaptlabError(f"{path}: cannot read ({exc})") from exc
    if not isinstance(value, dict):
        raise AdaptlabError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def read_ingredient(run_dir: str | Path) -> Ingredient:
    """A finished run folder's config, metrics and costs; refuses anything else by name."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AdaptlabError(f"{run_dir}: not a folder (a soup's ingredients are finished run folders)")
    for name in ("config.json", "metrics.json"):
        if not (run_dir / name).is_file():
            raise AdaptlabError(f"{run_dir} is not a finished run ({name} missing)")
    config = _read_json(run_dir / "config.json")
    metrics = _read_json(run_dir / "metrics.json")
    if not config.get("strategy"):
        raise AdaptlabError(f"{run_dir}/config.json: field 'strategy' is missing or empty")
    final = metrics.get("final")
    if not isinstance(final, dict) or not isinstance(final.get("val"), dict):
        raise AdaptlabError(f"{run_dir}/metrics.json: field 'final.val' is missing")
    costs_path = run_dir / "costs.json"
    costs = _read_json(costs_path) if costs_path.is_file() else {}
    return Ingredient(run_dir, config, metrics, costs)


def check_same_start(ingredients: Sequence[Ingredient]) -> None:
    """Refuse ingredients that did not start from the first one's weights, or were not trained
    on its data, naming the run folder and the field that differs."""
    from adaptlab.strategies.registry import resolved_strategy_options

    first = ingredients[0]
    reason = NOT_AVERAGEABLE.get(first.config["strategy"])
    if reason:
        raise AdaptlabError(f"{first.run_dir}: strategy {first.config['strategy']!r} cannot go "
                            f"into a soup: {reason}")
    # Resolved: r=8 given and r left at its default 8 are the same start.
    first_options = resolved_strategy_options(first.config["strategy"],
                                              first.config.get("strategy_options"))
    for other in ingredients[1:]:
        for name in START_FIELDS + DATA_FIELDS:
            mine, theirs = other.config.get(name), first.config.get(name)
            if mine != theirs:
                raise AdaptlabError(f"{other.run_dir}: {name} {mine!r} differs from "
                                    f"{first.run_dir}'s {theirs!r}")
        options = resolved_strategy_options(other.config["strategy"],
                                            other.config.get("strategy_options"))
        for name in sorted(set(options) | set(first_options)):
            if name in TRAINING_ONLY_OPTIONS:
                continue
            mine, theirs = options.get(name), first_options.get(name)
            if mine != theirs:
                raise AdaptlabError(f"{other.run_dir}: strategy option {name} {mine!r} differs "
                                    f"from {first.run_dir}'s {theirs!r}")


def _digest(value: Any, sink: Any) -> None:
    """Feed ``value`` (paths, ids, numbers, arrays, tensors, dataclasses and containers of
    them) into the hash ``sink`` by content, not by a possibly truncated repr."""
    if isinstance(value, torch.Tensor):  # as bytes: numpy has no bfloat16
        sink.update(f"tensor{list(value.shape)}{value.dtype}".encode())
        sink.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif hasattr(value, "tobytes") and hasattr(value, "shape"):  # numpy arrays
        sink.update(f"array{value.shape}{value.dtype}".encode())
        sink.update(value.tobytes())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        sink.update(type(value).__name__.encode())
        for item in dataclasses.fields(value):
            _digest(getattr(value, item.name), sink)
    elif isinstance(value, list | tuple):
        sink.update(f"[{len(value)}".encode())
        for item in value:
            _digest(item, sink)
    elif isinstance(value, dict):
        sink.update(f"{{{len(value)}".encode())
        for key in sorted(value, key=repr):
            _digest(key, sink)
            _digest(value[key], sink)
    else:
        sink.update(repr(value).encode())


def split_fingerprint(data: Any, split: str) -> str:
    """A hash of one split's samples, in order."""
    sink = hashlib.sha256()
    _digest(data.samples[split], sink)
    return sink.hexdigest()


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A hash of a module's state (names, shapes, values)."""
    sink = hashlib.sha256()
    _digest(dict(module.state_dict()), sink)
    return sink.hexdigest()


def check_seeded_start(ingredients: Sequence[Ingredient], first_data: Any, first_start: str) -> None:
    """What a run's seed decides beyond training must agree with the first run's:

    - the split: the soup is chosen on the first run's val split and reported on its test
      split, so every ingredient must have held out those very samples (else one
      ingredient's training samples sit in the soup's test split), and loaders split data
      by the run's seed;
    - the starting weights: built-in backbones without pre-trained weights are initialised
      from the run's seed (``first_start`` is the first run's :func:`weights_fingerprint`).

    Only runs whose seed differs from the first's can differ, and only theirs are rebuilt."""
    from adaptlab.assembly import build_backbone, load_data
    from adaptlab.config import RunConfig
    from adaptlab.plugins.registry import get_domain

    first = ingredients[0]
    wanted = {split: split_fingerprint(first_data, split) for split in ("val", "test")}
    for other in ingredients[1:]:
        if other.config.get("seed") == first.config.get("seed"):
            continue
        config = RunConfig.from_file(other.run_dir / "config.json")
        seeds = f"{config.seed} vs {first.config.get('seed')}"
        data = load_data(config, get_domain(config.domain))
        for split, fingerprint in wanted.items():
            if split_fingerprint(data, split) != fingerprint:
                raise AdaptlabError(
                    f"{other.run_dir}: its {split} split differs from {first.run_dir}'s (the data "
                    f"is split by each run's seed, {seeds}): a soup needs runs that share a seed, "
                    "or data already split into train/val/test")
        backbone = build_backbone(config, get_domain(config.domain), data)
        if weights_fingerprint(backbone.module) != first_start:
            raise AdaptlabError(
                f"{other.run_dir}: its backbone starts from other weights than {first.run_dir}'s "
                f"(this backbone is initialised from each run's seed, {seeds}): a soup needs "
                "runs from one start")


Layout = dict[str, str]


def tensor_layout(tensors: dict[str, torch.Tensor]) -> Layout:
    """Name -> shape and dtype (``"[8, 64] float32"``): what must agree for two runs' tensors
    to be averaged key by key."""
    return {name: f"{list(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"
            for name, tensor in tensors.items()}


def check_same_layout(run_dir: Path, layout: Layout, first_dir: Path, first_layout: Layout) -> None:
    """Refuse a run whose saved tensors differ in name or shape from the first run's."""
    for name in sorted(set(first_layout) - set(layout)):
        raise AdaptlabError(f"{run_dir}: saved tensor {name!r} is missing ({first_dir} has it)")
    for name in sorted(set(layout) - set(first_layout)):
        raise AdaptlabError(f"{run_dir}: saved tensor {name!r} is not in {first_dir}'s weights")
    for name in sorted(layout):
        if layout[name] != first_layout[name]:
            raise AdaptlabError(f"{run_dir}: saved tensor {name!r} is {layout[name]}, "
                                f"{first_dir}'s is {first_layout[name]}")


def check_tensors(strategy: Any, model: torch.nn.Module, run_dirs: Sequence[Path]) -> None:
    """Every run's saved tensors have the first run's names, shapes and dtypes, and those are
    the tensors the model rebuilt from the first run's config declares."""
    first_dir = run_dirs[0]
    first = tensor_layout(strategy.final_tensors(first_dir))
    for run_dir in run_dirs[1:]:
        check_same_layout(run_dir, tensor_layout(strategy.final_tensors(run_dir)), first_dir, first)
    rebuilt = tensor_layout(strategy.saved_tensors(model))
    if rebuilt != first:
        name = sorted(set(rebuilt) ^ set(first)) or sorted(k for k in first if first[k] != rebuilt[k])
        raise AdaptlabError(f"{first_dir}: its saved tensors do not fit the model its config.json "
                            f"rebuilds (e.g. {name[0]!r})")


class TensorMean:
    """The key-by-key mean of several runs' saved tensors, added one run at a time (one
    running sum in memory, however many ingredients).

    Floating-point tensors are summed in float64 and the mean cast back to the first run's
    dtype, so a soup of identical runs reproduces the run bit for bit. Integer and boolean
    tensors (BatchNorm's ``num_batches_tracked``, masks) have no meaningful average: the first
    run's are kept. BatchNorm running statistics are averaged like any float tensor, as the
    model-soups recipe does (they are not re-estimated).

    For LoRA and the other adapter families this is the average of the adapter *parameters*
    (A with A, B with B), not of their low-rank products B @ A: the parameter average is what
    the soup of adapters means in LoRA-soups practice, and it is again a rank-r adapter the
    run's strategy loads as it is.
    """

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}  # float tensors: running float64 sums
        self._kept: dict[str, torch.Tensor] = {}  # other tensors: the first run's
        self._dtypes: dict[str, torch.dtype] = {}
        self.count = 0

    def add(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.count and set(tensors) != set(self._dtypes):
            # check_same_layout refuses this with names first; this guards direct callers
            raise AdaptlabError("soup: tensors to average have different names")
        for name, tensor in tensors.items():
            if not self.count:
                self._dtypes[name] = tensor.dtype
                if not tensor.is_floating_point():
                    self._kept[name] = tensor.detach().cpu().clone()
            if tensor.is_floating_point():
                value = tensor.detach().cpu().double()
                self._sums[name] = self._sums[name] + value if self.count else value
        self.count += 1

    def copy(self) -> TensorMean:
        """An independent copy (greedy tries a candidate on a copy of the kept soup)."""
        return copy.deepcopy(self)

    def mean(self) -> dict[str, torch.Tensor]:
        if not self.count:
            raise AdaptlabError("soup: no ingredients to average")
        return {name: (self._sums[name] / self.count).to(dtype) if name in self._sums
                else self._kept[name].clone() for name, dtype in self._dtypes.items()}
