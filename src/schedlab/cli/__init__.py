"""The schedlab command line (Typer): one module per command group."""

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
    app(prog_name="schedlab")  # also under `python -m schedlab`: usage and completion name it
