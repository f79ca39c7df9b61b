"""``llrd``: full fine-tuning with layer-wise learning-rate decay (AutoGluon's default 0.9).

Lower blocks hold the more general features, so they move least: the top block trains at the
run's learning rate, each block below at ``lr * layer_decay**depth``, the embeddings lowest,
neck and head at the full rate. Every strategy takes ``layer_decay`` and ``reinit_top`` (the
shared options in :class:`~adaptlab.strategies.base.StrategyConfig`, applied by the base
strategy); this one is full fine-tuning with the decay switched on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from adaptlab.strategies.base import StrategyConfig
from adaptlab.strategies.full import FullFineTuning
from adaptlab.strategies.registry import register_strategy


@dataclass
class LlrdConfig(StrategyConfig):
    layer_decay: float = field(default=0.9, metadata={
        "min": 0.05, "max": 1.0,
        "help": "each block below the top trains at lr * layer_decay**depth (AutoGluon: 0.9)"})


@register_strategy
class LayerwiseDecay(FullFineTuning):
    name = "llrd"
    config_class = LlrdConfig
    description = ("full fine-tuning, lower blocks at geometrically smaller learning rates "
                   "(layer_decay, default 0.9); reinit_top re-draws the top blocks")
