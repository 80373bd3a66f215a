"""The schedlab command line (Typer): one module per command group."""

import contextlib
import sys

import typer

from schedlab.cli import datasets, export, models, report, schedules, study, train
from schedlab.cli.common import app

__all__ = [
    "app",
    "datasets",
    "export",
    "main",
    "models",
    "report",
    "schedules",
    "study",
    "train",
]


def main() -> None:
    """The `schedlab` command (also `python -m schedlab`: usage and completion name it). A
    mistake on the command line (an unknown command or flag, a bad flag value, a missing
    STUDY) is one `error:` line, exit 2, like every other bad input."""
    try:
        code = app(prog_name="schedlab", standalone_mode=False)
    except USAGE_ERROR as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `schedlab` alone: its help
            with contextlib.suppress(BrokenPipeError):
                print(e.format_message())  # type: ignore[attr-defined]
            sys.exit(0)
        ctx = getattr(e, "ctx", None)
        where = ctx.command_path if ctx is not None else "schedlab"
        message = e.format_message()  # type: ignore[attr-defined]
        print(f"error: {message} (see `{where} --help`)", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


# Click's UsageError (typer vendors click in some versions and not in others; BadParameter
# derives from it in both).
USAGE_ERROR: type[Exception] = typer.BadParameter.__mro__[1]
