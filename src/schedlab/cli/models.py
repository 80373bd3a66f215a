"""`schedlab models`: every model with the data it takes and its settings."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from schedlab.cli.common import app, out


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout")] = False,
) -> None:
    """List the models: name, the data they take, their settings ([model] in a study)."""
    from schedlab.model import registry

    listing = {
        name: {
            "input": definition.input,
            "description": definition.description,
            "settings": {
                key: {"default": p.default, "range": p.describe_range(), "help": p.help}
                for key, p in definition.params.items()
            },
        }
        for name, definition in ((n, registry.lookup(n)) for n in registry.names())
    }
    if as_json:
        print(json.dumps({"models": listing, "default": registry.DEFAULT}))
        return
    table = Table(title=escape("schedlab models ([model] name = ..., or module:factory)"))
    for column in ("name", "takes", "settings (default)", "description"):
        table.add_column(column, style="bold" if column == "name" else None)
    for name, entry in listing.items():
        settings = ", ".join(f"{k} ({v['default']})" for k, v in entry["settings"].items())
        table.add_row(name, entry["input"], escape(settings), escape(entry["description"]))
    out.print(table)
    out.print(
        'A user model: name = "module:factory", called as factory(shape, **settings) -> '
        "nn.Module with forward(x_t [B, *shape], t [B]) -> noise [B, *shape]."
    )
