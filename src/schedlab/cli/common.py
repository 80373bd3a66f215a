"""What every schedlab command shares: the app, consoles, one-line errors."""

from __future__ import annotations

import functools
import math
import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

app = typer.Typer(
    help="Which LR schedule should you train your diffusion model with? Measure it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: flags without a value placeholder, text re-wrapped
    add_completion=True,  # --install-completion, --show-completion (bash, zsh, fish)
)
err = Console(stderr=True, soft_wrap=True)  # a long line stays one line in a log
out = Console(soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def show_version(value: bool) -> None:
    if value:
        import schedlab

        print(f"schedlab {schedlab.__version__}")
        raise typer.Exit


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=show_version, is_eager=True, help="print the version"
    ),
) -> None:
    """schedlab: train DDPMs under many LR schedules and compare them with real statistics."""


def one_line_errors(func: F) -> F:
    """Bad input becomes one line on stderr and exit status 2; a failure while working (a file,
    the store, anything unforeseen) one line and exit status 1. SCHEDLAB_TRACEBACK=1 shows the
    traceback of an unforeseen error instead."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort):  # a command's own exit status
            raise
        except ValidationError as e:
            from schedlab.config.errors import first_error

            fail(first_error(e))
        except ValueError as e:
            fail(str(e))
        except BrokenPipeError:  # `schedlab export --out - | head`: the reader has had enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141) from None
        except OSError as e:  # a file that cannot be read or written: the run's failure
            where = f"{e.filename}: " if e.filename else ""
            print(f"error: {where}{e.strerror or e}", file=sys.stderr)
            raise typer.Exit(1) from None
        except sqlite3.Error as e:
            from schedlab.store.store import describe_error

            print(f"error: {describe_error(Path('the store'), e)}", file=sys.stderr)
            raise typer.Exit(1) from None
        except Exception as e:  # unforeseen: still one line, never a traceback
            if os.environ.get("SCHEDLAB_TRACEBACK") == "1":
                raise
            from schedlab.config.errors import cause_line, root_cause

            print(f"error: {type(root_cause(e)).__name__}: {cause_line(e)}", file=sys.stderr)
            raise typer.Exit(1) from None

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
