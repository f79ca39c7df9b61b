"""Config dataclasses as data: typed coercion from text, bounds from field metadata, JSON schema.

Field metadata keys: ``help`` (one line), ``min`` / ``max`` (inclusive bounds), ``choices``.
The widgets build their controls from :func:`describe`, so every strategy's options get
controls without hand-written UI.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from adaptlab.errors import AdaptlabError, did_you_mean


def _base_type(annotation: Any) -> tuple[type, bool]:
    """The concrete type behind ``int | None`` style hints, and whether None is allowed."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])[0], True
    if origin in (list, tuple):
        return list, False
    return annotation, False


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(owner: str, field: dataclasses.Field, raw: Any, hint: Any) -> Any:
    """Turn ``raw`` (text from ``--set`` or a JSON value) into the field's type, checked."""
    kind, optional = _base_type(hint)
    # "none" is the empty value only where a field may be empty: elsewhere it is a word
    # (class_weighting=none), checked against the field's choices like any other.
    if raw is None or (optional and isinstance(raw, str) and raw.lower() in ("none", "null")):
        if optional:
            return None
        raise AdaptlabError(f"{owner}: {field.name} cannot be empty")
    try:
        if kind is bool:
            if isinstance(raw, str):
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(raw)
                value = raw.lower() in ("true", "1", "yes")
            else:
                value = bool(raw)
        elif kind is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError(raw)
            value = int(raw) if not isinstance(raw, str) else int(raw.strip())
        elif kind is float:
            value = float(raw)
        elif kind is list:
            value = [s.strip() for s in raw.split(",") if s.strip()] if isinstance(raw, str) \
                else list(raw)
        else:
            value = str(raw) if kind is str else raw
    except (TypeError, ValueError) as exc:
        raise AdaptlabError(f"{owner}: {field.name}={raw!r} is not a valid "
                            f"{getattr(kind, '__name__', kind)}") from exc
    check_bounds(owner, field, value)
    return value


def check_bounds(owner: str, field: dataclasses.Field, value: Any) -> None:
    meta = field.metadata
    if value is None:
        return
    if "choices" in meta and value not in meta["choices"]:
        raise AdaptlabError(f"{owner}: {field.name}={value!r} is not one of {list(meta['choices'])}")
    if "min" in meta and value < meta["min"]:
        raise AdaptlabError(f"{owner}: {field.name}={value!r} is below the minimum {meta['min']}")
    if "max" in meta and value > meta["max"]:
        raise AdaptlabError(f"{owner}: {field.name}={value!r} is above the maximum {meta['max']}")


def from_dict(cls: type, values: dict[str, Any], owner: str) -> Any:
    """Build ``cls`` from a dict, refusing unknown keys and out-of-range values."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise AdaptlabError(f"{owner}: unknown key {unknown[0]!r}; "
                            f"{did_you_mean(unknown[0], fields)}known keys: {sorted(fields)}")
    hints = _hints(cls)
    kwargs = {name: coerce(owner, fields[name], raw, hints[name]) for name, raw in values.items()}
    instance = cls(**kwargs)
    for name, f in fields.items():
        if name not in kwargs:
            check_bounds(owner, f, getattr(instance, name))
    return instance


def describe(cls: type) -> list[dict[str, Any]]:
    """A JSON description of each field: name, type, default, bounds, help."""
    hints = _hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind, optional = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        entry = {"name": f.name, "type": getattr(kind, "__name__", str(kind)),
                 "optional": optional, "default": default}
        entry.update({k: (list(v) if k == "choices" else v) for k, v in f.metadata.items()})
        out.append(entry)
    return out
