"""Differentiable building blocks of layers and losses, as fused graph nodes.

Each function is one :class:`~nnbackend.autograd.Function` with a hand-written backward, so a
``Linear`` layer costs one node (not a MatMul plus an Add) and softmax-with-cross-entropy one
node whose gradient is exactly ``(softmax - onehot) / N``. All of them take Tensors or backend
arrays, keep the input dtype, and use only the Array API standard.

Float16 on a backend without fast float16 arithmetic (NumPy on a CPU): the nodes compute in
float32 and store their outputs and gradients in float16, so float16 costs about what float32
does instead of the ten times that NumPy's software float16 arithmetic would.

Under the mixed precision policy "mixed16" (:mod:`nnbackend.precision`), ``linear``,
``matmul``, ``embedding`` and ``layer_norm`` compute in float16 whatever their parameters'
dtype (float32 master weights), returning float16 activations and gradients in each
parameter's own dtype; the losses compute in float32.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from nnbackend import config
from nnbackend.autograd import functions as _F
from nnbackend.autograd import ops
from nnbackend.autograd.function import Function, spare_grad
from nnbackend.autograd.ops import cast, convert, scatter_add_rows, take_rows
from nnbackend.autograd.tensor import Tensor
from nnbackend.backends.ops import NATIVE, wide_indices
from nnbackend.errors import (
    ArgumentError,
    BackendError,
    BackendMismatchError,
    DtypeError,
    LabelError,
    ShapeError,
)
from nnbackend.namespace import backend_for, ops_for

__all__ = [
    "dropout",
    "embedding",
    "layer_norm",
    "leaky_relu",
    "linear",
    "log_softmax",
    "matmul",
    "mse_loss",
    "relu",
    "sigmoid",
    "sigmoid_cross_entropy",
    "softmax",
    "softmax_cross_entropy",
    "tanh",
]


def _data(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


# (context overrides, process settings version, compute dtype name or None): the last answer
# of mixed_compute, so a layer call under an unchanged setting pays one context read.
_policy_seen: tuple[Any, int, str | None] = (None, -1, None)
_get_overrides = config.current_overrides
_settings_version = config.settings_version


def mixed_compute() -> str | None:
    """The compute dtype name when the active precision policy is a mixed one, else None."""
    global _policy_seen
    overrides = _get_overrides()
    # Read before the policy: a set_default_dtype() in another thread between the two then
    # leaves a stale version here (answered again next call), never a stale answer.
    version = _settings_version()
    seen = _policy_seen
    if seen[0] is overrides and seen[1] == version:
        return seen[2]
    policy = config.get_policy()
    compute = config.compute_dtype(policy)
    found = compute if compute != config.array_dtype(policy) else None
    _policy_seen = (overrides, version, found)
    return found


# Below these sizes NumPy's own float16 arithmetic costs less than converting to float32 and
# back (a few microseconds of calls): elements for elementwise nodes, multiply-adds for products.
WIDE_MIN_SIZE = 1024
WIDE_MIN_MACS = 2048


def _size(x: Any) -> int:
    """The number of elements (``size`` is a method on torch tensors)."""
    n = x.size
    return n if type(n) is int else math.prod(x.shape)


def _ops(xp: Any, x: Any) -> Any:
    """The operations object of ``x``'s backend (namespace ``xp``)."""
    return ops_for(xp, x)


def _to(xp: Any, x: Any, dtype: Any) -> Any:
    return x if x is None or x.dtype == dtype else convert(xp, x, dtype)


def _product(xp: Any, x: Any, w: Any) -> Any:
    """``x @ w`` for a 2-D ``w``, as one 2-D product when ``x`` has more than two axes."""
    if x.ndim <= 2:
        return x @ w
    lead = tuple(x.shape[:-1])
    return xp.reshape(xp.reshape(x, (-1, x.shape[-1])) @ w, (*lead, w.shape[-1]))


def _weight_grad(xp: Any, x: Any, gy: Any, ops: Any = None, out: Any = None) -> Any:
    """``x.T @ gy`` for 2-D ``x`` (rows, in) and ``gy`` (rows, out), the kernel picked by
    shape: for one row the product is an outer product, which a broadcast multiply computes
    with the same values (one product per element) where OpenBLAS's GEMM took 1.1 ms for
    1024x1024 against 0.35 ms (issue 19; 5.2 against 1.2 ms on the loaded machine here).
    ``out``: an array the product may be written into (``ops.matmul(out=)``)."""
    if x.shape[0] == 1:
        return xp.reshape(x, (-1, 1)) * gy
    if out is not None:
        return ops.matmul(x.T, gy, out=out)
    return x.T @ gy


