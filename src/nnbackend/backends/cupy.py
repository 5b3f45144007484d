"""The CuPy backend (NVIDIA GPUs), through array-api-compat's CuPy namespace.

Everything that differs on a GPU lives here:

* **Availability** is probed for real: importing cupy succeeds on machines without a GPU, so
  the probe asks the CUDA runtime for its driver and device count and says which of "cupy not
  installed", "no CUDA driver" or "no device" holds.
* **Devices** are ``cupy:0``, ``cupy:1``, ... numbered as the CUDA runtime numbers them, that
  is among the GPUs that ``CUDA_VISIBLE_DEVICES`` leaves visible (``CUDA_VISIBLE_DEVICES=2,3``
  makes physical GPU 3 ``cupy:1``). A device that does not exist is a ``ValueError`` naming
  the devices that do.
* **Scatter-add** goes through ``cupyx.scatter_add`` (an atomic add, so repeated indices
  accumulate); never ``cupy.scatter_add``, which CuPy removed in v8.
* **float16 matrix products** are plain ``a @ b``: CuPy calls cuBLAS ``GemmEx`` with float16
  inputs and float32 accumulation, which runs on tensor cores (compute capability 7.0 and
  newer), so the capability ``fast_float16_matmul`` is set and the engine does not widen
  float16 products to float32 as it does for NumPy.
* **No host synchronisation**: :attr:`~nnbackend.Backend.on_host` is false for every CuPy
  array, so the engine never reads a value back to validate it inside a training step (the
  fused loss turns bad labels into NaN instead); only ``to_host`` (``.get()``) waits for the
  GPU.
* **Fused updates**: SGD's ``p -= lr * g`` (and Momentum's ``p -= lr * b`` in float32 and
  float64) is one kernel instead of a product into a parameter-sized temporary and a
  subtraction, and ReLU's backward one kernel instead of a conversion and a product
  (:func:`update_kernels`); each is checked on its first use per dtype with a few exact
  values (one small round trip to the host, the only one; a kernel that fails the check or
  does not compile is never used, and the generic update runs).
* **Memory**: :func:`facts` reports the default memory pool (used, held, limit) and the pinned
  host pool; :func:`empty_cache` returns the pool's free blocks to the driver
  (``nnbackend.empty_cache()``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

from nnbackend.backends.base import Backend, Capabilities
from nnbackend.backends.ops import Ops

INSTALL_HINT = "pip install 'nnbackend[gpu]' (or the cupy-cudaXXx wheel matching your CUDA)"
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"


def load_namespace() -> Any:
    import array_api_compat.cupy as xp

    return xp


def diagnose(
    environ: Mapping[str, str],
    cupy_installed: bool,
    driver_version: Callable[[], int],
    device_count: Callable[[], int],
) -> str | None:
    """Say why cupy cannot run here, or return ``None`` when it can.

    The checks run in the order a user fixes them: the package, then the driver, then a
    device. ``driver_version`` and ``device_count`` are the CUDA runtime's calls; any exception
    they raise is reported, never swallowed.
    """
    if not cupy_installed:
        return f"cupy is not installed: {INSTALL_HINT}"
    visible = environ.get(VISIBLE_ENV)
    if visible is not None and visible.strip() in ("", "-1"):
        return (
            f"no device: {VISIBLE_ENV}={visible!r} hides every GPU; "
            f"unset it or list a device index ({VISIBLE_ENV}=0)"
        )
    try:
        driver = driver_version()
    except Exception as exc:
        return (
            f"no CUDA driver: the CUDA runtime could not load it ({type(exc).__name__}: {exc}); "
            "install the NVIDIA driver, or use NNBACKEND=numpy"
        )
    if not driver:
        return "no CUDA driver: the CUDA runtime reports driver version 0; install the driver"
    try:
        count = device_count()
    except Exception as exc:
        return (
            f"no device: the CUDA runtime found none ({type(exc).__name__}: {exc}); "
            f"check nvidia-smi and {VISIBLE_ENV}"
        )
    if count < 1:
        return "no device: the CUDA driver is present but reports 0 GPUs; check nvidia-smi"
    return None


def probe() -> str | None:
    installed = importlib.util.find_spec("cupy") is not None

    def driver_version() -> int:
        import cupy

        return int(cupy.cuda.runtime.driverGetVersion())

    def device_count() -> int:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())

    try:
        reason = diagnose(os.environ, installed, driver_version, device_count)
    except ImportError as exc:  # cupy present but its CUDA libraries are not
        return f"cupy is installed but fails to import ({exc}); {INSTALL_HINT}"
    if reason is None and importlib.util.find_spec("array_api_compat") is None:
        # The namespace is array-api-compat's wrapper of cupy: without it nothing loads.
        return "array-api-compat is not installed: pip install array-api-compat"
    return reason


def to_host(x: Any) -> Any:
    # .get() copies on the current stream and waits for it: the one synchronising call.
    return x.get()


def from_host(a: Any, device: Any = None) -> Any:
    import cupy

    if device is None:
        return cupy.asarray(a)
    with device:
        return cupy.asarray(a)


# ---------------------------------------------------------------------------------- devices
def visible_devices(environ: Mapping[str, str]) -> list[str] | None:
    """The entries of ``CUDA_VISIBLE_DEVICES`` in order (indices or ``GPU-...`` UUIDs), or
    ``None`` when it is unset (every GPU is visible). As the CUDA runtime does, the list
    stops at the first entry that is not an index or a UUID, and ``-1`` hides everything."""
    raw = environ.get(VISIBLE_ENV)
    if raw is None:
        return None
    entries: list[str] = []
    for entry in raw.split(","):
        entry = entry.strip()
        if not (entry.isdigit() or entry.startswith(("GPU-", "MIG-"))):
            break
        entries.append(entry)
    return entries


def physical_name(index: int, environ: Mapping[str, str]) -> str:
    """What ``cupy:index`` is on this machine: ``"GPU 3"`` (through ``CUDA_VISIBLE_DEVICES``)
    or ``"GPU 0"`` when every GPU is visible."""
    visible = visible_devices(environ)
    if visible is None or index >= len(visible):
        return f"GPU {index}"
    entry = visible[index]
    return f"GPU {entry}" if entry.isdigit() else entry


def parse_device_index(name: str) -> int:
    """``"0"``, ``"cuda:0"`` or ``"gpu:0"`` -> 0; anything else raises ``ValueError``."""
    text = name.split(":", 1)[1] if ":" in name else name
    if not text.isdigit():
        raise ValueError(f"a cupy device is an index such as 'cupy:0', got {name!r}")
    return int(text)


def check_device_index(index: int, count: int, environ: Mapping[str, str]) -> None:
    """Raise ``ValueError`` when ``cupy:index`` is not among the ``count`` visible GPUs."""
    if 0 <= index < count:
        return
    have = ", ".join(f"cupy:{i}" for i in range(count)) or "none"
    visible = environ.get(VISIBLE_ENV)
    why = (
        f" ({VISIBLE_ENV}={visible!r} leaves {count} visible; devices are numbered among the "
        "visible ones)"
        if visible is not None
        else ""
    )
    raise ValueError(f"cupy:{index} does not exist: this machine has {have}{why}")


def devices() -> list[str]:
    import cupy

    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no driver or no device: the probe says which
        return []
    return [f"cupy:{i}" for i in range(count)]


def device(name: str) -> Any:
    """``cupy.cuda.Device`` for ``"1"`` (the part after ``cupy:``). A malformed name raises
    ``ValueError`` even where cupy is missing; an index beyond the visible GPUs raises
    ``ValueError`` where the CUDA runtime can count them."""
    index = parse_device_index(name)
    import cupy

    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception:
        count = None  # no usable GPU: the first use reports why, with the fix
    if count is not None:
        check_device_index(index, count, os.environ)
    return cupy.cuda.Device(index)


def enter_device(device: Any) -> Any:
    """``cupy.cuda.Device`` is itself the context manager that makes it current."""
    return device


def version() -> str | None:
    import cupy

    return str(cupy.__version__)


# ---------------------------------------------------------------------------------- engine
def scatter_add(target: Any, indices: Any, values: Any) -> Any:
    # cupyx.scatter_add, never cupy.scatter_add: CuPy removed the latter in v8.
    import cupyx

    cupyx.scatter_add(target, indices, values)
    return target


def kernels() -> dict[str, Any]:
    """CuPy's own reductions and ``astype``, skipping array-api-compat's Python layer, and one
    fused kernel each for an LSTM step's elementwise part and its backward (about twenty
    kernel launches a step otherwise: a GPU step is launch-bound at the book's sizes)."""
    import cupy

    cell, cell_backward = _lstm_kernels(cupy)
    return {
        "sum": cupy.sum,
        "max": cupy.max,
        "astype": cupy.ndarray.astype,
        "lstm_cell": cell,
        "lstm_cell_backward": cell_backward,
    }


