"""`schedlab schedules`: list the schedules, draw their LR curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from schedlab.cli.common import app, err, one_line_errors, out

schedules_app = typer.Typer(
    help="The LR schedules: list them, or draw their curves.", invoke_without_command=True
)
app.add_typer(schedules_app, name="schedules")


@schedules_app.callback()
def schedules_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout")] = False,
) -> None:
    """List every schedule with its parameters, defaults and valid ranges."""
    if ctx.invoked_subcommand is not None:
        return
    from schedlab.schedules import registry

    if as_json:
        listing = {
            name: {
                "description": definition.description,
                "optimizer": definition.optimizer,
                "warmup": definition.allows_warmup,
                "params": {
                    key: {
                        "kind": p.kind,
                        "default": p.default,
                        "valid": p.describe_range(),
                        "help": p.help,
                    }
                    for key, p in definition.params.items()
                },
            }
            for name, definition in sorted(registry.SCHEDULES.items())
        }
        print(json.dumps({"schedules": listing, "aliases": registry.ALIASES}))
        return

    table = Table(title="schedlab schedules (every one also takes warmup_steps)")
    table.add_column("name", style="bold")
    table.add_column("description")
    table.add_column("parameters (default; valid range)")
    for name in sorted(registry.SCHEDULES):
        definition = registry.SCHEDULES[name]
        params = "\n".join(
            f"{key}={p.default!r}; {p.describe_range()}: {p.help}"
            for key, p in definition.params.items()
        )
        table.add_row(name, definition.description, params or "-")
    for alias, target in registry.ALIASES.items():
        table.add_row(alias, f"the reference study's baseline: {target}", "as " + target)
    table.add_row(
        "module:function",
        "your own: function(optimizer, steps, **params) returns a torch LR scheduler",
        "any",
    )
    out.print(table)


@schedules_app.command("plot")
@one_line_errors
def schedules_plot(
    specs: Annotated[list[str], typer.Argument(help="name or name:key=value,key=value")],
    steps: Annotated[int, typer.Option(help="optimizer steps")] = 10_000,
    lr: Annotated[float, typer.Option(help="base learning rate")] = 3e-4,
    out_path: Annotated[Path, typer.Option("--out", help="PNG or SVG file")] = Path("lr.png"),
    log: Annotated[bool, typer.Option("--log", help="log-scale LR axis")] = False,
) -> None:
    """Draw LR curves; plateau is drawn for a loss that never improves (its worst case)."""
    from schedlab.schedules.curves import lr_curve

    if steps <= 0:
        raise ValueError(f"--steps must be a positive int, got {steps}")
    curves = {}
    for text in specs:
        curves[text] = lr_curve(text, steps, lr)
    from schedlab.report.plots import plot_lr_curves

    plot_lr_curves(curves, out_path, log=log, title=f"LR over {steps} steps, base {lr:g}")
    err.print(f"wrote {out_path}")
