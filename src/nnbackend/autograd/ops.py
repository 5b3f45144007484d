"""The Tensor operators and reductions as :class:`~nnbackend.autograd.function.Function`
nodes. Each takes its namespace from its inputs (``self.xp``) and keeps every dtype: two
array operands must share one dtype, Python scalars mix freely."""

from __future__ import annotations

import builtins
import math
import numbers
import operator
from typing import Any

from nnbackend import config
from nnbackend.autograd.function import Function
from nnbackend.backends.ops import wide_indices
from nnbackend.config import normalize_dtype
from nnbackend.errors import ArgumentError, BackendMismatchError, DtypeError, ShapeError
from nnbackend.namespace import backend_for, ops_for

__all__ = [
    "add",
    "cast",
    "convert",
    "div",
    "exp",
    "getitem",
    "log",
    "matmul",
    "max",
    "mean",
    "mul",
    "neg",
    "power",
    "reshape",
    "sub",
    "sum",
    "transpose",
    "unbroadcast",
]

_SCALARS = (int, float, bool)


def _raw(x: Any) -> Any:
    return x.data if hasattr(x, "creator") else x


def unbroadcast(xp: Any, g: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``g`` down to ``shape``: the gradient of a broadcast."""
    if tuple(g.shape) == shape:
        return g
    extra = g.ndim - len(shape)
    if extra:
        g = xp.sum(g, axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = xp.sum(g, axis=axes, keepdims=True)
    return g


def check_same_dtype(op: str, a: Any, b: Any) -> None:
    """A :class:`DtypeError` naming ``op`` and both dtypes where two arrays differ in dtype
    (Python scalars always pass). Internal API for the engine's nodes."""
    if type(a) in _SCALARS or type(b) in _SCALARS:
        return
    try:
        differ = a.dtype != b.dtype
    except AttributeError:  # a string, None, a list: no operand at all
        other = b if hasattr(a, "dtype") else a
        raise BackendMismatchError(
            f"{op}: an operand is a {type(other).__module__}.{type(other).__qualname__}; "
            "expected a Tensor, an array of the same backend, or a Python number"
        ) from None
    if differ:
        ta, tb = type(a), type(b)
        # numpy.float64 and torch.float64 differ as dtypes too: say what is really wrong
        if ta.__module__.partition(".")[0] != tb.__module__.partition(".")[0]:
            raise BackendMismatchError(
                f"{op}: operands are arrays of two libraries ({ta.__module__}.{ta.__qualname__}"
                f" and {tb.__module__}.{tb.__qualname__}); move one with nb.to_device(x, "
                "backend) first"
            )
        raise DtypeError(
            f"{op}: operands have dtypes {a.dtype} and {b.dtype}; nnbackend never promotes "
            "silently. Cast one with xp.astype, or use a Python scalar instead of a 0-d array"
        )


def _size(x: Any) -> int:
    """The number of elements (``size`` is a method on torch tensors)."""
    n = x.size
    return n if type(n) is int else math.prod(x.shape)


def _shape(x: Any) -> Any:
    return None if type(x) in _SCALARS else tuple(x.shape)


def check_broadcast(op: str, sa: Any, sb: Any, error: Exception) -> None:
    """Raise a :class:`ShapeError` naming ``op`` and both shapes, from ``error``, when ``sa``
    and ``sb`` (``None`` for a scalar) do not broadcast: for the ``except`` branch of an op
    whose backend raised (a bare ValueError from NumPy, a RuntimeError from torch), which
    re-raises ``error`` when this returns. Internal API for the engine's nodes."""
    if sa is None or sb is None:
        return
    for m, n in zip(reversed(sa), reversed(sb), strict=False):
        if m != n and m != 1 and n != 1:
            raise ShapeError(
                f"{op}: shapes {sa} and {sb} do not broadcast (axis lengths {m} and {n}, "
                "counted from the end, must be equal or 1); reshape or expand_dims one of them"
            ) from error


class Add(Function):
    def forward(self, a: Any, b: Any) -> Any:
        check_same_dtype("add", a, b)
        self.shapes = (_shape(a), _shape(b))
        try:
            return a + b
        except (ValueError, RuntimeError) as e:
            check_broadcast("add", *self.shapes, e)
            raise

    def backward(self, gy: Any) -> tuple[Any, Any]:
        sa, sb = self.shapes
        na, nb = self.needs_input_grad
        return (
            unbroadcast(self.xp, gy, sa) if na else None,
            unbroadcast(self.xp, gy, sb) if nb else None,
        )

    def graph_backward(self, gy: Any) -> tuple[Any, Any]:
        sa, sb = self.shapes
        na, nb = self.needs_input_grad
        return (_F.sum_to(gy, sa) if na else None, _F.sum_to(gy, sb) if nb else None)


class Sub(Function):
    def forward(self, a: Any, b: Any) -> Any:
        check_same_dtype("sub", a, b)
        self.shapes = (_shape(a), _shape(b))
        try:
            return a - b
        except (ValueError, RuntimeError) as e:
            check_broadcast("sub", *self.shapes, e)
            raise

    def backward(self, gy: Any) -> tuple[Any, Any]:
        sa, sb = self.shapes
        na, nb = self.needs_input_grad
        return (
            unbroadcast(self.xp, gy, sa) if na else None,
            unbroadcast(self.xp, -gy, sb) if nb else None,
        )

    def graph_backward(self, gy: Any) -> tuple[Any, Any]:
        sa, sb = self.shapes
        na, nb = self.needs_input_grad
        return (_F.sum_to(gy, sa) if na else None, _F.sum_to(-gy, sb) if nb else None)


class Mul(Function):
    grad_may_alias = False

    def forward(self, a: Any, b: Any) -> Any:
        check_same_dtype("mul", a, b)
        self.a, self.b = a, b
        try:
            return a * b
        except (ValueError, RuntimeError) as e:
            check_broadcast("mul", _shape(a), _shape(b), e)
            raise

    def backward(self, gy: Any) -> tuple[Any, Any]:
        a, b = self.a, self.b
        na, nb = self.needs_input_grad
        return (
            unbroadcast(self.xp, gy * b, tuple(a.shape)) if na else None,
            unbroadcast(self.xp, gy * a, tuple(b.shape)) if nb else None,
        )

    def graph_backward(self, gy: Any) -> tuple[Any, Any]:
        a, b = self.input(0, self.a), self.input(1, self.b)
        na, nb = self.needs_input_grad
        return (
            _F.sum_to(gy * b, tuple(self.a.shape)) if na else None,
            _F.sum_to(gy * a, tuple(self.b.shape)) if nb else None,
        )


class Div(Function):
    grad_may_alias = False

    def forward(self, a: Any, b: Any) -> Any:
        check_same_dtype("div", a, b)
        self.a, self.b = a, b
        try:
            return a / b
        except (ValueError, RuntimeError) as e:
            check_broadcast("div", _shape(a), _shape(b), e)
            raise

    def backward(self, gy: Any) -> tuple[Any, Any]:
        a, b = self.a, self.b
        na, nb = self.needs_input_grad
        ga = unbroadcast(self.xp, gy / b, tuple(a.shape)) if na else None
        gb = unbroadcast(self.xp, -gy * a / (b * b), tuple(b.shape)) if nb else None
        return ga, gb

    def graph_backward(self, gy: Any) -> tuple[Any, Any]:
        a, b = self.input(0, self.a), self.input(1, self.b)
        na, nb = self.needs_input_grad
        ga = _F.sum_to(gy / b, tuple(self.a.shape)) if na else None
        gb = _F.sum_to(-gy * a / (b * b), tuple(self.b.shape)) if nb else None
        return ga, gb


class Neg(Function):
    grad_may_alias = False

    def forward(self, x: Any) -> Any:
        return -x

    def backward(self, gy: Any) -> Any:
        return -gy

    def graph_backward(self, gy: Any) -> Any:
        return -gy


class Pow(Function):
    grad_may_alias = False

    def forward(self, a: Any, b: Any) -> Any:
        check_same_dtype("pow", a, b)
        self.a, self.b = a, b
        try:
            self.y = a**b
        except (ValueError, RuntimeError) as e:
            check_broadcast("pow", _shape(a), _shape(b), e)
            raise
        return self.y

    def backward(self, gy: Any) -> tuple[Any, Any]:
        xp, a, b = self.xp, self.a, self.b
        na, nb = self.needs_input_grad
        ga = gb = None
        if na:
            if type(b) in _SCALARS:
                # b * a**(b-1) is 0 * inf = nan at a = 0 for b = 0: x**0 is constant (torch: 0)
                d = gy * b * a ** (b - 1) if b else gy * 0.0
            else:
                d = gy * xp.where(b == 0, 0.0, b * a ** (b - 1))
            ga = unbroadcast(xp, d, tuple(a.shape))
        if nb:
            if type(a) in _SCALARS:
                if a > 0:
                    d = gy * self.y * math.log(a)
                elif a == 0:  # 0**b: constant 0 for b > 0 (torch: 0 also at b = 0), inf below
                    d = gy * xp.where(b >= 0, xp.zeros_like(b), -math.inf)
                else:  # log of a negative base: nan, as torch (math.log would raise)
                    d = gy * math.nan
            else:  # y * log(a) is 0 * -inf = nan at a = 0; torch defines 0 there for b >= 0
                d = gy * xp.where((a == 0) & (b >= 0), 0.0, self.y * xp.log(a))
            gb = unbroadcast(xp, d, tuple(b.shape))
        return ga, gb

    def graph_backward(self, gy: Any) -> tuple[Any, Any]:
        xp, ra, rb = self.xp, self.a, self.b
        a, b = self.input(0, ra), self.input(1, rb)
        na, nb = self.needs_input_grad
        ga = gb = None
        if na:
            if type(rb) in _SCALARS:
                d = gy * b * a ** (b - 1) if rb else gy * 0.0  # as in backward
            else:
                # a with its entries at b = 0 set to 1: the masked side stays finite, so the
                # second derivative is 0 there, not nan
                zero = rb == 0
                d = gy * _F.where(zero, 0.0, b * _F.where(zero, 1.0, a) ** (b - 1))
            ga = _F.sum_to(d, tuple(ra.shape))
        if nb:
            if type(ra) in _SCALARS:
                if ra > 0:
                    d = gy * a**b * math.log(ra)
                elif ra == 0:
                    d = gy * xp.where(rb >= 0, xp.zeros_like(rb), -math.inf)
                else:
                    d = gy * math.nan
            else:
                # 1 where a = 0 and b >= 0: 1**b * log(1) = 0 there, with finite derivatives
                safe = _F.where((ra == 0) & (rb >= 0), 1.0, a)
                d = gy * safe**b * log(safe)
            gb = _F.sum_to(d, tuple(rb.shape))
        return ga, gb


def matmul_arrays(xp: Any, a: Any, b: Any) -> Any:
    """``a @ b``, computed in float32 and stored in float16 where the backend has no fast
    float16 matrix product (NumPy on a CPU runs float16 GEMM about 250x slower)."""
    c = ops_for(xp, a).compute_product(a, b.shape[-1], 2048)
    # The operator, not xp.matmul: it is standard and skips a Python wrapper.
    return c.narrow(c.widen(a) @ c.widen(b))


def convert(xp: Any, x: Any, dtype: Any) -> Any:
    """``x`` as ``dtype`` (a new array), with the backend's fast float16 conversions where it
    has them."""
    return ops_for(xp, x).convert(x, dtype)


class Cast(Function):
    """``x`` converted to another floating dtype; the gradient is converted back."""

    grad_may_alias = False

    def __init__(self, dtype: Any) -> None:
        self.output_dtype = dtype

    def forward(self, x: Any) -> Any:
        self.in_dtype = x.dtype
        if x.dtype == self.output_dtype:
            return self.xp.asarray(x, copy=True)  # a cast never aliases its input
        return convert(self.xp, x, self.output_dtype)

    def backward(self, gy: Any) -> Any:
        if gy.dtype == self.in_dtype:
            return self.xp.asarray(gy, copy=True)
        return convert(self.xp, gy, self.in_dtype)

    def graph_backward(self, gy: Any) -> Any:
        return Cast(self.in_dtype)(gy)


def _mT(xp: Any, x: Any) -> Any:
    return x.T if x.ndim == 2 else xp.matrix_transpose(x)


class MatMul(Function):
    grad_may_alias = False

    def forward(self, a: Any, b: Any) -> Any:
        check_same_dtype("matmul", a, b)
        try:
            scalar = a.ndim == 0 or b.ndim == 0
        except AttributeError:  # a Python number (check_same_dtype lets those through)
            scalar = True
        if scalar:
            raise ShapeError("matmul needs operands with at least one dimension; use * for scalars")
        if a.shape[-1] != b.shape[0 if b.ndim == 1 else -2]:
            raise ShapeError(
                f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} do not align "
                f"({a.shape[-1]} != {b.shape[0 if b.ndim == 1 else -2]})"
            )
        self.a, self.b = a, b
        try:
            return matmul_arrays(self.xp, a, b)
        except (ValueError, RuntimeError) as e:  # the batch axes (all but the last two)
            sa = tuple(a.shape[:-2]) if a.ndim > 2 else ()
            sb = tuple(b.shape[:-2]) if b.ndim > 2 else ()
            check_broadcast(f"matmul of {tuple(a.shape)} and {tuple(b.shape)}", sa, sb, e)
            raise

    def backward(self, gy: Any) -> tuple[Any, Any]:
        xp, a, b = self.xp, self.a, self.b
        a2 = a if a.ndim > 1 else xp.reshape(a, (1, a.shape[0]))
        b2 = b if b.ndim > 1 else xp.reshape(b, (b.shape[0], 1))
        if a.ndim == 1 or b.ndim == 1:
            batch = gy.shape[: builtins.max(a2.ndim, b2.ndim) - 2]
            gy = xp.reshape(gy, (*batch, a2.shape[-2], b2.shape[-1]))
        na, nb = self.needs_input_grad
        ga = gb = None
        if na:
            ga = unbroadcast(xp, matmul_arrays(xp, gy, _mT(xp, b2)), tuple(a2.shape))
            ga = xp.reshape(ga, a.shape) if a.ndim == 1 else ga
        if nb:
            gb = unbroadcast(xp, matmul_arrays(xp, _mT(xp, a2), gy), tuple(b2.shape))
            gb = xp.reshape(gb, b.shape) if b.ndim == 1 else gb
        return ga, gb

    def graph_backward(self, gy: Any) -> tuple[Any, Any]:
        ra, rb = self.a, self.b
        a, b = self.input(0, ra), self.input(1, rb)
        a2 = a if ra.ndim > 1 else reshape(a, (1, ra.shape[0]))
        b2 = b if rb.ndim > 1 else reshape(b, (rb.shape[0], 1))
        s_a2 = tuple(ra.shape) if ra.ndim > 1 else (1, ra.shape[0])
        s_b2 = tuple(rb.shape) if rb.ndim > 1 else (rb.shape[0], 1)
        if ra.ndim == 1 or rb.ndim == 1:
            batch = tuple(gy.shape[: builtins.max(len(s_a2), len(s_b2)) - 2])
            gy = reshape(gy, (*batch, s_a2[-2], s_b2[-1]))
        na, nb = self.needs_input_grad
        ga = gb = None
        if na:
            ga = _F.sum_to(matmul(gy, _swap_last(b2)), s_a2)
            ga = reshape(ga, tuple(ra.shape)) if ra.ndim == 1 else ga
        if nb:
            gb = _F.sum_to(matmul(_swap_last(a2), gy), s_b2)
            gb = reshape(gb, tuple(rb.shape)) if rb.ndim == 1 else gb
        return ga, gb


