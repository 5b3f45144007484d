"""The GPU half of the suite (``python -m benchmarks --gpu``): the MLP steps on the cupy
backend, against a hand-written CuPy network with explicit backward and against PyTorch CUDA.

Cases (all ``gpu=True``):
    mlp_tiny_gpu    2-10-3, batch 30: where a GPU step is all launch overhead (for information).
    mlp_medium_gpu  784-1024-1024-10, batch 256 (for information).
    mlp_large       4096-4096-4096-10, batch 1024. Targets (issue 6, on an H100): float32 engine
                    step at least 10x faster than the numpy engine on the CPU, within 1.2x of
                    PyTorch CUDA; float16 (or mixed16) at least 1.5x faster than float32.
                    Issue 19: the engine's step and its compiled step (``nb.compile_step``)
                    within 1.1x of PyTorch CUDA's, in float32 and in float16 (torch's model
                    in the same dtype), each dtype in one interleaved run of the three.

Timing: each loop of steps is bracketed by CUDA events recorded on the current stream (a
synchronize first, so no earlier work is counted), read after the end event completes.

``--gpu --dry-run`` runs the same code on a CPU: numpy for cupy, torch on the CPU for torch
CUDA, wall-clock timing, small sizes. It checks the plumbing; its numbers mean nothing and are
not saved.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from benchmarks import (
    NoDevice,
    Options,
    Row,
    Runner,
    Skip,
    interleaved,
    interval_note,
    register,
    row,
    step_runner,
)
from benchmarks._nets import (
    LARGE,
    MEDIUM,
    TINY,
    HandMLP,
    data,
    engine_step,
    mixed16_step,
    step_flops,
    torch_step,
)
from nnbackend import registry

__all__ = ["GpuSetup", "gpu_setup"]

DRY_SIZES = {
    "tiny": TINY,
    "medium": ([64, 128, 128, 10], "relu", 32),
    "large": ([256, 256, 256, 10], "relu", 64),
}


@dataclass
class GpuSetup:
    """Where the GPU cases run: the array module (cupy, or numpy in a dry run), the
    nnbackend backend name, torch's device (None without a usable torch) and the timers."""

    xp: Any
    backend: str
    torch_device: str | None
    dry_run: bool

    def runner(self, step: Callable[..., Any], *args: Any) -> Runner:
        """A runner timing ``step(*args)`` loops with CUDA events (wall clock in a dry run)."""
        if self.dry_run:
            return step_runner(step, *args)
        cupy = self.xp

        def run(number: int) -> float:
            stream = cupy.cuda.get_current_stream()
            stream.synchronize()
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            start.record(stream)
            for _ in range(number):
                step(*args)
            end.record(stream)
            end.synchronize()
            return float(cupy.cuda.get_elapsed_time(start, end)) / 1e3

        return run

    def torch_runner(self, step: Callable[..., Any], *args: Any) -> Runner:
        """A runner timing a torch step's loops with torch's CUDA events."""
        if self.dry_run:
            return step_runner(step, *args)
        import torch

        def run(number: int) -> float:
            torch.cuda.synchronize()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(number):
                step(*args)
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end)) / 1e3

        return run

    def to_device(self, *arrays: Any) -> tuple[Any, ...]:
        return tuple(self.xp.asarray(a) for a in arrays)

    def to_torch(self, *arrays: Any) -> tuple[Any, ...]:
        import torch

        return tuple(torch.as_tensor(a, device=self.torch_device) for a in arrays)

    def size(self, name: str) -> tuple[list[int], str, int]:
        return (
            DRY_SIZES[name]
            if self.dry_run
            else {"tiny": TINY, "medium": MEDIUM, "large": LARGE}[name]
        )


def gpu_setup(opts: Options) -> GpuSetup:
    """The setup for this run, or :class:`~benchmarks.NoDevice` where no GPU is usable."""
    if not opts.dry_run:
        reason = registry.probe("cupy")
        if reason is not None:
            raise NoDevice(
                f"no usable CUDA GPU here (cupy backend: {reason}); run `python -m benchmarks "
                "--gpu` on a GPU machine, or `--gpu --dry-run` to check the code on the CPU"
            )
    try:
        import torch
    except ImportError:
        torch = None
    if opts.dry_run:
        return GpuSetup(np, "numpy", "cpu" if torch is not None else None, True)
    import cupy

    cuda = torch is not None and torch.cuda.is_available()
    return GpuSetup(cupy, "cupy", "cuda" if cuda else None, False)


