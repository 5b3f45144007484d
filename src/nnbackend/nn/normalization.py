"""Batch and group normalisation: ``batch_norm``, ``group_norm`` and the layers
``BatchNorm1d``, ``BatchNorm2d``, ``GroupNorm``.

``BatchNorm*`` keeps running estimates of each channel's mean and variance as **buffers**
(``running_mean``, ``running_var``; :meth:`nnbackend.nn.Module.register_buffer`), saved and
loaded with the parameters and moved with the model. As in PyTorch: in training mode a batch is
normalised by its own mean and biased variance, and the running estimates become
``(1 - momentum) * running + momentum * batch`` (the unbiased variance); in evaluation mode
(``model.eval()``) the running estimates are used.

>>> import nnbackend as nb
>>> from nnbackend import nn
>>> bn = nn.BatchNorm2d(3)
>>> [name for name, _ in bn.named_buffers()]
['running_mean', 'running_var']
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from nnbackend.autograd.function import Function
from nnbackend.autograd.ops import cast
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import ArgumentError, DtypeError, ShapeError
from nnbackend.namespace import backend_for, ops_for
from nnbackend.nn import init
from nnbackend.nn.functional import mixed_compute, not_an_array, same_backend, size_argument
from nnbackend.nn.module import Module, Parameter

__all__ = ["BatchNorm1d", "BatchNorm2d", "GroupNorm", "batch_norm", "group_norm"]


def _data(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def _channel_shape(ndim: int) -> tuple[int, ...]:
    return (1, -1) + (1,) * (ndim - 2)


def _check_input(name: str, x: Any) -> None:
    """An array (else the layers' "not an array" error) of a floating dtype: an integer input
    without parameters would be normalised into another dtype (float64 on NumPy) or fail in
    the backend's ``mean``."""
    if not hasattr(x, "ndim"):
        raise not_an_array(x, name)
    if not backend_for(x)[0].isdtype(x.dtype, "real floating"):
        raise DtypeError(
            f"{name}: input must be floating, got dtype {x.dtype}; cast it (xp.astype)"
        )


def _check_per_channel(
    name: str, x: Any, values: tuple[tuple[str, Any], ...], fix: str = ""
) -> None:
    """Each named per-channel array of ``values`` (or ``None``) has shape ``(C,)`` and the
    dtype and backend of ``x`` (else an error ending in ``fix``); a (1,) array would otherwise
    broadcast over every channel."""
    channels = int(x.shape[1])
    for what, value in values:
        vd = _data(value)
        if vd is None:
            continue
        if tuple(vd.shape) != (channels,):
            raise ShapeError(
                f"{name}: {what} has shape {tuple(vd.shape)}, the input of shape "
                f"{tuple(x.shape)} has {channels} channels; expected ({channels},)"
            )
        if vd.dtype != x.dtype:
            same_backend(x, vd, name)  # arrays of two backends: say so, not a dtype clash
            raise DtypeError(f"{name}: {what} has dtype {vd.dtype}, the input {x.dtype}{fix}")


class _Float32Statistics(Function):
    """Statistics of float16 inputs are computed in float32 (as PyTorch does): a float16
    variance overflows once values differ by more than 256, and a float16 sum over many
    elements loses the small ones. Outputs and gradients keep the inputs' dtypes."""

    grad_may_alias = False
    trusted_grads = True
    store: Any = None  # the input dtype, where statistics are accumulated in a wider one

    def forward(self, x: Any, *params: Any) -> Any:
        xp = self.xp
        acc = ops_for(xp, x).accumulate_dtype(x.dtype)
        if acc == x.dtype:
            return self._forward(x, *params)
        self.store, self.acc = x.dtype, acc
        self.param_dtypes = [p.dtype for p in params]
        return xp.astype(self._forward(*[xp.astype(a, acc) for a in (x, *params)]), x.dtype)

    def backward(self, gy: Any) -> Any:
        if self.store is None:
            return self._backward(gy)
        xp = self.xp
        grads = self._backward(xp.astype(gy, self.acc))
        if not isinstance(grads, tuple):
            return xp.astype(grads, self.store)
        dtypes = [self.store, *self.param_dtypes]
        return tuple(
            None if g is None else xp.astype(g, d) for g, d in zip(grads, dtypes, strict=True)
        )

    def _forward(self, x: Any, *params: Any) -> Any:
        raise NotImplementedError

    def _backward(self, gy: Any) -> Any:
        raise NotImplementedError


class BatchNormTrain(_Float32Statistics):
    """Normalisation by the batch's own statistics over every axis but the channels' (1).
    ``self.mean`` and ``self.var`` (biased) are kept for the running estimates."""

    def __init__(self, eps: float, running: tuple[Any, Any, float, int] | None = None) -> None:
        self.eps = eps
        # (running_mean, running_var, momentum, count): updated by forward itself, so that a
        # compiled step's replay, which runs the node's forward and no Python around it,
        # updates them on every step as eager does.
        self.running = running
        self.updates_state = running is not None

    def forward(self, x: Any, *params: Any) -> Any:
        y = super().forward(x, *params)
        if self.running is not None:
            running_mean, running_var, m, count = self.running
            rm, rv = _data(running_mean), _data(running_var)
            xp = self.xp
            mean, var = xp.astype(self.mean, rm.dtype), xp.astype(self.var, rv.dtype)
            _set(running_mean, rm * (1.0 - m) + mean * m, xp, "running_mean")
            _set(running_var, rv * (1.0 - m) + var * (m * count / (count - 1)), xp, "running_var")
        return y

    def _forward(self, x: Any, w: Any = None, b: Any = None) -> Any:
        xp = self.xp
        self.axes = axes = (0, *range(2, x.ndim))
        self.shape = _channel_shape(x.ndim)
        mean = xp.mean(x, axis=axes, keepdims=True)
        xc = x - mean
        var = xp.mean(xc * xc, axis=axes, keepdims=True)
        self.mean, self.var = xp.reshape(mean, (-1,)), xp.reshape(var, (-1,))
        self.inv = 1.0 / xp.sqrt(var + self.eps)
        self.xhat = xhat = xc * self.inv
        self.w, self.has_b = w, b is not None
        y = xhat if w is None else xhat * xp.reshape(w, self.shape)
        return y if b is None else y + xp.reshape(b, self.shape)

    def _backward(self, gy: Any) -> Any:
        xp, xhat, axes = self.xp, self.xhat, self.axes
        needs = self.needs_input_grad
        grads: list[Any] = [None]
        if self.w is not None:
            grads.append(xp.sum(gy * xhat, axis=axes) if needs[1] else None)
        if self.has_b:
            grads.append(xp.sum(gy, axis=axes) if needs[-1] else None)
        if needs[0]:
            g = gy if self.w is None else gy * xp.reshape(self.w, self.shape)
            grads[0] = self.inv * (
                g
                - xp.mean(g, axis=axes, keepdims=True)
                - xhat * xp.mean(g * xhat, axis=axes, keepdims=True)
            )
        return tuple(grads) if len(grads) > 1 else grads[0]


class BatchNormEval(_Float32Statistics):
    """Normalisation by given (running) statistics: an affine map per channel."""

    def __init__(self, mean: Any, var: Any, eps: float) -> None:
        self.mean, self.var, self.eps = mean, var, eps

    def _forward(self, x: Any, w: Any = None, b: Any = None) -> Any:
        xp = self.xp
        self.axes = (0, *range(2, x.ndim))
        self.shape = shape = _channel_shape(x.ndim)
        self.inv = xp.reshape(1.0 / xp.sqrt(self.var + self.eps), shape)
        self.xhat = xhat = (x - xp.reshape(self.mean, shape)) * self.inv
        self.w, self.has_b = w, b is not None
        y = xhat if w is None else xhat * xp.reshape(w, shape)
        return y if b is None else y + xp.reshape(b, shape)

    def _backward(self, gy: Any) -> Any:
        xp, needs = self.xp, self.needs_input_grad
        grads: list[Any] = [None]
        if self.w is not None:
            grads.append(xp.sum(gy * self.xhat, axis=self.axes) if needs[1] else None)
        if self.has_b:
            grads.append(xp.sum(gy, axis=self.axes) if needs[-1] else None)
        if needs[0]:
            scale = self.inv if self.w is None else self.inv * xp.reshape(self.w, self.shape)
            grads[0] = gy * scale
        return tuple(grads) if len(grads) > 1 else grads[0]


def _set(holder: Any, value: Any, xp: Any, what: str) -> None:
    """Store new running statistics: rebind a Tensor (a buffer), or write into an array
    (through the ops: an array of a backend without in-place writes cannot be updated, and
    silently keeping the old statistics would be wrong, so that is an error)."""
    if isinstance(holder, Tensor):
        holder.data = value
        return
    ops = ops_for(xp, holder)
    if not ops.inplace:
        raise ArgumentError(
            f"batch_norm: {what} is a {ops.record.name} array, which cannot be updated in place "
            "(the backend's arrays are immutable); pass the running statistics as Tensors "
            "(nb.Tensor(array)), whose .data is rebound, or use nn.BatchNorm"
        )
    ops.update(holder, value)


def _mixed(x: Any, like: Any) -> tuple[Any, Any]:
    """Under a mixed precision policy: ``x`` cast to the dtype of ``like`` (the layer's
    float32 parameters or statistics: normalisation runs there, a float16 variance overflows)
    and the compute dtype name to cast the result to; else ``(x, None)``."""
    compute = mixed_compute()
    ld = _data(like)
    if compute is None or ld is None:
        return x, None
    if _data(x).dtype != ld.dtype:
        x = cast(x, ld.dtype)
    return x, (compute if str(ld.dtype).rsplit(".", 1)[-1] != compute else None)


def batch_norm(
    x: Any,
    running_mean: Any,
    running_var: Any,
    weight: Any = None,
    bias: Any = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch normalisation over every axis of ``x`` but the channels (axis 1), as
    ``torch.nn.functional.batch_norm`` (same arguments).

    ``training=True`` normalises by the batch's mean and biased variance and, when
    ``running_mean`` / ``running_var`` are given (Tensors, such as a layer's buffers, are
    rebound; arrays are written in place, and an array of a backend whose arrays are
    immutable, such as jax, raises ArgumentError), updates them to ``(1 - momentum) running +
    momentum batch`` with the unbiased variance. ``training=False`` normalises by the running
    statistics. ``weight`` and ``bias`` (per channel) scale and shift the result. Under a
    mixed precision policy ("mixed16") the normalisation runs in the parameters' dtype
    (float32) and the result is cast to the compute dtype (float16).

    Raises:
        ShapeError: ``x`` has fewer than 2 axes, or a per-channel array has the wrong length.
        ArgumentError: training on a single value per channel (an empty batch gives an empty
            result and leaves the running statistics as they are), or evaluating without running
            statistics, or running statistics given as immutable (jax) arrays when training.
    """
    x, compute = _mixed(x, weight if weight is not None else running_mean)
    y = _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return y if compute is None else cast(y, compute)


def _batch_norm(
    x: Any,
    running_mean: Any,
    running_var: Any,
    weight: Any,
    bias: Any,
    training: bool,
    momentum: float,
    eps: float,
) -> Tensor:
    xd = _data(x)
    _check_input("batch_norm", xd)
    if xd.ndim < 2:
        raise ShapeError(f"batch_norm: input must be (N, C, ...), got shape {tuple(xd.shape)}")
    _check_per_channel(
        "batch_norm",
        xd,
        (
            ("weight", weight),
            ("bias", bias),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ),
        "; cast the input (xp.astype) or build the layer under the input's dtype",
    )
    args = [a for a in (x, weight, bias) if a is not None]
    if weight is None and bias is not None:
        raise ArgumentError("batch_norm: a bias without a weight is not supported; pass both")
    if not training:
        if running_mean is None or running_var is None:
            raise ArgumentError(
                "batch_norm: evaluation (training=False) needs running_mean and running_var"
            )
        return BatchNormEval(_data(running_mean), _data(running_var), float(eps))(*args)
    # As torch: with one of the two, training would update neither (the estimate given to be
    # tracked would silently stay as it was).
    if (running_mean is None) != (running_var is None):
        raise ArgumentError(
            "batch_norm: running_mean and running_var must both be None or both be given"
        )
    count = xd.shape[0]
    for n in xd.shape[2:]:
        count *= int(n)
    if count == 0:
        # An empty batch, as in torch: an empty output, zero gradients for the weight and
        # bias, and the running statistics left as they are (there is nothing to average).
        xp = backend_for(xd)[0]
        dtype = xd.dtype if weight is None else _data(weight).dtype
        channels = int(xd.shape[1])
        mean = xp.zeros((channels,), dtype=dtype, device=xd.device)
        return BatchNormEval(mean, xp.ones_like(mean), float(eps))(*args)
    if count < 2:
        raise ArgumentError(
            f"batch_norm: training needs more than one value per channel, got input of shape "
            f"{tuple(xd.shape)}; use a larger batch, or model.eval()"
        )
    running = None
    if running_mean is not None and running_var is not None:
        running = (running_mean, running_var, float(momentum), count)
    return BatchNormTrain(float(eps), running)(*args)


class GroupNorm(Module):
    """Group normalisation: the ``num_channels`` channels split into ``num_groups`` groups,
    each normalised over its channels and positions per sample, then scaled and shifted per
    channel (``affine=True``). Independent of the batch size; the same in training and
    evaluation. ``GroupNorm(1, C)`` normalises each sample as a whole.
    """

    def __init__(
        self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True
    ) -> None:
        super().__init__()
        num_groups = size_argument("GroupNorm", "num_groups", num_groups)
        num_channels = size_argument("GroupNorm", "num_channels", num_channels)
        if num_channels % num_groups:
            raise ArgumentError(
                f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups "
                f"({num_groups})"
            )
        self.num_groups, self.num_channels = num_groups, num_channels
        self.eps, self.affine = float(eps), bool(affine)
        if affine:
            self.weight = Parameter(init.ones((self.num_channels,)))
            self.bias = Parameter(init.zeros((self.num_channels,)))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: Any) -> Tensor:
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class GroupNormNode(_Float32Statistics):
    """The node of :func:`group_norm`."""

    def __init__(self, groups: int, eps: float) -> None:
        self.groups, self.eps = groups, eps

    def _forward(self, x: Any, w: Any = None, b: Any = None) -> Any:
        xp = self.xp
        self.in_shape = tuple(x.shape)
        self.shape = _channel_shape(x.ndim)
        # The group size spelled out: -1 is ambiguous for an empty batch.
        rest = math.prod(self.in_shape[1:]) // self.groups
        xg = xp.reshape(x, (x.shape[0], self.groups, rest))
        mean = xp.mean(xg, axis=2, keepdims=True)
        xc = xg - mean
        var = xp.mean(xc * xc, axis=2, keepdims=True)
        self.inv = 1.0 / xp.sqrt(var + self.eps)
        self.xhat = xc * self.inv  # (N, G, rest)
        xhat = xp.reshape(self.xhat, self.in_shape)
        self.w, self.has_b = w, b is not None
        y = xhat if w is None else xhat * xp.reshape(w, self.shape)
        return y if b is None else y + xp.reshape(b, self.shape)

    def _backward(self, gy: Any) -> Any:
        xp, needs = self.xp, self.needs_input_grad
        axes = (0, *range(2, gy.ndim))
        grads: list[Any] = [None]
        if self.w is not None:
            xhat = xp.reshape(self.xhat, self.in_shape)
            grads.append(xp.sum(gy * xhat, axis=axes) if needs[1] else None)
        if self.has_b:
            grads.append(xp.sum(gy, axis=axes) if needs[-1] else None)
        if needs[0]:
            g = gy if self.w is None else gy * xp.reshape(self.w, self.shape)
            g = xp.reshape(g, self.xhat.shape)
            xhat = self.xhat
            gx = self.inv * (
                g
                - xp.mean(g, axis=2, keepdims=True)
                - xhat * xp.mean(g * xhat, axis=2, keepdims=True)
            )
            grads[0] = xp.reshape(gx, self.in_shape)
        return tuple(grads) if len(grads) > 1 else grads[0]


def group_norm(
    x: Any, num_groups: int, weight: Any = None, bias: Any = None, eps: float = 1e-5
) -> Tensor:
    """Group normalisation of ``x`` (N, C, ...) as ``torch.nn.functional.group_norm``: each
    sample's channels in ``num_groups`` groups, each group normalised to zero mean and unit
    (biased) variance, then ``weight`` and ``bias`` per channel."""
    x, compute = _mixed(x, weight)
    y = _group_norm(x, num_groups, weight, bias, eps)
    return y if compute is None else cast(y, compute)


def _group_norm(x: Any, num_groups: int, weight: Any, bias: Any, eps: float) -> Tensor:
    xd = _data(x)
    _check_input("group_norm", xd)
    num_groups = size_argument("group_norm", "num_groups", num_groups)
    if xd.ndim < 2 or xd.shape[1] % num_groups:
        raise ShapeError(
            f"group_norm: input of shape {tuple(xd.shape)} must be (N, C, ...) with C "
            f"divisible by num_groups ({num_groups})"
        )
    if weight is None and bias is not None:
        raise ArgumentError("group_norm: a bias without a weight is not supported; pass both")
    _check_per_channel("group_norm", xd, (("weight", weight), ("bias", bias)))
    args = [a for a in (x, weight, bias) if a is not None]
    return GroupNormNode(int(num_groups), float(eps))(*args)


class _BatchNorm(Module):
    _ndims: tuple[int, ...] = ()
    running_mean: Tensor | None  # buffers (register_buffer), None without running stats
    running_var: Tensor | None

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        # momentum=None (PyTorch's cumulative average) would fail in the comparison.
        given: Any = momentum  # (typed float, but a user may pass None, as in PyTorch)
        if type(given) is bool or not isinstance(given, numbers.Real):
            raise ArgumentError(
                f"momentum must be a number in [0, 1], got {momentum!r} (PyTorch's "
                "momentum=None, a cumulative average, is not supported)"
            )
        if not 0.0 <= momentum <= 1.0:
            raise ArgumentError(f"momentum must be in [0, 1], got {momentum}")
        self.num_features = size_argument(type(self).__name__, "num_features", num_features)
        self.eps, self.momentum = float(eps), float(momentum)
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        if affine:
            self.weight = Parameter(init.ones((self.num_features,)))
            self.bias = Parameter(init.zeros((self.num_features,)))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", init.zeros((self.num_features,)))
            self.register_buffer("running_var", init.ones((self.num_features,)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)

    def forward(self, x: Any) -> Tensor:
        xd = _data(x)
        if getattr(xd, "ndim", None) not in self._ndims:
            if not hasattr(xd, "ndim"):
                raise not_an_array(xd, repr(self))
            raise ShapeError(
                f"{self!r}: expected input with {' or '.join(map(str, self._ndims))} axes "
                f"(N, C{', ...' if max(self._ndims) > 2 else ''}), got shape "
                f"{tuple(getattr(xd, 'shape', ()))}"
            )
        use_batch = self.training or not self.track_running_stats
        return batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            use_batch,
            self.momentum,
            self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) inputs per channel C (:func:`batch_norm`),
    with running statistics as buffers; ``eps`` and ``momentum`` as in PyTorch."""

    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of NCHW images per channel (:func:`batch_norm`), with running
    statistics as buffers; ``eps`` and ``momentum`` as in PyTorch.

    >>> import nnbackend as nb
    >>> bn = nb.nn.BatchNorm2d(4)
    >>> y = bn(nb.namespace().ones((2, 4, 3, 3)))
    >>> bn.eval().training
    False
    """

    _ndims = (4,)