def _swap_last(t: Any) -> Any:
    n = len(t.shape)
    return transpose(t, (*range(n - 2), n - 1, n - 2))


class Reshape(Function):
    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(int(n) for n in shape)

    def forward(self, x: Any) -> Any:
        self.in_shape = tuple(x.shape)
        try:
            return self.xp.reshape(x, self.shape)
        except (ValueError, RuntimeError, TypeError) as e:
            raise ShapeError(
                f"reshape: an array of shape {self.in_shape} ({_count(self.in_shape)} elements) "
                f"cannot take the shape {self.shape}; the lengths must multiply to the same "
                "number (one may be -1)"
            ) from e

    def backward(self, gy: Any) -> Any:
        return self.xp.reshape(gy, self.in_shape)

    def graph_backward(self, gy: Any) -> Any:
        return reshape(gy, self.in_shape)


class Transpose(Function):
    def __init__(self, axes: tuple[int, ...] | None) -> None:
        self.axes = axes

    def forward(self, x: Any) -> Any:
        if self.axes is None:
            axes = tuple(range(x.ndim))[::-1]
        else:
            axes = tuple(normalize_axis(a, x.ndim) for a in self.axes)
            if sorted(axes) != list(range(x.ndim)):
                raise ShapeError(
                    f"transpose: axes {self.axes} are not a permutation of the {x.ndim} axes "
                    f"of an array of shape {tuple(x.shape)}; name each axis once"
                )
        self.inverse = tuple(sorted(range(len(axes)), key=lambda i: axes[i]))
        return self.xp.permute_dims(x, axes)

    def backward(self, gy: Any) -> Any:
        return self.xp.permute_dims(gy, self.inverse)

    def graph_backward(self, gy: Any) -> Any:
        return transpose(gy, self.inverse)