def _gpu_opts(opts: Options, step_s: float) -> Options:
    """Rounds of at least ``step_s`` (a few steps, so the launch queue stays full)."""
    if opts.dry_run:
        return replace(opts, rounds=5, round_s=0.0, prewarm=0.0, warmup_s=0.0)
    return replace(opts, rounds=9 if opts.quick else 31, round_s=step_s, prewarm=0.25, warmup_s=0.5)


def _step_rows(
    label: str,
    setup: GpuSetup,
    net: tuple[list[int], str, int],
    opts: Options,
    *,
    torch_target: float | None = None,
) -> tuple[list[Row], float]:
    """Engine against hand-written CuPy and against torch CUDA, float32; returns the rows and
    the engine's median step time."""
    sizes, activation, batch = net
    x_host, t_host = data(batch, sizes[0], sizes[-1], "float32")
    x, t = setup.to_device(x_host, t_host)
    hand = HandMLP(sizes, activation, "float32", xp=setup.xp)
    engine_run = setup.runner(engine_step(sizes, activation, "float32", setup.backend), x, t)
    times = interleaved({"hand": setup.runner(hand.step, x, t), "engine": engine_run}, opts)
    engine_s = times["engine"]
    rows = [
        row(f"{label}: hand-written {setup.backend} step", times["hand"] * 1e3, "ms"),
        row(f"{label}: engine step", engine_s * 1e3, "ms"),
        row(f"{label}: engine / hand", times.ratio("engine", "hand"), "x"),
        row(
            f"{label}: engine nominal rate (6*batch*weights / step)",
            step_flops(sizes, batch) / engine_s / 1e12,
            "TFLOP/s",
        ),
    ]
    if setup.torch_device is not None:
        xt, tt = setup.to_torch(x_host, t_host)
        vs = interleaved(
            {
                "engine": engine_run,
                "torch": setup.torch_runner(
                    torch_step(sizes, activation, setup.torch_device), xt, tt
                ),
            },
            opts,
            mixed_ok=opts.dry_run,  # on the CPU only in a dry run: numbers that mean nothing
        )
        rows.append(
            row(
                f"{label}: engine / torch {setup.torch_device}",
                vs.ratio("engine", "torch"),
                "x",
                at_most=torch_target,
                note=f"torch step {vs['torch'] * 1e3:.2f} ms",
            )
        )
    else:
        rows.append(
            row(f"{label}: engine / torch", math.nan, "x", note="torch with CUDA not available")
        )
    return rows, engine_s


@register("mlp_tiny_gpu", "2-10-3 step on cupy: engine vs hand-written CuPy, torch CUDA", gpu=True)
def mlp_tiny_gpu(opts: Options) -> list[Row]:
    setup = gpu_setup(opts)
    rows, _ = _step_rows("tiny gpu", setup, setup.size("tiny"), _gpu_opts(opts, 0.005))
    return rows


@register(
    "mlp_medium_gpu",
    "784-1024-1024-10 step on cupy: engine vs hand-written CuPy, torch CUDA",
    gpu=True,
)
def mlp_medium_gpu(opts: Options) -> list[Row]:
    setup = gpu_setup(opts)
    rows, _ = _step_rows("medium gpu", setup, setup.size("medium"), _gpu_opts(opts, 0.01))
    return rows


def _numpy_reference(net: tuple[list[int], str, int], steps: int) -> float:
    """The numpy engine's float32 step on this host's CPU: median of ``steps`` after two
    warm-up steps (a large step takes up to seconds; no interleaving)."""
    sizes, activation, batch = net
    x, t = data(batch, sizes[0], sizes[-1], "float32")
    step = engine_step(sizes, activation, "float32")
    for _ in range(2):
        step(x, t)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(x, t)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cpu_gemm_rate() -> tuple[float, str] | None:
    """The float32 GEMM rate recorded by ``mlp_medium`` on the development CPU, if saved."""
    import json

    from benchmarks import RESULTS_DIR

    path = RESULTS_DIR / "mlp_medium.json"
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for r in document.get("rows", []):
        if r["name"] == "medium: GEMMs alone, rate":
            return float(r["value"]), str(document.get("machine", {}).get("cpu", "?"))
    return None


