"""Fixes to the benchmark harness (``benchmarks/``): ``cnn_step`` and ``lstm_lm_step`` brought
onto the shared worker machinery of ``benchmarks/_workers.py`` (a timeout on every worker
answer, every worker stopped when one crashes, hangs or is interrupted, page faults counted
over every timed round, results written atomically, one library per worker), and the peak RSS
of a worker split from its setup (the RSS after setup, the peak of the timed loop and its
growth, beside the lifetime peak) in all three process-based cases.

Most tests stand a small scripted worker (``fake_fix_worker``) in for the real ones, so the
parents' statistics and process handling are checked without timing anything; the few that
start real workers use tiny configurations.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A scripted worker: its behaviour is the first word of its implementation name.
FAKE_WORKER = """
import json, sys, time
mode = sys.argv[sys.argv.index("--worker") + 1].split("_")[0]
if mode == "skip":
    print("skip ImportError: no GPU here", flush=True)
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
        if mode == "faulty" and runs % 2 == 0:
            faults = 3 * n
        print(json.dumps({"s": seconds, "faults": faults, "last": 2.5}), flush=True)
    elif command[0] == "stats":
        print(json.dumps({"peak_rss_mib": 100.0, "setup_rss_mib": 60.0,
                          "loop_peak_rss_mib": 70.0, "loop_rss_growth_mib": 10.0,
                          "loop_peak_source": "VmHWM reset after warm-up",
                          "libraries": ["numpy"]}), flush=True)
        raise SystemExit(0)
"""

# How each case's parent is asked to time the named (fake) implementations.
MEASURE = {
    "cnn_step": "mod.measure({names!r}, rounds={rounds}, round_s=0.001, threads=None{extra})",
    "lstm_lm_step": "mod.measure({names!r}, rounds={rounds}, steps=2{extra})",
}


def _env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "fake_fix_worker.py").write_text(FAKE_WORKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNBACKEND")}
    # ahead of the current PYTHONPATH, which finds nnbackend where it is not installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    return env


def _script(case: str, body: str) -> str:
    """Python code that loads ``benchmarks.<case>`` as ``mod`` with its workers replaced by
    the scripted one (recorded in ``started``), then runs ``body``."""
    head = f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from benchmarks import _workers
        from benchmarks import {case} as mod

        started = []

        class Fake(mod.Worker):
            def __init__(self, name, *args, timeout_s=None, **kwargs):
                _workers.WorkerProcess.__init__(self, "fake_fix_worker", [name], name,
                                                timeout_s=timeout_s)
                started.append(self)
                print("pid", self.process.pid, flush=True)

        mod.Worker = Fake
    """
    return textwrap.dedent(head) + textwrap.dedent(body)