def normalize_axis(axis: int, ndim: int) -> int:
    """``axis`` (negatives count from the end) as a non-negative axis of an
    ``ndim``-dimensional array; a :class:`~nnbackend.errors.ShapeError` (a ValueError, as
    NumPy's AxisError is) for one outside ``[-ndim, ndim)``, which ``axis % ndim`` would have
    silently wrapped onto another axis; an :class:`~nnbackend.errors.ArgumentError` for an
    axis that is no integer (NumPy integers are). Internal API for the engine's nodes."""
    if type(axis) is not int:
        axis = _axis_int(axis)
    if not -ndim <= axis < ndim:
        raise ShapeError(
            f"axis {axis} is out of range for an array of {ndim} axes; use an axis in "
            f"[{-ndim}, {ndim})"
        )
    return axis % ndim


def _axis_int(axis: Any) -> int:
    """A NumPy or 0-d integer axis as an int; an ArgumentError for anything else."""
    if not isinstance(axis, bool):
        try:
            return operator.index(axis)
        except TypeError:
            pass
    raise ArgumentError(
        f"axis {axis!r} is not an integer; give an int, a tuple of ints, or None (all axes)"
    )


def normalize_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    """``axis`` (None, an int or a tuple, negatives allowed) as a tuple of non-negative axes
    of an ``ndim``-dimensional array (each checked by :func:`normalize_axis`; NumPy integers
    too); a 0-d array takes axis 0 or -1, as in torch, and reduces over none. Internal API
    for the engine's nodes."""
    if axis is None:
        return tuple(range(ndim))
    single = isinstance(axis, int)
    if single:
        axis = (axis,)
    elif not isinstance(axis, tuple | list):
        axis = (_axis_int(axis),)  # a NumPy integer, or an ArgumentError
        single = True
    if not ndim:  # as torch: axis 0 or -1 of a 0-d array reduces nothing
        bad = [a for a in axis if (a if type(a) is int else _axis_int(a)) not in (0, -1)]
        if bad:
            raise ShapeError(
                f"axis {bad[0]} is out of range for a 0-d array; use axis None, 0 or -1"
            )
        return ()
    axes = tuple(normalize_axis(a, ndim) for a in axis)
    if not single and len(set(axes)) != len(axes):
        raise ShapeError(f"axis {axis} names an axis twice; name each axis once")
    return axes


