"""Every option that more than one command takes, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from schedlab.config.engines import DEFAULT_FLEET_SIZE, DEVICES, ENGINES
from schedlab.config.presets import PRESETS

StudyArg = Annotated[
    str, typer.Argument(help=f"a study TOML file, or a preset: {', '.join(PRESETS)}")
]
StoreOption = Annotated[
    Path | None,
    typer.Option("--store", help="SQLite store (default ./schedlab-runs/<study>.sqlite)"),
]
EngineOption = Annotated[
    str,
    typer.Option(
        metavar="[" + "|".join(ENGINES) + "]",
        help="fleet (vectorized, default) or loop (the reference); part of each run's identity",
    ),
]
ReadEngineOption = Annotated[
    str | None,
    typer.Option(
        "--engine",
        metavar="[" + "|".join(ENGINES) + "]",
        help="the engine whose runs to read (default: whichever trained this study's runs in "
        "the store)",
    ),
]
FleetSizeOption = Annotated[
    int | None,
    typer.Option(
        help="runs per fleet (default: "
        + ", ".join(f"{n} on {d}" for d, n in DEFAULT_FLEET_SIZE.items())
        + ")"
    ),
]
DeviceOption = Annotated[
    str, typer.Option(metavar="[" + "|".join(DEVICES) + "]", help="where the fleet engine computes")
]
CompileOption = Annotated[
    bool | None,
    typer.Option("--compile/--no-compile", help="torch.compile the fleet (default: on cuda)"),
]
LeaseOption = Annotated[
    float,
    typer.Option(
        help="seconds a claim on a run lives without renewal (renewed every quarter of it)"
    ),
]
ThreadsOption = Annotated[
    int | None,
    typer.Option(
        help="threads to compute with (default: OMP_NUM_THREADS, else the CPUs this process "
        "may use)"
    ),
]
