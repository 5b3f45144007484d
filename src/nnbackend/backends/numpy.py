"""The NumPy backend (the default), through array-api-compat's NumPy namespace."""

from __future__ import annotations

import collections
import functools
import importlib.util
import math
import os
import sys
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from nnbackend.backends import blas
from nnbackend.backends.base import Backend, Capabilities
from nnbackend.backends.ops import Ops


def load_namespace() -> Any:
    import array_api_compat.numpy as xp

    return xp


def probe() -> str | None:
    for module, package in (("numpy", "numpy"), ("array_api_compat", "array-api-compat")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: pip install {package}"
    return None


def to_host(x: Any) -> Any:
    import numpy as np

    return np.asarray(x)


def from_host(a: Any, device: Any = None) -> Any:
    return a


def device(name: str) -> Any:
    if name != "cpu":
        raise ValueError(f"numpy has one device, 'cpu'; got {name!r}")
    return "cpu"


def version() -> str | None:
    import numpy as np

    return np.__version__


NUMBA_ENV = "NNBACKEND_NUMBA"
FAST16_HINT = "pip install 'nnbackend[fast16]'"


def numba_unused(environ: Mapping[str, str] = os.environ) -> str | None:
    """Why the float16 conversions are not compiled with numba here
    (:mod:`nnbackend.backends.numba_half`), or ``None`` when they are."""
    setting = environ.get(NUMBA_ENV, "").strip()
    if setting.lower() in ("0", "false", "no", "off"):
        return f"turned off by {NUMBA_ENV}={setting}"
    if importlib.util.find_spec("numba") is None:
        return f"numba is not installed: {FAST16_HINT}"
    return None


KEEP_MEMORY_ENV = "NNBACKEND_KEEP_FREED_MEMORY"
_allocator: dict[str, str | None] = {}  # "result": None (applied) or why not, once per process


def keep_freed_memory() -> str | None:
    """Ask glibc's malloc to keep freed memory in the process instead of handing it back to
    the OS: large arrays are then carved from the heap (mmap threshold 1 GiB) and the heap is
    never trimmed, so a training step that frees and reallocates the same megabyte arrays
    every step stops page-faulting them in again (issue 19: the medium float64 step took
    7,100 page faults a step by default and none with this, 42.6 against 30.2 ms on a loaded
    2-core machine). The cost: the process keeps its peak heap. Opt in with
    ``NNBACKEND_KEEP_FREED_MEMORY=1`` (applied when the numpy backend's kernels are first
    built) or by calling this. Returns ``None`` when applied, else why not (not glibc)."""
    if "result" in _allocator:
        return _allocator["result"]
    import ctypes
    import platform

    reason: str | None = None
    if platform.libc_ver()[0] != "glibc":
        reason = f"the C library is not glibc ({platform.libc_ver()[0] or 'unknown'})"
    else:
        try:
            mallopt = ctypes.CDLL(None).mallopt
            m_trim_threshold, m_mmap_threshold = -1, -3
            ok = mallopt(m_mmap_threshold, 1 << 30) or mallopt(m_mmap_threshold, 1 << 25)
            ok = ok and mallopt(m_trim_threshold, 2**31 - 1)
            if not ok:
                reason = "glibc's mallopt refused the thresholds"
        except (OSError, AttributeError) as exc:
            reason = f"mallopt is unavailable ({exc})"
    _allocator["result"] = reason
    return reason


def _keep_memory_requested(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get(KEEP_MEMORY_ENV, "").strip().lower() in ("1", "true", "yes", "on")


_compiled: dict[str, Any] = {}  # "module" or "error", once per process


def compiled_conversions() -> tuple[Any, str | None]:
    """``(module, None)``: :mod:`nnbackend.backends.numba_half`, imported and its loops
    compiled (a warm-up call on one element, so a numba that cannot compile them is found
    here, not in the middle of a training step); ``(None, why)`` otherwise."""
    reason = numba_unused()
    if reason is not None:
        return None, reason
    if not _compiled:
        try:
            import numpy as np

            from nnbackend.backends import numba_half

            one16, one32 = np.zeros(1, np.uint16), np.zeros(1, np.float32)
            numba_half.widen_into(one16, np.zeros(65536, np.float32), one32)
            numba_half.narrow_into(one32, one32.view(np.uint32), one16)
            numba_half.sub_scaled_into(
                one16, one16, np.float32(0.0), np.zeros(65536, np.float32), one32
            )
            _compiled["module"] = numba_half
        except Exception as exc:  # a broken numba: NumPy's conversions still work
            _compiled["error"] = f"numba fails here ({type(exc).__name__}: {exc})"
    return _compiled.get("module"), _compiled.get("error")


def scatter_add(target: Any, indices: Any, values: Any) -> Any:
    import numpy as np

    np.add.at(target, indices, values)
    return target


def kernels() -> dict[str, Any]:
    """Fast paths for the engine. Besides ufunc reductions, float16 <-> float32 conversions:
    NumPy converts float16 in software (this wheel's baseline has no F16C), about 2.5 ns an
    element, and 65 ns for results that are subnormal in float16 (small gradients are). With
    numba installed (``nnbackend[fast16]``), compiled loops do it at 0.35 and 0.42 ns
    (:mod:`nnbackend.backends.numba_half`); without, a lookup table (float16 -> float32) and
    IEEE bit arithmetic (float32 -> float16, rounding to nearest even, after Maratyszcza's FP16
    library) give ``astype``'s very values (NaN stays NaN) at a constant 0.8 and 1.6 ns."""
    import numpy as np

    if _keep_memory_requested():
        keep_freed_memory()
    u32 = np.uint32
    # All 65536 float16 bit patterns, as float32: 256 KiB, built once.
    table = np.arange(65536, dtype=u32).astype(np.uint16).view(np.float16).astype(np.float32)
    small = 4096  # below this, astype is cheaper than a dozen array operations, unless...
    tiny = np.float32(2.0**-14)  # ... many values fall below float16's smallest normal
    chunk = 1 << 16  # elements per pass, so the temporaries stay in the core's cache
    # Array operands: NumPy's maximum / minimum with a scalar take a slower loop.
    smallest_bias = np.full(chunk, 0x38800000, dtype=u32)  # float16's smallest normal * 2**112
    quiet_nan = np.full(chunk, 0x7F800200, dtype=u32)  # below every NaN, above infinity

    # numba (about 130 MB of memory once imported) is loaded on the first conversion that
    # needs it, not when the kernels are built: a float32 or float64 run never imports it.
    # Whether it may be used is decided now (NNBACKEND_NUMBA, numba installed: no import).
    loaded: list[Any] = [] if numba_unused() is None else [None]

    def _compiled() -> Any:
        if not loaded:
            loaded.append(compiled_conversions()[0])
        return loaded[0]

    def float16_to_float32(x: Any, out: Any = None) -> Any:
        """``x`` as float32; into ``out`` (a float32 array of ``x``'s shape) when given, so
        a copy remade every step reuses its memory instead of fresh pages."""
        x = np.asarray(x)
        if out is not None and (
            out.shape != x.shape
            or out.dtype != np.float32
            or not (out.flags.c_contiguous and out.flags.writeable)
            or np.may_share_memory(out, x)
        ):
            out = None
        # (another dtype by value: the table and the kernel read float16 bits)
        if x.dtype != np.float16 or x.size < 256:
            if out is None:
                return x.astype(np.float32)
            out[...] = x
            return out
        compiled = _compiled()
        if compiled is not None:
            src = np.ascontiguousarray(x).reshape(-1).view(np.uint16)
            if out is None:
                out = np.empty(x.shape, dtype=np.float32)
            compiled.widen_into(src, table, out.reshape(-1))
            return out
        # take(mode="wrap") writes straight into `out`; the indices are < 65536 anyway.
        return table.take(x.view(np.uint16), out=out, mode="wrap")

    def _narrow_into(x: Any, dst: Any) -> None:
        # x: 1-D contiguous float32, at most `chunk` elements; dst: its uint16 destination
        n = x.size
        w = x.view(u32)
        base = np.abs(x)
        base *= np.float32(2.0**112)  # overflows to inf exactly where float16 does
        base *= np.float32(2.0**-110)
        bias = w & u32(0x7F800000)
        np.maximum(bias, smallest_bias[:n], out=bias)
        bias += u32(0x07800000)
        base += bias.view(np.float32)  # rounds the mantissa to 10 bits, ties to even
        bits = base.view(u32)
        np.minimum(bits, quiet_nan[:n], out=bits)  # every NaN -> one that stays NaN below
        out = bits >> u32(13)
        out &= u32(0x7C00)
        bits &= u32(0x0FFF)
        out += bits
        np.right_shift(w, u32(16), out=bits)
        bits &= u32(0x8000)  # the sign
        out |= bits
        np.copyto(dst, out, casting="unsafe")

    def float32_to_float16(x: Any) -> Any:
        x = np.asarray(x)
        n = x.size
        if x.dtype != np.float32 or n < 256:
            with np.errstate(over="ignore"):  # overflow gives inf, silently, as below
                return x.astype(np.float16)
        compiled = _compiled()
        if (
            compiled is None  # the compiled loop beats astype from 256 values on
            and n < small
            and np.count_nonzero(np.abs(x) < tiny) <= n >> 5
        ):
            # astype is quick for a few values, and for values that stay normal in float16
            with np.errstate(over="ignore"):  # overflow gives inf, silently, as below
                return x.astype(np.float16)
        x = np.ascontiguousarray(x)
        flat = x.reshape(-1)
        result = np.empty(x.shape, dtype=np.float16)
        dst = result.reshape(-1).view(np.uint16)
        if compiled is not None:
            compiled.narrow_into(flat, flat.view(u32), dst)
            return result
        with np.errstate(over="ignore", invalid="ignore"):
            for lo in range(0, flat.size, chunk):
                _narrow_into(flat[lo : lo + chunk], dst[lo : lo + chunk])
        return result

    def float16_sub_scaled(y: Any, a: float, x: Any) -> bool:
        """``y -= a * x`` in place for float16 ``y`` and ``x`` of one shape, both
        C-contiguous and apart, ``a`` a Python float, with the compiled loop: one pass,
        rounded once, the bits of the blockwise NumPy path (0.9-1.1 against 1.1-1.4 ns a
        value). ``False`` where it does not apply (no numba, another layout).

        One thread: a second one, tried, gained nothing inside a training step, where
        OpenBLAS's worker thread still spins on the other core after the step's GEMMs."""
        if (
            type(a) is not float
            or x.dtype != np.float16
            or y.dtype != np.float16
            or x.shape != y.shape
            or x.size < 256
            or not (y.flags.c_contiguous and x.flags.c_contiguous and y.flags.writeable)
            or np.may_share_memory(x, y)
        ):
            return False
        compiled = _compiled()
        if compiled is None:
            return False
        compiled.sub_scaled_into(
            y.reshape(-1).view(np.uint16),
            x.reshape(-1).view(np.uint16),
            np.float32(a),
            table,
            np.empty(4096, np.float32),  # the block: float32 values held at once, in cache
        )
        return True

    def float16_positive(x: Any) -> Any:
        """``x > 0`` for float16 ``x``, read from its bits (NumPy compares float16 in
        software): positive sign, nonzero, and at most infinity (NaN is not positive)."""
        bits = np.asarray(x).view(np.int16)
        return (bits > 0) & (bits <= 0x7C00)

    def float16_nan(x: Any) -> Any:
        """``isnan(x)`` for float16 ``x``, read from its bits."""
        return (np.asarray(x).view(np.uint16) & 0x7FFF) > 0x7C00

    def float16_finite(x: Any) -> bool:
        """Whether every value of float16 ``x`` is finite, read from its bits (NumPy's
        ``isfinite`` runs in software: 330 against 15 us for 256 x 1024)."""
        bits = np.bitwise_and(np.asarray(x).view(np.uint16), 0x7C00)
        return int(bits.max(initial=0)) != 0x7C00

    def float16_keep(mask: Any, x: Any) -> Any:
        """``where(mask, x, 0)`` for float16 ``x``: its bits times the mask (``where`` takes
        a branching loop, 30 times slower on random masks)."""
        return (np.asarray(x).view(np.uint16) * mask).view(np.float16)

    return {
        "sum": np.add.reduce,
        "max": np.maximum.reduce,
        "astype": np.ndarray.astype,
        "count_nonzero": np.count_nonzero,
        "float16_to_float32": float16_to_float32,
        "float32_to_float16": float32_to_float16,
        "float16_positive": float16_positive,
        "float16_keep": float16_keep,
        "float16_nan": float16_nan,
        "float16_finite": float16_finite,
        "float16_sub_scaled": float16_sub_scaled,
    }


def _read_only(a: Any) -> Any:
    """``a``, made read-only: a cached constant that callers read and never write."""
    a.flags.writeable = False
    return a


# The lowest input of NumpyOps.sigmoid per dtype (``dtype.char``): exp(-x) stays finite there
# (a little above -log of the largest value, for exp's own rounding).
_SIGMOID_FLOOR = {
    "f": -0.999 * math.log(3.4028234663852886e38),
    "d": -0.999 * math.log(1.7976931348623157e308),
}

# Parameters of at least this many elements are updated through a scratch buffer: below
# glibc's default mmap threshold (128 KiB) a temporary is cheap to allocate.
_SCRATCH_MIN = 32768
# SGD's ``a * x`` goes to the scratch buffer from this many elements up too: a fresh 80 KiB
# temporary (the 1024 x 10 layer's update in float64) freed at the top of the heap now and
# then came back as new pages, 18-20 page faults at a time (benchmarks/NOTES.md, session
# 12); below, an update is too small to matter and the tiny step pays no extra comparison.
_UPDATE_SCRATCH_MIN = 4096
# From this many elements up, np.maximum against a constant reads it from an array
# (NumpyOps._maximum): below, the lookup costs more than the faster loop saves. The arrays
# of constants hold at most _FILLED_MAX elements (4 MiB in float32); larger inputs are taken
# a block at a time.
_FILLED_MIN = 4096
_FILLED_MAX = 1 << 20
# Sums of products of up to this many float32/float64 values go through a BLAS dot product
# (NumpyOps.sum_product): its rounding error grows with the count over its few accumulators,
# where NumPy's pairwise sum's grows with the logarithm of the count.
_DOT_MAX = 4096
# Elements per pass of a float16 update, and of a blocked optimizer update: the temporaries
# stay small (and in cache).
_CHUNK = 1 << 16
# Optimizer updates run a block at a time (NumpyOps._in_blocks). From this size up a block is
# a buffer of its own: glibc maps a gradient-sized buffer this large on its own (above its
# largest mmap threshold), where it only held memory (64 MiB for a 4096x4096 float32 layer).
# A smaller one lives in the heap, where, measured, it keeps glibc from trimming the heap
# between steps: without it the medium float64 MLP took 4,400 page faults a step and 17% more
# time (2026-12-02). So below this size the block is the start of that buffer, kept whole.
_OWN_BLOCK_MIN_BYTES = 32 << 20


# The recycled intermediates (NumpyOps.recycled): at most this many arrays per shape and
# dtype (an MLP's step holds two or three per layer at once, and the previous step's graph
# may still be alive while the next forward runs), and at most this many bytes per thread
# in all, the shapes asked for longest ago let go first.
_POOL_DEPTH = 64
_POOL_BYTES = 1 << 30


# CPython's reference count of an array (NumpyOps.reuse and _free_in), without a Python
# frame of its own: each caller's probe measures the count it sees for an unreferenced array.
_references = sys.getrefcount


_POOLS: weakref.WeakSet[Any] = weakref.WeakSet()  # the NumpyOps whose threads pool arrays


def empty_cache() -> dict[str, int]:
    """Let go of the calling thread's recycled intermediates (:meth:`NumpyOps.recycled`):
    ``{"freed_bytes": ..., "held_bytes": 0}``, or ``{}`` when none were kept."""
    freed = sum(ops.empty_pool() for ops in list(_POOLS))
    return {"freed_bytes": freed, "held_bytes": 0} if freed else {}


class NumpyOps(Ops):
    """NumPy's operations: ufunc reductions, ``matmul`` with ``out=``, ``np.add.at``, float16
    computed in float32 (NumPy's float16 arithmetic runs in software, about 250x slower for
    a matrix product) with exact, faster conversions, and an SGD step without temporaries."""

    float16_compute = "float32"

    def __init__(self, xp: Any, record: Any) -> None:
        super().__init__(xp, record)
        import numpy as np

        self._np = np
        self._f16 = np.dtype(np.float16)  # compared with a dtype: cheaper than with the type
        self._bool = np.dtype(np.bool_)
        self._local = threading.local()  # the scratch buffers, one dict per thread
        self._summers: dict[Any, Any] = {}  # (rows, dtype) -> column_summer's function
        # SGD's float16 update in one compiled pass (numba), where the record offers it.
        self._f16_sub_scaled = self.kernel("float16_sub_scaled")
        # NumPy's own asarray: 0.14 us for a 0-d scalar against 1.5 us through the Array
        # API wrapper (two calls a step: the loss and its seed gradient).
        self.asarray = np.asarray
        # sigmoid's floor (as a number and as a read-only 0-d array) and its one (0-d): NumPy
        # 2 turns a Python float operand into an array on every call (0.72 against 0.45 us
        # for a 30 x 10 maximum).
        self._sigmoid_constants = {
            char: (floor, *(_read_only(np.asarray(v, dtype=char)) for v in (floor, 1.0)))
            for char, floor in _SIGMOID_FLOOR.items()
        }
        # sub_scaled_'s last small-array rate: (rate, dtype, the rate as a 0-d array)
        self._scale: tuple[Any, Any, Any] = (None, None, None)
        self._sole_references = _untraced(self._probe_references)
        self._pooled_references = _untraced(self._probe_pool)
        if self.inplace:
            self.recycle_min = self.reuse_min = _SCRATCH_MIN

    def read_only(self, x: Any) -> bool:
        """:meth:`Ops.read_only`: a NumPy array whose ``writeable`` flag is off, where the
        updates are in place."""
        return self.inplace and type(x) is self._np.ndarray and not x.flags.writeable

    def reuse(self, spare: Any, shape: tuple[int, ...], dtype: Any) -> Any:
        """``spare`` when it is a writable, C-contiguous NumPy array of ``shape`` and
        ``dtype`` of at least :data:`_SCRATCH_MIN` elements that owns its memory (no view of
        another array) and that nothing else refers to: CPython's reference count shows only
        the caller's own reference (a user who kept ``g = p.grad``, a view of it, a torch
        tensor or memoryview made from it all hold a reference), else ``None``. Below the
        size, glibc's malloc serves arrays from its free lists without page faults, and the
        checks would cost more than they save."""
        np = self._np
        if (
            type(spare) is not np.ndarray
            or spare.size < _SCRATCH_MIN
            or spare.shape != shape
            or spare.dtype != dtype
            or spare.base is not None
            or not spare.flags.c_contiguous
            or not spare.flags.writeable
            or not self.inplace
            or not self.may_cache
        ):
            return None
        if _references(spare) > self._sole_references:
            return None
        return spare

    def out_array(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """``np.empty(shape, dtype)`` for the sizes :meth:`reuse` takes, else ``None``."""
        if not self.inplace or not self.may_cache or math.prod(shape) < _SCRATCH_MIN:
            return None
        return self._np.empty(shape, dtype=dtype)

    def recycled(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """An array of ``shape`` and ``dtype`` (garbage values) for a step's intermediate:
        one given out for the same shape in an earlier step that nothing refers to any more
        (CPython's reference count shows only this pool's own reference: a user's, a view's,
        a graph's, a torch tensor's or a memoryview's all count; a weak reference does not,
        so an array reached only through one may be rewritten), else a new one, kept for the
        steps to come; ``None`` below :data:`_SCRATCH_MIN` elements or where the ops may not
        keep arrays.

        Why: a step frees and makes the same megabyte arrays every step, and whether glibc
        hands their memory back to the OS in between (to page-fault it in again, 1,400 to
        7,000 faults a step on the medium float64 MLP) depended on where the heap happened
        to end. Pools are per thread (two threads must never be handed the same array) and
        bounded (:data:`_POOL_DEPTH`, :data:`_POOL_BYTES`); :func:`nnbackend.empty_cache`
        empties the calling thread's."""
        if not self.inplace or not self.may_cache:
            return None
        try:  # (the thread's pool, without _pool()'s call: ten calls a medium MLP step)
            pool = self._local.pool
        except AttributeError:
            pool = self._pool()
        key = (shape, dtype)
        ring = pool.get(key)
        if ring is not None:  # (a shape in the pool is large enough: _pool_keep's callers)
            pool.move_to_end(key)
            free = self._free_in(ring)
            if free is not None:
                return free
        elif math.prod(shape) < _SCRATCH_MIN:
            return None
        array = self._np.empty(shape, dtype=dtype)
        self._pool_keep(pool, key, array)
        return array

    def _free_in(self, ring: list[Any]) -> Any:
        """The first array of ``ring`` that only the ring refers to, moved to the ring's end,
        or ``None``. Arrays in use gather at the end, so in a steady state the first one
        looked at is free."""
        limit = self._pooled_references
        for i, array in enumerate(ring):
            if _references(array) <= limit:
                ring.append(ring.pop(i))
                return array
        return None

    def _probe_pool(self) -> int:
        # The count _free_in sees for an array only its ring holds, measured with _free_in
        # itself (the interpreter's own references on the way differ between versions).
        ring = [self._np.empty(1)]
        for limit in range(1, 64):
            self._pooled_references = limit
            if self._free_in(ring) is not None:
                return limit
        return 0  # never free: recycled() then always makes new arrays

    def _pool(self) -> Any:
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = collections.OrderedDict()
            self._local.pool_bytes = 0
            _POOLS.add(self)
        return pool

    def _pool_keep(self, pool: Any, key: Any, array: Any) -> None:
        """Keep ``array`` in ``key``'s ring where the bounds allow, letting go of the shapes
        asked for longest ago to make room."""
        ring = pool.get(key)
        if (ring is not None and len(ring) >= _POOL_DEPTH) or array.nbytes > _POOL_BYTES:
            return
        local = self._local
        while local.pool_bytes + array.nbytes > _POOL_BYTES and pool:
            _, dropped = pool.popitem(last=False)
            local.pool_bytes -= sum(a.nbytes for a in dropped)
        ring = pool.get(key)
        if ring is None:
            ring = pool[key] = []
        ring.append(array)
        local.pool_bytes += array.nbytes

    def empty_pool(self) -> int:
        """Let go of the calling thread's recycled arrays; returns their bytes (those still
        in use stay alive with their users)."""
        pool = getattr(self._local, "pool", None)
        if not pool:
            return 0
        freed = int(self._local.pool_bytes)
        pool.clear()
        self._local.pool_bytes = 0
        return freed

    def _probe_references(self) -> int:
        # The reference count reuse() sees for an array that only its caller's local holds:
        # measured with the very same call shape (a local, a method, _references), so the
        # interpreter's own references on the way are counted alike on every CPython.
        probe = self._np.empty(1)
        return self._count_via(probe)

    def _count_via(self, a: Any) -> int:
        return _references(a)

    def matmul(self, a: Any, b: Any, out: Any = None) -> Any:
        """``a @ b``, into ``out`` when its shape and dtype fit."""
        if out is not None:
            return self._np.matmul(a, b, out=out)
        return a @ b

    def expand(self, x: Any, shape: tuple[int, ...]) -> Any:
        """A copy of the broadcast (no additions: float16 ones run in software)."""
        return self._np.broadcast_to(x, shape).copy()

    def scatter_add(self, target: Any, indices: Any, values: Any) -> Any:
        """``np.add.at`` into ``target``; returns ``target``."""
        if not self.inplace:
            return super().scatter_add(target, indices, values)
        self._np.add.at(target, indices, values)
        return target

    # -- elementwise and per-row kernels: fewer calls for the same values ----------------------
    # ReLU: the same ufuncs as Ops's, their results in recycled arrays for float32 and
    # float64 arrays of recycle_min elements or more.
    def _recycled_like(self, x: Any, dtype: Any) -> Any:
        if type(x) is not self._np.ndarray or x.dtype.char not in "fd":
            return None
        return self.recycled(x.shape, dtype)

    def relu_mask(self, x: Any) -> Any:
        """``x > 0`` (:meth:`Ops.relu_mask`), into a recycled array."""
        out = self._recycled_like(x, self._bool) if x.size >= self.recycle_min else None
        if out is None:
            return super().relu_mask(x)
        return self._np.greater(x, 0, out=out)

    def leaky_relu(self, x: Any, mask: Any, slope: float) -> Any:
        """:meth:`Ops.leaky_relu`; ReLU's ``maximum(x, 0)`` into a recycled array, the zero
        read from an array (:meth:`_maximum`)."""
        big = x.size >= self.recycle_min and slope == 0.0
        out = self._recycled_like(x, x.dtype) if big else None
        if out is None:
            return super().leaky_relu(x, mask, slope)
        return self._maximum(x, 0.0, out)

    def _maximum(self, x: Any, value: float, out: Any = None, scalar: Any = None) -> Any:
        """``np.maximum(x, value)`` (into ``out``), for C-contiguous arrays of
        :data:`_FILLED_MIN` elements or more with ``value`` read from :meth:`_constant`'s
        array: NumPy's vectorised loop takes two arrays, a scalar runs its scalar loop (256 x
        1024 float32: 31 against 83 us; float64 53 against 126). The same bits. At most
        :data:`_FILLED_MAX` constants are kept: a larger ``x`` is taken a block at a time.
        Other arrays take ``scalar`` where given, ``value`` as a 0-d array of ``x``'s dtype
        (cheaper than the Python number, which NumPy 2 converts on every call)."""
        np = self._np
        n = x.size
        if (
            n < _FILLED_MIN
            or not x.flags.c_contiguous
            or (out is not None and not out.flags.c_contiguous)
        ):
            return np.maximum(x, value if scalar is None else scalar, out=out)
        filled = self._constant(value, min(n, _FILLED_MAX), x.dtype)
        if n <= _FILLED_MAX:
            return np.maximum(x, filled[:n].reshape(x.shape), out=out)
        if out is None:
            out = np.empty_like(x)
        flat_x, flat_out = x.reshape(-1), out.reshape(-1)  # views: both are C-contiguous
        for lo in range(0, n, _FILLED_MAX):
            hi = min(lo + _FILLED_MAX, n)
            np.maximum(flat_x[lo:hi], filled[: hi - lo], out=flat_out[lo:hi])
        return out

    def _constant(self, value: float, size: int, dtype: Any) -> Any:
        """A flat read-only array of at least ``size`` elements holding ``value`` in
        ``dtype``, to read and never write: one per value and dtype, kept at the largest size
        asked for (the caller takes the view it needs)."""
        key = ("filled", value, dtype)
        found = self._cache.get(key)
        if found is None or found.size < size:
            found = _read_only(self._np.full(size, value, dtype=dtype))
            if self.may_cache:
                self._cache[key] = found
        return found

    def leaky_relu_backward(self, gy: Any, mask: Any, slope: float) -> Any:
        """:meth:`Ops.leaky_relu_backward`; ReLU's ``mask * gy`` into a recycled array (the
        mask as 0/1 factors, then the same product)."""
        big = gy.size >= self.recycle_min and slope == 0.0
        out = self._recycled_like(gy, gy.dtype) if big else None
        if out is None:
            return super().leaky_relu_backward(gy, mask, slope)
        self._np.copyto(out, mask)
        out *= gy
        return out

    def sigmoid(self, x: Any) -> Any:
        """``1 / (1 + exp(-x))`` in five calls (the split form takes eight: 1.4 us of the
        tiny step's 3.8), for float32 and float64 arrays; others take :meth:`Ops.sigmoid`.
        ``x`` is first raised to the lowest value whose ``exp(-x)`` is finite (-88.6 in
        float32, -708 in float64), so nothing overflows: results keep full relative
        precision down to there and are that floor's subnormal value (3e-39 in float32,
        1e-308 in float64) below it, where the split form's go on down to 0."""
        constants = self._sigmoid_constants.get(x.dtype.char)
        if constants is None or x.ndim == 0:
            return super().sigmoid(x)
        np = self._np
        floor, floor_0d, one = constants  # 0-d arrays: the floats' values, read sooner
        e = self._maximum(x, floor, scalar=floor_0d)
        np.negative(e, out=e)
        np.exp(e, out=e)
        np.add(e, one, out=e)
        return np.reciprocal(e, out=e)

    def row_max(self, x: Any) -> Any:
        """Each row's maximum, (N, 1). Over a few columns of many rows, NumPy's reduction
        runs a loop per row (12 us for 256 x 10): there it is one ``maximum`` per column
        pair (6 us; 10 against 46 us for 1024 x 10), the very same values. More than two
        axes: as rows of the last one where that is a view."""
        if x.ndim != 2:
            return self._as_rows(self.row_max, self._np.maximum, x)
        n, c = x.shape
        if not 2 <= c <= 64 or (c > 3 and n < 16 * c):
            return self._np.maximum.reduce(x, axis=1, keepdims=True)
        maximum, cols = self._np.maximum, x.T
        m = maximum(cols[0], cols[1])
        for j in range(2, c):
            maximum(m, cols[j], out=m)
        return m.reshape(n, 1)

    def row_sum(self, x: Any) -> Any:
        """Each row's sum, (N, 1): up to 256 columns of float32 or float64, one product with
        a column of ones (BLAS: 1.5 against 6 us for 256 x 10, 0.9 against 1.6 for 30 x 3);
        beyond, NumPy's pairwise sum, whose rounding error grows more slowly with the row.
        More than two axes: as rows of the last one where that is a view."""
        if x.ndim != 2:
            return self._as_rows(self.row_sum, self._np.add, x)
        c = x.shape[1]
        if c > 256 or x.dtype.char not in "fd":
            return self._np.add.reduce(x, axis=1, keepdims=True)
        key = ("ones_column", c, x.dtype)
        ones = self._cache.get(key)
        if ones is None:  # (a partial, not a lambda: see Ops.one)
            ones = self.cached(key, functools.partial(self._np.ones, (c, 1), dtype=x.dtype))
        return x @ ones

    def column_sum(self, x: Any) -> Any:
        """:meth:`column_summer`'s function for ``x``'s rows and dtype, looked up in a small
        table of its own (a bias gradient's every step)."""
        key = (x.shape[0], x.dtype)
        summer = self._summers.get(key)
        if summer is None:
            if len(self._summers) >= 64:  # row counts that keep changing: start again
                self._summers.clear()
            summer = self.column_summer(*key)
            if self.may_cache:
                self._summers[key] = summer
        return summer(x)

    def column_summer(self, n_rows: int, dtype: Any) -> Any:
        """For float32 and float64, the product of a row of ``n_rows`` ones with the array
        (BLAS: 0.7 against 1.3 us for 30 x 10, 1.1 against 4.3 for 256 x 10, 11 against 18
        for 256 x 1024). NumPy's reduction over the first axis adds the rows one after
        another too, so the sums are as accurate. The ones are :meth:`_constant`'s (a batch
        size that varies makes no new array each time)."""
        dtype = self._np.dtype(dtype)
        if dtype.char not in "fd":
            return super().column_summer(n_rows, dtype)
        return self._constant(1.0, n_rows, dtype)[:n_rows].__matmul__

    def sum_product(self, a: Any, b: Any) -> Any:
        """``sum(a * b)`` of small contiguous float32 or float64 arrays of one shape and dtype
        as one BLAS dot product (0.8 against 1.1 us for 30 x 3: no product array, no second
        pass); a product and NumPy's pairwise sum elsewhere."""
        if (
            a.size > _DOT_MAX
            or a.dtype.char not in "fd"
            or a.dtype != b.dtype
            or a.shape != b.shape
            or not (a.flags.c_contiguous and b.flags.c_contiguous)
        ):
            return self._np.add.reduce(a * b, axis=None)
        return self._np.vdot(a, b)

    def _as_rows(self, kernel: Any, ufunc: Any, x: Any) -> Any:
        """``kernel`` (a 2-D row reduction) over the last axis of a C-contiguous ``x`` of
        three or more axes, seen as rows; else ``ufunc``'s reduction over that axis."""
        if x.ndim < 2 or not x.flags.c_contiguous:
            return ufunc.reduce(x, axis=-1, keepdims=True)
        lead = tuple(x.shape[:-1])
        return kernel(x.reshape(-1, x.shape[-1])).reshape(*lead, 1)

    def one_hot(self, labels: Any, n_classes: int, dtype: Any) -> tuple[Any, Any]:
        """Up to 256 classes of float32 or float64: rows taken by ``label + 1`` from a cached
        identity matrix between two rows of NaN, the index clipped, so that every label
        outside ``[0, n_classes)`` takes a NaN row (one that wraps around in ``+ 1`` too).
        Two calls (1 us for 30 labels) instead of a comparison, a conversion and a count
        (2 us); the check is left to the caller (``None``): a bad label makes a sum over the
        one-hot rows NaN."""
        kind = labels.dtype.kind
        dtype = self._np.dtype(dtype)  # also given as a type (xp.float32)
        if n_classes > 256 or labels.ndim != 1 or kind not in "iu" or dtype.char not in "fd":
            return super().one_hot(labels, n_classes, dtype)
        key = ("one_hot_rows", n_classes, dtype)
        table = self._cache.get(key)
        if table is None:
            table = self._one_hot_table(key, n_classes, dtype)
        # + 1 in a wide integer: in the labels' own dtype the largest one wraps around
        # (uint8 255 of 256 classes, a byte model's, would take a NaN row)
        index = (
            labels + 1
            if labels.dtype.itemsize == 8
            else self._np.add(labels, 1, dtype=self._np.intp)
        )
        return table.take(index, axis=0, mode="clip"), None

    def _one_hot_table(self, key: Any, n_classes: int, dtype: Any) -> Any:
        """:meth:`one_hot`'s identity rows between two rows of NaN, made once (apart from
        :meth:`one_hot`: a closure there would cost each call its cells)."""
        np = self._np

        def make() -> Any:
            rows = np.full((n_classes + 2, n_classes), np.nan, dtype=dtype)
            rows[1:-1] = np.eye(n_classes, dtype=dtype)
            return rows

        return self.cached(key, make)

    def sub_scaled_(self, y: Any, a: float, x: Any) -> Any:
        """``y -= a * x`` in place; for large arrays ``a * x`` goes to scratch kept across
        steps (a fresh parameter-sized temporary, freed at the top of the heap, made glibc
        hand the memory back and fault it in again every step: benchmarks/NOTES.md, 30% of
        the 784-1024-1024-10 step), a cache-sized block at a time where the arrays allow
        (:meth:`_in_blocks`); float16 runs in float32 a block of rows at a time. Where NumPy's
        wheels ship OpenBLAS, large float32/float64 updates by a Python float are one BLAS
        axpy instead (:mod:`nnbackend.backends.blas`): rounded once, like PyTorch's, so a
        value may differ from ``y - a * x`` in its last bit."""
        if x.size >= _UPDATE_SCRATCH_MIN:  # (small ones: one comparison, for the tiny step)
            fused = (
                self._axpy_update(y, a, x)
                if x.size >= _SCRATCH_MIN
                else self._sub_scaled_scratch(y, a, x)
            )
            if fused is not None:
                return fused
        if not self.inplace:  # a record that forbids in-place writes: rebind
            return super().sub_scaled_(y, a, x)
        if y.dtype == self._f16 and x.dtype == self._f16:  # (a float32 gradient set by
            # hand goes the general way: the float16 paths read x's bits as float16)
            if self._f16_sub_scaled is not None and self._f16_sub_scaled(y, a, x):
                return y
            return self._sub_scaled_half(y, a, x)
        if x.size < _SCRATCH_MIN or not self.may_cache:
            if type(a) is float:
                # The rate as a 0-d array of x's dtype, kept while it is the same: NumPy 2
                # makes a Python float operand into an array on every call (0.27 us of a
                # 30 x 10 product). The same values: a weak Python float takes x's dtype.
                scale = self._scale
                if scale[0] != a or scale[1] is not x.dtype:
                    if x.dtype.kind not in "fc":  # an integer or boolean gradient set by hand:
                        y -= a * x  # the rate as that dtype would be truncated
                        return y
                    scale = self._scale = (a, x.dtype, _read_only(self._np.asarray(a, x.dtype)))
                y -= scale[2] * x
            else:
                y -= a * x
            return y
        if x.dtype == y.dtype and self._blockwise(y, (x,)):
            # The width-1024 batch-2 step 3.2-3.3 -> 2.8-3.0 ms, medium float64 26.4-26.7 ->
            # 25.0-25.4 (benchmarks/NOTES.md, 2026-12-02).
            return self._sub_scaled_blocks(y, a, x)
        if x.dtype.kind not in "fc":  # (the scratch buffer would take x's integer dtype)
            y -= a * x
            return y
        tmp = self._np.multiply(x, a, out=self._temp(x, 0))
        y -= tmp
        return y

    def _sub_scaled_scratch(self, y: Any, a: Any, x: Any) -> Any:
        """``y -= a * x`` for a mid-sized float32/float64 update by a Python float, ``a * x``
        in the scratch buffer (the same bits as ``y -= a * x``: the weak float takes
        ``x``'s dtype); ``None`` where it does not apply (:meth:`sub_scaled_` goes on)."""
        np = self._np
        if (
            type(a) is not float
            or not self.inplace
            or not self.may_cache
            or type(x) is not np.ndarray
            or type(y) is not np.ndarray
            or x.dtype != y.dtype
            or x.dtype.char not in "fd"
            or x.shape != y.shape
        ):
            return None
        y -= np.multiply(x, a, out=self._temp(x, 0))
        return y

    def _sub_scaled_blocks(self, y: Any, a: float, x: Any) -> Any:
        """:meth:`sub_scaled_` a cache-sized block at a time (apart from it: the closure
        would cost each of its calls, the tiny step's four included, its cells)."""
        multiply, subtract = self._np.multiply, self._np.subtract

        def body(y: Any, x: Any, t: Any) -> None:
            subtract(y, multiply(x, a, out=t), out=y)

        return self._in_blocks(body, y, (x,), 1)

    def _axpy_update(self, y: Any, a: Any, x: Any) -> Any:
        """``y - a * x`` for large arrays through NumPy's BLAS axpy where it applies
        (:func:`nnbackend.backends.blas.usable`): in place where the record allows (one pass
        on the BLAS threads, 2.5-3x faster than two ufuncs), else into a copy, so rebinding
        backends get the same bits; ``None`` where it does not apply."""
        np = self._np
        if type(y) is not np.ndarray or type(x) is not np.ndarray:
            return None
        axpy = blas.usable(np, y, a, x)
        if axpy is None:
            return None
        if not self.inplace:
            y = y.copy()
        elif not y.flags.writeable:
            return None  # NumPy's own error, from the ufunc path
        axpy(y.size, -a, blas.address(x), blas.address(y))
        return y

    def _blockwise(self, y: Any, arrays: tuple[Any, ...]) -> bool:
        """Whether an update of ``y`` from ``arrays`` may run a block at a time: all of one
        shape, C-contiguous, none overlapping ``y`` (a block would read what another wrote)."""
        np = self._np
        if not y.flags.c_contiguous:
            return False
        for x in arrays:
            if x.shape != y.shape or not x.flags.c_contiguous or np.may_share_memory(x, y):
                return False
        return True

    def _in_blocks(self, body: Any, y: Any, arrays: tuple[Any, ...], temps: int) -> Any:
        """Run ``body(y, *arrays, *scratch)`` over :data:`_CHUNK`-element blocks of the
        C-contiguous ``y`` and ``arrays`` (checked by :meth:`_blockwise`), with ``temps``
        cache-sized scratch blocks: the same ufuncs on each element, so the same values as one
        pass over the whole arrays, but the temporaries never go out to memory and back
        (1.6-1.9x faster for SGD's update from 784x1024 to 4096x4096, float32 and float64).

        Below :data:`_OWN_BLOCK_MIN_BYTES` a block is the start of the gradient-sized scratch
        buffer, which keeps its size (see there); from it up, a block of its own."""
        np = self._np
        flat_y = y.reshape(-1)
        flats = [x.reshape(-1) for x in arrays]
        n = flat_y.shape[0]
        if y.nbytes < _OWN_BLOCK_MIN_BYTES:
            blocks = [self._temp(y, slot).reshape(-1) for slot in range(temps)]
        else:
            scratch = self._scratch()
            blocks = []
            for slot in range(temps):
                key = (y.dtype, "block", slot)
                block = scratch.get(key)
                if block is None:
                    block = scratch[key] = np.empty((_CHUNK,), dtype=y.dtype)
                blocks.append(block)
        # SGD and most rules: no lists built per block (330 against 343 us for a 1024x1024
        # float32 SGD update, thread time, best of 9).
        if len(flats) == 1 and temps == 1:
            flat_x, block = flats[0], blocks[0]
            for lo in range(0, n, _CHUNK):
                hi = lo + _CHUNK if lo + _CHUNK < n else n
                body(flat_y[lo:hi], flat_x[lo:hi], block[: hi - lo])
            return y
        for lo in range(0, n, _CHUNK):
            hi = lo + _CHUNK if lo + _CHUNK < n else n
            body(flat_y[lo:hi], *[f[lo:hi] for f in flats], *[b[: hi - lo] for b in blocks])
        return y

    # -- optimizer rules through scratch buffers ---------------------------------------------
    # Each primitive below runs its Ops counterpart's expression as the same ufunc calls in
    # the same order (a * b and b * a, a + b and b + a are the same IEEE operation), writing
    # each temporary into a scratch buffer kept across steps instead of a new array: equal
    # bit for bit, and no parameter-sized allocations (each one above glibc's mmap threshold
    # is a fresh mmap and page faults every step). Small arrays, other dtypes or shapes, and
    # scalars that are not Python floats (a NumPy float64 would promote) take the generic
    # expression.
    def _scratch(self) -> dict[Any, Any]:
        """This thread's scratch buffers. One set per thread: NumPy lets go of the GIL inside
        a large ufunc, and two threads training two models would write each other's
        temporaries between a rule's two calls (silently wrong parameters:
        tests/test_optim_reuse.py)."""
        scratch: dict[Any, Any] | None = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = {}
        return scratch

    def _temp(self, like: Any, slot: int) -> Any:
        """Scratch buffer ``slot`` as an array of ``like``'s shape and dtype (its old values
        are garbage; the caller overwrites it)."""
        key = like.dtype if slot == 0 else (like.dtype, slot)  # slot 0: sub_scaled_'s buffer
        n = like.size
        scratch = self._scratch()
        flat = scratch.get(key)
        if flat is None or flat.shape[0] < n:
            flat = scratch[key] = self._np.empty((n,), dtype=like.dtype)
        return flat[:n].reshape(like.shape)

    def _fits(self, y: Any, arrays: tuple[Any, ...], scalars: tuple[Any, ...]) -> bool:
        """Whether an update of ``y`` from ``arrays`` and ``scalars`` may use the scratch
        buffers: large NumPy arrays of one shape and dtype and Python float scalars."""
        np = self._np
        if (
            type(y) is not np.ndarray
            or y.size < _SCRATCH_MIN
            or not self.inplace
            or not self.may_cache
        ):
            return False
        dtype, shape = y.dtype, y.shape
        for x in arrays:
            if type(x) is not np.ndarray or x.dtype != dtype or x.shape != shape:
                return False
        return all(type(s) is float for s in scalars)

    def sum_of_squares(self, x: Any, dtype: Any) -> Any:
        """``sum(x * x)`` with the squares in a scratch buffer (or in the widened copy) for
        large C-contiguous arrays: the same products summed in the same order, without a
        gradient-sized temporary per parameter per step."""
        np = self._np
        if (
            type(x) is not np.ndarray
            or x.size < _SCRATCH_MIN
            or not x.flags.c_contiguous
            or not self.may_cache
        ):
            return super().sum_of_squares(x, dtype)
        if x.dtype != dtype:
            wide = self.xp.astype(x, dtype)  # a new array: square it in place
            squares = np.multiply(wide, wide, out=wide)
        else:
            squares = np.multiply(x, x, out=self._temp(x, 0))  # (the SGD step's buffer)
        return self.xp.sum(squares)

    def _rule(self, body: Any, y: Any, arrays: tuple[Any, ...], temps: int) -> Any:
        """``body(y, *arrays, *scratch)`` a block at a time where :meth:`_blockwise` allows,
        else once over the whole arrays with gradient-sized scratch buffers."""
        if self._blockwise(y, arrays):
            return self._in_blocks(body, y, arrays, temps)
        body(y, *arrays, *[self._temp(y, slot) for slot in range(temps)])
        return y

    def add_scaled_(self, y: Any, a: Any, x: Any) -> Any:
        """``y += a * x``, ``a * x`` in a scratch buffer for large arrays."""
        if not self._fits(y, (x,), (a,)):
            return super().add_scaled_(y, a, x)
        np = self._np

        def body(y: Any, x: Any, t: Any) -> None:
            y += np.multiply(x, a, out=t)

        return self._rule(body, y, (x,), 1)

    def add_scaled_square_(self, y: Any, a: Any, x: Any) -> Any:
        """``y += a * (x * x)`` (``y += x * x`` for ``a=None``) through a scratch buffer."""
        if not self._fits(y, (x,), () if a is None else (a,)):
            return super().add_scaled_square_(y, a, x)
        np = self._np

        def body(y: Any, x: Any, t: Any) -> None:
            np.multiply(x, x, out=t)
            if a is not None:
                t *= a
            y += t

        return self._rule(body, y, (x,), 1)

    def add_scaled_diff_(self, y: Any, a: Any, x: Any, square: bool = False) -> Any:
        """``y += a * (x - y)`` (``x * x - y`` with ``square``) through a scratch buffer."""
        if not self._fits(y, (x,), (a,)):
            return super().add_scaled_diff_(y, a, x, square)
        np = self._np

        def body(y: Any, x: Any, t: Any) -> None:
            if square:
                np.multiply(x, x, out=t)
                t -= y
            else:
                np.subtract(x, y, out=t)
            t *= a
            y += t

        return self._rule(body, y, (x,), 1)

    def sub_times_(self, y: Any, a: Any, x: Any) -> Any:
        """``y -= a * x`` in ``y``'s dtype: NumPy's BLAS axpy (as :meth:`sub_scaled_`), else
        ``a * x`` in a scratch buffer for large arrays."""
        if x.size >= _SCRATCH_MIN:
            fused = self._axpy_update(y, a, x)
            if fused is not None:
                return fused
        if not self._fits(y, (x,), (a,)):
            return super().sub_times_(y, a, x)
        np = self._np

        def body(y: Any, x: Any, t: Any) -> None:
            y -= np.multiply(x, a, out=t)

        return self._rule(body, y, (x,), 1)

    def sub_scaled_sum_(self, y: Any, a: Any, x: Any, b: Any, z: Any) -> Any:
        """``y -= a * (x + b * z)`` through a scratch buffer (``b * z + x``: the same sum)."""
        if not self._fits(y, (x, z), (a, b)):
            return super().sub_scaled_sum_(y, a, x, b, z)
        np = self._np

        def body(y: Any, x: Any, z: Any, t: Any) -> None:
            np.multiply(z, b, out=t)
            t += x
            t *= a
            y -= t

        return self._rule(body, y, (x, z), 1)

    def sub_scaled_ratio_(self, y: Any, a: Any, x: Any, h: Any, c: Any, eps: Any) -> Any:
        """``y -= a * x / (sqrt(h) * c + eps)`` through two scratch buffers."""
        if not self._fits(y, (x, h), (a, eps) if c is None else (a, c, eps)):
            return super().sub_scaled_ratio_(y, a, x, h, c, eps)
        np = self._np

        def body(y: Any, x: Any, h: Any, t: Any, d: Any) -> None:
            np.multiply(x, a, out=t)
            np.sqrt(h, out=d)
            if c is not None:
                d *= c
            d += eps
            t /= d
            y -= t

        return self._rule(body, y, (x, h), 2)

    def scaled_sum(self, x: Any, a: Any, y: Any) -> Any:
        """``x + a * y`` (``a * y + x``) in scratch buffer 2 for large arrays: valid until the
        next call, which overwrites it."""
        if not self._fits(x, (y,), (a,)):
            return super().scaled_sum(x, a, y)
        t = self._np.multiply(y, a, out=self._temp(x, 2))
        t += x
        return t

    def _sub_scaled_half(self, y: Any, a: float, x: Any) -> Any:
        """``y -= a * x`` for float16 ``y`` and ``x``, in float32, a block of rows at a time
        (rounded once, and no megabyte float32 temporaries)."""
        if y.ndim == 0:
            wide = self._to_wide(y)
            wide -= a * self._to_wide(x)
            y[...] = self._to_narrow(wide)
            return y
        if self._np.may_share_memory(x, y):  # (blocks of y written before x's are read)
            x = x.copy()
        per_row = max(1, math.prod(y.shape[1:]))
        block = max(1, _CHUNK // per_row)
        for lo in range(0, y.shape[0], block):
            part = slice(lo, lo + block)
            wide = self._to_wide(y[part])
            wide -= a * self._to_wide(x[part])
            y[part] = self._to_narrow(wide)
        return y


def _untraced(fn: Callable[[], Any]) -> Any:
    """``fn()`` with this thread's trace and profile functions off: a debugger's or
    snooper's hook that reads ``frame.f_locals`` keeps a reference to each local it saw
    (CPython before 3.13), which would make the reference-count probes count one too many,
    and reuse then write into arrays that one outside reference still holds."""
    trace, profile = sys.gettrace(), sys.getprofile()
    if not callable(profile):
        # A C profiler's object (cProfile's Profile): it reads no frame's locals, and
        # sys.setprofile could not give it back (it would become a function to call, and
        # `python -m cProfile train.py` failed with "'Profile' object is not callable").
        profile = None
    if trace is None and profile is None:
        return fn()
    sys.settrace(None)
    if profile is not None:
        sys.setprofile(None)
    try:
        return fn()
    finally:
        sys.settrace(trace)
        if profile is not None:
            sys.setprofile(profile)


def blas_facts() -> list[dict[str, Any]]:
    """The BLAS libraries NumPy runs on: threadpoolctl's view, or NumPy's build record."""
    import numpy as np

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        found = [
            {
                "library": entry.get("internal_api"),
                "version": entry.get("version"),
                "threads": entry.get("num_threads"),
                "kernel": entry.get("architecture"),
                "source": "threadpoolctl",
            }
            for entry in threadpool_info()
            if entry.get("user_api") == "blas"
        ]
        if found:
            return found
    config = np.show_config(mode="dicts")
    blas = config.get("Build Dependencies", {}).get("blas", {})
    return [
        {
            "library": blas.get("name"),
            "version": blas.get("version"),
            "threads": None,
            "kernel": None,
            "source": "numpy build config (install threadpoolctl for run-time facts)",
        }
    ]


def float16_conversion() -> str:
    """Which float16 <-> float32 conversion the engine uses, for :func:`nnbackend.info`."""
    compiled, reason = compiled_conversions()
    if compiled is not None:
        from importlib.metadata import version as dist_version

        return f"compiled with numba {dist_version('numba')}"
    return f"NumPy's ({reason})"


def allocator() -> str:
    """Whether freed memory is kept in the process (:func:`keep_freed_memory`), for
    :func:`nnbackend.info`."""
    if "result" not in _allocator:
        return f"the C library's default (opt in: {KEEP_MEMORY_ENV}=1)"
    reason = _allocator["result"]
    return "keeps freed memory (no page faults in steady state)" if reason is None else reason


def facts() -> dict[str, Any]:
    return {
        "blas": blas_facts(),
        "float16_conversion": float16_conversion(),
        "allocator": allocator(),
    }


BACKEND = Backend(
    name="numpy",
    load_namespace=load_namespace,
    probe=probe,
    array_modules=("numpy",),
    to_host=to_host,
    from_host=from_host,
    device=device,
    capabilities=Capabilities(float16=True, inplace=True, fast_float16_matmul=False),
    version=version,
    facts=facts,
    scatter_add=scatter_add,
    kernels=kernels,
    ops=NumpyOps,
    empty_cache=empty_cache,
    install_hint="pip install numpy array-api-compat",
    description="NumPy on the CPU (default)",
)