def _expand_reduced(
    xp: Any, gy: Any, axes: tuple[int, ...], keepdims: bool, shape: tuple[int, ...]
) -> Any:
    """Reshape a reduction's gradient so it broadcasts back to ``shape``."""
    if not keepdims:
        gy = xp.reshape(gy, tuple(1 if i in axes else n for i, n in enumerate(shape)))
    return gy


def count_dtype(xp: Any, dtype: Any) -> Any:
    """The dtype NumPy sums and multiplies ``dtype`` (bool or integer) in: the default
    unsigned integer for unsigned ones, else the namespace's default integer. Internal API
    for the engine's reductions."""
    if xp.isdtype(dtype, "unsigned integer"):
        return xp.uint64
    info = getattr(xp, "__array_namespace_info__", None)
    return info().default_dtypes()["integral"] if info is not None else xp.int64


class Sum(Function):
    grad_may_alias = False

    def __init__(self, axis: Any, keepdims: bool) -> None:
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x: Any) -> Any:
        xp = self.xp
        self.in_shape = tuple(x.shape)
        self.axes = normalize_axes(self.axis, x.ndim)
        if not xp.isdtype(x.dtype, "real floating"):
            # Counts, as NumPy and the standard sum: bools and narrow integers in the
            # default integer dtype (a sum of bools was True, (pred == t).mean() of a
            # batch 1/N; a uint8 sum of 200 and 100 was 44).
            total = xp.astype(x, count_dtype(xp, x.dtype))
            return self._reduce(xp.sum(total, axis=self.axes, keepdims=self.keepdims))
        # Where float16 adds are slow: sum in float32 (also more accurate), store float16.
        c = ops_for(xp, x).compute(x, 1024)
        wide = c.widen(x)
        return c.narrow(
            self._reduce(xp.sum(wide, axis=self.axes, keepdims=self.keepdims, dtype=wide.dtype))
        )

    def _reduce(self, y: Any) -> Any:
        return y

    def backward(self, gy: Any) -> Any:
        xp = self.xp
        gy = _expand_reduced(xp, gy, self.axes, self.keepdims, self.in_shape)
        # A new array, not a read-only broadcast view: gradients must be writable.
        return ops_for(xp, gy).expand(gy, self.in_shape)

    def graph_backward(self, gy: Any) -> Any:
        if not self.keepdims:
            shape = tuple(1 if i in self.axes else n for i, n in enumerate(self.in_shape))
            gy = reshape(gy, shape)
        return _F.broadcast_to(gy, self.in_shape)