class Linear(Function):
    """``x @ W + b`` with ``W`` of shape (in, out); ``x`` may have leading batch axes.

    Where the backend computes float16 in float32 (:meth:`~nnbackend.backends.ops.Ops.compute`)
    the products and the bias sum run in float32 (keeping float32 copies of ``x`` and ``W``
    for the backward) and the output is stored in float16; gradients go back in each
    input's dtype.
    """

    grad_may_alias = False
    trusted_grads = True

    def forward(self, x: Any, w: Any, b: Any = None) -> Any:
        self.has_bias = b is not None
        # The bias checked (the gradients are trusted: a bias of shape (N, out) would
        # broadcast here and get column sums for a gradient)
        if b is not None and (
            b.shape != w.shape[-1:] or (b.dtype is not w.dtype and b.dtype != w.dtype)
        ):
            _bad_bias(b, w)
        ops = self.ops = ops_for(self.xp, x)
        c = self.c = ops.compute_product(x, w.shape[-1], WIDE_MIN_MACS)
        # Small products: replay_forward's operations without its call, and backward's
        # without its tests (a tenth of the tiny step's Linear nodes); not for subclasses,
        # which may override either.
        if c is NATIVE and type(self) is Linear and x.ndim == 2 and w.ndim == 2:
            rows, (n_in, n_out) = x.shape[0], w.shape
            wider = n_in if n_in > n_out else n_out
            if rows * wider < ops.recycle_min and n_in * n_out < ops.reuse_min:
                self.small = rows > 1  # one row: _weight_grad's own kernel
                self.x, self.w = x, w
                y = x @ w
                return y if b is None else ops.add_(y, b)
        return self.replay_forward(x, w, b)

    def replay_forward(self, x: Any, w: Any, b: Any = None) -> Any:
        """The product, with the decisions :meth:`forward` made (the compute dtype), which a
        compiled step's replays keep (see :attr:`Function.replay_forward`)."""
        c = self.c
        if c is NATIVE:  # the usual case: no conversions to ask for
            self.x, self.w = x, w
            ops = self.ops
            if x.shape[0] * w.shape[-1] >= ops.recycle_min and x.ndim == 2 and w.ndim == 2:
                # Into an array of an earlier step's (NumPy: no page faults, whatever the
                # heap does); None where there is none to give.
                out = ops.recycled((x.shape[0], w.shape[1]), x.dtype)
                y = x @ w if out is None else ops.matmul(x, w, out=out)
            else:
                y = x @ w if x.ndim <= 2 else _product(self.xp, x, w)
            # The product is a new array of the output's shape: the bias goes into it (one
            # activation-sized array a layer fewer; the same sums).
            return y if b is None else self.ops.add_(y, b)
        return self._forward_in(self.xp, c, x, w, b)

    def replay_code(self, srcs: list[str], out: str, bind: Callable[[Any], str]) -> Any:
        """The product, the bias and the backward's products as code for a compiled step's
        replay (:attr:`Function.replay_code`), for 2-D arrays below the size where the ops
        recycle the outputs: the sizes whose replay the method calls would slow most."""
        x, w, ops = self.x, self.w, self.ops
        small = ops.recycle_min
        if (
            self.c is not NATIVE
            or x.ndim != 2
            or w.ndim != 2
            or x.shape[0] < 2  # one row: _weight_grad's own kernel choice
            or x.shape[0] * max(w.shape) >= small
        ):
            return None
        xs, ws = f"{out}_x", f"{out}_w"
        lines = [f"{xs} = {srcs[0]}", f"{ws} = {srcs[1]}", f"{out} = {xs} @ {ws}"]
        if self.has_bias:
            lines.append(f"{out} = {bind(ops.add_)}({out}, {srcs[2]})")
        total = bind(ops.column_summer(x.shape[0], x.dtype))

        def backward(gy: str, gxs: list[str | None], unit: bool) -> list[str]:
            code = []
            if gxs[0] is not None:
                code.append(f"{gxs[0]} = {gy} @ {ws}.T")
            if gxs[1] is not None:
                code.append(f"{gxs[1]} = {xs}.T @ {gy}")
            if len(gxs) > 2 and gxs[2] is not None:
                code.append(f"{gxs[2]} = {total}({gy})")
            return code

        return lines, backward

    def _forward_in(self, xp: Any, c: Any, x: Any, w: Any, b: Any) -> Any:
        """The product in ``c``'s compute dtype, stored as ``c`` says."""
        self.in_dtypes = (x.dtype, w.dtype, None if b is None else b.dtype)
        self.x, self.w = x, w = c.widen(x), c.widen_weight(w)
        y = _product(xp, x, w)
        return c.narrow(y if b is None else y + c.widen(b))

    #: Set by :meth:`forward` for 2-D float products of more than one row below the ops'
    #: recycling and reuse sizes: :meth:`backward` then takes its short path.
    small = False

    def backward(self, gy: Any) -> tuple[Any, ...]:
        if self.small:  # the same operations as below for such products, without the tests
            needs = self.needs_input_grad
            gx = gy @ self.w.T if needs[0] else None
            gw = self.x.T @ gy if needs[1] else None
            if not self.has_bias:
                return gx, gw
            return gx, gw, self.ops.column_sum(gy) if needs[2] else None
        xp, x, w, c = self.xp, self.x, self.w, self.c
        native = c is NATIVE
        if not native:
            gy = c.widen(gy)
        needs = self.needs_input_grad
        shape = None
        if x.ndim != 2:
            # Products of 2-D arrays: NumPy runs (N, T, in) @ (in, out) 4-6x slower than the
            # same product on (N*T, in) (measured on the LSTM language model's output layer).
            shape = tuple(x.shape)
            x = xp.reshape(x, (-1, w.shape[0]))
            gy = xp.reshape(gy, (-1, w.shape[1]))
        gx = None
        if needs[0]:
            ops = self.ops
            out = (
                ops.recycled((gy.shape[0], w.shape[0]), gy.dtype)
                if native and gy.shape[0] * w.shape[0] >= ops.recycle_min
                else None
            )
            gx = gy @ w.T if out is None else ops.matmul(gy, w.T, out=out)
        if gx is not None and shape is not None:
            gx = xp.reshape(gx, shape)
        gw = None
        if needs[1]:
            # The weight's gradient from the previous step, where zero_grad kept it and
            # nothing else refers to it: the product is written there, so a steady-state
            # step allocates no weight-sized arrays (issue 19: glibc page-faulted them in
            # again every step, 6,400 faults a step on the medium float64 MLP).
            weight = self.inputs[1]  # None in a compiled step's replay: nothing to reuse
            out = (
                spare_grad(weight, self.ops)
                if native
                and weight is not None
                and x.shape[0] > 1
                and w.shape[0] * w.shape[-1] >= self.ops.reuse_min
                else None
            )
            if out is None and x.shape[0] != 1:  # _weight_grad inlined: the usual case
                gw = x.T @ gy
            else:
                gw = _weight_grad(xp, x, gy, self.ops, out)
        gb = None
        if self.has_bias and needs[2]:
            gb = self.ops.column_sum(gy)
        if not native:
            dtypes = self.in_dtypes
            gx, gw = c.narrow(gx, dtypes[0]), c.narrow(gw, dtypes[1])
            gb = c.narrow(gb, dtypes[2])
        if not self.has_bias:
            return gx, gw
        return gx, gw, gb


class MixedLinear(Linear):
    """``x @ W + b`` computed in the dtype ``compute`` (float16) whatever the dtypes of ``x``,
    ``W`` and ``b``: the mixed precision node. The output is in ``compute``; each gradient in
    its input's dtype (float32 for float32 master weights). Where the backend computes
    float16 in float32, the product runs in float32 from the float32 weights themselves and
    the activations are stored in float16."""

    def __init__(self, compute: Any) -> None:
        self.output_dtype = compute

    def forward(self, x: Any, w: Any, b: Any = None) -> Any:
        xp = self.xp
        self.has_bias = b is not None
        if b is not None and b.shape != w.shape[-1:]:  # (dtypes may differ under the policy)
            _bad_bias(b, w)
        ops = self.ops = _ops(xp, x)
        c = self.c = ops.compute_as(self.output_dtype, x)
        return self._forward_in(xp, c, x, w, b)


def _bad_bias(bd: Any, wd: Any) -> None:
    """Raise the error for a bias array that does not fit weight ``wd`` (shape, then
    dtype)."""
    if tuple(bd.shape) != tuple(wd.shape[-1:]):
        raise ShapeError(
            f"linear: bias of shape {tuple(bd.shape)} for a weight of shape "
            f"{tuple(wd.shape)}; expected ({wd.shape[-1]},)"
        )
    raise DtypeError(
        f"linear: bias dtype {bd.dtype} differs from weight dtype {wd.dtype}; build the layer "
        "under one dtype"
    )


def linear(x: Any, weight: Any, bias: Any = None) -> Tensor:
    """``x @ weight + bias`` as one graph node; ``weight`` has shape (in, out).

    Under a mixed precision policy ("mixed16") the node computes in float16 whatever the
    dtypes of ``x`` and ``weight`` (see :class:`MixedLinear`).

    Raises :class:`~nnbackend.errors.ShapeError` when ``x``'s last axis is not ``in`` and
    :class:`~nnbackend.errors.DtypeError` when ``x`` and ``weight`` differ in dtype (outside
    a mixed policy).
    """
    xd = x.data if isinstance(x, Tensor) else x
    wd = weight.data if isinstance(weight, Tensor) else weight
    compute = mixed_compute()
    # Dtypes of two libraries are not compared (array_api_strict warns that its dtypes never
    # equal NumPy's): a dtype of another type is a backend mismatch, or a dtype error. An
    # input without a dtype (a list) is a backend mismatch too, with its fix.
    x_dtype, w_dtype = getattr(xd, "dtype", None), wd.dtype
    # (the same dtype object, the usual case, needs no comparison)
    if (
        compute is None
        and x_dtype is not w_dtype
        and (type(x_dtype) is not type(w_dtype) or x_dtype != w_dtype)
    ):
        same_backend(xd, wd, "linear")
        raise DtypeError(
            f"linear: input dtype {xd.dtype} differs from weight dtype {wd.dtype}; cast the "
            "input (xp.astype) or build the layer under the input's dtype"
        )
    node = Linear() if compute is None else MixedLinear(float_dtype(xd, compute))
    try:
        return node(x, weight) if bias is None else node(x, weight, bias)
    except Exception:
        # Checked only when the product failed: every backend's matmul refuses these shapes,
        # so the happy path pays nothing, and the error still names both shapes.
        if xd.ndim == 0 or xd.shape[-1] != wd.shape[0]:
            raise ShapeError(
                f"linear: input of shape {tuple(xd.shape)} does not fit a weight of shape "
                f"{tuple(wd.shape)}; expected input shape (..., {wd.shape[0]})"
            ) from None
        raise


