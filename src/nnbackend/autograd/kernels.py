"""Per-backend fast paths for the engine's hottest array calls.

The engine's fused nodes reduce small arrays several times a step; on NumPy, the namespace's
``sum`` and ``max`` go through two Python layers (array-api-compat's and NumPy's) that cost more
than the reduction itself. A backend may offer equivalents through
:attr:`nnbackend.Backend.kernels`; everything else uses the namespace.

Float16 on a backend without fast float16 arithmetic (the capability
``fast_float16_matmul`` is false: NumPy on a CPU) is computed in float32 by the fused nodes and
stored as float16. :attr:`Kernels.half` is then the backend's float16 dtype (else ``None``),
and :attr:`Kernels.widen` / :attr:`Kernels.narrow` convert between the two (NumPy's own
float16 casts run in software; its backend offers exact, faster ones).
"""

from __future__ import annotations

from typing import Any

from nnbackend import registry
from nnbackend.namespace import backend_for

__all__ = ["Kernels", "kernels"]


class Kernels:
    """``sum(x, axis=, keepdims=)`` and ``max(x, axis=, keepdims=)`` for floating arrays,
    ``astype(x, dtype)``, the backend's ``on_host(x)``, and the float16 facts: ``half`` (the
    float16 dtype where float16 math is better done in float32, else ``None``),
    ``widen(x, out=None)`` (float16 -> float32, into ``out`` where the backend can),
    ``narrow(x)`` (float32 -> float16), ``positive(x)`` (``x > 0``) and ``keep(mask, x)``
    (``where(mask, x, 0)``) for float16 ``x``.

    Always pass ``axis`` (``None`` for all axes): NumPy's ``ufunc.reduce`` defaults to axis 0.
    """

    __slots__ = (
        "_ones",
        "astype",
        "count_nonzero",
        "float32",
        "half",
        "keep",
        "lstm_cell",
        "lstm_cell_backward",
        "max",
        "narrow",
        "on_host",
        "positive",
        "scale_into",
        "sum",
        "widen",
    )

    def __init__(self, xp: Any, record: Any, overrides: dict[str, Any]) -> None:
        self.sum = overrides.get("sum", xp.sum)
        self.max = overrides.get("max", xp.max)
        self.astype = overrides.get("astype", xp.astype)
        self.on_host = record.on_host
        self._ones: dict[Any, Any] = {}
        #: ``scale_into(x, s, out)``: ``out[...] = x * s`` without a temporary (numpy's out=);
        #: None where the backend has no such call.
        self.scale_into = overrides.get("scale_into")
        counter = overrides.get("count_nonzero") or getattr(xp, "count_nonzero", None)
        self.count_nonzero = counter or (lambda x: xp.sum(xp.astype(x, xp.int64)))
        caps = record.capabilities
        has_half = caps.float16 and hasattr(xp, "float16")
        self.half = xp.float16 if has_half and not caps.fast_float16_matmul else None
        self.float32 = xp.float32
        if has_half:
            f32, f16 = xp.float32, xp.float16
            self.widen = overrides.get("float16_to_float32") or (
                lambda x, out=None: xp.astype(x, f32)
            )
            self.narrow = overrides.get("float32_to_float16") or (lambda x: xp.astype(x, f16))
        else:
            self.widen = self.narrow = _no_half
        #: One LSTM step's elementwise part (see :func:`lstm_cell`); a GPU backend fuses it
        #: into one kernel instead of about twenty launches.
        self.lstm_cell = overrides.get("lstm_cell") or (lambda a, c: lstm_cell(xp, a, c))
        self.lstm_cell_backward = overrides.get("lstm_cell_backward") or (
            lambda *args: lstm_cell_backward(xp, *args)
        )
        self.positive = overrides.get("float16_positive") or (lambda x: x > 0)
        self.keep = overrides.get("float16_keep") or (lambda mask, x: xp.where(mask, x, 0.0))

    def one(self, xp: Any, dtype: Any) -> Any:
        """A new 0-d array holding 1 in ``dtype``: a copy of a cached one (``astype`` copies),
        about 0.13 us on NumPy against 1.06 us for ``xp.asarray(1.0, dtype=...)``."""
        cached = self._ones.get(dtype)
        if cached is None:
            cached = self._ones[dtype] = xp.asarray(1.0, dtype=dtype)
        return self.astype(cached, dtype)


def tanh_sigmoid(xp: Any, x: Any) -> Any:
    """``sigmoid(x)`` as ``0.5 * tanh(x / 2) + 0.5``, on raw arrays."""
    # The tanh form never overflows (1 / (1 + exp(-x)) does in float16 below x = -11).
    return 0.5 * xp.tanh(0.5 * x) + 0.5


def lstm_cell(xp: Any, a: Any, c_prev: Any) -> tuple[Any, ...]:
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
    xp: Any, dh: Any, dc: Any, f: Any, g: Any, i: Any, o: Any, tc: Any, c_prev: Any
) -> tuple[Any, Any]:
    """The backward of :func:`lstm_cell`: from the gradients of ``h`` and ``c``, the gradient
    of the pre-activations ``da`` (N, 4H) and of the previous cell ``dc_prev`` (N, H)."""
    ds = dc + dh * o * (1.0 - tc * tc)
    df = ds * c_prev * f * (1.0 - f)
    dg = ds * i * (1.0 - g * g)
    di = ds * g * i * (1.0 - i)
    do = dh * tc * o * (1.0 - o)
    return xp.concat([df, dg, di, do], axis=1), ds * f


def _no_half(x: Any, out: Any = None) -> Any:
    raise TypeError("this backend has no float16")


_cache: dict[Any, Kernels] = {}


def kernels(xp: Any, array: Any) -> Kernels:
    """The kernels of the backend that owns ``array`` (whose namespace is ``xp``)."""
    found = _cache.get(xp)
    if found is None:
        record = backend_for(array)[1]
        found = _cache[xp] = Kernels(xp, record, record.kernels())
    return found


def half_of(xp: Any, array: Any) -> Any:
    """The float16 dtype when ``array``'s backend computes float16 better in float32, else
    ``None``."""
    found = _cache.get(xp)
    if found is None:
        found = kernels(xp, array)
    return found.half


# A replaced backend record may bring other kernels or capabilities.
registry._change_callbacks.append(_cache.clear)
