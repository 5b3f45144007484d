"""Collectives on torch.distributed (gloo on the CPU, NCCL on CUDA) for
:mod:`nnbackend.distributed` (engines ``"torch"`` and ``"nccl"``).

Lives among the adapters because it imports torch. Arrays of the torch backend are reduced as
they are; CuPy arrays go to torch and back through DLPack without a copy (NCCL); arrays of
any other backend travel through a host NumPy buffer (gloo).
"""

from __future__ import annotations

import atexit
import math
import os
from typing import Any

from nnbackend.errors import (
    ArgumentError,
    BackendUnavailableError,
    CollectiveError,
    DtypeError,
    ShapeError,
)

TORCH_HINT = "pip install 'nnbackend[distributed-torch]' (torch with torch.distributed)"

TIMEOUT_ENV = "NNBACKEND_COLLECTIVE_TIMEOUT"
DEFAULT_TIMEOUT = 1800.0  # seconds: a first step (compilation, data loading) may take long


class _FromEnv:
    """The default of every ``timeout=`` keyword: ``NNBACKEND_COLLECTIVE_TIMEOUT``, else
    :data:`DEFAULT_TIMEOUT`."""

    def __repr__(self) -> str:
        return f"<{TIMEOUT_ENV} or {DEFAULT_TIMEOUT:g} s>"


FROM_ENV: Any = _FromEnv()


def collective_timeout(timeout: Any = FROM_ENV, env: Any = None) -> float | None:
    """The seconds a collective may wait for the other ranks before it raises
    :class:`~nnbackend.errors.CollectiveError`; ``None`` waits forever.

    ``timeout`` is a number of seconds (``0`` or ``None``: forever); left out, the
    environment variable ``NNBACKEND_COLLECTIVE_TIMEOUT`` (seconds; ``0``, ``none`` or
    ``inf``: forever) decides, else :data:`DEFAULT_TIMEOUT` (30 minutes)."""
    if timeout is FROM_ENV:
        environ = os.environ if env is None else env
        text = str(environ.get(TIMEOUT_ENV, "")).strip()
        if not text:
            return DEFAULT_TIMEOUT
        if text.lower() in ("none", "inf", "infinity", "forever"):
            return None
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not value >= 0:  # NaN too
            raise ArgumentError(
                f"environment variable {TIMEOUT_ENV}={text!r} must be a number of seconds >= 0 "
                "(how long a collective waits for the other ranks; 0 or 'none': forever), "
                f"e.g. {TIMEOUT_ENV}=600; unset it for the default {DEFAULT_TIMEOUT:g} s"
            )
        return None if value == 0 or math.isinf(value) else value
    if timeout is None:
        return None
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or math.isnan(timeout)
        or timeout < 0
    ):
        raise ArgumentError(
            f"timeout must be a number of seconds >= 0 (how long a collective waits for the "
            f"other ranks; 0 or None: forever), got {timeout!r}"
        )
    return None if timeout == 0 or math.isinf(timeout) else float(timeout)


def timeout_hint(timeout: float | None) -> str:
    """The end of a timeout's message: what to check, and how to wait longer."""
    if timeout is None:
        now = "no timeout"
    elif math.isnan(timeout):  # a process group the script made: its own timeout
        now = "the timeout of the process group the script made itself"
    else:
        now = f"the timeout is {timeout:g} s"
    return (
        "check the other ranks' output and logs (one of them failed, hangs, stopped early or "
        f"runs other collectives); if they are only slow, wait longer ({now}): "
        f"distributed.init(timeout=seconds) or {TIMEOUT_ENV}=seconds (0: forever). This "
        "job cannot continue: let the error end it (an uncaught error aborts every rank)"
    )


def _dist() -> Any:
    try:
        import torch
        import torch.distributed as dist
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the torch engine needs torch, which is not installed: {TORCH_HINT}"
        ) from exc
    if not dist.is_available():
        raise BackendUnavailableError(
            f"this torch build has no torch.distributed ({torch.__version__}): {TORCH_HINT}"
        )
    return dist


