"""The schedlab command line (Typer): one module per command group."""

from schedlab.cli import schedules, study, train
from schedlab.cli.common import app

__all__ = ["app", "main", "schedules", "study", "train"]


def main() -> None:
    app()
