"""Small tidy-ups whose behaviour changed: ``distributed.thread_group``'s timeout now takes
what ``MPIComm`` and ``NNBACKEND_COLLECTIVE_TIMEOUT`` take (``0`` or ``None``: no limit,
through ``collective_timeout``; a limit too long for ``threading`` is no limit either), and
``benchmarks/cnn_step.py`` answers ``skip REASON`` for a GPU worker that cannot run here (no
GPU) instead of failing the run with a WorkerError, as ``benchmarks/lstm_lm_step.py`` does.

The cnn_step tests stand a small scripted worker (``fake_tidy_worker``) in for the real
ones, so the parent's handling of skipped workers is checked without timing anything; one
test runs the real ``--gpu`` workers where no GPU is usable.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nnbackend import distributed, registry
from nnbackend.errors import ArgumentError

Run = Callable[..., subprocess.CompletedProcess[str]]
ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# thread_group's timeout


def _late_barrier(comms: list[Any], late_s: float) -> list[str]:
    """Every rank calls barrier(), rank 1 ``late_s`` seconds after the others; the errors."""
    errors: list[str] = []

    def run(comm: Any) -> None:
        try:
            if comm.rank == 1:
                time.sleep(late_s)
            comm.barrier()
        except BaseException as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            comm.abort()

    threads = [threading.Thread(target=run, args=(c,)) for c in comms]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert not any(th.is_alive() for th in threads)
    return errors


@pytest.mark.parametrize("timeout", [0, 0.0, None, float("inf")])
def test_thread_group_takes_0_none_and_inf_as_no_limit(timeout: Any) -> None:
    """thread_group(2, timeout=0) raised ArgumentError ("must be > 0"), and timeout=inf too,
    where MPIComm and NNBACKEND_COLLECTIVE_TIMEOUT take 0, None and inf as "wait forever".
    Now the group waits for a late rank without a limit."""
    comms = distributed.thread_group(2, timeout=timeout)
    assert _late_barrier(comms, 0.3) == []


def test_thread_group_with_a_limit_longer_than_threading_allows_waits() -> None:
    """thread_group(2, timeout=1e10) was accepted, but the first rank to wait raised a bare
    OverflowError ("timestamp out of range for platform time_t"): a limit past
    threading.TIMEOUT_MAX (about 292 years) is now no limit."""
    comms = distributed.thread_group(2, timeout=1e10)
    assert _late_barrier(comms, 0.3) == []


def test_thread_group_still_times_out_and_names_itself_in_a_refusal() -> None:
    """A positive limit still ends a wait for a rank that never comes, and a bad timeout is
    refused by thread_group (named in the message), not by a helper it calls."""
    comms = distributed.thread_group(2, timeout=0.2)
    errors = _late_barrier(comms, 2.0)
    assert errors and errors[0].startswith("CollectiveError") and "0.2 s" in errors[0]
    with pytest.raises(ArgumentError, match=r"thread_group: timeout must be .*>= 0.*-1"):
        distributed.thread_group(2, timeout=-1)


# --------------------------------------------------------------------------------------------
# cnn_step --gpu without a GPU

# A scripted worker: its behaviour is the first word of its implementation name.
FAKE_WORKER = """
import json, sys
mode = sys.argv[sys.argv.index("--worker") + 1].split("_")[0]
if mode == "skip":
    print("skip ImportError: no GPU here", flush=True)
    raise SystemExit(0)
print("ready", flush=True)
for line in sys.stdin:
    command = line.split()
    if command[0] == "run":
        n = int(command[1])
        print(json.dumps({"s": n * 1e-3, "faults": 0}), flush=True)
    elif command[0] == "stats":
        print(json.dumps({"peak_rss_mib": 100.0, "setup_rss_mib": 60.0,
                          "loop_peak_rss_mib": 70.0, "loop_rss_growth_mib": 10.0,
                          "loop_peak_source": "VmHWM reset after warm-up",
                          "libraries": ["numpy"]}), flush=True)
        raise SystemExit(0)
