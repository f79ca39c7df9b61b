"""Per-sample seeded randomness for augmentation.

Item ``i`` in epoch ``e`` draws from an RNG seeded by ``(seed, e, i)`` instead of the global
one, so the result does not depend on how many random numbers were drawn before: a resumed
run, or one with more loader workers, augments exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class EpochSeeded:
    """Mixin for datasets: ``set_epoch`` (the engine calls it) and ``seeded(index, fn, x)``."""

    seed: int | None = None
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def seeded(self, index: int, fn: Callable[[Any], Any], value: Any) -> Any:
        if self.seed is None:
            return fn(value)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hash((self.seed, self.epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)
            return fn(value)
