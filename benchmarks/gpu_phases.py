"""Where the large GPU step's time goes, phase by phase: issue 19's float16 gap.

The H200 run of 2026-12-04 (``mlp_large``) put the engine's float16 step at 1.30x PyTorch
CUDA's and its compiled step at 1.14x, while float32 met 1.1. The gap was about 0.27 ms in
both dtypes, though float16's GEMMs are 3.7x faster: a fixed cost per step, which is either
Python that the GPU waits for (launch-bound) or extra GPU work of its own. This case tells the
two apart, for each phase of the step.

Case ``mlp_large_phases`` (``gpu=True``), the 4096-4096-4096-10 MLP at batch 1024, float32
and float16, the engine's eager step and torch CUDA's (torch's model in the same dtype):

- each phase (``zero_grad``, ``forward``, ``loss``, ``backward``, ``step``) bracketed by
  CUDA events on the current stream: its *GPU time* is the time between its two events on the
  GPU's own clock (idle time waiting for the host included), the median over the measured
  steps; its *host time* is what its Python took to enqueue the work (``perf_counter``);
- the whole step, without the phase events, for the engine, its compiled step
  (``nb.compile_step``) and torch: GPU time per step, and host time per step to enqueue it.
  Host time at or above GPU time means the GPU waits for Python: launch-bound;
- the floor: the step's eight matrix products alone, in the engine's operand layouts
  (``x @ W``, ``x.T @ gy``, ``gy @ W.T``), on cupy and on torch, torch's in its own layout
  too (weights (out, in), the bias inside the forward product), and what each step spends
  beyond its library's products.

The engine and torch take turns, in shuffled order, for a few rounds in one process; CUDA
events time each on the GPU's clock, so the two libraries in one process do not disturb each
other's numbers as two CPU libraries would (``benchmarks.MixedLibraries``): their host
Python calls no CPU BLAS whose threads could spin into the other's turn. The whole-step rows
also give the host's page faults per step and the process's peak RSS.

``--gpu --dry-run`` runs the same code with numpy for cupy and torch on the CPU, toy sizes and
wall-clock marks: it checks the plumbing, and its numbers mean nothing.
"""

from __future__ import annotations

import random
import resource
import statistics
import time
from collections.abc import Callable
from itertools import pairwise
from typing import Any

from benchmarks import Options, Row, Skip, register, row
from benchmarks._nets import data, engine_step, gemm_products, torch_step
from benchmarks._workers import peak_rss_mib
from benchmarks.gpu import GpuSetup, gpu_setup

__all__ = ["PHASES", "Clock", "phase_functions", "time_phases", "time_steps"]

PHASES = ("zero_grad", "forward", "loss", "backward", "step")
Phase = Callable[[Any, Any], None]


class Clock:
    """Marks on one timeline: CUDA events recorded on the current stream of ``library``
    ("cupy" or "torch"), or the wall clock (``None``: a dry run on the CPU)."""

    def __init__(self, library: str | None) -> None:
        self.library = library
        if library == "cupy":
            import cupy

            self._cupy = cupy
        elif library == "torch":
            import torch

            self._torch = torch

    def mark(self) -> Any:
        """A mark now: an event recorded on the stream (the GPU reaches it after the work
        enqueued before it), or the wall clock's time."""
        if self.library == "cupy":
            event = self._cupy.cuda.Event()
            event.record(self._cupy.cuda.get_current_stream())
            return event
        if self.library == "torch":
            event = self._torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def sync(self) -> None:
        """Wait for the work enqueued so far."""
        if self.library == "cupy":
            self._cupy.cuda.get_current_stream().synchronize()
        elif self.library == "torch":
            self._torch.cuda.synchronize()

    def seconds(self, start: Any, end: Any) -> float:
        """Seconds between two marks (after :meth:`sync`, for events)."""
        if self.library == "cupy":
            return float(self._cupy.cuda.get_elapsed_time(start, end)) / 1e3
        if self.library == "torch":
            return float(start.elapsed_time(end)) / 1e3
        return float(end - start)


def phase_functions(parts: tuple[Any, Any, Any]) -> list[Phase]:
    """The step of ``(model, loss_fn, optimizer)`` (an engine's or torch's: the same calls)
    as one function per phase of :data:`PHASES`, each called with ``(x, t)``."""
    model, loss_fn, opt = parts
    held: dict[str, Any] = {}

    def zero_grad(x: Any, t: Any) -> None:
        opt.zero_grad()

    def forward(x: Any, t: Any) -> None:
        held["y"] = model(x)

    def loss(x: Any, t: Any) -> None:
        held["loss"] = loss_fn(held.pop("y"), t)

    def backward(x: Any, t: Any) -> None:
        held["loss"].backward()

    def step(x: Any, t: Any) -> None:
        opt.step()
        held.clear()

    return [zero_grad, forward, loss, backward, step]


