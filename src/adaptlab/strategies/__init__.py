"""Fine-tuning strategies: one module per strategy, one registration each.

Built-in strategies are listed lazily (name -> module) so ``adaptlab domains`` can name them
without importing torch; a strategy's module is imported when it is used.
"""

from adaptlab.strategies.registry import get_strategy_class, register_strategy, strategy_names

__all__ = ["get_strategy_class", "register_strategy", "strategy_names"]
