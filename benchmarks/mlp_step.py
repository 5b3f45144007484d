"""One training step of an MLP on the CPU: nnbackend's engine against a hand-written NumPy
network with explicit backward in the book's style, each implementation in its own worker
process (PyTorch is timed against them in ``mlp_processes.py``).

Cases:
    mlp_tiny      2-10-3 sigmoid network, batch 30 (the book's chapter 1), float32:
                  engine / the book's own chapter-1 code (``_book.py``) <= 1.5; the leaner
                  hand-written loop of ``_nets.py`` is reported beside it.
    mlp_medium    784-1024-1024-10 ReLU network, batch 256, float32: engine / hand <= 1.10,
                  and the step reaches >= 85% of the FLOP rate of its matrix products run
                  alone (against torch: ``mlp_processes``).
    mlp_dtypes    the medium step (and, for information, the tiny one) in float64, float32 and
                  float16: float64 / float32 >= 1.6, float16 / float32 <= 1.5.
    mlp_mixed16   the medium step in mixed16 (float16 compute, float32 master weights, dynamic
                  loss scaling), for information; skipped without ``nnbackend.precision``.
    mlp_backends  the engine's tiny and medium steps on array_api_strict against numpy, and
                  on torch (CPU) against native PyTorch (same library, same process).

A step is forward, softmax-cross-entropy, backward and an SGD update; see ``_nets.py``.

Why processes (issue 19): after each GEMM, OpenBLAS's idle thread spins for about 100 ms and
slows whatever runs next in the same process, NumPy against NumPy included. ``mlp_tiny``,
``mlp_medium``, ``mlp_dtypes`` and ``mlp_mixed16`` start one long-lived worker process per
implementation (``python -m benchmarks.mlp_step --worker IMPL NET DTYPE``, its step built by
``mlp_processes._make_step``; the machinery is ``_workers.py``: every answer awaited at most
``timeout_s``, every worker killed when one fails or on Ctrl-C) and ask them, in shuffled order
round after round, to time a loop of steps (:data:`ROUNDS`; ``--quick``: :data:`QUICK_ROUNDS`);
after its loop a worker waits, untimed, until its threads stop spinning. Values are medians
over rounds (ratios: the median of per-round ratios, with its 90% interval); each step row's
note gives the worker's page faults per step over all timed rounds, its peak RSS (lifetime),
its RSS after setup and the timed loop's growth over it, and the libraries it loaded.

``mlp_backends`` stays in one process, on ``benchmarks.interleaved``: its point is the same
library through two namespaces on the same arrays and thread pools (array_api_strict wraps
NumPy's arrays; the engine on torch against torch.autograd), so both sides pay the same
library's spinning threads; its torch groups pause after each loop (``TORCH_SETTLE_S``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from benchmarks import (
    Options,
    Row,
    Skip,
    Timings,
    interleaved,
    interval_note,
    register,
    row,
    step_runner,
)
from benchmarks._nets import (
    MEDIUM,
    TINY,
    data,
    engine_step,
    gemm_products,
    mixed16_step,
    on_backend,
    step_flops,
    torch_step,
)
from benchmarks._workers import (
    WorkerProcess,
    WorkerSkipped,
    close_all,
    kill_all,
    memory_note,
    run_rounds,
    serve,
)
from nnbackend.backends.numpy import float16_conversion

TORCH_SETTLE_S = 0.01
NETS = {"tiny": TINY, "medium": MEDIUM}
#: (timed rounds, seconds of steps a worker times in a round) per network. A round's loop is
#: long against a switch between processes (tens of microseconds of cold caches after a
#: worker's pause): 45 rounds of the tiny step take about 10 s, 31 of the medium one (its
#: workers settle about 0.1 s after each loop, OpenBLAS's thread spinning) about a minute.
ROUNDS = {"tiny": (45, 0.05), "medium": (31, 0.15)}
#: ``--quick``: 5 rounds, the fewest that give a 90% interval.
QUICK_ROUNDS = {"tiny": (5, 0.01), "medium": (5, 0.02)}
#: Untimed rounds before the timed ones (full run, ``--quick``).
WARMUP_ROUNDS = (2, 1)


# --------------------------------------------------------------------------------------------
# Worker side


def _build(impl: str, net: str, dtype: str) -> Callable[[], Any]:
    """The step of ``impl`` on network ``net`` in ``dtype``, its data bound: ``mixed16`` here,
    the others from ``mlp_processes._make_step`` (which loads only the library it times)."""
    from benchmarks import mlp_processes as mp

    sizes, activation, batch = NETS[net]
    if impl == "mixed16":
        import nnbackend as nb

        nb.set_backend("numpy")
        step = mixed16_step(sizes, activation)  # raises Skip without nnbackend.precision
        x, t = data(batch, sizes[0], sizes[-1], "float32")
        return lambda: step(x, t)
    config = mp.Config(net, tuple(sizes), activation, batch, dtype, (impl,))
    made: Callable[[], Any] = mp._make_step(impl, config)
    return made


def worker(impl: str, net: str, dtype: str) -> None:
    """Serve ``run N`` and ``stats`` on stdin/stdout (``_workers.serve``); a step that cannot
    be built here (:class:`~benchmarks.Skip`: no ``nnbackend.precision``) answers ``skip``."""
    serve(lambda: _build(impl, net, dtype), warmup=3, skip_errors=(Skip,))


# --------------------------------------------------------------------------------------------
# Parent side


class Worker(WorkerProcess):
    """One implementation's worker (``python -m benchmarks.mlp_step --worker IMPL NET DTYPE``),
    named ``name`` in the case's rounds."""

    def __init__(
        self,
        name: str,
        impl: str,
        net: str,
        dtype: str,
        threads: int | None = None,
        *,
        timeout_s: float | None = None,
    ) -> None:
        super().__init__(
            "benchmarks.mlp_step", [impl, net, dtype], name, threads, timeout_s=timeout_s
        )


