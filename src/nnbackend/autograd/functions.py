"""The engine's differentiable operation set beyond the operators: elementwise functions,
reductions, shape operations, gathering and ``einsum``.

Each takes Tensors, backend arrays or (where it says so) Python scalars, returns a Tensor,
uses only the Array API standard and keeps its input's dtype. Every one supports higher-order
derivatives: its backward is written with these same differentiable operations
(:meth:`~nnbackend.autograd.function.Function.graph_backward`), or the function is a
composition of them. The public home of all of them is :mod:`nnbackend.functional`.
"""

from __future__ import annotations

import builtins
import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any

from nnbackend import config
from nnbackend.autograd import ops
from nnbackend.autograd.function import Function
from nnbackend.autograd.mode import is_grad_enabled
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import ArgumentError, DtypeError, NNBackendError, ShapeError
from nnbackend.namespace import array_namespace, backend_for, ops_for

__all__ = [
    "abs",
    "argmax",
    "argmin",
    "broadcast_to",
    "clip",
    "concat",
    "cos",
    "einsum",
    "expand_dims",
    "expm1",
    "flatten",
    "flip",
    "getitem",
    "log1p",
    "logsumexp",
    "maximum",
    "min",
    "minimum",
    "pad",
    "permute",
    "prod",
    "sigmoid",
    "sin",
    "softplus",
    "split",
    "sqrt",
    "squeeze",
    "stack",
    "std",
    "sum_to",
    "take",
    "tan",
    "tanh",
    "var",
    "where",
]

_SCALARS = (int, float, bool)


