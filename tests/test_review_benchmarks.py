"""A methodologist's review of the benchmark harness behind issue 19's performance claims
(``benchmarks/__init__.py``, ``mlp_processes.py``, ``_workers.py``, ``_report.py``).

Covered: the 90% interval of a median ratio (NaN rounds, rounds too few for an interval),
how ``mlp_processes`` turns its workers' answers into numbers (page faults per step over
every timed round, the load average of the timed rounds, a worker answering 0 or NaN
seconds, the targets of the configuration actually measured), the environment the workers
run in, process hygiene (a worker that crashes, hangs, never says ``ready``, a Ctrl-C sent to
the whole process group), results files written half-way, and the generated
``docs/performance.md`` (verdicts whose interval straddles the target, unreadable, malformed
and older-format results files).

Workers are stood in for by a small scripted worker module (``fake_bench_worker``) so that
the parent's statistics and process handling are checked without timing anything; the few
tests that start real workers use the tiny network.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The ``run_in_repo`` fixture (tests/conftest.py): ``python *args`` from the repository root,
#: without the shell's ``NNBACKEND*`` variables.
Run = Callable[..., subprocess.CompletedProcess[str]]

# A scripted worker: its behaviour is the first word of its implementation name.
FAKE_WORKER = """
import json, os, sys, time
mode = sys.argv[sys.argv.index("--worker") + 1].split("_")[0]
if mode == "noready":
    print("Warning: something on stdout", flush=True)
    time.sleep(120)
    raise SystemExit(0)
print("ready", flush=True)
runs = 0
for line in sys.stdin:
    command = line.split()
    if command[0] == "run":
        runs += 1
        n = int(command[1])
        seconds, faults = n * 1e-3, 0
        if mode == "slow":
            time.sleep(0.05)
        if mode == "crash" and runs == 3:
            raise SystemExit(5)
        if mode == "hang" and runs == 3:
            time.sleep(300)
        if mode == "zero" and runs == 3:
            seconds = 0.0
        if mode == "nan" and runs == 3:
            seconds = float("nan")
        if mode == "faulty" and runs % 2 == 0:
            faults = 3 * n
        print(json.dumps({"s": seconds, "faults": faults}), flush=True)
    elif command[0] == "stats":
        print(json.dumps({"peak_rss_mib": 1.0, "libraries": ["numpy"]}), flush=True)
        raise SystemExit(0)