@dataclass
class Measured:
    """What :func:`measure` gave: ``times`` (seconds a step, one sample per round, by worker
    name: medians, ratios and their spread as :func:`benchmarks.interleaved` gives them), each
    worker's page faults per step over all timed rounds and its ``stats`` (memory, libraries),
    and the load average after each round."""

    times: Timings
    faults: dict[str, float]
    stats: dict[str, dict[str, Any]]
    load: list[float]

    def note(self, name: str) -> str:
        """``name``'s page faults per step, memory and libraries, for its step row."""
        stats = self.stats[name]
        return (
            f"{self.faults[name]:.3g} page faults/step, {memory_note(stats)}, "
            f"loaded {'+'.join(stats.get('libraries', ()))}"
        )

    def load_note(self) -> str:
        if not self.load:
            return "load average unknown"
        return f"load average {min(self.load):.1f}-{max(self.load):.1f} during the rounds"


def measure(
    specs: Mapping[str, tuple[str, str, str]],
    rounds: int,
    round_s: float,
    *,
    warmup: int = 2,
    seed: int = 0,
    timeout_s: float | None = None,
) -> Measured:
    """Time each of ``specs`` (name: ``(impl, net, dtype)``) in a worker process of its own,
    in ``rounds`` shuffled rounds of about ``round_s`` seconds of steps each, after ``warmup``
    untimed rounds. A worker that cannot run here raises :class:`~benchmarks.Skip`; every
    worker is killed (and reaped) when anything fails or is interrupted."""
    if timeout_s is None:
        timeout_s = max(WorkerProcess.timeout_s, 100 * round_s)
    workers: dict[str, Worker] = {}
    try:
        for name, (impl, net, dtype) in specs.items():
            workers[name] = Worker(name, impl, net, dtype, timeout_s=timeout_s)
        measured = run_rounds(workers, rounds, round_s=round_s, warmup=warmup, seed=seed)
        stats = close_all(workers)
    except WorkerSkipped as exc:
        kill_all(workers.values())
        raise Skip(f"{exc.name} cannot run here: {exc.reason}") from None
    except BaseException:
        kill_all(workers.values())
        raise
    return Measured(
        Timings(measured.times),
        {name: measured.faults_per_step(name) for name in workers},
        stats,
        measured.load,
    )


