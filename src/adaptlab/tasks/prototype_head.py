"""A new linear classification head started at the class prototypes of the features it reads.

A randomly initialised head must first learn what the frozen-feature nearest-class-mean
baseline gets for free, and with a few hundred examples and a few epochs it often never does
(on the code demo, head-only at its defaults ended 19 points below that baseline). Starting the
head at the prototypes (weight imprinting, Qi et al. 2018; the linear-probe start of LP-FT,
Kumar et al. 2022) makes step 0 the baseline's classifier (for the strategies whose model
starts as the pre-trained one), so every strategy starts at least
there and its gradients go into adapting the features, not into finding the classes.

The features are the head's own input in the model as the strategy set it up (a prompt, a
side network or re-drawn top blocks change them), read through a forward hook on the head over
the training split without augmentation. No library offers this for an arbitrary task model.
"""

from __future__ import annotations

import torch
from torch import nn

from adaptlab.tasks.base import move_to

# Softmax temperatures tried on the training features (the one with the lowest cross-entropy
# is kept): a cosine classifier's usual scales lie in this range.
SCALES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


def trainable_linear_heads(model: nn.Module, head: str) -> list[nn.Linear]:
    """The Linear modules the forward pass uses as the head ``head`` (under a peft wrapper,
    the trainable copy, not the frozen original)."""
    from adaptlab.strategies.layer_rates import under_entry

    return [module for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and under_entry(name, head)
            and module.weight.requires_grad]


@torch.no_grad()
def head_inputs(model: nn.Module, linear: nn.Linear, loader, device
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs ``linear`` receives for every example of ``loader``, with the labels."""
    captured: list[torch.Tensor] = []
    hook = linear.register_forward_hook(
        lambda _m, args, _out: captured.append(args[0].detach().float().cpu()))
    labels = []
    was_training = model.training
    model.eval()
    try:
        for inputs, y in loader:
            model(move_to(inputs, device))
            labels.append(y.cpu())
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(captured), torch.cat(labels)


def cosine_prototypes(features: torch.Tensor, labels: torch.Tensor, num_classes: int
                      ) -> torch.Tensor:
    """``[num_classes, width]``: each class's mean of unit-length features, itself of unit
    length (a class without examples gets a zero row); the few-shot baseline's prototypes."""
    unit = nn.functional.normalize(features, dim=1)
    prototypes = torch.stack([unit[labels == c].mean(0) if (labels == c).any()
                              else torch.zeros(features.shape[1]) for c in range(num_classes)])
    return nn.functional.normalize(prototypes, dim=1)


def prototype_weights(features: torch.Tensor, labels: torch.Tensor, num_classes: int
                      ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(weight, bias, scale)`` of a linear layer whose logits are ``scale`` times the
    feature's length over the average length times its cosine with each class's prototype
    (the mean of the class's unit-length features; a class without examples gets a zero row).
    Its argmax is the cosine nearest-class-mean classifier's, the run's few-shot baseline;
    ``scale`` is the one of :data:`SCALES` with the lowest training cross-entropy."""
    prototypes = cosine_prototypes(features, labels, num_classes) \
        / features.norm(dim=1).mean().clamp_min(1e-12)
    best = min(SCALES, key=lambda s: float(nn.functional.cross_entropy(
        s * features @ prototypes.T, labels)))
    return best * prototypes, torch.zeros(num_classes), best


def init_head_from_prototypes(model: nn.Module, head: str, loader, device,
                              num_classes: int) -> float | None:
    """Set the head of ``model`` (named ``head`` in its layer map) to its class prototypes;
    returns the chosen scale, or ``None`` where the head is not one trainable Linear layer
    with one output per class (an MLP head keeps its random start)."""
    linears = trainable_linear_heads(model, head)
    if len(linears) != 1 or linears[0].out_features != num_classes:
        return None
    linear = linears[0]
    features, labels = head_inputs(model, linear, loader, device)
    weight, bias, scale = prototype_weights(features, labels, num_classes)
    with torch.no_grad():
        linear.weight.copy_(weight.to(linear.weight))
        if linear.bias is not None:
            linear.bias.copy_(bias.to(linear.bias))
    return scale
