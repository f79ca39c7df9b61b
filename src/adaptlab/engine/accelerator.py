"""Device and precision choice, made once per run: CUDA, then MPS, then CPU."""

from __future__ import annotations

import torch

from adaptlab.engine import distributed
from adaptlab.errors import AdaptlabError


def choose_mixed_precision(requested: str, on_cuda: bool) -> str:
    if requested == "auto":
        if not on_cuda:
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    # bf16 autocast runs on the CPU as well (Accelerate's cpu autocast); with native bf16
    # matrix units (AVX512-BF16, AMX) models train faster (the code demo's MiniLM epoch 1.26-1.34x,
    # bench/cpu_bf16.py). It stays a choice, not the CPU's default: it changes the numbers a
    # float32 run gives. fp16 needs a gradient scaler, which Accelerate keeps for CUDA.
    if requested == "fp16" and not on_cuda:
        raise AdaptlabError("mixed_precision=fp16 needs a CUDA device; on the CPU use 'bf16', "
                            "'no' or 'auto'")
    return requested


def check_device(device: str, mixed_precision: str) -> tuple[bool, str]:
    """(whether the run trains on CUDA, the mixed precision it trains with); refuses a device
    this machine lacks or a precision it cannot run, by name (a run checks this before it
    writes its folder)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise AdaptlabError("device 'cuda' requested but no CUDA device is available")
    if device == "mps" and not torch.backends.mps.is_available():
        raise AdaptlabError("device 'mps' requested but MPS is not available")
    on_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    return on_cuda, choose_mixed_precision(mixed_precision, on_cuda)


def make_accelerator(device: str, mixed_precision: str, grad_accum: int,
                     compile_model: bool = False, tracking: dict | None = None):
    """An Accelerator for one run (the global Accelerate state is reset first, so several runs
    in one notebook kernel do not inherit each other's precision or device). ``tracking``:
    the experiment trackers' options (``engine.trackers.RunTrackers.accelerator_options``)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs

    on_cuda, precision = check_device(device, mixed_precision)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    # split_batches: batch_size is the global batch (see adaptlab.engine.distributed).
    # find_unused_parameters: a plug-in strategy may leave a trainable parameter out of a
    # forward, which plain DDP refuses at the next step; the price is one walk of the
    # autograd graph per step (PyTorch warns once where nothing was unused).
    return Accelerator(cpu=distributed.cpu_asked(device), mixed_precision=precision,
                       gradient_accumulation_steps=grad_accum,
                       dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True,
                                                                 split_batches=True),
                       kwargs_handlers=[DistributedDataParallelKwargs(
                           find_unused_parameters=True)],
                       dynamo_backend="inductor" if compile_model else "no",
                       step_scheduler_with_optimizer=False, **(tracking or {}))
