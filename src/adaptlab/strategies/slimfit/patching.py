"""Swap SlimFit's compressing functions (:mod:`.compress`) into a model.

A layer is changed by giving the instance a subclass of its own class (``module.__class__``),
or, for a parameterless activation, by replacing it in its parent: parameters, buffers, names
and hooks stay as they were, so a state dict loads into a patched model unchanged, and the
forward computes the same values (the attention exactly as written, not through a fused
kernel, whose products could not be stored compressed). What is patched:

- every LayerNorm over the last dimension (``nn.LayerNorm``, timm's ``LayerNorm``): top-10 %
  pruned input while its weight is frozen, the plain layer while it trains;
- every exact GELU (``nn.GELU``, Hugging Face's ``GELUActivation``): 4-bit input;
- the MLP output layer (timm's and our point transformer's ``Mlp.fc2``, BERT's
  ``BertOutput.dense``, a Linear right after an exact GELU in a ``Sequential``): int8 input
  while its weight trains, none while frozen;
- self-attention (timm's ``Attention`` with fused qkv, BERT's ``BertSelfAttention``, our point
  transformer's ``Attention``): int8 operands of both products, uint8 probabilities.

A CNN (EfficientNet, ResNet) has none of these layers except where a GELU or a LayerNorm is
present (ConvNeXt's): it gets the freezing alone, whose saving on a CNN is the inputs of its
frozen convolutions, which PyTorch already does not keep.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn
from torch.nn import functional as F

from adaptlab.strategies.slimfit.compress import (
    Int4GELU,
    Int8InputLinear,
    QKProduct,
    SoftmaxValueProduct,
    TopKLayerNorm,
)


def _saving(training: bool, *tensors: torch.Tensor | None) -> bool:
    """Whether to store compressed: only in training mode (compression saves training
    memory; gradients taken in eval mode, an explanation's, stay exact) and only when
    autograd will keep anything (not under ``no_grad``, not when nothing needs a gradient)."""
    return training and torch.is_grad_enabled() and \
        any(t is not None and t.requires_grad for t in tensors)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
              mask: torch.Tensor | None = None, dropout: float = 0.0,
              training: bool = True) -> torch.Tensor:
    """``dropout(softmax(q k^T * scale + mask)) v``, with compressed saved operands when
    ``training``. ``mask``: additive (float) or which keys to attend (bool), broadcast over
    the scores."""
    saving = _saving(training, q, k, v)
    q = q * scale
    scores = QKProduct.apply(q, k) if saving else q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) \
            if mask.dtype == torch.bool else scores + mask
    if saving:
        return SoftmaxValueProduct.apply(scores, v, dropout)
    return F.dropout(torch.softmax(scores, dim=-1), dropout, training=dropout > 0) @ v


class CompressedGELU(nn.Module):
    """Exact GELU whose backward keeps a 4-bit code of the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Int4GELU.apply(x) if _saving(self.training, x) else F.gelu(x)


class CompressedLinear(nn.Linear):
    """A Linear that keeps its input as int8 while its weight trains."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _saving(self.training, x, self.weight, self.bias):
            return Int8InputLinear.apply(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


class PrunedLayerNorm(nn.LayerNorm):
    """A LayerNorm that, frozen, keeps only the top 10 % of its normalised input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frozen = all(p is None or not p.requires_grad for p in (self.weight, self.bias))
        if frozen and len(self.normalized_shape) == 1 and _saving(self.training, x):
            return TopKLayerNorm.apply(x, self.weight, self.bias, self.eps)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


def _timm_attention_class():
    from timm.layers.attention import Attention, resolve_self_attn_mask

    class CompressedTimmAttention(Attention):
        """timm's ``Attention`` (fused qkv), its products computed by :func:`attention`."""

        def forward(self, x, attn_mask=None, is_causal=False):
            batch, tokens, _ = x.shape
            gate = self.gate(x).sigmoid() if self.gate is not None else None
            qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            q, k = self.q_norm(q), self.k_norm(k)
            bias = resolve_self_attn_mask(tokens, q, attn_mask, is_causal)  # additive or None
            out = attention(q, k, v, self.scale, bias,
                            self.attn_drop.p if self.training else 0.0, self.training)
            out = self.norm(out.transpose(1, 2).reshape(batch, tokens, self.attn_dim))
            if gate is not None:
                out = out * gate
            return self.proj_drop(self.proj(out))

    return Attention, CompressedTimmAttention


def _bert_classes():
    from transformers.activations import GELUActivation
    from transformers.models.bert.modeling_bert import BertOutput, BertSelfAttention

    class CompressedBertSelfAttention(BertSelfAttention):
        """BERT self-attention, its products computed by :func:`attention` (any attention
        implementation's mask: additive float or boolean)."""

        def forward(self, hidden_states, attention_mask=None, past_key_values=None, **kwargs):
            if past_key_values is not None:  # decoding with a cache: not a fine-tuning path
                return super().forward(hidden_states, attention_mask, past_key_values, **kwargs)
            shape = (*hidden_states.shape[:-1], -1, self.attention_head_size)
            q, k, v = (layer(hidden_states).view(*shape).transpose(1, 2)
                       for layer in (self.query, self.key, self.value))
            out = attention(q, k, v, self.scaling, attention_mask,
                            self.dropout.p if self.training else 0.0, self.training)
            return out.transpose(1, 2).reshape(*hidden_states.shape[:-1], -1), None

    return BertSelfAttention, CompressedBertSelfAttention, BertOutput, GELUActivation


def _point_classes():
    from adaptlab.backbones import point_nets

    class CompressedPointAttention(point_nets.Attention):
        """Our point transformer's attention, its products computed by :func:`attention`."""

        def forward(self, x):
            batch, tokens, dim = x.shape
            q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads) \
                .permute(2, 0, 3, 1, 4)
            out = attention(q, k, v, (dim // self.heads) ** -0.5, training=self.training)
            return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))

    return point_nets.Attention, CompressedPointAttention, point_nets.Mlp