class Mean(Sum):
    def _reduce(self, y: Any) -> Any:
        count = 1
        for a in self.axes:
            count *= self.in_shape[a]
        self.count = count
        xp = self.xp
        if not xp.isdtype(y.dtype, "real floating"):  # a count: the mean in the default float
            y = xp.astype(y, getattr(xp, config.get_default_dtype()))
        return y / float(count)

    def backward(self, gy: Any) -> Any:
        return super().backward(gy / float(self.count))

    def graph_backward(self, gy: Any) -> Any:
        return super().graph_backward(gy / float(self.count))


class Max(Function):
    grad_may_alias = False

    def __init__(self, axis: Any, keepdims: bool) -> None:
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x: Any) -> Any:
        self.x = x
        self.axes = normalize_axes(self.axis, x.ndim)
        try:
            self.y = self.xp.max(x, axis=self.axes, keepdims=True)
        except (ValueError, RuntimeError, IndexError) as e:  # NumPy, torch: an empty axis
            check_extremum_axes("max", tuple(x.shape), self.axes, e)
            raise
        if self.keepdims:
            return self.y
        return self.xp.reshape(
            self.y, tuple(n for i, n in enumerate(x.shape) if i not in self.axes)
        )

    def backward(self, gy: Any) -> Any:
        xp = self.xp
        gy = _expand_reduced(xp, gy, self.axes, self.keepdims, tuple(self.x.shape))
        mask = xp.astype(self.x == self.y, self.x.dtype)
        # Ties share the gradient, so the sum over the reduced axes is exactly gy.
        count = xp.sum(mask, axis=self.axes, keepdims=True)
        return mask * (gy / count)

    def graph_backward(self, gy: Any) -> Any:
        xp = self.xp
        shape = tuple(self.x.shape)
        if not self.keepdims:
            gy = reshape(gy, tuple(1 if i in self.axes else n for i, n in enumerate(shape)))
        mask = xp.astype(self.x == self.y, self.x.dtype)
        share = mask / xp.sum(mask, axis=self.axes, keepdims=True)
        return gy * _F.piecewise(self.inputs[0], share)


def check_extremum_axes(
    name: str, shape: tuple[int, ...], axes: tuple[int, ...], error: Exception | None = None
) -> None:
    """A :class:`ShapeError` naming ``name`` (max, min) where one of ``axes`` of ``shape`` is
    empty: the extremum of no elements is undefined (NumPy: "zero-size array to reduction
    operation maximum which has no identity"). Internal API for the engine's nodes."""
    empty = [a for a in axes if a < len(shape) and not shape[a]]
    if empty:
        pad = ", ".join("(0, 1)" if a in empty else "(0, 0)" for a in range(len(shape)))
        fill = "-inf" if name == "max" else "inf"
        raise ShapeError(
            f"{name}: axis {empty[0]} of an array of shape {shape} is empty, and the "
            f"{'maximum' if name == 'max' else 'minimum'} of no elements is undefined; "
            f"reduce over axes of length > 0, or pad the empty axes with the identity "
            f"({name}(F.pad(x, [{pad}], value={fill}), ...) gives {fill} there)"
        ) from error


class Exp(Function):
    grad_may_alias = False

    def forward(self, x: Any) -> Any:
        self.y = self.xp.exp(x)
        return self.y

    def backward(self, gy: Any) -> Any:
        return gy * self.y

    def graph_backward(self, gy: Any) -> Any:
        return gy * exp(self.input(0, None))


class Log(Function):
    grad_may_alias = False

    def forward(self, x: Any) -> Any:
        self.x = x
        return self.xp.log(x)

    def backward(self, gy: Any) -> Any:
        return gy / self.x

    def graph_backward(self, gy: Any) -> Any:
        return gy / self.input(0, self.x)


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _rows_index(key: Any) -> Any:
    """The index array when ``key`` selects rows with one integer array (``x[idx]`` or
    ``x[idx, ...]``), ``None`` for basic indexing; other advanced keys are rejected."""
    parts = key if isinstance(key, tuple) else (key,)
    if all(isinstance(k, int | slice | type(None) | type(Ellipsis)) for k in parts):
        return None
    first, rest = parts[0], parts[1:]
    if isinstance(first, int | slice | type(None) | type(Ellipsis)) or any(
        k is not Ellipsis and not (isinstance(k, slice) and k == slice(None)) for k in rest
    ):  # (an array's != is elementwise: compare slices only)
        raise NotImplementedError(
            "indexing with gradients supports basic indexing (ints, slices, ..., None) and one "
            "integer array on the first axis (x[idx]); use reshape/take for other patterns"
        )
    return first


