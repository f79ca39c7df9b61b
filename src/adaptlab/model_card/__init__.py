"""A model card (``MODEL_CARD.md``, Hugging Face sections) for every finished run: the
backbone and its origin, the adaptation and its costs, the data and its licences, the metrics
against the unadapted baseline, the explanation checks, limits, and how to reproduce it."""

from __future__ import annotations

from adaptlab.model_card.write import (
    CARD_FILE,
    ModelCardWarning,
    front_matter,
    model_card_text,
    try_write_model_card,
    write_model_card,
)

__all__ = ["CARD_FILE", "ModelCardWarning", "front_matter", "model_card_text", "try_write_model_card",
           "write_model_card"]