# The arithmetic in float for float16 and float32, in double for float64; the stable sigmoid
# of nnbackend.nn.functional. ``i`` and ``n`` are ElementwiseKernel's own names: not used.
_LSTM_PREAMBLE = r"""
__device__ inline double nnb_wide(double x) { return x; }
__device__ inline float nnb_wide(float x) { return x; }
template <typename H> __device__ inline float nnb_wide(H x) { return (float)x; }  // float16
template <typename W> __device__ inline W nnb_sigmoid(W x) {
    if (x >= W(0)) { return W(1) / (W(1) + exp(-x)); }
    W e = exp(x);
    return e / (W(1) + e);
}
"""

_LSTM_FORWARD = r"""
typedef decltype(nnb_wide(a_f)) W;
W f_ = nnb_sigmoid(nnb_wide(a_f));
W g_ = tanh(nnb_wide(a_g));
W i_ = nnb_sigmoid(nnb_wide(a_i));
W o_ = nnb_sigmoid(nnb_wide(a_o));
W c_ = f_ * nnb_wide(c_prev) + g_ * i_;
W tc_ = tanh(c_);
h = (T)(o_ * tc_); c = (T)c_; gate_f = (T)f_; gate_g = (T)g_; gate_i = (T)i_;
gate_o = (T)o_; tanh_c = (T)tc_;
"""

