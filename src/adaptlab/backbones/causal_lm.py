"""Causal language models a generation task decodes with: a hub id or a local model folder,
loaded by transformers' ``AutoModelForCausalLM`` with its own tokenizer.

A dataset names its LM in ``task_options``: ``language_model`` (a hub id, e.g. ``gpt2``, or a
folder) or ``language_model_builder`` (``"module:function"`` returning such a folder, with
``language_model_options`` as its argument: a plugin's own pre-trained LM, built and cached
on first use). An exported generation model names ``language_model_config`` instead: a folder
with the LM's config and tokenizer but no weights (they are in the export's own weights file,
loaded over the structure built here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from adaptlab.errors import AdaptlabError


@dataclass
class CausalLm:
    """A causal LM and what generating with it needs."""

    module: nn.Module  # a transformers ``*ForCausalLM``
    tokenizer: Any
    source: str
    bos_token_id: int  # what a text starts with (the first input after any prefix)
    eos_token_id: int  # what ends a generated text

    @property
    def width(self) -> int:
        return self.module.get_input_embeddings().embedding_dim


def load_causal_lm(source: str | Path) -> CausalLm:
    """The LM at ``source`` (hub id or folder); refused in one line when it cannot load or
    names neither a start nor an end token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from adaptlab.backbones.weights import UNREADABLE_WEIGHTS, pretrained_failure

    hf_logging.disable_progress_bar()
    try:
        # Explicitly off: see hf_encoders (None would prompt to run a folder's own code).
        module = AutoModelForCausalLM.from_pretrained(str(source), trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=False)
    except (OSError, ValueError, *UNREADABLE_WEIGHTS) as exc:
        hint = "" if Path(source).is_dir() else "; offline, give a local model folder"
        raise AdaptlabError(f"language model {str(source)!r} could not be loaded "
                            f"({pretrained_failure(str(source), exc)}){hint}") from exc
    return _with_tokens(module, tokenizer, str(source))


def causal_lm_structure(folder: str | Path) -> CausalLm:
    """The LM whose config and tokenizer are in ``folder``, with freshly initialised weights
    for the caller to replace (an exported generation model's weights file holds them)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder = Path(folder)
    try:
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
        module = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
        if (folder / "generation_config.json").is_file():
            module.generation_config = GenerationConfig.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise AdaptlabError(f"language model structure {str(folder)!r} could not be read "
                            f"({exc})") from exc
    return _with_tokens(module, tokenizer, str(folder))


def _with_tokens(module: nn.Module, tokenizer, source: str) -> CausalLm:
    # BERT-style vocabularies start with [CLS] and end with [SEP]; GPT-style ones use one
    # end-of-text token for both.
    bos = _first_id(tokenizer, ("bos_token_id", "cls_token_id", "eos_token_id"))
    eos = _first_id(tokenizer, ("eos_token_id", "sep_token_id"))
    if bos is None or eos is None:
        raise AdaptlabError(f"language model {source!r}: its tokenizer names no "
                            "start or end token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(eos)
    return CausalLm(module=module.eval(), tokenizer=tokenizer, source=source,
                    bos_token_id=bos, eos_token_id=eos)


def language_model_for(task_options: dict[str, Any]) -> CausalLm:
    """The LM a dataset's ``task_options`` name (see the module docstring)."""
    from adaptlab.plugins.spec import resolve_reference

    if task_options.get("language_model"):
        return load_causal_lm(task_options["language_model"])
    if task_options.get("language_model_config"):
        return causal_lm_structure(task_options["language_model_config"])
    builder = task_options.get("language_model_builder")
    if not builder:
        raise AdaptlabError("the generation task needs a language model: the dataset names "
                            "none (task option 'language_model' or 'language_model_builder')")
    return load_causal_lm(resolve_reference(builder)(task_options.get(
        "language_model_options", {})))


def _first_id(tokenizer, attributes: tuple[str, ...]) -> int | None:
    for attribute in attributes:
        value = getattr(tokenizer, attribute, None)
        if value is not None:
            return int(value)
    return None
