"""Fixes and attacker's review of data-parallel training (``nnbackend.distributed``,
``nnbackend.backends.collectives``).

Covered: the timeout of MPI's collectives (a rank that never comes, hangs or dies: every
collective, the environment variable and keyword that set it, their bad values, what a
communicator does after a timeout, and the exit of a rank that timed out), the timeout given to
torch.distributed (gloo), objects that cannot be pickled in the MPI object collectives, and
the ranks per machine (BLAS threads) read from Slurm's per-node task lists or from MPI's host
names. MPI runs are two ranks under ``mpiexec -n 2``, each launch with a hard timeout.
"""

from __future__ import annotations

import datetime
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

import pytest

from nnbackend import distributed
from nnbackend.backends import collectives
from nnbackend.backends.collectives import DEFAULT_TIMEOUT, TIMEOUT_ENV, collective_timeout
from nnbackend.distributed import _world
from nnbackend.errors import ArgumentError, CollectiveError

SRC = str(Path(__file__).resolve().parents[1] / "src")


# -- launching (the pattern of tests/test_distributed_mpi.py) --------------------------------
def _mpiexec() -> str:
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed: pip install 'nnbackend[mpi]'")
    found = shutil.which("mpiexec") or shutil.which(
        "mpiexec", path=str(Path(sys.executable).parent)
    )
    if found is None:
        pytest.skip("no mpiexec on PATH: pip install 'nnbackend[mpi]' (the mpich wheel)")
    return found