def time_phases(
    phases: list[Phase], x: Any, t: Any, clock: Clock, steps: int
) -> tuple[list[list[float]], list[list[float]]]:
    """``steps`` steps, a mark between phases: per step, each phase's seconds on the clock's
    timeline and its host (Python) seconds."""
    clock.sync()
    marks, host = [], []
    for _ in range(steps):
        step_marks, step_host = [clock.mark()], []
        for phase in phases:
            start = time.perf_counter()
            phase(x, t)
            step_host.append(time.perf_counter() - start)
            step_marks.append(clock.mark())
        marks.append(step_marks)
        host.append(step_host)
    clock.sync()
    device = [[clock.seconds(m[i], m[i + 1]) for i in range(len(phases))] for m in marks]
    return device, host


def time_steps(
    step: Callable[[Any, Any], Any], x: Any, t: Any, clock: Clock, steps: int
) -> tuple[float, float, float]:
    """``steps`` whole steps between two marks: seconds per step on the clock's timeline,
    host seconds per step to enqueue them (the loop's Python, before waiting for the GPU),
    and the host's minor page faults per step."""
    clock.sync()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    first = clock.mark()
    start = time.perf_counter()
    for _ in range(steps):
        step(x, t)
    host = time.perf_counter() - start
    last = clock.mark()
    clock.sync()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return clock.seconds(first, last) / steps, host / steps, faults / steps


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


@register(
    "mlp_large_phases",
    "the large GPU step (4096x3, batch 1024) phase by phase, engine and torch CUDA, float32 "
    "and float16: GPU time and host time of each phase, and of the whole step",
    gpu=True,
)
def mlp_large_phases(opts: Options) -> list[Row]:
    setup = gpu_setup(opts)
    if setup.torch_device is None:
        raise Skip("torch with CUDA is not available: nothing to compare the phases with")
    rounds, steps, warmup = (1, 2, 1) if opts.dry_run else (3 if opts.quick else 5, 10, 3)
    rows: list[Row] = []
    for dtype in ("float32", "float16"):
        rows += _dtype_rows(setup, dtype, rounds, steps, warmup)
    return rows


def _dtype_rows(setup: GpuSetup, dtype: str, rounds: int, steps: int, warmup: int) -> list[Row]:
    import nnbackend as nb

    sizes, activation, batch = setup.size("large")
    x_host, t_host = data(batch, sizes[0], sizes[-1], dtype)
    x, t = setup.to_device(x_host, t_host)
    xt, tt = setup.to_torch(x_host, t_host)
    engine = engine_step(sizes, activation, dtype, setup.backend)
    torch_run = torch_step(sizes, activation, setup.torch_device, dtype)
    compiled = nb.compile_step(engine_step(sizes, activation, dtype, setup.backend))
    dry = setup.dry_run
    clocks = {"engine": Clock(None if dry else "cupy"), "torch": Clock(None if dry else "torch")}
    clocks["compiled"] = clocks["engine"]
    inputs = {"engine": (x, t), "compiled": (x, t), "torch": (xt, tt)}
    whole = {"engine": engine, "compiled": compiled, "torch": torch_run}
    phases = {"engine": phase_functions(engine.parts), "torch": phase_functions(torch_run.parts)}
    for name, step in whole.items():  # warm-up: kernels compiled, pools filled, replays made
        for _ in range(warmup):
            step(*inputs[name])
        clocks[name].sync()

    device: dict[str, list[list[float]]] = {name: [] for name in phases}
    host: dict[str, list[list[float]]] = {name: [] for name in phases}
    per_step: dict[str, list[tuple[float, float, float]]] = {name: [] for name in whole}
    order = list(phases) + [f"whole {name}" for name in whole]
    for _ in range(rounds):
        random.shuffle(order)
        for item in order:
            if item.startswith("whole "):
                name = item.removeprefix("whole ")
                per_step[name].append(time_steps(whole[name], *inputs[name], clocks[name], steps))
            else:
                d, h = time_phases(phases[item], *inputs[item], clocks[item], steps)
                device[item] += d
                host[item] += h

    label = f"large gpu phases {dtype}"
    rows = []
    for i, phase in enumerate(PHASES):
        gpu_ms = {n: _median_ms([s[i] for s in device[n]]) for n in phases}
        host_ms = {n: _median_ms([s[i] for s in host[n]]) for n in phases}
        rows.append(
            row(
                f"{label}: {phase}, engine GPU time",
                gpu_ms["engine"],
                "ms",
                note=f"torch {gpu_ms['torch']:.3f} ms; host (Python): engine "
                f"{host_ms['engine']:.3f} ms, torch {host_ms['torch']:.3f} ms",
            )
        )
    for name in whole:
        gpu_s = statistics.median(s for s, _, _ in per_step[name])
        host_s = statistics.median(h for _, h, _ in per_step[name])
        faults = statistics.median(f for _, _, f in per_step[name])
        rows += [
            row(
                f"{label}: {name} step, GPU time",
                gpu_s * 1e3,
                "ms",
                note=f"{faults:.3g} host page faults/step; peak RSS of this process (engine "
                f"and torch together) {peak_rss_mib():.0f} MiB",
            ),
            row(
                f"{label}: {name} step, host time / GPU time",
                host_s / gpu_s,
                "x",
                note=f"host {host_s * 1e3:.3f} ms a step to enqueue it; at 1 or more the GPU "
                "waits for Python (launch-bound)",
            ),
        ]
    engine_gpu = statistics.median(s for s, _, _ in per_step["engine"])
    torch_gpu = statistics.median(s for s, _, _ in per_step["torch"])
    rows.append(row(f"{label}: engine / torch step, GPU time", engine_gpu / torch_gpu, "x"))
    gemms = _gemm_times(setup, dtype, clocks, rounds, steps)
    rows += [
        row(
            f"{label}: GEMMs alone, cupy / torch",
            gemms["engine"] / gemms["torch"],
            "x",
            note=f"the step's 8 products in the engine's layouts: cupy "
            f"{gemms['engine'] * 1e3:.3f} ms, torch {gemms['torch'] * 1e3:.3f} ms",
        ),
        row(
            f"{label}: torch's products in its own layout / in the engine's",
            gemms["torch_own"] / gemms["torch"],
            "x",
            note=f"torch {gemms['torch_own'] * 1e3:.3f} ms with weights (out, in) and the bias "
            "in the forward product (F.linear), as torch's step runs them",
        ),
        row(
            f"{label}: engine step beyond cupy's GEMMs",
            (engine_gpu - gemms["engine"]) * 1e3,
            "ms",
            note=f"torch's step beyond its GEMMs: {(torch_gpu - gemms['torch']) * 1e3:.3f} ms",
        ),
    ]
    return rows


