"""The schedlab command line (Typer)."""

from __future__ import annotations

import functools
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from schedlab import data, schedules
from schedlab.params import parse_assignment, split_top_level
from schedlab.settings import Settings

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
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            fail(f"{where}: {first['msg']} (got {first.get('input')!r})")
        except ValueError as e:
            fail(str(e))

    return wrapper  # type: ignore[return-value]


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(2)


def settings_from(assignments: list[str], steps: int) -> Settings:
    """Defaults, then ``--set key=value`` (key from any section, e.g. n, batch_size, samples)."""
    if steps <= 0:
        raise ValueError(f"--steps must be a positive int, got {steps}")
    sections: dict[str, dict[str, Any]] = {"data": {}, "train": {"steps": steps}, "eval": {}}
    owners = {
        key: section
        for section, model in Settings.model_fields.items()
        for key in model.annotation.model_fields  # type: ignore[union-attr]
    }
    for text in assignments:
        key, value = parse_assignment(text)
        if key not in owners:
            raise ValueError(
                f"unknown setting {key!r}; valid settings: {', '.join(sorted(owners))}"
            )
        sections[owners[key]][key] = value
    return Settings.model_validate(sections)


def schedule_params(assignments: list[str]) -> dict[str, Any]:
    return dict(parse_assignment(text) for text in assignments)


def jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


@app.command()
@one_line_errors
def train(
    dataset: Annotated[str, typer.Option(help=f"one of {', '.join(data.names())}")] = "moons",
    schedule: Annotated[str, typer.Option(help="a schedule name (see `schedlab schedules`)")] = (
        "cosine"
    ),
    steps: Annotated[int, typer.Option(help="optimizer steps")] = 10_000,
    seed: Annotated[int, typer.Option(help="run seed (weights, data order, noise)")] = 0,
    param: Annotated[
        list[str] | None, typer.Option(help="schedule parameter key=value (repeatable)")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="setting key=value, e.g. n=4000, batch_size=128, samples=500"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="write curves.npz and samples.npz here")
    ] = None,
) -> None:
    """Train and measure one run of the reference DDPM."""
    from schedlab.pipeline import run_one

    data.check_name(dataset)
    settings = settings_from(set_ or [], steps)
    spec = schedules.resolve(schedule, schedule_params(param or []), settings.train.steps)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(f"{dataset}/{schedule}", total=settings.train.steps, info="")

        def progress(step: int, loss: float, lr: float) -> None:
            bar.update(task, completed=step, info=f"loss {loss:.4f}  lr {lr:.2e}")

        outcome = run_one(dataset, spec, seed, settings, progress)
    result = {
        "dataset": dataset,
        "schedule": spec.name,
        "params": spec.params,
        "seed": seed,
        "status": outcome.status,
        "diverged_at": outcome.diverged_at,
        **outcome.metrics,
        "notes": outcome.notes,
        "settings": settings.model_dump(),
    }
    if out_dir is not None:
        write_outputs(out_dir, outcome, result)
    if as_json:
        print(json.dumps(jsonable(result)))
        return
    show_metrics(result)


def write_outputs(out_dir: Path, outcome: Any, result: dict[str, Any]) -> None:
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / "curves.npz", loss=outcome.losses, lr=outcome.lrs)
    if outcome.samples is not None:
        np.savez_compressed(out_dir / "samples.npz", samples=outcome.samples)
    (out_dir / "metrics.json").write_text(json.dumps(jsonable(result), indent=2))


def show_metrics(result: dict[str, Any]) -> None:
    from schedlab.pipeline import METRIC_KEYS

    table = Table(
        title=f"{result['dataset']} / {result['schedule']} / seed {result['seed']}: "
        f"{result['status']}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in METRIC_KEYS:
        value = result[key]
        table.add_row(key, "-" if not math.isfinite(value) else f"{value:.4f}")
    out.print(table)
    for note in result["notes"]:
        out.print(f"note: {note}")


schedules_app = typer.Typer(
    help="The LR schedules: list them, or draw their curves.", invoke_without_command=True
)
app.add_typer(schedules_app, name="schedules")


@schedules_app.callback()
def schedules_list(ctx: typer.Context) -> None:
    """List every schedule with its parameters, defaults and valid ranges."""
    if ctx.invoked_subcommand is not None:
        return
    table = Table(title="schedlab schedules (every one also takes warmup_steps)")
    table.add_column("name", style="bold")
    table.add_column("description")
    table.add_column("parameters (default; valid range)")
    for name in sorted(schedules.SCHEDULES):
        definition = schedules.SCHEDULES[name]
        params = "\n".join(
            f"{key}={p.default!r}; {p.describe_range()}: {p.help}"
            for key, p in definition.params.items()
        )
        table.add_row(name, definition.description, params or "-")
    for alias, target in schedules.ALIASES.items():
        table.add_row(alias, f"the reference study's baseline: {target}", "as " + target)
    table.add_row(
        "module:function",
        "your own: function(optimizer, steps, **params) returns a torch LR scheduler",
        "any",
    )
    out.print(table)


def parse_schedule_arg(text: str) -> tuple[str, dict[str, Any]]:
    """'step:step_size=1000,gamma=0.1' -> ('step', {...}); 'pkg.mod:fn:a=1' works too."""
    head, sep, rest = text.partition(":")
    if sep and head in schedules.names():
        name, param_text = head, rest
    elif "=" in text:
        colon = text.rfind(":", 0, text.find("="))
        if colon < 0:
            raise ValueError(f"malformed schedule {text!r}; expected name:key=value,key=value")
        name, param_text = text[:colon], text[colon + 1 :]
    else:
        return text, {}
    return name, dict(parse_assignment(a) for a in split_top_level(param_text))


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
    if steps <= 0:
        raise ValueError(f"--steps must be a positive int, got {steps}")
    curves = {}
    for text in specs:
        name, params = parse_schedule_arg(text)
        curves[text] = schedules.lr_curve(name, steps, lr, **params)
    from schedlab.plots import plot_lr_curves

    plot_lr_curves(curves, out_path, log=log, title=f"LR over {steps} steps, base {lr:g}")
    out.print(f"wrote {out_path}")


def main() -> None:
    app()
