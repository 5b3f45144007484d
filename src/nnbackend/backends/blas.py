"""The BLAS that NumPy's own wheels ship (scipy-openblas), called through ctypes for the one
optimizer update NumPy has no single ufunc for: ``y += a * x`` (BLAS ``axpy``).

NumPy computes ``y -= a * x`` as two ufuncs, on one thread, holding the product in a
temporary; OpenBLAS's axpy reads ``x`` and ``y`` once, on its GEMM threads, without the GIL.
Measured (2026-12-02, float32, two threads): 4096x4096 3.9-4.8 ms against 12.5-14 ms for the
ufuncs a cache-sized block at a time, 784x1024 0.16-0.20 against 0.37-0.47 (PyTorch's
``p.add_(g, alpha=-lr)``: 6-8 ms at 4096x4096). Like PyTorch's, the kernel rounds once (a
fused multiply-add): a result may differ from ``y - a * x`` in its last bit.

Only the library NumPy itself loaded is used, and only where it is known: scipy-openblas,
whose symbols say the width of their integers (``scipy_cblas_saxpy64_`` takes 64-bit
lengths, ``scipy_cblas_saxpy`` 32-bit). Any other BLAS (conda's MKL, Accelerate, a system
OpenBLAS) is left alone, and the ufuncs run instead. Every kernel found is checked once
against NumPy's result on a small array before it is used.
"""

from __future__ import annotations

import ctypes
import math
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: A kernel: ``axpy(n, a, x_address, y_address)`` does ``y[:n] += a * x[:n]`` on contiguous
#: arrays of its dtype.
Axpy = Callable[[int, float, int, int], None]

_lock = threading.Lock()
_found: dict[str, Axpy] | None = None


def axpy_kernels(np: Any) -> dict[str, Axpy]:
    """NumPy's BLAS axpy kernels by dtype character (``"f"``, ``"d"``), found and checked on
    first call; empty where NumPy's BLAS is not scipy-openblas or the check fails."""
    global _found
    if _found is None:
        with _lock:
            if _found is None:
                _found = _checked(np, _load(np))
    return _found


def _library_files(np: Any) -> list[Path]:
    """Where NumPy's wheels put their OpenBLAS: ``numpy.libs`` beside the package (Linux,
    Windows) or ``numpy/.dylibs`` (macOS)."""
    package = Path(np.__file__).parent
    files: list[Path] = []
    for folder in (package.parent / "numpy.libs", package / ".dylibs"):
        if folder.is_dir():
            files += sorted(folder.glob("*scipy_openblas*"))
    return files


def _blas_name(np: Any) -> str:
    try:
        config = np.show_config(mode="dicts")
        return str(config["Build Dependencies"]["blas"]["name"])
    except Exception:  # an old or unusual NumPy: its BLAS is unknown
        return ""


def _load(np: Any) -> dict[str, Axpy]:
    if _blas_name(np) != "scipy-openblas":
        return {}
    for path in _library_files(np):
        try:
            library = ctypes.CDLL(str(path))
        except OSError:
            continue
        kernels: dict[str, Axpy] = {}
        for char, scalar, letter in (("f", ctypes.c_float, "s"), ("d", ctypes.c_double, "d")):
            for name, integer in (
                (f"scipy_cblas_{letter}axpy64_", ctypes.c_int64),
                (f"scipy_cblas_{letter}axpy", ctypes.c_int32),
            ):
                function = getattr(library, name, None)
                if function is not None:
                    function.restype = None
                    function.argtypes = [
                        integer,
                        scalar,
                        ctypes.c_void_p,
                        integer,
                        ctypes.c_void_p,
                        integer,
                    ]
                    kernels[char] = _bound(function)
                    break
        if kernels:
            return kernels
    return {}


def _bound(function: Any) -> Axpy:
    def axpy(n: int, a: float, x: int, y: int) -> None:
        function(n, a, x, 1, y, 1)

    return axpy


def _checked(np: Any, kernels: dict[str, Axpy]) -> dict[str, Axpy]:
    """The kernels whose result on 37 elements is NumPy's to within the one rounding they
    save (a wrong integer width or calling convention shows up here, not in a model)."""
    good: dict[str, Axpy] = {}
    for char, axpy in kernels.items():
        dtype = np.dtype(char)
        # Small integers: every product and sum exact, so fused or not, one right answer.
        # Each array has 3 guard elements past n, x's nonzero: nothing past n may change.
        x = np.concatenate([np.arange(-18, 19), np.full(3, 5.0)]).astype(dtype)
        y = np.concatenate([np.arange(37)[::-1] * 0.5, np.full(3, 7.0)]).astype(dtype)
        want = y - dtype.type(0.375) * x
        want[37:] = 7.0
        try:
            axpy(37, -0.375, address(x), address(y))  # the addresses the updates take
        except Exception:
            continue
        if np.array_equal(y, want):
            good[char] = axpy
    return good


#: The largest finite value of each kernel's dtype (``np.finfo(dtype).max``, without its call).
_LARGEST = {"f": (2.0 - 2.0**-23) * 2.0**127, "d": sys.float_info.max}

_addressof, _char_from_buffer = ctypes.addressof, ctypes.c_char.from_buffer


def address(a: Any) -> int:
    """The address of the first element of the C-contiguous NumPy array ``a``: through the
    buffer protocol where ``a`` is writable (0.27 us), else ``a.ctypes.data`` (1.2 us, a
    Python-level object each time)."""
    try:
        return int(_addressof(_char_from_buffer(a)))
    except (TypeError, ValueError, BufferError):  # read-only, or no buffer to export
        return int(a.ctypes.data)


def usable(np: Any, y: Any, a: Any, x: Any) -> Axpy | None:
    """The kernel for ``y += a * x`` when it gives the update NumPy would, up to the rounding
    it saves: ``y`` and ``x`` C-contiguous, native float32 or float64 of one shape, not
    overlapping (the caller checks that ``y`` may be written), ``a`` a Python float finite
    and nonzero in their dtype (axpy skips the work for ``a == 0``, also for a rate that
    rounds to 0 in float32, where NumPy would still spread a NaN gradient)."""
    if type(a) is not float or a == 0.0 or not math.isfinite(a):
        return None
    char = y.dtype.char
    kernel = axpy_kernels(np).get(char)
    if (
        kernel is None
        or abs(a) > _LARGEST[char]  # NumPy's own overflow, warning included
        or y.dtype.type(a) == 0  # a rate that rounds to 0 in float32: axpy would skip
        or x.dtype != y.dtype
        or not y.dtype.isnative
        or x.shape != y.shape
        or not y.flags.c_contiguous
        or not x.flags.c_contiguous
        or np.may_share_memory(x, y)
    ):
        return None
    return kernel
