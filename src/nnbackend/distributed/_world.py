"""Who am I in the job: engine detection, ``init()``, the abort hook, BLAS threads."""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nnbackend.backends.collectives import FROM_ENV, collective_timeout
from nnbackend.distributed._comm import Communicator, LocalComm, MPIComm
from nnbackend.errors import ArgumentError
from nnbackend.namespace import backend_for

__all__ = ["World", "barrier", "detect", "init", "is_main", "rank_seed", "world"]

ENGINES = ("mpi", "torch", "nccl")


@dataclass
class World:
    """The job this process belongs to.

    Attributes:
        engine: ``"none"`` (one process), ``"mpi"``, ``"torch"``, ``"nccl"`` or ``"threads"``.
        rank: this process's index, 0 to ``size - 1``.
        size: the number of processes.
        local_rank: its index among the processes on this machine.
        local_size: the number of processes on this machine.
        device: the device this rank should use (``"cuda:<local_rank>"`` on a GPU engine),
            or ``None`` for the default.
        comm: the :class:`~nnbackend.distributed.Communicator` running the collectives.
    """

    engine: str = "none"
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    device: str | None = None
    comm: Communicator = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        for name in ("rank", "size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ArgumentError(f"World: {name} must be an int, got {value!r}")
        if self.size < 1 or not 0 <= self.rank < self.size:
            raise ArgumentError(
                f"World: rank must be from 0 to size - 1 and size >= 1, got rank {self.rank} "
                f"of size {self.size}"
            )
        given: Any = self.comm  # None by default
        if given is None:
            # A world of several ranks needs the communicator that joins them: the default
            # one-process LocalComm made the Trainer train on this rank's rows alone.
            self.comm = LocalComm() if self.size == 1 else _NoComm(self.rank, self.size)
        elif (self.comm.rank, self.comm.size) != (self.rank, self.size):
            raise ArgumentError(
                f"World: rank {self.rank} of size {self.size} does not match its comm's rank "
                f"{self.comm.rank} of size {self.comm.size}; pass World(engine, comm.rank, "
                "comm.size, comm=comm)"
            )

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that writes files and prints."""
        return self.rank == 0


class _NoComm(Communicator):
    """The communicator of a World of several ranks made without one: every collective
    says so (its rank and size still answer, so nothing takes it for a world of one)."""

    engine = "none"

    def __init__(self, rank: int, size: int) -> None:
        self.rank, self.size = rank, size

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise ArgumentError(
            f"World(rank={self.rank}, size={self.size}) was made without a communicator, so "
            "it cannot reach the other ranks: use the World distributed.init() returns, or "
            "pass comm= (e.g. World('threads', c.rank, c.size, comm=c))"
        )

    allreduce_sum = broadcast = bcast_obj = allgather_obj = barrier = _refuse

    def abort(self, code: int = 1) -> None:
        os._exit(code)


_current: World | None = None


def _int(env: Mapping[str, str], *names: str) -> int | None:
    for name in names:
        value = env.get(name, "")
        if value.strip():
            try:
                return int(value)
            except ValueError:
                raise ArgumentError(
                    f"environment variable {name}={value!r} is not an integer"
                ) from None
    return None


# The launchers, first match wins: (engine, size, rank, local rank, local size variables,
# whether the rank variable must be set too for the launcher to count as present).
_LAUNCHERS = (
    ("mpi", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE", False),
    ("mpi", "PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID", "MPI_LOCALNRANKS", False),
    ("torch", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", True),
    ("mpi", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE", True),
)  # fmt: skip


def detect(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What the launcher says about this process: ``{"engine", "rank", "size",
    "local_rank", "local_size"}``. ``mpiexec`` (MPICH's ``PMI_*``/``MPI_LOCAL*``, Open MPI's
    ``OMPI_COMM_WORLD_*``) gives engine ``"mpi"``; torchrun (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``) ``"torch"``; Slurm's ``srun`` (``SLURM_PROCID``, ``SLURM_NTASKS``)
    ``"mpi"``; nothing at all a world of one (engine ``"none"``)."""
    env = os.environ if env is None else env
    for engine, size_var, rank_var, local_rank_var, local_size_var, needs_rank in _LAUNCHERS:
        size = _int(env, size_var)
        rank = _int(env, rank_var)
        if size is None or (needs_rank and rank is None):
            continue
        local_rank = _int(env, local_rank_var)
        local_size = _int(env, local_size_var)
        if size_var == "SLURM_NTASKS":
            # SLURM_NTASKS_PER_NODE is set only with --ntasks-per-node (and may be the
            # allocation's, not this step's): the step's layout per node comes first. Without
            # it the local size was the whole world's: N nodes' ranks shared one node's cores.
            per_node = _slurm_local_size(env)
            if per_node is not None:
                local_size, local_size_var = per_node
        found = {
            "engine": engine,
            "rank": 0 if rank is None else rank,
            "size": size,
            "local_rank": 0 if local_rank is None else local_rank,
            "local_size": size if local_size is None else local_size,
        }
        _check_found(found, size_var, rank_var, local_rank_var, local_size_var)
        return found
    return {"engine": "none", "rank": 0, "size": 1, "local_rank": 0, "local_size": 1}


def _slurm_tasks_per_node(text: str, name: str) -> list[int]:
    """Slurm's tasks-per-node list, e.g. ``"2(x3),1"`` -> ``[2, 2, 2, 1]``."""
    counts: list[int] = []
    for item in text.split(","):
        item = item.strip()
        count, _, repeat = item.partition("(x")
        try:
            n = int(count)
            times = int(repeat[:-1]) if repeat else 1
            if (repeat and not repeat.endswith(")")) or n < 0 or times < 1:
                raise ValueError
        except ValueError:
            raise ArgumentError(
                f"environment variable {name}={text!r} is not a Slurm tasks-per-node list "
                "(counts separated by commas, a count repeated K times written N(xK), e.g. "
                "'2(x3),1'); launch with srun, or unset it"
            ) from None
        counts.extend([n] * times)
    return counts


def _slurm_local_size(env: Mapping[str, str]) -> tuple[int, str] | None:
    """``(ranks on this node, the variable that said so)`` from Slurm's per-node task
    list and ``SLURM_NODEID``; ``None`` where Slurm does not say."""
    node = _int(env, "SLURM_NODEID")
    for name in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        text = env.get(name, "").strip()
        if not text:
            continue
        counts = _slurm_tasks_per_node(text, name)
        if node is None:
            if len(counts) == 1:  # one node: no index needed
                return counts[0], name
            return None
        if not 0 <= node < len(counts):
            raise ArgumentError(
                f"environment variable SLURM_NODEID={node} is no node of {name}={text!r} "
                f"(nodes 0 to {len(counts) - 1}); launch with srun, or unset them"
            )
        return counts[node], f"{name}[SLURM_NODEID={node}]"
    return None


def _check_found(
    found: dict[str, Any],
    size_var: str,
    rank_var: str,
    local_rank_var: str,
    local_size_var: str,
) -> None:
    """A world the launcher's variables describe must be possible: ``size >= 1``,
    ``0 <= rank < size``, ``local_size >= 1``, ``0 <= local_rank < local_size``.
    (``WORLD_SIZE=0`` was read as a world of one, ``-2`` as a world the Trainer took for a
    single process, and ``RANK=4`` of 4 went on to the engine.) A local size above the
    world's is cut to it: a job step may inherit its allocation's ``SLURM_NTASKS_PER_NODE``."""
    found["local_size"] = min(found["local_size"], found["size"])
    size, rank = found["size"], found["rank"]
    local_size, local_rank = found["local_size"], found["local_rank"]
    problem = None
    if size < 1:
        problem = f"{size_var}={size} (the number of ranks) must be >= 1"
    elif not 0 <= rank < size:
        problem = f"{rank_var}={rank} must be a rank from 0 to {size - 1} ({size_var}={size})"
    elif local_size < 1:
        problem = f"{local_size_var}={local_size} (the ranks on this machine) must be >= 1"
    elif not 0 <= local_rank < local_size:
        problem = (
            f"{local_rank_var}={local_rank} must be a rank on this machine, from 0 to "
            f"{local_size - 1} (local size {local_size})"
        )
    if problem is not None:
        raise ArgumentError(
            f"the launcher's environment describes an impossible world: {problem}; launch "
            "with mpiexec, srun or torchrun (they set these variables), or unset them to run "
            "a single process"
        )


def _host_name(comm: MPIComm) -> str:
    try:
        return str(comm._MPI.Get_processor_name())
    except Exception:  # an MPI without it: the OS's name
        import socket

        return socket.gethostname()


def _local_from_hosts(hosts: list[str], rank: int) -> tuple[int, int]:
    """``(local rank, local size)`` of ``rank`` from every rank's host name."""
    mine = hosts[rank]
    return sum(1 for h in hosts[:rank] if h == mine), sum(1 for h in hosts if h == mine)


def limit_blas_threads(local_size: int) -> int:
    """Give each of the ``local_size`` ranks on this machine ``cores // local_size`` BLAS
    threads (at least one); returns the number. Sets ``OMP_NUM_THREADS`` and friends where
    unset (they count for libraries loaded later) and, when threadpoolctl is installed,
    limits the libraries already loaded."""
    cores = os.cpu_count() or 1
    threads = max(1, cores // max(1, local_size))
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        threadpool_limits(threads)
    return threads


def _install_abort_hook(comm: Communicator) -> None:
    """An uncaught exception on one rank prints its traceback and aborts the whole job:
    otherwise the other ranks wait forever in their next collective."""
    previous = sys.excepthook

    def hook(kind: Any, value: Any, tb: Any) -> None:
        try:
            # The exception in the first line: when the job is aborted, the launcher may stop
            # forwarding this rank's output before a long traceback gets through.
            sys.stderr.write(
                f"nnbackend.distributed: rank {comm.rank} raised {kind.__name__}: {value}; "
                "aborting the job\n"
            )
            sys.stderr.flush()
            traceback.print_exception(kind, value, tb)
            sys.stderr.flush()
            if comm.size > 1:
                time.sleep(0.2)  # let the launcher forward the traceback before the abort
        finally:
            if comm.size > 1:
                comm.abort(1)
            previous(kind, value, tb)

    sys.excepthook = hook


def _check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ArgumentError(
            f"seed must be a non-negative int (as for nnbackend.random.seed), got {seed!r}"
        )


def rank_seed(seed: int, rank: int) -> int:
    """A seed for rank ``rank``'s own random stream (dropout masks), derived from the shared
    ``seed``: different for every rank, the same on every run (SplitMix64 of both)."""
    _check_seed(seed)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ArgumentError(f"rank must be a non-negative int, got {rank!r}")
    z = (seed * 0x9E3779B97F4A7C15 + rank + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) >> 1


def init(
    engine: str | None = None,
    *,
    comm: Communicator | None = None,
    seed: int | None = None,
    abort_on_error: bool = True,
    limit_threads: bool = True,
    timeout: Any = FROM_ENV,
) -> World:
    """Join the job this process was launched in, and return its :class:`World`.

    Args:
        engine: ``"mpi"``, ``"torch"`` or ``"nccl"``; ``None`` picks it from the launcher's
            environment (see :func:`detect`), and a world of one process when nothing is
            set, so the same script runs alone.
        comm: a ready communicator (e.g. one of :func:`thread_group`'s); overrides
            ``engine``.
        seed: when given, reseeds :mod:`nnbackend.random`'s module-level generator with a
            stream of this rank's own (:func:`rank_seed`), so dropout masks differ between
            ranks and repeat between runs.
        abort_on_error: install a ``sys.excepthook`` that aborts every rank when one raises.
        limit_threads: limit BLAS threads to cores / ranks on this machine.
        timeout: seconds a collective of the ``"mpi"``, ``"torch"`` or ``"nccl"`` engine
            waits for the other ranks before it raises
            :class:`~nnbackend.errors.CollectiveError` (``0`` or ``None``: forever); left
            out, the environment variable ``NNBACKEND_COLLECTIVE_TIMEOUT`` (seconds), else
            30 minutes. (A ``comm`` passed in keeps its own.)
    """
    global _current
    if seed is not None:
        _check_seed(seed)  # before joining anything
    seconds = collective_timeout(timeout)  # a bad value or variable: before joining too
    if comm is not None and not all(
        hasattr(comm, name) for name in ("rank", "size", "engine", "allreduce_sum", "broadcast")
    ):
        raise ArgumentError(
            "comm must be a communicator (a nnbackend.distributed.Communicator, e.g. one of "
            f"thread_group(n)'s), got {type(comm).__name__}: {comm!r}"
        )
    found = detect()
    if comm is None:
        chosen = engine if engine is not None else found["engine"]
        if chosen not in (*ENGINES, "none"):
            raise ArgumentError(
                f"engine must be one of {', '.join(ENGINES)} (or None to detect it), got {engine!r}"
            )
        if chosen == "none":
            comm = LocalComm()
        elif chosen == "mpi":
            comm = MPIComm(timeout=seconds)
        else:
            from nnbackend.backends.collectives import torch_communicator

            comm = torch_communicator(  # type: ignore[assignment]
                chosen, found, lambda a: backend_for(a)[1], seconds
            )
    else:
        chosen = comm.engine
    assert comm is not None
    if abort_on_error and comm.size > 1 and chosen != "threads":
        # Before init's own collective: a rank that never comes makes it time out too.
        _install_abort_hook(comm)
    if isinstance(comm, MPIComm) and comm.size > 1:
        # MPI knows which ranks share this machine, whatever the launcher exported.
        local_rank, local_size = _local_from_hosts(comm.allgather_obj(_host_name(comm)), comm.rank)
    else:
        local_size = found["local_size"] if found["size"] == comm.size else 1
        local_rank = found["local_rank"] if found["size"] == comm.size else 0
    device = f"cuda:{local_rank}" if chosen in ("nccl",) else None
    w = World(chosen, comm.rank, comm.size, local_rank, local_size, device, comm)
    if limit_threads and local_size > 1:
        limit_blas_threads(local_size)
    if seed is not None:
        from nnbackend import random as nb_random

        nb_random.seed(rank_seed(seed, w.rank))
    _current = w
    return w


def world() -> World:
    """The :class:`World` set by :func:`init` (a world of one process before)."""
    return _current if _current is not None else World()


def is_main() -> bool:
    """True on rank 0 (and in a world of one): the rank that writes files and prints."""
    return _current is None or _current.rank == 0


def barrier() -> None:
    """Wait for every rank (nothing in a world of one)."""
    if _current is not None:
        _current.comm.barrier()


def _reset() -> None:
    """Forget the world (tests)."""
    global _current
    _current = None