class _TorchOn:
    """``asarray`` onto one torch device: :func:`gemm_products`' arrays as torch tensors."""

    def __init__(self, device: str) -> None:
        import torch

        self._torch, self.device = torch, device

    def asarray(self, a: Any) -> Any:
        return self._torch.as_tensor(a, device=self.device)


def _gemm_times(
    setup: GpuSetup, dtype: str, clocks: dict[str, Clock], rounds: int, steps: int
) -> dict[str, float]:
    """Seconds for the step's matrix products alone, in the engine's operand layouts, on
    cupy (``engine``) and on torch (``torch``), and on torch in its own (``torch_own``): the
    median over ``rounds`` shuffled turns."""
    sizes, _, batch = setup.size("large")
    runs = {
        "engine": gemm_products(sizes, batch, dtype, xp=setup.xp)[0],
        "torch": gemm_products(sizes, batch, dtype, xp=_TorchOn(str(setup.torch_device)))[0],
        "torch_own": _torch_products(sizes, batch, dtype, str(setup.torch_device)),
    }
    clocks = dict(clocks, torch_own=clocks["torch"])
    found: dict[str, list[float]] = {name: [] for name in runs}
    for name, run in runs.items():  # warm-up: cuBLAS's handles and workspaces
        run()
        clocks[name].sync()
    for _ in range(rounds):
        for name in random.sample(list(runs), len(runs)):
            step = lambda x, t, run=runs[name]: run()  # (this turn's run, bound now)
            found[name].append(time_steps(step, None, None, clocks[name], steps)[0])
    return {name: statistics.median(times) for name, times in found.items()}


def _torch_products(sizes: list[int], batch: int, dtype: str, device: str) -> Callable[[], None]:
    """The step's products as torch's own step runs them: weights (out, in), the forward
    with its bias (``F.linear``: one GEMM with the bias in its epilogue on CUDA), the weight
    gradient ``gy.T @ x`` and the input gradient ``gy @ W`` (not the first layer's)."""
    import torch

    generator = torch.Generator().manual_seed(2)
    kind = getattr(torch, dtype)

    def arr(*shape: int) -> Any:
        return torch.randn(*shape, generator=generator).to(device=device, dtype=kind)

    layers = [
        (arr(batch, n_in), arr(n_out, n_in), arr(n_out), arr(batch, n_out), i > 0)
        for i, (n_in, n_out) in enumerate(pairwise(sizes))
    ]
    linear = torch.nn.functional.linear

    def run() -> None:
        for x, w, b, gy, input_grad in layers:
            linear(x, w, b)
            gy.T @ x
            if input_grad:
                gy @ w

    return run