_LSTM_BACKWARD = r"""
typedef decltype(nnb_wide(dh)) W;
W f_ = nnb_wide(gate_f), g_ = nnb_wide(gate_g), i_ = nnb_wide(gate_i), o_ = nnb_wide(gate_o);
W tc_ = nnb_wide(tanh_c), dh_ = nnb_wide(dh);
W ds = nnb_wide(dc) + dh_ * o_ * (W(1) - tc_ * tc_);
d_f = (T)(ds * nnb_wide(c_prev) * f_ * (W(1) - f_));
d_g = (T)(ds * i_ * (W(1) - g_ * g_));
d_i = (T)(ds * g_ * i_ * (W(1) - i_));
d_o = (T)(dh_ * tc_ * o_ * (W(1) - o_));
dc_prev = (T)(ds * f_);
"""


def lstm_elementwise_kernels(cupy: Any) -> tuple[Any, Any]:
    """The LSTM step's two CuPy ElementwiseKernels, forward and backward (compiled at first
    use, cached by CuPy)."""
    forward = cupy.ElementwiseKernel(
        "T a_f, T a_g, T a_i, T a_o, T c_prev",
        "T h, T c, T gate_f, T gate_g, T gate_i, T gate_o, T tanh_c",
        _LSTM_FORWARD,
        "nnbackend_lstm_cell",
        preamble=_LSTM_PREAMBLE,
    )
    backward = cupy.ElementwiseKernel(
        "T dh, T dc, T gate_f, T gate_g, T gate_i, T gate_o, T tanh_c, T c_prev",
        "T d_f, T d_g, T d_i, T d_o, T dc_prev",
        _LSTM_BACKWARD,
        "nnbackend_lstm_cell_backward",
        preamble=_LSTM_PREAMBLE,
    )
    return forward, backward


