"""`schedlab run`, `measure` and `status`: studies and their store.

`status` reads the store only: it opens it read-only and never imports torch.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from schedlab.cli.common import app, err, fail, one_line_errors, out
from schedlab.cli.options import (
    CompileOption,
    DeviceOption,
    EngineOption,
    FleetSizeOption,
    LeaseOption,
    ReadEngineOption,
    StoreOption,
    StudyArg,
    ThreadsOption,
)
from schedlab.cli.progress import progress_display
from schedlab.config.budgets import budget_label
from schedlab.results import plan_records
from schedlab.store.status import COLOURS, RunStatus
from schedlab.store.store import Store, default_path

if TYPE_CHECKING:
    from schedlab.config.study import StudySpec
    from schedlab.execute.driver import Events, StudyOutcome
    from schedlab.store.reads import StoreReads


def store_path(study: StudySpec, store: Path | None) -> Path:
    return store if store is not None else default_path(study.name)


def load(study: str, engine: str) -> StudySpec:
    from schedlab.config.engines import check_engine
    from schedlab.config.study import load_study

    check_engine(engine)
    return load_study(study)


def read_engine(study: StudySpec, store: StoreReads, engine: str | None) -> str:
    """The engine whose runs a read (status, export, report) shows: the one asked for, else
    the one that trained most of this study's planned runs in the store (fleet on a tie)."""
    from schedlab.config.engines import ENGINES, check_engine
    from schedlab.trials import planned_runs

    if engine is not None:
        return check_engine(engine)
    found = {e: store.known(r.run_id for r in planned_runs(study, e, store)) for e in ENGINES}
    return max(ENGINES, key=lambda e: (found[e], e == "fleet"))


def status_table(study: StudySpec, store: Store, engine: str) -> Table:
    """Rows schedules, columns datasets; each cell counts its runs by status."""
    counts: dict[tuple[str, str], Counter[str]] = {}
    for label, dataset, _, state, _ in plan_records(study, store, engine):
        counts.setdefault((label, dataset), Counter())[state] += 1
    table = Table(title=f"study {study.name}: runs by status")
    table.add_column("schedule", style="bold")
    for dataset in study.datasets:
        table.add_column(dataset)
    labels = [entry.display for entry in study.schedules]
    if study.budgets is not None:
        labels = [budget_label(label, b) for label in labels for b in study.budgets.steps]
    for label in labels:
        cells = []
        for dataset in study.datasets:
            c = counts.get((label, dataset), Counter())
            cells.append(" ".join(f"[{COLOURS[s]}]{n} {s}[/]" for s, n in sorted(c.items())))
        table.add_row(label, *cells)
    return table


EXECUTORS = ("local", "ray")


@app.command()
@one_line_errors
def run(
    study: StudyArg,
    store: StoreOption = None,
    engine: EngineOption = "fleet",
    fleet_size: FleetSizeOption = None,
    device: DeviceOption = "cpu",
    use_compile: CompileOption = None,
    lease: LeaseOption = 120.0,
    threads: ThreadsOption = None,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(
            help="checkpoint fleets every STEPS steps (default: about once a minute of training)"
        ),
    ] = None,
    executor: Annotated[
        str,
        typer.Option(
            metavar="[local|ray]", help="local (fleets in this process) or ray (Ray tasks)"
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster to join (ray start --head prints it); default: a local one"),
    ] = None,
    log: Annotated[
        str | None,
        typer.Option(
            help="tensorboard:DIR or mlflow:DIR: write each run's loss and LR curves there "
            "while it trains"
        ),
    ] = None,
) -> None:
    """Run a study: plan the grid, train what is not finished, measure what is missing.

    Several `schedlab run` processes may share one store: each run is claimed by one of them.
    """
    from schedlab.config.engines import check_engine_options
    from schedlab.threads import use_threads
    from schedlab.training import stopping

    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid executors: {', '.join(EXECUTORS)}")
    if address is not None and executor != "ray":
        raise ValueError("--address joins a Ray cluster: it needs --executor ray")
    check_engine_options(engine, fleet_size, device, local=executor == "local")
    if not lease > 0:
        raise ValueError(f"--lease must be a positive number of seconds, got {lease}")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be a positive int, got {checkpoint_every}")
    if log is not None:
        from schedlab.exports.live import live_log, parse_log

        parse_log(log)
        if executor != "local":
            raise ValueError(
                "--log writes curves as fleets train in this process: use it with "
                "--executor local (export them after a Ray study)"
            )
    spec = load(study, engine)
    live = live_log(log, spec.name) if log is not None else None
    path = store_path(spec, store)
    use_threads(threads)
    if spec.ema.posthoc:
        err.print(posthoc_size_line(spec, engine), markup=False, highlight=False)
    # Ctrl-C, and SIGTERM (how SLURM and Kubernetes stop jobs): fleets stop at their next step
    # and checkpoint; a second signal, or one outside training, stops at once.
    with (
        Store(path) as db,
        progress_display(max(spec.lengths), executor == "local") as shown,
        stopping.stopping_on_signals(),
        contextlib.closing(live) if live is not None else contextlib.nullcontext(),
    ):
        events, step, bar = shown
        try:
            if executor == "ray":
                summary = on_ray(
                    spec, db, events, engine, fleet_size, device, address, lease, checkpoint_every
                )
            else:
                from schedlab.execute.local import run_study
                from schedlab.tuning.search import tune_study

                summary = run_study(
                    spec,
                    db,
                    events,
                    engine,
                    fleet_size,
                    device,
                    use_compile,
                    step,
                    lease,
                    checkpoint_every,
                    tune_study,
                    live,
                )
        except KeyboardInterrupt as stop:
            if bar is not None:
                bar.stop()
            how, code = (
                ("terminated", 143)
                if stopping.requested_signal() == signal.SIGTERM
                else ("interrupted", 130)
            )
            saved = (
                "checkpointed at its last step"
                if isinstance(stop, stopping.StopRequested)
                else "resumes from its last checkpoint"
            )
            err.print(
                f"{how}: finished runs are saved in {path}, the fleet in flight {saved}; "
                "run the same command to resume"
            )
            raise typer.Exit(code) from None
        if bar is not None:
            bar.stop()
        err.print(status_table(spec, db, engine))
        if spec.tune is not None:
            err.print(tuning_line(spec, db, engine))
    report_outcome(summary, path)
    if summary.outcomes[RunStatus.FAILED]:
        raise typer.Exit(1)


