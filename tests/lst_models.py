"""A task model with a strategy set up, as the ladder side-tuning tests build it."""

from __future__ import annotations

import copy

from adaptlab.strategies.registry import get_strategy_class
from adaptlab.tasks.classification import build_model


def prepared(backbone, strategy: str = "lst", **options):
    """A 3-class task model with ``strategy`` set up, in training mode, and the backbone
    module it was built from (the module whose parameters must stay frozen)."""
    backbone = copy.deepcopy(backbone)
    chosen = get_strategy_class(strategy).from_options(options)
    model, layer_map = build_model(backbone, 3, chosen.config)
    chosen.check(layer_map)
    model = chosen.setup(model, layer_map)
    model.train()
    chosen.train_mode(model)
    return model, backbone.module, chosen
