"""A generation model's causal language model in the exported folder.

``language_model/`` holds the LM's config, generation config and tokenizer; its weights are
in ``model.safetensors`` (under ``language_model.``) with the encoder's and the bridge's, so
nothing is stored twice. The folder's ``config.json`` names that folder (task option
``language_model_config``, relative to the export) instead of where the run found its LM (a
user cache, a hub id): the export is self-contained, and :func:`adaptlab.export.load_exported`
builds the LM's structure from it before loading the weights.

Only the safetensors folder: greedy decoding is a loop around the LM, not one graph (see
``GenerationTask.graph_export_refusal``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from torch import nn

LANGUAGE_MODEL_DIR = "language_model"
CONFIG_OPTION = "language_model_config"


def generation_model(model: nn.Module):
    """The :class:`~adaptlab.tasks.generation.EncoderToLm` in ``model`` (a peft wrapper's
    base), or None for any other task's model."""
    from adaptlab.export.folder import is_peft_model
    from adaptlab.tasks.generation import EncoderToLm

    base = model.get_base_model() if is_peft_model(model) else model
    return base if isinstance(base, EncoderToLm) else None


def write_language_model(folder: Path, loaded) -> None:
    """``language_model/`` for a generation run; nothing for any other."""
    model = generation_model(loaded.model)
    if model is None:
        return
    target = folder / LANGUAGE_MODEL_DIR
    model.language_model.config.save_pretrained(str(target))
    model.language_model.generation_config.save_pretrained(str(target))
    model.lm.tokenizer.save_pretrained(str(target))


def exported_task_spec(loaded) -> dict[str, Any]:
    """The task spec ``config.json`` records: a generation run's LM named by the export's own
    ``language_model/`` folder."""
    from adaptlab.export.rebuild import task_spec

    spec = task_spec(loaded.data)
    if generation_model(loaded.model) is not None:
        spec["task_options"] = {CONFIG_OPTION: LANGUAGE_MODEL_DIR}
    return spec


def generation_preprocessing(loaded) -> dict[str, Any]:
    """``preprocessing.json``'s ``generation`` section: how text comes out of the model."""
    from adaptlab.tasks.generation import MAX_NEW_TOKENS

    model = generation_model(loaded.model)
    if model is None:
        return {}
    return {"generation": {
        "language_model": LANGUAGE_MODEL_DIR, "decoding": "greedy",
        "max_new_tokens": MAX_NEW_TOKENS,
        "start_token_id": model.lm.bos_token_id, "end_token_id": model.lm.eos_token_id,
        "steps": ["encode the source with the encoder's tokenizer (tokenizer/)",
                  "the bridge maps the encoder's pooled features to prefix embeddings",
                  "the language model reads [prefix, start token] and continues greedily "
                  "until the end token or max_new_tokens",
                  "decode with language_model/'s tokenizer, special tokens skipped, stripped"],
        "python": "load_exported(folder).generate(source_tokens)"}}


def with_folder_paths(section: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The config's ``adaptlab`` section with the LM's folder made a path under ``folder``."""
    options = section.get("task_spec", {}).get("task_options") or {}
    if not options.get(CONFIG_OPTION):
        return section
    section = copy.deepcopy(section)
    section["task_spec"]["task_options"][CONFIG_OPTION] = str(folder / options[CONFIG_OPTION])
    return section