def not_an_array(x: Any, where: str) -> BackendMismatchError:
    """The error for a layer's input that is no array at all (a list, a string): what it is,
    and how to make it one."""
    return BackendMismatchError(
        f"{where}: the input is a {type(x).__module__}.{type(x).__qualname__}, not an array of "
        "the layer's backend; make it one with nnbackend.to_backend(x, like=model) "
        "(Trainer.fit/evaluate/predict do it for you)"
    )


def size_argument(layer: str, name: str, value: Any) -> int:
    """``value`` as a size of at least 1 (an int or an integral scalar such as
    ``numpy.int64``), or an ArgumentError naming the layer and argument: ``Linear(2.5, 3)``
    would otherwise truncate to 2, and ``Linear(-1, 3)`` or ``Conv2d(0, 2, 3)`` fail deep
    inside the initialiser. Booleans are refused."""
    try:
        if isinstance(value, bool):
            raise TypeError
        size = operator.index(value)  # ints and integral scalars, no floats
    except TypeError:
        raise ArgumentError(
            f"{layer}: {name} must be an integer >= 1, got {value!r} of type {type(value).__name__}"
        ) from None
    if size < 1:
        raise ArgumentError(f"{layer}: {name} must be an integer >= 1, got {size}")
    return size


def same_backend(x: Any, weight: Any, where: str) -> None:
    """Raise :class:`~nnbackend.errors.BackendMismatchError` when the input ``x`` is not an
    array of the weight's backend (checked only where the dtypes already differ: a NumPy
    float64 array and a torch float64 weight are a backend mismatch, not a dtype one).
    ``where`` (the layer or function) names the caller when ``x`` is no array at all."""
    w_record = backend_for(weight)[1]
    try:
        x_name = backend_for(x)[1].name
    except BackendMismatchError:  # not an array of any backend: a list, a scalar, ...
        raise not_an_array(x, where) from None
    if x_name == w_record.name:
        return
    raise BackendMismatchError(
        f"the input is an array of backend {x_name!r} but the layer's weights are on backend "
        f"{w_record.name!r}; move the data first with nnbackend.to_backend(x, like=model) "
        "(Trainer.fit/evaluate/predict do it for you)"
    )


def float_dtype(array: Any, name: str) -> Any:
    xp, record = backend_for(array)
    found = ops_for(xp, array).dtype(name)
    if found is None:
        # Not a DtypeError: layers rephrase those as "input dtype differs from the layer's".
        raise BackendError(
            f"backend {record.name!r} has no {name}, which the {config.get_policy()} policy "
            f"computes in; use float32 with this backend, or a backend with {name}"
        )
    return found


def matmul(a: Any, b: Any) -> Tensor:
    """``a @ b`` with gradients (:func:`nnbackend.autograd.ops.matmul`); under a mixed
    precision policy both operands are cast to its compute dtype first."""
    compute = mixed_compute()
    if compute is not None:
        ad, bd = _data(a), _data(b)
        target = float_dtype(ad, compute)
        if ad.dtype != target:
            a = cast(a, compute)
        if bd.dtype != target:
            b = cast(b, compute)
    return ops.matmul(a, b)


def _loss_inputs(y: Any, t: Any, where: str = "loss") -> tuple[Any, Any]:
    """Under a mixed policy, float16 predictions (and float targets) go to float32: losses
    are summed over the batch, where float16's range and precision fall short. Predictions
    or targets that are no array at all (a list, a Python number) raise
    BackendMismatchError naming ``where``."""
    for value, what in ((y, "predictions"), (t, "targets")):
        d = _data(value)
        if not hasattr(d, "ndim"):
            raise not_an_array(d, f"{where} ({what})")
    if mixed_compute() is None:
        return y, t
    yd = _data(y)
    xp = backend_for(yd)[0]
    if _ops(xp, yd).accumulate_dtype(yd.dtype) != yd.dtype:  # float16: sum in float32
        y = cast(y, "float32")
    td = _data(t)
    if xp.isdtype(td.dtype, "real floating") and td.dtype != xp.float32:
        t = cast(t, "float32") if isinstance(t, Tensor) else xp.astype(td, xp.float32)
    return y, t


class Sigmoid(Function):
    grad_may_alias = False
    trusted_grads = True

    def forward(self, x: Any) -> Any:
        ops = self.ops = ops_for(self.xp, x)
        self.c = ops.compute(x, WIDE_MIN_SIZE)
        return self.replay_forward(x)

    def replay_forward(self, x: Any) -> Any:
        """The sigmoid, with the decisions :meth:`forward` made (the compute dtype), which a
        compiled step's replays keep (see :attr:`Function.replay_forward`)."""
        c = self.c
        if c is NATIVE:  # the usual case: no conversions (and no calls to make none)
            self.y = y = self.ops.sigmoid(x)
            return y
        self.y = y = self.ops.sigmoid(c.widen(x))
        return c.narrow(y)

    def backward(self, gy: Any) -> Any:
        y, c = self.y, self.c
        if c is NATIVE:
            return gy * y * (1.0 - y)
        return c.narrow(c.widen(gy) * y * (1.0 - y))

    def replay_code(self, srcs: list[str], out: str, bind: Callable[[Any], str]) -> Any:
        """:meth:`replay_forward` and :meth:`backward` as code for a compiled step's replay
        (:attr:`Function.replay_code`), where no conversions are made."""
        if self.c is not NATIVE:
            return None
        lines = [f"{out} = {bind(self.ops.sigmoid)}({srcs[0]})"]

        def backward(gy: str, gxs: list[str | None], unit: bool) -> list[str]:
            return [f"{gxs[0]} = {gy} * {out} * (1.0 - {out})"]

        return lines, backward


def sigmoid(x: Any) -> Tensor:
    """``1 / (1 + exp(-x))``, computed so that it never overflows (also in float16) and keeps
    its relative precision for large negative ``x`` (:meth:`Ops.sigmoid
    <nnbackend.backends.ops.Ops.sigmoid>`; NumPy's float32 and float64 give a subnormal floor
    below -88.6 and -708, where the exact values are subnormal too)."""
    return Sigmoid()(x)


class Tanh(Function):
    grad_may_alias = False
    trusted_grads = True

    def forward(self, x: Any) -> Any:
        c = self.c = _ops(self.xp, x).compute(x, WIDE_MIN_SIZE)
        self.y = y = self.xp.tanh(c.widen(x))
        return c.narrow(y)

    def backward(self, gy: Any) -> Any:
        c = self.c
        return c.narrow(c.widen(gy) * (1.0 - self.y * self.y))


def tanh(x: Any) -> Tensor:
    """Hyperbolic tangent."""
    return Tanh()(x)


