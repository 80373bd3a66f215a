"""schedlab from Python: run a study, read its results and curves as pandas DataFrames, and use
its schedules in your own training loop.

    import schedlab
    outcome = schedlab.run_study("study.toml")           # or a preset name, or a StudySpec
    results = schedlab.load_results(study="study.toml")  # one row per run, as `schedlab export`
    curves = schedlab.load_curves(study="study.toml")    # one row per run and step
    scheduler = schedlab.get_scheduler("cosine", optimizer, num_training_steps=10_000)

Each function does what the command line does with the same study and store: the same
claims (a study shared with `schedlab run` processes trains each run once), the same rows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from torch.optim import Optimizer

    from schedlab.config.study import StudySpec
    from schedlab.execute.driver import Events, StudyOutcome
    from schedlab.schedules.driver import LRDriver
    from schedlab.store.store import Store


def study_spec(study: str | os.PathLike[str] | StudySpec | Mapping[str, Any]) -> StudySpec:
    """A StudySpec from a study file, a preset name, a parsed TOML document or a StudySpec.
    In a document, datasets, the model and schedules may be Python functions (or classes)
    instead of names: each stands for its ``module:function`` (defined at a module's top
    level, so that run ids can hash its source and Ray workers import it)."""
    from schedlab.config.study import StudySpec, load_study

    if isinstance(study, StudySpec):
        return study
    if isinstance(study, Mapping):
        from pydantic import ValidationError

        from schedlab.config.errors import first_error

        try:
            return StudySpec.model_validate(with_references(study))
        except ValidationError as err:
            raise ValueError(f"study: {first_error(err)}") from err
    return load_study(os.fspath(study))


def with_references(study: Mapping[str, Any]) -> dict[str, Any]:
    """``study`` with each Python object named by its ``module:function`` reference."""
    from schedlab.usercode import reference_of

    def named(value: Any, kind: str) -> Any:
        return reference_of(value, kind) if callable(value) else value

    doc = dict(study)
    if isinstance(doc.get("datasets"), list):
        doc["datasets"] = [named(d, "dataset") for d in doc["datasets"]]
    if isinstance(doc.get("model"), Mapping):
        doc["model"] = {**doc["model"], "name": named(doc["model"].get("name"), "model")}
    elif callable(doc.get("model")):
        doc["model"] = {"name": named(doc["model"], "model")}
    if isinstance(doc.get("schedules"), list):
        doc["schedules"] = [
            {**e, "name": named(e.get("name"), "schedule")} if isinstance(e, Mapping) else e
            for e in doc["schedules"]
        ]
    return doc


def run_study(
    study: str | os.PathLike[str] | StudySpec | Mapping[str, Any],
    store: str | os.PathLike[str] | None = None,
    executor: str = "local",
    engine: str = "fleet",
    device: str = "cpu",
    fleet_size: int | None = None,
    address: str | None = None,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> StudyOutcome:
    """Train every run of ``study`` not finished in ``store`` (default
    ./schedlab-runs/<name>.sqlite) and measure what is missing; as `schedlab run`.

    ``executor`` is "local" (fleets in this process) or "ray" (fleets as Ray tasks, on the
    cluster at ``address`` or a local one); ``threads`` as `schedlab run --threads`;
    ``progress(line)`` is handed the lines `schedlab run` logs (a fleet started, a run
    finished). Returns the outcome: runs planned, skipped, and trained by status."""
    from schedlab.config.engines import check_engine_options
    from schedlab.store.store import Store, default_path
    from schedlab.threads import use_threads
    from schedlab.tuning.search import tune_study

    if executor not in ("local", "ray"):
        raise ValueError(f"unknown executor {executor!r}; valid executors: local, ray")
    check_engine_options(engine, fleet_size, device, local=executor == "local")
    spec = study_spec(study)
    use_threads(threads)
    events = progress_events(progress) if progress is not None else None
    path = Path(store) if store is not None else default_path(spec.name)
    with Store(path) as db:
        if executor == "ray":
            from schedlab.execute.ray_executor import run_study_on_ray

            return run_study_on_ray(
                spec, db, events, engine, fleet_size, device, address, tune=tune_study
            )
        from schedlab.execute.local import run_study as run_locally

        return run_locally(spec, db, events, engine, fleet_size, device, tune=tune_study)


def progress_events(progress: Callable[[str], None]) -> Events:
    """The driver's events as the lines `schedlab run` logs, handed to ``progress``."""
    from schedlab.execute.driver import Events, describe

    return Events(
        started=lambda what, done, total: progress(
            f"{what}: started ({done} of {total} runs done)"
        ),
        finished=lambda run, status: progress(f"{describe(run)}: {status}"),
    )


