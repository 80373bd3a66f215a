"""`schedlab datasets`: every dataset with its dimension, source and held-out split."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from schedlab.cli.common import app, out


@app.command()
def datasets() -> None:
    """List the datasets: name, dimension, where the points come from, what they are."""
    from schedlab import data

    table = Table(title="schedlab datasets (held-out split: the same generator, seed 20250042)")
    for column in ("name", "dim", "description", "source"):
        table.add_column(column, style="bold" if column == "name" else None)
    for name in data.names():
        dataset = data.DATASETS[name]
        dim = str(dataset.dim) if dataset.dim else f"any ([data] dim, default {data.DEFAULT_DIM})"
        table.add_row(name, escape(dim), escape(dataset.description), escape(dataset.source))
    out.print(table)
