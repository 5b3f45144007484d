"""Data-parallel training on real engines: two ranks under ``mpiexec -n 2`` (MPICH from the
``mpich`` wheel, one BLAS thread per rank), and two ranks of torch.distributed's gloo engine.

After 50 steps the weights of every rank equal those of the same script run alone on the
global batch (float64 to 1e-12; float32 to a few ulps): SGD, Momentum, Adam, an uneven split
(63-row batches: 31 and 32 rows), ``clip_grad_norm``, and mixed16 with one rank overflowing.
A rank that raises ends the job within seconds; a checkpoint rank 0 saves loads in one
process. Every launch has a hard timeout, so a hang fails the test instead of stalling CI.

Marked ``distributed``; skipped with the reason where mpi4py/mpiexec (or torch) is missing.
``NNBACKEND_REQUIRE_DISTRIBUTED=mpi,torch`` (set by ``.ci/run``) turns the skips of the engines
it names into failures.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn

pytestmark = pytest.mark.distributed

LAUNCH_TIMEOUT = 60.0  # seconds: a hung job is killed and the test fails
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _require(engine: str, available: bool, reason: str) -> None:
    if available:
        return
    required = os.environ.get("NNBACKEND_REQUIRE_DISTRIBUTED", "").split(",")
    if engine in required:
        pytest.fail(f"NNBACKEND_REQUIRE_DISTRIBUTED names {engine}, but {reason}")
    pytest.skip(reason)


def _mpiexec() -> str:
    _require(
        "mpi",
        importlib.util.find_spec("mpi4py") is not None,
        "mpi4py is not installed: pip install 'nnbackend[mpi]'",
    )
    found = shutil.which("mpiexec") or shutil.which(
        "mpiexec", path=str(Path(sys.executable).parent)
    )
    _require(
        "mpi",
        found is not None,
        "no mpiexec on PATH: pip install 'nnbackend[mpi]' (the mpich wheel)",
    )
    assert found is not None
    return found


def _launch(argv: list[str], *, timeout: float = LAUNCH_TIMEOUT) -> tuple[int, str, str, float]:
    """Run ``argv`` in its own process group; kill the whole group on timeout.
    Returns ``(returncode, stdout, stderr, seconds)``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNBACKEND")}
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = "1"
    if os.name == "posix" and os.geteuid() == 0:
        # Open MPI will not start as root (a container's user) unless told it may
        # (MPICH ignores these): the GPU image runs the tests as root.
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(argv)} hung for {timeout} s and was killed:\n{out}\n{err}")
    return proc.returncode, out, err, time.perf_counter() - start


TRAIN = textwrap.dedent(
    """
    import sys
    import numpy as np
    import nnbackend as nb
    from nnbackend import distributed, nn, optim

    engine = sys.argv[2] if len(sys.argv) > 2 else None
    w = distributed.init(engine, seed=0)
    out = sys.argv[1]

    def setup(dtype, policy):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((630, 8)).astype("float32" if policy == "mixed16" else dtype)
        t = rng.integers(0, 4, 630)
        if policy == "mixed16":
            x[5, 0] = np.inf  # the steps holding row 5 overflow, on one rank only
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
        r = np.random.default_rng(1 + 100 * w.rank)  # ranks start apart; rank 0's weights win
        xp = nb.namespace()
        for p in model.parameters():
            init = 0.3 * r.standard_normal(tuple(p.data.shape))
            p.data = xp.asarray(init.astype(str(p.data.dtype).split(".")[-1]))
        return model, x, t

    CASES = {
        "sgd": ("float64", lambda m: optim.SGD(m.parameters(), lr=0.3), {}),
        "momentum": ("float64", lambda m: optim.Momentum(m.parameters(), lr=0.05), {}),
        "adam": ("float64", lambda m: optim.Adam(m.parameters(), lr=0.01), {}),
        "clip": ("float64", lambda m: optim.SGD(m.parameters(), lr=0.3), {"max_grad": 0.1}),
        "sgd32": ("float32", lambda m: optim.SGD(m.parameters(), lr=0.3), {}),
        "mixed16": ("mixed16", lambda m: optim.SGD(m.parameters(), lr=0.3), {}),
    }
    for name, (policy, make, kw) in CASES.items():
        with nb.using(dtype=policy):
            model, x, t = setup(policy, policy)
            trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), make(model))
            h = trainer.fit(x, t, epochs=5, batch_size=63, seed=3, progress=False, **kw)
            weights = [np.asarray(p.data) for p in model.parameters()]
            skipped = trainer.loss_scaler.skipped if trainer.loss_scaler else 0
            np.savez(f"{out}/{name}-{w.rank}.npz", *weights, loss=np.asarray(h.epoch_loss),
                     steps=h.steps, skipped=skipped)
            if name == "sgd":
                nb.save(model, f"{out}/sgd.safetensors")
    distributed.barrier()
    print("done", w.engine, w.rank, w.size)
    """
)