@register(
    "mlp_large",
    "4096-4096-4096-10 step (batch 1024) on cupy: vs numpy CPU, torch CUDA, float16, mixed16",
    gpu=True,
)
def mlp_large(opts: Options) -> list[Row]:
    setup = gpu_setup(opts)
    net = setup.size("large")
    sizes, activation, batch = net
    gopts = _gpu_opts(opts, 0.05)
    rows, engine_s = _step_rows("large gpu", setup, net, gopts, torch_target=1.2)

    cpu_s = _numpy_reference(net, 1 if opts.quick else 3)
    rows.append(
        row(
            "large gpu: numpy engine on this host's CPU / engine",
            cpu_s / engine_s,
            "x",
            at_least=10,
            note=f"numpy step {cpu_s * 1e3:.1f} ms on this host's CPU, same process",
        )
    )
    recorded = _cpu_gemm_rate()
    if recorded is not None:
        rate, cpu = recorded
        gemm_flops = step_flops(sizes, batch) - 2 * batch * sizes[0] * sizes[1]  # no first dx
        estimate = gemm_flops / (rate * 1e9)
        rows.append(
            row(
                "large gpu: numpy on the development CPU (estimated) / engine",
                estimate / engine_s,
                "x",
                note=f"{cpu}: {rate:.0f} GFLOP/s float32 GEMM rate from mlp_medium.json, "
                "applied to the step's GEMM FLOPs",
            )
        )

    rows += _vs_torch_rows(setup, net, gopts)

    x_host, t = data(batch, sizes[0], sizes[-1], "float32")
    variants = {}
    for dtype in ("float32", "float16"):
        x, tt = setup.to_device(x_host.astype(dtype), t)
        variants[dtype] = setup.runner(engine_step(sizes, activation, dtype, setup.backend), x, tt)
    half = interleaved(variants, gopts)
    rows += [
        row("large gpu: float16 engine step", half["float16"] * 1e3, "ms"),
        row(
            "large gpu: float32 / float16 step",
            half.ratio("float32", "float16"),
            "x",
            at_least=1.5,
            note="tensor cores; the target is met by float16 or mixed16",
        ),
    ]
    try:
        mixed = mixed16_step(sizes, activation, setup.backend)
    except Skip as exc:
        rows.append(row("large gpu: float32 / mixed16 step", math.nan, "x", note=f"skipped: {exc}"))
    else:
        x, tt = setup.to_device(x_host, t)
        m = interleaved(
            {"float32": variants["float32"], "mixed16": setup.runner(mixed, x, tt)}, gopts
        )
        rows.append(row("large gpu: float32 / mixed16 step", m.ratio("float32", "mixed16"), "x"))
    return rows


def _vs_torch_rows(setup: GpuSetup, net: tuple[list[int], str, int], opts: Options) -> list[Row]:
    """Issue 19's GPU targets: the engine's eager step and its compiled step against PyTorch
    CUDA's, float32 and float16, at most 1.1x; each dtype's three steps in one interleaved
    run (CUDA events time each loop on the GPU's own clock)."""
    sizes, activation, batch = net
    if setup.torch_device is None:
        return [
            row(
                f"large gpu {dtype}: engine / torch",
                math.nan,
                "x",
                note="torch with CUDA not available",
            )
            for dtype in ("float32", "float16")
        ]
    import nnbackend as nb

    device = setup.torch_device
    rows = []
    for dtype in ("float32", "float16"):
        x_host, t_host = data(batch, sizes[0], sizes[-1], dtype)
        x, t = setup.to_device(x_host, t_host)
        xt, tt = setup.to_torch(x_host, t_host)
        compiled = nb.compile_step(engine_step(sizes, activation, dtype, setup.backend))
        runners = {
            "engine": setup.runner(engine_step(sizes, activation, dtype, setup.backend), x, t),
            "compiled": setup.runner(compiled, x, t),
            "torch": setup.torch_runner(torch_step(sizes, activation, device, dtype), xt, tt),
        }
        # mixed_ok: on the GPU the steps are timed by CUDA events, not by the CPU's clock; on a
        # CPU (the dry run) the numbers mean nothing anyway.
        times = interleaved(runners, opts, mixed_ok=True)
        label = f"large gpu {dtype}"
        torch_ms = f"torch {device} step {times['torch'] * 1e3:.2f} ms"
        rows += [
            row(f"{label}: engine step", times["engine"] * 1e3, "ms"),
            row(f"{label}: compiled step", times["compiled"] * 1e3, "ms"),
            row(
                f"{label}: engine / torch {device}",
                times.ratio("engine", "torch"),
                "x",
                at_most=1.1,
                note=interval_note(times.ratios("engine", "torch"), 1.1, before=torch_ms),
            ),
            row(
                f"{label}: compiled / torch {device}",
                times.ratio("compiled", "torch"),
                "x",
                at_most=1.1,
                note=interval_note(
                    times.ratios("compiled", "torch"), 1.1, before=f"{compiled.replays} replays"
                ),
            ),
        ]
    return rows
