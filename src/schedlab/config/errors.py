"""Pydantic's complaints as one line each."""

from __future__ import annotations

from pydantic import ValidationError

TYPES = {"bool", "int", "float", "str"}


def first_error(err: ValidationError) -> str:
    """Pydantic's first complaint as one line: where, what, and the value it got."""
    first = err.errors()[0]
    # A union's errors carry the member's type in their location ("bool", "dict[str,...]").
    where = ".".join(
        str(p) for p in first["loc"] if not (isinstance(p, str) and ("[" in p or p in TYPES))
    )
    if first["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    if first["type"] == "missing":
        return f"missing key {where!r}"
    message = first["msg"].removeprefix("Value error, ")
    prefix = f"{where}: " if where else ""
    got = f" (got {first['input']!r})" if first["type"] != "value_error" else ""
    return f"{prefix}{message}{got}"


def root_cause(err: BaseException) -> BaseException:
    """The first error of a chain (a library's wrapper names the SQL; its cause says why)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def cause_line(err: BaseException) -> str:
    """The first line of the root cause's message, or its type when it has none."""
    cause = root_cause(err)
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__