class LeakyReLU(Function):
    grad_may_alias = False
    trusted_grads = True

    def __init__(self, slope: float) -> None:
        self.slope = float(slope)

    def forward(self, x: Any) -> Any:
        ops = self.ops = _ops(self.xp, x)
        self.mask = ops.relu_mask(x)
        return ops.leaky_relu(x, self.mask, self.slope)

    def backward(self, gy: Any) -> Any:
        return self.ops.leaky_relu_backward(gy, self.mask, self.slope)

    def replay_code(self, srcs: list[str], out: str, bind: Callable[[Any], str]) -> Any:
        """:meth:`forward` and :meth:`backward` as code for a compiled step's replay
        (:attr:`Function.replay_code`)."""
        ops, mask, slope = self.ops, f"{out}_mask", bind(self.slope)
        lines = [
            f"{mask} = {bind(ops.relu_mask)}({srcs[0]})",
            f"{out} = {bind(ops.leaky_relu)}({srcs[0]}, {mask}, {slope})",
        ]
        backward_kernel = bind(ops.leaky_relu_backward)

        def backward(gy: str, gxs: list[str | None], unit: bool) -> list[str]:
            return [f"{gxs[0]} = {backward_kernel}({gy}, {mask}, {slope})"]

        return lines, backward


def relu(x: Any) -> Tensor:
    """``max(x, 0)`` (gradient 0 at 0)."""
    return LeakyReLU(0.0)(x)


def leaky_relu(x: Any, negative_slope: float = 0.01) -> Tensor:
    """``x`` where positive, ``negative_slope * x`` elsewhere."""
    return LeakyReLU(negative_slope)(x)


class _AlongAxis:
    """What a node reducing along ``axis`` with the axis kept mixes in: the reductions, through
    the ops' per-row kernels (:meth:`Ops.row_max`, :meth:`Ops.row_sum`) where ``axis`` is the
    last of two or more."""

    k: Any  # the node's ops, set by its forward

    def __init__(self, axis: int) -> None:
        self.axis = axis

    def _rows(self, x: Any) -> bool:
        return x.ndim >= 2 and self.axis in (-1, x.ndim - 1)

    def _top(self, x: Any) -> Any:
        return self.k.row_max(x) if self._rows(x) else self.k.max(x, axis=self.axis, keepdims=True)

    def _total(self, x: Any) -> Any:
        return self.k.row_sum(x) if self._rows(x) else self.k.sum(x, axis=self.axis, keepdims=True)


class Softmax(_AlongAxis, Function):
    grad_may_alias = False
    trusted_grads = True

    def forward(self, x: Any) -> Any:
        xp = self.xp
        k = self.k = _ops(xp, x)
        c = self.c = k.compute(x)  # many passes: always worth widening
        x = c.widen(x)
        e = xp.exp(x - self._top(x))
        self.y = e / self._total(e)
        return c.narrow(self.y)

    def backward(self, gy: Any) -> Any:
        y, c = self.y, self.c
        gy = c.widen(gy)
        return c.narrow(y * (gy - self._total(gy * y)))


def _softmax_axis(name: str, x: Any, axis: Any) -> int | None:
    """``axis`` checked against ``x`` (a ShapeError outside its axes, where NumPy's AxisError
    or torch's IndexError came through; NumPy integers taken), or None where ``x`` has no
    elements (the result is as empty, and the maximum it shifts by undefined) or none (a
    0-d ``x`` takes axis 0 or -1, as in torch: one element, whose softmax is 1)."""
    shape = tuple(_data(x).shape)
    try:
        if not shape:
            ops.normalize_axes(axis, 0)
            return None
        axis = ops.normalize_axis(axis, len(shape))
    except (ShapeError, ArgumentError) as exc:
        raise type(exc)(f"{name}: {exc}") from None
    return None if 0 in shape else axis


def softmax(x: Any, axis: int = -1) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``axis``, shifted by the maximum for stability."""
    along = _softmax_axis("softmax", x, axis)
    if along is None:  # (no element, or one: 1)
        return ops.add(ops.mul(x, 0.0), 1.0)
    return Softmax(along)(x)


class LogSoftmax(_AlongAxis, Function):
    grad_may_alias = False
    trusted_grads = True

    def forward(self, x: Any) -> Any:
        xp = self.xp
        k = self.k = _ops(xp, x)
        c = self.c = k.compute(x)  # many passes: always worth widening
        x = c.widen(x)
        z = x - self._top(x)
        self.y = z - xp.log(self._total(xp.exp(z)))
        return c.narrow(self.y)

    def backward(self, gy: Any) -> Any:
        xp, c = self.xp, self.c
        gy = c.widen(gy)
        return c.narrow(gy - xp.exp(self.y) * self._total(gy))


def log_softmax(x: Any, axis: int = -1) -> Tensor:
    """``x - logsumexp(x)`` along ``axis``, computed stably."""
    along = _softmax_axis("log_softmax", x, axis)
    return ops.mul(x, 0.0) if along is None else LogSoftmax(along)(x)


def _bad_labels(labels: Any, n_classes: int) -> LabelError:
    found = _ops(backend_for(labels)[0], labels).host_copy(labels)
    wrong = found[(found < 0) | (found >= n_classes)]
    return LabelError(
        f"labels must lie in [0, {n_classes}) for {n_classes} classes; found "
        f"{wrong[:5].tolist()}{' ...' if wrong.size > 5 else ''}"
    )


def _one_hot(k: Any, labels: Any, n_classes: int, dtype: Any) -> tuple[Any, Any]:
    """:meth:`Ops.one_hot`: the one-hot rows of integer ``labels`` in ``dtype``, and what
    the ops know of labels outside ``[0, n_classes)``. Where they found one on the host,
    :class:`LabelError` now; what is left for the loss goes to :func:`_checked_loss`."""
    onehot, bad = k.one_hot(labels, n_classes, dtype)
    if bad is True:
        raise _bad_labels(labels, n_classes)
    return onehot, bad


def _checked_loss(
    k: Any,
    bad: Any,
    labels: Any,
    n_classes: int,
    loss: Any,
    onehot: Any = None,
    z: Any = None,
    s: Any = None,
    n: int = 1,
) -> Any:
    """``loss`` after the labels' check :meth:`Ops.one_hot` left (``bad``): ``False``, none
    left; ``None``, the ops gave bad labels rows of NaN without checking, so a NaN loss from
    a bad label raises :class:`LabelError` (a NaN from the logits stays the loss); else a 0-d
    flag on a device, where reading it would sync: the loss turns NaN with it.

    Given the one-hot rows, the shifted logits ``z`` and the row sums ``s``, a NaN loss
    with labels in range is computed again leaving out the other classes' logits: the sum
    of one-hot rows times ``z`` made ``0 * -inf`` NaN where a class is masked with ``-inf``
    (on a device, where NaN is not looked at, it is computed that way every time)."""
    if bad is False or bad is None:
        if loss != loss:
            if bad is None and not k.labels_in_range(labels, n_classes):
                raise _bad_labels(labels, n_classes)
            if onehot is not None:
                loss = _label_term_loss(k, onehot, z, s, n)
        return loss
    if onehot is not None:
        loss = _label_term_loss(k, onehot, z, s, n)
    return k.xp.where(bad, float("nan"), loss)


def _label_logits(xp: Any, onehot: Any, z: Any) -> Any:
    """``z`` where the one-hot rows are set, 0 elsewhere: what a product with the rows
    reads of each row's label logit, without ``0 * -inf`` (NaN) from a class masked with
    ``-inf``. Multiplied by the rows still, so a bad label's row of NaN stays NaN for
    :func:`_checked_loss`."""
    return xp.where(onehot > 0, z, xp.zeros_like(z))


def _label_term_loss(k: Any, onehot: Any, z: Any, s: Any, n: int) -> Any:
    """The mean cross-entropy from one-hot rows, shifted logits and row sums, reading only
    each row's label logit (:func:`_label_logits`)."""
    xp = k.xp
    picked = _label_logits(xp, onehot, z)
    return (k.sum(xp.log(s), axis=None) - k.sum_product(onehot, picked)) / float(n)