def array_meta(a: Any) -> tuple[tuple[int, ...], str]:
    """``(shape, dtype name)`` of an array of any backend: what must agree on every rank."""
    # "float64" whatever the library ("torch.float64", "array_api_strict.float64").
    return tuple(int(d) for d in a.shape), str(a.dtype).rsplit(".", 1)[-1]


def check_root(root: Any, size: int) -> None:
    """``root`` must be a rank: an int from 0 to ``size - 1`` (-1 is no rank from the end)."""
    if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < size:
        raise ArgumentError(
            f"root must be a rank, an int from 0 to {size - 1} (the world has {size} ranks), "
            f"got {root!r}"
        )


def check_same_arrays(metas: list[tuple[tuple[int, ...], str]], what: str) -> None:
    """Raise on every rank (each passes the same ``metas``, one ``array_meta`` per rank) when
    the ranks' arrays differ in shape or dtype: the collective would fail on one side only
    (MPI), abort the process (gloo), or mix unrelated elements."""
    shapes = {m[0] for m in metas}
    dtypes = {m[1] for m in metas}
    if len(shapes) == 1 and len(dtypes) == 1:
        return
    listed = ", ".join(f"rank {r}: {dt}{shape}" for r, (shape, dt) in enumerate(metas))
    kind, error = ("dtypes", DtypeError) if len(shapes) == 1 else ("shapes", ShapeError)
    raise error(
        f"{what}: the ranks passed arrays of different {kind} ({listed}); every rank must "
        "pass the same shape and dtype: build the model the same way on every rank (same "
        "sizes, same dtype setting) and call the same collectives in the same order"
    )


def is_torch_tensor(a: Any) -> bool:
    return type(a).__module__.startswith("torch")


def is_cupy_array(a: Any) -> bool:
    return type(a).__module__.startswith("cupy")


def to_wire(a: Any, device: Any, record_of: Any) -> tuple[Any, str]:
    """``(tensor, kind)``: ``a`` as a contiguous torch tensor that may be written to;
    ``record_of(array)`` gives an array's backend record (its ``to_host``/``from_host``)."""
    import torch

    if is_torch_tensor(a):
        return a.detach().clone().contiguous(), "torch"
    if is_cupy_array(a):
        return torch.from_dlpack(a.copy()), "cupy"
    host = record_of(a).to_host(a).copy()
    t = torch.from_numpy(host)
    return (t if device is None else t.to(device)), "host"


def from_wire(t: Any, kind: str, like: Any, record_of: Any) -> Any:
    """The reduced tensor ``t`` back as an array of ``like``'s backend and device."""
    if kind == "torch":
        return t
    if kind == "cupy":
        import cupy

        return cupy.from_dlpack(t)
    return record_of(like).from_host(t.cpu().numpy(), getattr(like, "device", None))


