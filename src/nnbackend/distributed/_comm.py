"""Communicators: the collectives data-parallel training needs, over an existing engine.

Every communicator offers the same few operations on backend arrays (any registered backend:
the MPI one moves them through host memory) and on small Python objects:

* ``allreduce_sum(a)``: the element-wise sum of a 1-D array over all ranks, on every rank;
* ``broadcast(a, root)``: rank ``root``'s array on every rank;
* ``bcast_obj(obj, root)``, ``barrier()``, ``abort(code)``.

:class:`LocalComm` is the world of one process; :func:`thread_group` makes ``size``
communicators joined in memory, one per thread (the in-process fake the unit tests use);
:class:`MPIComm` runs on mpi4py.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from nnbackend.errors import BackendUnavailableError
from nnbackend.namespace import backend_for

__all__ = ["Communicator", "LocalComm", "MPIComm", "ThreadComm", "thread_group"]

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
        return a

    def broadcast(self, a: Any, root: int = 0) -> Any:
        return a

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        return obj

    def barrier(self) -> None:
        pass


class _Shared:
    def __init__(self, size: int, timeout: float) -> None:
        self.size = size
        self.slots: list[Any] = [None] * size
        self.barrier = threading.Barrier(size, timeout=timeout)


class ThreadComm(Communicator):
    """One rank of an in-process group (see :func:`thread_group`). The sum adds the ranks'
    arrays in rank order, so every rank gets bitwise the same result."""

    engine = "threads"

    def __init__(self, shared: _Shared, rank: int) -> None:
        self._shared = shared
        self.rank = rank
        self.size = shared.size

    def _exchange(self, value: Any) -> list[Any]:
        s = self._shared
        s.slots[self.rank] = value
        s.barrier.wait()
        values = list(s.slots)
        s.barrier.wait()  # nobody overwrites a slot before every rank has read them
        return values

    def allreduce_sum(self, a: Any) -> Any:
        values = self._exchange(a)
        total = values[0]
        for v in values[1:]:
            total = total + v
        return total

    def broadcast(self, a: Any, root: int = 0) -> Any:
        value = self._exchange(a)[root]
        # A copy of its own for every rank: optimizers update parameters in place.
        return backend_for(value)[0].asarray(value, copy=True)

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        return self._exchange(obj)[root]

    def barrier(self) -> None:
        self._shared.barrier.wait()

    def abort(self, code: int = 1) -> None:
        self._shared.barrier.abort()  # the other ranks' waits raise BrokenBarrierError


def thread_group(size: int, *, timeout: float = 30.0) -> list[ThreadComm]:
    """``size`` communicators joined in memory, one per thread (rank ``i`` is element ``i``).
    A rank that waits longer than ``timeout`` seconds raises ``threading.BrokenBarrierError``
    instead of hanging."""
    shared = _Shared(size, timeout)
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

    def allreduce_sum(self, a: Any) -> Any:
        record, buf = self._host_copy(a)
        self.comm.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
        return self._back(record, a, buf)

    def broadcast(self, a: Any, root: int = 0) -> Any:
        record, buf = self._host_copy(a)
        self.comm.Bcast(buf, root=root)
        return self._back(record, a, buf)

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        return self.comm.bcast(obj, root=root)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        self.comm.Abort(code)