class SoftmaxCrossEntropy(Function):
    grad_may_alias = False

    def forward(self, x: Any, t: Any) -> Any:
        if x.ndim != 2:
            raise ShapeError(
                f"softmax_cross_entropy: logits must have shape (N, C), got {tuple(x.shape)}; "
                "reshape them first, e.g. y.reshape(-1, C) with labels t.reshape(-1)"
            )
        if x.shape[0] == 0:
            raise ShapeError(
                "softmax_cross_entropy: an empty batch (logits of 0 rows) has no mean loss; "
                "skip empty batches"
            )
        k = self.k = ops_for(self.xp, x)
        self.c = k.compute(x)  # many passes: always worth widening
        return self.replay_forward(x, t)

    def replay_forward(self, x: Any, t: Any) -> Any:
        """The loss, with the decisions :meth:`forward` made (the ops, the compute dtype),
        which a compiled step's replays keep (see :attr:`Function.replay_forward`); the
        labels are checked on every call."""
        xp, k, cm = self.xp, self.k, self.c
        n, c = x.shape
        if cm.wide:
            x = cm.widen(x)
            if t.dtype == cm.store:  # float16 targets of float16 logits
                t = cm.widen(t)
        z = x - k.row_max(x)
        e = xp.exp(z)
        s = k.row_sum(e)
        self.p = e / s
        log_s = xp.log(s)
        rows_sum_to_one = self.rows_sum_to_one = t.ndim == 1
        if rows_sum_to_one:
            if t.shape[0] != n:
                raise ShapeError(
                    f"softmax_cross_entropy: {t.shape[0]} labels for logits of {n} rows; "
                    "pass one label per row"
                )
            labels, (t, bad) = t, _one_hot(k, t, c, x.dtype)
        elif tuple(t.shape) != (n, c):
            raise ShapeError(
                f"softmax_cross_entropy: targets of shape {tuple(t.shape)} do not fit logits of "
                f"shape {(n, c)}; pass integer labels of shape ({n},) or one-hot ({n}, {c})"
            )
        elif t.dtype != x.dtype:
            t = xp.astype(t, x.dtype)
        self.t, self.n = t, n
        self.logp: Any = z - log_s if self.needs_input_grad[1] else None
        # -sum(t * (z - log s)) / n, with log s summed per row: one (N, C) pass fewer.
        if rows_sum_to_one:
            loss = (k.sum(log_s, axis=None) - k.sum_product(t, z)) / float(n)
        else:
            loss = -k.sum(t * (z - log_s), axis=None) / float(n)
        if rows_sum_to_one:
            loss = _checked_loss(k, bad, labels, c, loss, t, z, s, n)
        if cm.wide:
            return cm.narrow(loss)
        # NumPy's sums give a scalar: the 0-d array here, not through Function's as_arrays
        return loss if type(loss) is type(x) else k.asarray(loss)

    def replay_code(self, srcs: list[str], out: str, bind: Callable[[Any], str]) -> Any:
        """:meth:`replay_forward` and :meth:`backward` as code for a compiled step's replay
        (:attr:`Function.replay_code`), for integer labels and no conversions: the usual
        classifier's loss; the labels are checked on every replay, as there."""
        if self.c.wide or not self.rows_sum_to_one or self.needs_input_grad[1]:
            return None
        k, xp, x, t = self.k, self.xp, srcs[0], srcs[1]
        z, e, s, p, onehot, bad = (f"{out}_{name}" for name in ("z", "e", "s", "p", "t", "bad"))
        ops, classes = bind(k), bind(self.p.shape[1])
        lines = [
            f"{z} = {x} - {bind(k.row_max)}({x})",
            f"{e} = {bind(xp.exp)}({z})",
            f"{s} = {bind(k.row_sum)}({e})",
            f"{p} = {e} / {s}",
            f"{onehot}, {bad} = {bind(_one_hot)}({ops}, {t}, {classes}, {bind(self.p.dtype)})",
            f"{out} = ({bind(k.sum)}({bind(xp.log)}({s}), axis=None) - "
            f"{bind(k.sum_product)}({onehot}, {z})) / {bind(float(self.n))}",
            f"{out} = {bind(_checked_loss)}({ops}, {bad}, {t}, {classes}, {out}, {onehot}, {z}, "
            f"{s}, {bind(self.n)})",
        ]
        inv_n = bind(1.0 / self.n)

        def backward(gy: str, gxs: list[str | None], unit: bool) -> list[str]:
            if not gxs[0]:
                return []
            if unit:  # gy is one: (p - t) * 1 is p - t exactly, so the product goes
                return [f"{gxs[0]} = ({p} - {onehot}) * {inv_n}"]
            return [f"{gxs[0]} = ({p} - {onehot}) * {gy} * {inv_n}"]

        return lines, backward

    def backward(self, gy: Any) -> tuple[Any, Any]:
        k, c = self.k, self.c
        if c.wide:
            gy = c.widen(gy)
        # gy is 0-d: (array * gy) * (1/n) keeps every product an array product, where
        # gy / n first would be a 0-d scalar division, dearer than either on NumPy.
        inv_n = 1.0 / self.n
        gx = gt = None
        if self.needs_input_grad[0]:
            p = self.p
            if not self.rows_sum_to_one:  # soft targets: d/dx = p * sum(t) - t
                p = p * k.sum(self.t, axis=1, keepdims=True)
            gx = (p - self.t) * gy * inv_n
        if self.needs_input_grad[1]:
            gt = self.logp * gy * -inv_n
        if c.wide:
            return c.narrow(gx), c.narrow(gt)
        return gx, gt


class MaskedSoftmaxCrossEntropy(Function):
    """Mean softmax cross-entropy of logits (N, C) against integer labels (N,), skipping the
    rows whose label is ``ignore_index``: the mean runs over the other rows only, and the
    skipped rows get a zero gradient (the book's ``ignore_label``)."""

    grad_may_alias = False

    def __init__(self, ignore_index: int) -> None:
        self.ignore_index = int(ignore_index)

    def forward(self, x: Any, t: Any) -> Any:
        xp = self.xp
        c = x.shape[1]
        k = self.k = _ops(xp, x)
        cm = self.c = k.compute(x)
        x = cm.widen(x)
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ShapeError(
                f"softmax_cross_entropy: labels of shape {tuple(t.shape)} for logits of "
                f"{x.shape[0]} rows; pass one label per row"
            )
        valid = t != self.ignore_index
        safe = xp.where(valid, t, xp.zeros_like(t))
        onehot, bad = _one_hot(k, safe, c, x.dtype)
        z = x - k.row_max(x)
        e = xp.exp(z)
        s = k.row_sum(e)
        mask = k.astype(valid, x.dtype)
        # max(count, 1): a batch of ignored labels only has loss 0 and gradient 0, not NaN.
        count = xp.maximum(k.sum(mask, axis=None), xp.ones((), dtype=x.dtype, device=x.device))
        # (where, not a product, for the ignored rows below too: their NaN would make the
        # sum NaN)
        picked = _label_logits(xp, onehot, z)
        rows = xp.reshape(xp.log(s), (-1,)) - k.sum(onehot * picked, axis=1)
        self.p, self.onehot, self.mask, self.count = e / s, onehot, mask, count
        loss = k.sum(xp.where(valid, rows, xp.zeros_like(rows)), axis=None) / count
        loss = _checked_loss(k, bad, safe, c, loss)
        return cm.narrow(loss)

    def backward(self, gy: Any) -> tuple[Any, None]:
        c = self.c
        gx = (self.p - self.onehot) * (self.mask / self.count)[:, None] * c.widen(gy)
        return c.narrow(gx), None