def _optional(factory):
    try:
        return factory()
    except ImportError:  # that family's library is not installed: nothing of it to patch
        return None


_CLASSES: dict[str, tuple | None] = {}


def _classes() -> dict[str, tuple | None]:
    """The patched classes, built once (a class per process, so patched models deep-copy and
    compare by type)."""
    if not _CLASSES:
        _CLASSES.update(timm=_optional(_timm_attention_class), bert=_optional(_bert_classes),
                        point=_point_classes())
    return _CLASSES


def _layer_norm_types() -> tuple[type, ...]:
    kinds: list[type] = [nn.LayerNorm]
    try:
        from timm.layers import LayerNorm

        kinds.append(LayerNorm)
    except ImportError:
        pass
    return tuple(kinds)


def _is_exact_gelu(module: nn.Module, hf_gelu: type | None) -> bool:
    if type(module) is nn.GELU:
        return module.approximate == "none"
    return hf_gelu is not None and type(module) is hf_gelu and \
        getattr(module, "act", None) is F.gelu


def patch_model(model: nn.Module, exclude: str | None = None) -> Counter:
    """Patch every layer :mod:`.patching` knows, outside the module named ``exclude`` (the
    task head); returns how many of each kind."""
    classes = _classes()
    timm_pair, bert, point = classes["timm"], classes["bert"], classes["point"]
    norms = _layer_norm_types()
    fc2_owners = tuple(kind for kind in (point[2], _optional(_timm_mlp),
                                         bert[2] if bert else None) if kind is not None)
    swaps = {pair[0]: pair[1] for pair in (timm_pair, bert, point[:2]) if pair}
    done: Counter = Counter()
    for name, module in list(model.named_modules()):
        if exclude and (name == exclude or name.startswith(exclude + ".")):
            continue
        kind = type(module)
        if kind in swaps:
            module.__class__ = swaps[kind]
            done["attention"] += 1
        elif kind in norms and getattr(module, "_fast_norm", False) is False:
            module.__class__ = PrunedLayerNorm
            done["layer_norm"] += 1
        if isinstance(module, fc2_owners):
            linear_name = "dense" if bert and isinstance(module, bert[2]) else "fc2"
            linear = getattr(module, linear_name)
            if type(linear) is nn.Linear:
                linear.__class__ = CompressedLinear
                done["linear_int8"] += 1
        if isinstance(module, nn.Sequential):
            # A Linear right after an exact GELU in a Sequential (our point networks' patch
            # embedding and position MLP) is an MLP's output layer by another name: its input
            # is the GELU's output, which nothing else keeps.
            children = list(module.children())
            for before, linear in zip(children, children[1:], strict=False):
                if _is_exact_gelu(before, bert[3] if bert else None) and \
                        type(linear) is nn.Linear:
                    linear.__class__ = CompressedLinear
                    done["linear_int8"] += 1
        for child_name, child in list(module.named_children()):
            if _is_exact_gelu(child, bert[3] if bert else None):
                setattr(module, child_name, CompressedGELU())
                done["gelu"] += 1
    return done


def _timm_mlp():
    from timm.layers import Mlp

    return Mlp
