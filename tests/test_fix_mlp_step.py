"""Fix to the benchmark harness's ``benchmarks/mlp_step.py``: ``mlp_tiny``, ``mlp_medium``,
``mlp_dtypes`` (and ``mlp_mixed16``) timed several implementations in ONE process through
``benchmarks.interleaved``, where OpenBLAS's idle thread, spinning about 100 ms after each
GEMM, slowed whatever ran next (NumPy against NumPy included: issue 19's house rule). They now
start one worker process per implementation on the shared machinery of
``benchmarks/_workers.py`` (shuffled rounds, medians and 90% intervals, page faults per step,
peak RSS and the loop's memory in the notes), with the same row names, units and targets.

Most tests stand a scripted worker (``fake_mlp_worker``: a fixed time per step for each
worker name) in for the real ones, so the rows' wiring and the process handling are checked
without timing anything; two start real workers on the tiny network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A scripted worker: ``--worker NAME IMPL NET DTYPE``; a step takes FAKE_MS[NAME] ms (1 if not
# named); the worker named by FAKE_CRASH exits on its third loop; a mixed16 worker answers
# ``skip`` where FAKE_SKIP is set.
FAKE_WORKER = """
import json, os, sys
args = sys.argv[sys.argv.index("--worker") + 1:]
name, impl, net, dtype = args[:4]
if impl == "mixed16" and os.environ.get("FAKE_SKIP"):
    print("skip Skip: no nnbackend.precision here", flush=True)
    raise SystemExit(0)
ms = json.loads(os.environ.get("FAKE_MS", "{}")).get(name, 1.0)
print("ready", flush=True)
runs = 0
for line in sys.stdin:
    command = line.split()
    if command[0] == "run":
        runs += 1
        if name == os.environ.get("FAKE_CRASH") and runs == 3:
            raise SystemExit(7)
        n = int(command[1])
        print(json.dumps({"s": n * ms * 1e-3, "faults": 2 * n}), flush=True)
    elif command[0] == "stats":
        print(json.dumps({"peak_rss_mib": 90.0, "setup_rss_mib": 60.0,
                          "loop_peak_rss_mib": 65.0, "loop_rss_growth_mib": 5.0,
                          "loop_peak_source": "VmHWM reset after warm-up",
                          "libraries": ["numpy"], "args": [impl, net, dtype]}), flush=True)
        raise SystemExit(0)
"""

# Loads mlp_step as ``mod``, forbids timing in this (the parent) process, records every
# worker started (``started``: name, pid, args) and every worker's stats (``stats``).
HEAD = """
import json, sys
sys.path.insert(0, {root!r})
from benchmarks import Options, Skip, _workers
from benchmarks import mlp_step as mod

def refuse(*args, **kwargs):
    raise AssertionError("a step was timed in the parent process")

mod.interleaved = refuse
mod.step_runner = refuse
mod.QUICK_ROUNDS = {{"tiny": (5, 0.002), "medium": (5, 0.002)}}
started, stats = [], {{}}
fake = {fake!r}

class Recording(mod.Worker):
    def __init__(self, name, impl, net, dtype, threads=None, *, timeout_s=None):
        if fake:
            _workers.WorkerProcess.__init__(self, "fake_mlp_worker", [name, impl, net, dtype],
                                            name, timeout_s=timeout_s)
        else:
            super().__init__(name, impl, net, dtype, threads, timeout_s=timeout_s)
        started.append([name, self.process.pid, [impl, net, dtype]])

    def close(self):
        stats[self.name] = answer = super().close()
        return answer

mod.Worker = Recording

def report(rows):
    print(json.dumps({{
        "rows": {{r.name: [r.value, r.unit, r.target, r.note] for r in rows}},
        "started": started, "stats": stats,
    }}))
