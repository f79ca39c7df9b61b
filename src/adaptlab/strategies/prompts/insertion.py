"""Where a backbone's token sequence can take prompt tokens, per backbone family, and the
forward hooks that put them there and take them out again.

The tokens go in through hooks on the backbone's own modules, not a rewritten forward: the
backbone keeps its module names (the layer map, Grad-CAM's last block and peft targets still
resolve), every way into it (``forward``, ``forward_features``, timm's
``forward_intermediates``) sees the prompts, and its pooling stays its own. Prompts leave
each block's output and are carried to the next block's input, so whoever reads a block's
output (a hook, the final norm, the pooling) sees the backbone's own tokens: a CLS-pooled
backbone still pools its CLS token, a mean-pooled one averages its own tokens only, and
prompts change the output only through what the real tokens read from them in attention.

The hooks are bound methods (or partials of them) of the prompt module, so a deep copy of the
model (the explainer's pre-flight copies it) copies them pointing at the copied prompts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from adaptlab.errors import AdaptlabError


@dataclass(frozen=True)
class TokenSite:
    """A backbone's token sequence, as the prompt strategies reach it.

    ``blocks``: the token blocks in order (the layer map's); ``width``: the token width;
    ``prefix_tokens``: tokens that stay in front of the prompts (class and register tokens);
    ``patch_inputs``: the numbers one token embeds (a ViT patch's pixels), the fan-in of
    VPT's Xavier-uniform initialisation; ``embeddings``: where a Hugging Face encoder's
    prompts go in (the output of its embeddings, so the model builds its attention mask over
    the longer sequence); ``mask_owner``: the module whose ``attention_mask`` keyword gets
    the prompts' columns; ``patch_tokens``: tokens the backbone always makes (None: it depends
    on the input)."""

    family: str
    backbone: nn.Module
    blocks: tuple[nn.Module, ...]
    width: int
    prefix_tokens: int
    patch_inputs: int
    embeddings: nn.Module | None = None
    mask_owner: nn.Module | None = None
    patch_tokens: int | None = None


Family = Callable[[nn.Module, list[nn.Module]], "TokenSite | None"]
FAMILIES: dict[str, Family] = {}


def token_family(name: str) -> Callable[[Family], Family]:
    """Register a family recogniser under ``name`` (a taken name fails loudly)."""
    def add(recognise: Family) -> Family:
        if name in FAMILIES:
            raise ValueError(f"token family {name!r} is already registered")
        FAMILIES[name] = recognise
        return recognise
    return add


@token_family("timm-vit")
def timm_vit_site(backbone: nn.Module, blocks: list[nn.Module]) -> TokenSite | None:
    """A timm VisionTransformer (DeiT and the other subclasses too): prompts after its class
    and register tokens."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(backbone, VisionTransformer):
        return None
    width = int(backbone.embed_dim)
    proj = getattr(backbone.patch_embed, "proj", None)
    patch_inputs = (proj.in_channels * math.prod(proj.kernel_size)
                    if isinstance(proj, nn.Conv2d) else width)
    return TokenSite("timm-vit", backbone, tuple(blocks), width,
                     int(backbone.num_prefix_tokens), patch_inputs)


@token_family("hf-encoder")
def hf_encoder_site(backbone: nn.Module, blocks: list[nn.Module]) -> TokenSite | None:
    """A BERT-style Hugging Face encoder (MiniLM): prompts after [CLS], inserted at the
    embeddings' output, the attention mask given ones for them. A word has no patch: the
    fan-in is the width (Xavier over a square)."""
    from adaptlab.backbones.hf_encoders import MeanPooledEncoder

    if not isinstance(backbone, MeanPooledEncoder):
        return None
    encoder = backbone.encoder
    embeddings = getattr(encoder, "embeddings", None)
    if embeddings is None or getattr(encoder.config, "is_decoder", False):
        return None
    width = int(encoder.config.hidden_size)
    return TokenSite("hf-encoder", backbone, tuple(blocks), width, 1, width,
                     embeddings=embeddings, mask_owner=encoder)


@token_family("point-transformer")
def point_transformer_site(backbone: nn.Module, blocks: list[nn.Module]) -> TokenSite | None:
    """Our point-patch transformer: no class token, prompts in front of the patch tokens; a
    patch embeds ``patch_size`` points of 3 coordinates."""
    from adaptlab.backbones.point_nets import PointPatchTransformer

    if not isinstance(backbone, PointPatchTransformer):
        return None
    width = int(backbone.norm.normalized_shape[0])
    return TokenSite("point-transformer", backbone, tuple(blocks), width, 0,
                     3 * int(backbone.patch_size), patch_tokens=int(backbone.patches))


def find_site(strategy: str, backbone: nn.Module, blocks: list[nn.Module | None],
              families: tuple[str, ...] | None = None) -> TokenSite:
    """The site of the first of ``families`` (default: all) that recognises ``backbone``;
    refuses, in one line naming the backbone and the families that work, one none does."""
    names = [name for name in FAMILIES if families is None or name in families]
    if blocks and all(block is not None for block in blocks):
        for name in names:
            site = FAMILIES[name](backbone, list(blocks))
            if site is not None:
                return site
    raise AdaptlabError(f"strategy {strategy!r}: backbone {type(backbone).__name__} has no "
                        f"token sequence it can prompt; families that work: {', '.join(names)}")


# -- tensors ----------------------------------------------------------------------------------
def first_tensor(output: Any) -> torch.Tensor:
    """A block's hidden states: the output itself, or the first item of a tuple (older
    Hugging Face layers return tuples)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def with_first(output: Any, hidden: torch.Tensor) -> Any:
    """``output`` with its hidden states replaced by ``hidden``, in the same structure."""
    if isinstance(output, (tuple, list)):
        return type(output)([hidden, *output[1:]])
    return hidden


def insert_tokens(hidden: torch.Tensor, tokens: torch.Tensor, at: int) -> torch.Tensor:
    """``tokens`` ([1 or B, N, D]) put between ``hidden[:, :at]`` and ``hidden[:, at:]``."""
    tokens = tokens.to(hidden.dtype).expand(hidden.shape[0], -1, -1)
    return torch.cat([hidden[:, :at], tokens, hidden[:, at:]], dim=1)


def remove_tokens(hidden: torch.Tensor, at: int, count: int) -> torch.Tensor:
    """``hidden`` without its ``count`` tokens from ``at``."""
    return torch.cat([hidden[:, :at], hidden[:, at + count:]], dim=1)


class InsertedTokens(nn.Module):
    """Base of a module whose tokens enter the sequence at block ``positions[0]``: fresh
    tokens at the input of each block in ``positions``, the previous block's prompt outputs
    at the input of every other block after the first. Every block's output leaves without
    them, so whoever reads a block's output (a forward hook, ``forward_intermediates``, the
    pooling) sees the backbone's own tokens. Subclasses give :meth:`tokens_for`. ``enabled``
    False switches the tokens off (the unadapted model): an attribute, not state."""

    def __init__(self, count: int, prefix_tokens: int) -> None:
        super().__init__()
        self.count = count
        self.prefix_tokens = prefix_tokens
        self.enabled = True
        self._fresh_at: tuple[int, ...] = ()
        # The prompt outputs of the block that just ran, on their way to the next block's
        # input (one forward at a time: a block recomputed out of order, as gradient
        # checkpointing would, is not supported).
        self._carried: torch.Tensor | None = None

    def tokens_for(self, position: int, hidden: torch.Tensor) -> torch.Tensor:
        """The tokens ``[1 or B, count, D]`` entering at block ``position``, whose input is
        ``hidden`` (an instance-aware generator reads it)."""
        raise NotImplementedError

    def install(self, site: TokenSite, positions: list[int]) -> None:
        """Hook the tokens into ``site``'s blocks: fresh at ``positions`` (ascending)."""
        first = positions[0]
        self._fresh_at = tuple(positions)
        if site.embeddings is not None:
            # A Hugging Face model builds its attention mask from the embeddings' output
            # length and the mask it is given: both must count the prompts.
            if first != 0:
                raise ValueError("a Hugging Face encoder takes prompts after its embeddings")
            site.embeddings.register_forward_hook(self._insert_after_embeddings)
            site.mask_owner.register_forward_pre_hook(self._extend_mask, with_kwargs=True)
        last = len(site.blocks) - 1
        for index in range(first, last + 1):
            if index > first or site.embeddings is None:
                site.blocks[index].register_forward_pre_hook(partial(self._enter, index))
            site.blocks[index].register_forward_hook(partial(self._leave, index == last))

    # The hooks: each returns None (nothing changed) while the tokens are switched off.
    def _enter(self, position: int, _module: nn.Module, args: tuple) -> tuple | None:
        if not self.enabled:
            return None
        hidden = args[0]
        if position in self._fresh_at:
            tokens = self.tokens_for(position, hidden)
        elif self._carried is not None:
            tokens = self._carried
        else:
            raise RuntimeError(f"block {position} ran without the previous block's prompts")
        return (insert_tokens(hidden, tokens, self.prefix_tokens), *args[1:])

    def _insert_after_embeddings(self, _module: nn.Module, _args: tuple, output: Any) -> Any:
        if not self.enabled:
            return None
        hidden = first_tensor(output)
        return with_first(output, insert_tokens(hidden, self.tokens_for(0, hidden),
                                                self.prefix_tokens))

    def _leave(self, last: bool, _module: nn.Module, _args: tuple, output: Any) -> Any:
        if not self.enabled:
            return None
        hidden = first_tensor(output)
        at = self.prefix_tokens
        self._carried = None if last else hidden[:, at:at + self.count]
        return with_first(output, remove_tokens(hidden, at, self.count))

    def _extend_mask(self, _module: nn.Module, args: tuple, kwargs: dict
                     ) -> tuple[tuple, dict] | None:
        """The prompts are attended by every token: ones in their columns of the mask."""
        if not self.enabled:
            return None
        positional = kwargs.get("attention_mask") is None and len(args) > 1
        mask = args[1] if positional else kwargs.get("attention_mask")
        if mask is None:
            return None  # no mask: every token, prompts included, is attended
        ones = mask.new_ones(mask.shape[0], self.count)
        at = self.prefix_tokens
        extended = torch.cat([mask[:, :at], ones, mask[:, at:]], dim=1)
        if positional:
            return (args[0], extended, *args[2:]), kwargs
        return args, {**kwargs, "attention_mask": extended}
