"""The two recipes of Wortsman et al. 2022 ("Model soups"), over the first ingredient's
rebuilt model and data.

Uniform: the mean of every ingredient. Greedy: ingredients sorted by their own validation
score, best first; each is kept only when the soup with it scores better on validation than
the soup without it (as in the authors' code; the paper's Algorithm 1 also keeps ties), so the
soup never scores below its best ingredient on validation. Scores are the run's ``monitor``
metric in the direction the task declares, the same that picks a run's best epoch
(:mod:`adaptlab.engine.trainer`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adaptlab.config import RunConfig
from adaptlab.engine.device_path import run_channels_last
from adaptlab.soups.average import TensorMean, weights_fingerprint


@dataclass
class Kitchen:
    """The first ingredient's model, rebuilt as a new run builds it (so the strategy knows the
    tensors it declares and saves), with its task and evaluation loaders."""

    run_dir: Path
    config: RunConfig
    data: Any
    strategy: Any
    task: Any
    model: nn.Module
    loaders: dict[str, Any]
    device: torch.device
    start: str  # weights_fingerprint of the backbone before adaptation

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """Put saved (or averaged) tensors into the model, through the strategy's own loader."""
        self.strategy.load_saved(self.model, tensors)

    def evaluate(self, split: str) -> dict[str, Any]:
        return self.task.evaluate(self.model, _on_device(self.loaders[split], self.device))

    def score(self, metrics: dict[str, Any]) -> float:
        return float(metrics[self.task.monitor])

    def improves(self, value: float, best: float) -> bool:
        return value > best if self.task.higher_is_better else value < best


def _on_device(loader, device: torch.device) -> Iterator[tuple[Any, Any]]:
    from adaptlab.tasks.base import move_to

    for inputs, labels in loader:
        yield move_to(inputs, device), (labels.to(device) if torch.is_tensor(labels) else labels)


def open_kitchen(run_dir: Path, device: str | None = None) -> Kitchen:
    """Rebuild ``run_dir``'s task model with its strategy set up as for training (its weights
    are loaded later, averaged), and loaders over its splits, unaugmented."""
    from torch.utils.data import DataLoader

    from adaptlab.assembly import assemble
    from adaptlab.data.splits import SPLITS
    from adaptlab.data.torch_datasets import make_torch_dataset
    from adaptlab.tasks.registry import make_task

    parts = assemble(RunConfig.from_file(run_dir / "config.json"))
    config, data, strategy = parts.config, parts.data, parts.strategy
    task = make_task(data, config.class_weighting, parts.backbone, config.forecast_loss)
    start = weights_fingerprint(parts.backbone.module)
    model, layer_map = task.build_model(parts.backbone, strategy.config)
    if config.init_from:  # a transfer run starts from its source run's weights, as in training
        from adaptlab.transfer.init_weights import load_source_weights

        load_source_weights(model, layer_map, config.init_from, data.class_names or None)
    model = strategy.setup(model, layer_map)
    target = torch.device(device) if device else \
        torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(target).eval()
    run_channels_last(model, config, target)  # as the ingredients trained and load_run reads
    options = {"image_size": config.image_size, "seed": config.seed}
    loaders = {}
    for split in SPLITS:
        dataset = make_torch_dataset(data, split, parts.backbone, False, options)
        loaders[split] = DataLoader(dataset, batch_size=config.batch_size, shuffle=False,
                                    num_workers=config.num_workers,
                                    collate_fn=getattr(dataset, "collate", None))
    return Kitchen(run_dir, config, data, strategy, task, model, loaders, target, start)


@dataclass
class Recipe:
    """What a recipe made: the averaged tensors and the validation scores behind them."""

    method: str
    tensors: dict[str, torch.Tensor]
    val: float
    scores: list[tuple[Path, float]] = field(default_factory=list)  # each ingredient alone
    kept: list[Path] = field(default_factory=list)


def _val_of(kitchen: Kitchen, tensors: dict[str, torch.Tensor]) -> float:
    kitchen.load(tensors)
    return kitchen.score(kitchen.evaluate("val"))


def ingredient_scores(kitchen: Kitchen, run_dirs: list[Path]) -> list[tuple[Path, float]]:
    """Each ingredient's validation score, evaluated here (same device, same loaders as the
    soup's), in the order given."""
    return [(run_dir, _val_of(kitchen, kitchen.strategy.final_tensors(run_dir)))
            for run_dir in run_dirs]


def uniform_soup(kitchen: Kitchen, run_dirs: list[Path]) -> Recipe:
    scores = ingredient_scores(kitchen, run_dirs)
    mean = TensorMean()
    for run_dir in run_dirs:
        mean.add(kitchen.strategy.final_tensors(run_dir))
    tensors = mean.mean()
    return Recipe("uniform", tensors, _val_of(kitchen, tensors), scores, list(run_dirs))


def greedy_soup(kitchen: Kitchen, run_dirs: list[Path]) -> Recipe:
    scores = ingredient_scores(kitchen, run_dirs)
    # Best first; a stable sort keeps the order given among equal scores.
    ranked = sorted(scores, key=lambda pair: pair[1], reverse=kitchen.task.higher_is_better)
    kept_mean = TensorMean()
    kept_mean.add(kitchen.strategy.final_tensors(ranked[0][0]))
    kept, best = [ranked[0][0]], ranked[0][1]
    for run_dir, _ in ranked[1:]:
        trial = kept_mean.copy()
        trial.add(kitchen.strategy.final_tensors(run_dir))
        value = _val_of(kitchen, trial.mean())
        if kitchen.improves(value, best):
            kept_mean, best = trial, value
            kept.append(run_dir)
    return Recipe("greedy", kept_mean.mean(), best, scores, kept)