"""


def _run(body: str, tmp_path: Path, *, fake: bool, timeout: float = 120, **env_extra: str):
    (tmp_path / "fake_mlp_worker.py").write_text(FAKE_WORKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NNBACKEND", "FAKE_"))}
    # ahead of the current PYTHONPATH, which finds nnbackend where it is not installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    env.update(env_extra)
    code = textwrap.dedent(HEAD.format(root=str(ROOT), fake=fake)) + textwrap.dedent(body)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def _report(out: str) -> dict:
    return json.loads(out.splitlines()[-1])


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _own_processes(report: dict, names: set[str]) -> None:
    started = report["started"]
    assert {name for name, _, _ in started} == names
    pids = [pid for _, pid, _ in started]
    assert len(set(pids)) == len(pids) and os.getpid() not in pids
    assert all(_gone(pid) for pid in pids)  # each closed and reaped


def test_mlp_tiny_times_each_implementation_in_its_own_worker_process(tmp_path: Path) -> None:
    """mlp_tiny timed the book's code, the hand loop and the engine in one process through
    ``interleaved`` (OpenBLAS's spinning thread slowing the next one); now each runs in a
    worker of its own that loads only NumPy, and the rows keep their names, units and target,
    with page faults per step, peak RSS and the loop's memory in the step rows' notes."""
    out = _run("report(mod.mlp_tiny(Options.make(quick=True)))", tmp_path, fake=False)
    report = _report(out)
    _own_processes(report, {"book", "hand", "engine"})
    for name, _, args in report["started"]:
        assert args == [name, "tiny", "float32"]
        assert report["stats"][name]["libraries"] == ["numpy"], report["stats"][name]
    rows = report["rows"]
    assert list(rows) == [
        "tiny: the book's chapter-1 code, step",
        "tiny: hand-written NumPy step",
        "tiny: engine step",
        "tiny: engine / the book's code",
        "tiny: engine / hand",
    ]
    for name in list(rows)[:3]:
        value, unit, target, note = rows[name]
        assert value > 0 and unit == "us" and target is None
        assert "page faults/step" in note and "peak RSS" in note and "after setup" in note
        assert "loaded numpy" in note
    value, unit, target, note = rows["tiny: engine / the book's code"]
    assert value > 0 and unit == "x" and target == "<= 1.5"
    assert "issue 3's target" in note and "90% interval" in note


def test_mlp_medium_rows_pair_the_right_workers(tmp_path: Path) -> None:
    """mlp_medium ran the hand loops, the engine, the GEMMs alone and the engine's NumPy
    calls in one process; now each is a worker of its own (hand, hand_reused, engine,
    gemm_numpy, calls on the medium network) and every row divides the right workers' times:
    scripted steps of 20, 16, 18, 12 and 15 ms give exactly those ratios."""
    ms = {"hand": 20.0, "reused": 16.0, "engine": 18.0, "gemms": 12.0, "calls": 15.0}
    out = _run(
        "report(mod.mlp_medium(Options.make(quick=True)))",
        tmp_path,
        fake=True,
        FAKE_MS=json.dumps(ms),
    )
    report = _report(out)
    _own_processes(report, set(ms))
    impls = {name: args for name, _, args in report["started"]}
    assert impls == {
        "hand": ["hand", "medium", "float32"],
        "reused": ["hand_reused", "medium", "float32"],
        "engine": ["engine", "medium", "float32"],
        "gemms": ["gemm_numpy", "medium", "float32"],
        "calls": ["calls", "medium", "float32"],
    }
    rows = report["rows"]
    close = lambda a, b: abs(a - b) < 1e-9 * max(1.0, abs(b))
    assert close(rows["medium: engine step"][0], 18.0) and rows["medium: engine step"][1] == "ms"
    assert close(rows["medium: hand-written NumPy step, reused buffers"][0], 16.0)
    assert close(rows["medium: engine / hand"][0], 18 / 20)
    value, unit, target, _ = rows["medium: engine / hand with reused buffers"]
    assert close(value, 18 / 16) and unit == "x" and target == "<= 1.1"
    value, unit, target, _ = rows["medium: engine FLOP rate / GEMMs-alone rate"]
    assert close(value, 12 / 18) and target == ">= 0.85"
    assert close(rows["medium: the engine's NumPy calls alone, FLOP rate / GEMMs-alone rate"][0],
                 12 / 15)  # fmt: skip
    assert close(rows["medium: engine / its NumPy calls alone"][0], 18 / 15)
    assert rows["medium: GEMMs alone, rate"][1] == "GFLOP/s"
    assert "2 page faults/step" in rows["medium: engine step"][3]
    assert "loop +5" in rows["medium: engine step"][3]
    assert len(rows) == 11


def test_mlp_dtypes_times_each_dtype_in_its_own_worker(tmp_path: Path) -> None:
    """mlp_dtypes timed the engine's float64, float32 and float16 steps in one process; now
    each dtype is a worker of its own (medium, then tiny), and the targets' rows keep their
    names and targets and divide the right workers."""
    ms = {"float64": 30.0, "float32": 15.0, "float16": 21.0}
    out = _run(
        "report(mod.mlp_dtypes(Options.make(quick=True)))",
        tmp_path,
        fake=True,
        FAKE_MS=json.dumps(ms),
    )
    report = _report(out)
    args = [a for _, _, a in report["started"]]
    assert args == [["engine", net, d] for net in ("medium", "tiny") for d in ms]
    assert len({pid for _, pid, _ in report["started"]}) == 6
    rows = report["rows"]
    value, unit, target, note = rows["medium: float64 / float32 step"]
    assert abs(value - 2.0) < 1e-9 and unit == "x" and target == ">= 1.6"
    value, unit, target, note = rows["medium: float16 / float32 step"]
    assert abs(value - 1.4) < 1e-9 and target == "<= 1.5" and "float16 conversions" in note
    assert "peak RSS" in rows["medium: float16 step"][3]
    assert abs(rows["tiny: float16 / float32 step"][0] - 1.4) < 1e-9


def test_a_crashed_worker_stops_every_worker_and_is_named(tmp_path: Path) -> None:
    """A worker that dies mid-run ends the case with a WorkerError that names it, and every
    other worker is killed and reaped (none left spinning on the shared machine)."""
    body = """
    try:
        mod.mlp_medium(Options.make(quick=True))
    except _workers.WorkerError as exc:
        print("error:", exc)
    report([])
    """
    out = _run(body, tmp_path, fake=True, FAKE_CRASH="engine")
    assert "error: worker engine exited (status 7)" in out
    report = _report(out)
    assert len(report["started"]) == 5
    assert all(_gone(pid) for _, pid, _ in report["started"])
    assert report["stats"] == {}  # no worker was asked for its stats after the crash


def test_a_worker_that_cannot_run_skips_the_case(tmp_path: Path) -> None:
    """mlp_mixed16's mixed16 worker answers ``skip`` without nnbackend.precision: the case
    raises Skip with the reason, and its float32 worker is stopped."""
    body = """
    try:
        mod.mlp_mixed16(Options.make(quick=True))
    except Skip as exc:
        print("skip:", exc)
    report([])
    """
    out = _run(body, tmp_path, fake=True, FAKE_SKIP="1")
    assert "skip: mixed16 cannot run here: Skip: no nnbackend.precision" in out
    assert all(_gone(pid) for _, pid, _ in _report(out)["started"])


def test_real_dtype_workers_load_only_their_libraries(tmp_path: Path) -> None:
    """The dtype workers are real engine processes on the tiny network: float32 and float64
    load NumPy alone (float16 may add numba, for its conversions), never torch."""
    body = """
    m = mod.measure({d: ("engine", "tiny", d) for d in ("float64", "float32", "float16")},
                    rounds=2, round_s=0.002, warmup=0)
    report([])
    print(json.dumps({n: m.stats[n]["libraries"] for n in m.stats}))
    print(json.dumps({n: len(m.times.samples[n]) for n in m.stats}))
    """
    out = _run(body, tmp_path, fake=False).splitlines()
    libraries, counts = json.loads(out[-2]), json.loads(out[-1])
    assert libraries["float32"] == ["numpy"] and libraries["float64"] == ["numpy"]
    assert "torch" not in libraries["float16"] and libraries["float16"][0] == "numpy"
    assert counts == {"float64": 2, "float32": 2, "float16": 2}
