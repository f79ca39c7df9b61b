"""The exported folder in the Hugging Face Hub's layout: ``config.json``, ``model.safetensors``,
``README.md`` (the model card), plus ``preprocessing.json``, for an unmerged peft run
``adapter/`` and for a generation run ``language_model/`` (its LM's config and tokenizer: see
:mod:`adaptlab.export.language_model`); ``push_to_hub``-style uploads take the folder as it is.

``config.json`` follows the Hub's conventions where they apply (``architectures``,
``model_type``, ``id2label``/``label2id``) and keeps what adaptlab needs to rebuild the model
under ``adaptlab``. ``preprocessing.json`` is what a user needs to turn raw inputs into the
model's inputs without adaptlab: no notebook re-types mean and std.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adaptlab.export.language_model import (
    exported_task_spec,
    generation_preprocessing,
    write_language_model,
)
from adaptlab.export.model_io import LOGIT_TASKS
from adaptlab.export.rebuild import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    backbone_options,
    head_options,
    task_spec,
)

PREPROCESSING_FILE = "preprocessing.json"
CARD_FILE = "README.md"
ADAPTER_DIR = "adapter"
TOKENIZER_DIR = "tokenizer"
FORMAT_VERSION = 1


def is_peft_model(model: nn.Module) -> bool:
    """A model a peft strategy wrapped: it can be exported as base weights plus adapter."""
    from peft import PeftModel

    return isinstance(model, PeftModel)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


def hf_config(loaded, merged: bool, architecture: str, inputs: list[str],
              outputs: list[str]) -> dict[str, Any]:
    """``config.json``: the Hub's keys, then ``adaptlab``'s recipe to rebuild the model."""
    data, config = loaded.data, loaded.config
    task = data.task
    built = backbone_options(loaded)
    payload: dict[str, Any] = {"architectures": [architecture], "model_type": f"adaptlab-{task}",
                               "torch_dtype": "float32"}
    if task in LOGIT_TASKS:
        payload["num_labels"] = len(data.class_names)
        payload["id2label"] = {str(i): name for i, name in enumerate(data.class_names)}
        payload["label2id"] = {name: i for i, name in enumerate(data.class_names)}
    payload["adaptlab"] = {
        "format_version": FORMAT_VERSION, "domain": config.domain, "task": task,
        "modality": data.modality, "backbone": loaded.backbone.name,
        "backbone_builder": built["builder"], "backbone_options": built["options"],
        "strategy": config.strategy, "merged": merged,
        # peft alone loads it: PeftModel.from_pretrained(base model, "adapter")
        "adapter": None if merged else ADAPTER_DIR,
        # the strategy's apply() rebuilds the structure the weights are for (lst's side network)
        "strategy_structure": loaded.strategy.keeps_structure,
        "inputs": inputs, "outputs": outputs,
        "head_options": head_options(loaded.strategy.config),
        "task_spec": exported_task_spec(loaded),
        "run_config": dataclasses.asdict(config),
    }
    return payload


def _image_preprocessing(backbone, image_size: int | None, modality: str) -> dict[str, Any]:
    pre = dataclasses.asdict(backbone.preprocessing)
    size = image_size or pre["input_size"][-1]
    pre["image_size"] = size
    if modality == "image":
        # What adaptlab's evaluation transform does (torchvision): resize, centre-crop, scale.
        pre["steps"] = [f"resize shorter side to {round(size / pre['crop_pct'])} "
                        f"({pre['interpolation']})", f"centre-crop {size}x{size}",
                        "RGB to [0, 1]", "subtract mean, divide by std (per channel)"]
    return pre


def preprocessing(loaded, inputs: list[str]) -> dict[str, Any]:
    """``preprocessing.json``: how raw inputs become the model's inputs, per modality."""
    data, backbone = loaded.data, loaded.backbone
    out: dict[str, Any] = {"modality": data.modality, "task": data.task,
                           "class_names": list(data.class_names), "inputs": inputs}
    if dataclasses.is_dataclass(backbone.preprocessing):
        out["image"] = _image_preprocessing(backbone, loaded.config.image_size, data.modality)
    if backbone.tokenizer is not None:
        out["text"] = {"tokenizer": TOKENIZER_DIR, "tokenizer_source": backbone.source,
                       "max_length": backbone.max_length, "padding": "longest",
                       "truncation": True}
    if backbone.series is not None:
        out["series"] = {**dataclasses.asdict(backbone.series),
                         "task_horizon": task_spec(data)["horizon"],
                         "context": "left-padded to context_length with an observed mask"}
    if backbone.num_points is not None:
        out["points"] = {"num_points": backbone.num_points}
    if data.coords:
        out["grid"] = data.coords
    derived = getattr(data, "preprocessing", None)
    if derived:  # taken from the training data (a climatology): new inputs need the same
        out["from_training_data"] = derived
    out.update(generation_preprocessing(loaded))
    return out


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A peft model's base task model without its adapters (peft's ``unload``, on a copy):
    the wrapped layers back to their pre-trained weights, saved modules (the head) as
    trained."""
    base = copy.deepcopy(model).unload()
    return base.state_dict()


def write_weights(folder: Path, loaded, merged: bool) -> None:
    """``model.safetensors`` (merged, or the base weights beside ``adapter/``)."""
    from safetensors.torch import save_file

    model = loaded.model
    if loaded.strategy.keeps_structure:
        state = model.state_dict()  # nothing to fold in: the model as the strategy built it
    else:
        state = loaded.strategy.merged_state_dict(model) if merged else base_state_dict(model)
    # Own contiguous copies: safetensors refuses tensors sharing storage (tied weights).
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    if not merged:
        model.save_pretrained(str(folder / ADAPTER_DIR))


def write_folder(folder: Path, loaded, merged: bool, architecture: str, inputs: list[str],
                 outputs: list[str]) -> None:
    """Every file the Hub folder holds, whatever the format."""
    write_weights(folder, loaded, merged)
    config = hf_config(loaded, merged, architecture, inputs, outputs)
    write_json(folder / CONFIG_FILE, config)
    write_json(folder / PREPROCESSING_FILE, preprocessing(loaded, inputs))
    if loaded.backbone.tokenizer is not None:
        loaded.backbone.tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))
    write_language_model(folder, loaded)
    (folder / CARD_FILE).write_text(hub_card(Path(loaded.run_dir)))


def hub_card(run_dir: Path) -> str:
    """The folder's README: the run's ``MODEL_CARD.md`` as it is (written with the Hub's
    front matter at the run's end; given it in front if an edit removed it), or for a run
    older than model cards, the card written now from its folder."""
    from adaptlab import model_card

    own = run_dir / model_card.CARD_FILE
    if not own.is_file():
        return model_card.model_card_text(run_dir)
    text = own.read_text(encoding="utf-8")
    return text if text.startswith("---\n") else model_card.front_matter(run_dir) + text