def from_the_end(xp: Any, indices: Any, n: int) -> Any:
    """Integer ``indices`` along an axis of length ``n`` with the negative ones counted from
    the end (as NumPy and torch do): the standard leaves ``take``'s negatives unspecified
    (torch's raises), and the backward's scatter-add by one-hot matching (array_api_strict)
    matched no row for them and dropped their gradients silently. Internal API for the
    engine's nodes."""
    indices = wide_indices(xp, indices)
    # below -n: n, which the backend's take rejects as out of range (-n - 1 + n = -1 would
    # silently pick the last element)
    return xp.where(indices < 0, xp.where(indices < -n, n, indices + n), indices)


def _row_indices(xp: Any, indices: Any, n: int) -> Any:
    """A user's row index array for ``x[idx]``, checked, as :func:`from_the_end` gives it."""
    dtype = getattr(indices, "dtype", None)
    if dtype is None or not (xp.isdtype(dtype, "integral") or xp.isdtype(dtype, "bool")):
        raise DtypeError(
            f"index {indices!r} is not an integer: index with ints, slices, ..., None or an "
            "integer array (x[int(i)], x[xp.asarray(rows)])"
        )
    if xp.isdtype(dtype, "bool"):
        return indices  # take_rows says what to do instead
    return from_the_end(xp, indices, n)


def take_rows(xp: Any, x: Any, indices: Any) -> Any:
    """``x[indices]`` for an integer array of any shape, using only the standard's ``take``."""
    if xp.isdtype(indices.dtype, "bool"):
        raise NotImplementedError("boolean-mask indexing with gradients; use xp.where instead")
    flat = xp.take(x, xp.reshape(indices, (-1,)), axis=0)
    return xp.reshape(flat, (*indices.shape, *x.shape[1:]))


def unchecked_take_indices(xp: Any, ops: Any, indices: Any, n: int, what: str) -> tuple[Any, Any]:
    """Indices for a backend whose ``take`` does not check them (``ops.take_checks_range``
    false: JAX's fills NaN, CuPy's wraps around), counted from the end by
    :func:`from_the_end`, and the mask of the bad ones: on the host a :class:`ShapeError`
    (``what`` says which index, e.g. "take: an index is out of range for an axis") for any
    outside ``[0, n)``, and no mask; on a device, where reading them would synchronise, the
    bad ones replaced by 0 and their mask, for the caller to make their results NaN, never
    another element's values. Internal API for the engine's nodes."""
    if ops.on_host(indices):
        if int(xp.max(indices)) >= n or int(xp.min(indices)) < 0:
            raise ShapeError(f"{what} of length {n}; use indices in [{-n}, {n})")
        return indices, None
    bad = indices >= n
    return xp.where(bad, xp.zeros_like(indices), indices), bad


def _take_rows_checked(xp: Any, ops: Any, x: Any, rows: Any, n: int) -> tuple[Any, Any]:
    """``take_rows`` where the backend's ``take`` does not check its indices
    (:func:`unchecked_take_indices`), and the row indices the backward scatters into: on a
    device the rows of bad indices are NaN (as :func:`nnbackend.nn.functional.embedding`
    gives them) and their gradients go to row 0 (NaN like the loss they made)."""
    what = "getitem: an index array has values out of range for axis 0"
    rows, bad = unchecked_take_indices(xp, ops, rows, n, what)
    taken = take_rows(xp, x, rows)
    if bad is None or not xp.isdtype(taken.dtype, "real floating"):
        return taken, rows  # (no NaN in integers: the first row stands in)
    mask = xp.reshape(bad, (*bad.shape, *([1] * (taken.ndim - bad.ndim))))
    return xp.where(mask, xp.asarray(float("nan"), dtype=taken.dtype), taken), rows


def scatter_add_rows(xp: Any, target: Any, indices: Any, values: Any) -> Any:
    """Add ``values[i]`` into ``target[indices[i]]`` (first axis), accumulating repeated
    indices. Uses the backend's scatter-add where it has one (np.add.at, cupyx.scatter_add,
    index_add_), else a one-hot matrix product that only needs the standard."""
    indices = xp.reshape(indices, (-1,))
    if not indices.shape[0]:  # nothing to add (x[[]]); the one-hot fallback cannot reshape it
        return target
    values = xp.reshape(values, (indices.shape[0], *target.shape[1:]))
    return ops_for(xp, target).scatter_add(target, indices, values)


# Key parts that are never a bool scalar, checked by type first (the usual keys' parts).
_NOT_BOOL_SCALARS = (int, slice, type(None), type(Ellipsis))


