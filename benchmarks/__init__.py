"""nnbackend's benchmark suite: ``python -m benchmarks`` (or ``nox -s bench``).

A *case* is a function registered with :func:`register` that measures something and returns
:class:`Row` objects (name, value, unit, target, passed). ``python -m benchmarks`` finds every
module in this package (any ``benchmarks/<name>.py`` not starting with ``_``), runs the
registered cases, prints one table and writes ``benchmarks/results/<case>.json`` with the rows
and the machine's facts (CPU, thread count, BLAS and its kernel from threadpoolctl, library
versions).

Adding a case::

    # benchmarks/my_case.py
    from benchmarks import Options, Row, interleaved, register, row, timer

    @register("my_case", "what it measures, in one line")
    def my_case(opts: Options) -> list[Row]:
        a = timer("f(x)", {"f": f, "x": x})
        b = timer("g(x)", {"g": g, "x": x})
        t = interleaved({"f": a, "g": b}, opts)     # seconds per call, per round
        return [row("f / g", t.ratio("f", "g"), "x", at_most=1.10),
                row("f", t["f"] * 1e9, "ns")]

Rules the helpers follow, so that numbers from different cases compare: variants are timed in
interleaved rounds (each round runs every variant once, in a shuffled order), each round times
a loop of calls sized to take ``opts.round_s`` seconds, and the reported value is the median
over rounds (for a ratio, the median of the per-round ratios; :func:`interval_note` gives
its 90% interval, for a target's note). Compare ratios taken in one run, never absolute times
across runs or machines.

Environment: ``OPENBLAS_CORETYPE`` (set on some machines here) slows current NumPy. Nothing in
this package changes it; unset it on the command line of the run instead::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks

The machine facts record both variables and the kernel OpenBLAS then chose.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import Any

__all__ = [
    "CASES",
    "RESULTS_DIR",
    "Case",
    "MixedLibraries",
    "Options",
    "Row",
    "NoDevice",
    "Skip",
    "Timings",
    "interleaved",
    "interval_note",
    "library_of",
    "load_cases",
    "machine_facts",
    "median_interval",
    "register",
    "row",
    "step_runner",
    "write_atomically",
    "timer",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Options:
    """How long to measure. ``--quick`` gives a smoke run (a few seconds a case).

    ``prewarm`` is the share of a round's loop that is run, untimed, just before the timed
    loop: switching from one variant to another costs a fixed amount (caches refilled, and
    after a torch step its OpenMP threads still spinning), about 40 µs after an engine step
    and 160 µs after a torch step on the tiny network (benchmarks/NOTES.md,
    "Switching between variants"). A training loop runs one step over and over, so the
    steady state is what counts.

    ``dry_run`` (``--gpu --dry-run``) runs the GPU cases' plumbing with numpy and torch on the
    CPU at small sizes: a check of the code, not numbers.
    """

    quick: bool = False
    rounds: int = 301
    round_s: float = 0.0005
    warmup_s: float = 0.3
    seed: int = 0
    prewarm: float = 0.25
    dry_run: bool = False

    @classmethod
    def make(cls, quick: bool, dry_run: bool = False) -> Options:
        if quick or dry_run:
            return cls(quick=True, rounds=31, round_s=0.0003, warmup_s=0.03, dry_run=dry_run)
        return cls()


@dataclass
class Row:
    """One measured number. ``target`` reads like ``"<= 1.05"``; ``passed`` is None when the
    row has no target (reported for information)."""

    name: str
    value: float
    unit: str
    target: str | None = None
    passed: bool | None = None
    note: str = ""


def row(
    name: str,
    value: float,
    unit: str,
    *,
    at_most: float | None = None,
    at_least: float | None = None,
    note: str = "",
) -> Row:
    """A :class:`Row`, with ``passed`` decided from ``at_most`` / ``at_least``."""
    checks: list[tuple[str, bool]] = []
    if at_most is not None:
        checks.append((f"<= {at_most:g}", value <= at_most))
    if at_least is not None:
        checks.append((f">= {at_least:g}", value >= at_least))
    if not checks:
        return Row(name, float(value), unit, note=note)
    target = " and ".join(text for text, _ in checks)
    return Row(name, float(value), unit, target, all(ok for _, ok in checks), note)


class Skip(Exception):
    """Raised by a case that cannot run here (a missing library, a missing feature); the
    message says why and is reported, and saved, instead of rows."""


class NoDevice(Skip):
    """A GPU case on a machine without a usable GPU: reported, but not saved, so the results
    of the last GPU run stay in ``benchmarks/results/`` and in the report."""


CaseFunction = Callable[[Options], list[Row]]


@dataclass(frozen=True)
class Case:
    """A registered benchmark case."""

    name: str
    description: str
    run: CaseFunction
    gpu: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)


CASES: dict[str, Case] = {}


def register(
    name: str, description: str, *, gpu: bool = False, tags: tuple[str, ...] = ()
) -> Callable[[CaseFunction], CaseFunction]:
    """Register a case function under ``name``. ``gpu=True`` marks a case that needs a CUDA
    device: it runs with ``--gpu`` (``nox -s gpu``) and not by default."""

    def decorate(function: CaseFunction) -> CaseFunction:
        if name in CASES and CASES[name].run is not function:
            raise ValueError(f"benchmark case {name!r} is registered twice")
        CASES[name] = Case(name, description, function, gpu, tags)
        return function

    return decorate


def load_cases() -> dict[str, Case]:
    """Import every module of this package (not starting with ``_``) so their cases register."""
    package_dir = Path(__file__).resolve().parent
    for path in sorted(package_dir.glob("*.py")):
        if not path.stem.startswith("_"):
            importlib.import_module(f"{__name__}.{path.stem}")
    return CASES


# --------------------------------------------------------------------------------------------
# Timing


Runner = Callable[[int], float]  # runs the measured statement n times, returns seconds


class MixedLibraries(ValueError):
    """Raised by :func:`interleaved` when its runners time two CPU libraries (NumPy and
    torch) in one process: after each GEMM, OpenBLAS's idle worker thread spins for about
    100 ms and torch's OpenMP threads for a few ms, and whichever library runs next is slowed
    by up to 8x (a false "engine 0.475x PyTorch" came from this). Time them in worker
    processes instead (``benchmarks/mlp_processes.py``)."""


# The CPU thread pool each array type runs on: array_api_strict wraps NumPy's arrays.
_CPU_LIBRARY = {"numpy": "numpy", "array_api_strict": "numpy", "torch": "torch"}


def library_of(*values: Any) -> str | None:
    """The CPU library (``"numpy"`` or ``"torch"``) whose thread pool runs the first array
    among ``values``; ``None`` when none is a CPU array (device arrays, Python objects)."""
    for value in values:
        root = type(value).__module__.partition(".")[0]
        library = _CPU_LIBRARY.get(root)
        if library is None:
            continue
        device = getattr(value, "device", None)
        if library == "torch" and getattr(device, "type", "cpu") != "cpu":
            continue
        return library
    return None


def _tag(run: Runner, library: str | None) -> Runner:
    if library is not None:
        run.library = library  # type: ignore[attr-defined]
    return run


def timer(
    stmt: str,
    namespace: Mapping[str, Any],
    *,
    setup: str = "pass",
    sync: Callable[[], Any] | None = None,
    library: str | None = None,
) -> Runner:
    """A runner that executes ``stmt`` in a tight loop (``timeit``: the loop is compiled
    with the statement, garbage collection is off) and returns the elapsed seconds.

    ``sync`` (a device synchronize) is called after the loop and counted, so asynchronous
    device work is inside the measurement. ``library`` names the CPU library the statement
    times (default: that of the first array in ``namespace``, see :func:`library_of`), which
    :func:`interleaved` checks.
    """
    compiled = timeit.Timer(stmt, setup=setup, globals=dict(namespace))
    library = library or library_of(*namespace.values())
    if sync is None:

        def run_plain(number: int) -> float:
            return compiled.timeit(number)

        return _tag(run_plain, library)

    def run(number: int) -> float:
        sync()
        start = time.perf_counter()
        compiled.timeit(number)
        sync()
        return time.perf_counter() - start

    return _tag(run, library)


def calibrate(run: Runner, seconds: float) -> int:
    """The loop count that makes one call of ``run`` last about ``seconds``. The first call
    (imports, caches, a namespace being built) is left out, and the estimate is the fastest of
    three tries, so neither a one-time cost nor a preemption makes the loop too short."""
    run(1)
    number = 1
    while number < 10**8:
        if min(run(number) for _ in range(3)) >= seconds / 5:
            break
        number *= 10
    per_call = min(run(number) for _ in range(3)) / number
    return max(1, round(seconds / max(per_call, 1e-10)))


def median_interval(values: list[float], level: float = 0.9) -> tuple[float, float] | None:
    """A distribution-free ``level`` confidence interval for the median of the distribution
    ``values`` were drawn from (independent rounds): the order statistics ``x(j)`` and
    ``x(n+1-j)`` for the largest ``j`` whose coverage, ``1 - 2 P(B < j)`` with ``B`` binomial
    ``(n, 1/2)``, is at least ``level``. ``None`` when ``values`` are too few for any ``j``
    (fewer than 5 at 90%). Where the interval straddles a target, another run may well give
    the other verdict: the difference is within the machine's noise.

    A NaN among ``values`` raises ValueError: it has no place in the order, and sorting
    around it gave order statistics from anywhere."""
    if any(math.isnan(v) for v in values):
        raise ValueError(
            f"median_interval: {sum(math.isnan(v) for v in values)} of {len(values)} values "
            "are NaN; an interval of a median needs ordered numbers (drop or fix those rounds)"
        )
    xs = sorted(values)
    n = len(xs)
    below = 0.0  # P(B < j)
    best = None
    for j in range(1, n // 2 + 1):
        below += math.comb(n, j - 1) / 2**n
        if 1 - 2 * below < level:
            break
        best = j
    if best is None:
        return None
    return xs[best - 1], xs[n - best]


#: What :func:`interval_note` writes where a target lies within the interval; the report
#: (``_report.py``) looks for it to qualify the verdict in its tables.
STRADDLES = "which straddles the target: the verdict is within the noise"
#: What :func:`interval_note` writes where the rounds are too few for any interval.
NO_INTERVAL = "too few for a 90% interval (5 or more), so the noise is not known"


def interval_note(
    ratios: list[float],
    at_most: float | None = None,
    at_least: float | None = None,
    *,
    before: str = "",
) -> str:
    """The note of a ratio row: ``before`` (the row's own note), then the 90% interval of
    the median of ``ratios`` (:func:`median_interval`) and, given the row's target, whether
    that interval leaves the verdict in doubt. Rounds too few for an interval, or NaN
    rounds, are said so: a verdict without its noise is not a verdict to trust."""
    nans = sum(math.isnan(r) for r in ratios)
    if nans:
        text = f"{nans} of {len(ratios)} rounds gave NaN: no interval, and no median to trust"
        return f"{before}; {text}" if before else text
    found = median_interval(ratios)
    if found is None:
        text = f"{len(ratios)} round{'s' * (len(ratios) != 1)}: {NO_INTERVAL}"
        return f"{before}; {text}" if before else text
    lo, hi = found
    text = f"90% interval {lo:.3f}-{hi:.3f}"
    if (at_most is not None and lo <= at_most < hi) or (
        at_least is not None and lo < at_least <= hi
    ):
        text += f", {STRADDLES}"
    return f"{before}; {text}" if before else text


@dataclass
class Timings:
    """Seconds per call of each variant, one sample per round. ``t[name]`` is the median;
    ``t.ratio(a, b)`` the median over rounds of ``a / b`` measured in the same round, which
    cancels drift in the machine's speed (another process taking a core) better than a ratio
    of medians."""

    samples: dict[str, list[float]]

    def __getitem__(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def ratios(self, a: str, b: str) -> list[float]:
        """``a``'s time / ``b``'s, round by round."""
        return [x / y for x, y in zip(self.samples[a], self.samples[b], strict=True)]

    def ratio(self, a: str, b: str) -> float:
        return statistics.median(self.ratios(a, b))

    def spread(self, name: str) -> float:
        """Interquartile range over median: how noisy this variant's rounds were."""
        q1, _, q3 = statistics.quantiles(self.samples[name], n=4)
        return (q3 - q1) / self[name]


def interleaved(
    runners: Mapping[str, Runner],
    opts: Options,
    *,
    settle_s: float = 0.0,
    mixed_ok: bool = False,
) -> Timings:
    """Time each runner in interleaved rounds: every round runs each runner once (a loop of
    calls lasting about ``opts.round_s``), in a shuffled order, so drift in the machine's speed
    hits all variants alike. Compare at most a handful of variants per call, so the ones a
    ratio pairs run close together in time. Warm-up rounds (``opts.warmup_s``) are discarded.

    Before each timed loop, ``opts.prewarm`` times as many calls run untimed (see
    :class:`Options`). ``settle_s`` sleeps that long after each loop, untimed: give it about
    0.01 s in a group with a multithreaded torch step, whose OpenMP threads keep spinning for
    a few milliseconds afterwards and slowed the next variant's BLAS by 40% here.

    Runners that time different CPU libraries (their ``library`` attribute, set by
    :func:`timer` and :func:`step_runner`) raise :class:`MixedLibraries`: one library per
    process. ``mixed_ok`` lifts the check, only for plumbing runs whose numbers mean nothing
    (``--gpu --dry-run`` runs the GPU cases' cupy and torch CUDA code as numpy and torch CPU).
    """
    libraries = {getattr(run, "library", None) for run in runners.values()} - {None}
    if len(libraries) > 1 and not mixed_ok:
        raise MixedLibraries(
            f"runners {sorted(runners)} time {' and '.join(sorted(libraries))} in one process; "
            "their idle threads slow each other (OpenBLAS spins ~100 ms after a GEMM): time "
            "each library in its own worker process (benchmarks/mlp_processes.py)"
        )
    numbers = {name: calibrate(run, opts.round_s) for name, run in runners.items()}
    pre = {
        name: math.ceil(n * opts.prewarm) if opts.prewarm > 0 else 0 for name, n in numbers.items()
    }
    samples: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    shuffle = random.Random(opts.seed).shuffle
    sleep = time.sleep
    # Warm-up rounds, discarded: CPython's adaptive interpreter, caches and the CPU's clock take
    # a while (tenths of a second seen here) to settle when the variants alternate.
    deadline = time.perf_counter() + opts.warmup_s
    while True:
        for name in order:
            runners[name](numbers[name])
            if settle_s:
                sleep(settle_s)
        if time.perf_counter() >= deadline:
            break
    for _ in range(opts.rounds):
        shuffle(order)
        for name in order:
            run, number = runners[name], numbers[name]
            if pre[name]:
                run(pre[name])
            samples[name].append(run(number) / number)
            if settle_s:
                sleep(settle_s)
    return Timings(samples)


def step_runner(
    step: Callable[..., Any],
    *args: Any,
    sync: Callable[[], Any] | None = None,
    library: str | None = None,
) -> Runner:
    """A runner that calls ``step(*args)`` ``n`` times; with ``sync`` (a device synchronize)
    it synchronizes before starting the clock and before reading it. ``library``: the CPU
    library it times (default: that of the first array in ``args``), checked by
    :func:`interleaved`."""
    perf_counter = time.perf_counter
    library = library or library_of(*args)

    if sync is None:

        def run(number: int) -> float:
            start = perf_counter()
            for _ in range(number):
                step(*args)
            return perf_counter() - start

        return _tag(run, library)

    def run_synced(number: int) -> float:
        sync()
        start = perf_counter()
        for _ in range(number):
            step(*args)
        sync()
        return perf_counter() - start

    return _tag(run_synced, library)


# --------------------------------------------------------------------------------------------
# Machine facts


def _dist(name: str) -> str | None:
    try:
        return _dist_version(name)
    except PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}{' (with uncommitted changes)' if dirty else ''}" if commit else None


