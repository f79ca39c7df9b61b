"""The side network's blocks, one kind per backbone family, built from the backbone's own
blocks pruned to the side's width (:mod:`adaptlab.strategies.lst.pruning`).

Transformer families (Hugging Face BERT-style encoders, timm ViTs, our point transformer)
share one side block, :class:`SideTransformerBlock`, in the backbone's norm order; for timm's
convolutional blocks the side block is the backbone's block itself, narrowed, so its strides
and padding rule stay those of the stage it shadows.
"""

from __future__ import annotations

import torch
from torch import nn

from adaptlab.strategies.lst.pruning import (
    TransformerSelection,
    TransformerWeights,
    pruned_layer_norm,
    pruned_linear,
    split_fused_qkv,
)


class SideTransformerBlock(nn.Module):
    """A narrow transformer block: attention with the backbone block's head count and
    ``head_dim / r`` per head, a feed-forward of ``ffn / r`` neurons (exact GELU, as BERT,
    timm ViTs and our point transformer use), pre- or post-norm as the backbone's block, and
    the backbone block's dropout: the reference's side blocks are the backbone's block class
    at a smaller width, dropout included (T5's 0.1; BERT's is 0.1 too)."""

    def __init__(self, query: nn.Linear, key: nn.Linear, value: nn.Linear, proj: nn.Linear,
                 fc1: nn.Linear, fc2: nn.Linear, norm1: nn.LayerNorm, norm2: nn.LayerNorm,
                 heads: int, post_norm: bool, attention_dropout: float = 0.0,
                 output_dropout: float = 0.0) -> None:
        super().__init__()
        self.query, self.key, self.value, self.proj = query, key, value, proj
        self.fc1, self.fc2 = fc1, fc2
        self.norm1, self.norm2 = norm1, norm2
        self.act = nn.GELU()
        self.heads = heads
        self.post_norm = post_norm
        # Modules, not floats, so that switching dropout off (the strategy's ``dropout``
        # option) is one walk over the side's nn.Dropout modules.
        self.attention_drop = nn.Dropout(attention_dropout)
        self.output_drop = nn.Dropout(output_dropout)

    def attention(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        batch, tokens, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, tokens, self.heads, -1).transpose(1, 2)

        mask = None if keep is None else keep[:, None, None, :].bool()
        out = nn.functional.scaled_dot_product_attention(
            split(self.query(x)), split(self.key(x)), split(self.value(x)), attn_mask=mask,
            dropout_p=self.attention_drop.p if self.training else 0.0)
        return self.output_drop(self.proj(out.transpose(1, 2).reshape(batch, tokens, -1)))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_drop(self.fc2(self.act(self.fc1(x))))

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``[B, T, d]``; ``keep`` ``[B, T]`` (1 for tokens, 0 for padding) or None."""
        if self.post_norm:
            x = self.norm1(x + self.attention(x, keep))
            return self.norm2(x + self.feed_forward(x))
        x = x + self.attention(self.norm1(x), keep)
        return x + self.feed_forward(self.norm2(x))


def side_transformer_block(w: TransformerWeights, units: TransformerSelection
                           ) -> SideTransformerBlock:
    """The block ``w`` restricted to ``units``: q/k/v keep the selected attention rows and
    residual columns, proj and fc2 write the selected residual units, norms keep them too."""
    hidden, attention, ffn = units.hidden, units.attention, units.ffn
    return SideTransformerBlock(
        query=pruned_linear(w.query, attention, hidden),
        key=pruned_linear(w.key, attention, hidden),
        value=pruned_linear(w.value, attention, hidden),
        proj=pruned_linear(w.proj, hidden, attention),
        fc1=pruned_linear(w.fc1, ffn, hidden),
        fc2=pruned_linear(w.fc2, hidden, ffn),
        norm1=pruned_layer_norm(w.norm1, hidden),
        norm2=pruned_layer_norm(w.norm2, hidden),
        heads=w.heads, post_norm=w.post_norm, attention_dropout=w.attention_dropout,
        output_dropout=w.output_dropout)


# -- reading a backbone block as TransformerWeights, per family ----------------------------------
def bert_layer_weights(layer: nn.Module) -> TransformerWeights | None:
    """A Hugging Face BERT-style layer (BERT, MiniLM, RoBERTa): post-norm."""
    try:
        attention = layer.attention
        if type(layer.intermediate.intermediate_act_fn).__name__ != "GELUActivation":
            return None  # the side block's GELU is the exact one (hidden_act "gelu")
        return TransformerWeights(
            query=attention.self.query, key=attention.self.key, value=attention.self.value,
            proj=attention.output.dense, fc1=layer.intermediate.dense, fc2=layer.output.dense,
            norm1=attention.output.LayerNorm, norm2=layer.output.LayerNorm,
            heads=int(attention.self.num_attention_heads), post_norm=True,
            attention_dropout=float(attention.self.dropout.p),
            output_dropout=float(attention.output.dropout.p))
    except AttributeError:
        return None


def _fused_pre_norm_weights(block: nn.Module, heads: int) -> TransformerWeights:
    query, key, value = split_fused_qkv(block.attn.qkv)
    attn_drop = getattr(block.attn, "attn_drop", None)
    proj_drop = getattr(block.attn, "proj_drop", None)
    return TransformerWeights(query=query, key=key, value=value, proj=block.attn.proj,
                              fc1=block.mlp.fc1, fc2=block.mlp.fc2, norm1=block.norm1,
                              norm2=block.norm2, heads=heads, post_norm=False,
                              attention_dropout=float(getattr(attn_drop, "p", 0.0)),
                              output_dropout=float(getattr(proj_drop, "p", 0.0)))


def timm_vit_block_weights(block: nn.Module) -> TransformerWeights | None:
    """A timm ViT ``Block`` (fused qkv, pre-norm), without layer scale or q/k norms (a side
    block without them would not be the pruned block)."""
    plain = all(isinstance(getattr(block, name, None), nn.Identity) for name in ("ls1", "ls2"))
    attn = getattr(block, "attn", None)
    if not plain or attn is None or not hasattr(attn, "num_heads"):
        return None
    if not all(isinstance(getattr(attn, n, nn.Identity()), nn.Identity)
               for n in ("q_norm", "k_norm", "norm")):
        return None
    if not isinstance(getattr(block.mlp, "act", None), nn.GELU) or \
            block.mlp.act.approximate != "none":
        return None
    return _fused_pre_norm_weights(block, int(attn.num_heads))


def point_block_weights(block: nn.Module) -> TransformerWeights | None:
    """Our point transformer's ``Block`` (fused qkv, pre-norm)."""
    from adaptlab.backbones.point_nets import Block

    if not isinstance(block, Block):
        return None
    return _fused_pre_norm_weights(block, int(block.attn.heads))