def _data(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def _shape(x: Any) -> tuple[int, ...] | None:
    return None if type(x) in _SCALARS else tuple(x.shape)


def _tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


# What the backends raise for a shape or index they reject (torch raises RuntimeError): caught
# on the failure path only, to say in an nnbackend error what was wrong.
_BACKEND_ERRORS = (TypeError, ValueError, RuntimeError, IndexError)


def _broadcast_shape(*shapes: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The broadcast of ``shapes`` (None for a Python scalar), or None where they do not
    broadcast."""
    shapes_ = [s for s in shapes if s is not None]
    ndim = builtins.max((len(s) for s in shapes_), default=0)
    out = []
    for i in range(-ndim, 0):
        sizes = {s[i] for s in shapes_ if len(s) >= -i} - {1}
        if len(sizes) > 1:
            return None
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def _scalar_pair(like: Any, a: Any, b: Any) -> tuple[Any, Any]:
    """Two Python scalars as 0-d arrays on ``like``'s backend and device (the active backend
    when ``like`` is None), of the active default float dtype where either is a float."""
    xp = array_namespace(like) if like is not None else array_namespace()
    both = xp.asarray([a, b], device=getattr(like, "device", None))
    return both[0], both[1]


# -- broadcasting ---------------------------------------------------------------------------
class BroadcastTo(Function):
    grad_may_alias = False

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(int(n) for n in shape)

    def forward(self, x: Any) -> Any:
        self.in_shape = tuple(x.shape)
        # A new array, not a read-only view: results may be written into.
        return self.xp.zeros(self.shape, dtype=x.dtype, device=x.device) + x

    def graph_backward(self, gy: Tensor) -> Tensor:
        return sum_to(gy, self.in_shape)


class SumTo(Function):
    grad_may_alias = True

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(int(n) for n in shape)

    def forward(self, x: Any) -> Any:
        self.in_shape = tuple(x.shape)
        if len(self.shape) > x.ndim or _broadcast_shape(self.shape, self.in_shape) != self.in_shape:
            raise ShapeError(
                f"sum_to: cannot sum shape {self.in_shape} to {self.shape}: {self.shape} must "
                f"broadcast to {self.in_shape} (each axis of that length or 1)"
            )
        return ops.unbroadcast(self.xp, x, self.shape)

    def graph_backward(self, gy: Tensor) -> Tensor:
        return broadcast_to(gy, self.in_shape)


def broadcast_to(x: Any, shape: Sequence[int]) -> Tensor:
    """``x`` broadcast to ``shape`` (a new array); the gradient sums back to ``x``'s shape."""
    shape = tuple(int(n) for n in shape)
    have = _shape(_data(x))
    if have == shape:
        return _tensor(x)
    if (
        have is not None and (len(have) > len(shape) or _broadcast_shape(have, shape) != shape)
    ) or builtins.min(shape, default=0) < 0:
        raise ShapeError(
            f"broadcast_to: an array of shape {have} does not broadcast to {shape}: each axis "
            "must have the target's length or length 1"
        )
    return BroadcastTo(shape)(x)


def sum_to(x: Any, shape: Sequence[int]) -> Tensor:
    """Sum ``x`` over the axes along which ``shape`` was broadcast to ``x``'s shape (the
    gradient of a broadcast)."""
    shape = tuple(int(n) for n in shape)
    if _shape(_data(x)) == shape:
        return _tensor(x)
    return SumTo(shape)(x)


class _LocallyConstant(Function):
    """A value that depends on ``x`` only piecewise (a sign, a mask): its derivative is zero.
    Recording it keeps a piecewise-linear function's gradient in the graph of ``x``, so its
    second derivative is zero (as in torch), not "does not require a gradient"."""

    grad_may_alias = False

    def __init__(self, value: Any) -> None:
        self.value = value

    def forward(self, x: Any) -> Any:
        return self.value

    def graph_backward(self, gy: Tensor) -> Tensor:
        x = self.inputs[0].data
        return Tensor._wrap(self.xp.zeros(x.shape, dtype=x.dtype, device=x.device), False)


def piecewise(x: Any, value: Any) -> Any:
    """``value`` (an array computed from ``x``'s data), tied to ``x`` in the graph when
    gradients are being recorded. Internal API for nodes in other modules."""
    if isinstance(x, Tensor) and x.requires_grad and is_grad_enabled():
        return _LocallyConstant(value)(x)
    return value


# nn/functional.py's name for it until #13 item 1 rewrites that module.


# -- elementwise ----------------------------------------------------------------------------
class _Unary(Function):
    grad_may_alias = False

    def forward(self, x: Any) -> Any:
        self.x = x
        return self.compute(self.xp, x)

    def compute(self, xp: Any, x: Any) -> Any:
        raise NotImplementedError

    def graph_backward(self, gy: Tensor) -> Tensor:
        return self.derivative(self.input(0, self.x), gy)

    def derivative(self, x: Any, gy: Tensor) -> Tensor:
        raise NotImplementedError


class Log1p(_Unary):
    def compute(self, xp: Any, x: Any) -> Any:
        return xp.log1p(x)

    def derivative(self, x: Any, gy: Tensor) -> Tensor:
        return gy / (x + 1.0)


class Expm1(_Unary):
    def compute(self, xp: Any, x: Any) -> Any:
        return xp.expm1(x)

    def derivative(self, x: Any, gy: Tensor) -> Tensor:
        return gy * ops.exp(x)


class Sqrt(_Unary):
    def compute(self, xp: Any, x: Any) -> Any:
        return xp.sqrt(x)

    def derivative(self, x: Any, gy: Tensor) -> Tensor:
        return gy * 0.5 / sqrt(x)


class Abs(_Unary):
    def compute(self, xp: Any, x: Any) -> Any:
        return xp.abs(x)

    def derivative(self, x: Any, gy: Tensor) -> Tensor:
        return gy * piecewise(x, self.xp.sign(self.x))  # the subgradient 0 at 0, as torch


class Sin(_Unary):
    def compute(self, xp: Any, x: Any) -> Any:
        return xp.sin(x)

    def derivative(self, x: Any, gy: Tensor) -> Tensor:
        return gy * cos(x)


class Cos(_Unary):
    def compute(self, xp: Any, x: Any) -> Any:
        return xp.cos(x)

    def derivative(self, x: Any, gy: Tensor) -> Tensor:
        return -(gy * sin(x))


class Tan(_Unary):
    def compute(self, xp: Any, x: Any) -> Any:
        return xp.tan(x)

    def derivative(self, x: Any, gy: Tensor) -> Tensor:
        c = cos(x)
        return gy / (c * c)


class Tanh(_Unary):
    def compute(self, xp: Any, x: Any) -> Any:
        return xp.tanh(x)

    def derivative(self, x: Any, gy: Tensor) -> Tensor:
        y = tanh(x)
        return gy * (1.0 - y * y)


def _stable_sigmoid(xp: Any, x: Any) -> Any:
    e = xp.exp(-xp.abs(x))  # never overflows
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class Sigmoid(_Unary):
    def compute(self, xp: Any, x: Any) -> Any:
        return _stable_sigmoid(xp, x)

    def derivative(self, x: Any, gy: Tensor) -> Tensor:
        y = sigmoid(x)
        return gy * y * (1.0 - y)


class Softplus(_Unary):
    def compute(self, xp: Any, x: Any) -> Any:
        # log(1 + e^x) = max(x, 0) + log1p(e^-|x|): never overflows.
        return xp.where(x > 0, x, 0.0) + xp.log1p(xp.exp(-xp.abs(x)))

    def derivative(self, x: Any, gy: Tensor) -> Tensor:
        return gy * sigmoid(x)


class Where(Function):
    """``where(cond, a, b)``: the condition is a constant; gradients go to the chosen side."""

    grad_may_alias = False

    def __init__(self, cond: Any) -> None:
        self.cond = cond

    def forward(self, a: Any, b: Any) -> Any:
        ops.check_same_dtype("where", a, b)
        self.shapes = (_shape(a), _shape(b))
        return self.xp.where(self.cond, a, b)

    def graph_backward(self, gy: Tensor) -> tuple[Any, Any]:
        na, nb = self.needs_input_grad
        sa, sb = self.shapes
        ga = sum_to(Where(self.cond)(gy, 0.0), sa) if na and sa is not None else None
        gb = sum_to(Where(self.cond)(0.0, gy), sb) if nb and sb is not None else None
        return ga, gb


def where(cond: Any, a: Any, b: Any) -> Tensor:
    """``a`` where ``cond`` is true, else ``b`` (broadcasting; ``a`` and ``b`` may be Python
    scalars, both of them too, as in NumPy). ``cond`` is a boolean array or Tensor (or a
    Python bool or nested list of them) and carries no gradient."""
    c = _data(cond)
    if type(c) in (bool, list, tuple):
        like = next((_data(v) for v in (a, b) if type(_data(v)) not in _SCALARS), None)
        xp = backend_for(like)[0] if like is not None else array_namespace()
        c = xp.asarray(c, dtype=xp.bool, device=getattr(like, "device", None))
    if type(a) in _SCALARS and type(b) in _SCALARS:
        a, b = _scalar_pair(c, a, b)
    try:
        return Where(c)(a, b)
    except NNBackendError:
        raise
    except _BACKEND_ERRORS as e:
        dtype = getattr(c, "dtype", None)
        if dtype is not None and not backend_for(c)[0].isdtype(dtype, "bool"):
            raise DtypeError(
                f"where: the condition has dtype {dtype}; it must be boolean (compare, e.g. "
                "x > 0, or cast with xp.astype(cond, xp.bool))"
            ) from e
        shapes = (_shape(c), _shape(_data(a)), _shape(_data(b)))
        if _broadcast_shape(*shapes) is None:
            raise ShapeError(
                f"where: the condition and the two values have shapes {shapes} (None: a "
                "scalar), which do not broadcast together"
            ) from e
        raise


class _Extremum(Function):
    """maximum / minimum: ties share the gradient equally (as torch does)."""

    grad_may_alias = False
    larger = True

    def forward(self, a: Any, b: Any) -> Any:
        xp = self.xp
        ops.check_same_dtype("maximum" if self.larger else "minimum", a, b)
        self.shapes = (_shape(a), _shape(b))
        like = a if type(a) not in _SCALARS else b
        dtype = like.dtype
        if float in (type(a), type(b)) and not xp.isdtype(dtype, "real floating"):
            # An integer array with a float, as NumPy promotes it (the float was cast to the
            # integers: maximum([0, 1, -2], 0.5) was [0, 1, 0]), in the default float dtype.
            dtype = getattr(xp, config.get_default_dtype())
            like = xp.astype(like, dtype)
            if type(a) in _SCALARS:
                b = like
            else:
                a = like
        if type(a) in _SCALARS:
            a = xp.asarray(a, dtype=dtype, device=like.device)
        if type(b) in _SCALARS:
            b = xp.asarray(b, dtype=dtype, device=like.device)
        if xp.isdtype(dtype, "real floating"):  # (integers carry no gradient to share)
            win = (a > b) if self.larger else (a < b)
            self.wa = xp.astype(win, dtype) + 0.5 * xp.astype(a == b, dtype)
        return xp.maximum(a, b) if self.larger else xp.minimum(a, b)

    def graph_backward(self, gy: Tensor) -> tuple[Any, Any]:
        na, nb = self.needs_input_grad
        sa, sb = self.shapes
        wa = self.wa
        ga = sum_to(gy * piecewise(self.inputs[0], wa), sa) if na and sa is not None else None
        gb = sum_to(gy * piecewise(self.inputs[1], 1.0 - wa), sb) if nb and sb is not None else None
        return ga, gb


class Maximum(_Extremum):
    larger = True


class Minimum(_Extremum):
    larger = False


def _extremum(node: _Extremum, a: Any, b: Any) -> Tensor:
    if type(a) in _SCALARS and type(b) in _SCALARS:
        a, b = _scalar_pair(None, a, b)
    try:
        return node(a, b)
    except NNBackendError:
        raise
    except _BACKEND_ERRORS as e:
        name = "maximum" if node.larger else "minimum"
        ops.check_broadcast(name, _shape(_data(a)), _shape(_data(b)), e)
        raise


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise maximum with broadcasting; tied elements share the gradient equally."""
    return _extremum(Maximum(), a, b)


def minimum(a: Any, b: Any) -> Tensor:
    """Elementwise minimum with broadcasting; tied elements share the gradient equally."""
    return _extremum(Minimum(), a, b)


class Clip(Function):
    grad_may_alias = False

    def __init__(self, lo: float | None, hi: float | None) -> None:
        self.lo, self.hi = lo, hi

    def forward(self, x: Any) -> Any:
        xp = self.xp
        inside = xp.ones(x.shape, dtype=xp.bool, device=x.device)
        # Integer bounds of an integer array stay integers, as NumPy's clip keeps its dtype
        # (float() made clip([..], -1, 2) of int64 float64, of torch's int64 float32); a
        # float bound makes the result float, in the default float dtype.
        whole = not xp.isdtype(x.dtype, "real floating")
        if whole and float in (type(self.lo), type(self.hi)):
            x = xp.astype(x, getattr(xp, config.get_default_dtype()))
            whole = False
        y = x
        if self.lo is not None:
            inside = inside & (x >= self.lo)
            lo = self.lo if whole and type(self.lo) is int else float(self.lo)
            y = xp.where(x < self.lo, lo, y)
        if self.hi is not None:
            inside = inside & (x <= self.hi)
            hi = self.hi if whole and type(self.hi) is int else float(self.hi)
            y = xp.where(x > self.hi, hi, y)
        self.inside = inside
        return y if y is not x else xp.asarray(x, copy=True)

    def graph_backward(self, gy: Tensor) -> Tensor:
        inside = self.xp.astype(self.inside, gy.dtype)
        return gy * piecewise(self.inputs[0], inside)


def clip(x: Any, min: float | None = None, max: float | None = None) -> Tensor:
    """``x`` limited to ``[min, max]`` (either may be None); the gradient is 1 inside the
    interval (bounds included) and 0 outside."""
    if min is not None and (type(min) not in (int, float) or min != min):
        min = _check_bound("min", min)
    if max is not None and (type(max) not in (int, float) or max != max):
        max = _check_bound("max", max)
    if min is not None and max is not None and min > max:
        raise ArgumentError(f"clip: min {min} is greater than max {max}")
    return Clip(min, max)(x)


def _check_bound(name: str, bound: Any) -> float:
    """The uncommon path of :func:`clip`'s bounds: a number (a NumPy scalar too, as a Python
    float, which every backend mixes with its arrays), not NaN."""
    value = 0.0
    ok = not isinstance(bound, str | bytes) and getattr(bound, "ndim", 0) == 0
    if ok:
        try:
            value = float(bound)
        except (TypeError, ValueError):
            ok = False
    if not ok:
        raise ArgumentError(
            f"clip: {name} must be a Python number or None, got {bound!r}; for elementwise "
            "bounds use F.maximum(x, lo) / F.minimum(x, hi)"
        )
    if value != value:
        raise ArgumentError(f"clip: {name} is NaN; give a number or None (no bound)")
    return value


def log1p(x: Any) -> Tensor:
    """Elementwise ``log(1 + x)``, accurate for small ``x``."""
    return Log1p()(x)


def expm1(x: Any) -> Tensor:
    """Elementwise ``exp(x) - 1``, accurate for small ``x``."""
    return Expm1()(x)


def sqrt(x: Any) -> Tensor:
    """Elementwise square root."""
    return Sqrt()(x)


def abs(x: Any) -> Tensor:
    """Elementwise absolute value (gradient ``sign(x)``, 0 at 0)."""
    return Abs()(x)


def sin(x: Any) -> Tensor:
    """Elementwise sine."""
    return Sin()(x)


def cos(x: Any) -> Tensor:
    """Elementwise cosine."""
    return Cos()(x)


def tan(x: Any) -> Tensor:
    """Elementwise tangent."""
    return Tan()(x)


def tanh(x: Any) -> Tensor:
    """Elementwise hyperbolic tangent."""
    return Tanh()(x)


def sigmoid(x: Any) -> Tensor:
    """Elementwise logistic function ``1 / (1 + exp(-x))``, computed without overflow."""
    return Sigmoid()(x)


def softplus(x: Any) -> Tensor:
    """Elementwise ``log(1 + exp(x))``, computed without overflow."""
    return Softplus()(x)


# -- reductions -----------------------------------------------------------------------------
def _reduced_count(shape: tuple[int, ...], axis: Any) -> int:
    return math.prod(shape[a] for a in ops.normalize_axes(axis, len(shape)))


def min(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Minimum over ``axis``; the gradient is shared equally among tied minima."""
    data = _data(x)
    shape = _shape(data)
    if shape is not None and 0 in shape:  # (max's own error would name max)
        ops.check_extremum_axes("min", shape, ops.normalize_axes(axis, len(shape)))
    xp = backend_for(data)[0] if shape is not None else None
    if xp is not None and shape is not None and not xp.isdtype(data.dtype, "real floating"):
        # Integers and bools carry no gradient, and -max(-x) wraps around at the bottom of
        # their range (min of uint8 [0, 5, 200] was 5, of int8 [-128, 5] 5).
        axes = ops.normalize_axes(axis, len(shape))
        if xp.isdtype(data.dtype, "bool"):
            y = xp.all(data, axis=axes, keepdims=keepdims)
        else:
            y = xp.min(data, axis=axes, keepdims=keepdims)
        return Tensor._wrap(y if type(y) is type(data) else xp.asarray(y), False)
    return ops.neg(ops.max(ops.neg(x), axis, keepdims))