def softmax_cross_entropy(logits: Any, labels: Any, ignore_index: int | None = None) -> Tensor:
    """Mean cross-entropy of ``softmax(logits)`` (shape (N, C)) against integer ``labels``
    (N,) or one-hot / probability targets (N, C), as one stable node (log-sum-exp).

    Sequences: logits (N, T, C) with labels (N, T) are flattened to (N*T, C) and (N*T,).
    ``ignore_index``: labels equal to it (the book's ``ignore_label=-1``, or a padding id)
    are left out: the mean runs over the other labels and their logits get zero gradient.

    Labels out of range raise :class:`~nnbackend.errors.LabelError` on host-resident backends;
    on a GPU, where a check would force a device synchronisation each step, they make the loss
    NaN instead. Under a mixed precision policy float16 logits are cast to float32 first.
    """
    if mixed_compute() is not None:
        logits, labels = _loss_inputs(logits, labels)
    ld = logits.data if isinstance(logits, Tensor) else logits
    td = labels.data if isinstance(labels, Tensor) else labels
    if not hasattr(ld, "ndim"):
        raise not_an_array(ld, "softmax_cross_entropy")
    if not hasattr(td, "ndim"):
        raise not_an_array(td, "softmax_cross_entropy (labels)")
    if ld.ndim > 2 and td.ndim == ld.ndim - 1:
        logits = ops.reshape(logits, (-1, ld.shape[-1]))
        # (a node, not the namespace's reshape: a compiled step replays it on new labels)
        labels = ops.reshape(labels, (-1,))
    if ignore_index is None:
        return SoftmaxCrossEntropy()(logits, labels)
    td = _data(labels)
    xp = backend_for(td)[0]
    if td.ndim != 1 or not xp.isdtype(td.dtype, "integral"):
        raise ArgumentError(
            f"softmax_cross_entropy: ignore_index needs integer labels of shape (N,) or (N, T), "
            f"got {tuple(td.shape)} {td.dtype}"
        )
    if _data(logits).ndim != 2:
        raise ShapeError(
            f"softmax_cross_entropy: logits must have shape (N, C) or (N, T, C), got "
            f"{tuple(_data(logits).shape)}"
        )
    return MaskedSoftmaxCrossEntropy(ignore_index)(logits, labels)


class SigmoidCrossEntropy(Function):
    grad_may_alias = False

    def forward(self, x: Any, t: Any) -> Any:
        xp = self.xp
        if tuple(t.shape) != tuple(x.shape):
            raise ShapeError(
                f"sigmoid_cross_entropy: targets of shape {tuple(t.shape)} do not fit logits of "
                f"shape {tuple(x.shape)}"
            )
        if t.dtype != x.dtype:
            t = xp.astype(t, x.dtype)
        # float16 computed and summed in float32 (as the softmax loss): its sums overflow,
        # and a count above 65504 is infinite in float16
        acc, self.store = ops_for(xp, x).accumulate_dtype(x.dtype), x.dtype
        if acc != x.dtype:
            x, t = xp.astype(x, acc), xp.astype(t, acc)
        self.t = t
        self.x = x
        # max(x, 0) - x t + log(1 + exp(-|x|)): never overflows, even for |x| = 1e4.
        loss = xp.where(x > 0, x, 0.0) - x * t + xp.log1p(xp.exp(-xp.abs(x)))
        self.n = 1
        for d in x.shape:
            self.n *= int(d)
        loss = xp.sum(loss) / float(self.n)
        return loss if acc == self.store else xp.astype(xp.asarray(loss), self.store)

    def backward(self, gy: Any) -> tuple[Any, Any]:
        xp, x, store = self.xp, self.x, self.store
        if x.dtype != store:
            gy = xp.astype(gy, x.dtype)
        scale = gy / float(self.n)
        gx = gt = None
        if self.needs_input_grad[0]:
            e = xp.exp(-xp.abs(x))
            p = xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
            gx = (p - self.t) * scale
        if self.needs_input_grad[1]:
            gt = -x * scale
        if x.dtype != store:
            gx = None if gx is None else xp.astype(gx, store)
            gt = None if gt is None else xp.astype(gt, store)
        return gx, gt


def sigmoid_cross_entropy(logits: Any, targets: Any) -> Tensor:
    """Mean binary cross-entropy of ``sigmoid(logits)`` against ``targets`` in [0, 1],
    computed stably for large logits (in float32 under a mixed precision policy)."""
    logits, targets = _loss_inputs(logits, targets, "sigmoid_cross_entropy")
    return SigmoidCrossEntropy()(logits, targets)


class MSE(Function):
    grad_may_alias = False

    def forward(self, y: Any, t: Any) -> Any:
        if tuple(y.shape) != tuple(t.shape):
            raise ShapeError(f"mse_loss: shapes {tuple(y.shape)} and {tuple(t.shape)} differ")
        if y.dtype != t.dtype:
            raise DtypeError(f"mse_loss: dtypes {y.dtype} and {t.dtype} differ")
        self.n = 1
        for d in y.shape:
            self.n *= int(d)
        if self.n == 0:
            raise ShapeError("mse_loss: empty inputs have no mean; skip empty batches")
        # float16 summed in float32 (as the softmax loss): its sums overflow, and a count
        # above 65504 is infinite in float16
        xp = self.xp
        acc, self.store = ops_for(xp, y).accumulate_dtype(y.dtype), y.dtype
        if acc != y.dtype:
            y, t = xp.astype(y, acc), xp.astype(t, acc)
        self.diff = y - t
        loss = xp.sum(self.diff * self.diff) / float(self.n)
        return loss if acc == self.store else xp.astype(xp.asarray(loss), self.store)

    def backward(self, gy: Any) -> tuple[Any, Any]:
        diff = self.diff
        if diff.dtype != self.store:
            gy = self.xp.astype(gy, diff.dtype)
        g = diff * (gy * (2.0 / self.n))
        if g.dtype != self.store:
            g = self.xp.astype(g, self.store)
        return (g if self.needs_input_grad[0] else None, -g if self.needs_input_grad[1] else None)


def mse_loss(y: Any, t: Any) -> Tensor:
    """Mean of ``(y - t) ** 2`` over all elements (in float32 under a mixed precision
    policy)."""
    y, t = _loss_inputs(y, t, "mse_loss")
    return MSE()(y, t)


class Dropout(Function):
    grad_may_alias = False

    def __init__(self, p: float, generator: Any) -> None:
        self.p, self.generator = p, generator

    def forward(self, x: Any) -> Any:
        # The mask is drawn here, from the inputs, not given to the constructor: a replayed
        # step (compile_step) runs forward again and so draws a fresh mask every time.
        mask = self.draw_random(x)
        c = self.c = _ops(self.xp, x).compute(x, WIDE_MIN_SIZE)
        self.mask = c.widen(mask)
        return c.narrow(c.widen(x) * self.mask)

    def draw_random(self, x: Any) -> Any:
        """The mask for input ``x``, from the generator: the one random draw of this node, in
        a method of its own so that a jitted step (compile_step on jax) can draw it outside
        the trace and pass it in."""
        return _ops(self.xp, x).dropout_mask(self.generator._host, x, self.p)

    def backward(self, gy: Any) -> Any:
        c = self.c
        return c.narrow(c.widen(gy) * self.mask)


