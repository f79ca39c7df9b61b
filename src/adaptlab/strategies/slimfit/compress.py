"""SlimFit's activation compression: autograd functions whose forward is the exact layer and
whose backward reads a smaller copy of what it needs.

Hand-written because no maintained library stores *saved activations* quantised per op
(bitsandbytes and torchao quantise weights and optimizer state; ``torch.autograd.graph``'s
saved-tensor hooks see every tensor, not which op saved it and why). Everything stored goes
through ``ctx.save_for_backward`` as a fresh tensor of its own (never a view of a big one), so
the cost meter's saved-tensor hooks count each at its stored size.

What each function keeps, and why that form (cosine similarity of its gradients against full
precision is tested per layer on MiniLM, a timm ViT and our point transformer):

- :class:`Int8InputLinear` (the MLP's output layer, the reference's flagged dense): its input
  as int8 with one scale per row (token). The reference's fixed point (3 integer, 4 fraction
  bits) clips at 8, and the GELU outputs it reads reach 20+ in MiniLM; a per-tensor scale
  avoids clipping but spends its 256 levels on the one largest value. A scale per row costs
  4 bytes per row and follows each token's own range. Nothing of the input is kept while the
  weight is frozen: the input gradient needs only the weight.
- :class:`QKProduct` and :class:`SoftmaxValueProduct` (the two attention products): queries,
  keys and values as int8 with a scale per row; the softmax probabilities as uint8 with a
  scale per row (the row's largest probability / 255: a near-uniform row over many tokens
  keeps its resolution, where the reference's fixed 1/256 step rounds most entries of such a
  row to zero). The softmax is fused into the second product, so the probabilities are
  stored once (plain PyTorch keeps them twice: the softmax's output and the product's input).
- :class:`Int4GELU`: the input as a 4-bit code, two per byte. The codes are 16 intervals of
  the input, narrow where GELU's slope changes fast, and the backward reads each interval's
  mean slope. Measured on MiniLM's GELU inputs the reference's uniform code (step 0.5, range
  -4..3.5) gives gradient cosines of 0.982-0.984; these intervals give 0.994-0.995.
- :class:`TopKLayerNorm` (a LayerNorm whose weight is frozen this step): only the largest 10 %
  of its normalised input by magnitude (float32 values, int32 indices) and one inverse
  standard deviation per row, enough for the input gradient (the reference's pruning, after
  DropIT). Gradient cosines: >= 0.998 on MiniLM, whose normalised inputs are heavy-tailed;
  0.985-0.995 on near-Gaussian inputs (a randomly initialised ViT), where the dropped 90 %
  hold about half the energy.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

# Interval edges of the 4-bit GELU code: 15 edges, 16 codes.
GELU_EDGES = (-3.0, -2.25, -1.75, -1.25, -0.875, -0.5, -0.25, 0.0, 0.25, 0.5, 0.875, 1.25,
              1.75, 2.25, 3.0)
LAYERNORM_KEEP = 0.1  # share of a frozen LayerNorm's normalised input kept (the reference's)


# -- quantisers --------------------------------------------------------------------------------
def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one float32 scale per row (the last dimension)."""
    scale = x.detach().abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-12) / 127.0
    codes = torch.round(x.detach().float() / scale).clamp_(-127, 127).to(torch.int8)
    return codes, scale


def dequantize_rows(codes: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype
                    ) -> torch.Tensor:
    return (codes.float() * scale).to(dtype)


def quantize_probabilities(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities (non-negative) as uint8 with one scale per row."""
    scale = p.detach().amax(dim=-1, keepdim=True).float().clamp_min(1e-12) / 255.0
    codes = torch.round(p.detach().float() / scale).clamp_(0, 255).to(torch.uint8)
    return codes, scale


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Codes 0..15 (uint8), two per byte: the first half of the flat tensor in the high
    nibbles, the second in the low (an odd count gets one zero nibble of padding)."""
    flat = codes.reshape(-1)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    high, low = flat.view(2, -1)
    return (high << 4) | low


def unpack_nibbles(packed: torch.Tensor, numel: int) -> torch.Tensor:
    return torch.cat([packed >> 4, packed & 0x0F])[:numel]


def _gelu_slope(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0))) + \
        x * torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _gelu_slope_table() -> torch.Tensor:
    """Mean GELU slope over each code's interval (the tails over [-8, -3] and [3, 8], where
    the slope has reached its limit 0 or 1 to within 0.004)."""
    edges = torch.tensor(GELU_EDGES, dtype=torch.float64)
    grid = torch.linspace(-8.0, 8.0, 160_001, dtype=torch.float64)
    codes = torch.bucketize(grid, edges)
    slopes = _gelu_slope(grid)
    return torch.stack([slopes[codes == code].mean() for code in range(len(GELU_EDGES) + 1)])


_SLOPES = _gelu_slope_table().float()
_EDGES = torch.tensor(GELU_EDGES)


def _dropout_mask(shape, p: float, device) -> torch.Tensor:
    return torch.empty(shape, device=device).bernoulli_(1.0 - p).bool()