FAIL = textwrap.dedent(
    """
    from nnbackend import distributed

    w = distributed.init()
    if w.rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    w.comm.barrier()  # without the abort hook rank 0 would wait here forever
    """
)

CASES = ["sgd", "momentum", "adam", "clip", "sgd32", "mixed16"]


def _load(path: Path) -> tuple[list[np.ndarray], dict[str, Any]]:
    with np.load(path) as f:
        weights = [f[f"arr_{i}"] for i in range(len([k for k in f.files if k.startswith("arr_")]))]
        return weights, {k: f[k] for k in ("loss", "steps", "skipped")}


def _run_all(tmp: Path, launcher: list[str], extra: list[str]) -> Path:
    script = tmp / "train.py"
    script.write_text(TRAIN)
    single, ranks = tmp / "single", tmp / "ranks"
    single.mkdir()
    ranks.mkdir()
    rc, out, err, _ = _launch([sys.executable, str(script), str(single)])
    assert rc == 0, f"the script alone failed:\n{out}\n{err}"
    rc, out, err, _ = _launch([*launcher, str(script), str(ranks), *extra])
    assert rc == 0, f"{' '.join(launcher)} failed:\n{out}\n{err}"
    # Both ranks finished (their stdout lines may interleave, so look at their files).
    assert sorted(p.name for p in ranks.glob("sgd-*.npz")) == ["sgd-0.npz", "sgd-1.npz"], out
    return tmp


@pytest.fixture(scope="module")
def mpi_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mpiexec = _mpiexec()
    return _run_all(tmp_path_factory.mktemp("mpi"), [mpiexec, "-n", "2", sys.executable], [])


def _torchrun() -> list[str]:
    _require("torch", importlib.util.find_spec("torch") is not None, "torch is not installed")
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
            "--master-port", str(_free_port())]  # fmt: skip


def _free_port() -> int:
    """A TCP port nobody listens on now (a fixed one collided with other jobs' runs)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def gloo_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run_all(tmp_path_factory.mktemp("gloo"), _torchrun(), [])


def _check(runs: Path, case: str) -> None:
    single, s_info = _load(runs / "single" / f"{case}-0.npz")
    w0, info0 = _load(runs / "ranks" / f"{case}-0.npz")
    w1, info1 = _load(runs / "ranks" / f"{case}-1.npz")
    assert int(info0["steps"]) == int(s_info["steps"]) == 50
    for a, b in zip(w0, w1, strict=True):
        np.testing.assert_array_equal(a, b)  # every rank holds the same weights
    if case == "mixed16":
        # The overflow decision is global: both ranks skip exactly the steps one process skips.
        assert int(info0["skipped"]) == int(info1["skipped"]) == int(s_info["skipped"]) > 0
        tol = 10 * float(np.finfo(np.float16).eps)
        for a, c in zip(w0, single, strict=True):
            np.testing.assert_allclose(a, c, rtol=tol, atol=tol)
        return
    eps = float(np.finfo(w0[0].dtype).eps)
    atol = 1e-12 if w0[0].dtype == np.float64 else 8 * eps
    for a, c in zip(w0, single, strict=True):
        np.testing.assert_allclose(a, c, rtol=0, atol=atol)
    np.testing.assert_allclose(info0["loss"], s_info["loss"], rtol=1e3 * eps)


@pytest.mark.parametrize("case", CASES)
def test_mpi_two_ranks_equal_one_process(mpi_runs: Path, case: str) -> None:
    _check(mpi_runs, case)


def test_mpi_checkpoint_of_rank_zero_loads_in_one_process(mpi_runs: Path) -> None:
    weights, _ = _load(mpi_runs / "ranks" / "sgd-0.npz")
    with nb.using(dtype="float64"):
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
        nb.load(model, mpi_runs / "ranks" / "sgd.safetensors")
        for p, w in zip(model.parameters(), weights, strict=True):
            np.testing.assert_array_equal(np.asarray(p.data), w)


def test_mpi_a_failing_rank_ends_the_job_within_seconds(tmp_path: Path) -> None:
    mpiexec = _mpiexec()
    script = tmp_path / "fail.py"
    script.write_text(FAIL)
    rc, _, err, seconds = _launch([mpiexec, "-n", "2", sys.executable, str(script)], timeout=30)
    assert rc != 0
    assert "rank 1 fails on purpose" in err
    assert seconds < 10, f"the job took {seconds:.1f} s to end"


@pytest.mark.parametrize("case", CASES)
def test_gloo_two_ranks_equal_one_process(gloo_runs: Path, case: str) -> None:
    _check(gloo_runs, case)


def test_launch_runs_every_rank(tmp_path: Path) -> None:
    _mpiexec()
    script = tmp_path / "hello.py"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from nnbackend import distributed\n"
        "w = distributed.init()\n"
        "Path(sys.argv[1], f'rank{w.rank}').write_text(f'{w.rank} of {w.size} {w.engine}')\n"
    )  # one file per rank: their stdout lines may interleave
    argv = [sys.executable, "-m", "nnbackend", "launch", "-n", "2", str(script), str(tmp_path)]
    rc, _, err, _ = _launch(argv)
    assert rc == 0, err
    assert (tmp_path / "rank0").read_text() == "0 of 2 mpi"
    assert (tmp_path / "rank1").read_text() == "1 of 2 mpi"


def test_launch_ends_every_rank_on_the_first_failure(tmp_path: Path) -> None:
    _mpiexec()
    script = tmp_path / "fail.py"
    script.write_text(FAIL)
    rc, _, err, seconds = _launch(
        [sys.executable, "-m", "nnbackend", "launch", "-n", "2", str(script)], timeout=30
    )
    assert rc != 0
    assert "rank 1 fails on purpose" in err
    assert seconds < 10, f"the job took {seconds:.1f} s to end"


# -- ranks that differ, and a rank that exits (from the review of data-parallel training) --
# Each case on every rank; the name of what it raised (or "ok") goes to a file per rank.
MISMATCHES = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    import nnbackend as nb
    from nnbackend import distributed

    w = distributed.init(sys.argv[2] if len(sys.argv) > 2 else None, abort_on_error=False)
    c = w.comm
    lines = []

    def case(name, fn):
        try:
            fn()
            lines.append(f"{name} ok")
        except Exception as exc:
            lines.append(f"{name} {type(exc).__name__}")

    def transposed():
        p = nb.Tensor(np.zeros((2, 3) if w.rank == 0 else (3, 2)), requires_grad=True)
        p.grad = np.ones(p.data.shape)
        distributed.GradientReducer([p], c).reduce(0.5)

    case("bcast_shape", lambda: c.broadcast(np.zeros(2 + w.rank), 0))
    mixed = np.zeros(4, dtype="float64" if w.rank else "float32")
    case("bcast_dtype", lambda: c.broadcast(mixed, 0))
    case("bcast_root", lambda: c.broadcast(np.zeros(2), -1))
    case("reducer", transposed)
    case("f16", lambda: np.testing.assert_array_equal(
        c.allreduce_sum(np.ones(3, dtype="float16")), np.full(3, 2, dtype="float16")))
    c.barrier()
    Path(sys.argv[1], f"rank{w.rank}").write_text("\\n".join(lines))
    """
)
EXPECTED = [
    "bcast_shape ShapeError",
    "bcast_dtype DtypeError",
    "bcast_root ArgumentError",
    "reducer ShapeError",
    "f16 ok",
]


