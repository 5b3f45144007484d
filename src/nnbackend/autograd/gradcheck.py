"""Numerical gradient checking: analytic gradients from ``backward`` against central
differences computed in float64 on host NumPy copies (:func:`gradcheck`), and second
derivatives against central differences of the first (:func:`gradgradcheck`)."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from nnbackend.autograd.tensor import Tensor
from nnbackend.backends.ops import Ops
from nnbackend.config import normalize_dtype, using
from nnbackend.errors import ArgumentError, GradientError
from nnbackend.namespace import backend_for

__all__ = ["default_tolerance", "gradcheck", "gradgradcheck"]


def default_tolerance(dtype_name: str) -> float:
    """The relative and absolute tolerance used for gradients computed in ``dtype_name``:
    ten times the square root of its machine epsilon, at least 1e-6."""
    eps = float(Ops.host_numpy().finfo(dtype_name).eps)
    return max(10.0 * eps**0.5, 1e-6)


def gradcheck(
    fn: Callable[..., Any],
    *inputs: Any,
    eps: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
) -> bool:
    """Check ``backward`` of ``fn`` against central differences.

    ``fn`` maps Tensors to a Tensor and must be a pure function of ``inputs`` (pass parameters
    as inputs). The analytic gradient is computed on the inputs' own backend and dtype, by
    back-propagating a fixed random projection of the output; the numerical one on float64
    host copies of every floating input, with step ``eps`` (default 1e-6). Integer inputs
    (labels) are passed through unchanged.

    Returns True, or raises :class:`~nnbackend.errors.GradientError` naming the input, the
    worst element, and both values. Tolerances default to :func:`default_tolerance` of the
    inputs' dtype. A NaN or infinity in one gradient where the other is finite (or a NaN
    against an infinity, or infinities of opposite signs) is a failure, never a pass.

    Raises:
        ArgumentError: ``eps`` is not a finite number > 0, or a tolerance is negative or NaN.
        GradientError: the gradients differ, or ``fn`` returns something other than a Tensor.
    """
    np = Ops.host_numpy()
    seed = _checked_seed(seed)
    leaves = []
    floating = []
    for x in inputs:
        data = x.data if isinstance(x, Tensor) else x
        xp = backend_for(data)[0]
        is_float = bool(xp.isdtype(data.dtype, "real floating"))
        floating.append(is_float)
        leaves.append(Tensor(data, requires_grad=is_float))
    if not any(floating):
        raise GradientError("gradcheck needs at least one floating-point input")
    first = leaves[floating.index(True)].data
    xp, record = backend_for(first)
    dtype_name = normalize_dtype(first.dtype)
    eps = 1e-6 if eps is None else _checked("eps", eps, positive=True)
    rtol = None if rtol is None else _checked("rtol", rtol)
    atol = None if atol is None else _checked("atol", atol)

    out = _tensor_result(fn, fn(*leaves))
    projection = np.random.default_rng(seed).uniform(-1.0, 1.0, size=tuple(out.shape))
    if out.requires_grad:  # else fn is constant in its inputs: analytic gradients are 0
        out.backward(
            record.from_host(projection.astype(dtype_name), None)
            if out.ndim
            else xp.asarray(float(projection), dtype=out.data.dtype)
        )
    analytic = [
        None
        if not f
        else (
            np.zeros(t.shape)
            if t.grad is None
            else np.asarray(backend_for(t.grad)[1].to_host(t.grad), dtype=np.float64)
        )
        for t, f in zip(leaves, floating, strict=True)
    ]

    # C order: the steps below are written through value.reshape(-1), a view only of a
    # C-contiguous array. A transposed or broadcast input copied in its own (Fortran) order
    # took every step in a copy, and each central difference came out 0.
    host_inputs = [
        np.array(backend_for(t.data)[1].to_host(t.data), dtype=np.float64 if f else None, order="C")
        for t, f in zip(leaves, floating, strict=True)
    ]

    def objective(values: list[Any]) -> float:
        with using(backend="numpy", dtype="float64"):
            y = _tensor_result(fn, fn(*[Tensor(v) for v in values]))
        return float(np.sum(np.asarray(y.data, dtype=np.float64) * projection))

    for position, (value, grad) in enumerate(zip(host_inputs, analytic, strict=True)):
        if grad is None:
            continue
        numeric = np.zeros_like(value)
        flat = value.reshape(-1)
        for j in range(flat.size):
            saved = flat[j]
            flat[j] = saved + eps
            plus = objective(host_inputs)
            flat[j] = saved - eps
            minus = objective(host_inputs)
            flat[j] = saved
            numeric.reshape(-1)[j] = (plus - minus) / (2 * eps)
        # Each input's gradient has that input's precision: a float16 input next to a
        # float64 one was held to float64's tolerance (and reported as float64).
        own = normalize_dtype(leaves[position].data.dtype)
        tol = default_tolerance(own)
        _compare(
            np,
            position,
            value.shape,
            own,
            grad,
            numeric,
            tol if rtol is None else rtol,
            tol if atol is None else atol,
        )
    return True


def _checked_seed(seed: Any) -> int:
    """``seed`` as an int >= 0, or an ArgumentError (NumPy raised a bare ValueError for -1
    and a TypeError for text)."""
    try:
        if isinstance(seed, bool):
            raise TypeError
        number = operator.index(seed)
    except TypeError:
        number = -1
    if number < 0:
        raise ArgumentError(f"gradcheck: seed must be an integer >= 0, got {seed!r}")
    return number


def _checked(name: str, value: Any, *, positive: bool = False) -> float:
    """``value`` as a float, or an ArgumentError: a finite number, > 0 (``eps``) or >= 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number < 0.0:
        number = math.nan
    if math.isnan(number) or (positive and number == 0.0):
        bound = "> 0" if positive else ">= 0"
        raise ArgumentError(
            f"gradcheck: {name} must be a finite number {bound}, got {value!r}"
            + (" (central differences need a step, e.g. eps=1e-6)" if name == "eps" else "")
        )
    return number