# -- the functions -----------------------------------------------------------------------------
class Int8InputLinear(torch.autograd.Function):
    """``F.linear(x, weight, bias)``; keeps ``x`` as int8 (a scale per row) only while the
    weight trains."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.dtype, ctx.has_bias = x.dtype, bias is not None
        if weight.requires_grad:
            codes, scale = quantize_rows(x)
            ctx.save_for_backward(weight, codes, scale)
        else:
            ctx.save_for_backward(weight)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        weight, *kept = ctx.saved_tensors
        grad_x = grad_out @ weight.to(grad_out.dtype) if ctx.needs_input_grad[0] else None
        grad_w = grad_b = None
        if ctx.needs_input_grad[1] and kept:
            x = dequantize_rows(*kept, grad_out.dtype)
            grad_w = grad_out.reshape(-1, grad_out.shape[-1]).T @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.reshape(-1, grad_out.shape[-1]).sum(0)
        return grad_x, grad_w, grad_b


class Int4GELU(torch.autograd.Function):
    """Exact GELU; keeps the input as a packed 4-bit interval code."""

    @staticmethod
    def forward(ctx, x):
        codes = torch.bucketize(x.detach(), _EDGES.to(x.device, x.dtype)).to(torch.uint8)
        ctx.shape, ctx.dtype = x.shape, x.dtype
        ctx.save_for_backward(pack_nibbles(codes))
        return F.gelu(x)

    @staticmethod
    def backward(ctx, grad_out):
        (packed,) = ctx.saved_tensors
        codes = unpack_nibbles(packed, math.prod(ctx.shape)).long().reshape(ctx.shape)
        return grad_out * _SLOPES.to(grad_out.device, grad_out.dtype)[codes]


class QKProduct(torch.autograd.Function):
    """``q @ k.transpose(-2, -1)`` with ``q`` and ``k`` kept as int8 (a scale per row)."""

    @staticmethod
    def forward(ctx, q, k):
        ctx.dtype = q.dtype
        ctx.save_for_backward(*quantize_rows(q), *quantize_rows(k))
        return q @ k.transpose(-2, -1)

    @staticmethod
    def backward(ctx, grad_out):
        q_codes, q_scale, k_codes, k_scale = ctx.saved_tensors
        q = dequantize_rows(q_codes, q_scale, grad_out.dtype)
        k = dequantize_rows(k_codes, k_scale, grad_out.dtype)
        return grad_out @ k, grad_out.transpose(-2, -1) @ q


class SoftmaxValueProduct(torch.autograd.Function):
    """``dropout(softmax(scores)) @ v``: probabilities kept as uint8, ``v`` as int8, the
    dropout mask as bool."""

    @staticmethod
    def forward(ctx, scores, v, dropout: float):
        probs = torch.softmax(scores, dim=-1)
        dropped = probs
        mask = None
        if dropout > 0:
            mask = _dropout_mask(probs.shape, dropout, probs.device)
            dropped = probs * mask / (1.0 - dropout)
        ctx.dropout = dropout
        kept = [*quantize_probabilities(probs), *quantize_rows(v)]
        ctx.save_for_backward(*kept, *([mask] if mask is not None else []))
        return dropped @ v

    @staticmethod
    def backward(ctx, grad_out):
        p_codes, p_scale, v_codes, v_scale, *mask = ctx.saved_tensors
        probs = dequantize_rows(p_codes, p_scale, grad_out.dtype)
        v = dequantize_rows(v_codes, v_scale, grad_out.dtype)
        dropped = probs
        grad_probs = grad_out @ v.transpose(-2, -1)
        if mask:
            keep = mask[0].to(grad_out.dtype) / (1.0 - ctx.dropout)
            dropped, grad_probs = probs * keep, grad_probs * keep
        grad_v = dropped.transpose(-2, -1) @ grad_out
        grad_scores = probs * (grad_probs - (grad_probs * probs).sum(-1, keepdim=True))
        return grad_scores, grad_v, None


class TopKLayerNorm(torch.autograd.Function):
    """Exact LayerNorm over the last dimension, for a frozen weight and bias: keeps the
    largest ``LAYERNORM_KEEP`` of the normalised input (values, int32 indices) and each row's
    inverse standard deviation; returns only the input gradient."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps: float):
        out = F.layer_norm(x, x.shape[-1:], weight, bias, eps)
        detached = x.detach().float()
        mean = detached.mean(-1, keepdim=True)
        rstd = torch.rsqrt(detached.var(-1, unbiased=False, keepdim=True) + eps)
        normalised = ((detached - mean) * rstd).reshape(-1)
        keep = max(1, int(normalised.numel() * LAYERNORM_KEEP))
        indices = normalised.abs().topk(keep, sorted=False).indices
        values = normalised[indices]
        ctx.shape, ctx.dtype = x.shape, x.dtype
        # int32 indices halve the index bytes; a tensor past 2**31 values needs int64.
        index_type = torch.int32 if normalised.numel() < 2**31 else torch.int64
        tensors = [values, indices.to(index_type), rstd]
        ctx.has_weight = weight is not None
        ctx.save_for_backward(*tensors, *([weight] if weight is not None else []))
        return out

    @staticmethod
    def backward(ctx, grad_out):
        values, indices, rstd, *weight = ctx.saved_tensors
        normalised = torch.zeros(math.prod(ctx.shape), device=grad_out.device)
        normalised = normalised.scatter_(0, indices.long(), values).reshape(ctx.shape)
        g = grad_out.float() * (weight[0].float() if weight else 1.0)
        grad_x = rstd * (g - g.mean(-1, keepdim=True)
                         - normalised * (g * normalised).mean(-1, keepdim=True))
        return grad_x.to(ctx.dtype), None, None, None
