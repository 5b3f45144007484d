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

import atexit
import copy
import os
import pickle
import threading
import time
from array import array
from collections.abc import Callable
from typing import Any

from nnbackend.backends.collectives import (
    FROM_ENV,
    array_meta,
    check_root,
    check_same_arrays,
    collective_timeout,
    timeout_hint,
)
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
    A rank that waits longer than ``timeout`` seconds (``0`` or ``None``: forever, as for
    :class:`MPIComm` and ``NNBACKEND_COLLECTIVE_TIMEOUT``) raises :class:`CollectiveError`
    instead of hanging, and so does every rank waiting when one calls ``abort()``."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ArgumentError(f"thread_group: size must be an int >= 1 (ranks), got {size!r}")
    try:
        limit = collective_timeout(timeout)
    except ArgumentError as exc:
        raise ArgumentError(f"thread_group: {exc}") from None
    # A wait past threading.TIMEOUT_MAX (about 292 years) raised OverflowError: it is forever.
    if limit is not None and limit > threading.TIMEOUT_MAX:
        limit = None
    shared = _Shared(size, limit)
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
    its backend and device.

    Every collective is MPI's nonblocking one (``Iallreduce``, ``Ibcast``, ``Ibarrier``,
    ``Iallgather``), completed by polling: a rank whose partners never come (one failed,
    hangs, or runs other collectives) raises :class:`CollectiveError` after ``timeout``
    seconds instead of waiting forever. ``timeout``: seconds, ``0`` or ``None`` for no limit;
    left out, the ``NNBACKEND_COLLECTIVE_TIMEOUT`` environment variable, else 30 minutes.
    MPI cannot cancel a collective, so after a timeout this communicator refuses every
    further call: end the job (an uncaught error does, through ``init``'s abort hook or
    ``python -m mpi4py``).

    The wait polls ``Test()`` without pause for its first 100 ms (MPICH moves a large
    message on only while it is polled: sleeping after 1 ms made a 3-million-float
    all-reduce 11% slower; a collective whose ranks are in step costs what the blocking call
    costs), then sleeps between polls, 5% of the time waited so far (at most 10 ms): a long
    wait for a late rank takes a few percent of a core, where MPI's blocking calls take all
    of it.
    """

    engine = "mpi"

    def __init__(self, comm: Any = None, *, timeout: Any = FROM_ENV) -> None:
        self.timeout = collective_timeout(timeout)
        mpi = _mpi()
        self._MPI = mpi
        self.comm = mpi.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        # Set by the first timeout: the reason every later collective is refused.
        self._broken: str | None = None
        # Requests (and their buffers) of collectives that timed out: MPI may still write
        # into these buffers, so they must never be freed.
        self._stuck: list[Any] = []

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

    def _start(self, what: str) -> None:
        if self._broken is not None:
            raise CollectiveError(
                f"{what} on rank {self.rank} of {self.size} refused: {self._broken}; MPI "
                "cannot cancel a collective, so this communicator cannot be used any more: "
                "end the job and start it again"
            )

    def _wait(self, request: Any, what: str, *keep: Any) -> None:
        """Poll ``request`` until it completes; past the timeout, raise (and keep the
        request and the buffers ``keep`` alive for good)."""
        if request.Test():  # the fast collective: no clock, no sleep
            return
        timeout = self.timeout
        test, clock, sleep = request.Test, time.monotonic, time.sleep
        start = clock()
        while True:
            for _ in range(_POLLS):
                if test():
                    return
            waited = clock() - start
            if timeout is not None and waited >= timeout:
                break
            if waited >= _SPIN_S:
                pause = min(_MAX_SLEEP_S, waited * _SLEEP_FRACTION)
                if timeout is not None:
                    pause = min(pause, timeout - waited)
                sleep(pause)
        self._stuck.append((request, keep))
        if self._broken is None:
            # Leaving normally now would leave the job waiting for the rank that never
            # came (mpiexec waits for every rank): end every rank at exit instead.
            atexit.register(self._abort_at_exit)
        self._broken = f"an earlier {what} timed out after {timeout:g} s"
        raise CollectiveError(
            f"{what} on rank {self.rank} of {self.size} (mpi) timed out after {waited:.3g} s: "
            f"the other ranks did not join it; {timeout_hint(timeout)}"
        )

    def allreduce_sum(self, a: Any) -> Any:
        self._start("allreduce_sum")
        record, buf = self._host_copy(a)
        try:
            request = self.comm.Iallreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
            self._wait(request, "allreduce_sum", buf)
        except self._MPI.Exception as exc:
            raise self._failed("allreduce_sum", a, exc) from exc
        return self._back(record, a, buf)

    def broadcast(self, a: Any, root: int = 0) -> Any:
        check_root(root, self.size)
        check_same_arrays(self.allgather_obj(array_meta(a)), "broadcast")
        record, buf = self._host_copy(a)
        try:
            self._wait(self.comm.Ibcast(buf, root=root), "broadcast", buf)
        except self._MPI.Exception as exc:
            raise self._failed("broadcast", a, exc) from exc
        return self._back(record, a, buf)

    @staticmethod
    def _pickle(obj: Any) -> tuple[bytes | None, str]:
        try:
            return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), ""
        except Exception as exc:  # any error of a __reduce__ of the user's
            return None, f"{type(exc).__name__}: {exc}"

    def _unpicklable(self, what: str, obj: Any, why: str) -> ArgumentError:
        return ArgumentError(
            f"{what} on rank {self.rank}: the object ({type(obj).__name__}) cannot be pickled "
            f"to travel to the other ranks ({why}); pass plain Python data (numbers, strings, "
            "lists, dicts, NumPy arrays)"
        )

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        check_root(root, self.size)
        self._start("bcast_obj")
        mpi = self._MPI
        data, why = self._pickle(obj) if self.rank == root else (b"", "")
        # The length first (-1: the root could not pickle it, so every rank raises).
        length = array("q", [-1 if data is None else len(data)])
        self._wait(self.comm.Ibcast([length, mpi.INT64_T], root=root), "bcast_obj", length)
        if length[0] < 0:
            if self.rank == root:
                raise self._unpicklable("bcast_obj", obj, why)
            raise CollectiveError(
                f"bcast_obj on rank {self.rank}: rank {root} could not send its object (it "
                f"cannot be pickled; rank {root}'s own error says why)"
            )
        buf = bytearray(data) if self.rank == root and data else bytearray(length[0])
        if length[0]:
            self._wait(self.comm.Ibcast([buf, mpi.BYTE], root=root), "bcast_obj", buf)
        return pickle.loads(buf)  # a copy on the root too, as mpi4py's bcast gave

    def allgather_obj(self, obj: Any) -> list[Any]:
        self._start("allgather_obj")
        mpi = self._MPI
        data, why = self._pickle(obj)
        mine = array("q", [-1 if data is None else len(data)])
        lengths = array("q", [0] * self.size)
        request = self.comm.Iallgather([mine, mpi.INT64_T], [lengths, mpi.INT64_T])
        self._wait(request, "allgather_obj", mine, lengths)
        failed = [r for r, n in enumerate(lengths) if n < 0]
        if failed:
            if data is None:
                raise self._unpicklable("allgather_obj", obj, why)
            raise CollectiveError(
                f"allgather_obj on rank {self.rank}: rank(s) {failed} could not send their "
                "object (it cannot be pickled; their own error says why)"
            )
        assert data is not None
        counts = list(lengths)
        displacements = [sum(counts[:r]) for r in range(self.size)]
        out = bytearray(sum(counts))
        send = bytearray(data)
        request = self.comm.Iallgatherv([send, mpi.BYTE], [out, (counts, displacements), mpi.BYTE])
        self._wait(request, "allgather_obj", send, out)
        view = memoryview(out)
        return [pickle.loads(view[d : d + n]) for n, d in zip(counts, displacements, strict=True)]

    def barrier(self) -> None:
        self._start("barrier")
        self._wait(self.comm.Ibarrier(), "barrier")

    def abort(self, code: int = 1) -> None:
        self.comm.Abort(code)

    def _abort_at_exit(self) -> None:
        import sys

        sys.stderr.write(
            f"nnbackend.distributed: rank {self.rank} exits after {self._broken}: aborting "
            "the job (the ranks that did not come would keep it waiting)\n"
        )
        sys.stderr.flush()
        self.comm.Abort(1)


# MPIComm's wait: Test() this many times between looks at the clock; no sleep for the first
# _SPIN_S seconds, then sleeps of _SLEEP_FRACTION of the time waited, at most _MAX_SLEEP_S.
_POLLS = 8
_SPIN_S = 0.1
_SLEEP_FRACTION = 0.05
_MAX_SLEEP_S = 0.01