def _float16_conversion() -> str:
    """Which float16 conversion the numpy backend runs (numba's or NumPy's), as `nnbackend
    info` says it."""
    from nnbackend.backends.numpy import float16_conversion

    return float16_conversion()


def machine_facts() -> dict[str, Any]:
    """What the numbers depend on: CPU, threads, BLAS (threadpoolctl, after NumPy is loaded),
    the OpenBLAS environment variables, library versions and, where present, the GPU."""
    import numpy  # noqa: F401  (loads the BLAS so threadpoolctl can see it)

    try:
        from threadpoolctl import threadpool_info

        pools = [
            {
                k: entry.get(k)
                for k in (
                    "user_api",
                    "internal_api",
                    "version",
                    "num_threads",
                    "threading_layer",
                    "architecture",
                    "filepath",
                )
            }
            for entry in threadpool_info()
        ]
    except ImportError:
        pools = [{"error": "threadpoolctl is not installed: pip install threadpoolctl"}]
    facts: dict[str, Any] = {
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": sys.version.split()[0],
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "thread_pools": pools,
        # Every NNBACKEND_* variable set (NNBACKEND_KEEP_FREED_MEMORY changes the allocator,
        # NNBACKEND_CHECK_DTYPES adds checks to every call), not only the ones listed.
        "environment": {
            name: os.environ.get(name)
            for name in (
                "OPENBLAS_CORETYPE",
                "OPENBLAS_L2_SIZE",
                "OPENBLAS_NUM_THREADS",
                "OMP_NUM_THREADS",
                "MKL_NUM_THREADS",
                "NNBACKEND",
                "NNBACKEND_DTYPE",
                "NNBACKEND_NUMBA",
                *sorted(k for k in os.environ if k.startswith("NNBACKEND_")),
            )
        },
        "versions": {
            name: _dist(name)
            for name in (
                "nnbackend",
                "numpy",
                "array-api-compat",
                "array-api-strict",
                "numba",
                "torch",
                "cupy-cuda12x",
                "cupy-cuda13x",
                "threadpoolctl",
            )
        },
        "git_commit": _git_commit(),
        "float16_conversion": _float16_conversion(),
    }
    if "torch" in sys.modules:  # report torch's own threads only if a case loaded it
        torch = sys.modules["torch"]
        facts["torch_threads"] = torch.get_num_threads()
        facts["torch_cuda"] = bool(torch.cuda.is_available())
    if "cupy" in sys.modules:
        try:
            cupy = sys.modules["cupy"]
            props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
            name = props["name"]
            facts["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
            facts["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        except Exception as exc:  # facts must never break a run
            facts["gpu"] = f"unknown ({type(exc).__name__}: {exc})"
    return facts


def write_result(
    case: Case, rows: list[Row], opts: Options, seconds: float, skipped: str | None = None
) -> Path:
    """Write ``benchmarks/results/<case>.json`` and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{case.name}.json"
    document = {
        "case": case.name,
        "description": case.description,
        "when": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "quick": opts.quick,
        "rounds": opts.rounds,
        "round_s": opts.round_s,
        "duration_s": round(seconds, 2),
        "skipped": skipped,
        "passed": None if skipped else all(r.passed is not False for r in rows),
        "rows": [asdict(r) for r in rows],
        "machine": machine_facts(),
    }
    write_atomically(path, json.dumps(document, indent=2) + "\n")
    return path


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, renamed over
    ``path`` once complete: a full disk, an error or Ctrl-C midway leaves the old file whole
    (a half-written results file was skipped by the report, the case silently gone)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
