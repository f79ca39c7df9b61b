"""The ``bridge`` strategy: eP-ALM (Shukor et al. 2023, *eP-ALM: Efficient Perceptual
Augmentation of Language Models*; reference code mshukor/eP-ALM).

A frozen encoder and a frozen causal language model, joined by one trainable linear
projection of the encoder's pooled features into the LM's input embedding space and one
trainable soft token; the LM reads ``[soft token, projected features, start token, ...]``.
Everything else stays frozen (more than 99 % of the parameters with MiniLM and the code
domain's docstring LM). The paper injects the [CLS] tokens of several encoder layers into
several LM layers; this is its simplest form (one feature, at the input), which its abstract
describes.

Only the generation task's model (:class:`adaptlab.tasks.generation.EncoderToLm`) has an
encoder and an LM to join; any other task model is refused by name.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from adaptlab.backbones.layer_map import LayerMap
from adaptlab.errors import AdaptlabError
from adaptlab.strategies.base import Strategy, StrategyConfig, set_requires_grad
from adaptlab.strategies.registry import register_strategy


@dataclass
class BridgeConfig(StrategyConfig):
    init_seed: int = field(default=0, metadata={
        "min": 0, "max": 2**31 - 1,
        "help": "seed of the projection's and the soft token's initial values"})


class Bridge(nn.Module):
    """Pooled encoder features ``[B, encoder_width]`` -> ``[B, 2, lm_width]``: the soft
    token, then the projected features."""

    def __init__(self, encoder_width: int, lm_width: int, token_scale: float) -> None:
        super().__init__()
        self.projection = nn.Linear(encoder_width, lm_width)
        # At the scale of the LM's own token embeddings, so the frozen LM starts from inputs
        # of the size it was trained on.
        self.soft_token = nn.Parameter(torch.randn(1, 1, lm_width) * token_scale)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        projected = self.projection(features.to(self.projection.weight.dtype)).unsqueeze(1)
        return torch.cat([self.soft_token.expand(len(features), -1, -1), projected], dim=1)


def _generation_model(model: nn.Module):
    from adaptlab.tasks.generation import EncoderToLm

    if not isinstance(model, EncoderToLm):
        raise AdaptlabError(f"strategy 'bridge' joins an encoder to a causal language model: "
                            f"it needs a generation task's model, not {type(model).__name__}")
    return model


@register_strategy
class BridgeStrategy(Strategy):
    name = "bridge"
    shards = True
    config_class = BridgeConfig
    description = ("eP-ALM bridge: frozen encoder and frozen causal LM joined by one "
                   "trainable linear projection and one soft token")
    keeps_structure = True  # the bridge is a new module the base model does not have

    def check_model(self, model: nn.Module, layer_map: LayerMap) -> None:
        _generation_model(model)

    def apply(self, model: nn.Module, layer_map: LayerMap) -> nn.Module:
        model = _generation_model(model)
        embedding = model.language_model.get_input_embeddings().weight
        # The bridge's initial values come from its own seed; the global stream stays as it
        # was, so applying the strategy changes nothing about training's draws.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.init_seed)
            model.bridge = Bridge(model.encoder_width, model.lm_width,
                                  float(embedding.detach().float().std()))
        model.bridge.to(device=embedding.device)
        return model

    def select_trainable(self, model: nn.Module, layer_map: LayerMap) -> None:
        set_requires_grad([model], False)
        set_requires_grad([model.bridge], True)

    @contextlib.contextmanager
    def unadapted(self, model: nn.Module, keep: str | None):
        """The LM alone: the bridge taken out, put back after."""
        bridge, model.bridge = model.bridge, None
        try:
            yield model
        finally:
            model.bridge = bridge

    def merged_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        raise AdaptlabError("strategy 'bridge': the projection and soft token are inputs the "
                            "base model does not have (nothing to merge; export the run as it is)")
