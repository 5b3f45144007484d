"""The operations object: every way one array library differs from the others, in one place.

The engine, the layers and the optimizers are written once against the Array API namespace
and ask an :class:`Ops` (through :func:`nnbackend.namespace.ops_for`) whenever a backend's
behaviour matters:

* **fast kernels**: ``sum`` / ``max`` / ``astype`` / ``count_nonzero`` that skip Python layers,
  ``matmul`` with ``out=``, ``scatter_add`` (returning its result), the LSTM cell hooks, a
  cached ``one(dtype)``, and the extra kernels a backend offers by name (``kernel("im2col")``);
* **the float16 policy**: ``compute_dtype(dtype)``, ``widen(x)`` / ``narrow(x, like=...)`` and
  :meth:`Ops.compute`: float16 is computed in float32 and stored narrow where float16
  arithmetic is slow (NumPy on a CPU; torch on a CPU where a probe measures it slow), natively
  elsewhere;
* **updates**: ``update(old, new)``, ``add_(y, x)``, ``sub_(y, x)``, ``mul_(y, a)``,
  ``sub_scaled_(y, a, x)`` and ``write(target, key, value, fallback)`` write in place where
  the backend allows and return a new array otherwise, so each optimizer rule and each node is
  written once (a backend with immutable arrays only overrides these);
* **random bits** on the device (``dropout_mask``), seeded from :mod:`nnbackend.random`;
* **host transfer** (``to_host`` / ``from_host``) and ``may_cache``: whether arrays may be
  kept between calls (a tracing backend's may not; :meth:`Ops.cached` then makes them anew).

One :class:`Ops` per backend namespace, built by the backend record's ``ops`` factory
(``Ops`` itself for records without one, whose ``kernels()`` overrides still apply).
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Hashable
from typing import Any

from nnbackend.typing import Array, DType, Namespace

__all__ = [
    "NATIVE",
    "Compute",
    "Ops",
    "device_key",
    "lstm_cell",
    "lstm_cell_backward",
    "tanh_sigmoid",
    "wide_indices",
]


# Below this many elements NumPy's own float16 arithmetic costs less than converting to
# float32 and back (a few microseconds of calls).
_WIDE_MIN_SIZE = 1024


def _device_of(x: Any) -> Any:
    """``x``'s device (the Array API's ``x.device``), or ``None`` for an object without one:
    constants made for ``x`` go there, not to the backend's default device (a model moved to
    a second device, ``array_api_strict:device1`` or ``cuda:1``)."""
    return getattr(x, "device", None)


def device_key(device: Any) -> Hashable:
    """``device`` as part of a cache key: itself, or its ``repr`` where it cannot be hashed
    (``cupy.cuda.Device`` defines ``__eq__`` without ``__hash__``)."""
    return device if type(device).__hash__ is not None else repr(device)


def _size(x: Any) -> int:
    """The number of elements (``size`` is a method on torch tensors)."""
    n = x.size
    return n if type(n) is int else math.prod(x.shape)


class Compute:
    """How one node computes: in float32 for float16 operands (``wide``), or natively.

    ``widen(a)``: ``a`` in the compute dtype (float16 becomes float32; ``None`` stays
    ``None``). ``narrow(a, dtype=None)``: ``a`` stored back, in ``dtype`` or the narrow dtype.
    :data:`NATIVE` (the usual case) makes both the identity.
    """

    __slots__ = ("dtype", "ops", "store", "wide")

    def __init__(self, ops: Any, dtype: DType, store: DType, wide: bool) -> None:
        self.ops, self.dtype, self.store, self.wide = ops, dtype, store, wide

    def widen(self, a: Array) -> Array:
        """``a`` in the compute dtype."""
        if a is None or a.dtype == self.dtype:
            return a
        if a.dtype == self.store:
            return self.ops._to_wide(a)
        return self.ops.astype(a, self.dtype)

    def narrow(self, a: Array, dtype: DType | None = None) -> Array:
        """``a`` in ``dtype`` (default: the dtype the node stores)."""
        target = self.store if dtype is None else dtype
        if a is None or a.dtype == target:
            return a
        if target == self.store and a.dtype == self.dtype:
            return self.ops._to_narrow(a)
        return self.ops.astype(a, target)

    def widen_weight(self, w: Array) -> Array:
        """:meth:`widen` for a weight that lives across steps: its float32 copy is kept
        (where the ops may cache) and rewritten in the same memory each call."""
        if w.dtype != self.store:
            return self.widen(w)
        return self.ops._wide_weight(w)


class _Native(Compute):
    """Compute natively: both conversions are the identity."""

    __slots__ = ()

    def widen(self, a: Array) -> Array:
        """``a`` itself."""
        return a

    def narrow(self, a: Array, dtype: DType | None = None) -> Array:
        """``a`` itself."""
        return a

    def widen_weight(self, w: Array) -> Array:
        """``w`` itself."""
        return w


#: The compute context of every node that needs no conversion.
NATIVE: Compute = _Native(None, None, None, False)


class _Cast(Compute):
    """Compute in a given dtype (a mixed precision node on a backend with fast float16):
    operands are cast to it, results stay in it."""

    __slots__ = ()

    def widen(self, a: Array) -> Array:
        """``a`` cast to the compute dtype."""
        if a is None or a.dtype == self.dtype:
            return a
        return self.ops.convert(a, self.dtype)

    def narrow(self, a: Array, dtype: DType | None = None) -> Array:
        """``a`` in ``dtype`` (default: left in the compute dtype)."""
        if a is None or dtype is None or a.dtype == dtype:
            return a
        return self.ops.convert(a, dtype)

    def widen_weight(self, w: Array) -> Array:
        """``w`` cast to the compute dtype."""
        return self.widen(w)


def tanh_sigmoid(xp: Namespace, x: Array) -> Array:
    """``sigmoid(x)`` as ``0.5 * tanh(x / 2) + 0.5``, on raw arrays."""
    # The tanh form never overflows (1 / (1 + exp(-x)) does in float16 below x = -11).
    return 0.5 * xp.tanh(0.5 * x) + 0.5


def lstm_cell(xp: Namespace, a: Array, c_prev: Array) -> tuple[Array, ...]:
    """The elementwise part of one LSTM step, gates in the book's order ``(f, g, i, o)``:
    from the pre-activations ``a`` (N, 4H) and the previous cell ``c_prev`` (N, H),
    ``(h, c, f, g, i, o, tanh(c))`` (each (N, H); the last five are what the backward needs).
    """
    hsz = c_prev.shape[-1]
    f = tanh_sigmoid(xp, a[:, :hsz])
    g = xp.tanh(a[:, hsz : 2 * hsz])
    i = tanh_sigmoid(xp, a[:, 2 * hsz : 3 * hsz])
    o = tanh_sigmoid(xp, a[:, 3 * hsz :])
    c = f * c_prev + g * i
    tc = xp.tanh(c)
    return o * tc, c, f, g, i, o, tc


def lstm_cell_backward(
    xp: Namespace,
    dh: Array,
    dc: Array,
    f: Array,
    g: Array,
    i: Array,
    o: Array,
    tc: Array,
    c_prev: Array,
) -> tuple[Array, Array]:
    """The backward of :func:`lstm_cell`: from the gradients of ``h`` and ``c``, the gradient
    of the pre-activations ``da`` (N, 4H) and of the previous cell ``dc_prev`` (N, H)."""
    ds = dc + dh * o * (1.0 - tc * tc)
    df = ds * c_prev * f * (1.0 - f)
    dg = ds * i * (1.0 - g * g)
    di = ds * g * i * (1.0 - i)
    do = dh * tc * o * (1.0 - o)
    return xp.concat([df, dg, di, do], axis=1), ds * f


def wide_indices(xp: Namespace, indices: Array) -> Array:
    """Integer ``indices`` as the namespace's own index dtype (int64; int32 for jax without
    x64) where they have a narrower or unsigned one (int8, uint8, int16, uint64): NumPy
    indexes with any integer dtype, but ``indices + n`` overflows a narrow one (a bare
    OverflowError for an axis of 128 rows and int8), the standard refuses ``uint8 < -n``,
    torch's take wants int32 or int64, and a one-hot ``arange(n)`` in a narrow dtype wraps.
    int32 and int64 are kept as they are (no copy)."""
    dtype = indices.dtype
    if dtype == xp.int64 or dtype == xp.int32:
        return indices
    return xp.astype(indices, xp.__array_namespace_info__().default_dtypes()["indexing"])


def _no_float16(x: Any, out: Any = None) -> Any:
    raise TypeError("this backend has no float16")


# Names of kernels() entries that replace an Ops default; the rest are extra kernels.
_OVERRIDES = (
    "sum",
    "max",
    "astype",
    "count_nonzero",
    "lstm_cell",
    "lstm_cell_backward",
    "float16_to_float32",
    "float32_to_float16",
    "float16_positive",
    "float16_keep",
    "float16_nan",
    "float16_finite",
)


class Ops:
    """The behaviour of one backend, shared defaults written once over ``xp``.

    A subclass overrides only what differs: class attributes (``may_cache``,
    ``float16_compute``), the update primitives, :meth:`scatter_add`, :meth:`dropout_mask`,
    :meth:`matmul`, or the conversions ``_to_wide`` / ``_to_narrow``. Kernel attributes
    (``sum``, ``max``, ``astype``, ``count_nonzero``, ``lstm_cell``, ``lstm_cell_backward``)
    are plain callables set in ``__init__``, so a hot loop pays no method dispatch; a
    record's ``kernels()`` entries of those names replace them.

    Attributes:
        xp: the backend's Array API namespace.
        record: the :class:`~nnbackend.Backend` record.
        inplace: whether arrays take in-place writes (the update primitives use it).
        may_cache: whether arrays may be kept between calls (:meth:`cached`).
        float16_compute: ``"native"`` or ``"float32"``: how float16 arithmetic runs;
            ``"probe"`` lets :meth:`float16_policy` decide per device.
        small_float16_native: where float16 is widened, whether arrays below a node's size
            threshold stay in float16.
        float16_elementwise_native: where float16 is widened, whether the elementwise nodes
            (those that give :meth:`compute` a size threshold) compute in float16 at any
            size, only products (:meth:`compute_product`) and the many-pass nodes being
            widened.
    """

    #: Whether arrays made by these ops may be cached between calls. A tracing backend
    #: (whose arrays are placeholders inside a trace) sets False.
    may_cache: bool = True
    #: Whether ``xp.take`` raises for an index out of range. JAX's fills NaN (or clamps),
    #: CuPy's wraps around: there ``x[idx]`` checks the indices itself
    #: (:class:`nnbackend.autograd.ops.GetItem`).
    take_checks_range: bool = True
    #: "native": float16 math in float16; "float32": widened; "probe": measured per device.
    float16_compute: str = "native"
    #: Where float16 is widened: whether arrays below a node's size threshold still compute
    #: in float16. True for NumPy, whose software float16 costs less than two conversions on
    #: a few hundred elements; False where small float16 kernels are slow paths (torch on a
    #: CPU: its tiny float16 products ran 2.3x the float32 step).
    small_float16_native: bool = True
    #: Where float16 is widened: whether elementwise nodes still compute in float16 at every
    #: size. True for torch on a CPU, whose float16 elementwise kernels convert per vector
    #: and run at float32's speed (a 1M-element add 0.14 ms against 0.11 ms) while only its
    #: float16 GEMM is slow: widening them would add two conversion passes per node.
    float16_elementwise_native: bool = False

    def __init__(self, xp: Namespace, record: Any) -> None:
        self.xp, self.record = xp, record
        caps = record.capabilities
        self.inplace = bool(caps.inplace)
        self.to_host: Callable[[Any], Any] = record.to_host
        self.from_host: Callable[[Any, Any], Any] = record.from_host
        self.on_host: Callable[[Any], bool] = record.on_host
        offered = dict(record.kernels())
        self._extra = {k: v for k, v in offered.items() if k not in _OVERRIDES}
        self.sum: Callable[..., Any] = offered.get("sum", xp.sum)
        self.max: Callable[..., Any] = offered.get("max", xp.max)
        self.astype: Callable[..., Any] = offered.get("astype", xp.astype)
        #: ``xp.asarray`` of one value (a backend whose namespace wraps it may go direct).
        self.asarray: Callable[[Any], Any] = xp.asarray
        counter = offered.get("count_nonzero") or getattr(xp, "count_nonzero", None)
        self.count_nonzero: Callable[[Any], Any] = counter or (
            lambda x: xp.sum(xp.astype(x, xp.int64))
        )
        #: One LSTM step's elementwise part (see :func:`lstm_cell`); a GPU backend fuses it.
        self.lstm_cell: Callable[..., Any] = offered.get("lstm_cell") or (
            lambda a, c: lstm_cell(xp, a, c)
        )
        self.lstm_cell_backward: Callable[..., Any] = offered.get("lstm_cell_backward") or (
            lambda *args: lstm_cell_backward(xp, *args)
        )
        if "float16_to_float32" in offered:
            self._to_wide = offered["float16_to_float32"]  # type: ignore[method-assign]
        if "float32_to_float16" in offered:
            self._to_narrow = offered["float32_to_float16"]  # type: ignore[method-assign]
        #: ``x > 0`` and ``where(mask, x, 0)`` for float16 ``x`` computed wide (NumPy reads
        #: the bits instead of comparing in software).
        self._positive: Callable[[Any], Any] = offered.get("float16_positive") or (lambda x: x > 0)
        self._keep: Callable[[Any, Any], Any] = offered.get("float16_keep") or (
            lambda mask, x: xp.where(mask, x, 0.0)
        )
        self._nan: Callable[[Any], Any] = offered.get("float16_nan") or xp.isnan
        #: Whether every value of float16 ``x`` is finite (NumPy reads the bits).
        self._finite: Callable[[Any], Any] = offered.get("float16_finite") or (
            lambda x: xp.all(xp.isfinite(x))
        )
        self._cache: dict[Hashable, Any] = {}
        self.float16 = xp.float16 if caps.float16 and hasattr(xp, "float16") else None
        self.float32 = xp.float32
        # The dtype computed in float32 (float16 where it is slow), decided lazily.
        self._slow: Any = None
        self._decided = False
        self._wide = (
            Compute(self, xp.float32, self.float16, True) if self.float16 is not None else NATIVE
        )
        self._weights: dict[int, tuple[Any, Any]] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.record.name!r}>"

    @staticmethod
    def host_numpy() -> Any:
        """NumPy, the library of :meth:`to_host`'s results: for reference computations that
        run on the host by design (gradient checks in float64)."""
        import numpy as np

        return np

    def host_copy(self, x: Array) -> Array:
        """A new, writable NumPy array with ``x``'s values (never shares memory with ``x``)."""
        import numpy as np

        return np.array(self.to_host(x), copy=True)

    # -- kernels ---------------------------------------------------------------------------
    def kernel(self, name: str) -> Callable[..., Any] | None:
        """The backend's own kernel ``name`` (``"im2col"``, ``"convolution"``,
        ``"max_pool2d"``, ...), or ``None`` where it offers none."""
        return self._extra.get(name)

    def matmul(self, a: Array, b: Array, out: Array | None = None) -> Array:
        """``a @ b``; into ``out`` where the library can write there (``out`` is a hint)."""
        return a @ b

    def read_only(self, x: Array) -> bool:
        """Whether ``x`` cannot be written although this backend updates parameters in
        place (a NumPy array of a file opened with ``mmap_mode="r"``): optimizers check
        their parameters once, when built. The default: never."""
        return False

    def reuse(self, spare: Any, shape: tuple[int, ...], dtype: DType) -> Array | None:
        """``spare`` when the engine may write a new result of ``shape`` and ``dtype`` into
        it (``out=``) instead of allocating one, else ``None``. ``spare`` is an array the
        engine has let go of (a parameter's gradient from the previous step, kept aside by
        ``zero_grad``); a backend answers yes only where it can prove that nothing else
        holds it, its memory included. The default never reuses: the caller allocates."""
        return None

    def out_array(self, shape: tuple[int, ...], dtype: DType) -> Array | None:
        """A new array of ``shape`` and ``dtype`` for a result to be written into with
        ``matmul(out=)`` where that result would otherwise be a view of another array (a
        product reshaped to a weight's shape): an array that owns its memory can be
        reused in the next step (:meth:`reuse`), a view cannot. ``None`` where :meth:`reuse` never
        says yes (the default): the caller allocates as usual."""
        return None

    #: The fewest elements for which :meth:`recycled` may give an array: a node compares
    #: its result's size with this before calling it, so small steps pay one comparison.
    recycle_min: int = sys.maxsize
    #: The fewest elements for which :meth:`reuse` may accept a spare: likewise compared
    #: first (a tiny step's two calls per layer cost more than the allocation they save).
    reuse_min: int = sys.maxsize

    def recycled(self, shape: tuple[int, ...], dtype: DType) -> Array | None:
        """An array of ``shape`` and ``dtype`` (garbage values) for a step's intermediate
        result (a layer's output, a gradient passed down) to be written into with ``out=``,
        taken from the arrays given out for the same shape in earlier steps where the
        backend can prove nothing refers to one any more, else ``None``: the caller
        allocates as usual. The default never recycles."""
        return None

    def scatter_add(self, target: Array, indices: Array, values: Array) -> Array:
        """``target`` with ``values[i]`` added into the row ``indices[i]``, repeated indices
        accumulating; returns the result (``target`` itself where written in place).
        Negative indices count from the end (as ``np.add.at``). The default is a one-hot
        matrix product that needs only the standard; indices outside ``[-n, n)`` match no
        row there (callers check them first)."""
        record = self.record
        if record.scatter_add is not None and self.inplace:
            return record.scatter_add(target, indices, values)
        xp = self.xp
        n = target.shape[0]
        indices = wide_indices(xp, indices)  # arange(n) in int8 / uint8 would wrap
        # negative indices count from the end, as np.add.at and the engine's callers have
        # them (a one-hot of -1 matched no row: its values were dropped silently)
        indices = xp.where(indices < 0, indices + n, indices)
        onehot = xp.astype(
            xp.reshape(indices, (-1, 1))
            == xp.arange(n, dtype=indices.dtype, device=indices.device),
            target.dtype,
        )
        flat = xp.reshape(values, (indices.shape[0], -1))
        c = self.compute_product(onehot, flat.shape[-1], 1)
        summed = c.narrow(c.widen(onehot).T @ c.widen(flat))
        return target + xp.reshape(summed, target.shape)

    def expand(self, x: Array, shape: tuple[int, ...]) -> Array:
        """``x`` broadcast to ``shape`` as a new, writable array."""
        return self.xp.zeros(shape, dtype=x.dtype, device=_device_of(x)) + x

    def one(self, dtype: DType, device: Any = None) -> Array:
        """A new 0-d array holding 1 in ``dtype`` on ``device`` (the backend's default where
        ``None``): a copy of a cached one, kept per dtype and device (``astype`` copies; about
        0.13 us on NumPy against 1.06 us for ``xp.asarray(1.0, dtype=...)``)."""
        key = ("one", dtype, device_key(device))
        cached = self._cache.get(key)
        if cached is None:
            # A partial, not a lambda: a closure would cost every call, hits included, the
            # cells it reads (3.11 builds them on entry).
            make = functools.partial(self.xp.asarray, 1.0, dtype=dtype, device=device)
            cached = self.cached(key, make)
        return self.astype(cached, dtype)

    def lookup(self, key: Hashable) -> Any:
        """What :meth:`cached` keeps under ``key``, or ``None`` (nothing kept yet, or ops that
        may not cache): a hot path's first look, before it builds its ``make``."""
        return self._cache.get(key)

    def cached(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """``make()``, kept under ``key`` for later calls where :attr:`may_cache`."""
        found = self._cache.get(key)
        if found is None:
            found = make()
            if self.may_cache:
                self._cache[key] = found
        return found

    # -- float16 policy --------------------------------------------------------------------
    def float16_policy(self, x: Array | None = None) -> str:
        """``"native"`` or ``"float32"``: how float16 math runs for arrays like ``x`` here."""
        return "native" if self.float16_compute == "probe" else self.float16_compute

    def _slow_dtype(self, x: Any) -> Any:
        """The float16 dtype where float16 is computed in float32 here, else ``None``
        (decided once, at the first question; a backend with several kinds of device
        overrides this to decide per device)."""
        if not self._decided:
            self._decided = True
            wide = self.float16 is not None and self.float16_policy(x) == "float32"
            self._slow = self.float16 if wide else None
        return self._slow

    def compute_dtype(self, dtype: DType, like: Array | None = None) -> DType:
        """The dtype arithmetic on ``dtype`` runs in (on ``like``'s device): float32 for
        float16 where float16 is slow, ``dtype`` otherwise."""
        slow = self._slow if self._decided else self._slow_dtype(like)
        return self.float32 if slow is not None and dtype == slow else dtype

    def compute(self, x: Array, min_size: int = 0) -> Compute:
        """The :class:`Compute` for a node on ``x``: float32 when ``x`` is float16, float16
        math is slow here, and ``x`` has at least ``min_size`` elements (below that the
        conversions cost more than they save); else :data:`NATIVE`."""
        slow = self._slow if self._decided else self._slow_dtype(x)
        if slow is None or x.dtype != slow:
            return NATIVE
        if min_size and (
            self.float16_elementwise_native or (self.small_float16_native and _size(x) < min_size)
        ):
            return NATIVE
        return self._wide

    def compute_product(self, x: Array, n_out: int, min_macs: int = 2048) -> Compute:
        """:meth:`compute` for a product of ``x`` with ``n_out`` columns: widened only from
        ``min_macs`` multiply-adds on (the size is looked at only where it matters)."""
        slow = self._slow if self._decided else self._slow_dtype(x)
        if slow is None or x.dtype != slow:
            return NATIVE
        if self.small_float16_native and _size(x) * n_out < min_macs:
            return NATIVE
        return self._wide

    def compute_as(self, dtype: DType, like: Array | None = None) -> Compute:
        """The :class:`Compute` for a node that computes in ``dtype`` whatever its operands'
        dtypes (mixed precision), on ``like``'s device: float32 stored as ``dtype`` where
        ``dtype`` is slow there, else a cast to ``dtype``."""
        slow = self._slow if self._decided else self._slow_dtype(like)
        if slow is not None and dtype == slow:
            return self._wide
        return _Cast(self, dtype, dtype, False)

    def widen(self, x: Array, out: Array | None = None) -> Array:
        """``x`` in its compute dtype (float16 -> float32 where float16 is slow; otherwise
        ``x`` itself); into ``out`` (a float32 array of ``x``'s shape) where the backend can."""
        slow = self._slow if self._decided else self._slow_dtype(x)
        if slow is None or x.dtype != slow:
            return x
        return self._to_wide(x, out)

    def narrow(self, x: Array, like: Array | None = None, dtype: DType | None = None) -> Array:
        """``x`` stored in ``like``'s dtype (or ``dtype``); ``x`` itself where it already is."""
        target = like.dtype if like is not None else dtype
        if target is None or x.dtype == target:
            return x
        return self.convert(x, target)

    def convert(self, x: Array, dtype: DType) -> Array:
        """``x`` as ``dtype`` (a new array), with the backend's fast float16 conversions."""
        f16 = self.float16
        if f16 is not None:
            if x.dtype == f16:
                wide = self._to_wide(x)
                return wide if dtype == self.float32 else self.xp.astype(wide, dtype)
            if dtype == f16 and x.dtype == self.float32:
                return self._to_narrow(x)
            # (float64 -> float16 directly: through float32 it would be rounded twice)
        return self.xp.astype(x, dtype)

    def dtype(self, name: str) -> DType | None:
        """The backend's dtype called ``name``, or ``None`` where it has none (float16 on a
        record whose capabilities say it has none)."""
        if name == "float16":
            return self.float16
        return getattr(self.xp, name, None)

    def accumulate_dtype(self, dtype: DType) -> DType:
        """The dtype statistics and loss scales of ``dtype`` are accumulated in: float32 for
        float16 (its sums overflow and lose small terms) on every backend, else ``dtype``."""
        return self.float32 if self.float16 is not None and dtype == self.float16 else dtype

    def _to_wide(self, x: Any, out: Any = None) -> Any:
        """float16 -> float32 (``out`` is a hint)."""
        if self.float16 is None:
            return _no_float16(x)
        return self.xp.astype(x, self.float32)

    def _to_narrow(self, x: Any) -> Any:
        """float32 -> float16."""
        if self.float16 is None:
            return _no_float16(x)
        return self.xp.astype(x, self.float16)

    def _wide_weight(self, w: Any) -> Any:
        """The float32 copy of float16 weight ``w``, kept (where the ops may cache) by the
        weight's identity while it lives and rewritten in the same memory each call: a fresh
        megabyte array each forward costs a page fault per 4 KiB."""
        if not self.may_cache:
            return self._to_wide(w)
        import functools
        import weakref

        key = id(w)
        entry = self._weights.get(key)
        if entry is not None and entry[0]() is w:
            return self._to_wide(w, entry[1])
        wide = self._to_wide(w)
        try:
            ref = weakref.ref(w, functools.partial(self._forget_weight, key))
        except TypeError:  # arrays that take no weak references: no reuse
            return wide
        self._weights[key] = (ref, wide)
        return wide

    def _forget_weight(self, key: int, ref: Any) -> None:
        entry = self._weights.get(key)
        if entry is not None and entry[0] is ref:
            del self._weights[key]

    # -- elementwise kernels with a float16 variant ----------------------------------------
    def relu_mask(self, x: Array) -> Array:
        """``x > 0`` as a boolean array (0-d arrays stay arrays)."""
        if self.compute(x, _WIDE_MIN_SIZE).wide:
            return self._positive(x)
        mask = x > 0
        if type(mask) is not type(x):  # a numpy.bool for a 0-d x
            mask = self.xp.asarray(mask)
        return mask

    def leaky_relu(self, x: Array, mask: Array, slope: float) -> Array:
        """``x`` where ``mask``, ``slope * x`` elsewhere (``mask`` is :meth:`relu_mask`)."""
        xp = self.xp
        c = self.compute(x, _WIDE_MIN_SIZE)
        if c.wide:  # no float16 arithmetic at all for ReLU
            if slope == 0.0:  # (NaN kept, as maximum(x, 0) keeps it: the mask is x > 0)
                return self._keep(mask | self._nan(x), x)
            wide = c.widen(x)
            return c.narrow(xp.where(mask, wide, wide * slope))
        if 0.0 <= slope <= 1.0:
            # maximum, not where: NumPy's where runs a branchy loop, 0.95 ms for 256x1024
            # elements of random sign against 0.1 ms (benchmarks/NOTES.md).
            if slope == 0.0:
                return xp.maximum(x, self._zero(x.dtype, _device_of(x)))
            return xp.maximum(x, x * slope)
        return xp.where(mask, x, x * slope)

    def _zero(self, dtype: Any, device: Any = None) -> Any:
        key = ("zero", dtype, device_key(device))
        found = self._cache.get(key)
        if found is None:  # (a partial, not a lambda: see one())
            found = self.cached(
                key, functools.partial(self.xp.zeros, (), dtype=dtype, device=device)
            )
        return found

    def leaky_relu_backward(self, gy: Array, mask: Array, slope: float) -> Array:
        """The gradient of :meth:`leaky_relu`: ``gy`` where ``mask``, ``slope * gy`` else."""
        c = self.compute(gy, _WIDE_MIN_SIZE)
        if c.wide:
            if slope == 0.0:
                kept = self._keep(mask, gy)
                # gy times the 0/1 mask, as the native path computes it: where the mask is
                # off, an infinite or NaN gy gives NaN (0 * inf), not the 0 _keep writes (an
                # overflowed float16 gradient must stay visible, to the loss scaler too).
                if self._finite(gy):  # (the usual case: one pass over the bits on NumPy)
                    return kept
                xp = self.xp
                return xp.where(mask | xp.isfinite(gy), kept, xp.asarray(math.nan, dtype=gy.dtype))
            wide = c.widen(gy)
            return c.narrow(self.xp.where(mask, wide, wide * slope))
        # The mask as 0/1 (or slope/1) factors: a multiply instead of a where. The factors
        # are a new array: the product goes into it where arrays take in-place writes (the
        # same products, commuted; one gradient-sized array fewer).
        gain = self.astype(mask, gy.dtype)
        if slope != 0.0:
            gain = self.add_(self.mul_(gain, 1.0 - slope), slope)
        return self.mul_(gain, gy)

    def sigmoid(self, x: Array) -> Array:
        """``1 / (1 + exp(-x))`` in the split form: with ``e = exp(-|x|)`` (never above 1,
        so it never overflows, even in float16), ``1 / (1 + e)`` for ``x >= 0`` and
        ``e / (1 + e)`` for ``x < 0``. Both keep full relative precision: the
        ``0.5 * tanh(x / 2) + 0.5`` form loses it for negative ``x`` (2.6% at x = -15 in
        float32) and gives 0 where the result is still representable.

        The numerator is ``maximum(e, x >= 0)`` (1 where ``x >= 0``, since ``e <= 1``), not
        a ``where``: a ``where`` is a branchy loop on some libraries (NumPy's: ten times
        slower on random signs)."""
        xp = self.xp
        e = xp.exp(-xp.abs(x))
        upper = x >= 0
        if type(upper) is not type(x):  # a numpy.bool for a 0-d x
            upper = self.asarray(upper)
        return xp.maximum(e, self.astype(upper, x.dtype)) / (1.0 + e)

    # -- per-row reductions and labels (softmax and its losses) -------------------------------
    def row_max(self, x: Array) -> Array:
        """The maximum along the last axis of ``x`` (two or more axes), the axis kept: shape
        (..., 1)."""
        return self.max(x, axis=-1, keepdims=True)

    def row_sum(self, x: Array) -> Array:
        """The sum along the last axis of ``x`` (two or more axes), the axis kept: shape
        (..., 1)."""
        return self.sum(x, axis=-1, keepdims=True)

    def column_sum(self, x: Array) -> Array:
        """Each column's sum of a 2-D ``x`` (N, C), shape (C,): a bias's gradient."""
        return self.column_summer(x.shape[0], x.dtype)(x)

    def column_summer(self, n_rows: int, dtype: DType) -> Callable[[Array], Array]:
        """The function :meth:`column_sum` applies to arrays of ``n_rows`` rows of ``dtype``
        (a compiled step's replay calls it directly)."""
        return functools.partial(self.sum, axis=0)

    def sum_product(self, a: Array, b: Array) -> Array:
        """``sum(a * b)`` over every element of ``a`` and ``b`` (one shape), 0-d."""
        return self.sum(a * b, axis=None)

    def class_range(self, n_classes: int, labels: Array) -> Array:
        """``arange(n_classes)`` in the integer ``labels``' dtype, on their device (a GPU's
        own one: comparing with an array on another device would fail), kept per
        combination instead of made once per step. Raises :class:`~nnbackend.errors.DtypeError`
        for labels that are not integers."""
        dtype, device = labels.dtype, _device_of(labels)
        key = ("class_range", n_classes, dtype, device_key(device))
        found = self._cache.get(key)  # the usual case: made before
        if found is not None:
            return found
        xp = self.xp
        if not xp.isdtype(dtype, "integral"):
            from nnbackend.errors import DtypeError

            raise DtypeError(f"class labels must be integers, got {dtype}")
        if xp.iinfo(dtype).max < n_classes - 1:  # (300 classes of uint8 labels: int64)
            dtype = xp.int64
        # (a partial, not a lambda: see one())
        return self.cached(key, functools.partial(xp.arange, n_classes, dtype=dtype, device=device))

    def one_hot(self, labels: Array, n_classes: int, dtype: DType) -> tuple[Array, Any]:
        """The one-hot rows (N, ``n_classes``) in ``dtype`` of the integer ``labels`` (N,),
        and whether some label lies outside ``[0, n_classes)``: ``True`` or ``False`` where
        the labels live on the host (their count of hits is free to read), else a 0-d
        boolean array (reading it would synchronise a device each step; the caller turns the
        loss NaN with it). An out-of-range label gets a row of zeros here; a backend may
        instead give it a row of NaN and return ``None``: not checked, a sum over the rows
        is then NaN and the caller checks the labels (:meth:`labels_in_range`)."""
        hit = labels[:, None] == self.class_range(n_classes, labels)
        onehot = self.astype(hit, dtype)
        n = labels.shape[0]
        if self.on_host(labels):
            return onehot, int(self.count_nonzero(hit)) != n
        return onehot, self.sum(onehot, axis=None) != float(n)

    def labels_in_range(self, labels: Array, n_classes: int) -> bool:
        """Whether every label lies in ``[0, n_classes)`` (reads the labels: on a device, a
        synchronisation)."""
        found = self.host_copy(labels)
        return bool(((found >= 0) & (found < n_classes)).all())

    # -- updates ---------------------------------------------------------------------------
    def update(self, old: Any, new: Any) -> Any:
        """``new`` stored as ``old``'s value: written into ``old`` (and ``old`` returned)
        where arrays take in-place writes, else ``new`` itself (rebind the result)."""
        if self.inplace and old is not new:
            old[...] = new
            return old
        return new

    def add_(self, y: Any, x: Any) -> Any:
        """``y + x``, into ``y`` where allowed; rebind the result."""
        if self.inplace:
            y += x
            return y
        return y + x

    def sub_(self, y: Any, x: Any) -> Any:
        """``y - x``, into ``y`` where allowed; rebind the result."""
        if self.inplace:
            y -= x
            return y
        return y - x

    def sum_of_squares(self, x: Any, dtype: Any) -> Any:
        """``sum(x * x)`` over all elements as a 0-d array, computed in ``dtype`` (a
        gradient's share of its global norm: ``clip_grad_norm``)."""
        xp = self.xp
        if x.dtype != dtype:
            x = xp.astype(x, dtype)
        return xp.sum(x * x)

    def mul_(self, y: Any, a: Any) -> Any:
        """``y * a``, into ``y`` where allowed; rebind the result."""
        if self.inplace:
            y *= a
            return y
        return y * a

    def sub_scaled_(self, y: Any, a: float, x: Any) -> Any:
        """``y - a * x`` (the SGD step), into ``y`` where allowed; rebind the result. Where
        ``y``'s dtype computes wide, in float32 and rounded once."""
        c = self.compute(x)
        if c.wide:
            if not self.inplace:
                return self.update(y, c.narrow(c.widen(y) - a * c.widen(x)))
            # Both widened copies are new arrays: the same two roundings, in place.
            step = c.widen(x)
            step *= a
            wide = c.widen(y)
            wide -= step
            return self._store_narrow(y, wide)
        if x.dtype != y.dtype:  # a gradient of another dtype set by hand (SGD calls this
            # without apply_update's conversion): computed in the promoted dtype and stored
            # in y's, as NumPy's and torch's in-place subtraction do; never promoting y.
            return self.update(y, self.astype(y - a * x, y.dtype))
        return self.sub_(y, a * x)

    # The optimizers' update rules (optim.py), one primitive per term of a rule. Each is the
    # rule's own expression here (in place into ``y`` where arrays take writes, rebound
    # otherwise); NumPy overrides them to compute the same operations, in the same order, on
    # the same values, through scratch buffers kept across steps (no parameter-sized
    # temporaries: benchmarks/NOTES.md, 2026-12-01 (2)). They compute in the arrays' own
    # dtype: a rule runs inside :meth:`apply_update`, which has widened float16 already.
    def add_scaled_(self, y: Any, a: Any, x: Any) -> Any:
        """``y + a * x`` (Adam's first moment), into ``y`` where allowed; rebind the result."""
        return self.add_(y, a * x)

    def add_scaled_square_(self, y: Any, a: Any, x: Any) -> Any:
        """``y + a * (x * x)``, or ``y + x * x`` where ``a`` is ``None`` (the second moments
        of RMSprop and Adam; AdaGrad's sum), into ``y`` where allowed; rebind the result."""
        return self.add_(y, x * x if a is None else a * (x * x))

    def add_scaled_diff_(self, y: Any, a: Any, x: Any, square: bool = False) -> Any:
        """``y + a * (x - y)``, or ``y + a * (x * x - y)`` with ``square`` (the book's Adam
        moments), into ``y`` where allowed; rebind the result."""
        return self.add_(y, a * ((x * x if square else x) - y))

    def sub_times_(self, y: Any, a: Any, x: Any) -> Any:
        """``y - a * x`` in the arrays' own dtype (Momentum's step; :meth:`sub_scaled_`, SGD's,
        computes float16 in float32 where float16 is slow), into ``y`` where allowed; rebind
        the result."""
        return self.sub_(y, a * x)

    def sub_scaled_sum_(self, y: Any, a: Any, x: Any, b: Any, z: Any) -> Any:
        """``y - a * (x + b * z)`` (Nesterov's step), into ``y`` where allowed; rebind the
        result."""
        return self.sub_(y, a * (x + b * z))

    def sub_scaled_ratio_(self, y: Any, a: Any, x: Any, h: Any, c: Any, eps: Any) -> Any:
        """``y - a * x / (sqrt(h) * c + eps)``, or ``y - a * x / (sqrt(h) + eps)`` where ``c``
        is ``None`` (the steps of AdaGrad, RMSprop and Adam), into ``y`` where allowed;
        rebind the result."""
        d = self.xp.sqrt(h)
        if c is not None:
            d = d * c
        return self.sub_(y, a * x / (d + eps))

    def scaled_sum(self, x: Any, a: Any, y: Any) -> Any:
        """``x + a * y`` as an array the caller only reads (a gradient with coupled weight
        decay), valid until the next call: NumPy hands out the same scratch buffer each
        time; neither ``x`` nor ``y`` is written."""
        return x + a * y

    def _store_narrow(self, y: Any, wide: Any) -> Any:
        """``wide`` (float32) rounded into float16 ``y`` (in place; ``y`` returned)."""
        return self.update(y, self._to_narrow(wide))

    def write(self, target: Any, key: Any, value: Any, fallback: Callable[[], Any]) -> Any:
        """``target`` with ``target[key] = value``: written in place where allowed (and
        ``target`` returned), else ``fallback()``, the caller's out-of-place construction
        (a backend with an indexed update, such as JAX's ``.at[].set``, overrides this)."""
        if self.inplace:
            target[key] = value
            return target
        return fallback()

    def apply_update(
        self,
        rule: Callable[[Any, Any, dict[str, Any], Any], Any],
        data: Any,
        g: Any,
        state: dict[str, Any],
        names: tuple[str, ...],
        extra: Any,
    ) -> Any:
        """Run one optimizer ``rule(data, g, state, extra) -> new data`` for a parameter and
        return its new stored data. Where float16 is computed in float32 here, the rule runs
        on float32 copies of the parameter, the gradient and the state arrays ``names``, and
        each is stored back once, rounded (never float16 intermediates), whatever the size:
        in float16 Adam's ``(1 - b2) * g * g`` underflows, and a bias of a few values took
        steps many times too large. Decided by the parameter's dtype, not the gradient's (a
        gradient of another dtype set by hand is converted, never the parameter rounded)."""
        c = self.compute(data)
        if not c.wide:
            if g.dtype != data.dtype:  # (a float16 gradient's g * g would underflow)
                g = self.astype(g, data.dtype)
            return rule(data, g, state, extra)
        wide_state = {k: (c.widen(v) if k in names else v) for k, v in state.items()}
        new = rule(c.widen(data), c.widen(g), wide_state, extra)
        for key, value in wide_state.items():
            if key not in names:
                state[key] = value
            elif key in state:
                state[key] = self.update(state[key], c.narrow(value))
            else:
                state[key] = c.narrow(value)
        return self.update(data, c.narrow(new))

    # -- compiling -------------------------------------------------------------------------
    def jit(self, fn: Callable[..., Any]) -> Callable[..., Any] | None:
        """``fn`` (a pure function of arrays and nested lists, tuples and dicts of them)
        compiled by the backend's tracing compiler, or ``None`` where the backend has none
        (eager backends: :func:`nnbackend.compile_step` replays their nodes instead)."""
        return None

    # -- random bits -----------------------------------------------------------------------
    def uniform(self, generator: Any, shape: tuple[int, ...], like: Array) -> Array:
        """Uniform numbers in [0, 1) of ``shape``, on ``like``'s device, drawn from
        ``generator`` (the host ``numpy.random.Generator`` inside an
        :class:`nnbackend.random.Generator`): the default draws them on the host and moves
        them, so one seed gives one stream on every backend that does not override this."""
        values = generator.random(shape)
        device = getattr(like, "device", None)
        moved = self.from_host(values, None if self.record.name == "numpy" else device)
        return moved

    def dropout_mask(self, generator: Any, like: Array, p: float) -> Array:
        """The inverted-dropout factors for ``like``: 0 with probability ``p``, else
        ``1 / (1 - p)``, in ``like``'s dtype and on its device."""
        keep = self.uniform(generator, tuple(like.shape), like) >= p
        return self.astype(keep, like.dtype) * (1.0 / (1.0 - p))