"""


def _cnn_main(run_in_repo: Run, tmp_path: Path, workers: tuple[str, ...], *argv: str) -> Any:
    """``cnn_step.main(["--gpu", *argv])`` with ``workers`` as its GPU workers, each the
    scripted worker, and its results directory in ``tmp_path``."""
    (tmp_path / "fake_tidy_worker.py").write_text(FAKE_WORKER)
    code = f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        import benchmarks
        from benchmarks import _workers
        from benchmarks import cnn_step as mod

        class Fake(mod.Worker):
            def __init__(self, name, *args, timeout_s=None, **kwargs):
                _workers.WorkerProcess.__init__(self, "fake_tidy_worker", [name], name,
                                                timeout_s=timeout_s)

        mod.Worker = Fake
        mod.RESULTS = Path({str(tmp_path)!r})
        benchmarks.machine_facts = lambda: {{"cpu": "test"}}
        mod.GPU_WORKERS = {workers!r}
        print("exit", mod.main(["--gpu", "--rounds", "2", *{list(argv)!r}]))
    """
    return run_in_repo("-c", textwrap.dedent(code), env={"PYTHONPATH": str(tmp_path)})


def test_cnn_gpu_run_without_a_gpu_skips_its_workers(run_in_repo: Run, tmp_path: Path) -> None:
    """``cnn_step --gpu`` where no GPU worker can run failed with "WorkerError: worker cupy
    exited (status 1)"; each worker now answers ``skip REASON``, the run lists the skipped
    workers with their reasons, exits 0 and leaves the last GPU run's results in place."""
    old = tmp_path / "cnn_step_gpu.json"
    old.write_text('{"case": "cnn_step_gpu", "when": "before"}')
    result = _cnn_main(run_in_repo, tmp_path, ("skip_cupy", "skip_cuda", "skip_torch"))
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for name in ("skip_cupy", "skip_cuda", "skip_torch"):
        assert f"skipped {name}: ImportError: no GPU here" in out
    assert "exit 0" in out and "wrote" not in out
    assert json.loads(old.read_text())["when"] == "before"


def test_cnn_gpu_run_times_the_workers_that_can_run(run_in_repo: Run, tmp_path: Path) -> None:
    """A GPU run where one worker cannot run (cupy missing, torch CUDA there) times the
    others, reports the ratios it can (none against a skipped worker) and saves the skipped
    workers with their reasons."""
    workers = ("skip_cupy", "ok_cuda", "torch_native_cuda")
    result = _cnn_main(run_in_repo, tmp_path, workers)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "skipped skip_cupy: ImportError: no GPU here" in out
    assert "ok_cuda / torch_native_cuda (median)" in out
    assert "skip_cupy /" not in out
    saved = json.loads((tmp_path / "cnn_step_gpu.json").read_text())
    assert set(saved["results"]) == {"ok_cuda", "torch_native_cuda", "load_average_during"}
    assert saved["skipped_workers"] == {"skip_cupy": "ImportError: no GPU here"}


def test_cnn_gpu_run_without_its_reference_reports_no_ratio(
    run_in_repo: Run, tmp_path: Path
) -> None:
    """With the reference (PyTorch CUDA) skipped, the workers measured are reported alone:
    every ratio is against the reference, so there is none (no KeyError)."""
    result = _cnn_main(run_in_repo, tmp_path, ("ok_cupy", "skip_torch"), "--quick")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ok_cupy:" in result.stdout and " / " not in result.stdout


def _gpu_usable() -> bool:
    if registry.probe("cupy") is None:
        return True
    if registry.probe("torch") is None:
        import torch

        return bool(torch.cuda.is_available())
    return False


@pytest.mark.slow
@pytest.mark.skipif(_gpu_usable(), reason="a GPU is usable here: the workers would run")
def test_cnn_gpu_benchmark_without_a_gpu_is_skipped(run_in_repo: Run) -> None:
    """``python -m benchmarks.cnn_step --gpu`` on a machine without a GPU failed with
    "WorkerError: worker cupy exited (status 1)"; now every GPU worker is reported skipped
    with its reason and the run ends with status 0."""
    result = run_in_repo("-m", "benchmarks.cnn_step", "--gpu", "--quick", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("cupy", "torch_cuda", "torch_native_cuda"):
        assert f"skipped {name}: " in result.stdout
