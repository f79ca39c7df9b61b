"""Ladder side-tuning (``lst``): importing the package registers the strategy.

- :mod:`.pruning`: side weights from the backbone's own, pruned to the side's width;
- :mod:`.side_blocks`: the side blocks, and reading a backbone block per family;
- :mod:`.families`: which backbones a side network can shadow (a registry);
- :mod:`.series`: the family for Fracast, whose rungs are the calls of one shared block;
- :mod:`.ladder`: the frozen backbone run without autograd, feeding the side network;
- :mod:`.strategy`: the registered strategy.
"""

from adaptlab.strategies.lst.strategy import LadderSideTuning, LstConfig

__all__ = ["LadderSideTuning", "LstConfig"]