def posthoc_size_line(spec: StudySpec, engine: str) -> str:
    """What post-hoc EMA snapshots add to the store: per run, and for the study's runs."""
    from schedlab.averaging.profiles import snapshot_steps
    from schedlab.model.check import parameter_count
    from schedlab.plan import expand, unique

    t, ema = spec.train, spec.ema
    # Branches, and a trunk read at a smaller budget, track none.
    runs = [run for run in unique(expand(spec, engine)) if run.settings.ema.posthoc]
    count = len(ema.stds) * len(snapshot_steps(max(spec.lengths), ema.snapshots))
    itemsize = 8 if t.dtype == "float64" else 4
    models = {json.dumps(run.model.identity(), sort_keys=True): run.model for run in runs}
    sizes = {key: parameter_count(model) * itemsize for key, model in models.items()}
    total = sum(count * sizes[json.dumps(run.model.identity(), sort_keys=True)] for run in runs)
    per_run = ", ".join(size_text(count * size) for size in sorted(set(sizes.values())))
    return (
        f"post-hoc EMA: {count} snapshots a run ({len(ema.stds)} EMAs x {count // len(ema.stds)})"
        f" add {per_run} a run to the store, {size_text(total)} for the study's {len(runs)} runs "
        "that track them"
    )


def size_text(size: float) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 1e5 else f"{size / 1e3:.0f} kB"


def on_ray(
    spec: StudySpec,
    db: Store,
    events: Events,
    engine: str,
    fleet_size: int | None,
    device: str,
    address: str | None,
    lease: float,
    checkpoint_every: int | None,
) -> StudyOutcome:
    try:
        from schedlab.execute.ray_executor import run_study_on_ray
    except ImportError:
        fail("--executor ray needs Ray: pip install 'schedlab[ray]'")
    from schedlab.tuning.search import tune_study

    return run_study_on_ray(
        spec, db, events, engine, fleet_size, device, address, lease, tune_study, checkpoint_every
    )


def report_outcome(summary: StudyOutcome, path: Path) -> None:
    for note in summary.notes:
        err.print(f"note: {note}", markup=False)
    outcomes = ", ".join(f"{n} {s}" for s, n in sorted(summary.outcomes.items())) or "nothing"
    measured = f"; {summary.measured} measured from stored weights" if summary.measured else ""
    err.print(
        f"{summary.planned} runs planned, {summary.skipped} already finished; this run: "
        f"{outcomes}{measured} in {summary.seconds:.1f} s. Store: {path}"
    )


