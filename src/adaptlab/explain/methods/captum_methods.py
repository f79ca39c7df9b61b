"""Captum's attribution methods behind the one interface."""

from __future__ import annotations

import torch
from torch import nn

from adaptlab.explain.methods import AttributionMethod, MethodContext, register_method


def stacked(ctx: MethodContext, samples: list) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples' inputs and baselines as two batches on the score module's device."""
    device = next(ctx.score.parameters()).device
    inputs = torch.cat([s.inputs for s in samples]).to(device)
    baselines = torch.cat([ctx.target.baseline(s) for s in samples]).to(device)
    return inputs, baselines


@register_method
class IntegratedGradients(AttributionMethod):
    name = "integrated_gradients"
    library = "captum"
    description = "Integrated Gradients from a baseline (Sundararajan et al. 2017)"
    fallback = "saliency"

    def attribute(self, ctx, samples, targets):
        from captum.attr import IntegratedGradients as Captum

        inputs, baselines = stacked(ctx, samples)
        return Captum(ctx.score).attribute(inputs, baselines=baselines, target=targets,
                                           n_steps=int(ctx.settings.get("n_steps", 32)),
                                           internal_batch_size=ctx.rows)


@register_method
class Saliency(AttributionMethod):
    name = "saliency"
    library = "captum"
    description = "absolute input gradient (Simonyan et al. 2013)"
    fallback = None  # a plain gradient is the last resort

    def attribute(self, ctx, samples, targets):
        from captum.attr import Saliency as Captum

        inputs, _ = stacked(ctx, samples)
        return Captum(ctx.score).attribute(inputs, target=targets, abs=True)


@register_method
class NoiseTunnelSaliency(AttributionMethod):
    name = "noise_tunnel"
    library = "captum"
    description = "SmoothGrad-squared: NoiseTunnel over saliency (Smilkov et al. 2017)"
    fallback = "saliency"

    def attribute(self, ctx, samples, targets):
        from captum.attr import NoiseTunnel, Saliency

        inputs, _ = stacked(ctx, samples)
        spread = float((inputs.max() - inputs.min()).item()) or 1.0
        return NoiseTunnel(Saliency(ctx.score)).attribute(
            inputs, nt_type="smoothgrad_sq", nt_samples=int(ctx.settings.get("nt_samples", 16)),
            nt_samples_batch_size=max(1, ctx.rows // len(samples)),
            stdevs=0.1 * spread, target=targets, abs=False)


@register_method
class Occlusion(AttributionMethod):
    name = "occlusion"
    library = "captum"
    description = "output change when a sliding window is set to the baseline (Zeiler & Fergus)"
    one_sample = True  # the window depends on the sample (a series' observed length)

    def attribute(self, ctx, samples, targets):
        from captum.attr import Occlusion as Captum

        inputs, baselines = stacked(ctx, samples)
        window, strides = ctx.target.occlusion_window(samples[0])
        return Captum(ctx.score).attribute(inputs, sliding_window_shapes=window, strides=strides,
                                           baselines=baselines, target=targets,
                                           perturbations_per_eval=max(1, ctx.rows))


def _module_named(model: nn.Module, name: str) -> nn.Module:
    """``name`` from the unwrapped model's layer map, found in a model that may be wrapped
    (a peft model prefixes every name)."""
    for candidate, module in model.named_modules():
        if candidate == name or candidate.endswith("." + name):
            return module
    raise KeyError(name)


@register_method
class GradCam(AttributionMethod):
    name = "gradcam"
    library = "captum"
    description = "GradCAM on the backbone's last block, upsampled to the input"
    space = "features"

    def unsupported(self, target):
        if target.kind != "image":
            return f"GradCAM needs a spatial feature map; a {target.kind} model has none"
        if not getattr(target, "layer_map", None) or not target.layer_map.blocks:
            return "GradCAM needs the backbone's block list, and the layer map has none"
        return None

    def attribute(self, ctx, samples, targets):
        from captum.attr import LayerAttribution, LayerGradCam

        inputs, _ = stacked(ctx, samples)
        layer = last_spatial_block(ctx.score, ctx.target.layer_map, inputs[:1])
        if block_output_dim(ctx.score, layer, inputs[:1]) == 3:
            # A ViT block gives tokens [B, T, D]: drop the prefix tokens, re-grid the patches.
            prefix = next((m.num_prefix_tokens for m in ctx.score.modules()
                           if isinstance(getattr(m, "num_prefix_tokens", None), int)), 1)
            maps = vit_token_grid(token_gradcam(ctx.score, layer, inputs, targets), prefix)
        else:
            maps = LayerGradCam(ctx.score, layer).attribute(inputs, target=targets,
                                                            relu_attributions=True)
        return LayerAttribution.interpolate(maps, tuple(inputs.shape[-2:]),
                                            interpolate_mode="bilinear")[:, 0]


@torch.no_grad()
def block_output_dim(score: nn.Module, layer: nn.Module, example: torch.Tensor) -> int:
    dims: list[int] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: dims.append(out.dim()))
    try:
        score(example)
    finally:
        handle.remove()
    return dims[-1]


def token_gradcam(score: nn.Module, layer: nn.Module, inputs: torch.Tensor, targets
                  ) -> torch.Tensor:
    """GradCAM on a token layer ``[B, T, D]`` -> ``[B, T, 1]``: channel weights are the
    gradients averaged over tokens, the map the ReLU of the weighted sum over channels.

    Written here because captum's ``LayerGradCam`` takes dimension 1 as the channels (the
    CNN layout), which for tokens averages over the wrong axis."""
    from captum._utils.gradient import compute_layer_gradients_and_eval

    grads, activations = compute_layer_gradients_and_eval(score, layer, inputs,
                                                           target_ind=targets)
    weights = grads[0].mean(dim=1, keepdim=True)
    return torch.relu((weights * activations[0]).sum(dim=-1, keepdim=True))


@torch.no_grad()
def last_spatial_block(score: nn.Module, layer_map, example: torch.Tensor) -> nn.Module:
    """The top block whose output is a feature map (``[B, C, h, w]``) or a token grid
    (``[B, tokens, D]``); a layer map's last group can be a pooling or norm layer."""
    candidates = [_module_named(score, name) for block in layer_map.blocks for name in block]
    shapes: dict[int, int] = {}
    handles = [m.register_forward_hook(
        lambda mod, _i, out: shapes.__setitem__(id(mod), getattr(out, "dim", lambda: 0)()))
        for m in candidates]
    try:
        score(example)
    finally:
        for handle in handles:
            handle.remove()
    for module in reversed(candidates):
        if shapes.get(id(module)) in (3, 4):
            return module
    raise ValueError("no block of the backbone gives a spatial feature map")