def bool_scalars(key: Any) -> list[Any] | None:
    """``key``'s parts with each bool scalar (Python's, NumPy's ``np.True_``, a 0-d boolean
    array or Tensor) as a Python bool, or None where it holds none (the usual key). Internal
    API for ``x[key]`` and ``t[key] = value``."""
    parts = key if type(key) is tuple else (key,)
    found = False
    for k in parts:
        if type(k) in _NOT_BOOL_SCALARS:
            continue
        k = _raw(k)
        if type(k) is bool or (getattr(k, "ndim", None) == 0 and is_mask(k)):
            found = True
            break
    if not found:
        return None
    out = []
    for k in parts:
        k = _raw(k)
        if type(k) not in _NOT_BOOL_SCALARS and getattr(k, "ndim", None) == 0 and is_mask(k):
            k = bool(k)
        out.append(k)
    return out


def setitem_key(key: Any, ndim: int) -> tuple[Any, bool]:
    """``key`` as the standard allows it in ``__setitem__``: without ``None`` (new axes exist
    for reading only), and with a trailing ``...`` where it names fewer axes than ``ndim``
    and holds no boolean mask (the standard specifies a mask only as the sole index). Also
    says whether a ``None`` was dropped. Internal API for the engine's nodes and
    ``t[key] = value``."""
    parts = key if isinstance(key, tuple) else (key,)
    dropped = any(k is None for k in parts)
    kept = tuple(k for k in parts if k is not None)
    masked = any(is_mask(k) for k in kept)
    if not masked and not any(k is Ellipsis for k in kept) and len(kept) < ndim:
        kept = (*kept, Ellipsis)
    return kept, dropped


class GetItem(Function):
    grad_may_alias = False

    def __init__(self, key: Any) -> None:
        self.key = key

    def forward(self, x: Any) -> Any:
        self.in_shape, self.dtype = tuple(x.shape), x.dtype
        self.rows = _rows_index(self.key)
        if self.rows is not None:
            n = int(x.shape[0])
            self.rows = _row_indices(self.xp, self.rows, n)
            ops = ops_for(self.xp, x)
            if ops.take_checks_range or _size(self.rows) == 0:
                return take_rows(self.xp, x, self.rows)
            y, self.rows = _take_rows_checked(self.xp, ops, x, self.rows, n)
            return y
        return x[self.key]

    def backward(self, gy: Any) -> Any:
        xp = self.xp
        gx = xp.zeros(self.in_shape, dtype=self.dtype, device=gy.device)
        if self.rows is not None:
            return scatter_add_rows(xp, gx, self.rows, gy)
        key, dropped = setitem_key(self.key, len(self.in_shape))
        if dropped:  # the new axes (size 1) out of the gradient, by a reshape
            gy = xp.reshape(gy, tuple(gx[key].shape))

        def out_of_place() -> Any:
            # No in-place writes: each input element sums the output gradients taken from
            # it, found by indexing an array of flat positions with the same key.
            n = _count(self.in_shape)
            picked = xp.reshape(xp.reshape(xp.arange(n), self.in_shape)[self.key], (-1,))
            hits = xp.reshape(xp.arange(n), (-1, 1)) == picked
            summed = xp.sum(xp.where(hits, xp.reshape(gy, (-1,)), 0.0), axis=1)
            return xp.reshape(summed, self.in_shape)

        return ops_for(xp, gx).write(gx, key, gy, out_of_place)

    def graph_backward(self, gy: Any) -> Any:
        return _GetItemBackward(self)(gy)


class _GetItemBackward(Function):
    """The gradient of :class:`GetItem` (a scatter into zeros) as a node, whose own gradient
    is the same indexing again."""

    grad_may_alias = False

    def __init__(self, node: GetItem) -> None:
        self.node = node

    def forward(self, gy: Any) -> Any:
        return self.node.backward(gy)

    def graph_backward(self, g: Any) -> Any:
        return GetItem(self.node.key)(g)


def add(a: Any, b: Any) -> Any:
    """``a + b`` with gradients (broadcasting)."""
    return Add()(a, b)


def sub(a: Any, b: Any) -> Any:
    """``a - b`` with gradients."""
    return Sub()(a, b)


def mul(a: Any, b: Any) -> Any:
    """``a * b`` with gradients."""
    return Mul()(a, b)


def div(a: Any, b: Any) -> Any:
    """``a / b`` with gradients."""
    return Div()(a, b)


def neg(x: Any) -> Any:
    """``-x``."""
    return Neg()(x)


def power(a: Any, b: Any) -> Any:
    """``a ** b`` with gradients for both (the exponent's needs ``a > 0``)."""
    return Pow()(a, b)


def matmul(a: Any, b: Any) -> Any:
    """``a @ b`` with gradients (batched and 1-D operands as in the standard)."""
    return MatMul()(a, b)


def reshape(x: Any, shape: tuple[int, ...]) -> Any:
    """``x`` with a new shape."""
    return Reshape(shape)(x)


def transpose(x: Any, axes: tuple[int, ...] | None = None) -> Any:
    """``x`` with its axes permuted (reversed when ``axes`` is None)."""
    return Transpose(axes)(x)


