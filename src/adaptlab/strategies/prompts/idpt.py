"""The ``idpt`` strategy: Instance-aware Dynamic Prompt Tuning for point clouds (Zha et al.
2023; reference code zyh16143998882/ICCV23-IDPT, ``models/Point_MAE.py``, ``models/dgcnn.py``).

Before the last block of the frozen point transformer, a small DGCNN reads the patch tokens:
three EdgeConv layers on a k-nearest-neighbour graph recomputed in feature space (the
backbone's own :class:`~adaptlab.backbones.point_nets.EdgeConv`), their outputs joined,
projected to the token width and max-pooled over the patches into one prompt token per
cloud. That token enters in front of the patch tokens for the last block; only the generator
and the task head train.

The reference head also reads the prompt token's output; here the prompt is removed after
the last block, so the pooled features keep the backbone's definition (max and mean of its
patch tokens) and the head reads what the unadapted model's head reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from adaptlab.backbones.point_nets import EdgeConv, max_pool
from adaptlab.errors import AdaptlabError
from adaptlab.strategies.base import StrategyConfig
from adaptlab.strategies.prompts.base import PromptStrategy, seeded
from adaptlab.strategies.prompts.insertion import InsertedTokens, TokenSite
from adaptlab.strategies.registry import register_strategy

EDGE_LAYERS = 3  # the reference generator's EdgeConv layers


@dataclass
class IdptConfig(StrategyConfig):
    k: int = field(default=20, metadata={
        "min": 2, "max": 1024,
        "help": "neighbours per patch token in the prompt generator's graph (IDPT: 20)"})
    hidden: int = field(default=64, metadata={
        "min": 1, "max": 4096, "help": "width of the prompt generator's EdgeConv layers"})
    init_seed: int = field(default=0, metadata={
        "min": 0, "max": 2**31 - 1, "help": "seed of the prompt generator's initial weights"})


class InstancePrompt(InsertedTokens):
    """One prompt token per cloud, generated from the last block's input patch tokens."""

    def __init__(self, site: TokenSite, k: int, hidden: int) -> None:
        super().__init__(1, site.prefix_tokens)
        widths = [site.width] + [hidden] * EDGE_LAYERS
        self.edges = nn.ModuleList(EdgeConv(widths[i], widths[i + 1], k)
                                   for i in range(EDGE_LAYERS))
        self.project = nn.Linear(hidden * EDGE_LAYERS, site.width)
        self.position = len(site.blocks) - 1

    def tokens_for(self, position: int, hidden: torch.Tensor) -> torch.Tensor:
        x, outputs = hidden, []
        for edge in self.edges:
            x = edge(x)
            outputs.append(x)
        return max_pool(self.project(torch.cat(outputs, dim=-1)), 1, keepdim=True)


@register_strategy
class InstanceAwarePromptTuning(PromptStrategy):
    name = "idpt"
    config_class = IdptConfig
    families = ("point-transformer",)
    description = ("instance-aware dynamic prompt tuning (point transformer): an EdgeConv "
                   "generator turns the patch tokens into a prompt token before the last "
                   "block; trains with the head")
    default_lr = 5e-4  # the IDPT reference's AdamW rate

    def check_site(self, site: TokenSite) -> None:
        patches = site.patch_tokens
        if patches is not None and self.config.k > patches:
            raise AdaptlabError(f"strategy 'idpt': k={self.config.k} is more than the "
                                f"backbone's {patches} patch tokens (set k <= {patches})")

    def build(self, site: TokenSite) -> nn.Module:
        prompt = seeded(self.config.init_seed,
                        lambda: InstancePrompt(site, self.config.k, self.config.hidden))
        prompt.install(site, [prompt.position])
        return prompt
