"""What every schedlab command shares: the app, consoles, one-line errors."""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

app = typer.Typer(
    help="Which LR schedule should you train your diffusion model with? Measure it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)
out = Console()

F = TypeVar("F", bound=Callable[..., Any])


@app.callback()
def root() -> None:
    """schedlab: train DDPMs under many LR schedules and compare them with real statistics."""


def one_line_errors(func: F) -> F:
    """Bad input becomes one line on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ValidationError as e:
            from schedlab.config.errors import first_error

            fail(first_error(e))
        except ValueError as e:
            fail(str(e))

    return wrapper  # type: ignore[return-value]


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(2)


def jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
