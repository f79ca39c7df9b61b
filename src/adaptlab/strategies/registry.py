"""The strategy registry: ``@register_strategy`` plus a lazy table of the built-in ones.

Third-party packages add strategies through the ``adaptlab.strategies`` entry-point group
(``name = "package.module"``; importing that module runs its ``@register_strategy``).
"""

from __future__ import annotations

from adaptlab.registry import LazyRegistry

STRATEGIES: LazyRegistry = LazyRegistry("strategy", "adaptlab.strategies", {
    "full": "adaptlab.strategies.full",
    "head": "adaptlab.strategies.head",
    "freeze": "adaptlab.strategies.freeze",
    "lora": "adaptlab.strategies.peft_family.lora",
    "ia3": "adaptlab.strategies.peft_family.ia3",
    "loha": "adaptlab.strategies.peft_family.loha",
    "lokr": "adaptlab.strategies.peft_family.lokr",
    "oft": "adaptlab.strategies.peft_family.oft",
    "vera": "adaptlab.strategies.peft_family.vera",
    "adalora": "adaptlab.strategies.peft_family.adalora",
    "lst": "adaptlab.strategies.lst",
    "slimfit": "adaptlab.strategies.slimfit",
    "bridge": "adaptlab.strategies.bridge",
    "svfit": "adaptlab.strategies.svfit",
    "llrd": "adaptlab.strategies.llrd",
    "vpt": "adaptlab.strategies.prompts.vpt",
    "dvpt": "adaptlab.strategies.prompts.dvpt",
    "idpt": "adaptlab.strategies.prompts.idpt",
})


def register_strategy(cls: type) -> type:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    return STRATEGIES.register(cls)


def strategy_names() -> list[str]:
    """Every known strategy name, without importing any strategy module."""
    return STRATEGIES.names()


def get_strategy_class(name: str) -> type:
    """The strategy class registered as ``name`` (imports its module on first use)."""
    return STRATEGIES.get(name)


def resolved_strategy_options(name: str, options: dict | None) -> dict:
    """Strategy ``name``'s every option, ``options`` filled with its defaults
    (:meth:`Strategy.resolved_options`). A new run records this; a run written before runs
    recorded it (only the options given) is read through this too, with today's defaults,
    for nothing else says which defaults it trained with. Resolved options compare equal
    whether a default was given or left unset."""
    return get_strategy_class(name).resolved_options(dict(options or {}))


def recorded_strategy_options(name: str, options: dict | None) -> dict:
    """The options a recorded run (its ``config.json``, an export's, a source run's) trained
    with: those it recorded, plus, for an option added after it was recorded, the value it
    had then (``Strategy.options_before``), not today's default. An unknown strategy is left
    to the caller's own check."""
    from adaptlab.errors import AdaptlabError

    recorded = dict(options or {})
    try:
        before = get_strategy_class(name).options_before
    except AdaptlabError:
        return recorded
    return {**before, **recorded}
