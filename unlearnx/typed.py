"""Values of a dataclass's fields checked and converted from its annotations: the one place where a recipe
value from ``--set`` (a string), a ``--recipe`` file (JSON/TOML values) or Python (any object) becomes a
value of the field's type, or a one-line error that reads the same whichever way it came.

- ``int``: ints and integer strings; not 2.5, not True, not "2.5".
- ``float``: numbers and numeric strings, finite unless the field is listed as allowing inf/nan.
- ``bool``: True/False and "true/false/yes/no/on/off/1/0".
- ``str``: strings.
- ``tuple[X, ...]``, ``list[X]``, bare ``tuple``: lists/tuples or "a,b,c" / "[a, b]", each entry as X.
- ``Optional[X]`` / ``X | None``: None (or "none"/"null") or X.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import types
import typing
from typing import Any

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class _Bad(Exception):
    """A value that does not fit; carries what the field needs."""

    def __init__(self, need: str):
        super().__init__(need)
        self.need = need


def _shown(value) -> str:
    if isinstance(value, str):
        return repr(value) if not value.strip() else value.strip()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(value)


def field_types(cls) -> dict[str, Any]:
    """``{field: type}`` of a dataclass, with string annotations resolved."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def coerce(value: Any, hint: Any, *, what: str, key: str, allow_nonfinite: bool = False) -> Any:
    """``value`` as a ``hint``; else ``ValueError("<what>: <key> must be <need>, got <value>")``."""
    try:
        return _coerce(value, hint, allow_nonfinite)
    except _Bad as bad:
        raise ValueError(f"{what}: {key} must be {bad.need}, got {_shown(value)}") from None


def coerce_fields(obj, what: str, allow_nonfinite=frozenset()) -> None:
    """Convert every field of the dataclass instance ``obj`` in place (see :func:`coerce`)."""
    for key, hint in field_types(type(obj)).items():
        value = getattr(obj, key)
        converted = coerce(value, hint, what=what, key=key, allow_nonfinite=key in allow_nonfinite)
        if converted is not value:
            object.__setattr__(obj, key, converted)


def _is_optional(hint) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) < len(typing.get_args(hint)):
            return True, (args[0] if len(args) == 1 else typing.Union[tuple(args)])
    return False, hint


def _coerce(value, hint, allow_nonfinite):
    if hint is Any or hint is None:
        return value
    optional, inner = _is_optional(hint)
    if optional:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        try:
            return _coerce(value, inner, allow_nonfinite)
        except _Bad as bad:
            raise _Bad(f"{bad.need} or None") from None
    if hint is bool:
        return _to_bool(value)
    if hint is int:
        return _to_int(value)
    if hint is float:
        return _to_float(value, allow_nonfinite)
    if hint is str:
        if not isinstance(value, str):
            raise _Bad("a string")
        return value
    origin = typing.get_origin(hint) or hint
    if origin in (tuple, list):
        args = typing.get_args(hint)
        item = args[0] if args and (len(args) == 1 or args[1:] == (Ellipsis,)) else None
        return origin(_coerce_item(v, item, allow_nonfinite) for v in _as_sequence(value, item))
    return value  # other annotations (classes, callables) are not recipe values: left as they are


def _to_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise _Bad("true or false")


def _to_int(value) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _Bad("an integer")


def _to_float(value, allow_nonfinite: bool) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _Bad("a number") from None
    else:
        raise _Bad("a number")
    if not allow_nonfinite and not math.isfinite(number):
        raise _Bad("a finite number")
    return number


def _as_sequence(value, item) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                raise _Bad(_list_need(item)) from None
            if isinstance(parsed, list):
                return parsed
        return [t.strip() for t in text.strip("[]").split(",") if t.strip()]
    raise _Bad(_list_need(item))


def _list_need(item) -> str:
    names = {int: "integers", float: "numbers", bool: "true/false values", str: "strings"}
    return f"a list of {names.get(item, 'values')}"


def _coerce_item(value, item, allow_nonfinite):
    if item is None:  # an untyped tuple: numbers from strings, anything else as given
        if isinstance(value, str):
            try:
                return _to_int(value)
            except _Bad:
                return _to_float(value, allow_nonfinite)
        return value
    try:
        return _coerce(value, item, allow_nonfinite)
    except _Bad:
        raise _Bad(_list_need(item)) from None


__all__ = ["coerce", "coerce_fields", "field_types"]