def _launch(
    argv: list[str], *, timeout: float = 60.0, env: dict[str, str] | None = None
) -> tuple[int, str, str, float]:
    """Run ``argv`` in its own process group; kill the whole group on timeout."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("NNBACKEND")}
    full["PYTHONPATH"] = SRC + (os.pathsep + full["PYTHONPATH"] if full.get("PYTHONPATH") else "")
    full["OMP_NUM_THREADS"] = full["OPENBLAS_NUM_THREADS"] = "1"
    if os.name == "posix" and os.geteuid() == 0:
        # Open MPI will not start as root (a container's user) unless told it may
        # (MPICH ignores these): the GPU image runs the tests as root.
        full.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        full.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    full.update(env or {})
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(argv)} hung for {timeout} s and was killed:\n{out}\n{err}")
    return proc.returncode, out, err, time.perf_counter() - start


def _run_two(tmp_path: Path, code: str, *, timeout: float = 60.0, **env: str) -> Any:
    mpiexec = _mpiexec()
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    argv = [mpiexec, "-n", "2", sys.executable, str(script), str(tmp_path)]
    return _launch(argv, timeout=timeout, env=env)


# -- the timeout's setting ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, DEFAULT_TIMEOUT),
        ("", DEFAULT_TIMEOUT),
        ("2.5", 2.5),
        (" 600 ", 600.0),
        ("0", None),
        ("none", None),
        ("inf", None),
    ],
)
def test_the_timeout_comes_from_the_environment(value: str | None, expected: Any) -> None:
    """MPI's collectives had no timeout at all: one rank that never came left the others
    waiting forever. NNBACKEND_COLLECTIVE_TIMEOUT (seconds; 0: forever) sets it, 30 minutes
    by default."""
    env = {} if value is None else {TIMEOUT_ENV: value}
    assert collective_timeout(env=env) == expected
    assert DEFAULT_TIMEOUT == 1800.0


@pytest.mark.parametrize("value", ["-1", "nan", "ten", "1e", "-inf"])
def test_a_bad_timeout_variable_is_a_typed_error(value: str) -> None:
    """(New setting) a timeout variable that is no number of seconds >= 0 is an
    ArgumentError naming the variable, not a silent default nor a bare ValueError."""
    with pytest.raises(ArgumentError, match=TIMEOUT_ENV):
        collective_timeout(env={TIMEOUT_ENV: value})


@pytest.mark.parametrize("value", [-1, float("nan"), "10", True, [1]])
def test_a_bad_timeout_keyword_is_a_typed_error(value: Any, monkeypatch: Any) -> None:
    """(New setting) init(timeout=...) and MPIComm(timeout=...) take seconds >= 0 (0 or
    None: forever); anything else is an ArgumentError before any rank is joined."""
    with pytest.raises(ArgumentError, match="timeout must be a number of seconds"):
        collective_timeout(value)
    monkeypatch.setattr(_world, "_current", None)
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "WORLD_SIZE", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ArgumentError, match="timeout"):
        distributed.init(timeout=value)
    assert _world._current is None
    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    with pytest.raises(ArgumentError, match=TIMEOUT_ENV):
        distributed.init()
    assert collective_timeout(0) is None and collective_timeout(None) is None
    assert collective_timeout(2) == 2.0


def test_gloo_is_given_the_timeout(monkeypatch: Any) -> None:
    """torch.distributed's process group was made with torch's default timeout whatever
    nnbackend was told; it gets the same timeout as MPI now (NNBACKEND_COLLECTIVE_TIMEOUT
    or init(timeout=)), and its timeout error says how to change it."""
    pytest.importorskip("torch")
    made: dict[str, Any] = {}

    class FakeDist:
        HashStore = dict

        def is_available(self) -> bool:
            return True

        def is_initialized(self) -> bool:
            return bool(made)

        def init_process_group(self, backend: str, **kwargs: Any) -> None:
            made.update(kwargs, backend=backend)

        def get_rank(self) -> int:
            return 0

        def get_world_size(self) -> int:
            return 1

    monkeypatch.setattr(collectives, "_dist", FakeDist)
    monkeypatch.setattr(collectives.atexit, "register", lambda *a: None)
    found = {"engine": "torch", "rank": 0, "size": 1, "local_rank": 0, "local_size": 1}
    monkeypatch.setenv(TIMEOUT_ENV, "7")
    comm = collectives.torch_communicator("torch", found, None)
    assert made["timeout"] == datetime.timedelta(seconds=7)
    assert comm.timeout == 7.0

    class TimedOut:
        def barrier(self) -> None:
            raise RuntimeError("[gloo] Timed out waiting 7000ms for recv operation")

    comm._dist = TimedOut()
    with pytest.raises(CollectiveError, match=f"barrier failed on rank 0.*{TIMEOUT_ENV}"):
        comm.barrier()


# -- Slurm without --ntasks-per-node ---------------------------------------------------------
SLURM = {"SLURM_NTASKS": "7", "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}


@pytest.mark.parametrize(
    ("extra", "local_size"),
    [
        ({"SLURM_TASKS_PER_NODE": "2(x3),1", "SLURM_NODEID": "2"}, 2),
        ({"SLURM_TASKS_PER_NODE": "3,4", "SLURM_NODEID": "1"}, 4),
        ({"SLURM_TASKS_PER_NODE": "7"}, 7),  # one node: no SLURM_NODEID needed
        # The step's own layout wins over the allocation's.
        (
            {
                "SLURM_TASKS_PER_NODE": "4(x2)",
                "SLURM_STEP_TASKS_PER_NODE": "2(x3),1",
                "SLURM_NODEID": "1",
                "SLURM_NTASKS_PER_NODE": "4",
            },
            2,
        ),
        ({"SLURM_NTASKS_PER_NODE": "4"}, 4),  # --ntasks-per-node alone, as before
        ({}, 7),  # Slurm says nothing per node: the world's size, as before
    ],
)
def test_slurm_ranks_per_node_without_ntasks_per_node(extra: dict, local_size: int) -> None:
    """Under srun without --ntasks-per-node, SLURM_NTASKS_PER_NODE is unset, and the local
    size was the whole world's (8 ranks on 2 nodes: each rank got cores / 8 BLAS threads, not
    cores / 4). Slurm's per-node task list ('2(x3),1') and SLURM_NODEID say it now."""
    found = distributed.detect({**SLURM, **extra})
    assert (found["engine"], found["rank"], found["size"]) == ("mpi", 5, 7)
    assert (found["local_rank"], found["local_size"]) == (1, local_size)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"SLURM_TASKS_PER_NODE": "2(x3", "SLURM_NODEID": "0"}, "SLURM_TASKS_PER_NODE"),
        ({"SLURM_TASKS_PER_NODE": "two", "SLURM_NODEID": "0"}, "SLURM_TASKS_PER_NODE"),
        ({"SLURM_TASKS_PER_NODE": "2(x0)", "SLURM_NODEID": "0"}, "SLURM_TASKS_PER_NODE"),
        ({"SLURM_TASKS_PER_NODE": "2(x3),1", "SLURM_NODEID": "4"}, "SLURM_NODEID=4"),
        ({"SLURM_TASKS_PER_NODE": "2(x3),1", "SLURM_NODEID": "x"}, "SLURM_NODEID"),
        # This node runs 1 rank, but SLURM_LOCALID says it is the second: impossible.
        ({"SLURM_TASKS_PER_NODE": "2(x3),1", "SLURM_NODEID": "3"}, "SLURM_LOCALID=1"),
    ],
)
def test_bad_slurm_task_lists_are_typed_errors(extra: dict, named: str) -> None:
    """(New parsing) a malformed per-node task list or node index is an ArgumentError
    naming the variable, not a bare ValueError or IndexError."""
    with pytest.raises(ArgumentError, match=named.replace("(", r"\(")):
        distributed.detect({**SLURM, **extra})