def dropout(x: Any, p: float, training: bool = True, generator: Any = None) -> Tensor:
    """Inverted dropout: zero each element with probability ``p`` and scale the rest by
    ``1 / (1 - p)``; the identity when not training or ``p == 0``.

    The mask comes from the backend's ops (:meth:`~nnbackend.backends.ops.Ops.dropout_mask`),
    seeded by ``generator`` (a :class:`nnbackend.random.Generator`, default the module-level
    one): reproducible per seed. Host backends (NumPy, array-api-strict, torch on a CPU)
    share one stream; a GPU (CuPy, torch on CUDA) draws on the device from a seed taken from
    the generator, a different stream.
    """
    if not 0.0 <= p < 1.0:
        raise ArgumentError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x if isinstance(x, Tensor) else Tensor(x)
    from nnbackend import random

    rng = generator if generator is not None else random.default_generator()
    return Dropout(p, rng)(x)


def _bad_indices(xp: Any, indices: Any, n: int) -> Any:
    """Check embedding ``indices`` against ``[0, n)``: raise ArgumentError where they live on
    the host (reading two numbers is free there); on a device, where reading would
    synchronise, return the mask of bad ones (None when all are surely good)."""
    if _size(indices) == 0:
        return None
    k = _ops(xp, indices)
    if not k.on_host(indices):
        return (indices < 0) | (indices >= n)
    low, high = int(xp.min(indices)), int(xp.max(indices))
    if low < 0 or high >= n:
        found = k.host_copy(indices)
        wrong = found[(found < 0) | (found >= n)]
        raise ArgumentError(
            f"embedding indices must lie in [0, {n}) for a weight of {n} rows; found "
            f"{wrong[:5].tolist()}{' ...' if wrong.size > 5 else ''} (a negative index does not "
            "count from the end)"
        )
    return None


class Embedding(Function):
    grad_may_alias = False

    def forward(self, w: Any, indices: Any) -> Any:
        xp = self.xp
        n = int(w.shape[0])
        bad = _bad_indices(xp, indices, n)
        if bad is not None:  # on a device: read rows of valid indices, NaN for the others
            indices = xp.where(bad, xp.zeros_like(indices), indices)
        self.indices, self.shape, self.dtype = indices, tuple(w.shape), w.dtype
        rows = take_rows(xp, w, indices)
        if bad is not None:
            rows = xp.where(xp.reshape(bad, (*bad.shape, 1)), float("nan"), rows)
        return rows

    def backward(self, gy: Any) -> tuple[Any, None]:
        # The weight's gradient array from the previous step where zero_grad kept it and
        # nothing else refers to it (spare_grad): zeroed and scattered into, the same sums
        # as into new zeros, without a weight-sized allocation a step.
        gw = spare_grad(self.inputs[0], ops_for(self.xp, gy))
        if gw is None:
            gw = self.xp.zeros(self.shape, dtype=self.dtype, device=gy.device)
        else:
            gw[...] = 0
        return scatter_add_rows(self.xp, gw, self.indices, gy), None


def embedding(indices: Any, weight: Any) -> Tensor:
    """``weight[indices]`` for integer ``indices`` of any shape; the backward adds the
    gradients of repeated indices together."""
    idx = _data(indices)
    w = _data(weight)
    if type(idx) is not type(w) and hasattr(w, "shape"):
        # A NumPy index array for a torch weight ended in a bare TypeError from torch's min()
        # (or AttributeError): refused as every layer refuses another backend's input.
        same_backend(idx, w, "embedding (indices)")
    xp = backend_for(idx)[0]
    if not xp.isdtype(idx.dtype, "integral"):
        raise DtypeError(f"embedding indices must be integers, got {idx.dtype}")
    if not getattr(w, "ndim", 1):
        raise ShapeError(
            "embedding: the weight is 0-d; it needs rows, one per index value (a weight of "
            "shape (num_embeddings, embedding_dim))"
        )
    idx = wide_indices(xp, idx)  # int8 / uint8: torch's gather refuses them (no copy else)
    rows = Embedding()(weight, idx)
    compute = mixed_compute()
    if compute is not None and rows.data.dtype != float_dtype(rows.data, compute):
        return cast(rows, compute)  # gather in the weight's dtype, then cast the rows only
    return rows


class LayerNorm(Function):
    grad_may_alias = False

    def __init__(self, eps: float) -> None:
        self.eps = float(eps)

    def forward(self, x: Any, w: Any, b: Any) -> Any:
        xp = self.xp
        mu = xp.mean(x, axis=-1, keepdims=True)
        xc = x - mu
        var = xp.mean(xc * xc, axis=-1, keepdims=True)
        self.inv = 1.0 / xp.sqrt(var + self.eps)
        self.xhat = xc * self.inv
        self.w = w
        return self.xhat * w + b

    def backward(self, gy: Any) -> tuple[Any, Any, Any]:
        xp, xhat = self.xp, self.xhat
        lead = tuple(range(gy.ndim - 1))
        gw = xp.sum(gy * xhat, axis=lead) if self.needs_input_grad[1] else None
        gb = xp.sum(gy, axis=lead) if self.needs_input_grad[2] else None
        gx = None
        if self.needs_input_grad[0]:
            g = gy * self.w
            gx = self.inv * (
                g
                - xp.mean(g, axis=-1, keepdims=True)
                - xhat * xp.mean(g * xhat, axis=-1, keepdims=True)
            )
        return gx, gw, gb


def layer_norm(x: Any, weight: Any, bias: Any, eps: float = 1e-5) -> Tensor:
    """Normalise over the last axis to zero mean and unit variance, then scale by ``weight``
    and shift by ``bias`` (both of the last axis' size). Under a mixed precision policy the
    normalisation runs in the parameters' dtype (float32: a variance in float16 overflows
    easily) and the result is cast to the compute dtype."""
    compute = mixed_compute()
    if compute is None:
        return LayerNorm(eps)(x, weight, bias)
    xd, wd = _data(x), _data(weight)
    if xd.dtype != wd.dtype:
        x = cast(x, wd.dtype) if isinstance(x, Tensor) else backend_for(xd)[0].astype(xd, wd.dtype)
    y = LayerNorm(eps)(x, weight, bias)
    return cast(y, compute) if wd.dtype != float_dtype(wd, compute) else y


# -- Higher-order derivatives -------------------------------------------------------------
# Each fused node's backward again, written with differentiable Tensor operations: the engine
# runs these instead of ``backward`` under ``create_graph=True``, so gradients of gradients
# work through layers and losses. They are gathered here, apart from the first-order fast
# paths above, and compute in the dtype of the incoming gradient (each result is cast back
# to its input's dtype).


def _like(xp: Any, v: Any, dtype: Any) -> Any:
    """``v`` (a Tensor or a raw array) in ``dtype``, in the graph when it is a Tensor."""
    if v.dtype == dtype:
        return v
    return ops.Cast(dtype)(v) if isinstance(v, Tensor) else xp.astype(v, dtype)


def _back_to(g: Any, dtype: Any) -> Any:
    return g if g is None or g.dtype == dtype else ops.Cast(dtype)(g)