"""


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The ``benchmarks`` package, importable from the repository root."""
    monkeypatch.syspath_prepend(str(ROOT))
    import benchmarks

    return benchmarks


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bench: Any) -> Any:
    """``mlp_processes`` with its workers replaced by the scripted worker; returns the module,
    with ``started`` (the workers made) and ``config(*impls)`` (a tiny configuration timing
    those implementations, no targets)."""
    from benchmarks import _workers
    from benchmarks import mlp_processes as mp

    (tmp_path / "fake_bench_worker.py").write_text(FAKE_WORKER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    started: list[Any] = []
    takes_timeout = "timeout_s" in inspect.signature(_workers.WorkerProcess.__init__).parameters

    class FakeWorker(mp.Worker):
        def __init__(self, impl: str, config: str, threads: Any = None, timeout_s: Any = None):
            started.append(self)
            extra = {"timeout_s": timeout_s} if takes_timeout else {}
            _workers.WorkerProcess.__init__(
                self, "fake_bench_worker", [impl], impl, threads, **extra
            )

    monkeypatch.setattr(mp, "Worker", FakeWorker)

    def config(*impls: str) -> Any:
        return dataclasses.replace(
            mp.CONFIGS["tiny"], workers=impls, targets=(), fault_free=(), rounds_factor=1
        )

    mp.started = started
    mp.config = config
    yield mp
    for w in started:  # whatever a failing test left behind
        if w.process.poll() is None:
            w.process.kill()
            w.process.wait()


def _worker_error() -> type[Exception]:
    """The harness's typed worker error (RuntimeError, its base, where it is missing)."""
    from benchmarks import _workers

    return getattr(_workers, "WorkerError", RuntimeError)


# --------------------------------------------------------------------------------------------
# The interval of a median ratio


def test_median_interval_refuses_nan_rounds(bench: Any) -> None:
    """A NaN round was sorted wherever it fell, and its neighbours (or NaN itself) were
    reported as the interval's ends: ``median_interval([nan, 1, ..., 6])`` gave (nan, 6)."""
    nan = math.nan
    with pytest.raises(ValueError, match="NaN"):
        bench.median_interval([nan, 1, 2, 3, 4, 5, 6])
    with pytest.raises(ValueError, match="NaN"):
        bench.median_interval([1, 2, 3, 4, 5, 6, nan])
    note = bench.interval_note([1.0, 1.1, nan, 1.2, 1.3, 1.4, 1.5], at_most=1.2)
    assert "1 of 7 rounds gave NaN" in note and "90% interval" not in note
    assert bench.median_interval([3, 1, 2, 5, 4]) == (1, 5)  # numbers still work


def test_interval_note_says_when_rounds_are_too_few_for_an_interval(bench: Any) -> None:
    """With fewer than 5 rounds (``--rounds 3`` on medium) the note silently dropped the
    interval, and the verdict read as firm as one from 15 rounds: it now says so, and the
    report qualifies the verdict."""
    note = bench.interval_note([1.1, 1.2, 1.3], at_most=1.0, before="load 1.0")
    assert note.startswith("load 1.0; 3 rounds: too few for a 90% interval")
    assert bench.interval_note([0.9] * 5, at_most=1.0) == "90% interval 0.900-0.900"


# --------------------------------------------------------------------------------------------
# mlp_processes' numbers


def test_page_faults_per_step_count_every_timed_round(fake: Any) -> None:
    """Faults per step were the median over rounds: a worker faulting in every other round
    (3 a step there) read 0 and met "no page faults per step". They are now all faults over
    all timed steps, and the load average covers the timed rounds only (the warm-up rounds
    were in it)."""
    result = fake.measure(fake.config("faulty", "ok"), rounds=5, round_s=0.01, warmup=2)
    faulty = result["workers"]["faulty"]
    steps = faulty["steps_per_round"]
    # Runs 1 (calibration), then 2..8: even runs fault. Timed: runs 4..8, faults in 4, 6, 8.
    assert faulty["faults_per_step"] == pytest.approx(3 * 3 * steps / (5 * steps))
    assert result["workers"]["ok"]["faults_per_step"] == 0
    assert len(result["load_average_during"]) == 5


@pytest.mark.parametrize("mode", ["zero", "nan"])
def test_a_worker_answering_zero_or_nan_seconds_is_refused(fake: Any, mode: str) -> None:
    """A worker timing its loop at 0 s or NaN s was taken into the samples unnoticed (a ratio
    against it then divided by zero in ``ratios``, or a NaN sorted anywhere in the medians);
    the parent now refuses the answer, names the worker and stops every worker."""
    WorkerError = _worker_error()

    with pytest.raises(WorkerError, match=rf"worker {mode} timed .* positive and finite"):
        fake.measure(fake.config("ok", mode), rounds=3, round_s=0.01, warmup=1)
    assert all(w.process.poll() is not None for w in fake.started)


def test_rows_come_from_the_configuration_measured(bench: Any) -> None:
    """``rows_of`` looked the targets up in ``CONFIGS`` by name: a result of a changed "tiny"
    (fewer workers) raised KeyError 'hand_reused', and ``--jax`` had to rewrite the module's
    CONFIGS for its row. The result now carries its targets."""
    from benchmarks import mlp_processes as mp

    samples = {"engine": [2.0, 2.1, 2.2, 2.0, 2.1], "hand": [1.0] * 5}
    worker = {"median_s": 2e-5, "faults_per_step": 0.0, "peak_rss_mib": 50.0,
              "libraries": ["numpy"], "steps_per_round": 10}  # fmt: skip
    result = {
        "config": "tiny",
        "dtype": "float32",
        "targets": [["engine", "hand", 1.4]],
        "fault_free": [],
        "load_average_during": [1.0] * 5,
        "workers": {"engine": worker, "hand": worker},
        "samples": samples,
    }
    rows = {r.name: r for r in mp.rows_of(result)}
    assert set(rows) == {"tiny: engine step", "tiny: hand step", "tiny: engine / hand"}
    assert rows["tiny: engine / hand"].value == pytest.approx(2.1)
    assert rows["tiny: engine / hand"].passed is False


def test_bad_rounds_are_refused_before_any_worker_starts(
    bench: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--rounds 0`` started every worker, calibrated and warmed them up, then failed with
    ``statistics.StatisticsError: no median for empty data``; ``--round-s -1`` and
    ``--threads 0`` were passed on. They are refused first, by the parser and by ``measure``."""
    from benchmarks import mlp_processes as mp

    class NoWorker:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise AssertionError("a worker was started")

    monkeypatch.setattr(mp, "Worker", NoWorker)
    for argv in (["--rounds", "0"], ["--round-s", "-1"], ["--round-s", "nan"], ["--threads", "0"]):
        with pytest.raises(SystemExit) as exc:
            mp.main(["--config", "tiny", *argv])
        assert exc.value.code == 2, argv
        assert argv[0] in capsys.readouterr().err
    for kwargs in ({"rounds": 0}, {"round_s": 0.0}, {"replicas": 0}, {"warmup": -1}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            mp.measure(mp.CONFIGS["tiny"], **{"rounds": 3, "round_s": 0.01, **kwargs})


def test_engine_workers_ignore_a_shells_keep_freed_memory_setting(run_in_repo: Run) -> None:
    """``NNBACKEND_KEEP_FREED_MEMORY=1`` in the shell reached every worker: the default
    ``engine`` ran with the opt-in allocator (its no-page-faults target measured on the
    setting, engine and engine_keep the same thing). Only engine_keep sets it now, and the
    machine facts record every NNBACKEND_* variable."""
    code = """
        import json
        from benchmarks import machine_facts
        from benchmarks import mlp_processes as mp
        from nnbackend.backends import numpy as backend
        recorded = machine_facts()["environment"]  # the parent's, as a run records them
        step = mp._make_step("engine", mp.CONFIGS["tiny"])
        step()
        print(json.dumps({"applied": "result" in backend._allocator, "recorded": recorded}))
    """
    result = run_in_repo("-c", textwrap.dedent(code), env={"NNBACKEND_KEEP_FREED_MEMORY": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["applied"] is False
    assert out["recorded"].get("NNBACKEND_KEEP_FREED_MEMORY") == "1"


# --------------------------------------------------------------------------------------------
# Process hygiene


def test_a_crashed_worker_stops_every_worker_and_is_named(fake: Any) -> None:
    """A worker that died mid-run: closing it raised BrokenPipeError (hiding which worker
    died and why), and the workers after it in the ``finally`` were never closed and kept
    running. Now a WorkerError names it and every worker is killed and reaped."""
    WorkerError = _worker_error()

    with pytest.raises(WorkerError, match=r"worker crash exited \(status 5\)"):
        fake.measure(fake.config("ok", "crash", "slow"), rounds=5, round_s=0.01, warmup=1)
    assert len(fake.started) == 3
    assert all(w.process.poll() is not None for w in fake.started)


def test_a_worker_that_does_not_say_ready_is_killed(fake: Any) -> None:
    """A worker printing something else first raised "did not start" and was left running
    (sleeping here for 2 minutes), along with the workers started before it."""
    WorkerError = _worker_error()

    with pytest.raises(WorkerError, match=r"noready did not start.*Warning"):
        fake.measure(fake.config("ok", "noready"), rounds=3, round_s=0.01)
    assert all(w.process.poll() is not None for w in fake.started)


def test_a_hung_worker_times_out_instead_of_hanging_the_run(
    tmp_path: Path, run_in_repo: Run
) -> None:
    """Answers were awaited without a limit: a worker stuck in its step hung the whole run
    for good. Past ``timeout_s`` it is now killed and named."""
    (tmp_path / "fake_bench_worker.py").write_text(FAKE_WORKER)
    code = f"""
        import dataclasses, sys
        sys.path.insert(0, {str(ROOT)!r})
        from benchmarks import _workers
        from benchmarks import mlp_processes as mp

        class Fake(mp.Worker):
            def __init__(self, impl, config, threads=None, timeout_s=None):
                _workers.WorkerProcess.__init__(self, "fake_bench_worker", [impl], impl)
                started.append(self)

        started = []
        mp.Worker = Fake
        _workers.WorkerProcess.timeout_s = 2.0
        config = dataclasses.replace(mp.CONFIGS["tiny"], workers=("ok", "hang"),
                                     targets=(), fault_free=(), rounds_factor=1)
        try:
            mp.measure(config, rounds=3, round_s=0.001, warmup=1)
        except _workers.WorkerError as exc:
            print("error:", exc)
        print("alive:", [w.process.poll() is None for w in started])
    """
    start = time.perf_counter()
    result = run_in_repo("-c", textwrap.dedent(code), timeout=60, env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "error: worker hang gave no answer in 2 s" in result.stdout
    assert "alive: [False, False]" in result.stdout
    assert time.perf_counter() - start < 50


def test_ctrl_c_to_the_process_group_ends_in_keyboard_interrupt(tmp_path: Path) -> None:
    """A Ctrl-C in a terminal reaches the workers too; the parent then asked the dead workers
    for their statistics, so the run ended in BrokenPipeError / "worker exited" instead of
    KeyboardInterrupt. Now the parent kills its workers and the interrupt propagates."""
    (tmp_path / "fake_bench_worker.py").write_text(FAKE_WORKER)
    code = f"""
        import dataclasses, sys
        sys.path.insert(0, {str(ROOT)!r})
        from benchmarks import _workers
        from benchmarks import mlp_processes as mp

        class Fake(mp.Worker):
            def __init__(self, impl, config, threads=None, timeout_s=None):
                _workers.WorkerProcess.__init__(self, "fake_bench_worker", [impl], impl)
                print("pid", self.process.pid, flush=True)

        mp.Worker = Fake
        config = dataclasses.replace(mp.CONFIGS["tiny"], workers=("slow", "slow_2"),
                                     targets=(), fault_free=(), rounds_factor=1)
        mp.measure(config, rounds=10000, round_s=0.001, warmup=0)
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNBACKEND")}
    # ahead of the current PYTHONPATH, which finds nnbackend where it is not installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        pids = [int(proc.stdout.readline().split()[1]) for _ in range(2)]
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    last = err.strip().splitlines()[-1]
    assert last == "KeyboardInterrupt", err[-2000:]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# --------------------------------------------------------------------------------------------
# Results files and the generated page


def test_a_results_file_is_never_left_half_written(tmp_path: Path, run_in_repo: Run) -> None:
    """``write_result`` truncated the case's file and then wrote it: a full disk (here a file
    size limit) left half a JSON document, which the report then skipped, the case gone
    from the page. The old file now stays whole until the new one is complete."""
    old = {"case": "tiny_case", "rows": [], "skipped": None, "when": "before"}
    (tmp_path / "tiny_case.json").write_text(json.dumps(old))
    code = f"""
        import resource, signal, sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        import benchmarks
        benchmarks.RESULTS_DIR = Path({str(tmp_path)!r})
        case = benchmarks.Case("tiny_case", "a case", lambda opts: [])
        rows = [benchmarks.row(f"row {{i}}", 1.0, "x", note="n" * 100) for i in range(40)]
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
        try:
            benchmarks.write_result(case, rows, benchmarks.Options(), 1.0)
        except OSError as exc:
            print("failed:", exc.errno)
    """
    result = run_in_repo("-c", textwrap.dedent(code))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "failed:" in result.stdout
    assert json.loads((tmp_path / "tiny_case.json").read_text()) == old
    assert [p.name for p in tmp_path.iterdir()] == ["tiny_case.json"]  # no temporary left


def _document(case: str, rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "case": case,
        "description": case,
        "when": "2026-01-01T00:00:00+00:00",
        "quick": False,
        "duration_s": 1.0,
        "skipped": None,
        "passed": all(r.get("passed") is not False for r in rows),
        "rows": rows,
        "machine": {"cpu": "test CPU", "load_average": [0.5, 0.5, 0.5], "thread_pools": []},
        **extra,
    }


def _page(bench: Any, tmp_path: Path, documents: dict[str, Any]) -> str:
    from benchmarks import _report

    results = tmp_path / "results"
    results.mkdir()
    for name, document in documents.items():
        path = results / name
        path.write_text(document if isinstance(document, str) else json.dumps(document))
    doc, plot = tmp_path / "performance.md", tmp_path / "performance.png"
    _report.write_report(results, doc, plot)
    return doc.read_text()


def test_report_qualifies_verdicts_the_interval_does_not_support(
    bench: Any, tmp_path: Path
) -> None:
    """The Targets table said a bare "yes" for rows whose 90% interval straddles the target
    (docs/performance.md: the book target 1.483, interval 1.464-1.503 against 1.5; float16
    1.471, interval 1.441-1.542), and for rows with too few rounds for any interval."""
    straddle = bench.interval_note([1.46, 1.47, 1.48, 1.49, 1.5, 1.51, 1.52], at_most=1.5)
    few = bench.interval_note([0.8, 0.9], at_most=1.0)
    rows = [
        {"name": "a / b", "value": 1.483, "unit": "x", "target": "<= 1.5", "passed": True,
         "note": straddle},
        {"name": "c / d", "value": 0.85, "unit": "x", "target": "<= 1", "passed": True,
         "note": few},
        {"name": "e / f", "value": 0.5, "unit": "x", "target": "<= 1", "passed": True,
         "note": bench.interval_note([0.5] * 7, at_most=1.0)},
    ]  # fmt: skip
    text = _page(bench, tmp_path, {"mlp_tiny.json": _document("mlp_tiny", rows)})
    assert "| `mlp_tiny` | a / b | 1.483 x | <= 1.5 | yes, within the noise |" in text
    assert "| `mlp_tiny` | c / d | 0.850 x | <= 1 | yes, noise unknown |" in text
    assert "| `mlp_tiny` | e / f | 0.500 x | <= 1 | yes |" in text


def test_report_names_results_files_it_cannot_read(bench: Any, tmp_path: Path) -> None:
    """A half-written or malformed results file was skipped without a word: its case and
    its targets vanished from the page. A ``null`` value (NaN written by another tool)
    crashed the report with TypeError in ``math.isnan``. The page now lists what it could
    not report, and reads null as n/a."""
    good = _document("mlp_tiny", [{"name": "x / y", "value": None, "unit": "x",
                                   "target": "<= 1", "passed": False, "note": ""}])  # fmt: skip
    bad_rows = _document("mlp_medium", [{"value": 1.0}])
    text = _page(
        bench,
        tmp_path,
        {
            "mlp_tiny.json": good,
            "mlp_dtypes.json": json.dumps(_document("mlp_dtypes", []))[:50],
            "mlp_medium.json": bad_rows,
            "scratch.json": [1, 2, 3],  # not a case's results: not a problem either
        },
    )
    assert "**Results not reported**" in text
    assert "`mlp_dtypes.json` could not be read" in text
    assert "`mlp_medium.json`: row 0" in text
    assert "scratch.json" not in text
    assert "| `mlp_tiny` | x / y | n/a x | <= 1 | **MISS** |" in text


def test_report_shows_an_older_format_results_file(bench: Any, tmp_path: Path) -> None:
    """``cnn_step.json`` (saved with ``results``/``ratios``/``target``, no rows) was
    rendered as an empty table: its numbers and its target were missing from the page."""
    document = {
        "case": "cnn_step",
        "description": "LeNet-style CNN training step",
        "when": "2026-11-30T20:41:54+00:00",
        "duration_s": 37.4,
        "target": "numpy / torch_native <= 2.0 (reported)",
        "results": {"numpy": {"median_ms": 24.2}},
        "ratios": {"numpy / torch_native (median)": 1.4798, "torch / torch_native (median)": 1.5},
        "machine": {"cpu": "test CPU", "load_average": [0.5, 0.5, 0.5], "thread_pools": []},
    }
    text = _page(bench, tmp_path, {"cnn_step.json": document})
    assert "| numpy / torch_native (median) | 1.480 |" in text
    assert "older format" in text and "numpy / torch_native <= 2.0 (reported)" in text
    assert "| `cnn_step` | older results format, see its section |" in text


def test_report_plot_draws_no_bar_for_a_step_not_measured(
    bench: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plot drew a step that was not measured (no torch row) as a bar of height 0, which
    reads "free"; it is now no bar (NaN)."""
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed: no plot")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    drawn: dict[str, list[float]] = {}
    bar = Axes.bar

    def spy(self: Any, x: Any, height: Any, *args: Any, **kwargs: Any) -> Any:
        drawn[kwargs.get("label") or "?"] = list(height)
        return bar(self, x, height, *args, **kwargs)

    monkeypatch.setattr(Axes, "bar", spy)
    rows = [
        {"name": "tiny: engine step", "value": 50.0, "unit": "us", "target": None,
         "passed": None, "note": ""},
        {"name": "tiny: hand step", "value": 30.0, "unit": "us", "target": None,
         "passed": None, "note": ""},
    ]  # fmt: skip
    _page(bench, tmp_path, {"mlp_processes.json": _document("mlp_processes", rows)})
    assert drawn["nnbackend engine"] == [pytest.approx(50 / 30)]
    assert math.isnan(drawn["PyTorch CPU"][0])
