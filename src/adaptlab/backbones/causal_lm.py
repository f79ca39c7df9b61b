"""Causal language models a generation task decodes with: a hub id or a local model folder,
loaded by transformers' ``AutoModelForCausalLM`` with its own tokenizer.

A dataset names its LM in ``task_options``: ``language_model`` (a hub id, e.g. ``gpt2``, or a
folder) or ``language_model_builder`` (``"module:function"`` returning such a folder, with
``language_model_options`` as its argument: a plugin's own pre-trained LM, built and cached
on first use).
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
    # BERT-style vocabularies start with [CLS] and end with [SEP]; GPT-style ones use one
    # end-of-text token for both.
    bos = _first_id(tokenizer, ("bos_token_id", "cls_token_id", "eos_token_id"))
    eos = _first_id(tokenizer, ("eos_token_id", "sep_token_id"))
    if bos is None or eos is None:
        raise AdaptlabError(f"language model {str(source)!r}: its tokenizer names no "
                            "start or end token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(eos)
    return CausalLm(module=module.eval(), tokenizer=tokenizer, source=str(source),
                    bos_token_id=bos, eos_token_id=eos)


def language_model_for(task_options: dict[str, Any]) -> CausalLm:
    """The LM a dataset's ``task_options`` name (see the module docstring)."""
    from adaptlab.plugins.spec import resolve_reference

    if task_options.get("language_model"):
        return load_causal_lm(task_options["language_model"])
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