def _linear_graph_backward(self: Linear, gy: Tensor) -> tuple[Any, ...]:
    xp, dt = self.xp, gy.dtype
    x = _like(xp, self.input(0, self.x), dt)
    w = _like(xp, self.input(1, self.w), dt)
    need = self.needs_input_grad
    n_in, n_out = self.w.shape
    gx = gw = gb = None
    if need[0]:
        gx = _back_to(ops.matmul(gy, ops.transpose(w, (1, 0))), self.inputs[0].dtype)
    gy2 = ops.reshape(gy, (-1, n_out)) if gy.ndim != 2 else gy
    if need[1]:
        x2 = ops.reshape(x, (-1, n_in)) if len(x.shape) != 2 else x
        gw = _back_to(ops.matmul(ops.transpose(x2, (1, 0)), gy2), self.inputs[1].dtype)
    if self.has_bias and need[2]:
        gb = _back_to(ops.sum(gy2, 0), self.inputs[2].dtype)
    return (gx, gw, gb) if self.has_bias else (gx, gw)


def _sigmoid_graph_backward(self: Sigmoid, gy: Tensor) -> Tensor:
    y = _F.sigmoid(self.inputs[0])
    return gy * y * (1.0 - y)


def _tanh_graph_backward(self: Tanh, gy: Tensor) -> Tensor:
    y = _F.tanh(self.inputs[0])
    return gy * (1.0 - y * y)


def _leaky_relu_graph_backward(self: LeakyReLU, gy: Tensor) -> Tensor:
    xp = self.xp
    gain = xp.astype(self.mask, gy.dtype)
    if self.slope != 0.0:
        gain = gain * (1.0 - self.slope) + self.slope
    return gy * _F.piecewise(self.inputs[0], gain)


def _softmax_graph_backward(self: Softmax, gy: Tensor) -> Tensor:
    x = self.inputs[0]
    y = ops.exp(x - _F.logsumexp(x, self.axis, True))
    return y * (gy - ops.sum(gy * y, self.axis, True))


def _log_softmax_graph_backward(self: LogSoftmax, gy: Tensor) -> Tensor:
    x = self.inputs[0]
    p = ops.exp(x - _F.logsumexp(x, self.axis, True))
    return gy - p * ops.sum(gy, self.axis, True)


def _softmax_cross_entropy_graph_backward(self: SoftmaxCrossEntropy, gy: Tensor) -> tuple[Any, Any]:
    xp = self.xp
    x = self.inputs[0]
    dt = x.dtype
    t = self.input(1, self.t) if self.inputs[1] is not None else self.t
    t = _like(xp, t, dt)
    gy = _like(xp, gy, dt)
    logp = x - _F.logsumexp(x, 1, True)
    scale = gy * (1.0 / self.n)
    gx = gt = None
    if self.needs_input_grad[0]:
        p = ops.exp(logp)
        if not self.rows_sum_to_one:
            p = p * ops.sum(t, 1, True)
        gx = (p - t) * scale
    if self.needs_input_grad[1]:
        gt = _back_to(-(logp * scale), self.inputs[1].dtype)
    return gx, gt


def _masked_softmax_cross_entropy_graph_backward(
    self: MaskedSoftmaxCrossEntropy, gy: Tensor
) -> tuple[Any, None]:
    xp = self.xp
    x = self.inputs[0]
    dt = self.p.dtype  # float32 where float16 computes wide
    xw, gy = _like(xp, x, dt), _like(xp, gy, dt)
    p = ops.exp(xw - _F.logsumexp(xw, 1, True))
    weights = xp.reshape(self.mask / self.count, (-1, 1))  # 0 for ignored rows
    gx = (p - self.onehot) * weights * gy
    return _back_to(gx, x.dtype), None


def _sigmoid_cross_entropy_graph_backward(self: SigmoidCrossEntropy, gy: Tensor) -> tuple[Any, Any]:
    x = self.input(0, self.x)
    t = self.input(1, self.t)
    scale = gy * (1.0 / self.n)
    gx = (_F.sigmoid(x) - t) * scale if self.needs_input_grad[0] else None
    gt = -(x * scale) if self.needs_input_grad[1] else None
    return gx, gt


def _mse_graph_backward(self: MSE, gy: Tensor) -> tuple[Any, Any]:
    y = self.input(0, None)
    t = self.input(1, None)
    if y is None:
        y = self.diff + t
    elif t is None:
        t = y - self.diff
    g = (y - t) * (gy * (2.0 / self.n))
    return (g if self.needs_input_grad[0] else None, -g if self.needs_input_grad[1] else None)


def _dropout_graph_backward(self: Dropout, gy: Tensor) -> Tensor:
    mask = self.mask
    if mask.dtype != gy.dtype:
        mask = self.xp.astype(mask, gy.dtype)
    return gy * mask


def _embedding_graph_backward(self: Embedding, gy: Tensor) -> tuple[Any, None]:
    return _F.TakeBackward(self.indices, 0, self.shape)(gy), None


def _layer_norm_graph_backward(self: LayerNorm, gy: Tensor) -> tuple[Any, Any, Any]:
    xp = self.xp
    x, w = self.inputs[0], self.inputs[1]
    x = x if x is not None else Tensor._wrap(self.xhat / self.inv, False)
    w = w if w is not None else self.w
    dtypes = (x.dtype, w.dtype, self.inputs[2].dtype if self.inputs[2] is not None else w.dtype)
    # float16 statistics in float32: 1/sqrt(var + eps) is up to 316 for a constant row, and its
    # derivatives take its cube, past float16's range (an inf times 0 would give NaN).
    dt = _ops(xp, gy.data).accumulate_dtype(gy.dtype)
    gy, x, w = _like(xp, gy, dt), _like(xp, x, dt), _like(xp, w, dt)
    xc = x - ops.mean(x, -1, True)
    inv = 1.0 / _F.sqrt(ops.mean(xc * xc, -1, True) + self.eps)
    xhat = xc * inv
    lead = tuple(range(gy.ndim - 1))
    need = self.needs_input_grad
    gw = ops.sum(gy * xhat, lead) if need[1] else None
    gb = ops.sum(gy, lead) if need[2] else None
    gx = None
    if need[0]:
        g = gy * w
        gx = inv * (g - ops.mean(g, -1, True) - xhat * ops.mean(g * xhat, -1, True))
    return _back_to(gx, dtypes[0]), _back_to(gw, dtypes[1]), _back_to(gb, dtypes[2])


# Attached to their classes here, kept apart from the first-order paths. Each takes its own
# node class as `self` (sound: only that class calls it), which mypy would check against
# Function.graph_backward(self: Function, *gys): hence setattr.
for _node, _graph_backward in (
    (Linear, _linear_graph_backward),
    (Sigmoid, _sigmoid_graph_backward),
    (Tanh, _tanh_graph_backward),
    (LeakyReLU, _leaky_relu_graph_backward),
    (Softmax, _softmax_graph_backward),
    (LogSoftmax, _log_softmax_graph_backward),
    (SoftmaxCrossEntropy, _softmax_cross_entropy_graph_backward),
    (MaskedSoftmaxCrossEntropy, _masked_softmax_cross_entropy_graph_backward),
    (SigmoidCrossEntropy, _sigmoid_cross_entropy_graph_backward),
    (MSE, _mse_graph_backward),
    (Dropout, _dropout_graph_backward),
    (Embedding, _embedding_graph_backward),
    (LayerNorm, _layer_norm_graph_backward),
):
    setattr(_node, "graph_backward", _graph_backward)  # noqa: B010  (typed apart, see above)
del _node, _graph_backward
