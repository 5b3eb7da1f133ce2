"""Building frozen dataclasses from parsed YAML, with every key, type and value checked.

Generic: :mod:`unfreeze.config.params` declares the dataclasses, this module checks a mapping
against their type hints. Every error is a :class:`ParamsError` naming the key, the value
received and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from unfreeze.config.errors import ParamsError


def fail(key: str, value: Any, expected: str) -> typing.NoReturn:
    """Raise the ParamsError for ``key``: what it must be and the value received."""
    raise ParamsError(f"params: `{key}` must be {expected}, got {value!r}")


def check_fraction(key: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
    """``low < value < high``, else a ParamsError naming ``key``."""
    if not low < value < high:
        fail(key, value, f"a number strictly between {low} and {high}")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _matches(tp: Any, value: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return any(_matches(a, value) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is tuple:  # a YAML list of items of one type, stored as a tuple
        item = typing.get_args(tp)[0]
        return isinstance(value, (list, tuple)) and all(_matches(item, v) for v in value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def build_checked(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys and types recursively."""
    if not isinstance(raw, dict):
        fail(prefix.rstrip("."), raw, "a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ParamsError(
            f"params: unknown key `{prefix}{unknown[0]}` (value {raw[unknown[0]]!r}); "
            f"valid keys{' in ' + prefix.rstrip('.') if prefix else ''}: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in raw.items():
        tp = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            kwargs[name] = build_checked(tp, value, f"{key}.")
        elif not _matches(tp, value):
            fail(key, value, _type_name(tp))
        elif isinstance(value, list) and any(typing.get_origin(t) is tuple
                                             for t in (tp, *typing.get_args(tp))):
            kwargs[name] = tuple(value)  # a YAML list, for `tuple[...]` or `tuple[...] | None`
        else:
            kwargs[name] = float(value) if tp is float else value
    return cls(**kwargs)
