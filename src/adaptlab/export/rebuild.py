"""An exported folder back as a plain PyTorch module, from its ``config.json`` alone.

No run folder, no training data and no strategy: the backbone comes from the builder and
options the export recorded, the task's model from the recorded task spec (class names, grid,
target shape), and every tensor from ``model.safetensors``, loaded strictly. A task reads its
training data only for shapes and class weights (which a model for inference does not need),
so a one-sample stand-in dataset carries the shapes.

An unmerged adapter export (``"adapter": "adapter"`` in the config) gets the adapter applied
with peft itself, as anyone with peft would load it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from adaptlab.errors import AdaptlabError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def backbone_options(loaded) -> dict[str, Any]:
    """The builder and options :func:`adaptlab.assembly.build_backbone` used for the run."""
    from adaptlab.assembly import data_backbone_options

    spec = loaded.domain.backbone(loaded.config.backbone)
    options = {**spec.options, **data_backbone_options(spec.options, loaded.data)}
    options["init_seed"] = loaded.config.seed
    if loaded.config.backbone_weights:
        options["weights"] = loaded.config.backbone_weights
    return {"builder": spec.builder, "options": options}


def task_spec(data) -> dict[str, Any]:
    """What the task's constructor reads from the data, without the data."""
    train = data.samples.get("train") or []
    first_input, first_target = train[0] if train else (None, None)
    return {"task": data.task, "modality": data.modality, "class_names": list(data.class_names),
            "coords": data.coords, "task_options": data.task_options,
            # field regression sizes its head from a target; forecasting reads a window's horizon
            "target_shape": list(np.shape(first_target)) if first_target is not None else [],
            "horizon": getattr(first_input, "horizon", None)}


def head_options(strategy_config) -> dict[str, Any]:
    """The options that shape the task head (shared by every strategy's config)."""
    from adaptlab.strategies.base import StrategyConfig

    return {f.name: asdict(strategy_config)[f.name] for f in fields(StrategyConfig)}


def _stand_in_data(spec: dict[str, Any]):
    from adaptlab.data.splits import SplitDataset

    sample = (SimpleNamespace(horizon=spec.get("horizon")),
              np.zeros(spec.get("target_shape") or (), dtype=np.float32))
    return SplitDataset(spec["class_names"], {"train": [sample], "val": [], "test": []},
                        modality=spec["modality"], task=spec["task"], coords=spec["coords"],
                        task_options=spec["task_options"])


def build_plain_model(section: dict[str, Any]) -> nn.Module:
    """The task model, as the run built it before its strategy applied (after it, for a
    strategy whose structure stays: ``strategy_structure``), with the backbone's starting
    weights (replaced by the caller)."""
    from adaptlab.plugins.spec import resolve_reference
    from adaptlab.strategies.base import StrategyConfig
    from adaptlab.tasks.registry import make_task

    backbone = resolve_reference(section["backbone_builder"])(dict(section["backbone_options"]))
    run_config = section["run_config"]
    task = make_task(_stand_in_data(section["task_spec"]), "none", backbone,
                     run_config.get("forecast_loss", "quantile"))
    model, layer_map = task.build_model(backbone, StrategyConfig(**section["head_options"]))
    if section.get("strategy_structure"):
        from adaptlab.strategies.registry import get_strategy_class, recorded_strategy_options

        strategy = get_strategy_class(section["strategy"]).from_options(
            recorded_strategy_options(section["strategy"], run_config.get("strategy_options")))
        model = strategy.apply(model, layer_map)
    return model


def read_export_config(folder: Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AdaptlabError(f"{path}: not an adaptlab export ({exc})") from exc
    if "adaptlab" not in config:
        raise AdaptlabError(f"{path}: not an adaptlab export (no 'adaptlab' section)")
    return config


def load_exported(folder: str | Path, device: str = "cpu") -> nn.Module:
    """The exported model, in eval mode on ``device``: the plain task model with
    ``model.safetensors`` loaded strictly, and for an unmerged adapter export the adapter
    applied by peft (a ``PeftModel``).

    >>> model = load_exported("exports/lora")  # doctest: +SKIP
    >>> logits = model(pixel_values)  # doctest: +SKIP
    """
    from safetensors.torch import load_file

    from adaptlab.export.language_model import with_folder_paths

    folder = Path(folder)
    section = with_folder_paths(read_export_config(folder)["adaptlab"], folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise AdaptlabError(f"{folder}: no {WEIGHTS_FILE}")
    model = build_plain_model(section)
    model.load_state_dict(load_file(str(weights)), strict=True)
    if section.get("adapter"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(folder / section["adapter"]))
    model = model.to(torch.device(device)).eval()
    # In the layout the run trained in (see run_channels_last), so that it gives the run's
    # own outputs.
    from adaptlab.config import RunConfig
    from adaptlab.engine.device_path import run_channels_last

    run_channels_last(model, RunConfig.from_recorded(section["run_config"]),
                      torch.device(device))
    return model