def _tensor_result(fn: Callable[..., Any], out: Any) -> Tensor:
    if not isinstance(out, Tensor):
        raise GradientError(
            f"gradcheck: fn {getattr(fn, '__name__', fn)!r} returned "
            f"{type(out).__module__}.{type(out).__qualname__}, not a Tensor; it must compute "
            "its result from the Tensors it is given (with Tensor operations) so that the "
            "result can be differentiated"
        )
    return out


def _compare(
    np: Any,
    position: int,
    shape: tuple[int, ...],
    dtype_name: str,
    grad: Any,
    numeric: Any,
    rtol: float,
    atol: float,
) -> None:
    """Raise GradientError where ``grad`` (analytic) and ``numeric`` disagree: beyond the
    tolerances where both are finite, and wherever only one is finite or their non-finite
    values differ (NaN against inf, +inf against -inf). A NaN never compares as a pass."""
    finite_a, finite_n = np.isfinite(grad), np.isfinite(numeric)
    both = finite_a & finite_n
    same_nonfinite = (
        ~finite_a & ~finite_n & ((np.isnan(grad) & np.isnan(numeric)) | (grad == numeric))
    )
    mismatch = ~both & ~same_nonfinite
    if mismatch.any():
        worst = tuple(int(i) for i in np.argwhere(mismatch)[0])
        count = int(mismatch.sum())
        reason = (
            f"a non-finite gradient where the other is finite or differs ({count} element"
            f"{'s' if count != 1 else ''})"
        )
    else:
        excess = np.where(both, np.abs(grad - numeric) - (atol + rtol * np.abs(numeric)), 0.0)
        if not excess.size or not excess.max() > 0:
            return
        worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(excess)), excess.shape))
        reason = f"rtol={rtol}, atol={atol}"
    raise GradientError(
        f"gradcheck failed for input {position} (shape {shape}, {dtype_name}) at index "
        f"{worst}: backward gives {float(grad[worst])!r}, central differences give "
        f"{float(numeric[worst])!r} ({reason})"
    )


def gradgradcheck(
    fn: Callable[..., Any],
    *inputs: Any,
    eps: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
) -> bool:
    """Check the second derivatives of ``fn``: the gradient of its first derivatives
    (computed with ``create_graph=True``) against central differences of those first
    derivatives.

    The first derivatives are those of a fixed random projection of ``fn``'s output (a
    vector-Jacobian product), so this checks Hessian-vector products of every floating input
    pair. Arguments, tolerances and errors are those of :func:`gradcheck`, which it runs on
    the function ``inputs -> concat(flattened first derivatives)``.
    """
    from nnbackend.autograd import functions as F
    from nnbackend.autograd.higher import grad

    np = Ops.host_numpy()
    seed = _checked_seed(seed)
    floating = []
    for x in inputs:
        data = x.data if isinstance(x, Tensor) else x
        floating.append(bool(backend_for(data)[0].isdtype(data.dtype, "real floating")))
    projections: dict[tuple[int, ...], Any] = {}

    def first_derivatives(*ts: Tensor) -> Tensor:
        leaves = [
            t if not f or t.requires_grad else Tensor(t.data, requires_grad=True)
            for t, f in zip(ts, floating, strict=True)
        ]
        out = _tensor_result(fn, fn(*leaves))
        shape = tuple(out.shape)
        if shape not in projections:
            projections[shape] = np.random.default_rng(seed + 1).uniform(-1.0, 1.0, size=shape)
        xp, record = backend_for(out.data)
        v = record.from_host(projections[shape].astype(normalize_dtype(out.data.dtype)), None)
        if getattr(v, "dtype", None) != out.data.dtype:
            v = xp.asarray(v, dtype=out.data.dtype)
        wanted = [t for t, f in zip(leaves, floating, strict=True) if f]
        grads = grad(out, wanted, v, create_graph=True, allow_unused=True)
        parts = []
        for t, g in zip(wanted, grads, strict=True):
            if g is None:
                g = Tensor(xp.zeros(t.data.shape, dtype=t.data.dtype))
            parts.append(F.flatten(g) if g.ndim else g.reshape(1))
        return F.concat(parts, 0)

    return gradcheck(first_derivatives, *inputs, eps=eps, rtol=rtol, atol=atol, seed=seed)