def _run(code: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _workers_module() -> Any:
    """``benchmarks._workers``, imported from the repository root."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import _workers
    finally:
        sys.path.remove(str(ROOT))
    return _workers


def _start_worker(tmp_path: Path, module: str, source: str, label: str) -> Any:
    """A ``WorkerProcess`` running ``source`` (a template of ``{root}``) as ``module``, a file
    in ``tmp_path``, which the worker finds on its PYTHONPATH."""
    (tmp_path / f"{module}.py").write_text(source.format(root=str(ROOT)))
    env_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env_path]))
    try:
        return _workers_module().WorkerProcess(module, ["x"], label, timeout_s=60)
    finally:
        if env_path is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = env_path


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


CASES = pytest.mark.parametrize("case", sorted(MEASURE))


# --------------------------------------------------------------------------------------------
# cnn_step and lstm_lm_step on the shared worker machinery


@CASES
def test_a_crashed_worker_stops_every_worker_and_is_named(case: str, tmp_path: Path) -> None:
    """cnn_step closed its workers in a ``finally`` that asked the crashed one for its stats
    (a second error hiding the first) and left the workers after it running; lstm_lm_step
    failed on ``json.loads('')`` with a bare JSONDecodeError. Now a WorkerError names the
    worker and every worker is killed and reaped."""
    call = MEASURE[case].format(names=("ok", "crash", "slow"), rounds=5, extra="")
    code = _script(
        case,
        f"""
        try:
            {call}
        except _workers.WorkerError as exc:
            print("error:", exc)
        print("alive:", [w.process.poll() is None for w in started])
        """,
    )
    result = _run(code, _env(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "error: worker crash exited (status 5)" in result.stdout
    assert "alive: [False, False, False]" in result.stdout


@CASES
def test_a_hung_worker_times_out_instead_of_hanging_the_run(case: str, tmp_path: Path) -> None:
    """Neither case bounded its wait for a worker's answer (lstm_lm_step read a line without
    a limit, cnn_step left its timeout at 10 minutes with no way to set it): a stuck step
    hung the run. Past ``timeout_s`` the worker is killed and named, the others stopped."""
    call = MEASURE[case].format(names=("ok", "hang"), rounds=5, extra=", timeout_s=2.0")
    code = _script(
        case,
        f"""
        try:
            {call}
        except _workers.WorkerError as exc:
            print("error:", exc)
        print("alive:", [w.process.poll() is None for w in started])
        """,
    )
    start = time.perf_counter()
    result = _run(code, _env(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "error: worker hang gave no answer in 2 s" in result.stdout
    assert "alive: [False, False]" in result.stdout
    assert time.perf_counter() - start < 40


@CASES
def test_ctrl_c_to_the_process_group_stops_every_worker(case: str, tmp_path: Path) -> None:
    """A Ctrl-C in a terminal reaches the workers too: cnn_step's ``finally`` then asked the
    dead workers for their stats (ending in a WorkerError, not KeyboardInterrupt), and
    lstm_lm_step's workers died with tracebacks of their own. Now the workers ignore SIGINT,
    the parent kills them and the interrupt propagates."""
    call = MEASURE[case].format(names=("slow", "slow_2"), rounds=100000, extra="")
    code = _script(case, call)
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_env(tmp_path),
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
    assert err.strip().splitlines()[-1] == "KeyboardInterrupt", err[-2000:]
    assert all(_gone(pid) for pid in pids)


@CASES
def test_page_faults_per_step_count_every_timed_round(case: str, tmp_path: Path) -> None:
    """lstm_lm_step reported the page faults of the last round only (a worker faulting in
    every other round read 0 or 3 per step depending on the round count); cnn_step counted
    its calibration run with the timed rounds. Now: all timed rounds, over all their steps."""
    call = MEASURE[case].format(names=("faulty", "ok"), rounds=5, extra="")
    code = _script(case, f"result = {call}\nprint(json.dumps(result))")
    result = _run(code, _env(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.splitlines()[-1])
    # The faulty worker answers 3 faults a step on its even runs. cnn_step's first run is
    # its calibration (timed runs 2-6: 3 of 5 fault); lstm_lm_step has none (runs 1-5: 2).
    faulting = 3 if case == "cnn_step" else 2
    assert out["workers"]["faulty"]["faults_per_step"] == pytest.approx(3 * faulting / 5)
    assert out["workers"]["ok"]["faults_per_step"] == 0
    w = out["workers"]["ok"]
    assert w["peak_rss_mib"] == 100.0 and w["setup_rss_mib"] == 60.0
    assert w["loop_rss_growth_mib"] == 10.0 and w["libraries"] == ["numpy"]


def test_lstm_skips_a_worker_that_cannot_run_here(tmp_path: Path) -> None:
    """A worker whose implementation cannot run (no GPU) is reported skipped, with its
    reason, and the others are timed."""
    call = MEASURE["lstm_lm_step"].format(names=("ok", "skip_gpu"), rounds=2, extra="")
    code = _script("lstm_lm_step", f"result = {call}\nprint(json.dumps(result))")
    result = _run(code, _env(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert list(out["workers"]) == ["ok"]
    assert out["skipped"] == {"skip_gpu": "ImportError: no GPU here"}


@pytest.mark.parametrize(
    ("case", "argv"),
    [("cnn_step", "[]"), ("lstm_lm_step", "['--out', str(path)]")],
)
def test_a_results_file_is_never_left_half_written(case: str, argv: str, tmp_path: Path) -> None:
    """Both cases wrote their results with ``Path.write_text``: a full disk (here a file size
    limit) or a Ctrl-C midway left half a JSON document in place of the old results. The old
    file now stays whole until the new one is complete."""
    name = f"{case}.json"
    old = {"case": case, "rows": [], "when": "before"}
    (tmp_path / name).write_text(json.dumps(old))
    code = _script(
        case,
        f"""
        import resource, signal
        from pathlib import Path
        import benchmarks
        path = Path({str(tmp_path / name)!r})
        mod.RESULTS = path.parent
        benchmarks.machine_facts = lambda: {{"cpu": "x" * 5000}}
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, resource.RLIM_INFINITY))
        mod.CPU_IMPLS = mod.CPU_WORKERS = ("ok", "torch_native")
        try:
            mod.main({argv} + ["--rounds", "2"])
        except OSError as exc:
            print("failed:", exc.errno)
        """,
    )
    result = _run(code, _env(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "failed:" in result.stdout
    assert json.loads((tmp_path / name).read_text()) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["fake_fix_worker.py", name])


def test_cnn_workers_each_load_their_own_library_and_report_loop_memory() -> None:
    """cnn_step's workers reported neither which libraries they loaded (nothing showed that
    the NumPy worker never loaded torch) nor the memory of the loop apart from setup."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed: no torch worker")
    code = f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from benchmarks import cnn_step
        print(json.dumps(cnn_step.measure(("numpy", "torch_native"), 1, 0.001, 1)))
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNBACKEND")}
    result = _run(textwrap.dedent(code), env, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    workers = json.loads(result.stdout.splitlines()[-1])["workers"]
    assert workers["numpy"]["libraries"] == ["numpy"]
    assert "torch" in workers["torch_native"]["libraries"]
    for w in workers.values():
        assert 0 < w["setup_rss_mib"] <= w["peak_rss_mib"]
        assert w["loop_peak_rss_mib"] <= w["peak_rss_mib"]
        assert w["loop_rss_growth_mib"] == pytest.approx(
            w["loop_peak_rss_mib"] - w["setup_rss_mib"]
        )


# --------------------------------------------------------------------------------------------
# The loop's memory apart from setup

SETUP_HEAVY_WORKER = """
import sys
sys.path.insert(0, {root!r})
from benchmarks import _workers

def build():
    data = b"x" * (300 * 2**20)  # 300 MiB made and dropped while setting up
    del data
    return lambda: len(b"y" * 2**20)  # a step holding 1 MiB

_workers.serve(build, warmup=1, settle=False)
"""


def test_the_loops_peak_rss_leaves_out_setup(tmp_path: Path) -> None:
    """The only memory figure was the worker's lifetime peak RSS, set by whatever the setup
    (data generation, imports, warm-up) touched: a worker that made 300 MiB while setting up
    and holds 1 MiB a step reported 300+ MiB. The loop's own peak and its growth over the RSS
    after setup are now reported beside it (the lifetime peak is kept)."""
    worker = _start_worker(tmp_path, "setup_heavy_worker", SETUP_HEAVY_WORKER, "heavy")
    try:
        for _ in range(3):
            assert worker.run_steps(5)["last"] == 2**20
        stats = worker.close()
    finally:
        worker.kill()
    assert stats["peak_rss_mib"] > 300
    assert stats["setup_rss_mib"] < 100
    assert stats["loop_rss_growth_mib"] == pytest.approx(
        stats["loop_peak_rss_mib"] - stats["setup_rss_mib"]
    )
    _workers = _workers_module()
    if stats["loop_peak_source"] == _workers.MemoryMeter.RESET:  # Linux 4.0 and later
        assert stats["loop_peak_rss_mib"] < 100
        assert -5 < stats["loop_rss_growth_mib"] < 20
    else:
        assert stats["loop_peak_rss_mib"] == stats["peak_rss_mib"]
    assert "after setup" in _workers.memory_note(stats)


def test_mlp_processes_reports_the_loops_memory_beside_its_peak() -> None:
    """mlp_processes recorded the lifetime peak RSS alone (imports, data and warm-up
    included); its rows now also give the RSS after setup and the loop's growth, and
    ``peak_rss_mib``, which issue 19's peak RSS target reads, is still there."""
    code = f"""
        import dataclasses, json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from benchmarks import mlp_processes as mp
        config = dataclasses.replace(mp.CONFIGS["tiny"], workers=("hand",), targets=(),
                                     rounds_factor=1)
        result = mp.measure(config, rounds=2, round_s=0.002, warmup=0)
        print(json.dumps({{**result, "notes": [r.note for r in mp.rows_of(result)]}}))
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNBACKEND")}
    result = _run(textwrap.dedent(code), env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.splitlines()[-1])
    w = out["workers"]["hand"]
    assert 0 < w["setup_rss_mib"] <= w["peak_rss_mib"]
    assert w["loop_peak_rss_mib"] <= w["peak_rss_mib"]
    assert w["loop_rss_growth_mib"] == pytest.approx(w["loop_peak_rss_mib"] - w["setup_rss_mib"])
    assert "after setup" in out["notes"][0] and "peak RSS" in out["notes"][0]


def test_mlp_rows_still_read_results_saved_without_the_loops_memory() -> None:
    """Results saved before the loop's memory was recorded (and workers that report only
    their peak) still make rows."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import mlp_processes as mp
    finally:
        sys.path.remove(str(ROOT))
    worker = {"median_s": 2e-5, "faults_per_step": 0.0, "peak_rss_mib": 50.0,
              "libraries": ["numpy"]}  # fmt: skip
    result = {
        "config": "tiny", "sizes": [2, 10, 3], "batch": 30, "dtype": "float32",
        "rounds": 2, "targets": [], "fault_free": [], "load_average_during": [1.0, 1.0],
        "workers": {"hand": worker}, "samples": {"hand": [2e-5, 2e-5]},
    }  # fmt: skip
    (row,) = mp.rows_of(result)
    assert "peak RSS 50 MiB" in row.note and "after setup" not in row.note