def var(x: Any, axis: Any = None, keepdims: bool = False, correction: float = 0.0) -> Tensor:
    """Variance over ``axis``: the mean squared deviation, divided by ``N - correction``
    instead of ``N`` (``correction=1`` is the unbiased estimate)."""
    x = _tensor(x)
    n = _reduced_count(x.shape, axis)
    if n - correction <= 0:
        raise ArgumentError(f"var: {n} elements with correction {correction}: nothing to divide")
    d = x - ops.mean(x, axis, True)
    return ops.sum(d * d, axis, keepdims) * (1.0 / (n - correction))


class _StdSqrt(Sqrt):
    """The square root of a variance, whose derivative is 0 where the variance is 0 (all
    values equal), as torch's std: sqrt'(0) * var' = inf * 0 would be nan, and a constant
    feature would make every gradient behind it nan."""

    def derivative(self, x: Any, gy: Tensor) -> Tensor:
        zero = self.x == 0
        # the zeros replaced by 1 inside, so the masked side (and its derivative) is finite
        return gy * where(zero, 0.0, 0.5 / sqrt(where(zero, 1.0, x)))


def std(x: Any, axis: Any = None, keepdims: bool = False, correction: float = 0.0) -> Tensor:
    """Standard deviation over ``axis``: ``sqrt(var(x, axis, keepdims, correction))``, with
    the gradient 0 (not nan) where all the values are equal, as in torch."""
    return _StdSqrt()(var(x, axis, keepdims, correction))


def logsumexp(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """``log(sum(exp(x)))`` over ``axis``, shifted by the maximum so it never overflows."""
    x = _tensor(x)
    if 0 in x.shape and _reduced_count(x.shape, axis) == 0:
        # log(0) = -inf over an empty axis (NumPy's and torch's value); the maximum below
        # has no identity. sum(x) is 0 there and keeps x in the graph (gradient: no elements).
        return ops.sum(x, axis, keepdims) + float("-inf")
    m = ops.max(x, axis, True).data  # a constant shift: the gradient is unchanged
    # ... but an infinite maximum would give inf - inf = nan: shift those by 0 instead (as
    # torch), so a row of -inf (all masked) gives -inf and a row with +inf gives +inf
    xp = backend_for(m)[0]
    m = Tensor._wrap(xp.where(xp.isfinite(m), m, 0.0), False)
    out = ops.log(ops.sum(ops.exp(x - m), axis, True)) + m
    if keepdims:
        return out
    axes = ops.normalize_axes(axis, x.ndim)
    return ops.reshape(out, tuple(n for i, n in enumerate(x.shape) if i not in axes))


class Prod(Function):
    grad_may_alias = False

    def __init__(self, axis: Any, keepdims: bool) -> None:
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x: Any) -> Any:
        xp = self.xp
        self.x = x
        self.axes = ops.normalize_axes(self.axis, x.ndim)
        y = x
        if not xp.isdtype(x.dtype, "real floating"):  # as NumPy: in the default integer
            y = xp.astype(x, ops.count_dtype(xp, x.dtype))
        for a in sorted(self.axes, reverse=True):
            y = xp.prod(y, axis=a, keepdims=True, dtype=y.dtype)
        return y if self.keepdims else xp.reshape(y, self._reduced_shape(x.shape))

    def _reduced_shape(self, shape: Any) -> tuple[int, ...]:
        return tuple(n for i, n in enumerate(shape) if i not in self.axes)

    def graph_backward(self, gy: Tensor) -> Tensor:
        xp, xr = self.xp, self.x
        x = self.input(0, xr)
        shape = tuple(xr.shape)
        if not self.keepdims:
            gy = ops.reshape(gy, tuple(1 if i in self.axes else n for i, n in enumerate(shape)))
        zero = xr == 0
        zeros = xp.sum(xp.astype(zero, xr.dtype), axis=self.axes, keepdims=True)
        safe = where(zero, 1.0, x)  # x with its zeros replaced by 1
        others = Prod(self.axes, True)(safe)  # the product of the non-zero elements
        # No zero: prod / x. One zero: the product of the others at the zero, 0 elsewhere.
        # Two or more: 0 everywhere.
        grad = where(zeros == 0, others / safe, where((zeros == 1) & zero, others, 0.0))
        return gy * grad


