"""SlimFit: dynamic per-step freezing from training dynamics, with compressed activations
(:mod:`.strategy` registers it; :mod:`.units`, :mod:`.schedule`, :mod:`.compress`,
:mod:`.patching` hold the parts)."""

from adaptlab.strategies.slimfit.strategy import SlimFit, SlimFitConfig

__all__ = ["SlimFit", "SlimFitConfig"]
