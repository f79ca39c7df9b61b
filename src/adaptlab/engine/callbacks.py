"""Per-step engine hooks. Strategies that change the trainable set while training (dynamic
freezing) subclass this and return instances from ``Strategy.callbacks``."""

from __future__ import annotations


class EngineCallback:
    def on_step_start(self, trainer) -> None:
        """Before the forward pass of each batch."""

    def on_step_end(self, trainer) -> None:
        """After the optimizer step (or the accumulation micro-step) of each batch."""