def _plan(net: str, opts: Options) -> tuple[int, float, int]:
    """``(rounds, round_s, warmup)`` for ``net``'s workers under ``opts``."""
    rounds, round_s = (QUICK_ROUNDS if opts.quick else ROUNDS)[net]
    return rounds, round_s, WARMUP_ROUNDS[opts.quick]


def _measure(specs: Mapping[str, tuple[str, str, str]], net: str, opts: Options) -> Measured:
    rounds, round_s, warmup = _plan(net, opts)
    return measure(specs, rounds, round_s, warmup=warmup, seed=opts.seed)


def _medium_opts(opts: Options) -> Options:
    """A medium step takes tens of milliseconds: one step per round, no prewarm calls (the
    switching cost is under 1% of a step), fewer rounds (``mlp_backends``, in one process)."""
    return replace(opts, rounds=9 if opts.quick else 31, round_s=0.0, prewarm=0.0, warmup_s=0.3)


@register(
    "mlp_tiny",
    "2-10-3 sigmoid MLP step (batch 30, float32): engine vs the book's code, hand NumPy; "
    "each in its own process",
)
def mlp_tiny(opts: Options) -> list[Row]:
    m = _measure(
        {impl: (impl, "tiny", "float32") for impl in ("book", "hand", "engine")}, "tiny", opts
    )
    times = m.times
    rows = [
        row(
            "tiny: the book's chapter-1 code, step",
            times["book"] * 1e6,
            "us",
            note="TwoLayerNet of ch01 with common/layers.py and SGD (benchmarks/_book.py); "
            + m.note("book"),
        ),
        row(
            "tiny: hand-written NumPy step",
            times["hand"] * 1e6,
            "us",
            note="a leaner loop than the book's: no layer objects, no gradient copies; "
            + m.note("hand"),
        ),
        row(
            "tiny: engine step",
            times["engine"] * 1e6,
            "us",
            note=f"rounds' interquartile range {times.spread('engine'):.0%} of the median; "
            + m.note("engine"),
        ),
        row(
            "tiny: engine / the book's code",
            times.ratio("engine", "book"),
            "x",
            at_most=1.5,
            note=interval_note(
                times.ratios("engine", "book"),
                at_most=1.5,
                before="issue 3's target: the book's style, about 40 us on this machine; "
                + m.load_note(),
            ),
        ),
        row("tiny: engine / hand", times.ratio("engine", "hand"), "x"),
    ]
    return rows