class TorchComm:
    """:class:`nnbackend.distributed.Communicator` over an initialised torch.distributed
    process group (``backend="gloo"`` or ``"nccl"``)."""

    def __init__(
        self,
        engine: str,
        rank: int,
        size: int,
        device: Any,
        record_of: Any,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self.engine = engine
        # What the process group was made with (None: forever; NaN: unknown, the script's).
        self.timeout = timeout
        self._record_of = record_of
        self.rank = rank
        self.size = size
        self.device = device  # where host arrays go for the collective (cuda for NCCL)
        self._dist = _dist()

    def _run(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        """``call(*args, **kwargs)``; torch.distributed's RuntimeError (a timeout, a rank that
        went away, a closed connection) as a CollectiveError naming the collective."""
        try:
            return call(*args, **kwargs)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "timed out" in str(exc).lower() or "timeout" in str(exc).lower():
                raise CollectiveError(
                    f"{what} failed on rank {self.rank} of {self.size} ({self.engine}): it "
                    f"timed out, the other ranks did not join it ({first}); "
                    f"{timeout_hint(self.timeout)}"
                ) from exc
            raise CollectiveError(
                f"{what} failed on rank {self.rank} of {self.size} ({self.engine}): {first}. "
                "Another rank may have failed or stopped early; its own error says why"
            ) from exc

    def allreduce_sum(self, a: Any) -> Any:
        t, kind = to_wire(a, self.device, self._record_of)
        self._run("allreduce_sum", self._dist.all_reduce, t, op=self._dist.ReduceOp.SUM)
        return from_wire(t, kind, a, self._record_of)

    def broadcast(self, a: Any, root: int = 0) -> Any:
        check_root(root, self.size)
        # Shapes and dtypes first: gloo aborted the process (SIGABRT) on a mismatch.
        check_same_arrays(self.allgather_obj(array_meta(a)), "broadcast")
        t, kind = to_wire(a, self.device, self._record_of)
        self._run("broadcast", self._dist.broadcast, t, src=root)
        return from_wire(t, kind, a, self._record_of)

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        check_root(root, self.size)
        box = [obj]
        self._run("bcast_obj", self._dist.broadcast_object_list, box, src=root)
        return box[0]

    def allgather_obj(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.size
        self._run("allgather_obj", self._dist.all_gather_object, out, obj)
        return out

    def barrier(self) -> None:
        self._run("barrier", self._dist.barrier)

    def abort(self, code: int = 1) -> None:
        os._exit(code)  # torchrun / nnbackend launch end the other ranks


def _destroy(dist: Any) -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def torch_communicator(
    engine: str, found: dict[str, Any], record_of: Any, timeout: Any = FROM_ENV
) -> TorchComm:
    """Initialise torch.distributed from the launcher's environment (torchrun sets
    ``MASTER_ADDR``/``MASTER_PORT``; under mpiexec or srun set them yourself) and return its
    communicator. ``engine="torch"`` uses gloo, ``"nccl"`` NCCL on ``cuda:<local_rank>``.
    ``timeout`` (see :func:`collective_timeout`) is the process group's: a collective that
    waits longer raises :class:`~nnbackend.errors.CollectiveError`. (A process group the
    script initialised itself keeps its own timeout.)"""
    seconds = collective_timeout(timeout)
    dist = _dist()
    if engine not in ("torch", "nccl"):
        raise ArgumentError(f"torch_communicator: engine must be 'torch' or 'nccl', got {engine}")
    rank, size = int(found["rank"]), int(found["size"])
    if size > 1 and not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
        raise ArgumentError(
            "the torch engine needs MASTER_ADDR and MASTER_PORT (torchrun sets them; under "
            "mpiexec or srun export them, e.g. MASTER_ADDR=<first node> MASTER_PORT=29500)"
        )
    device = None
    if engine == "nccl":
        import torch

        local_rank = int(found["local_rank"])
        try:
            torch.cuda.set_device(local_rank)
        except (RuntimeError, AttributeError, AssertionError) as exc:
            # No CUDA build: AttributeError (no _cuda_setDevice) or AssertionError; no such
            # device: RuntimeError (invalid device ordinal).
            if not torch.cuda.is_available():
                why = "torch sees no CUDA GPU here (no CUDA build, driver or device)"
            else:
                why = (
                    f"local rank {local_rank} has no GPU of its own "
                    f"({torch.cuda.device_count()} visible; one rank per GPU)"
                )
            raise BackendUnavailableError(
                f"the nccl engine needs a CUDA GPU per rank, and {why}: start at most one rank "
                f"per GPU, or use engine 'torch' (gloo) or 'mpi' on CPUs ({exc})"
            ) from exc
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        import datetime

        backend = "nccl" if engine == "nccl" else "gloo"
        # torch has no "forever": a year stands for it (gloo counts milliseconds in 64 bits).
        limit = datetime.timedelta(seconds=365 * 86400.0 if seconds is None else seconds)
        if size == 1:  # a world of one needs no rendezvous: an in-memory store
            dist.init_process_group(
                backend, store=dist.HashStore(), rank=0, world_size=1, timeout=limit
            )
        else:
            dist.init_process_group(
                backend, init_method="env://", rank=rank, world_size=size, timeout=limit
            )
        # A group left alive at interpreter exit made gloo abort (SIGABRT) after a clean run.
        atexit.register(_destroy, dist)
    else:
        seconds = math.nan  # the script's own group: its timeout is unknown here
    return TorchComm(engine, dist.get_rank(), dist.get_world_size(), device, record_of, seconds)
