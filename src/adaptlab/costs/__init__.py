"""Cost accounting: parameters, memory broken down, time."""

from adaptlab.costs.meter import CostMeter, SavedActivationCounter

__all__ = ["CostMeter", "SavedActivationCounter"]