def vit_token_grid(maps: torch.Tensor, prefix_tokens: int) -> torch.Tensor:
    """``[B, tokens, 1|D]`` per-token values -> ``[B, 1, side, side]`` on the patch grid."""
    values = maps.sum(dim=-1) if maps.shape[-1] > 1 else maps[..., 0]
    values = values[:, prefix_tokens:]
    side = int(round(values.shape[1] ** 0.5))
    if side * side != values.shape[1]:
        raise ValueError(f"{values.shape[1]} patch tokens do not form a square grid")
    return values.reshape(values.shape[0], 1, side, side)


@register_method
class LayerIntegratedGradients(AttributionMethod):
    name = "layer_integrated_gradients"
    library = "captum"
    description = "Layer Integrated Gradients on the word embeddings, from padding tokens"
    one_sample = True
    reads_inputs = False  # it embeds the token ids itself

    def unsupported(self, target):
        return None if target.kind == "tokens" else \
            f"Layer IG on embeddings is for token models, not {target.kind}"

    def attribute(self, ctx, samples, targets):
        from captum.attr import LayerIntegratedGradients as Captum

        sample = samples[0]
        model = ctx.score.model
        mask = sample.extras["attention_mask"]
        device = next(model.parameters()).device

        def forward(ids):
            return model({"input_ids": ids, "attention_mask": mask.to(device).expand(len(ids), -1)})

        ids = sample.extras["input_ids"].to(device)
        explainer = Captum(forward, ctx.target.embedding(model))
        return explainer.attribute(ids, baselines=ctx.target.baseline_ids(ids), target=targets,
                                   n_steps=int(ctx.settings.get("n_steps", 32)),
                                   internal_batch_size=ctx.rows)
