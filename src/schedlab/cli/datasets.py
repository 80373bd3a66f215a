"""`schedlab datasets`: every dataset with its dimension, source and held-out split."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from schedlab.cli.common import app, out


@app.command()
def datasets(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout")] = False,
) -> None:
    """List the datasets: name, dimension, image shape, source, what they are."""
    from schedlab import data

    if as_json:
        listing = {
            name: {
                "dim": data.DATASETS[name].dim,  # null: any ([data] dim)
                "image_shape": data.DATASETS[name].image_shape,  # for models of images
                "description": data.DATASETS[name].description,
                "source": data.DATASETS[name].source,
            }
            for name in data.names()
        }
        print(json.dumps({"datasets": listing, "default_dim": data.DEFAULT_DIM}))
        return

    table = Table(title="schedlab datasets (held-out split: the same generator, seed 20250042)")
    for column in ("name", "dim", "images", "description", "source"):
        table.add_column(column, style="bold" if column == "name" else None)
    for name in data.names():
        dataset = data.DATASETS[name]
        dim = str(dataset.dim) if dataset.dim else f"any ([data] dim, default {data.DEFAULT_DIM})"
        image = "x".join(map(str, dataset.image_shape)) if dataset.image_shape else "-"
        table.add_row(name, escape(dim), image, escape(dataset.description), escape(dataset.source))
    out.print(table)
