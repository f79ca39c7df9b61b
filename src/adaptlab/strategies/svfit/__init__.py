"""Singular-value fine-tuning (``svfit``): importing the package registers the strategy.

- :mod:`.spectrum`: the SVD of a target weight and the rank that keeps a share of its energy;
- :mod:`.layer`: the adapted weight as a parametrization of the layer's own weight;
- :mod:`.strategy`: the registered strategy.
"""

from adaptlab.strategies.svfit.strategy import SingularValueFineTuning, SvfitConfig

__all__ = ["SingularValueFineTuning", "SvfitConfig"]