@register(
    "mlp_medium",
    "784-1024-1024-10 ReLU MLP step (batch 256, float32): engine vs hand, GEMMs alone; "
    "each in its own process",
)
def mlp_medium(opts: Options) -> list[Row]:
    sizes, _, batch = MEDIUM
    impls = {
        "hand": "hand",
        "reused": "hand_reused",
        "engine": "engine",
        "gemms": "gemm_numpy",
        # The engine's NumPy calls without the engine, from its weights: the FLOP rate's floor.
        "calls": "calls",
    }
    specs = {name: (impl, "medium", "float32") for name, impl in impls.items()}
    m = _measure(specs, "medium", opts)
    # The same products, at the same shapes, as the gemms worker times (their FLOPs only).
    _, gemm_flops = gemm_products(sizes, batch, "float32")
    times = alone = m.times
    nominal = step_flops(sizes, batch)
    rows = [
        row("medium: hand-written NumPy step", times["hand"] * 1e3, "ms", note=m.note("hand")),
        row(
            "medium: engine step",
            times["engine"] * 1e3,
            "ms",
            note=f"rounds' interquartile range {times.spread('engine'):.0%} of the median; "
            + m.note("engine"),
        ),
        row(
            "medium: hand-written NumPy step, reused buffers",
            times["reused"] * 1e3,
            "ms",
            note="the lean loop with its arrays made once (HandReusedMLP); " + m.note("reused"),
        ),
        row(
            "medium: engine / hand",
            times.ratio("engine", "hand"),
            "x",
            note="the allocating loop, the book's shape (HandMLP: also the first layer's dx)",
        ),
        row(
            "medium: engine / hand with reused buffers",
            times.ratio("engine", "reused"),
            "x",
            at_most=1.10,
            note=interval_note(
                times.ratios("engine", "reused"),
                at_most=1.10,
                before="the faster hand loop: the target's baseline; " + m.load_note(),
            ),
        ),
        row(
            "medium: GEMMs alone, rate",
            gemm_flops / alone["gemms"] / 1e9,
            "GFLOP/s",
            note="the step's 8 products (3 forward, 3 weight grads, 2 input grads), float32; "
            + m.note("gemms"),
        ),
        row(
            "medium: engine step, rate of its GEMM FLOPs",
            gemm_flops / alone["engine"] / 1e9,
            "GFLOP/s",
        ),
        row(
            "medium: engine FLOP rate / GEMMs-alone rate",
            alone.ratio("gemms", "engine"),
            "x",
            at_least=0.85,
            note=interval_note(
                alone.ratios("gemms", "engine"),
                at_least=0.85,
                before="= time of the 8 GEMMs alone / step time, paired per round",
            ),
        ),
        row(
            "medium: the engine's NumPy calls alone, FLOP rate / GEMMs-alone rate",
            alone.ratio("gemms", "calls"),
            "x",
            note="the floor: the same calls into kept buffers, no engine (EngineCallsMLP); "
            + m.note("calls"),
        ),
        row(
            "medium: engine / its NumPy calls alone",
            alone.ratio("engine", "calls"),
            "x",
            note="what the engine's Python costs among the GEMMs (a few hundred us a step)",
        ),
        row(
            "medium: engine nominal rate (6*batch*weights / step)",
            nominal / alone["engine"] / 1e9,
            "GFLOP/s",
            note="the issue's formula; counts the first layer's input gradient the engine skips",
        ),
    ]
    return rows


DTYPES = ("float64", "float32", "float16")


@register(
    "mlp_dtypes",
    "engine step in float64 / float32 / float16 (medium with targets, tiny for info); "
    "each in its own process",
)
def mlp_dtypes(opts: Options) -> list[Row]:
    medium = _measure({d: ("engine", "medium", d) for d in DTYPES}, "medium", opts)
    wide = half = medium.times
    rows = [
        row("medium: float64 step", wide["float64"] * 1e3, "ms", note=medium.note("float64")),
        row("medium: float32 step", wide["float32"] * 1e3, "ms", note=medium.note("float32")),
        row("medium: float16 step", half["float16"] * 1e3, "ms", note=medium.note("float16")),
        row(
            "medium: float64 / float32 step",
            wide.ratio("float64", "float32"),
            "x",
            at_least=1.6,
            note=interval_note(
                wide.ratios("float64", "float32"), at_least=1.6, before=medium.load_note()
            ),
        ),
        row(
            "medium: float16 / float32 step",
            half.ratio("float16", "float32"),
            "x",
            at_most=1.5,
            note=interval_note(
                half.ratios("float16", "float32"),
                at_most=1.5,
                before=f"float16 conversions: {float16_conversion()}",
            ),
        ),
    ]
    tiny = _measure({d: ("engine", "tiny", d) for d in DTYPES}, "tiny", opts)
    rows += [
        row(
            "tiny: float64 / float32 step",
            tiny.times.ratio("float64", "float32"),
            "x",
            note=f"float64: {tiny.note('float64')}; float32: {tiny.note('float32')}",
        ),
        row(
            "tiny: float16 / float32 step",
            tiny.times.ratio("float16", "float32"),
            "x",
            note=f"float16: {tiny.note('float16')}",
        ),
    ]
    return rows


