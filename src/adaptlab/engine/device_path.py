"""How a model runs fast on its device: memory layout, activation recomputation, loaders.

Mixed precision and compilation are Accelerate's (``mixed_precision``, ``dynamo_backend``);
what it leaves to the caller is here.
"""

from __future__ import annotations

import torch
from torch import nn

from adaptlab.errors import AdaptlabError


def use_channels_last(model: nn.Module, device: torch.device, wanted: bool,
                      mixed_precision: str = "no") -> bool:
    """Channels-last weights for a convolutional model on CUDA, and on the CPU in float32
    (oneDNN's convolutions run faster on it: EfficientNet-Lite0's training step 1.36x here;
    under bf16 autocast on the CPU no faster); whether it was applied (the engine then gives
    images the same layout)."""
    on_cpu = device.type == "cpu" and mixed_precision == "no"
    if not wanted or not (device.type == "cuda" or on_cpu) or \
            not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return False
    model.to(memory_format=torch.channels_last)
    return True


def run_channels_last(model: nn.Module, config, device: torch.device,
                      mixed_precision: str | None = None) -> bool:
    """The layout a run's model trains in on ``device``, given to it; whether channels-last.

    Whatever runs a finished run's model again (the reload check, ``load_run`` and with it
    predictions, explanations and soups) takes the layout training took: channels-last and
    NCHW convolutions sum in another order, 1.1e-5 apart on the medical demo's logits, where a
    reader reproduces the run's own outputs and metrics. FSDP shards contiguous parameters
    only, so a sharded run keeps NCHW. ``mixed_precision``: Accelerate's resolved choice (the
    CPU's ``auto`` is float32)."""
    precision = mixed_precision or ("no" if config.mixed_precision == "auto"
                                    else config.mixed_precision)
    return use_channels_last(model, device, config.channels_last and not config.fsdp,
                             precision)


def channels_last_inputs(inputs):
    if torch.is_tensor(inputs) and inputs.ndim == 4 and inputs.is_floating_point():
        return inputs.contiguous(memory_format=torch.channels_last)
    return inputs


def enable_gradient_checkpointing(model: nn.Module, backbone_name: str) -> str:
    """Recompute the backbone's blocks in backward; which mechanism was used.

    Hugging Face models and timm models each have their own switch (which knows the model's
    blocks); non-reentrant checkpointing works when the blocks' inputs need no gradient (a
    frozen embedding, an adapter inside the block)."""
    for module in model.modules():
        if getattr(module, "supports_gradient_checkpointing", False):
            options = {"use_reentrant": False}
            if hasattr(module, "activation_checkpointing_enable"):  # its newer name
                module.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
            else:
                module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
            return "transformers"
        if hasattr(module, "set_grad_checkpointing"):
            try:
                module.set_grad_checkpointing(True)
            except (AssertionError, NotImplementedError):
                continue
            return "timm"
    raise AdaptlabError(f"gradient_checkpointing: backbone {backbone_name!r} has no block "
                        "recomputation (Hugging Face and timm backbones do); set it to false")


def loader_options(device_type: str) -> dict:
    """Pinned host memory for copies to a GPU. Workers start afresh at every pass: a worker
    kept between epochs keeps its copy of the dataset, whose epoch (the seed of each item's
    augmentation) the engine's ``set_epoch`` then never reaches, and a kept loader draws its
    workers' seed from the global random state once instead of at every pass, so the dropout
    after it, and a resumed run, would differ from a run without workers."""
    return {"pin_memory": device_type == "cuda", "persistent_workers": False}
