"""`schedlab train`: one run, measured."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from schedlab import data
from schedlab.cli.common import app, err, fail, jsonable, one_line_errors, out
from schedlab.cli.options import DeviceOption, EngineOption, ThreadsOption
from schedlab.params import parse_assignment

if TYPE_CHECKING:
    from schedlab.config.settings import Settings
    from schedlab.store.records import Commit


def settings_from(
    assignments: list[str],
    steps: int,
    model: str = "mlp",
    model_params: list[str] | None = None,
) -> Settings:
    """Defaults, then ``--set key=value`` (key from any section, e.g. n, batch_size, samples),
    and the model ``model`` with ``--model-param key=value`` (the mlp's go to [train])."""
    from schedlab.config.settings import Settings

    if steps <= 0:
        raise ValueError(f"--steps must be a positive int, got {steps}")
    options = dict(parse_assignment(text) for text in model_params or [])
    sections: dict[str, dict[str, Any]] = {
        "data": {},
        "train": {"steps": steps, **(options if model == "mlp" else {})},
        "eval": {},
        "model": {"name": model, **({} if model == "mlp" else options)},
    }
    owners = {
        key: section
        for section, fields in Settings.model_fields.items()
        if section != "model"
        for key in fields.annotation.model_fields  # type: ignore[union-attr]
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
    model: Annotated[
        str, typer.Option(help="mlp, unet, or module:factory (see `schedlab models`)")
    ] = "mlp",
    model_param: Annotated[
        list[str] | None, typer.Option(help="model setting key=value (repeatable)")
    ] = None,
    engine: EngineOption = "fleet",
    device: DeviceOption = "cpu",
    threads: ThreadsOption = None,
    target: Annotated[
        float | None,
        typer.Option(
            help="time-to-target: the held-out EMA loss to reach (default: this run's final x 1.01)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="write curves.npz and samples.npz here")
    ] = None,
) -> None:
    """Train and measure one run of the reference DDPM."""
    from schedlab.config.engines import check_engine_options, engine_for
    from schedlab.config.study import model_spec
    from schedlab.execute.work import Worker
    from schedlab.metrics import METRICS
    from schedlab.plan import RunSpec
    from schedlab.schedules.curves import check_user_schedule
    from schedlab.schedules.registry import resolve
    from schedlab.threads import use_threads

    data.check_name(dataset)
    check_engine_options(engine, None, device)
    if target is not None and not 0 < target < math.inf:
        raise ValueError(f"--target must be a positive loss, got {target}")
    settings = settings_from(set_ or [], steps, model, model_param)
    data.check_dim_setting([dataset], settings.data.dim)
    model_spec(settings.model, settings.train, dataset, settings.data.dim)
    spec = resolve(schedule, schedule_params(param or []), settings.train.steps)
    check_user_schedule(spec, settings.train.steps)
    run = RunSpec(dataset, spec, schedule, seed, settings, engine_for(engine, spec))
    use_threads(threads)
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

        (outcome,) = Worker(device, progress=progress).train_fleet([run])
    if outcome.commit is None:
        fail(f"the run failed: {outcome.error}")
    commit = outcome.commit
    target_loss = target if target is not None else own_target(commit)
    result = {
        "dataset": dataset,
        "schedule": spec.name,
        "params": spec.params,
        "seed": seed,
        "engine": run.engine,
        "run_id": run.run_id,
        "model": run.model.identity(),
        "status": str(commit.status),
        "diverged_at": commit.diverged_at,
        **{key: commit.measurements.get(key, ("", math.nan))[1] for key in METRICS},
        **time_to_target(commit, target_loss),
        "target_loss": target_loss,
        "notes": list(commit.notes),
        "settings": settings.model_dump(),
    }
    if out_dir is not None:
        write_outputs(out_dir, commit, result)
    if as_json:
        print(json.dumps(jsonable(result)))
        return
    show_metrics(result)


def own_target(commit: Commit) -> float:
    """A lone run's default target: its own final held-out EMA loss x the default factor."""
    from schedlab.config.settings import TargetSettings

    final = commit.measurements.get("eval_loss_heldout_ema", ("", math.nan))[1]
    return final * TargetSettings().factor


def time_to_target(commit: Commit, target_loss: float) -> dict[str, float]:
    from schedlab.measure.targets import TargetContext, derived_values

    steps = len(commit.losses)  # the steps it trained
    return derived_values(
        TargetContext(commit.heldout_curve, target_loss, commit.training_time, steps)
    )


def write_outputs(out_dir: Path, commit: Commit, result: dict[str, Any]) -> None:
    import numpy as np

    from schedlab.files import atomic_file

    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file; give a folder for the run's files")
    with atomic_file(out_dir / "curves.npz") as temp, temp.open("wb") as f:
        np.savez_compressed(f, loss=commit.losses, lr=commit.lrs, heldout=commit.heldout_curve)
    if commit.samples is not None:
        with atomic_file(out_dir / "samples.npz") as temp, temp.open("wb") as f:
            np.savez_compressed(f, samples=commit.samples[1])
    with atomic_file(out_dir / "metrics.json") as temp:
        temp.write_text(json.dumps(jsonable(result), indent=2))


def show_metrics(result: dict[str, Any]) -> None:
    from schedlab.metrics import METRICS

    table = Table(
        title=f"{result['dataset']} / {result['schedule']} / seed {result['seed']}: "
        f"{result['status']}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, metric in METRICS.items():
        value = result.get(key, math.nan)
        shown = "-" if not math.isfinite(value) else f"{value:.4f}"
        if not metric.applies(result["dataset"], tuple(result["model"]["shape"])):
            shown = "n/a"
        table.add_row(f"{key} ({metric.unit})" if metric.unit else key, shown)
    out.print(table)
    for note in result["notes"]:
        out.print(f"note: {note}")
