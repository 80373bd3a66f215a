"""Typed parameters with defaults and valid ranges, and the parsing of ``key=value`` text.

Pydantic validates whole documents (study files); these small declarations describe the
parameters of a registry entry, where each entry has a different set and the error message must
name the parameter and its valid range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["int", "float", "str", "bool", "ints"]


@dataclass(frozen=True)
class Param:
    kind: Kind
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()

    def describe_range(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "true or false"
        noun = {"int": "an int", "float": "a float", "ints": "a list of ints"}.get(self.kind, "")
        if self.low is None and self.high is None:
            return noun
        lo = "-inf" if self.low is None else _fmt(self.low)
        hi = "inf" if self.high is None else _fmt(self.high)
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        where = " each" if self.kind == "ints" else ""
        return f"{noun}{where} in {left}{lo}, {hi}{right}"

    def check(self, owner: str, name: str, value: Any) -> Any:
        """``value`` converted to this parameter's type, or a ValueError naming the valid range."""
        converted = self._convert(value)
        if converted is None or not self._in_range(converted):
            raise ValueError(f"{owner}: {name} must be {self.describe_range()}, got {value!r}")
        return converted

    def _convert(self, value: Any) -> Any:
        if self.kind == "bool":
            return value if isinstance(value, bool) else None
        if self.kind == "str":
            return value if isinstance(value, str) else None
        if self.kind == "ints":
            if not isinstance(value, list | tuple):
                return None
            items = [_as_int(v) for v in value]
            return None if any(v is None for v in items) else tuple(items)
        if self.kind == "int":
            return _as_int(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)

    def _in_range(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices
        values = value if self.kind == "ints" else (value,)
        return all(self._scalar_in_range(v) for v in values if not isinstance(v, bool | str))

    def _scalar_in_range(self, v: float) -> bool:
        if not math.isfinite(v):
            return False
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            return False
        return not (
            self.high is not None and (v > self.high or (self.high_open and v == self.high))
        )


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def check_params(
    owner: str, allowed: Mapping[str, Param], given: Mapping[str, Any]
) -> dict[str, Any]:
    """Every allowed parameter, from ``given`` where present (checked) or its default."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        valid = ", ".join(sorted(allowed)) or "none"
        raise ValueError(f"{owner}: unknown parameter {unknown[0]!r}; valid parameters: {valid}")
    return {
        name: param.check(owner, name, given[name]) if name in given else param.default
        for name, param in allowed.items()
    }


def parse_value(text: str) -> Any:
    """A CLI value: int, float, true/false, a [a,b] list, or else the bare string."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [parse_value(v) for v in inner.split(",")] if inner else []
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value`` -> (key, parsed value); a ValueError naming the malformed text otherwise."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or not value.strip():
        raise ValueError(f"malformed parameter {text!r}; expected key=value, e.g. gamma=0.5")
    return key, parse_value(value)


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets: 'a=1,m=[2,3]' -> ['a=1', 'm=[2,3]']."""
    parts, depth, current = [], 0, []
    for ch in text:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]