def test_local_ranks_from_host_names() -> None:
    """(New) under MPI the ranks per machine come from every rank's host name, whatever the
    launcher exported."""
    hosts = ["a", "b", "a", "a", "b"]
    got = [_world._local_from_hosts(hosts, r) for r in range(5)]
    assert got == [(0, 3), (0, 2), (1, 3), (2, 3), (1, 2)]


# -- MPI: a rank that never comes --------------------------------------------------------------
NEVER_COMES = """
    import sys, time
    import numpy as np
    from mpi4py import MPI
    from nnbackend import distributed
    from nnbackend.errors import CollectiveError

    out = sys.argv[1]
    world = MPI.COMM_WORLD
    dups = [world.Dup() for _ in range(5)]  # one communicator per collective tried
    if world.Get_rank() == 1:
        time.sleep(50)  # hangs: never joins a collective (the job is killed before)
        sys.exit(0)
    lines = []

    def attempt(name, fn):
        start = time.monotonic()
        try:
            fn()
            lines.append(f"{name}|none|0|")
        except CollectiveError as exc:
            lines.append(f"{name}|{type(exc).__name__}|{time.monotonic() - start:.2f}|{exc}")

    comms = [distributed.MPIComm(d, timeout=1) for d in dups[:4]]
    attempt("allreduce_sum", lambda: comms[0].allreduce_sum(np.ones(3)))
    attempt("again", lambda: comms[0].allreduce_sum(np.ones(3)))
    attempt("broadcast", lambda: comms[1].broadcast(np.ones(3)))
    attempt("barrier", comms[2].barrier)
    attempt("bcast_obj", lambda: comms[3].bcast_obj({"a": 1}, root=1))  # root 0 need not wait
    comm = distributed.MPIComm(dups[4])  # NNBACKEND_COLLECTIVE_TIMEOUT=1.5
    attempt("allgather_obj", lambda: comm.allgather_obj(3))
    with open(f"{out}/rank0", "w") as f:
        f.write("\\n".join(lines))
    print("rank 0 exits", flush=True)
"""


def test_mpi_collectives_time_out_when_a_rank_never_comes(tmp_path: Path) -> None:
    """Under mpiexec, a rank that hung or stopped calling collectives left every other rank
    blocked forever inside allreduce/broadcast/barrier. Each collective now raises a
    CollectiveError naming itself and its timeout after that timeout (keyword or
    NNBACKEND_COLLECTIVE_TIMEOUT), a timed-out communicator refuses further calls at once,
    and the rank's exit ends the job instead of waiting for the hung rank."""
    rc, out, err, seconds = _run_two(tmp_path, NEVER_COMES, **{TIMEOUT_ENV: "1.5"})
    assert seconds < 30, f"the job waited for the hung rank ({seconds:.0f} s)\n{out}\n{err}"
    assert rc != 0, f"{out}\n{err}"  # aborted at rank 0's exit
    assert "rank 0 exits" in out and "aborting the job" in err, err
    rows = {
        name: (kind, float(took), message)
        for name, kind, took, message in (
            line.split("|", 3) for line in (tmp_path / "rank0").read_text().splitlines()
        )
    }
    for name, limit in [
        ("allreduce_sum", 1),
        ("broadcast", 1),
        ("barrier", 1),
        ("bcast_obj", 1),
        ("allgather_obj", 1.5),
    ]:
        kind, took, message = rows[name]
        assert kind == "CollectiveError", (name, rows[name])
        assert limit <= took < limit + 3, (name, took)
        # broadcast times out in its shape check, an allgather_obj
        assert name in message or name == "broadcast", message
        assert f"the timeout is {limit:g} s" in message and TIMEOUT_ENV in message
        assert "other ranks" in message
    kind, took, message = rows["again"]
    assert kind == "CollectiveError" and took < 0.5 and "earlier allreduce_sum" in message


