"""float16 <-> float32 conversions compiled with numba, for the NumPy backend.

NumPy converts float16 one element at a time in C (this wheel's baseline has no F16C): about
1.7 ns an element to widen and 2.6 ns to narrow here, a little less with the bit arithmetic of
:func:`nnbackend.backends.numpy.kernels`. On a CPU without fast float16 products the engine
runs float16 layers in float32 and converts their operands and results, so a float16 step is
mostly conversions. numba compiles the two conversion loops below to the CPU's vector
instructions: about 0.35 ns an element to widen (a 65536-entry table) and 0.42 ns to narrow
(round to nearest even, branch-free), four to six times faster. A third loop, SGD's float16
update, runs both conversions around its arithmetic in one pass.

Both give ``astype``'s very bits for every input (NaN stays NaN): checked over all 2**32
float32 bit patterns during development, and over every float16 and special float32 value by
the test suite.

Optional: installed with ``pip install 'nnbackend[fast16]'``; ``NNBACKEND_NUMBA=0`` turns it
off (the NumPy backend decides, before importing this module). The loops compile on first use
(under a second) and numba caches them on disk.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["narrow_into", "sub_scaled_into", "widen_into"]


@numba.njit(cache=True, nogil=True)
def widen_into(src: np.ndarray, table: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """``out[i] = table[src[i]]``: ``src`` the uint16 bits of a flat float16 array, ``table``
    the float32 value of each of the 65536 bit patterns, ``out`` flat float32."""
    for i in range(src.size):
        out[i] = table[src[i]]


@numba.njit(cache=True, nogil=True)
def narrow_into(src_f: np.ndarray, src_u: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """The float16 bits of flat float32 ``src_f`` (``src_u``: the same memory as uint32) into
    flat uint16 ``out``, rounding to nearest even like IEEE 754 and NumPy's ``astype``."""
    smallest_normal = np.float32(6.103515625e-05)  # 2**-14
    for i in range(src_u.size):
        bits = src_u[i]
        a = bits & np.uint32(0x7FFFFFFF)
        sign = (bits >> np.uint32(16)) & np.uint32(0x8000)
        # Subnormal in float16: a multiple of 2**-24, rounded to nearest even by rint (the
        # clamp keeps the conversion in range where this branch is not taken).
        sub = np.uint32(np.rint(min(abs(src_f[i]), smallest_normal) * np.float32(16777216.0)))
        # Normal: rebias the exponent and round the 13 dropped mantissa bits to nearest even;
        # a carry out of the mantissa moves to the next exponent, up to infinity.
        normal = (
            a - np.uint32(0x38000000) + np.uint32(0x0FFF) + ((a >> np.uint32(13)) & np.uint32(1))
        ) >> np.uint32(13)
        normal = min(normal, np.uint32(0x7C00))  # overflow and infinity -> infinity
        h = sub if a < np.uint32(0x38800000) else normal
        nan = np.uint32(0x7E00) | ((a >> np.uint32(13)) & np.uint32(0x3FF))
        h = nan if a > np.uint32(0x7F800000) else h  # NaN stays NaN (quiet, payload's top)
        out[i] = np.uint16(sign | h)


@numba.njit(cache=True, nogil=True)
def sub_scaled_into(
    y: np.ndarray, x: np.ndarray, a: np.float32, table: np.ndarray, scratch: np.ndarray
) -> None:  # pragma: no cover
    """``y -= a * x`` for flat float16 ``y`` and ``x`` (their uint16 bits): each value
    widened through ``table`` (as :func:`widen_into`), ``y - a * x`` computed in float32 and
    rounded once to float16 (as :func:`narrow_into`), a block of ``scratch.size`` values at
    a time (``scratch``: float32, its size the block). The bits of NumPy's
    ``(y32 - a * x32).astype(float16)`` with ``a`` a float32, in one pass."""
    bits = scratch.view(np.uint32)
    block = scratch.size
    for lo in range(0, y.size, block):
        m = min(block, y.size - lo)
        for j in range(m):
            scratch[j] = table[y[lo + j]] - a * table[x[lo + j]]
        narrow_into(scratch[:m], bits[:m], y[lo : lo + m])