@app.command()
@one_line_errors
def measure(
    study: StudyArg,
    store: StoreOption = None,
    engine: EngineOption = "fleet",
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="list what would be measured; open the store read-only"),
    ] = False,
    ema_sweep: Annotated[
        str | None,
        typer.Option(
            "--ema-sweep",
            metavar="STDS",
            help="also measure each run's post-hoc EMAs of these relative stds, e.g. "
            "0.01,0.05,0.1 (needs [ema] posthoc = true)",
        ),
    ] = None,
    ema_metrics: Annotated[
        str,
        typer.Option(
            "--ema-metrics",
            metavar="METRICS",
            help="what --ema-sweep measures: eval_loss_heldout_ema, kl_divergence, "
            "sliced_wasserstein, mmd, log_density",
        ),
    ] = "eval_loss_heldout_ema",
) -> None:
    """Measure finished runs again from their stored weights (new metrics, new eval
    settings) and, with --ema-sweep, their post-hoc EMAs; trains nothing."""
    from schedlab.execute.driver import describe, missing_metrics
    from schedlab.execute.local import measure_study
    from schedlab.execute.sweep import parse_metrics, parse_stds, sweep_study, sweep_todo
    from schedlab.plan import unique
    from schedlab.threads import use_threads
    from schedlab.trials import planned_runs

    spec = load(study, engine)
    path = store_path(spec, store)
    stds = parse_stds(ema_sweep) if ema_sweep is not None else None
    if stds is not None and not spec.ema.posthoc:
        raise ValueError(
            f"--ema-sweep measures post-hoc EMAs, and study {spec.name!r} keeps no snapshots: "
            "set [ema] posthoc = true in it and run it (its runs train again, with them)"
        )
    sweep_metrics = parse_metrics(ema_metrics)
    if dry_run:
        with Store(path, create=False, read_only=True) as db:
            runs = unique(planned_runs(spec, engine, db))
            todo = [(run, missing_metrics(db, run)) for run in runs]
            sweeps = sweep_todo(spec, db, engine, stds, sweep_metrics) if stds else []
        todo = [(run, metrics) for run, metrics in todo if metrics]
        for run, metrics in todo:
            print(f"{describe(run)}: {', '.join(m.key for m in metrics)}")
        for run, pairs in sweeps:
            print(f"{describe(run)}: {len(pairs)} post-hoc EMA values")
        swept = f", {len(sweeps)} runs' post-hoc EMAs" if stds else ""
        err.print(f"{len(todo)} runs would be measured{swept}; nothing written. Store: {path}")
        return
    use_threads()
    with Store(path, create=False) as db:
        try:
            summary = measure_study(spec, db, engine)
            swept = (
                sweep_study(spec, db, stds, sweep_metrics, engine, sweep_progress)
                if stds is not None
                else None
            )
        except KeyboardInterrupt:
            err.print(
                f"interrupted: what was measured is saved in {path}; run the same command to "
                "measure the rest",
                markup=False,
                highlight=False,
            )
            raise typer.Exit(130) from None
        unfinished = sum(
            state not in (RunStatus.DONE, RunStatus.DIVERGED)
            for *_, state, _ in plan_records(spec, db, engine)
        )
    for note in summary.notes + (swept.notes if swept else []):
        err.print(f"note: {note}", markup=False)
    later = f"; {unfinished} planned runs not trained yet (`schedlab run`)" if unfinished else ""
    sweep = ""
    if swept is not None:
        sweep = f"; post-hoc EMAs of {swept.runs} runs measured ({swept.values} values)"
    err.print(f"{summary.measured} runs measured{sweep}{later}. Store: {path}")


def sweep_progress(done: int, total: int) -> None:
    err.print(f"post-hoc EMA sweep: {done} of {total} runs", markup=False, highlight=False)


@app.command()
@one_line_errors
def status(
    study: StudyArg,
    store: StoreOption = None,
    engine: ReadEngineOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="one JSON object on stdout: every planned run")
    ] = False,
) -> None:
    """Done / pending / running / stale / failed / diverged runs per schedule x dataset."""
    spec = load(study, engine or "fleet")
    with Store(store_path(spec, store), create=False, read_only=True) as db:
        engine = read_engine(spec, db, engine)
        rows = plan_records(spec, db, engine)
        if as_json:
            runs = [
                {
                    "schedule": label,
                    "dataset": dataset,
                    "seed": seed,
                    "status": str(state),
                    "run_id": record.run_id if record else None,
                    "error": record.error if record else None,
                }
                for label, dataset, seed, state, record in rows
            ]
            counts = Counter(run["status"] for run in runs)
            tuning = tuning_line(spec, db, engine) if spec.tune is not None else None
            print(
                json.dumps({"study": spec.name, "counts": counts, "tuning": tuning, "runs": runs})
            )
            return
        out.print(status_table(spec, db, engine))
        if spec.tune is not None:
            out.print(tuning_line(spec, db, engine))
        for label, dataset, seed, state, record in rows:
            if (
                record is not None
                and state in (RunStatus.FAILED, RunStatus.DIVERGED)
                and record.error
            ):
                out.print(f"{state}: {dataset}/{label}/seed {seed}: {record.error}", markup=False)


def tuning_line(spec: StudySpec, db: Store, engine: str) -> str:
    """How far tuning is: trials scored of the budget, searches with a chosen configuration."""
    from schedlab.trials import search_result, searches

    results = [search_result(db, search) for search in searches(spec, engine)]
    scored = sum(t.state != "pending" for r in results for t in r.trials)
    budget = sum(r.search.tune.trials for r in results)
    chosen = sum(r.best is not None for r in results)
    return (
        f"tuning: {scored} of {budget} trials scored; {chosen} of {len(results)} schedule x "
        "dataset searches have chosen their configuration"
    )