def prod(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Product over ``axis``; the gradient is exact also where elements are zero."""
    return Prod(axis, keepdims)(x)


def _arg_reduce(x: Any, axis: int | None, keepdims: bool, largest: bool) -> Tensor:
    data = _data(x)
    xp = backend_for(data)[0]
    fn = xp.argmax if largest else xp.argmin
    if axis is not None:
        axis = ops.normalize_axis(axis, data.ndim)
    if not _reduced_count(tuple(data.shape), axis):
        name = "argmax" if largest else "argmin"
        raise ShapeError(
            f"{name}: an empty axis of an array of shape {tuple(data.shape)} has no "
            f"{'largest' if largest else 'smallest'} element; reduce over an axis of length > 0"
        )
    if axis is None:
        out = fn(xp.reshape(data, (-1,)))
        if keepdims:
            out = xp.reshape(out, (1,) * data.ndim)
        return Tensor._wrap(out, False)
    return Tensor._wrap(fn(data, axis=axis, keepdims=keepdims), False)


def argmax(x: Any, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """Index of the first maximum along ``axis`` (of the flattened array when ``None``): an
    integer Tensor outside the graph (no gradient)."""
    return _arg_reduce(x, axis, keepdims, True)


def argmin(x: Any, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """Index of the first minimum along ``axis`` (of the flattened array when ``None``): an
    integer Tensor outside the graph (no gradient)."""
    return _arg_reduce(x, axis, keepdims, False)


# -- shape ----------------------------------------------------------------------------------
def permute(x: Any, axes: Sequence[int]) -> Tensor:
    """``x`` with its axes in the order ``axes`` (the standard's ``permute_dims``)."""
    return ops.transpose(x, tuple(int(a) for a in axes))


def flatten(x: Any, start: int = 0, end: int = -1) -> Tensor:
    """``x`` with the axes ``start`` to ``end`` (both included) merged into one."""
    shape = tuple(_data(x).shape)
    if not shape:
        return ops.reshape(x, (1,))
    s, e = ops.normalize_axis(start, len(shape)), ops.normalize_axis(end, len(shape))
    if s > e:
        raise ArgumentError(f"flatten: start axis {start} comes after end axis {end}")
    merged = math.prod(shape[s : e + 1])
    return ops.reshape(x, (*shape[:s], merged, *shape[e + 1 :]))


def squeeze(x: Any, axis: int | Sequence[int] | None = None) -> Tensor:
    """``x`` without the given axes of length 1 (all of them when ``axis`` is None)."""
    shape = tuple(_data(x).shape)
    if axis is None:
        axes = tuple(i for i, n in enumerate(shape) if n == 1)
    else:
        axes = ops.normalize_axes(axis, len(shape))
        bad = [a for a in axes if shape[a] != 1]
        if bad:
            raise ShapeError(f"squeeze: axes {bad} of shape {shape} do not have length 1")
    return ops.reshape(x, tuple(n for i, n in enumerate(shape) if i not in axes))


def expand_dims(x: Any, axis: int | Sequence[int]) -> Tensor:
    """``x`` with a new axis of length 1 at position ``axis`` (negative counts from the end of
    the result), or at each of the positions of a sequence ``axis`` (as ``numpy.expand_dims``)."""
    shape = list(_data(x).shape)
    if isinstance(axis, int):
        position = axis if axis >= 0 else len(shape) + 1 + axis
        if not 0 <= position <= len(shape):
            raise ArgumentError(f"expand_dims: axis {axis} is out of range for {len(shape)} axes")
        shape.insert(position, 1)
        return ops.reshape(x, tuple(shape))
    try:
        axes = [operator.index(a) for a in axis]
    except TypeError as e:
        raise ArgumentError(f"expand_dims: axis must be an int or ints, got {axis!r}") from e
    ndim = len(shape) + len(axes)
    try:
        new = {ops.normalize_axis(a, ndim) for a in axes}
    except ShapeError as e:
        raise ArgumentError(f"expand_dims: axes {axes} out of range for {ndim} axes") from e
    if len(new) != len(axes):
        raise ArgumentError(f"expand_dims: repeated axis in {axes}")
    rest = iter(shape)
    return ops.reshape(x, tuple(1 if i in new else next(rest) for i in range(ndim)))


class Concat(Function):
    grad_may_alias = False

    def __init__(self, axis: int) -> None:
        self.axis = axis

    def forward(self, *xs: Any) -> Any:
        xp = self.xp
        first = xs[0]
        for x in xs[1:]:
            ops.check_same_dtype("concat", first, x)
        self.axis = ops.normalize_axis(self.axis, first.ndim) if first.ndim else self.axis
        try:
            y = xp.concat(list(xs), axis=self.axis)
        except _BACKEND_ERRORS as e:
            shapes = [tuple(x.shape) for x in xs]
            raise ShapeError(
                f"concat: shapes {shapes} do not join along axis {self.axis}: the arrays need "
                "at least one axis, one number of axes, and equal lengths on every other axis"
            ) from e
        self.sizes = [int(x.shape[self.axis]) for x in xs]
        return y

    def graph_backward(self, gy: Tensor) -> tuple[Any, ...]:
        parts = split(gy, self.sizes, self.axis)
        return tuple(
            p if need else None for p, need in zip(parts, self.needs_input_grad, strict=True)
        )


class Split(Function):
    grad_may_alias = False

    def __init__(self, sizes: Sequence[int], axis: int) -> None:
        self.sizes, self.axis = list(sizes), axis

    def forward(self, x: Any) -> Any:
        self.shape, self.dtype = tuple(x.shape), x.dtype
        axis = self.axis = ops.normalize_axis(self.axis, x.ndim)
        outs = []
        start = 0
        for n in self.sizes:
            key = (*(slice(None),) * axis, slice(start, start + n), Ellipsis)
            outs.append(x[key])
            start += n
        return tuple(outs)

    def graph_backward(self, *gys: Tensor | None) -> Tensor:
        xp = self.xp
        parts = []
        device = next((g.data.device for g in gys if g is not None), None)
        for g, n in zip(gys, self.sizes, strict=True):
            if g is None:
                shape = list(self.shape)
                shape[self.axis] = n
                g = xp.zeros(tuple(shape), dtype=self.dtype, device=device)
            parts.append(g)
        return concat(parts, self.axis)


def concat(xs: Sequence[Any], axis: int = 0) -> Tensor:
    """Join ``xs`` (of one dtype, equal shapes but along ``axis``) along an existing axis."""
    xs = list(xs)
    if not xs:
        raise ArgumentError("concat needs at least one array")
    return Concat(axis)(*xs)


def stack(xs: Sequence[Any], axis: int = 0) -> Tensor:
    """Join ``xs`` (of one shape and dtype) along a new axis ``axis``."""
    xs = list(xs)
    if not xs:
        raise ArgumentError("stack needs at least one array")
    shapes = {tuple(_data(x).shape) for x in xs}
    if len(shapes) != 1:
        raise ShapeError(f"stack needs arrays of one shape, got {sorted(shapes)}")
    return concat([expand_dims(x, axis) for x in xs], axis)


def split(x: Any, sections: int | Sequence[int], axis: int = 0) -> tuple[Tensor, ...]:
    """Split ``x`` along ``axis`` into ``sections`` equal parts (an int that divides the
    axis' length), or into parts of the given lengths (a sequence summing to it)."""
    shape = tuple(_data(x).shape)
    if not shape:
        raise ShapeError("split needs an array with at least one axis")
    length = shape[ops.normalize_axis(axis, len(shape))]
    if not isinstance(sections, int) and not hasattr(sections, "__iter__"):
        try:  # a NumPy integer
            sections = operator.index(sections)  # type: ignore[arg-type]
        except TypeError as e:
            raise ArgumentError(
                f"split: sections must be an int (equal parts) or a sequence of part lengths, "
                f"got {sections!r}"
            ) from e
    if isinstance(sections, int):
        if sections <= 0 or length % sections:
            raise ShapeError(
                f"split: an axis of length {length} does not split into {sections} equal parts"
            )
        sizes = [length // sections] * sections
    else:
        try:
            sizes = [operator.index(n) for n in sections]
        except TypeError as e:
            raise ArgumentError(f"split: part lengths must be integers, got {sections!r}") from e
        if builtins.sum(sizes) != length or builtins.min(sizes, default=0) < 0:
            raise ShapeError(f"split: part lengths {sizes} do not add up to the axis' {length}")
    out = Split(sizes, axis)(x)
    return out if type(out) is tuple else (out,)


class Flip(Function):
    grad_may_alias = False

    def __init__(self, axis: Any) -> None:
        self.axis = axis

    def forward(self, x: Any) -> Any:
        return self.xp.flip(x, axis=self.axis)

    def graph_backward(self, gy: Tensor) -> Tensor:
        return Flip(self.axis)(gy)


def flip(x: Any, axis: int | Sequence[int] | None = None) -> Tensor:
    """``x`` with the order of its elements reversed along ``axis`` (all axes when None):
    ``x[:, ::-1]`` for every backend (negative steps are not in the standard)."""
    if axis is not None:
        ndim = len(_data(x).shape)
        if isinstance(axis, numbers.Integral):  # (np.int64 too: it was "not iterable")
            axis = int(axis)
        axes = ops.normalize_axes(axis if isinstance(axis, int) else tuple(axis), ndim)
        axis = axes[0] if isinstance(axis, int) else axes
    return Flip(axis)(x)


def pad(x: Any, pad_width: Any, value: float = 0.0) -> Tensor:
    """``x`` with ``value`` added before and after each axis: ``pad_width`` is one
    ``(before, after)`` pair per axis, or one pair for every axis (as ``numpy.pad``'s
    constant mode). The gradient is the gradient of the original elements."""
    x = _tensor(x)
    shape = x.shape
    widths = _pad_widths(pad_width, len(shape))
    xp = backend_for(x.data)[0]
    out = x
    for axis, (before, after) in enumerate(widths):
        parts: list[Any] = []
        for n in (before, after):
            side = list(out.shape)
            side[axis] = n
            parts.append(xp.full(tuple(side), value, dtype=x.dtype, device=x.device) if n else None)
        pieces = [p for p in (parts[0], out, parts[1]) if p is not None]
        if len(pieces) > 1:
            out = concat(pieces, axis)
    return out


def _pad_widths(pad_width: Any, ndim: int) -> list[tuple[int, int]]:
    """``pad``'s widths as one ``(before, after)`` pair of ints per axis, from any form
    ``numpy.pad`` accepts: ``n``, ``(n,)``, ``(before, after)``, ``((before, after),)`` or one
    pair per axis (NumPy integers and integer arrays too)."""
    width = pad_width.tolist() if hasattr(pad_width, "tolist") else pad_width

    def fail(why: str) -> ArgumentError:
        return ArgumentError(
            f"pad: pad_width {pad_width!r} {why}; give an int, a (before, after) pair of "
            f"non-negative ints, or one such pair for each of the {ndim} axes"
        )

    def pair(w: Any) -> tuple[int, int]:
        try:
            items = [operator.index(w)] if not hasattr(w, "__len__") else list(w)
            items = [operator.index(v) for v in items]
        except TypeError as e:
            raise fail("is not made of integers") from e
        if len(items) == 1:
            items *= 2
        if len(items) != 2:
            raise fail("has a group that is not one (before, after) pair")
        if builtins.min(items) < 0:
            raise fail("has a negative width")
        return items[0], items[1]

    if isinstance(width, str | bytes):
        raise fail("is a string")
    if not hasattr(width, "__len__") or (
        len(width) in (1, 2) and not any(hasattr(w, "__len__") for w in width)
    ):
        return [pair(width)] * ndim
    if len(width) == 1:
        return [pair(width[0])] * ndim
    if len(width) != ndim:
        raise ShapeError(
            f"pad: {len(width)} (before, after) pairs for an array of {ndim} axes; give one "
            "pair per axis, or one pair for all of them"
        )
    return [pair(w) for w in width]


def _moveaxis_to_front(shape_len: int, axis: int) -> tuple[int, ...]:
    return (axis, *[i for i in range(shape_len) if i != axis])


class Take(Function):
    """``take(x, indices, axis)`` for integer indices of any shape."""

    grad_may_alias = False

    def __init__(self, indices: Any, axis: int) -> None:
        self.indices, self.axis = indices, axis

    def forward(self, x: Any) -> Any:
        xp = self.xp
        axis = self.axis = ops.normalize_axis(self.axis, x.ndim)
        self.in_shape = tuple(x.shape)
        flat = xp.take(x, xp.reshape(self.indices, (-1,)), axis=axis)
        shape = (*x.shape[:axis], *self.indices.shape, *x.shape[axis + 1 :])
        return xp.reshape(flat, shape)

    def graph_backward(self, gy: Tensor) -> Tensor:
        return TakeBackward(self.indices, self.axis, self.in_shape)(gy)


class TakeBackward(Function):
    """The gradient of :class:`Take`: adds each slice back where it was taken from
    (accumulating repeated indices)."""

    grad_may_alias = False

    def __init__(self, indices: Any, axis: int, shape: tuple[int, ...]) -> None:
        self.indices, self.axis, self.shape = indices, axis, shape

    def forward(self, gy: Any) -> Any:
        xp, axis, shape = self.xp, self.axis, self.shape
        k = self.indices.ndim
        # gy has shape shape[:axis] + indices.shape + shape[axis+1:]: move the index axes first.
        order = (*range(axis, axis + k), *range(axis), *range(axis + k, gy.ndim))
        moved = xp.permute_dims(gy, order) if order != tuple(range(gy.ndim)) else gy
        front = _moveaxis_to_front(len(shape), axis)
        target_shape = tuple(shape[i] for i in front)
        target = xp.zeros(target_shape, dtype=gy.dtype, device=gy.device)
        summed = ops.scatter_add_rows(xp, target, self.indices, moved)
        inverse = tuple(sorted(range(len(front)), key=lambda i: front[i]))
        return xp.permute_dims(summed, inverse) if axis else summed

    def graph_backward(self, g: Tensor) -> Tensor:
        return Take(self.indices, self.axis)(g)


def take(x: Any, indices: Any, axis: int | None = 0) -> Tensor:
    """The elements of ``x`` at integer ``indices`` (any shape) along ``axis`` (of the
    flattened ``x`` when None, as ``numpy.take``): the result's shape is ``x.shape[:axis] +
    indices.shape + x.shape[axis+1:]`` (a gather). Negative indices count from the end;
    indices outside ``[-n, n)`` raise :class:`~nnbackend.errors.ShapeError`. Repeated
    indices add their gradients."""
    idx = _data(indices)
    data = _data(x)
    xp = backend_for(data)[0]
    if axis is None:  # as numpy.take: the flattened array
        x, axis = ops.reshape(x, (-1,)), 0
        data = _data(x)
    n = int(data.shape[ops.normalize_axis(axis, data.ndim)])
    if type(idx) in (list, tuple, int):
        idx = _host_indices(xp, idx, n, data.device)
    elif not hasattr(idx, "dtype"):
        raise ArgumentError(
            f"take: indices must be an integer array, a (nested) list of ints or an int, got "
            f"{type(idx).__name__} {idx!r}"
        )
    idx = ops.own_index(data, idx)  # a NumPy array for a torch Tensor
    if not xp.isdtype(idx.dtype, "integral"):
        raise ArgumentError(f"take: indices must be integers, got {idx.dtype}")
    idx = ops.from_the_end(xp, idx, n)
    bad = None
    k = ops_for(xp, data)
    if not k.take_checks_range and math.prod(idx.shape):  # jax fills NaN, cupy wraps
        what = "take: an index is out of range for an axis"
        idx, bad = ops.unchecked_take_indices(xp, k, idx, n, what)
    try:
        y = Take(idx, axis)(x)
    except NNBackendError:
        raise
    except _BACKEND_ERRORS as e:  # torch: RuntimeError; NumPy: IndexError
        raise ShapeError(
            f"take: an index is out of range for an axis of length {n}; use indices in [{-n}, {n})"
        ) from e
    if bad is None or not xp.isdtype(y.data.dtype, "real floating"):
        return y
    ax = ops.normalize_axis(axis, data.ndim)
    mask = xp.reshape(bad, (*([1] * ax), *bad.shape, *([1] * (data.ndim - ax - 1))))
    return where(mask, float("nan"), y)


def _host_indices(xp: Any, idx: Any, n: int, device: Any) -> Any:
    """Python ``take`` indices as an integer array, checked against the axis' length ``n``
    on the host (a backend's take wraps ``-n - 1`` silently to the last element)."""
    flat = [idx] if type(idx) is int else list(_flatten(idx))
    if not flat:  # an empty list would be a float array, not an index
        return xp.asarray(idx, dtype=xp.int64, device=device)
    if all(type(i) is int for i in flat) and not all(-n <= i < n for i in flat):
        raise ShapeError(
            f"take: indices {idx!r} are out of range for an axis of length {n}; use indices "
            f"in [{-n}, {n})"
        )
    try:
        return xp.asarray(idx, device=device)
    except _BACKEND_ERRORS as e:  # ragged ([[0], [1, 2]]) or not numbers
        raise ArgumentError(
            f"take: indices {idx!r} are not a rectangular nesting of integers; give an "
            "integer array, a (nested) list of ints of one length per level, or an int"
        ) from e


def _flatten(items: Any) -> Any:
    for item in items:
        if type(item) in (list, tuple):
            yield from _flatten(item)
        else:
            yield item


def einsum(subscripts: str, *operands: Any) -> Tensor:
    """Einstein summation for the patterns that reduce to transposes, sums and (batched)
    matrix products: one or two operands, explicit output (``"ij,jk->ik"``,
    ``"bij,bjk->bik"``, ``"i,i->"``, ``"ij->ji"``, ``"ij->j"``); each index at most once per
    operand (no diagonals) and no ``...``."""
    if subscripts.count("->") != 1 or "." in subscripts:
        raise ArgumentError(
            f"einsum: {subscripts!r}: write the output explicitly (e.g. 'ij,jk->ik'); '...' is "
            "not supported"
        )
    lhs, out = subscripts.replace(" ", "").split("->")
    ins = lhs.split(",")
    if len(ins) != len(operands) or len(ins) not in (1, 2):
        raise ArgumentError(f"einsum: {subscripts!r} needs 1 or 2 operands, got {len(operands)}")
    for term in (*ins, out):
        if len(set(term)) != len(term):
            raise ArgumentError(f"einsum: repeated index in {term!r} (diagonals) is not supported")
    tensors = [_tensor(op) for op in operands]
    for term, t in zip(ins, tensors, strict=True):
        if len(term) != t.ndim:
            raise ShapeError(f"einsum: {term!r} names {len(term)} axes of a {t.ndim}-d operand")
    if set(out) - set("".join(ins)):
        raise ArgumentError(f"einsum: output indices {out!r} do not all appear in the inputs")

    def reduce_alone(term: str, t: Tensor, keep: set[str]) -> tuple[str, Tensor]:
        drop = tuple(i for i, c in enumerate(term) if c not in keep)
        if drop:
            t = ops.sum(t, drop, False)
            term = "".join(c for c in term if c in keep)
        return term, t

    if len(ins) == 1:
        term, t = reduce_alone(ins[0], tensors[0], set(out))
        return permute(t, [term.index(c) for c in out]) if term != out else t

    (ta, tb), (a, b) = ins, tensors
    ta, a = reduce_alone(ta, a, set(out) | set(tb))
    tb, b = reduce_alone(tb, b, set(out) | set(ta))
    sizes = {c: n for term, t in ((ta, a), (tb, b)) for c, n in zip(term, t.shape, strict=True)}
    for term, t in ((ta, a), (tb, b)):
        for c, n in zip(term, t.shape, strict=True):
            if sizes[c] != n:
                raise ShapeError(f"einsum: index {c!r} has lengths {sizes[c]} and {n}")
    batch = [c for c in ta if c in tb and c in out]
    contract = [c for c in ta if c in tb and c not in out]
    free_a = [c for c in ta if c not in tb]
    free_b = [c for c in tb if c not in ta]

    def size(cs: list[str]) -> int:
        return math.prod(sizes[c] for c in cs)

    nb_, nf_a, nf_b, nk = size(batch), size(free_a), size(free_b), size(contract)
    a3 = ops.reshape(
        permute(a, [ta.index(c) for c in (*batch, *free_a, *contract)]), (nb_, nf_a, nk)
    )
    b3 = ops.reshape(
        permute(b, [tb.index(c) for c in (*batch, *contract, *free_b)]), (nb_, nk, nf_b)
    )
    y = ops.matmul(a3, b3)
    order = [*batch, *free_a, *free_b]
    y = ops.reshape(y, tuple(sizes[c] for c in order))
    perm = [order.index(c) for c in out]
    return permute(y, perm) if perm != list(range(len(perm))) else y


def _negative_steps(key: Any) -> bool:
    parts = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, slice) and k.step is not None and k.step < 0 for k in parts)


def _parts(key: Any) -> list[Any]:
    return [_data(k) for k in (key if isinstance(key, tuple) else (key,))]


def _with_bool_scalars(x: Any, parts: list[Any]) -> Tensor:
    """``x[key]`` for a key of ints, slices, ``...`` and ``None`` with bool scalars among
    them, as NumPy indexes: the bools are 0-d masks, so with the ints they are advanced
    indices that broadcast to one axis, of length 1 (all true) or 0 (one false). It goes in
    place of the first of them where they are adjacent in the key, first otherwise. Each
    library does it its own way (torch puts a bool's axis where the bool is, as ``None``;
    array_api_strict refuses bools), so it is done here: the key without the bools, then
    the new axis."""
    if any(_is_index_array(k) or isinstance(k, list | tuple) for k in parts):
        raise ArgumentError(
            "getitem: a bool scalar among index arrays is not supported; leave it out (in "
            "NumPy x[idx, True] selects what x[idx] does)"
        )
    shape = tuple(_data(x).shape)
    bools = [k for k in parts if type(k) is bool]
    advanced = [
        i
        for i, k in enumerate(parts)
        if isinstance(k, numbers.Integral) or getattr(k, "ndim", None) == 0  # (bools too)
    ]
    named = builtins.sum(1 for k in parts if k is not None and k is not Ellipsis) - len(bools)
    position = 0  # where the bools' axis goes in the result
    if advanced[-1] - advanced[0] + 1 == len(advanced):  # adjacent: in place of the first
        for k in parts[: advanced[0]]:
            position += len(shape) - named if k is Ellipsis else 1
    y = getitem(x, tuple(k for k in parts if type(k) is not bool))
    y = expand_dims(y, position)
    if not all(bools):
        y = ops.getitem(y, (*(slice(None),) * position, slice(0, 0), Ellipsis))
    return y


def _is_mask(k: Any) -> bool:
    dtype = getattr(k, "dtype", None)
    return dtype is not None and backend_for(k)[0].isdtype(dtype, "bool")


def _mask_position(key: Any) -> int | None:
    """Where in ``key`` its one boolean mask is, when it has one and every other part is
    ``:`` or ``...`` (the masks :func:`getitem` supports)."""
    parts = _parts(key)
    masks = [i for i, k in enumerate(parts) if type(k) is not bool and _is_mask(k)]
    if len(masks) != 1:
        return None
    rest = [k for i, k in enumerate(parts) if i != masks[0]]
    if any(not (k is Ellipsis or (isinstance(k, slice) and k == slice(None))) for k in rest):
        return None
    return masks[0]


def _masked(x: Any, key: Any) -> Tensor:
    """``x[mask]`` (``x[:, mask]``, ``x[..., mask]``): the mask's axes are flattened into one
    and the positions where it is true gathered with :func:`take`, so the gradient goes back
    to the selected elements (and their second derivative through ``take``)."""
    parts = _parts(key)
    at = _mask_position(key)
    assert at is not None
    mask = parts[at]
    shape = tuple(_data(x).shape)
    k = mask.ndim
    named = len(parts) - 1 - builtins.sum(1 for p in parts if p is Ellipsis) + k
    if named > len(shape):
        raise ShapeError(f"getitem: an index naming {named} axes for an array of shape {shape}")
    before = parts[:at]
    start = len(before) - 1 + len(shape) - named if Ellipsis in before else len(before)
    if tuple(mask.shape) != shape[start : start + k]:
        raise ShapeError(
            f"getitem: a boolean mask of shape {tuple(mask.shape)} for axes {start} to "
            f"{start + k - 1} of an array of shape {shape}: the mask must have those axes' "
            "lengths"
        )
    xp = backend_for(mask)[0]
    try:
        picked = xp.nonzero(xp.reshape(mask, (-1,)))[0]
    except _BACKEND_ERRORS as e:
        raise ArgumentError(
            "getitem: this backend cannot index with a boolean mask (the result's length "
            "depends on the mask's values); use F.where(mask, x, 0.0) instead"
        ) from e
    merged = ops.reshape(
        x, (*shape[:start], math.prod(shape[start : start + k]), *shape[start + k :])
    )
    return take(merged, picked, start)


def _index_key(key: Any) -> Any:
    """``key`` with NumPy / 0-d integers (``np.int64(1)``) as Python ints, or None where it
    holds something else that is not an index."""
    parts = _parts(key)
    out = []
    changed = False
    for k in parts:
        if (
            k is None
            or k is Ellipsis
            or isinstance(k, int | slice)
            or (hasattr(k, "shape") and (getattr(k, "ndim", 0) > 0))
        ):
            out.append(k)
            continue
        try:
            out.append(operator.index(k))
        except TypeError:
            return None
        changed = True
    if not changed:
        return key
    return tuple(out) if isinstance(key, tuple) else out[0]


def _clamped(parts: list[Any], shape: tuple[int, ...]) -> list[Any] | None:
    """``parts`` with their forward slices' ends clamped into the axis (``x[1:10]`` of a
    length-3 axis is ``x[1:3]`` in NumPy and torch; the standard leaves out-of-bounds ends
    unspecified and array_api_strict rejects them), or None where none changes."""
    out = list(parts)
    named = builtins.sum(
        (k.ndim if _is_mask(k) else 1) for k in parts if k is not None and k is not Ellipsis
    )
    axis = 0
    changed = False
    for i, k in enumerate(parts):
        if k is Ellipsis:
            axis += len(shape) - named
            continue
        if k is None:
            continue
        if axis < len(shape) and isinstance(k, slice) and (k.step is None or k.step > 0):
            fixed = slice(*k.indices(shape[axis]))
            if (fixed.start, fixed.stop) != (k.start, k.stop) and (
                _outside(k.start, shape[axis]) or _outside(k.stop, shape[axis])
            ):
                out[i] = fixed
                changed = True
        axis += k.ndim if _is_mask(k) else 1
    return out if changed else None


def _outside(end: Any, n: int) -> bool:
    return end is not None and not -n <= operator.index(end) <= n


def _getitem_failed(x: Any, key: Any, e: Exception) -> Tensor:
    """The failure path of :func:`getitem`: an index the standard spells differently (a
    strict backend wants ``x[0, ...]`` for ``x[0]``; NumPy integers), else a typed error
    saying what was wrong."""
    shape = tuple(_data(x).shape)
    parts = _parts(key)
    if any(type(k) is list for k in parts):  # as arrays (x[[3]] was "not an integer")
        return getitem(x, tuple(_advanced_parts(_data(x), key)))
    fixed = _index_key(key)
    if fixed is not None and fixed is not key:
        return getitem(x, fixed)
    named = builtins.sum(1 for k in parts if k is not None and k is not Ellipsis)
    if not any(k is Ellipsis for k in parts) and named < len(shape):
        try:
            return ops.getitem(x, (*parts, Ellipsis))
        except NNBackendError:
            raise
        except _BACKEND_ERRORS as again:
            e = again
    if any(isinstance(k, slice) and k.step == 0 for k in parts):
        raise ArgumentError(f"getitem: slice step cannot be zero in {key!r}")
    clamped = _clamped(parts, shape)
    if clamped is not None:
        return getitem(x, tuple(clamped))
    raise ShapeError(
        f"getitem: index {key!r} does not fit an array of shape {shape}: "
        f"{'it names more axes than the array has' if named > len(shape) else str(e)}"
    ) from e


def _is_index_array(k: Any) -> bool:
    return getattr(k, "ndim", 0) > 0 or (hasattr(k, "shape") and _is_mask(k))


def _advanced_parts(data: Any, key: Any) -> list[Any]:
    """``key``'s parts for :func:`_advanced`: Tensors as their arrays, lists as arrays of
    ``data``'s backend (:func:`nnbackend.autograd.ops.own_index`), arrays of other libraries
    converted, NumPy and 0-d integers as ints; a typed error for anything that is no index."""
    out: list[Any] = []
    for k in key if isinstance(key, tuple) else (key,):
        k = _data(k)
        if k is None or k is Ellipsis or isinstance(k, slice) or type(k) is int:
            out.append(k)
        elif type(k) is bool:
            raise ArgumentError(
                f"getitem: a Python bool ({k}) among index arrays; index with ints, slices, "
                "..., None, integer arrays or boolean masks"
            )
        elif isinstance(k, list | tuple):  # as an array of its own dtype: floats are
            # refused below, not truncated to ints
            out.append(ops.own_index(data, list(k)))
        elif hasattr(k, "shape"):
            k = ops.own_index(data, k)
            out.append(k if k.ndim else _index_int(k))
        else:
            out.append(_index_int(k))
    return out


def _index_int(k: Any) -> int:
    try:
        return operator.index(k)
    except TypeError as e:
        raise ArgumentError(
            f"getitem: {k!r} is not an index: index with ints, slices, ..., None, integer "
            "arrays (several broadcast together, as in NumPy) or boolean masks"
        ) from e


def _advanced(x: Any, key: Any) -> Tensor:
    """``x[key]`` for NumPy's advanced indexing with integer arrays anywhere (several, which
    broadcast together; with ints, slices, ``None`` and ``...`` around them; boolean masks
    as their ``nonzero`` positions). The slices are applied first; the indexed axes are then
    moved to the front, merged into one and gathered with :func:`take` at the flat positions,
    so repeated elements add their gradients (as ``np.add.at``) on every backend, and the
    indexed result axes go where NumPy puts them: in place where the indexed axes are
    adjacent in ``key``, first otherwise."""
    data = _data(x)
    xp = backend_for(data)[0]
    shape = tuple(data.shape)
    parts = _advanced_parts(data, key)
    dots = [i for i, k in enumerate(parts) if k is Ellipsis]
    if len(dots) > 1:
        raise ArgumentError(f"getitem: at most one ... in an index, got {key!r}")

    def width(k: Any) -> int:  # the axes of x that k indexes
        return 0 if k is None or k is Ellipsis else (k.ndim if _is_mask(k) else 1)

    named = builtins.sum(width(k) for k in parts)
    if named > len(shape):
        raise ShapeError(f"getitem: index {key!r} names {named} axes of an array of shape {shape}")
    if dots:
        parts[dots[0] : dots[0] + 1] = [slice(None)] * (len(shape) - named)
    else:
        parts += [slice(None)] * (len(shape) - named)
    # boolean masks -> their nonzero positions, one integer array per axis they cover
    spec: list[Any] = []
    axis = 0
    for k in parts:
        if k is not None and _is_mask(k):
            want = shape[axis : axis + k.ndim]
            if tuple(k.shape) != want:
                raise ShapeError(
                    f"getitem: a boolean mask of shape {tuple(k.shape)} for axes {axis} to "
                    f"{axis + k.ndim - 1} of an array of shape {shape}: the mask must have "
                    "those axes' lengths"
                )
            try:
                spec.extend(xp.nonzero(k))
            except _BACKEND_ERRORS as e:
                raise ArgumentError(
                    "getitem: this backend cannot index with a boolean mask (the result's "
                    "length depends on the mask's values); use F.where(mask, x, 0.0) instead"
                ) from e
        else:
            spec.append(k)
        axis += width(k)
    # None -> a new axis of length 1 in x, sliced whole
    if any(k is None for k in spec):
        lengths = iter(shape)
        x = ops.reshape(x, tuple(1 if k is None else next(lengths) for k in spec))
        spec = [slice(None) if k is None else k for k in spec]
    picked = [i for i, k in enumerate(spec) if not isinstance(k, slice)]
    arrays = [i for i, k in enumerate(spec) if not isinstance(k, slice | int)]
    if not arrays:  # only 0-d index arrays, now ints: basic indexing
        return getitem(x, tuple(spec))
    adjacent = picked == list(range(picked[0], picked[-1] + 1))
    if not adjacent and arrays == list(range(arrays[0], arrays[-1] + 1)):
        raise ArgumentError(
            f"getitem: {key!r} has an int and index arrays separated by a slice: NumPy puts "
            "the indexed axes first and torch keeps them in place, so the result's axes "
            "would depend on the backend. Index the int first for torch's order "
            "(x[0][:, idx] for x[0, :, idx]), or move the axes with F.permute for NumPy's"
        )
    if any(isinstance(k, slice) and k != slice(None) for k in spec):
        x = getitem(x, tuple(k if isinstance(k, slice) else slice(None) for k in spec))
    sizes = tuple(_data(x).shape)
    device = getattr(data, "device", None)
    index_shape = _broadcast_shape(*(_shape(spec[i]) for i in arrays))
    if index_shape is None:
        raise ShapeError(
            f"getitem: index arrays of shapes {[tuple(spec[i].shape) for i in arrays]} do not "
            "broadcast together (as in NumPy, several index arrays pair up elementwise)"
        )
    flat = xp.zeros(index_shape, dtype=xp.int64, device=device)
    stride = 1
    for i in reversed(picked):
        k, n = spec[i], sizes[i]
        if type(k) is int:
            if not -n <= k < n:
                raise ShapeError(
                    f"getitem: index {k} is out of range for axis {i} of length {n}; use an "
                    f"index in [{-n}, {n})"
                )
            flat = flat + (k % n) * stride
        else:
            if not xp.isdtype(k.dtype, "integral"):
                raise DtypeError(
                    f"getitem: an index array has dtype {k.dtype}; index arrays must be "
                    "integers (xp.astype(idx, xp.int64)) or boolean masks"
                )
            k = xp.astype(k, xp.int64)
            if bool(xp.any((k < -n) | (k >= n))):
                raise ShapeError(
                    f"getitem: an index array has values out of range for axis {i} of length "
                    f"{n}; use indices in [{-n}, {n})"
                )
            flat = flat + ops.from_the_end(xp, k, n) * stride
        stride *= n
    rest = [i for i in range(len(spec)) if i not in picked]
    if picked + rest != list(range(len(spec))):
        x = permute(x, picked + rest)
    x = ops.reshape(x, (stride, *(sizes[i] for i in rest)))
    y = take(x, flat, 0)
    k = len(index_shape)
    if adjacent and picked[0]:  # the indexed axes back in place of the first indexed one
        front = picked[0]
        y = permute(y, [*range(k, k + front), *range(k), *range(k + front, y.ndim)])
    return y


def getitem(x: Any, key: Any) -> Tensor:
    """``x[key]`` with gradients, as NumPy indexes, on every backend:

    - basic indexing (:func:`nnbackend.autograd.ops.getitem`): ints, slices, ``...``,
      ``None``; slice ends past the axis are clamped, and slices may have negative steps
      (``x[:, ::-1]``): the standard has none, so those axes are sliced forwards and
      gathered with :func:`take` (reversed by :func:`flip` for step -1);
    - integer index arrays (or lists) on any axes, several of which broadcast together and
      pair up elementwise (``x[[0, 1], [1, 2]]`` is ``[x[0, 1], x[1, 2]]``); the indexed
      axes of the result go where NumPy puts them (in place when the indexed axes are
      adjacent in ``key``, first otherwise), and repeated elements add their gradients (as
      ``np.add.at``);
    - boolean masks (their ``nonzero`` positions, on backends with data-dependent shapes).

    An index array of another library (a NumPy array for a torch Tensor) is converted to
    ``x``'s backend. An int and index arrays separated by a slice (``x[0, :, idx]``) are
    refused with an :class:`~nnbackend.errors.ArgumentError`, since NumPy and torch order
    that result's axes differently; write ``x[0][:, idx]``. Out-of-range indices raise
    :class:`~nnbackend.errors.ShapeError`. Bool scalars (``x[0, True]``) index as NumPy's
    0-d masks on every backend."""
    bools = ops.bool_scalars(key)
    if bools is not None:
        return _with_bool_scalars(x, bools)
    if not _negative_steps(key):
        try:
            return ops.getitem(x, key)
        except NotImplementedError:
            if _mask_position(key) is None:
                return _advanced(x, key)
            return _masked(x, key)
        except NNBackendError:
            fixed = _index_key(key)  # NumPy integers: torch's node calls them not integers
            if fixed is None or fixed is key:
                raise
            return getitem(x, fixed)
        except _BACKEND_ERRORS as e:
            return _getitem_failed(x, key, e)
    data = _data(x)
    shape = tuple(data.shape)
    fixed = _index_key(key)
    if fixed is not None:
        key = fixed
    # index lists as arrays, as on the other paths (x[[0, 1], ::-1]): a list has no ndim
    parts = [
        ops.own_index(data, k) if type(k) is list else k
        for k in (list(key) if isinstance(key, tuple) else [key])
    ]
    # By identity: an index array's == is elementwise (list.count and `in` would ask its truth)
    dots = [i for i, k in enumerate(parts) if k is Ellipsis]
    if len(dots) > 1:
        raise ArgumentError(f"getitem: at most one ... in an index, got {key!r}")
    named = builtins.sum(1 for k in parts if k is not None and k is not Ellipsis)
    if named > len(shape):
        raise ShapeError(f"getitem: index {key!r} names {named} axes of an array of shape {shape}")
    if dots:
        at = dots[0]
        parts[at : at + 1] = [slice(None)] * (len(shape) - named)
    forwards: list[Any] = []
    reversed_axes: list[tuple[int, list[int]]] = []
    axis = out_axis = 0
    for k in parts:
        if k is None:
            forwards.append(None)
            out_axis += 1
            continue
        if isinstance(k, slice) and k.step is not None and k.step < 0:
            reversed_axes.append((out_axis, list(range(*k.indices(shape[axis])))))
            k = slice(None)
        forwards.append(k)
        if isinstance(k, slice):
            out_axis += 1
        elif not isinstance(k, int):  # an index array: its axes come in this one's place
            out_axis += k.ndim
        axis += 1
    try:
        y = ops.getitem(x, (*forwards, Ellipsis))
    except NotImplementedError:
        return _advanced(x, key)
    except NNBackendError:
        raise
    except _BACKEND_ERRORS as e:
        y = _getitem_failed(x, (*forwards, Ellipsis), e)
    for a, picked in reversed_axes:
        n = y.shape[a]
        if picked == list(range(n - 1, -1, -1)):
            y = flip(y, a)
        elif picked:
            y = take(y, picked, a)
        else:
            y = ops.getitem(y, (*(slice(None),) * a, slice(0, 0), Ellipsis))
    return y
