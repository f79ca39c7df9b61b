"""The ``vpt`` strategy: Visual Prompt Tuning (Jia et al. 2022; reference code KMnP/vpt,
``src/models/vit_prompt/vit.py``).

``tokens`` learnable prompt tokens enter the frozen backbone's token sequence after its class
token (timm ViTs, Hugging Face encoders) or in front of the patch tokens (the point
transformer). Shallow: once, after the embeddings. Deep: a fresh set at every block's input,
replacing the previous block's prompt outputs. Prompts are drawn uniformly from
``+-sqrt(6 / (patch inputs + width))`` (Xavier over the patch embedding, as the reference
code does); only the prompts and the task head train.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from adaptlab.strategies.base import StrategyConfig
from adaptlab.strategies.prompts.base import PromptStrategy, seeded
from adaptlab.strategies.prompts.insertion import InsertedTokens, TokenSite
from adaptlab.strategies.registry import register_strategy


@dataclass
class VptConfig(StrategyConfig):
    tokens: int = field(default=10, metadata={
        "min": 1, "max": 1024, "help": "prompt tokens per block input (VPT: 1 to 200)"})
    deep: bool = field(default=False, metadata={
        "help": "fresh prompts at every block's input (deep) or only after the embeddings"})
    init_seed: int = field(default=0, metadata={
        "min": 0, "max": 2**31 - 1, "help": "seed of the prompts' initial values"})


class PromptTokens(InsertedTokens):
    """``tokens[i]`` ([count, width]) enters at block ``positions[i]``."""

    def __init__(self, site: TokenSite, count: int, deep: bool) -> None:
        super().__init__(count, site.prefix_tokens)
        self.positions = list(range(len(site.blocks))) if deep else [0]
        bound = math.sqrt(6.0 / (site.patch_inputs + site.width))
        self.tokens = nn.Parameter(
            torch.empty(len(self.positions), count, site.width).uniform_(-bound, bound))

    def tokens_for(self, position: int, hidden: torch.Tensor) -> torch.Tensor:
        return self.tokens[self.positions.index(position)].unsqueeze(0)


@register_strategy
class VisualPromptTuning(PromptStrategy):
    name = "vpt"
    config_class = VptConfig
    description = ("visual prompt tuning: learnable prompt tokens in the frozen transformer's "
                   "token sequence (shallow or deep) train with the head")
    # Prompts start small (Xavier bounds) and only they and the head move: a rate above
    # full fine-tuning's, as prompt tuning's references use (VPT grid-searches large SGD rates).
    default_lr = 5e-3

    def build(self, site: TokenSite) -> nn.Module:
        prompts = seeded(self.config.init_seed,
                         lambda: PromptTokens(site, self.config.tokens, self.config.deep))
        prompts.install(site, prompts.positions)
        return prompts
