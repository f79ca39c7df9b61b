"""The ``dvpt`` strategy: Dynamic Visual Prompt Tuning (He et al. 2023, medical image
analysis; reference code NKUhealong/DVPT, ``code/model.py``).

After every block of the frozen backbone (one module per block, or one ``shared`` by all, as
the paper allows), a DVPT module:

1. transforms the frozen features with a lightweight bottleneck ``z = GELU(down(h))``;
2. lets ``queries`` learnable prompts cross-attend to ``z`` (``nn.MultiheadAttention``):
   sample-specific prompts;
3. lets every token read those prompts back (attention of ``z`` over them, no weights), and
   projects the result to the original width;
4. adds it to the frozen features through a gate that starts at 0: ``h + gate * up(...)``,
   so at the start the model is exactly the frozen model.

Our reading of step 3: the paper aggregates the projected prompt knowledge "with the frozen
features" without saying how K prompts reach N tokens; attention of the tokens over the
prompts does it without parameters. A Hugging Face encoder's padding is kept out of step 2
with its attention mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from adaptlab.strategies.base import StrategyConfig
from adaptlab.strategies.prompts.base import PromptStrategy, seeded
from adaptlab.strategies.prompts.insertion import TokenSite, first_tensor, with_first
from adaptlab.strategies.registry import register_strategy


@dataclass
class DvptConfig(StrategyConfig):
    queries: int = field(default=10, metadata={
        "min": 1, "max": 1024, "help": "learnable prompts that query each block's features"})
    bottleneck: int = field(default=20, metadata={
        "min": 1, "max": 4096, "help": "width of the bottleneck over the frozen features "
                                       "(DVPT's reference code: 20)"})
    shared: bool = field(default=False, metadata={
        "help": "one DVPT module shared by every block instead of one per block"})
    init_seed: int = field(default=0, metadata={
        "min": 0, "max": 2**31 - 1, "help": "seed of the DVPT modules' initial weights"})


class DvptModule(nn.Module):
    """``h + gate * up(attend(z, prompts))`` with ``prompts = cross_attention(queries, z)``,
    ``z = GELU(down(h))``; ``gate`` starts at 0."""

    def __init__(self, width: int, bottleneck: int, queries: int) -> None:
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.act = nn.GELU()
        self.queries = nn.Parameter(torch.empty(queries, bottleneck))
        nn.init.xavier_uniform_(self.queries)
        self.cross_attention = nn.MultiheadAttention(bottleneck, 1, batch_first=True)
        self.up = nn.Linear(bottleneck, width)
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, hidden: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        z = self.act(self.down(hidden))
        queries = self.queries.to(z.dtype).unsqueeze(0).expand(z.shape[0], -1, -1)
        ignore = None if keep is None else ~keep
        prompts, _ = self.cross_attention(queries, z, z, key_padding_mask=ignore,
                                          need_weights=False)
        read = nn.functional.scaled_dot_product_attention(z, prompts, prompts)
        return hidden + self.gate.to(hidden.dtype) * self.up(read)


class DvptModules(nn.Module):
    """The DVPT modules of a backbone, hooked after its blocks; ``enabled`` False switches
    them off (the unadapted model)."""

    def __init__(self, site: TokenSite, bottleneck: int, queries: int, shared: bool) -> None:
        super().__init__()
        count = 1 if shared else len(site.blocks)
        self.modules_per_block = nn.ModuleList(
            DvptModule(site.width, bottleneck, queries) for _ in range(count))
        self.enabled = True
        self._keep: torch.Tensor | None = None  # this forward's padding mask (HF encoders)

    def install(self, site: TokenSite) -> None:
        for index, block in enumerate(site.blocks):
            block.register_forward_hook(partial(self._after_block, index))
        if site.mask_owner is not None:
            site.mask_owner.register_forward_pre_hook(self._take_mask, with_kwargs=True)
            site.mask_owner.register_forward_hook(self._drop_mask)

    def _after_block(self, index: int, _module: nn.Module, _args: tuple, output: Any) -> Any:
        if not self.enabled:
            return None
        module = self.modules_per_block[min(index, len(self.modules_per_block) - 1)]
        return with_first(output, module(first_tensor(output), self._keep))

    def _take_mask(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1:
            mask = args[1]
        self._keep = None if mask is None else mask.bool()

    def _drop_mask(self, _module: nn.Module, _args: tuple, _output: Any) -> None:
        self._keep = None


@register_strategy
class DynamicVisualPromptTuning(PromptStrategy):
    name = "dvpt"
    config_class = DvptConfig
    description = ("dynamic visual prompt tuning: learnable queries cross-attend to a "
                   "bottleneck of each frozen block's features, added back through a gate "
                   "from zero; train with the head")
    default_lr = 1e-3  # new modules from scratch next to a frozen backbone, as the head's

    def build(self, site: TokenSite) -> nn.Module:
        modules = seeded(self.config.init_seed, lambda: DvptModules(
            site, self.config.bottleneck, self.config.queries, self.config.shared))
        modules.install(site)
        return modules