def test_the_report_says_which_case_ran_on_which_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/performance.md named one CPU (the newest result's) for every CPU case, though the
    saved results came from two machines (an AMD EPYC in the morning, an Intel Xeon in the
    evening): ratios from different machines read as one run's."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import _report

    one = {"a": {"machine": {"cpu": "X"}}, "b": {"machine": {"cpu": "X"}}}
    assert _report._cpus_by_case(one) == ""
    two = {**one, "c": {"machine": {"cpu": "Y"}}, "d": {}}
    text = _report._cpus_by_case(two)
    assert "more than one CPU" in text
    assert "- X: `a`, `b`" in text and "- Y: `c`" in text and "- unrecorded: `d`" in text


# --------------------------------------------------------------------------------------------
# Warm-up by time as well as by steps

COUNTING_WORKER = """
import sys, time
sys.path.insert(0, {root!r})
from benchmarks import _workers

def build():
    calls = [0]
    def step():
        calls[0] += 1
        time.sleep(0.001)
        return calls[0]
    return step

_workers.serve(build, warmup=2, warmup_s=0.3, settle=False)
"""


def test_warm_up_runs_for_its_seconds(tmp_path: Path) -> None:
    """A worker warmed up for a fixed 3 steps: medium float64's engine took 1-3 page faults at
    its steps 7-10 while glibc settled where it puts the step's arrays, and rounds of a few
    steps on a busy machine counted them as the steady state's (0.03-0.9 faults a step
    reported where a long run has none). ``serve(warmup_s=)`` warms up for at least that
    long, as well as at least ``warmup`` steps."""
    worker = _start_worker(tmp_path, "counting_worker", COUNTING_WORKER, "counting")
    try:
        first = worker.run_steps(1)["last"]
        worker.close()
    finally:
        worker.kill()
    # 0.3 s of 1 ms steps: far more than the 2 steps asked for (a loaded machine runs fewer)
    assert first > 2 + 20


HOLDING_WORKER = """
import sys, weakref
sys.path.insert(0, {root!r})
from benchmarks import _workers

class Result(float):
    pass

def build():
    state = {{"previous": None, "dropped": 0, "calls": 0}}
    def step():
        # how many steps ran without the previous step's result still held by the caller
        previous = state["previous"]
        if state["calls"] and (previous is None or previous() is None):
            state["dropped"] += 1
        state["calls"] += 1
        result = Result(state["dropped"])
        state["previous"] = weakref.ref(result)
        return result
    return step

_workers.serve(build, warmup=3, settle=False)
"""


def test_every_step_runs_with_the_previous_result_held(tmp_path: Path) -> None:
    """The warm-up dropped each step's result, and every timed loop started by dropping the
    last one, while within a loop each result was held until the next step returned (as a
    user's ``loss = step(x, t)`` holds it). An engine loss keeps its graph, so the first
    timed loop made a second set of arrays: 3,000 page faults on the medium float64 MLP,
    reported as the steady state's. Now every step, from the warm-up on, runs with the
    previous result held."""
    worker = _start_worker(tmp_path, "holding_worker", HOLDING_WORKER, "holding")
    try:
        dropped = [worker.run_steps(4)["last"] for _ in range(3)]
        worker.close()
    finally:
        worker.kill()
    assert dropped == [0.0, 0.0, 0.0]
