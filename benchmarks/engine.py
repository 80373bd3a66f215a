"""Training-engine throughput against the machine's limit.

    python benchmarks/engine.py [--quick] [--json FILE] [--device cpu|cuda] [--model mlp|unet]

Measures, in one process on one machine:
- the machine's matmul peak: GFLOP/s of a large float32 matmul (best of several);
- model-steps/s of the reference loop (one run, torch.optim.AdamW, batch 256, default model);
- model-steps/s of the fleet engine for K = 1, 5, 20, 60 runs (K x fleet steps/s);
- each engine's fraction of the peak, at 403 MFLOP per model-step (forward, backward of the
  weights and of the hidden activations, for 256 points through the 296,450-parameter MLP);
- where the largest fleet's step goes: GEMMs (with their GFLOP/s), AdamW, the rest;
- AdamW for K = 16 runs: K fused calls (one per row) against one fused call over [K, P];
- sampling throughput of K = 16 runs through T = 100 steps (CPU): one run after another with
  the reference sampler, and as one fleet (``schedlab.measure.sampling``).
Ratios to the reference loop are the speed claims; they are measured here, in the same run.

With ``--model unet`` (digits as [1, 8, 8] images, batch 256, the unet's defaults) it measures
instead, in one run and one table: the reference loop; the generic (autograd) fleet at
K = 1, 8, 32; and K single-threaded processes each training one run with the loop, as many at
a time as there are cores (what a user of Ray Tune or Optuna runs).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

from schedlab import data
from schedlab.config.settings import TrainSettings
from schedlab.measure.sampling import timed_samples
from schedlab.model.denoiser import Denoiser, parameter_count
from schedlab.model.diffusion import sample
from schedlab.schedules import registry as schedules
from schedlab.training.common import Member, build_model, noise_schedule
from schedlab.training.fleet.model import FleetDenoiser
from schedlab.training.fleet.optimizer import FleetAdamW, clip_coefficients
from schedlab.training.fleet.shards import train_fleet
from schedlab.training.loop import train_reference
from schedlab.training.seeding import generator

FLOP_PER_MODEL_STEP = 403e6
SAMPLING_K = 16


def matmul_peak_gflops(device: str, size: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def loop_steps_per_s(steps: int, device: str) -> float:
    settings = TrainSettings(steps=steps)
    points = data.load("moons", 20_000)
    result = train_reference(points, schedules.resolve("cosine"), settings, 0, device=device)
    return steps / result.training_time


def fleet_steps_per_s(k: int, steps: int, device: str, precision: str | None = None) -> float:
    settings = TrainSettings(steps=steps, precision=precision)
    names = ["cosine", "step", "exponential", "constant", "plateau"]
    datasets = ["circle", "dino", "line", "moons"]  # the reference sets, all 2-D
    members = [
        Member(data.load(datasets[i % 4], 20_000), schedules.resolve(names[i % 5]), i, 3e-4)
        for i in range(k)
    ]
    results = train_fleet(members, settings, device=device)
    return steps / results[0].training_time  # training_time is the fleet wall time / K


def fleet_step_breakdown(k: int, device: str, steps: int) -> dict[str, float]:
    """Milliseconds per fleet step in GEMMs, in AdamW and in everything else (torch.profiler).

    The GEMMs alone bound what any engine built on torch's batched matmul can reach here.
    """
    settings = TrainSettings()
    fleet = FleetDenoiser([build_model(settings, seed) for seed in range(k)], device)
    optimizer = FleetAdamW(fleet.weights, fleet.grad)
    noise = noise_schedule(settings).to(device)
    generator = torch.Generator().manual_seed(0)
    x0, eps = (torch.randn(k, 256, 2, generator=generator).to(device) for _ in range(2))
    t = torch.randint(0, settings.timesteps, (k, 256), generator=generator).to(device)
    lr = torch.full((k,), 3e-4, dtype=torch.float64, device=device)

    def step() -> None:
        fleet.losses_and_gradients(x0, t, eps, noise.sqrt_abar, noise.sqrt_one_minus_abar)
        optimizer.step(lr, clip_coefficients(fleet.grad, settings.clip))

    for _ in range(3):
        step()
    sync(device)
    start = time.perf_counter()
    with torch.profiler.profile() as prof:
        for _ in range(steps):
            step()
        sync(device)
    total = (time.perf_counter() - start) / steps * 1e3
    parts = {"gemm": 0.0, "adamw": 0.0}
    for event in prof.key_averages():
        if event.key in ("aten::bmm", "aten::baddbmm_"):
            parts["gemm"] += event.self_cpu_time_total / 1e3 / steps
        elif event.key == "aten::_fused_adamw_":
            parts["adamw"] += event.self_cpu_time_total / 1e3 / steps
    return {"total_ms": total, **{f"{n}_ms": v for n, v in parts.items()}}


def adamw_ms(k: int, device: str, repeats: int) -> dict[str, float]:
    """Milliseconds per AdamW update of K runs' [K, P] weights (reference model), one thread as
    in a training shard: K calls of torch's fused kernel, one per row (the CPU path); one call
    of it over the whole [K, P] (one LR for all: the floor of any single fused pass); and
    ``adamw_one_pass`` eagerly (the GPU path without torch.compile)."""
    weights = torch.zeros(k, parameter_count(Denoiser()), device=device)
    grad = torch.randn(weights.shape, generator=torch.Generator().manual_seed(0)).to(device)
    lr = torch.full((k,), 3e-4, dtype=torch.float64, device=device)
    clip = torch.ones(k, device=device)
    per_row = FleetAdamW(weights, grad)
    one_pass = FleetAdamW(weights.clone(), grad, one_pass=True)
    whole = ([weights.clone()], [grad], [torch.zeros_like(weights)], [torch.zeros_like(weights)])
    count = torch.zeros((), device=device)

    def whole_kernel() -> None:
        count.add_(1)
        torch._fused_adamw_(
            *whole,
            [],
            [count],
            lr=3e-4,
            beta1=0.9,
            beta2=0.999,
            weight_decay=0.01,
            eps=1e-8,
            amsgrad=False,
            maximize=False,
        )

    ways = {
        "per_row": lambda: per_row.step(lr, clip),
        "whole_kernel": whole_kernel,
        "one_pass_eager": lambda: one_pass.step(lr, clip),
    }
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    try:
        out = {}
        for name, update in ways.items():
            for _ in range(2):
                update()
            sync(device)
            start = time.perf_counter()
            for _ in range(repeats):
                update()
            sync(device)
            out[name] = (time.perf_counter() - start) / repeats * 1e3
        return out
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(before)


def sampling_samples_per_s(k: int, n: int) -> tuple[float, float]:
    """Samples/s through all T steps for K runs (CPU, chunks of 1,000 points): one after
    another with the reference sampler (torch's threads), and as one fleet (single-threaded
    shards, one per thread)."""
    settings = TrainSettings()
    models = [build_model(settings, seed) for seed in range(k)]
    noise = noise_schedule(settings)
    start = time.perf_counter()
    for seed, model in enumerate(models):
        sample(model, noise, n, generator(seed, "sample"), chunk=1000)
    loop = k * n / (time.perf_counter() - start)
    start = time.perf_counter()
    timed_samples(models, list(range(k)), noise, n, torch.float32, chunk=1000)
    return loop, k * n / (time.perf_counter() - start)


def unet_members(k: int) -> list[Member]:
    from schedlab.model.registry import resolve

    points = data.load("digits", 20_000, shape=(1, 8, 8))
    spec = resolve("unet", {}, (1, 8, 8), "digits")
    names = ["cosine", "step", "exponential", "constant"]
    return [Member(points, schedules.resolve(names[i % 4]), i, 3e-4, spec) for i in range(k)]


def unet_loop_seconds(seed: int, steps: int, device: str, threads: int | None) -> float:
    """Training seconds of one UNet run in the reference loop (``threads``: torch's, or all)."""
    if threads is not None:
        torch.set_num_threads(threads)
    (member,) = unet_members(1)
    settings = TrainSettings(steps=steps)
    result = train_reference(
        member.points, member.schedule, settings, seed, device=device, model_spec=member.model
    )
    return result.training_time


def unet_processes_steps_per_s(k: int, steps: int) -> float:
    """K runs, each in a single-threaded process training with the loop, as many at once as
    there are cores; model-steps/s over the wall time of the K runs (the processes are started
    and have imported torch before the clock starts)."""
    cores = os.cpu_count() or 1
    with ProcessPoolExecutor(cores, mp_context=get_context("spawn")) as pool:
        list(pool.map(unet_loop_seconds, range(cores), [2] * cores, ["cpu"] * cores, [1] * cores))
        start = time.perf_counter()
        list(pool.map(unet_loop_seconds, range(k), [steps] * k, ["cpu"] * k, [1] * k))
        return k * steps / (time.perf_counter() - start)


def unet_main(args: argparse.Namespace) -> None:
    sizes = [int(k) for k in args.sizes.split(",")] if args.sizes else [1, 8, 32]
    steps = 4 if args.quick else 30
    settings = TrainSettings(steps=steps)
    unet_loop_seconds(0, 2, args.device, None)  # one-time costs of the first convolutions
    loop = steps / unet_loop_seconds(0, steps, args.device, None)
    fleet = {}
    for k in sizes:
        results = train_fleet(unet_members(k), settings, device=args.device)
        fleet[str(k)] = steps / results[0].training_time  # the fleet's wall time / K
    processes = (
        unet_processes_steps_per_s(max(sizes), steps) if args.device == "cpu" else float("nan")
    )
    threads = torch.get_num_threads()
    params = parameter_count(unet_members(1)[0].model.build())
    print(f"device {args.device}, torch {torch.__version__}, {threads} threads")
    print(f"unet ({params:,} parameters) on digits [1, 8, 8], batch 256, {steps} steps a run")
    print(f"{'engine':<34}{'model-steps/s':>15}{'vs loop':>10}{'vs processes':>14}")
    rows = [("loop (one run, all threads)", loop)]
    rows += [(f"fleet K={k}", v) for k, v in fleet.items()]
    rows.append((f"{max(sizes)} single-threaded loop processes", processes))
    for name, rate in rows:
        print(f"{name:<34}{rate:>15.2f}{rate / loop:>9.2f}x{rate / processes:>13.2f}x")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "model": "unet",
                    "device": args.device,
                    "threads": threads,
                    "parameters": params,
                    "steps": steps,
                    "loop_steps_per_s": loop,
                    "fleet_steps_per_s": fleet,
                    "processes_k": max(sizes),
                    "processes_steps_per_s": processes,
                },
                indent=2,
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps: under a minute")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model", default="mlp", choices=["mlp", "unet"])
    parser.add_argument("--sizes", help="fleet sizes K (default 1,5,20,60; unet 1,8,32)")
    args = parser.parse_args()
    if args.model == "unet":
        unet_main(args)
        return
    args.sizes = args.sizes or "1,5,20,60"
    sizes = [int(k) for k in args.sizes.split(",")]
    loop_steps = 150 if args.quick else 600
    fleet_steps = 30 if args.quick else 150
    peak = matmul_peak_gflops(args.device)
    # The first GEMMs of a shape in a process pay one-time costs (about a second here).
    loop_steps_per_s(20, args.device)
    fleet_steps_per_s(2, 10, args.device)
    loop = loop_steps_per_s(loop_steps, args.device)
    fleet = {str(k): fleet_steps_per_s(k, fleet_steps, args.device) for k in sizes}
    # bf16-mixed at the largest K, against float32 measured just above.
    mixed = fleet_steps_per_s(max(sizes), fleet_steps, args.device, "bf16-mixed")
    breakdown = fleet_step_breakdown(max(sizes), args.device, 5 if args.quick else 20)
    adamw = adamw_ms(SAMPLING_K, args.device, 5 if args.quick else 20)
    sampling_loop, sampling_fleet = sampling_samples_per_s(SAMPLING_K, 300 if args.quick else 2000)
    threads = torch.get_num_threads()
    print(f"device {args.device}, torch {torch.__version__}, {threads} threads")
    print(f"matmul peak: {peak:.1f} GFLOP/s")
    print(f"{'engine':<12}{'model-steps/s':>15}{'vs loop':>10}{'GFLOP/s':>10}{'of peak':>10}")
    rows = [("loop", loop)] + [(f"fleet K={k}", v) for k, v in fleet.items()]
    for name, rate in rows:
        gflops = rate * FLOP_PER_MODEL_STEP / 1e9
        print(f"{name:<12}{rate:>15.1f}{rate / loop:>9.2f}x{gflops:>10.1f}{gflops / peak:>9.0%}")
    print(
        f"fleet K={max(sizes)} bf16-mixed: {mixed:.1f} model-steps/s, "
        f"{mixed / fleet[str(max(sizes))]:.2f}x float32"
    )
    gemm_gflops = max(sizes) * FLOP_PER_MODEL_STEP / breakdown["gemm_ms"] / 1e6
    other = breakdown["total_ms"] - breakdown["gemm_ms"] - breakdown["adamw_ms"]
    print(
        f"fleet step at K={max(sizes)} (profiled): {breakdown['total_ms']:.1f} ms = "
        f"GEMMs {breakdown['gemm_ms']:.1f} ms ({gemm_gflops:.0f} GFLOP/s, "
        f"{gemm_gflops / peak:.0%} of peak) + AdamW {breakdown['adamw_ms']:.1f} ms "
        f"+ the rest {other:.1f} ms"
    )
    print(
        f"AdamW of K = {SAMPLING_K} runs, one thread: {adamw['per_row']:.2f} ms as K fused calls "
        f"(one per row), {adamw['whole_kernel']:.2f} ms as one fused call over [K, P], "
        f"{adamw['one_pass_eager']:.2f} ms as the eager one-pass update"
    )
    print(
        f"sampling, K = {SAMPLING_K} runs (CPU): one by one {sampling_loop:.0f} samples/s, "
        f"as a fleet {sampling_fleet:.0f} samples/s ({sampling_fleet / sampling_loop:.2f}x)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "device": args.device,
                    "threads": threads,
                    "peak_gflops": peak,
                    "loop_steps_per_s": loop,
                    "fleet_steps_per_s": fleet,
                    "fleet_bf16_mixed_steps_per_s": {str(max(sizes)): mixed},
                    "fleet_step_breakdown_ms": {"K": max(sizes), **breakdown},
                    "adamw_ms": {"K": SAMPLING_K, **adamw},
                    "sampling_k": SAMPLING_K,
                    "sampling_loop_samples_per_s": sampling_loop,
                    "sampling_fleet_samples_per_s": sampling_fleet,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