def _lstm_kernels(cupy: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(cell, cell_backward)`` with the signatures of ``nnbackend.backends.ops
    .lstm_cell`` and ``lstm_cell_backward`` (less ``xp``), each one CuPy ElementwiseKernel
    over the gate blocks as strided views (:func:`lstm_elementwise_kernels`)."""
    forward, backward = lstm_elementwise_kernels(cupy)

    def cell(a: Any, c_prev: Any) -> tuple[Any, ...]:
        hsz = c_prev.shape[-1]
        return tuple(
            forward(
                a[:, :hsz], a[:, hsz : 2 * hsz], a[:, 2 * hsz : 3 * hsz], a[:, 3 * hsz :], c_prev
            )
        )

    def cell_backward(
        dh: Any, dc: Any, f: Any, g: Any, i: Any, o: Any, tc: Any, c_prev: Any
    ) -> tuple[Any, Any]:
        rows, hsz = c_prev.shape
        da = cupy.empty((rows, 4 * hsz), dtype=c_prev.dtype)
        dc_prev = cupy.empty_like(c_prev)
        blocks = [da[:, k * hsz : (k + 1) * hsz] for k in range(4)]
        backward(dh, dc, f, g, i, o, tc, c_prev, *blocks, dc_prev)
        return da, dc_prev

    return cell, cell_backward


# ``y -= a * x`` in one pass: each value widened (float16 and float32 to float, float64 stays
# double), the product subtracted with one rounding by an explicit fused multiply-add (as
# NumPy's BLAS axpy and PyTorch's ``add_(alpha=)`` round; ``y - a * x`` written out would be
# fused or not at ptxas's choice), stored back. The rate comes in as a double and is rounded
# to the arithmetic's type first, as a Python float operand is (NumPy 2's weak scalars);
# float16 is computed in float32 and rounded to float16 once, as NumPy's float16 update is.
# (Compiled with NVRTC 13.5 for compute_80 against CuPy 14.2's headers: one fma.rn.f32 for
# float16 and float32, one fma.rn.f64 for float64.)
_UPDATE = r"""
typedef decltype(nnb_wide(y)) W;
y = (T)fma(-(W)a, nnb_wide(x), nnb_wide(y));
"""

# ReLU's gradient: the mask as a 0/1 factor times ``gy``, in one kernel; the same products (so
# the same bits, NaN and -0 included) as the generic conversion followed by a multiply.
_RELU_BACKWARD = "gx = gy * (m ? (T)1 : (T)0);"

_UNCHECKED = object()
_kernels_lock = threading.Lock()
_update_kernels: dict[str, Any] = {}


def update_kernels(cupy: Any) -> dict[str, Any]:
    """The fused kernels, made once (CuPy compiles each at its first call per device and
    dtype): ``"update"`` called as ``update(x, a, y)`` does ``y -= a * x`` in place,
    ``"relu_backward"`` as ``relu_backward(gy, mask)`` returns ``gy`` times the boolean mask
    as 0/1."""
    if not _update_kernels:
        with _kernels_lock:
            if not _update_kernels:
                _update_kernels["relu_backward"] = cupy.ElementwiseKernel(
                    "T gy, bool m", "T gx", _RELU_BACKWARD, "nnbackend_relu_backward"
                )
                _update_kernels["update"] = cupy.ElementwiseKernel(
                    "T x, float64 a",
                    "T y",
                    _UPDATE,
                    "nnbackend_sub_scaled",
                    preamble=_LSTM_PREAMBLE,
                )
    return _update_kernels


def checked_update(xp: Any, update: Callable[..., Any], dtype: Any, to_host: Any) -> bool:
    """Whether ``update(x, a, y)`` (``y -= a * x`` in place) gives the exact answer on 37
    values of ``dtype`` made by ``xp.asarray``: small integers and halves, so every product
    and difference is exact whether or not it is fused, and one right answer remains. A
    kernel that fails to compile or launch (an unusual driver or CuPy) is refused too, and
    the caller falls back to the generic update. ``to_host`` reads an array back."""
    import numpy

    x = numpy.arange(-18, 19).astype(dtype)
    y = (numpy.arange(37)[::-1] * 0.5).astype(dtype)
    want = y - dtype.type(0.375) * x
    try:
        got = xp.asarray(y)
        update(xp.asarray(x), 0.375, got)
        return bool(numpy.array_equal(to_host(got), want))
    except Exception:
        return False


def checked_relu_backward(
    xp: Any, relu_backward: Callable[..., Any], dtype: Any, to_host: Any
) -> bool:
    """Whether ``relu_backward(gy, mask)`` keeps ``gy`` where ``mask`` holds and gives zero
    elsewhere on a few values of ``dtype``; a kernel that fails to compile or launch is
    refused too (the caller then takes the generic backward)."""
    import numpy

    gy = numpy.array([-1.5, 2.0, 0.25, 3.0, -0.5], dtype=dtype)
    mask = numpy.array([True, False, True, False, True])
    want = numpy.where(mask, gy, 0).astype(dtype)
    try:
        got = relu_backward(xp.asarray(gy), xp.asarray(mask))
        return bool(numpy.array_equal(to_host(got), want)) and got.dtype == want.dtype
    except Exception:
        return False


#: The first-use check of each kernel of :func:`update_kernels`, by name.
_CHECKS: dict[str, Callable[..., bool]] = {
    "update": checked_update,
    "relu_backward": checked_relu_backward,
}


def _disjoint_or_same(x: Any, y: Any) -> bool:
    """Whether the memory of ``x`` and ``y`` (C-contiguous) is the same or does not overlap:
    an elementwise kernel reads and writes element ``i`` of both in one thread, so only a
    partial overlap would race."""
    xs, ys = x.data.ptr, y.data.ptr
    return xs == ys or xs + x.nbytes <= ys or ys + y.nbytes <= xs


class CupyOps(Ops):
    """CuPy's operations: its own reductions and fused LSTM cells (from :func:`kernels`),
    fused SGD / Momentum updates and ReLU backward (:func:`update_kernels`),
    ``cupyx.scatter_add``, native float16 (tensor cores), and random bits drawn on the
    device."""

    float16_compute = "native"
    take_checks_range = False

    def __init__(self, xp: Any, record: Any) -> None:
        super().__init__(xp, record)
        #: Each fused kernel by (name, dtype character) once checked, None where refused.
        self._fused: dict[tuple[str, str], Any] = {}

    def _kernel(self, name: str, like: Any) -> Any:
        """The fused kernel ``name`` (:func:`update_kernels`) for ``like``'s dtype, checked on
        its first use for that dtype on ``like``'s device; None where the check refused it."""
        key = (name, like.dtype.char)
        found = self._fused.get(key, _UNCHECKED)
        if found is _UNCHECKED:
            import cupy

            kernel = update_kernels(cupy)[name]
            with like.device:
                good = _CHECKS[name](cupy, kernel, like.dtype, cupy.asnumpy)
            found = self._fused[key] = kernel if good else None
        return found

    def matmul(self, a: Any, b: Any, out: Any = None) -> Any:
        """``a @ b``, into ``out`` when given (``cupy.matmul(out=)``)."""
        if out is not None:
            import cupy

            return cupy.matmul(a, b, out=out)
        return a @ b

    def _updated(self, y: Any, a: Any, x: Any) -> bool:
        """Whether ``y -= a * x`` was done by the fused kernel: CuPy arrays of one float dtype
        and shape, C-contiguous, not partly overlapping, in place allowed, ``a`` a Python
        float, the kernel accepted for the dtype (:func:`checked_update`, once per dtype).
        False (and nothing written) elsewhere."""
        import cupy

        if (
            type(a) is not float
            or not self.inplace
            or type(y) is not cupy.ndarray
            or type(x) is not cupy.ndarray
            or y.dtype.char not in "efd"
            or x.dtype != y.dtype
            or x.shape != y.shape
            or not (y.flags.c_contiguous and x.flags.c_contiguous)
            or not _disjoint_or_same(x, y)
        ):
            return False
        update = self._kernel("update", y)
        if update is None:
            return False
        update(x, a, y)
        return True

    def sub_scaled_(self, y: Any, a: float, x: Any) -> Any:
        """SGD's ``y -= a * x`` as one kernel (:func:`update_kernels`): a parameter read and
        written once, no parameter-sized temporary; float16 computed in float32 and rounded
        once, as NumPy computes it. Elsewhere the generic two-kernel update."""
        return y if self._updated(y, a, x) else super().sub_scaled_(y, a, x)

    def sub_times_(self, y: Any, a: Any, x: Any) -> Any:
        """Momentum's ``y -= a * x`` as one kernel in float32 and float64 (float16 keeps the
        generic update: this rule computes in the arrays' own dtype)."""
        if y.dtype != self.float16 and self._updated(y, a, x):
            return y
        return super().sub_times_(y, a, x)

    def leaky_relu_backward(self, gy: Any, mask: Any, slope: float) -> Any:
        """ReLU's backward (``slope`` 0) as one kernel, the same products as the generic
        conversion and multiply (times 1 or 0: exact in every dtype); other slopes generic."""
        import cupy

        if (
            slope != 0.0
            or type(gy) is not cupy.ndarray
            or type(mask) is not cupy.ndarray
            or gy.dtype.char not in "efd"
            or gy.shape != mask.shape
        ):
            return super().leaky_relu_backward(gy, mask, slope)
        kernel = self._kernel("relu_backward", gy)
        if kernel is None:
            return super().leaky_relu_backward(gy, mask, slope)
        return kernel(gy, mask)

    def uniform(self, generator: Any, shape: tuple[int, ...], like: Any) -> Any:
        """Uniform numbers in [0, 1) drawn on ``like``'s GPU by CuPy's generator, seeded
        from ``generator`` (one host draw): reproducible per seed, but a different stream
        from the host backends'."""
        import cupy

        seed = int(generator.integers(0, 2**63 - 1))
        with like.device:
            return cupy.random.default_rng(seed).random(shape, dtype=cupy.float32)


def on_host(array: Any) -> bool:
    return False


# ---------------------------------------------------------------------------------- memory
def memory_facts() -> dict[str, Any]:
    """The default memory pool of the current device and the pinned host pool, in bytes.
    Asks the pools only: no CUDA context is created for it."""
    import cupy

    pool = cupy.get_default_memory_pool()
    pinned = cupy.get_default_pinned_memory_pool()
    return {
        "memory_pool_used_bytes": int(pool.used_bytes()),
        "memory_pool_total_bytes": int(pool.total_bytes()),
        "memory_pool_free_bytes": int(pool.free_bytes()),
        "memory_pool_limit_bytes": int(pool.get_limit()),
        "pinned_pool_free_blocks": int(pinned.n_free_blocks()),
    }


def empty_cache() -> dict[str, int]:
    """Return the free blocks of CuPy's default memory pool (current device) and of the
    pinned host pool to the driver. Arrays still referenced keep their memory.

    Returns ``{"freed_bytes": ..., "held_bytes": ...}``, or ``{}`` when cupy was never
    imported in this process (then there is nothing to free, and cupy is not imported for it).
    """
    if "cupy" not in sys.modules:
        return {}
    import cupy

    pool = cupy.get_default_memory_pool()
    before = int(pool.total_bytes())
    pool.free_all_blocks()
    cupy.get_default_pinned_memory_pool().free_all_blocks()
    after = int(pool.total_bytes())
    return {"freed_bytes": before - after, "held_bytes": after}


def facts() -> dict[str, Any]:
    import cupy

    runtime = cupy.cuda.runtime
    gpus = []
    for index in range(runtime.getDeviceCount()):
        props = runtime.getDeviceProperties(index)
        name = props["name"]
        major, minor = int(props["major"]), int(props["minor"])
        gpus.append(
            {
                "index": index,
                "device": f"cupy:{index}",
                "physical": physical_name(index, os.environ),
                "name": name.decode() if isinstance(name, bytes) else str(name),
                "memory_bytes": int(props["totalGlobalMem"]),
                "compute_capability": f"{major}.{minor}",
                "tensor_cores": major >= 7,
            }
        )
    return {
        "cuda_runtime": runtime.runtimeGetVersion(),
        "cuda_driver": runtime.driverGetVersion(),
        "cuda_visible_devices": os.environ.get(VISIBLE_ENV),
        "gpus": gpus,
        **memory_facts(),
    }


BACKEND = Backend(
    name="cupy",
    load_namespace=load_namespace,
    probe=probe,
    array_modules=("cupy",),
    to_host=to_host,
    from_host=from_host,
    devices=devices,
    device=device,
    capabilities=Capabilities(float16=True, inplace=True, fast_float16_matmul=True),
    version=version,
    facts=facts,
    scatter_add=scatter_add,
    on_host=on_host,
    kernels=kernels,
    ops=CupyOps,
    enter_device=enter_device,
    empty_cache=empty_cache,
    install_hint=INSTALL_HINT,
    description="CuPy on an NVIDIA GPU",
)