def load_results(
    store: str | os.PathLike[str] | None = None,
    study: str | os.PathLike[str] | StudySpec | Mapping[str, Any] | None = None,
    engine: str = "fleet",
) -> pd.DataFrame:
    """One row per run, with the columns of `schedlab export`: identity (dataset, schedule,
    seed, run_id, phase, trial), status, every metric, the schedule's params and the settings.

    Give the study (file, preset, StudySpec), the store, or both; a store alone serves when it
    holds one study (its latest registered plan is read)."""
    import pandas as pd

    from schedlab.results import export_rows

    spec, db = _open(store, study, engine)
    with db:
        rows = export_rows(spec, db, engine)
    return pd.DataFrame(rows, columns=list(dict.fromkeys(k for row in rows for k in row)))


def load_curves(
    store: str | os.PathLike[str] | None = None,
    study: str | os.PathLike[str] | StudySpec | Mapping[str, Any] | None = None,
    engine: str = "fleet",
) -> pd.DataFrame:
    """Per-step curves of every trained run in long format: run_id, phase, trial, dataset,
    schedule, seed, status, step (1-based), loss (training), lr, heldout (the held-out EMA
    loss at the steps it was measured, NaN between)."""
    import pandas as pd

    from schedlab.results import CURVE_KEYS, curve_columns, export_rows

    spec, db = _open(store, study, engine)
    with db:
        columns = curve_columns(export_rows(spec, db, engine), db)
    frame = pd.DataFrame(columns)
    for key in CURVE_KEYS:
        if key not in ("trial", "seed"):
            frame[key] = frame[key].astype("string")
    frame["seed"] = frame["seed"].astype("int64")
    frame["trial"] = frame["trial"].astype("Int64")
    return frame


def load_ema_sweep(
    store: str | os.PathLike[str] | None = None,
    study: str | os.PathLike[str] | StudySpec | Mapping[str, Any] | None = None,
    engine: str = "fleet",
) -> pd.DataFrame:
    """The post-hoc EMA sweep (`schedlab measure --ema-sweep`), with the columns of `schedlab
    export --what ema-sweep`: run_id, dataset, schedule, seed, ema_std and every metric a sweep
    can measure (NaN where not measured)."""
    import pandas as pd

    from schedlab.metrics import averaged
    from schedlab.results import sweep_rows

    spec, db = _open(store, study, engine)
    with db:
        rows = sweep_rows(spec, db, engine)
    keys = ["run_id", "dataset", "schedule", "seed", "ema_std", *(m.key for m in averaged())]
    return pd.DataFrame(rows, columns=keys).astype({m.key: "float64" for m in averaged()})


def get_scheduler(
    name: str,
    optimizer: Optimizer,
    num_training_steps: int | None = None,
    num_warmup_steps: int | None = None,
    *,
    steps: int | None = None,
    **params: Any,
) -> LRDriver:
    """The schedule ``name`` (any of `schedlab schedules`, warm-up parameters included) over
    ``num_training_steps`` optimizer steps of ``optimizer`` (``steps`` is the same), as
    schedlab trains with it: a drop-in for ``transformers.get_scheduler`` or a torch
    scheduler. Call ``.step()`` after every optimizer step (``.step(loss)`` for a plateau
    schedule watching the training loss; one watching the held-out loss takes
    ``heldout_loss``, a function called only when it looks). Every parameter group keeps its
    own LR; ``get_last_lr()``, ``state_dict()`` and ``load_state_dict()`` work as torch's."""
    from schedlab.schedules.driver import LRDriver
    from schedlab.schedules.registry import lookup, resolve, split_schedule

    total = num_training_steps if num_training_steps is not None else steps
    if total is None or total <= 0:
        raise ValueError(f"num_training_steps must be a positive int, got {total}")
    if num_warmup_steps is not None:
        params = {**params, "warmup_steps": num_warmup_steps}
    if lookup(split_schedule(name)[0]).optimizer == "schedule_free":
        raise ValueError(
            f"{name!r} is no LR schedule: it is schedulefree's AdamWScheduleFree optimizer at a "
            "constant LR. Train with schedulefree.AdamWScheduleFree instead of a scheduler"
        )
    return LRDriver(optimizer, resolve(name, params, total), total)


def _open(
    store: str | os.PathLike[str] | None,
    study: str | os.PathLike[str] | StudySpec | Mapping[str, Any] | None,
    engine: str,
) -> tuple[StudySpec, Store]:
    """The study and its store, opened read-only."""
    from schedlab.config.engines import check_engine
    from schedlab.store.store import Store, default_path

    check_engine(engine)
    if study is None and store is None:
        raise ValueError("give the study, the store, or both")
    spec = study_spec(study) if study is not None else None
    path = Path(store) if store is not None else default_path(spec.name)  # type: ignore[union-attr]
    db = Store(path, create=False, read_only=True)
    try:
        return spec or stored_spec(db), db
    except BaseException:
        db.close()
        raise


def stored_spec(db: Store) -> StudySpec:
    """The study a store holds, as its latest plan registered it (it must hold one study)."""
    from schedlab.config.study import StudySpec

    names = db.study_names()
    if len(names) != 1:
        raise ValueError(
            f"{db.path} holds {len(names)} studies ({', '.join(names) or 'none'}); "
            "give study= to choose one"
        )
    latest = db.latest_plan(names[0])
    assert latest is not None
    return StudySpec.model_validate(latest[1])
