"""``t[key] = value`` on a :class:`~nnbackend.Tensor`: item assignment outside the graph.

The engine records no in-place writes. An assignment therefore never changes an array in
place: it binds ``t.data`` to an updated copy (on NumPy, CuPy, torch and array-api-strict a
copy written with ``copy[key] = value``; on JAX ``data.at[key].set(value)``, which copies
too). Every graph recorded before keeps the values it saw, and an array taken earlier
(``a = t.data``) is left as it was, as JAX arrays behave; an optimizer and a compiled step
see the new array as they see ``p.data = ...``.

Where a gradient would have to flow through the write, it is refused with
:class:`~nnbackend.errors.GradientError`, as PyTorch refuses an in-place write to a leaf
that requires a gradient: write under ``nb.no_grad()`` (initialising weights, zeroing a
padding row), or build the new value out of place (``nnbackend.functional.where``). Inside
a step being recorded by :func:`nnbackend.compile_step` it is refused with
:class:`~nnbackend.errors.CompileError`: a replay would not repeat the write.
"""

from __future__ import annotations

import math
from typing import Any

from nnbackend.autograd import functions as _F
from nnbackend.autograd import trace
from nnbackend.autograd.mode import is_grad_enabled
from nnbackend.autograd.ops import bool_scalars, own_index, setitem_key
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import (
    ArgumentError,
    BackendMismatchError,
    GradientError,
    NNBackendError,
    ShapeError,
)
from nnbackend.namespace import backend_for, ops_for

__all__ = ["setitem"]

_SCALARS = (bool, int, float)


def setitem(x: Tensor, key: Any, value: Any) -> None:
    """``x[key] = value``: bind ``x.data`` to a copy with the elements at ``key`` set to
    ``value`` (cast to ``x``'s dtype, broadcast to the selected shape). ``key`` is anything
    ``x[key]`` reads (ints, slices, ``...``, index arrays or lists, boolean masks).

    Raises:
        GradientError: gradients are enabled and ``x`` requires one, or was computed from
            tensors that do (its gradient would ignore the write), or ``value`` requires one
            (it would get none).
        CompileError: a step is being recorded by :func:`nnbackend.compile_step`.
        ShapeError: an index is out of range, or ``value`` does not broadcast to the
            selected elements.
        ArgumentError: a key ``x[key]`` does not read, or one the backend cannot write.
        BackendMismatchError: ``value`` is an array of another library.
    """
    if is_grad_enabled() and (
        x.requires_grad
        or x.creator is not None
        or (isinstance(value, Tensor) and value.requires_grad)
    ):
        if x.creator is not None:
            what = "tensor that was computed in the graph"
        elif x.requires_grad:
            what = "tensor that requires a gradient"
        else:
            what = "value that requires a gradient (the write would not pass it on)"
        raise GradientError(
            f"t[key] = value with a {what}: the engine records no in-place "
            "writes, so the gradient would ignore the write. Write under "
            "`with nb.no_grad():` where no gradient should flow through it (initialising "
            "weights, zeroing a padding row), or build the new value out of place, e.g. "
            "nnbackend.functional.where(mask, value, t)"
        )
    trace.refuse(
        "t[key] = value writes an array outside the engine's operations, which a replay "
        "would not repeat; compute the value out of place (nnbackend.functional.where) or "
        "before the step"
    )
    data = x.data
    xp = backend_for(data)[0]
    key = _key(data, key)
    # Read first: the same key checks and typed errors as x[key] on every backend (JAX
    # drops out-of-range writes silently), and the shape the value must broadcast to.
    try:
        selected = _shape(data, key)
    except NNBackendError as exc:  # the same type, worded for the write
        raise type(exc)(f"t[key] = value: {exc}") from exc
    value = _value(xp, data, value, selected)
    # Bool scalars are NumPy's 0-d masks: a false one selects nothing; true ones add an
    # axis of length 1, which goes as None's do (torch wrote them as None, in another place,
    # and array-api-strict refuses them).
    parts = bool_scalars(key)
    if parts is not None:
        if not all(k for k in parts if type(k) is bool):
            return  # (the value broadcasts to the empty selection: checked above)
        key = tuple(k for k in parts if type(k) is not bool)
    # As the standard writes: no None (new axes are for reading), a trailing ... where the
    # key names fewer axes than the array has (array-api-strict insists on both).
    key, dropped = setitem_key(key, len(data.shape))
    dropped = dropped or parts is not None
    if dropped and type(value) not in _SCALARS:  # the value without the new axes' 1s
        value = xp.reshape(xp.broadcast_to(value, selected), _shape(data, key))
    ops = ops_for(xp, data)
    target = xp.asarray(data, copy=True) if ops.inplace else data

    def no_indexed_update() -> Any:
        raise ArgumentError(
            f"t[key] = value: arrays of {type(data).__module__}.{type(data).__qualname__} take "
            "neither in-place writes nor an indexed update; build the new value out of place, "
            "e.g. nnbackend.functional.where(mask, value, t)"
        )

    try:
        new = ops.write(target, key, value, no_indexed_update)
    except NNBackendError:
        raise
    except (IndexError, TypeError, ValueError, RuntimeError, NotImplementedError) as exc:
        # (the key was read above, so indices are in range: this backend cannot write it,
        # e.g. integer-array keys on array-api-strict, negative steps on torch)
        raise ArgumentError(
            f"t[key] = value: {_library(data)} cannot write through the key {key!r} "
            f"({type(exc).__name__}: {exc}); index with ints, slices and ... (or a boolean "
            "mask), or build the new value out of place with nnbackend.functional.where"
        ) from exc
    x.data = new


