"""The gradient all-reduce that runs right after ``backward`` (before clipping, loss
scaling and the optimizer), so that N ranks take exactly the step one process takes on the
global batch."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from typing import Any

from nnbackend.distributed._comm import Communicator
from nnbackend.errors import ArgumentError, DtypeError, ShapeError
from nnbackend.namespace import backend_for

__all__ = ["GradientReducer"]


class GradientReducer:
    """Sums the gradients of ``params`` over the ranks of ``comm``, weighted by each rank's
    share of the global batch.

    Each rank's loss is the mean over its own rows, so the gradient of the global mean is
    ``sum_r (n_r / N) * g_r``: :meth:`reduce` multiplies the local gradients by
    ``weight = n_r / N`` and sums them (plain averaging is wrong when the split is uneven).
    The gradients are packed, per dtype, into flat buckets of at most ``bucket_size``
    elements: one collective per bucket. Before the first sum the ranks compare their
    parameters, once: a model built differently on one rank is a
    :class:`~nnbackend.errors.ShapeError` or :class:`~nnbackend.errors.DtypeError` on every
    rank, not a sum of unrelated elements. A parameter without a gradient on this rank (unused
    in its forward pass) is sent as zeros, and a has-gradient mask travels in the same
    bucket: after the sum, a parameter gets a gradient on every rank where any rank had one,
    and keeps ``None`` where none had. Infinite or NaN gradients on one rank make the sum
    non-finite on every rank, so a loss scaler's overflow decision is the global one.

    Args:
        params: the model's parameters (Tensors with ``.grad``), in the same order on every
            rank.
        comm: a :mod:`~nnbackend.distributed` communicator.
        bucket_size: the most gradient elements per collective.
    """

    def __init__(
        self, params: Iterable[Any], comm: Communicator, *, bucket_size: int = 1 << 22
    ) -> None:
        if isinstance(bucket_size, bool) or not isinstance(bucket_size, int) or bucket_size < 1:
            raise ArgumentError(f"bucket_size must be an int >= 1, got {bucket_size!r}")
        if isinstance(params, (str, bytes)) or not hasattr(params, "__iter__"):
            raise ArgumentError(
                f"params must be an iterable of parameters (model.parameters()), got {params!r}"
            )
        self.params = list(params)
        for i, p in enumerate(self.params):
            if not (hasattr(p, "data") and hasattr(p, "grad") and hasattr(p.data, "shape")):
                raise ArgumentError(
                    f"params[{i}] is a {type(p).__name__}, not a parameter (a Tensor with "
                    ".data and .grad): pass model.parameters()"
                )
        self.comm = comm
        self.bucket_size = bucket_size
        self.synchronizing = True
        self.collectives = 0  # collectives issued so far (one per bucket per reduce)
        # Whether the ranks compared their parameters (once, at the first sum: only a
        # collective every rank runs at the same time can check), and the parameters'
        # (shape, dtype) the buckets were made for.
        self._agreed = False
        self._signature: tuple[Any, ...] | None = None
        self._buckets: list[list[int]] = []

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Skip the all-reduce inside the block: gradients accumulate locally (gradient
        accumulation); the first :meth:`reduce` after the block sums the accumulated ones."""
        previous, self.synchronizing = self.synchronizing, False
        try:
            yield
        finally:
            self.synchronizing = previous

    def buckets(self) -> list[list[int]]:
        """Parameter indices per bucket: grouped by dtype, in parameter order, each bucket
        at most ``bucket_size`` elements (a larger parameter travels alone)."""
        by_dtype: dict[Any, list[list[int]]] = {}
        sizes: dict[Any, int] = {}
        for i, p in enumerate(self.params):
            key = str(p.data.dtype)
            n = _numel(p.data)
            groups = by_dtype.setdefault(key, [[]])
            if groups[-1] and sizes[key] + n > self.bucket_size:
                groups.append([])
                sizes[key] = 0
            groups[-1].append(i)
            sizes[key] = sizes.get(key, 0) + n
        return [g for groups in by_dtype.values() for g in groups if g]

    def reduce(self, weight: float = 1.0) -> None:
        """All-reduce the gradients in place (rebinding ``p.grad``); see the class docstring.
        Does nothing inside :meth:`no_sync` or in a world of one process."""
        if not self.synchronizing or self.comm.size == 1:
            return
        given = weight
        try:  # a Python number, a NumPy scalar, a 0-d array
            weight = math.nan if isinstance(given, (bool, str)) else float(given)
        except (TypeError, ValueError):
            weight = math.nan
        if not 0.0 <= weight <= 1.0:  # NaN too
            raise ArgumentError(
                f"weight must be this rank's share of the global batch, a number from 0 to 1 "
                f"(its rows / all rows), got {given!r}"
            )
        signature = tuple((p.data.shape, p.data.dtype) for p in self.params)
        if signature != self._signature:
            if not self._agreed:  # the first sum: every rank gets here at the same time
                self._agree(signature)
            self._signature = signature
            self._buckets = self.buckets()
        for bucket in self._buckets:
            self._reduce_bucket(bucket, weight)

    def _agree(self, signature: tuple[Any, ...]) -> None:
        """Check, with one object all-gather, that every rank holds parameters of the same
        number, shapes and dtypes (ShapeError / DtypeError on every rank otherwise)."""
        mine = [(tuple(int(d) for d in shape), str(dtype).rsplit(".", 1)[-1])
                for shape, dtype in signature]  # fmt: skip
        gather = getattr(self.comm, "allgather_obj", None)
        if gather is None:  # a communicator of one's own without it
            everyone = [self.comm.bcast_obj(mine, r) for r in range(self.comm.size)]
        else:
            everyone = gather(mine)
        _check_agreement(everyone)
        self._agreed = True

    def _reduce_bucket(self, bucket: list[int], weight: float) -> None:
        params = [self.params[i] for i in bucket]
        ref = params[0].data
        xp = backend_for(ref)[0]
        dtype, device = ref.dtype, getattr(ref, "device", None)
        parts = []
        mask = []
        for p in params:
            g = p.grad
            if g is None:
                parts.append(xp.zeros((_numel(p.data),), dtype=dtype, device=device))
                mask.append(0.0)
            else:
                if g.dtype != dtype:
                    g = xp.astype(g, dtype)
                flat = xp.reshape(g, (-1,))
                parts.append(flat * weight if weight != 1.0 else flat)
                mask.append(1.0)
        parts.append(xp.asarray(mask, dtype=dtype, device=device))
        total = self.comm.allreduce_sum(xp.concat(parts))
        self.collectives += 1
        offset = 0
        # The has-gradient flags: one read to the host per bucket (a sync on a device; the
        # decision None-or-not is the host's).
        flags = backend_for(total)[1].to_host(total[-len(params) :])
        has = [bool(flags[k] > 0) for k in range(len(params))]
        for p, any_grad in zip(params, has, strict=True):
            n = _numel(p.data)
            if any_grad:
                p.grad = xp.reshape(total[offset : offset + n], tuple(p.data.shape))
            else:
                p.grad = None
            offset += n