def sum(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    """Sum over ``axis``."""
    return Sum(axis, keepdims)(x)


def mean(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    """Mean over ``axis``."""
    return Mean(axis, keepdims)(x)


def max(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    """Maximum over ``axis``."""
    return Max(axis, keepdims)(x)


def exp(x: Any) -> Any:
    """Elementwise ``e ** x``."""
    return Exp()(x)


def log(x: Any) -> Any:
    """Elementwise natural logarithm."""
    return Log()(x)


def cast(x: Any, dtype: Any) -> Any:
    """``x`` converted to the floating ``dtype`` (a name such as "float16" or a dtype object)
    with gradients: the backward converts the gradient back to ``x``'s dtype. Always a new
    array. The one op besides the mixed precision nodes whose output dtype differs from its
    input's."""
    data = _raw(x)
    xp = backend_for(data)[0]
    target = getattr(xp, normalize_dtype(dtype))
    return Cast(target)(x)


def own_index(data: Any, k: Any) -> Any:
    """An index array ``k`` of another library than ``data``'s (a NumPy array indexing a
    torch Tensor), or a list, as an array of ``data``'s backend and device, as torch converts
    lists; anything else unchanged. Internal API for the engine's nodes."""
    if type(k) is list:  # x[[0, 2], :]: a list among the parts, as an array (NumPy)
        xp = backend_for(data)[0]
        device = getattr(data, "device", None)
        try:  # (an empty list selects nothing: as an array it would be float, not an index)
            return (
                xp.asarray(k, device=device) if k else xp.asarray(k, dtype=xp.int64, device=device)
            )
        except (TypeError, ValueError, RuntimeError) as e:
            raise DtypeError(
                f"getitem: the index list {k!r} is not a rectangular nesting of integers (or "
                "of bools, a mask); index with ints, slices, ..., None or integer arrays"
            ) from e
    if type(k) is type(data) or not getattr(k, "ndim", 0) or type(k) in _SCALARS:
        return k
    try:
        xp = backend_for(data)[0]
        return xp.asarray(k, device=getattr(data, "device", None))
    except (TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise BackendMismatchError(
            f"getitem: the index is a {type(k).__module__}.{type(k).__qualname__} and the "
            f"array a {type(data).__module__}.{type(data).__qualname__}, and it cannot be "
            "converted here; make the index an array of the indexed array's backend: "
            "xp.asarray(index) or nb.to_device(index, backend)"
        ) from e


def getitem(x: Any, key: Any) -> Any:
    """``x[key]`` with gradients (basic indexing, or one integer array on the first axis;
    :func:`nnbackend.functional.getitem`, which ``Tensor.__getitem__`` calls, also takes
    index arrays on any axes, several of them, and boolean masks)."""
    key = _raw(key)
    if isinstance(key, tuple):
        data = _raw(x)
        key = tuple(own_index(data, _raw(k)) for k in key)
        if len([k for k in key if k is Ellipsis]) > 1:  # by identity: arrays' == is elementwise
            raise ArgumentError(
                f"getitem: an index may hold only one ... (Ellipsis), got {key!r}; write one "
                "... for all the axes it skips (x[..., 0] or x[0, ...])"
            )
    elif hasattr(key, "ndim"):
        key = own_index(_raw(x), key)
    elif isinstance(key, list):  # x[[0, 2, 2]]: a list of row indices, as NumPy allows
        xp = backend_for(_raw(x))[0]
        # (an empty list selects no rows: as an array it would be float, not an index)
        key = xp.asarray(key) if key else xp.asarray(key, dtype=xp.int64)
    _integers_in_range(key, _raw(x).shape)
    return GetItem(key)(x)


# Key parts that are never integer indices (a bool is an Integral, but indexes as a mask).
_NOT_INTEGERS = (slice, type(None), type(Ellipsis), bool)


def _is_integer(k: Any) -> bool:
    """Whether ``k``, a part of an indexing key, is one integer index (Python's or NumPy's)."""
    return type(k) is int or (type(k) not in _NOT_INTEGERS and isinstance(k, numbers.Integral))


def _integers_in_range(key: Any, shape: Any) -> None:
    """A :class:`ShapeError` where an integer of ``key`` (a Python or NumPy integer) lies
    outside its axis: JAX clamps such an index silently (``x[5]`` of 2 rows read the last
    row), NumPy and torch raise in their own words."""
    parts = key if type(key) is tuple else (key,)
    named = 0  # the axes the parts other than ... name
    found = False
    for k in parts:
        if type(k) is slice:
            named += 1
        elif type(k) is int:  # (the two usual parts first, without calls)
            found = True
            named += 1
        elif k is not Ellipsis:
            found = found or _is_integer(k)
            named += _axes_named(k)
    if not found:  # (the usual key, slices only)
        return
    axis = 0
    for k in parts:
        if k is Ellipsis:
            axis += len(shape) - named
            continue
        if axis < len(shape) and _is_integer(k):
            n = int(shape[axis])
            if not -n <= int(k) < n:
                raise ShapeError(
                    f"getitem: index {int(k)} is out of range for axis {axis} of length {n}; "
                    f"use an index in [{-n}, {n})"
                )
        axis += _axes_named(k)


def _axes_named(k: Any) -> int:
    """How many axes of the indexed array a key part (not ``...``) names: none for ``None``
    and a bool scalar (each adds an axis), a mask's ``ndim`` for a boolean array, else 1."""
    if k is None or type(k) is bool:
        return 0
    return int(k.ndim) if is_mask(k) else 1


def is_mask(k: Any) -> bool:
    """Whether ``k``, a part of an indexing key, is a boolean array (a mask). Internal API
    for the engine's nodes and ``t[key] = value``."""
    return hasattr(k, "ndim") and str(getattr(k, "dtype", "")).rsplit(".", 1)[-1] == "bool"


from nnbackend.autograd import functions as _F  # noqa: E402  (functions builds on this module)