def _raw(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def _library(a: Any) -> str:
    return type(a).__module__.split(".")[0]


def _shape(data: Any, key: Any) -> tuple[int, ...]:
    """The shape of ``data[key]``."""
    return tuple(_F.getitem(Tensor._wrap(data, False), key).data.shape)


def _key(data: Any, key: Any) -> Any:
    """``key`` with Tensors as their arrays and index lists or other libraries' index arrays
    as arrays of ``data``'s backend (as ``x[key]`` reads them)."""
    key = _raw(key)
    if isinstance(key, tuple):
        return tuple(own_index(data, _raw(k)) for k in key)
    if isinstance(key, list) or hasattr(key, "ndim"):
        return own_index(data, key)
    return key


def _value(xp: Any, data: Any, value: Any, shape: tuple[int, ...]) -> Any:
    """``value`` as an array of ``data``'s backend, device and dtype, or a Python number
    that fits ``data``'s dtype."""
    value = _raw(value)
    if type(value) in _SCALARS:
        return _number(xp, data, value)
    if value is None or isinstance(value, str | bytes | complex):
        raise ArgumentError(
            f"t[key] = value: the value must be a real number or an array of them, got "
            f"{value!r:.80}"
        )
    if type(value) is not type(data):
        plain = isinstance(value, list | tuple)
        try:
            value = xp.asarray(value, device=getattr(data, "device", None))
        except (TypeError, ValueError, RuntimeError, AttributeError, OverflowError) as exc:
            if plain:
                raise ArgumentError(
                    f"t[key] = value: the list {value!r:.80} is no rectangular nesting of "
                    f"real numbers ({exc})"
                ) from exc
            raise BackendMismatchError(
                f"t[key] = value: the value is a {type(value).__module__}."
                f"{type(value).__qualname__} and the tensor holds a "
                f"{type(data).__module__}.{type(data).__qualname__}, and it cannot be "
                "converted here; give a Python number or an array of the tensor's backend "
                "(nb.to_device(value, backend))"
            ) from exc
    if not xp.isdtype(value.dtype, ("bool", "integral", "real floating")):
        raise ArgumentError(
            f"t[key] = value: a value of dtype {value.dtype} cannot be stored in a tensor of "
            f"dtype {data.dtype} (complex values would lose their imaginary part); give real "
            "numbers"
        )
    if value.ndim == 0 and not xp.isdtype(data.dtype, "real floating"):
        # A NumPy scalar or 0-d array into an integer or boolean tensor: checked as a Python
        # number is (np.float64("nan") was stored as INT_MIN, np.int64(2**40) into int32 as 0)
        if xp.isdtype(value.dtype, "bool"):
            return _number(xp, data, bool(value))
        if xp.isdtype(value.dtype, "integral"):
            return _number(xp, data, int(value))
        return _number(xp, data, float(value))
    if value.dtype != data.dtype:
        value = xp.astype(value, data.dtype)
    if not _broadcasts(tuple(value.shape), shape):
        raise ShapeError(
            f"t[key] = value: a value of shape {tuple(value.shape)} does not broadcast to the "
            f"{shape} elements the key selects"
        )
    return value


def _number(xp: Any, data: Any, value: bool | int | float) -> bool | int | float:
    """A Python number as the Python type of ``data``'s dtype (the standard promotes a
    bool only with bool arrays, a float only with floating ones). Into an integer dtype only
    a finite number within the dtype's range goes, truncated toward zero as NumPy stores 2.7
    (NaN, infinities and overflow were backend-specific errors or silent garbage)."""
    if xp.isdtype(data.dtype, "bool"):
        return bool(value)
    if not xp.isdtype(data.dtype, "integral"):
        try:
            return float(value)
        except OverflowError:  # an int beyond every float (10**400)
            raise ArgumentError(
                f"t[key] = value: {value!r:.40} is too large for a float tensor"
            ) from None
    info = xp.iinfo(data.dtype)
    if type(value) is float:
        fits = math.isfinite(value) and info.min <= int(value) <= info.max
    else:  # (math.isfinite of an int beyond every float, 10**400, raised OverflowError)
        fits = info.min <= value <= info.max
    if not fits:
        raise ArgumentError(
            f"t[key] = value: {value!r:.40} does not fit the tensor's dtype {data.dtype} "
            f"(integers from {info.min} to {info.max})"
        )
    return int(value)


def _broadcasts(source: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether an array of shape ``source`` broadcasts to ``target`` (NumPy's rule, one way:
    leading axes of size 1 may be dropped, as NumPy's assignment allows)."""
    while len(source) > len(target) and source[0] == 1:
        source = source[1:]
    if len(source) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(source[::-1], target[::-1], strict=False))
