"""MLP training steps, each implementation in its own worker process: nnbackend's engine
against the lean hand-written NumPy loop, the book's chapter-1 code, PyTorch on the CPU as its
users run it, and the step's matrix products alone (NumPy's OpenBLAS and torch's MKL) as the
floor.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks --case mlp_processes
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.mlp_processes [--large]

Why processes (issue 19): after each GEMM, OpenBLAS's idle worker thread spins for about
100 ms, and torch's OpenMP threads for a few ms; a torch step timed in the process that had
just run a NumPy step took 2x as long, which once produced a false "engine 0.475x PyTorch".
Here each implementation lives in a long-lived worker process of its own (one library per
process: ``tests/test_benchmarks.py`` checks it) and the parent asks the workers, in shuffled
order round after round, to time a loop of steps. After its loop a worker waits, untimed, until
its own CPU time stops growing (its spinning threads have gone to sleep) before it answers, so
it does not steal the next worker's cores. Reported per implementation: the median time per
step, page faults per step in the timed loops, peak RSS (the process's lifetime peak, which
issue 19's memory target reads) and, apart from imports, data and warm-up, the RSS after setup
and the timed loop's growth over it (``_workers.MemoryMeter``); per pair: the median of
per-round ratios; and the load average over the rounds.

With ``--replicas K`` each implementation runs in K worker processes instead of one: where a
process's arrays happen to land in memory moves one loop's time by several percent from one
process to the next, and K processes tell that apart from the implementation (a round's time
is the median of the K; the rows list each process's median).

Implementation ``compiled`` is the engine's step through ``nb.compile_step`` (recorded on
its first calls, then replayed on raw arrays). Implementation ``engine_jax`` (``--jax``:
added to every configuration) is the same engine on the jax backend, eager, each step waiting
for its loss.

Implementations ``hand`` and ``hand_reused`` are the lean hand-written loop
(``_nets.HandMLP``: new arrays every step, the book's shape) and the same loop with its
arrays made once and reused (``_nets.HandReusedMLP``: issue 19's "hand NumPy, reused
buffers"). The targets against the hand loop take ``hand_best``: in each round, the faster of
the two.

Implementation ``calls`` (medium) is the engine's NumPy calls in the engine's order, into
kept buffers, with no engine around them (``_nets.EngineCallsMLP``): ``engine / calls`` is
what the engine's Python costs, ``calls / hand_reused`` how the engine's choice of kernels
compares with the hand loop's. It loads nnbackend only to copy the engine's starting weights.

Implementation ``engine_keep`` is the engine with the opt-in allocator setting
``NNBACKEND_KEEP_FREED_MEMORY=1`` (glibc keeps freed memory: no page faults in steady state).

Configurations (float32 unless named): ``tiny`` 2-10-3 sigmoid, batch 30; ``medium``
784-1024-1024-10 ReLU, batch 256, in float32 and float64; ``width1024_b1`` to
``width1024_b16`` 1024-1024-1024-10 at batches 1, 2, 4, 8 and 16 (the batch sweep);
``width2048`` 784-2048-2048-10, batch 256; ``large`` 4096-4096-4096-10, batch 512
(``--large`` only: a step takes 0.3 s here). Page faults per step are a target (none) for the
default engine on medium, medium_f64, width2048 and large.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import Options, Row, interval_note, register, row, write_atomically
from benchmarks._workers import (
    LIBRARIES,  # noqa: F401 (re-exported: the libraries a worker reports)
    WorkerProcess,
    close_all,
    kill_all,
    memory_note,
    run_rounds,
    serve,
    settle_threads,
)

#: nnbackend's opt-in allocator setting: set in the ``engine_keep`` worker only.
KEEP_MEMORY_ENV = "NNBACKEND_KEEP_FREED_MEMORY"


@dataclass(frozen=True)
class Config:
    """A network and dtype, the implementations timed on it and the targets of issue 19."""

    name: str
    sizes: tuple[int, ...]
    activation: str
    batch: int
    dtype: str
    workers: tuple[str, ...]
    targets: tuple[tuple[str, str, float | None], ...] = ()  # (a, b, at most) on a / b
    #: Implementations that must take no page faults per step in steady state (issue 19).
    fault_free: tuple[str, ...] = ()
    #: Rounds run for each round asked for: a step of microseconds sees its rounds vary by
    #: tens of percent on a shared machine (the tiny hand loop 27-43 us within one run), so
    #: its medians need more of them (45 rounds of the tiny step take about a minute).
    rounds_factor: int = 1


CONFIGS = {
    c.name: c
    for c in (
        Config(
            "tiny",
            (2, 10, 3),
            "sigmoid",
            30,
            "float32",
            ("engine", "compiled", "hand", "hand_reused", "book", "torch"),
            (
                ("engine", "hand_best", 1.4),
                ("compiled", "hand_best", 1.0),
                ("engine", "hand", None),
                ("engine", "hand_reused", None),
            ),
            rounds_factor=3,
        ),
        Config(
            "medium",
            (784, 1024, 1024, 10),
            "relu",
            256,
            "float32",
            (
                "engine",
                "compiled",
                "hand",
                "hand_reused",
                "calls",
                "torch",
                "gemm_numpy",
                "gemm_torch",
            ),
            (
                ("engine", "torch", 0.95),
                ("engine", "hand_best", 1.0),
                ("compiled", "hand_best", 1.0),
                ("engine", "hand", None),
                ("engine", "hand_reused", None),
                ("calls", "hand_reused", None),
                ("engine", "calls", None),
                ("compiled", "calls", None),
            ),
            ("engine",),
        ),
        Config(
            "medium_f64",
            (784, 1024, 1024, 10),
            "relu",
            256,
            "float64",
            ("engine", "engine_keep", "hand", "hand_reused", "torch", "gemm_numpy", "gemm_torch"),
            (
                ("engine", "torch", 1.15),
                ("engine_keep", "torch", 1.15),
                ("engine", "hand_best", None),
            ),
            ("engine", "engine_keep"),
        ),
        Config(
            "width1024_b1",
            (1024, 1024, 1024, 10),
            "relu",
            1,
            "float32",
            ("engine", "hand", "torch"),
            (("engine", "torch", 1.5),),
        ),
        *(
            Config(
                f"width1024_b{batch}",
                (1024, 1024, 1024, 10),
                "relu",
                batch,
                "float32",
                ("engine", "hand", "torch"),
                (("engine", "torch", 1.5),),
            )
            for batch in (2, 4, 8, 16)
        ),
        Config(
            "width2048",
            (784, 2048, 2048, 10),
            "relu",
            256,
            "float32",
            ("engine", "torch", "gemm_numpy", "gemm_torch"),
            (("engine", "torch", None),),
            ("engine",),
        ),
        Config(
            "large",
            (4096, 4096, 4096, 10),
            "relu",
            512,
            "float32",
            ("engine", "engine_keep", "torch", "gemm_numpy", "gemm_torch"),
            (("engine", "torch", 1.0), ("engine_keep", "torch", 1.0)),
            ("engine", "engine_keep"),
        ),
    )
}
# The width 1024 batch sweep (issue 19: engine / torch <= 1.5 at batches 1 to 16).
BATCH_SWEEP = tuple(f"width1024_b{b}" for b in (1, 2, 4, 8, 16))
DEFAULT_CONFIGS = ("tiny", "medium", "medium_f64", *BATCH_SWEEP, "width2048")


# --------------------------------------------------------------------------------------------
# Worker side


def _make_step(impl: str, config: Config) -> Any:
    """The step function of ``impl`` on ``config``, its data bound; imports only the library
    that ``impl`` times (and NumPy, which makes the data)."""
    sizes, act, batch, dtype = list(config.sizes), config.activation, config.batch, config.dtype
    from benchmarks._nets import LR, data

    x, t = data(batch, sizes[0], sizes[-1], dtype)
    # The opt-in allocator setting (glibc keeps freed memory) is engine_keep's alone: left in
    # the environment of the shell, it would make every engine worker engine_keep.
    os.environ.pop(KEEP_MEMORY_ENV, None)
    if impl in ("engine", "engine_keep"):
        if impl == "engine_keep":
            os.environ[KEEP_MEMORY_ENV] = "1"
        import nnbackend as nb
        from benchmarks._nets import engine_step

        nb.set_backend("numpy")
        step = engine_step(sizes, act, dtype)
        return lambda: step(x, t)
    if impl == "compiled":
        import nnbackend as nb
        from benchmarks._nets import engine_step

        nb.set_backend("numpy")
        compiled = nb.compile_step(engine_step(sizes, act, dtype))
        return lambda: compiled(x, t)
    if impl == "engine_jax":  # the same engine on jax, eager (op by op, no jax.jit)
        import jax
        import jax.numpy as jnp

        import nnbackend as nb
        from benchmarks._nets import engine_step

        step = engine_step(sizes, act, dtype, backend="jax")
        xj, tj = jnp.asarray(x), jnp.asarray(t)
        # jax dispatches asynchronously: each step waits for its loss, as a loop that reads
        # it would, so the time is the step's and not its dispatch's.
        return lambda: jax.block_until_ready(step(xj, tj).data)
    if impl == "calls":  # the engine's NumPy calls, no engine: the floor of its array work
        import nnbackend as nb
        from benchmarks._nets import EngineCallsMLP, engine_step

        nb.set_backend("numpy")
        model = engine_step(sizes, act, dtype).model  # type: ignore[attr-defined]
        params = [p.data for p in model.parameters()]
        calls = EngineCallsMLP(list(zip(params[::2], params[1::2], strict=True)), batch)
        return lambda: calls.step(x, t)
    if impl in ("hand", "hand_reused"):
        from benchmarks._nets import HandMLP, HandReusedMLP

        hand = (HandMLP if impl == "hand" else HandReusedMLP)(sizes, act, dtype)
        return lambda: hand.step(x, t)
    if impl == "book":
        from benchmarks._book import BookTwoLayerNet

        book = BookTwoLayerNet(sizes, dtype, LR)
        return lambda: book.step(x, t)
    if impl == "torch":
        import torch

        from benchmarks._nets import torch_step

        tstep = torch_step(sizes, act, dtype=dtype)
        xt, tt = torch.from_numpy(x), torch.from_numpy(t)
        return lambda: tstep(xt, tt)
    if impl in ("gemm_numpy", "gemm_torch"):
        from benchmarks._nets import gemm_products

        if impl == "gemm_numpy":
            import numpy as xp
        else:
            import torch

            class _TorchNp:  # the few names gemm_products uses
                @staticmethod
                def asarray(a: Any) -> Any:
                    return torch.from_numpy(a)

            xp = _TorchNp()
        run, _ = gemm_products(sizes, batch, dtype, xp)
        return run
    raise ValueError(f"unknown implementation {impl!r}")


#: Kept for callers of the old name: ``_workers.settle_threads``.
_settle = settle_threads


def worker(impl: str, config_name: str) -> None:
    """Serve ``run N`` (time N steps: seconds and page faults as JSON) and ``stats`` (peak RSS,
    the loop's memory apart from setup, and which of :data:`LIBRARIES` this process loaded) on
    stdin/stdout: ``_workers.serve``, which also ignores Ctrl-C (the parent's to handle)."""
    # glibc takes a while to settle where it places a step's arrays (medium float64: page
    # faults at steps 7-10 of a new process), which rounds of a few steps on a busy machine
    # counted as the steady state's; a second of warm-up covers them. (The change from this
    # loop to rounds answered on stdin takes 20 more steps: measure's warm-up rounds.)
    serve(lambda: _make_step(impl, CONFIGS[config_name]), warmup=15, warmup_s=1.0)


# --------------------------------------------------------------------------------------------
# Parent side


class Worker(WorkerProcess):
    """One implementation's worker process (``python -m benchmarks.mlp_processes --worker``)."""

    def __init__(
        self, impl: str, config: str, threads: int | None = None, timeout_s: float | None = None
    ) -> None:
        super().__init__(
            "benchmarks.mlp_processes", [impl, config], impl, threads, timeout_s=timeout_s
        )

    def run(self, n: int) -> tuple[float, int]:
        """Seconds for ``n`` steps and the page faults they took; a time that is not a
        positive finite number, or an answer out of protocol, raises ``WorkerError``
        (a ratio of it would be a division by zero, or a NaN that sorts anywhere)."""
        answer = self.run_steps(n)
        return answer["s"], answer["faults"]


def measure(
    config: Config,
    rounds: int,
    round_s: float,
    threads: int | None = None,
    warmup: int = 4,
    replicas: int = 1,
) -> dict[str, Any]:
    """Time ``config``'s implementations, each in its own worker, in ``rounds`` shuffled
    rounds (times the configuration's ``rounds_factor``) of about ``round_s`` seconds each,
    after ``warmup`` untimed ones (the medium float64 engine took 1-7 page faults a round of
    5 steps in the first 20 steps answered on stdin, none from there on: 2 rounds of 8 steps
    left some of them in the timed rounds);
    ``threads`` sets every worker's BLAS / OpenMP threads (default: the libraries' own
    choice, as users run them).

    ``replicas``: worker processes per implementation. Where a process's arrays land in
    memory moves the same loop's time by several percent from one process to the next
    (benchmarks/NOTES.md); with several, an implementation's time in a round is the median
    of its processes' and ``replica_medians_s`` gives each process's median.

    Page faults per step are all the faults of an implementation's timed loops over all their
    steps (a median over rounds would read 0 while faults came in every other round); with
    replicas, the worst process's. The load average is read after each timed round.

    Every worker is killed (and reaped) when anything fails or is interrupted."""
    for what, value in (("rounds", rounds), ("replicas", replicas)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{what} must be a whole number, 1 or more, not {value!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a whole number of rounds, 0 or more, not {warmup!r}")
    if not (isinstance(round_s, int | float) and math.isfinite(round_s) and round_s > 0):
        raise ValueError(f"round_s must be a positive number of seconds, not {round_s!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(
            f"threads must be None (the libraries' choice) or 1 or more, not {threads!r}"
        )
    rounds *= config.rounds_factor
    # A loop of about round_s, then the worker's settling (up to 0.5 s): anything far past
    # that is a hung worker.
    timeout_s = max(WorkerProcess.timeout_s, 100 * round_s)
    names = {
        impl: [impl] if replicas == 1 else [f"{impl}#{i}" for i in range(replicas)]
        for impl in config.workers
    }
    workers: dict[str, Worker] = {}
    try:
        for impl, own in names.items():
            for name in own:
                workers[name] = Worker(impl, config.name, threads, timeout_s)
        measured = run_rounds(workers, rounds, round_s=round_s, warmup=warmup)
        stats = close_all(workers)
    except BaseException:
        kill_all(workers.values())
        raise
    steps, times, faults, load = measured.steps, measured.times, measured.faults, measured.load
    median = statistics.median
    samples = {
        impl: [median(each) for each in zip(*(times[n] for n in own), strict=True)]
        for impl, own in names.items()
    }
    return {
        "config": config.name,
        "sizes": list(config.sizes),
        "batch": config.batch,
        "dtype": config.dtype,
        "rounds": rounds,
        "threads": threads,
        "replicas": replicas,
        # What rows_of reports on, so a configuration changed for one run (--jax, a test's
        # dataclasses.replace) needs no entry in CONFIGS.
        "targets": [list(target) for target in config.targets],
        "fault_free": list(config.fault_free),
        "load_average_during": [round(v, 2) for v in load],
        "workers": {
            impl: {
                "median_s": median(samples[impl]),
                "min_s": min(samples[impl]),
                "steps_per_round": steps[own[0]],
                "faults_per_step": max(faults[n] / (steps[n] * rounds) for n in own),
                "peak_rss_mib": max(stats[n]["peak_rss_mib"] for n in own),
                **_loop_memory([stats[n] for n in own]),
                "libraries": stats[own[0]]["libraries"],
                "replica_medians_s": [median(times[n]) for n in own],
            }
            for impl, own in names.items()
        },
        "samples": samples,
        "process_samples": times,  # each worker process's own, by its name
    }


def _loop_memory(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """The loop's memory apart from setup (``_workers.MemoryMeter``), from the process with
    the largest growth (with replicas); nothing where the workers did not report it."""
    known = [s for s in stats if s.get("loop_rss_growth_mib") is not None]
    if not known:
        return {}
    worst = max(known, key=lambda s: s["loop_rss_growth_mib"])
    keys = ("setup_rss_mib", "loop_peak_rss_mib", "loop_rss_growth_mib", "loop_peak_source")
    return {key: worst.get(key) for key in keys}


#: The hand-written baselines: the lean loop (allocating, the book's shape) and the same loop
#: with its arrays reused. ``hand_best`` is, round by round, the faster of the two: the
#: targets against "the hand loop" take it, so no choice of baseline flatters the engine.
HANDS = ("hand", "hand_reused")


def samples(result: dict[str, Any], impl: str) -> list[float]:
    """``impl``'s time a step in each round; for ``hand_best``, the faster hand loop's."""
    if impl == "hand_best":
        both = [result["samples"][h] for h in HANDS]
        return [min(pair) for pair in zip(*both, strict=True)]
    return list(result["samples"][impl])


def ratios(result: dict[str, Any], a: str, b: str) -> list[float]:
    """``a``'s time / ``b``'s time, round by round."""
    return [x / y for x, y in zip(samples(result, a), samples(result, b), strict=True)]


def ratio(result: dict[str, Any], a: str, b: str) -> float:
    """Median over rounds of ``a``'s time / ``b``'s time in the same round."""
    return statistics.median(ratios(result, a, b))


def _fmt(seconds: float) -> tuple[float, str]:
    return (seconds * 1e3, "ms") if seconds >= 1e-3 else (seconds * 1e6, "us")


def _spread(medians: Any) -> str:
    """Where an implementation ran in several processes: each one's median, in order."""
    if len(medians) < 2:
        return ""
    unit = _fmt(min(medians))[1]
    scale = 1e3 if unit == "ms" else 1e6
    return (
        f"; its {len(medians)} processes "
        + ", ".join(f"{m * scale:.3g}" for m in sorted(medians))
        + f" {unit}"
    )


def rows_of(result: dict[str, Any]) -> list[Row]:
    """The case's rows for one configuration's result."""
    name = result["config"]
    if "targets" in result:
        targets = [tuple(target) for target in result["targets"]]
        fault_free = tuple(result.get("fault_free", ()))
    else:  # results saved before they carried their targets
        targets, fault_free = list(CONFIGS[name].targets), CONFIGS[name].fault_free
    load = result["load_average_during"]
    out: list[Row] = []
    for impl, w in result["workers"].items():
        value, unit = _fmt(w["median_s"])
        out.append(
            row(
                f"{name}: {impl} step",
                value,
                unit,
                note=f"{w['faults_per_step']:.3g} page faults/step, {memory_note(w)}, "
                f"loaded {'+'.join(w['libraries'])}" + _spread(w.get("replica_medians_s", ())),
            )
        )
    for a, b, at_most in targets:
        out.append(
            row(
                f"{name}: {a} / {b}",
                ratio(result, a, b),
                "x",
                at_most=at_most,
                note=interval_note(
                    ratios(result, a, b),
                    at_most,
                    before=f"load average {min(load):.1f}-{max(load):.1f} during the rounds",
                ),
            )
        )
    workers = result["workers"]
    if "gemm_numpy" in workers and "gemm_torch" in workers:
        out.append(
            row(
                f"{name}: engine / its GEMMs alone on NumPy (floor)",
                ratio(result, "engine", "gemm_numpy"),
                "x",
                note="the step's 8 products at its shapes, OpenBLAS; torch's MKL does them in "
                f"{_fmt(workers['gemm_torch']['median_s'])[0]:.2f} "
                f"{_fmt(workers['gemm_torch']['median_s'])[1]}",
            )
        )
    for impl in fault_free:
        if impl in workers:
            out.append(
                row(
                    f"{name}: page faults per step, {impl}",
                    workers[impl]["faults_per_step"],
                    "faults",
                    at_most=0,
                    note="engine_keep: NNBACKEND_KEEP_FREED_MEMORY=1" * (impl == "engine_keep"),
                )
            )
    hands = [workers[h]["peak_rss_mib"] for h in HANDS if h in workers]
    if "engine" in workers and hands and name.startswith("medium"):
        out.append(
            row(
                f"{name}: peak RSS engine / hand",
                workers["engine"]["peak_rss_mib"] / min(hands),
                "x",
                at_most=1.3 if result["dtype"] == "float32" else None,
                note="against the smaller of the hand loops' peaks",
            )
        )
    return out


@register(
    "mlp_processes",
    "MLP steps (tiny, medium f32/f64, width 1024 batches 1-16, width 2048): engine, hand, "
    "book, torch, GEMMs, each in its own process",
)
def mlp_processes(opts: Options) -> list[Row]:
    names = ("tiny",) if opts.quick else DEFAULT_CONFIGS
    rounds, round_s = (3, 0.02) if opts.quick else (15, 0.25)
    rows: list[Row] = []
    for name in names:
        rows += rows_of(measure(CONFIGS[name], rounds, round_s))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mlp_processes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", action="append", choices=sorted(CONFIGS))
    parser.add_argument("--large", action="store_true", help="add the large configuration")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--round-s", type=float, default=0.25)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="BLAS / OpenMP threads per worker (default: the libraries' own choice)",
    )
    parser.add_argument(
        "--jax", action="store_true", help="add the engine on the jax backend (engine_jax)"
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="worker processes per implementation (an implementation's time in a round is "
        "the median of its processes'): separates where one process's arrays landed from "
        "the implementation",
    )
    parser.add_argument("--json", help="write the raw results to this file")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    if args.replicas < 1:
        parser.error("--replicas must be 1 or more")
    if args.rounds < 1:
        parser.error(f"--rounds must be 1 or more, not {args.rounds}")
    if not (math.isfinite(args.round_s) and args.round_s > 0):
        parser.error(f"--round-s must be a positive number of seconds, not {args.round_s}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be 1 or more, not {args.threads}")
    names = list(args.config or DEFAULT_CONFIGS) + (["large"] if args.large else [])
    results = []
    for name in names:
        config = CONFIGS[name]
        if args.jax:
            config = dataclasses.replace(
                config,
                workers=(*config.workers, "engine_jax"),
                targets=(*config.targets, ("engine_jax", "engine", None)),
            )
        result = measure(config, args.rounds, args.round_s, args.threads, replicas=args.replicas)
        results.append(result)
        for r in rows_of(result):
            target = f"  [{r.target}: {'met' if r.passed else 'MISSED'}]" if r.target else ""
            print(f"{r.name:>48}: {r.value:10.3f} {r.unit}{target}  {r.note}", flush=True)
    if args.json:
        write_atomically(Path(args.json), json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
