"""Communicators: the collectives data-parallel training needs, over an existing engine.

Every communicator offers the same few operations on backend arrays (any registered backend:
the MPI one moves them through host memory) and on small Python objects:

* ``allreduce_sum(a)``: the element-wise sum of a 1-D array over all ranks, on every rank;
* ``broadcast(a, root)``: rank ``root``'s array on every rank;
* ``bcast_obj(obj, root)``, ``allgather_obj(obj)``, ``barrier()``, ``abort(code)``.

A broadcast checks first that every rank passes an array of the same shape and dtype
(:class:`~nnbackend.errors.ShapeError` / :class:`~nnbackend.errors.DtypeError` on every rank
otherwise: MPI and gloo failed on one side only, gloo by aborting the process); a root out of
range is an :class:`~nnbackend.errors.ArgumentError`. ``allreduce_sum`` runs every step, so it
checks nothing it would need a second collective for (the
:class:`~nnbackend.distributed.GradientReducer` checks its parameters once instead).

:class:`LocalComm` is the world of one process; :func:`thread_group` makes ``size``
communicators joined in memory, one per thread (the in-process fake the unit tests use);
:class:`MPIComm` runs on mpi4py.
"""

from __future__ import annotations

import copy
import math
import os
import threading
from collections.abc import Callable
from typing import Any

from nnbackend.backends.collectives import array_meta, check_root, check_same_arrays
from nnbackend.errors import (
    ArgumentError,
    BackendUnavailableError,
    CollectiveError,
)
from nnbackend.namespace import backend_for

__all__ = [
    "CollectiveError",
    "Communicator",
    "LocalComm",
    "MPIComm",
    "ThreadComm",
    "thread_group",
]


MPI_HINT = "pip install 'nnbackend[mpi]' (mpi4py and the MPICH wheel, which brings mpiexec)"


class Communicator:
    """The interface every engine implements (see the module docstring)."""

    engine = "none"
    rank = 0
    size = 1

    def allreduce_sum(self, a: Any) -> Any:
        """The element-wise sum of the 1-D array ``a`` over all ranks (a new array)."""
        raise NotImplementedError

    def broadcast(self, a: Any, root: int = 0) -> Any:
        """Rank ``root``'s ``a`` on every rank (same shape and dtype everywhere)."""
        raise NotImplementedError

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        """Rank ``root``'s Python object on every rank."""
        raise NotImplementedError

    def allgather_obj(self, obj: Any) -> list[Any]:
        """Every rank's Python object, by rank, on every rank. (This default broadcasts
        from each rank in turn; the engines override it with one collective.)"""
        return [self.bcast_obj(obj, r) for r in range(self.size)]

    def barrier(self) -> None:
        """Wait until every rank got here."""
        raise NotImplementedError

    def abort(self, code: int = 1) -> None:
        """End every rank of the job now (used by the abort-on-exception hook)."""
        os._exit(code)


class LocalComm(Communicator):
    """A world of one process: every collective is the identity."""

    engine = "none"

    def allreduce_sum(self, a: Any) -> Any:
        # A new array, as on N ranks: changing the sum in place must not change ``a``.
        return backend_for(a)[0].asarray(a, copy=True)

    def broadcast(self, a: Any, root: int = 0) -> Any:
        check_root(root, 1)
        return backend_for(a)[0].asarray(a, copy=True)

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        check_root(root, 1)
        return obj

    def allgather_obj(self, obj: Any) -> list[Any]:
        return [obj]

    def barrier(self) -> None:
        pass


class _Barrier:
    """``threading.Barrier`` less one race: there, a rank that aborted right after a wait had
    released everyone broke that finished wait for the ranks not yet woken up. Here a wait
    whose every rank arrived succeeds, whatever happens afterwards."""

    def __init__(self, parties: int, timeout: float | None) -> None:
        self._cond = threading.Condition()
        self._parties = parties
        self._timeout = timeout
        self._count = 0
        self._generation = 0
        self.broken = False

    def wait(self) -> None:
        with self._cond:
            if self.broken:
                raise threading.BrokenBarrierError
            generation = self._generation
            self._count += 1
            if self._count == self._parties:
                self._count = 0
                self._generation += 1
                self._cond.notify_all()
                return
            done = self._cond.wait_for(
                lambda: self._generation != generation or self.broken, self._timeout
            )
            if self._generation != generation:
                return
            if not done:  # timed out: nobody else may wait for it now
                self.broken = True
                self._cond.notify_all()
            raise threading.BrokenBarrierError

    def abort(self) -> None:
        with self._cond:
            self.broken = True
            self._cond.notify_all()


class _Shared:
    def __init__(self, size: int, timeout: float | None) -> None:
        self.size = size
        self.timeout = timeout
        self.slots: list[Any] = [None] * size
        self.barrier = _Barrier(size, timeout)
        self.aborted_by: int | None = None  # the rank whose abort() broke the group