RAISES_MID_STEP = """
    import sys, time
    import numpy as np
    import nnbackend as nb
    from nnbackend import distributed, nn, optim

    w = distributed.init(seed=0, timeout=2)
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((64, 4)), rng.integers(0, 3, 64)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))

    class Fail(nb.callbacks.Callback):
        def on_step_end(self, trainer, history):
            if w.rank == 1 and trainer.step == 3:
                time.sleep(40)  # hangs mid-epoch (a stuck data loader, a deadlock)

    trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1))
    trainer.fit(x, t, epochs=3, batch_size=16, seed=0, callbacks=[Fail()], progress=False)
    print("finished", w.rank, flush=True)
"""


def test_mpi_a_rank_hanging_mid_fit_ends_the_job(tmp_path: Path) -> None:
    """A rank that hung in the middle of fit kept the other blocked in its next all-reduce
    for good (and the job with it). With init(timeout=2), the waiting rank raises a
    CollectiveError after 2 s, and the abort hook ends the whole job."""
    rc, out, err, seconds = _run_two(tmp_path, RAISES_MID_STEP)
    assert rc != 0 and "finished" not in out, f"{out}\n{err}"
    assert seconds < 30, seconds
    assert "CollectiveError" in err and "timed out after 2" in err, err


UNPICKLABLE = """
    import sys, threading
    from nnbackend import distributed
    from nnbackend.errors import ArgumentError, CollectiveError

    out = sys.argv[1]
    comm = distributed.MPIComm(timeout=20)
    got = []
    for name, call in [
        ("bcast_obj", lambda obj: comm.bcast_obj(obj, root=1)),
        ("allgather_obj", comm.allgather_obj),
    ]:
        obj = threading.Lock() if comm.rank == 1 else "fine"
        try:
            call(obj)
            got.append(f"{name}: none")
        except (ArgumentError, CollectiveError) as exc:
            got.append(f"{name}: {type(exc).__name__}")
    got.append(f"after: {comm.allgather_obj(comm.rank)}")
    got.append(f"bcast: {comm.bcast_obj({'x': [1, 2]}, root=1)}")
    with open(f"{out}/rank{comm.rank}", "w") as f:
        f.write("\\n".join(got))
"""


def test_mpi_an_object_that_cannot_be_pickled_fails_on_every_rank(tmp_path: Path) -> None:
    """(Attack) an object one rank could not pickle raised there only (mpi4py's bcast and
    allgather), and the other ranks waited for it. Every rank raises now (ArgumentError on
    the rank whose object it is, CollectiveError on the others), and the communicator still
    works afterwards."""
    rc, out, err, _ = _run_two(tmp_path, UNPICKLABLE)
    assert rc == 0, f"{out}\n{err}"
    rank0 = (tmp_path / "rank0").read_text().splitlines()
    rank1 = (tmp_path / "rank1").read_text().splitlines()
    assert rank0[:2] == ["bcast_obj: CollectiveError", "allgather_obj: CollectiveError"]
    assert rank1[:2] == ["bcast_obj: ArgumentError", "allgather_obj: ArgumentError"]
    assert rank0[2:] == rank1[2:] == ["after: [0, 1]", "bcast: {'x': [1, 2]}"]


LOCAL = """
    import sys
    from nnbackend import distributed

    w = distributed.init(seed=0)
    with open(f"{sys.argv[1]}/rank{w.rank}", "w") as f:
        f.write(f"{w.local_rank} {w.local_size}")
"""


def test_mpi_local_size_comes_from_the_hosts(tmp_path: Path) -> None:
    """(New) under MPI, init counts the ranks per machine from MPI's host names (an srun
    without --ntasks-per-node exported no per-node count): both ranks here share one."""
    rc, out, err, _ = _run_two(tmp_path, LOCAL, timeout=60)
    assert rc == 0, f"{out}\n{err}"
    assert (tmp_path / "rank0").read_text() == "0 2"
    assert (tmp_path / "rank1").read_text() == "1 2"
