"""Which strategies apply to a backbone: every registered strategy's own ``check_model``
asked on the task model, so what ``adaptlab domains --backbone`` and the setup panel show is
what a run would accept or refuse (in the same words)."""

from __future__ import annotations

from torch import nn

from adaptlab.backbones.layer_map import LayerMap
from adaptlab.errors import AdaptlabError
from adaptlab.strategies.base import Strategy


def strategy_applicability(model: nn.Module, layer_map: LayerMap,
                           names: list[str] | None = None) -> dict[str, str | None]:
    """``{strategy: None}`` where it applies, ``{strategy: the one-line refusal}`` where its
    ``check_model`` (with default options) refuses this model. A strategy without a
    ``check_model`` of its own adapts any backbone. ``model`` is left as it is."""
    from adaptlab.strategies.registry import get_strategy_class, strategy_names

    verdicts: dict[str, str | None] = {}
    for name in names if names is not None else strategy_names():
        cls = get_strategy_class(name)
        if cls.check_model is Strategy.check_model and cls.check is Strategy.check:
            verdicts[name] = None
            continue
        try:
            strategy = cls.from_options({})
            strategy.check(layer_map)
            strategy.check_model(model, layer_map)
        except AdaptlabError as exc:
            verdicts[name] = str(exc)
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not hide the rest
            verdicts[name] = f"strategy {name!r}: its check failed ({type(exc).__name__}: {exc})"
        else:
            verdicts[name] = None
    return verdicts


def applicable_strategies(model: nn.Module, layer_map: LayerMap) -> list[str]:
    """Names of the registered strategies that can adapt ``model`` (the peft methods with a
    target of a type they wrap, and every other strategy its ``check_model`` accepts).

    >>> from adaptlab.backbones.offline import efficientnet_lite0  # doctest: +SKIP
    >>> from adaptlab.tasks.classification import build_model  # doctest: +SKIP
    >>> applicable_strategies(*build_model(efficientnet_lite0(), 2))  # doctest: +SKIP
    ['full', 'head', 'freeze', 'lora', 'ia3', 'loha', 'lokr', 'oft', 'adalora', ...]
    """
    return [name for name, reason in strategy_applicability(model, layer_map).items()
            if reason is None]


def backbone_applicability(backbone) -> dict[str, str | None]:
    """:func:`strategy_applicability` for a bare backbone, under a classification head:
    which layers a strategy can adapt are the backbone's, whatever the task's head."""
    from adaptlab.tasks.classification import build_model

    return strategy_applicability(*build_model(backbone, 2))