@register(
    "mlp_mixed16",
    "engine medium step in mixed16 against float32 (needs nnbackend.precision); each in its "
    "own process",
)
def mlp_mixed16(opts: Options) -> list[Row]:
    m = _measure(
        {"mixed16": ("mixed16", "medium", "mixed16"), "float32": ("engine", "medium", "float32")},
        "medium",
        opts,
    )  # raises Skip without nnbackend.precision
    times = m.times
    return [
        row("medium: mixed16 step", times["mixed16"] * 1e3, "ms", note=m.note("mixed16")),
        row(
            "medium: mixed16 / float32 step",
            times.ratio("mixed16", "float32"),
            "x",
            note="with LossScaler; on NumPy the products run in float32 (no fast float16), "
            "so about float32's cost is expected; float32: " + m.note("float32"),
        ),
    ]


def _backend_rows(label: str, net: tuple[list[int], str, int], opts: Options) -> list[Row]:
    import nnbackend as nb

    sizes, activation, batch = net
    x, t = data(batch, sizes[0], sizes[-1], "float32")
    numpy_run = step_runner(engine_step(sizes, activation, "float32"), x, t)
    available = set(nb.available_backends())
    rows: list[Row] = []
    if "array_api_strict" in available:
        xs, ts = on_backend("array_api_strict", x, t)
        strict_run = step_runner(
            engine_step(sizes, activation, "float32", "array_api_strict"), xs, ts
        )
        g = interleaved({"numpy": numpy_run, "strict": strict_run}, opts)
        rows.append(
            row(
                f"{label}: engine on array_api_strict / on numpy",
                g.ratio("strict", "numpy"),
                "x",
                note=f"array_api_strict step {_fmt_s(g['strict'])}",
            )
        )
    if "torch" in available:
        xt, tt = on_backend("torch", x, t)
        on_torch = step_runner(engine_step(sizes, activation, "float32", "torch"), xt, tt)
        native = interleaved(
            {"on torch": on_torch, "torch": step_runner(torch_step(sizes, activation), xt, tt)},
            opts,
            settle_s=TORCH_SETTLE_S,
        )
        rows += [
            row(
                f"{label}: engine on torch CPU step",
                native["on torch"] * 1e3,
                "ms",
                note="against the engine on numpy: mlp_processes (one library per process)",
            ),
            row(
                f"{label}: engine on torch CPU / native torch",
                native.ratio("on torch", "torch"),
                "x",
                note="same arrays, same library: the engine's cost against torch.autograd",
            ),
        ]
    return rows


def _fmt_s(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.0f} us"


@register(
    "mlp_backends",
    "engine tiny and medium steps (float32) on array_api_strict vs numpy, on torch CPU vs PyTorch",
)
def mlp_backends(opts: Options) -> list[Row]:
    return _backend_rows("tiny", TINY, opts) + _backend_rows("medium", MEDIUM, _medium_opts(opts))


def main(argv: list[str] | None = None) -> int:
    """Only the workers' entry point: the cases run through ``python -m benchmarks``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mlp_step",
        description="A worker of the mlp_* cases; run the cases with `python -m benchmarks "
        "--case mlp_tiny` (mlp_medium, mlp_dtypes, mlp_mixed16, mlp_backends).",
    )
    parser.add_argument("--worker", nargs=3, metavar=("IMPL", "NET", "DTYPE"), required=True)
    args = parser.parse_args(argv)
    impl, net, dtype = args.worker
    if net not in NETS:
        parser.error(f"NET must be one of {sorted(NETS)}, not {net!r}")
    worker(impl, net, dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
