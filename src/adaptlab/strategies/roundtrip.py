"""Trust a saved run only once it reloads: the strategy's own ``apply`` + ``load_final`` on a
freshly built model must give the trained model's outputs. This catches what peft users meet
as a reloaded model that lost its head or its BatchNorm statistics (peft #602, #876, #577), and
the same for any strategy that forgets to declare a tensor."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from adaptlab.errors import AdaptlabError
from adaptlab.tasks.base import move_to

ROUNDTRIP_TOLERANCE = 1e-5
MIXED_PRECISION_TOLERANCE = 1e-2  # of the outputs' largest magnitude: bf16 keeps ~3 digits


@torch.no_grad()
def _outputs(a: nn.Module, b: nn.Module, batch) -> tuple[tuple, tuple]:
    """Both models' outputs on ``batch`` (as tuples of tensors), in eval mode on ``a``'s
    device; ``a`` keeps its training mode."""
    was_training = a.training
    a.eval()
    b.eval()
    device = next(a.parameters()).device
    b.to(device)
    batch = move_to(batch, device)
    out_a, out_b = a(batch), b(batch)
    a.train(was_training)
    return ((out_a, out_b) if isinstance(out_a, tuple) else ((out_a,), (out_b,)))


def _largest_difference(out_a: tuple, out_b: tuple) -> float:
    return max((x.float() - y.float()).abs().max().item()
               for x, y in zip(out_a, out_b, strict=True))


def max_logit_difference(a: nn.Module, b: nn.Module, batch) -> float:
    """Largest absolute difference between two models' outputs (tensors or tuples of them)."""
    return _largest_difference(*_outputs(a, b, batch))


def check_round_trip(trained: nn.Module, strategy, run_dir: Path,
                     build_base: Callable[[], tuple[nn.Module, object]], batch,
                     autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
                     mixed_precision: bool = False, channels_last: bool = False) -> float:
    """Reload ``run_dir``'s final weights as :func:`adaptlab.load_run` does and compare
    outputs on ``batch``; returns the largest difference, raises above the tolerance.

    A model trained under mixed precision runs its forward in autocast (Accelerate wraps it),
    so the reloaded one is run in the same ``autocast`` and the tolerance is that of 16-bit
    arithmetic, relative to the outputs' scale. A model trained channels-last is reloaded
    channels-last, as ``load_run`` reloads it."""
    base, layer_map = build_base()
    reloaded = strategy.apply(base, layer_map)
    strategy.load_final(reloaded, run_dir)
    if channels_last:
        reloaded.to(memory_format=torch.channels_last)
    with (autocast or contextlib.nullcontext)():
        trained_out, reloaded_out = _outputs(trained, reloaded, batch)
    diff = _largest_difference(trained_out, reloaded_out)
    tolerance = ROUNDTRIP_TOLERANCE
    if mixed_precision:  # the scale of the very outputs compared, not of a second forward
        scale = max((o.float().abs().max().item() for o in trained_out), default=1.0)
        tolerance = MIXED_PRECISION_TOLERANCE * max(1.0, scale)
    if diff > tolerance:
        raise AdaptlabError(f"the weights saved in {run_dir} (strategy {strategy.name!r}) reload "
                            f"with outputs differing by {diff:.3g} (> {tolerance:.3g}); "
                            "not trusting them")
    return diff