def test_mpi_ranks_that_differ_get_typed_errors_on_every_rank(tmp_path: Path) -> None:
    """Under mpiexec a broadcast of arrays that differed between ranks succeeded on rank 0
    and raised an untyped mpi4py.MPI.Exception ('Message truncated') on rank 1 only; a
    reducer over transposed parameters silently mixed their elements."""
    mpiexec = _mpiexec()
    script = tmp_path / "mismatch.py"
    script.write_text(MISMATCHES)
    rc, out, err, _ = _launch([mpiexec, "-n", "2", sys.executable, str(script), str(tmp_path)])
    assert rc == 0, f"{out}\n{err}"
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}").read_text().splitlines() == EXPECTED


def test_gloo_ranks_that_differ_get_typed_errors_on_every_rank(tmp_path: Path) -> None:
    """Under torchrun (gloo) a broadcast whose dtypes differed between ranks killed rank 1
    with a C++ 'gloo::EnforceNotMet' abort (SIGABRT), the other rank getting a connection
    error."""
    script = tmp_path / "mismatch.py"
    script.write_text(MISMATCHES)
    rc, out, err, _ = _launch([*_torchrun(), str(script), str(tmp_path), "torch"])
    assert rc == 0, f"{out}\n{err}"
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}").read_text().splitlines() == EXPECTED


def test_launch_ends_the_job_when_one_rank_exits(tmp_path: Path) -> None:
    """sys.exit(n) on one rank under `nnbackend launch` (mpiexec) left the others waiting in
    their next collective forever: SystemExit never reaches sys.excepthook, where the abort
    hook sits. launch now runs scripts through mpi4py's runner, which aborts the job."""
    _mpiexec()
    script = tmp_path / "exit_one.py"
    script.write_text(
        "import sys\n"
        "from nnbackend import distributed\n"
        "w = distributed.init()\n"
        "if w.rank == 1:\n"
        "    sys.exit(3)\n"
        "w.comm.barrier()\n"
    )
    argv = [sys.executable, "-m", "nnbackend", "launch", "-n", "2", str(script)]
    rc, _, err, _ = _launch(argv, timeout=60.0)
    assert rc != 0, err