class ThreadComm(Communicator):
    """One rank of an in-process group (see :func:`thread_group`). The sum adds the ranks'
    arrays in rank order, so every rank gets bitwise the same result."""

    engine = "threads"

    def __init__(self, shared: _Shared, rank: int) -> None:
        self._shared = shared
        self.rank = rank
        self.size = shared.size

    def _wait(self, what: str) -> None:
        s = self._shared
        try:
            s.barrier.wait()
        except threading.BrokenBarrierError:
            if s.aborted_by is not None:
                why = (
                    f"rank {s.aborted_by} aborted the group (it raised, or called abort())"
                    if s.aborted_by != self.rank
                    else "this rank aborted the group before"
                )
            else:
                why = (
                    f"it waited {s.timeout:g} s for the other ranks and timed out: a rank "
                    "failed, stopped early or is running other collectives"
                )
            raise CollectiveError(
                f"{what} on rank {self.rank} of {self.size} could not complete: {why}; "
                "fix the failing rank (its own error says why), or give thread_group(...) "
                "a longer timeout"
            ) from None

    def _exchange(self, value: Any, what: str, read: Callable[[list[Any]], Any]) -> Any:
        """Put ``value`` in this rank's slot; ``read(every rank's value)`` once all are in,
        before any rank leaves (so before any rank can change its value in place)."""
        s = self._shared
        s.slots[self.rank] = value
        self._wait(what)
        try:
            out = read(list(s.slots))
        finally:
            self._wait(what)  # nobody changes or overwrites a slot before every rank read
        return out

    def allreduce_sum(self, a: Any) -> Any:
        def total(values: list[Any]) -> Any:
            # Every rank sees every array here, so the check costs no collective: NumPy
            # would broadcast a (1,) array against a (3,) one without a word.
            check_same_arrays([array_meta(v) for v in values], "allreduce_sum")
            out = values[0]
            for v in values[1:]:
                out = out + v
            # A new array in a group of one too.
            return backend_for(a)[0].asarray(a, copy=True) if out is a else out

        return self._exchange(a, "allreduce_sum", total)

    def broadcast(self, a: Any, root: int = 0) -> Any:
        check_root(root, self.size)

        def pick(values: list[Any]) -> Any:
            check_same_arrays([array_meta(v) for v in values], "broadcast")
            value = values[root]
            # A copy of its own for every rank: optimizers update parameters in place.
            return backend_for(value)[0].asarray(value, copy=True)

        return self._exchange(a, "broadcast", pick)

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        check_root(root, self.size)
        # A copy of its own for every other rank, as MPI and torch (which pickle) give.
        mine = self.rank == root
        return self._exchange(
            obj, "bcast_obj", lambda values: values[root] if mine else copy.deepcopy(values[root])
        )

    def allgather_obj(self, obj: Any) -> list[Any]:
        return self._exchange(
            obj,
            "allgather_obj",
            lambda values: [
                v if r == self.rank else copy.deepcopy(v) for r, v in enumerate(values)
            ],
        )

    def barrier(self) -> None:
        self._wait("barrier")

    def abort(self, code: int = 1) -> None:
        s = self._shared
        if s.aborted_by is None:
            s.aborted_by = self.rank
        s.barrier.abort()  # the other ranks' waits raise CollectiveError


def thread_group(size: int, *, timeout: float | None = 30.0) -> list[ThreadComm]:
    """``size`` communicators joined in memory, one per thread (rank ``i`` is element ``i``).
    A rank that waits longer than ``timeout`` seconds (``None``: forever) raises
    :class:`CollectiveError` instead of hanging, and so does every rank waiting when one
    calls ``abort()``."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ArgumentError(f"thread_group: size must be an int >= 1 (ranks), got {size!r}")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ArgumentError(
            f"thread_group: timeout must be a number of seconds > 0 (or None to wait "
            f"forever), got {timeout!r}"
        )
    shared = _Shared(size, None if timeout is None else float(timeout))
    return [ThreadComm(shared, r) for r in range(size)]


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the MPI engine needs mpi4py, which is not installed: {MPI_HINT}"
        ) from exc
    return MPI


class MPIComm(Communicator):
    """Collectives over mpi4py (``MPI.COMM_WORLD`` unless ``comm`` is given). Arrays travel
    through host memory: each buffer is copied to a NumPy array, reduced, and moved back to
    its backend and device."""

    engine = "mpi"

    def __init__(self, comm: Any = None) -> None:
        mpi = _mpi()
        self._MPI = mpi
        self.comm = mpi.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()

    @staticmethod
    def _host_copy(a: Any) -> tuple[Any, Any]:
        record = backend_for(a)[1]
        host = record.to_host(a)
        return record, host.copy()  # a fresh, writeable, contiguous buffer

    @staticmethod
    def _back(record: Any, like: Any, host: Any) -> Any:
        return record.from_host(host, getattr(like, "device", None))

    def _failed(self, what: str, a: Any, exc: Exception) -> CollectiveError:
        shape, dtype = array_meta(a)
        first = " ".join(str(exc).split())[:300]
        return CollectiveError(
            f"{what} of a {dtype} array of shape {shape} failed on rank {self.rank} of "
            f"{self.size}: the ranks passed arrays of different sizes or dtypes, or called "
            f"different collectives (one stopped early?); MPI said: {first}"
        )

    def allreduce_sum(self, a: Any) -> Any:
        record, buf = self._host_copy(a)
        try:
            self.comm.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
        except self._MPI.Exception as exc:
            raise self._failed("allreduce_sum", a, exc) from exc
        return self._back(record, a, buf)

    def broadcast(self, a: Any, root: int = 0) -> Any:
        check_root(root, self.size)
        check_same_arrays(self.allgather_obj(array_meta(a)), "broadcast")
        record, buf = self._host_copy(a)
        try:
            self.comm.Bcast(buf, root=root)
        except self._MPI.Exception as exc:
            raise self._failed("broadcast", a, exc) from exc
        return self._back(record, a, buf)

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        check_root(root, self.size)
        return self.comm.bcast(obj, root=root)

    def allgather_obj(self, obj: Any) -> list[Any]:
        return list(self.comm.allgather(obj))

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        self.comm.Abort(code)