def _check_agreement(everyone: list[list[tuple[tuple[int, ...], str]]]) -> None:
    """Raise (the same error on every rank: each sees ``everyone``) where the ranks'
    parameters differ in number, shape or dtype."""
    ref = everyone[0]
    for r, theirs in enumerate(everyone[1:], start=1):
        if len(theirs) != len(ref):
            counts = ", ".join(
                f"rank {k}: {len(x)} parameter{'s' if len(x) != 1 else ''}"
                for k, x in enumerate(everyone)
            )
            raise ShapeError(
                f"the ranks' models differ ({counts}); build the same model on every rank"
            )
        for i, ((shape0, dtype0), (shape, dtype)) in enumerate(zip(ref, theirs, strict=True)):
            if shape != shape0:
                raise ShapeError(
                    f"parameter {i} has shape {shape0} on rank 0 but {shape} on rank {r}; "
                    "build the same model on every rank (sizes that depend on a rank's own "
                    "data, such as a vocabulary, must be agreed on first)"
                )
            if dtype != dtype0:
                raise DtypeError(
                    f"parameter {i} is {dtype0} on rank 0 but {dtype} on rank {r}; use the "
                    "same dtype setting (NNBACKEND_DTYPE, nb.using(dtype=...)) on every rank"
                )


def _numel(a: Any) -> int:
    n = 1
    for d in a.shape:
        n *= int(d)
    return n
