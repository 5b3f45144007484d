"""Differentiable building blocks of layers and losses, as fused graph nodes.

Each function is one :class:`~nnbackend.autograd.Function` with a hand-written backward, so a
``Linear`` layer costs one node (not a MatMul plus an Add) and softmax-with-cross-entropy one
node whose gradient is exactly ``(softmax - onehot) / N``. All of them take Tensors or backend
arrays, keep the input dtype, and use only the Array API standard.
"""

from __future__ import annotations

from typing import Any

from nnbackend.autograd.function import Function
from nnbackend.autograd.kernels import kernels
from nnbackend.autograd.ops import matmul, matmul_arrays, scatter_add_rows, take_rows
from nnbackend.autograd.tensor import Tensor
from nnbackend.backends import host
from nnbackend.errors import ArgumentError, DtypeError, LabelError, ShapeError
from nnbackend.namespace import backend_for

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


class Linear(Function):
    """``x @ W + b`` with ``W`` of shape (in, out); ``x`` may have leading batch axes."""

    grad_may_alias = False

    def forward(self, x: Any, w: Any, b: Any = None) -> Any:
        self.x, self.w = x, w
        self.has_bias = b is not None
        y = matmul_arrays(self.xp, x, w)
        return y if b is None else y + b

    def backward(self, gy: Any) -> tuple[Any, ...]:
        xp, x, w = self.xp, self.x, self.w
        need_x, need_w = self.needs_input_grad[:2]
        gx = matmul_arrays(xp, gy, w.T) if need_x else None
        if x.ndim != 2:
            x = xp.reshape(x, (-1, w.shape[0]))
            gy = xp.reshape(gy, (-1, w.shape[1]))
        gw = matmul_arrays(xp, x.T, gy) if need_w else None
        if not self.has_bias:
            return gx, gw
        gb = kernels(xp, gy).sum(gy, axis=0) if self.needs_input_grad[2] else None
        return gx, gw, gb


def linear(x: Any, weight: Any, bias: Any = None) -> Tensor:
    """``x @ weight + bias`` as one graph node; ``weight`` has shape (in, out).

    Raises :class:`~nnbackend.errors.ShapeError` when ``x``'s last axis is not ``in`` and
    :class:`~nnbackend.errors.DtypeError` when ``x`` and ``weight`` differ in dtype.
    """
    xd = x.data if isinstance(x, Tensor) else x
    wd = weight.data if isinstance(weight, Tensor) else weight
    if xd.dtype != wd.dtype:
        raise DtypeError(
            f"linear: input dtype {xd.dtype} differs from weight dtype {wd.dtype}; cast the "
            "input (xp.astype) or build the layer under the input's dtype"
        )
    if xd.ndim == 0 or xd.shape[-1] != wd.shape[0]:
        raise ShapeError(
            f"linear: input of shape {tuple(xd.shape)} does not fit a weight of shape "
            f"{tuple(wd.shape)}; expected input shape (..., {wd.shape[0]})"
        )
    if bias is None:
        return Linear()(x, weight)
    return Linear()(x, weight, bias)


class Sigmoid(Function):
    grad_may_alias = False

    def forward(self, x: Any) -> Any:
        # The tanh form never overflows (1 / (1 + exp(-x)) does, in float16, below x = -11).
        self.y = 0.5 * self.xp.tanh(0.5 * x) + 0.5
        return self.y

    def backward(self, gy: Any) -> Any:
        y = self.y
        return gy * y * (1.0 - y)


def sigmoid(x: Any) -> Tensor:
    """``1 / (1 + exp(-x))``, computed as ``0.5 * tanh(x / 2) + 0.5`` so it never overflows."""
    return Sigmoid()(x)


class Tanh(Function):
    grad_may_alias = False

    def forward(self, x: Any) -> Any:
        self.y = self.xp.tanh(x)
        return self.y

    def backward(self, gy: Any) -> Any:
        return gy * (1.0 - self.y * self.y)


def tanh(x: Any) -> Tensor:
    """Hyperbolic tangent."""
    return Tanh()(x)


class LeakyReLU(Function):
    grad_may_alias = False

    def __init__(self, slope: float) -> None:
        self.slope = float(slope)

    def forward(self, x: Any) -> Any:
        self.mask = x > 0
        if self.slope == 0.0:
            return self.xp.where(self.mask, x, 0.0)
        return self.xp.where(self.mask, x, x * self.slope)

    def backward(self, gy: Any) -> Any:
        if self.slope == 0.0:
            return self.xp.where(self.mask, gy, 0.0)
        return self.xp.where(self.mask, gy, gy * self.slope)


def relu(x: Any) -> Tensor:
    """``max(x, 0)`` (gradient 0 at 0)."""
    return LeakyReLU(0.0)(x)


def leaky_relu(x: Any, negative_slope: float = 0.01) -> Tensor:
    """``x`` where positive, ``negative_slope * x`` elsewhere."""
    return LeakyReLU(negative_slope)(x)


class Softmax(Function):
    grad_may_alias = False

    def __init__(self, axis: int) -> None:
        self.axis = axis

    def forward(self, x: Any) -> Any:
        xp = self.xp
        k = self.k = kernels(xp, x)
        e = xp.exp(x - k.max(x, axis=self.axis, keepdims=True))
        self.y = e / k.sum(e, axis=self.axis, keepdims=True)
        return self.y

    def backward(self, gy: Any) -> Any:
        y = self.y
        return y * (gy - self.k.sum(gy * y, axis=self.axis, keepdims=True))


def softmax(x: Any, axis: int = -1) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``axis``, shifted by the maximum for stability."""
    return Softmax(axis)(x)


class LogSoftmax(Function):
    grad_may_alias = False

    def __init__(self, axis: int) -> None:
        self.axis = axis

    def forward(self, x: Any) -> Any:
        xp = self.xp
        k = self.k = kernels(xp, x)
        z = x - k.max(x, axis=self.axis, keepdims=True)
        self.y = z - xp.log(k.sum(xp.exp(z), axis=self.axis, keepdims=True))
        return self.y

    def backward(self, gy: Any) -> Any:
        xp = self.xp
        return gy - xp.exp(self.y) * self.k.sum(gy, axis=self.axis, keepdims=True)


def log_softmax(x: Any, axis: int = -1) -> Tensor:
    """``x - logsumexp(x)`` along ``axis``, computed stably."""
    return LogSoftmax(axis)(x)


# (namespace, n_classes, label dtype) -> arange(n_classes): made once, not once per step.
_class_ranges: dict[tuple[Any, int, Any], Any] = {}


def _class_range(xp: Any, n_classes: int, dtype: Any) -> Any:
    key = (xp, n_classes, dtype)
    found = _class_ranges.get(key)
    if found is None:
        if not xp.isdtype(dtype, "integral"):
            raise DtypeError(f"class labels must be integers, got {dtype}")
        found = _class_ranges[key] = xp.arange(n_classes, dtype=dtype)
    return found


def _bad_labels(labels: Any, n_classes: int) -> LabelError:
    found = host.numpy().asarray(backend_for(labels)[1].to_host(labels))
    wrong = found[(found < 0) | (found >= n_classes)]
    return LabelError(
        f"labels must lie in [0, {n_classes}) for {n_classes} classes; found "
        f"{wrong[:5].tolist()}{' ...' if wrong.size > 5 else ''}"
    )


class SoftmaxCrossEntropy(Function):
    grad_may_alias = False

    def forward(self, x: Any, t: Any) -> Any:
        xp = self.xp
        n, c = x.shape
        k = self.k = kernels(xp, x)
        z = x - k.max(x, axis=1, keepdims=True)
        e = xp.exp(z)
        s = k.sum(e, axis=1, keepdims=True)
        self.p = e / s
        log_s = xp.log(s)
        invalid = None
        self.rows_sum_to_one = t.ndim == 1
        if t.ndim == 1:
            hit = t[:, None] == _class_range(xp, c, t.dtype)
            labels, t = t, k.astype(hit, x.dtype)
            # Every label in range <=> exactly n hits. Reading that count is free where the
            # arrays live on the host; on a device it would sync, so the loss turns NaN instead.
            matched = k.sum(t, axis=None)
            if k.on_host(labels):
                if float(matched) != n:
                    raise _bad_labels(labels, c)
            else:
                invalid = matched != float(n)
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
        if self.rows_sum_to_one:
            loss = (k.sum(log_s, axis=None) - k.sum(t * z, axis=None)) / float(n)
        else:
            loss = -k.sum(t * (z - log_s), axis=None) / float(n)
        if invalid is not None:
            loss = xp.where(invalid, float("nan"), loss)
        return loss

    def backward(self, gy: Any) -> tuple[Any, Any]:
        scale = gy / float(self.n)
        gx = gt = None
        if self.needs_input_grad[0]:
            p = self.p
            if not self.rows_sum_to_one:  # soft targets: d/dx = p * sum(t) - t
                p = p * self.k.sum(self.t, axis=1, keepdims=True)
            gx = (p - self.t) * scale
        if self.needs_input_grad[1]:
            gt = -self.logp * scale
        return gx, gt


def softmax_cross_entropy(logits: Any, labels: Any) -> Tensor:
    """Mean cross-entropy of ``softmax(logits)`` (shape (N, C)) against integer ``labels``
    (N,) or one-hot / probability targets (N, C), as one stable node (log-sum-exp).

    Labels out of range raise :class:`~nnbackend.errors.LabelError` on host-resident backends;
    on a GPU, where a check would force a device synchronisation each step, they make the loss
    NaN instead.
    """
    return SoftmaxCrossEntropy()(logits, labels)


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
        self.t = t
        self.x = x
        # max(x, 0) - x t + log(1 + exp(-|x|)): never overflows, even for |x| = 1e4.
        loss = xp.where(x > 0, x, 0.0) - x * t + xp.log1p(xp.exp(-xp.abs(x)))
        self.n = 1
        for d in x.shape:
            self.n *= int(d)
        return xp.sum(loss) / float(self.n)

    def backward(self, gy: Any) -> tuple[Any, Any]:
        xp, x = self.xp, self.x
        scale = gy / float(self.n)
        gx = gt = None
        if self.needs_input_grad[0]:
            e = xp.exp(-xp.abs(x))
            p = xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
            gx = (p - self.t) * scale
        if self.needs_input_grad[1]:
            gt = -x * scale
        return gx, gt


def sigmoid_cross_entropy(logits: Any, targets: Any) -> Tensor:
    """Mean binary cross-entropy of ``sigmoid(logits)`` against ``targets`` in [0, 1],
    computed stably for large logits."""
    return SigmoidCrossEntropy()(logits, targets)


class MSE(Function):
    grad_may_alias = False

    def forward(self, y: Any, t: Any) -> Any:
        if tuple(y.shape) != tuple(t.shape):
            raise ShapeError(f"mse_loss: shapes {tuple(y.shape)} and {tuple(t.shape)} differ")
        if y.dtype != t.dtype:
            raise DtypeError(f"mse_loss: dtypes {y.dtype} and {t.dtype} differ")
        self.diff = y - t
        self.n = 1
        for d in y.shape:
            self.n *= int(d)
        return self.xp.sum(self.diff * self.diff) / float(self.n)

    def backward(self, gy: Any) -> tuple[Any, Any]:
        g = self.diff * (gy * (2.0 / self.n))
        return (g if self.needs_input_grad[0] else None, -g if self.needs_input_grad[1] else None)


def mse_loss(y: Any, t: Any) -> Tensor:
    """Mean of ``(y - t) ** 2`` over all elements."""
    return MSE()(y, t)


class Dropout(Function):
    grad_may_alias = False

    def __init__(self, mask: Any) -> None:
        self.mask = mask

    def forward(self, x: Any) -> Any:
        return x * self.mask

    def backward(self, gy: Any) -> Any:
        return gy * self.mask


def dropout(x: Any, p: float, training: bool = True, generator: Any = None) -> Tensor:
    """Inverted dropout: zero each element with probability ``p`` and scale the rest by
    ``1 / (1 - p)``; the identity when not training or ``p == 0``.

    The mask is drawn by ``generator`` (a :class:`nnbackend.random.Generator`, default the
    module-level one) on the host and moved to the input's backend, so a seed reproduces it on
    every backend.
    """
    if not 0.0 <= p < 1.0:
        raise ArgumentError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x if isinstance(x, Tensor) else Tensor(x)
    from nnbackend import random

    data = _data(x)
    xp, record = backend_for(data)
    rng = generator if generator is not None else random.default_generator()
    keep = rng._host.random(tuple(data.shape)) >= p
    scale = (keep / (1.0 - p)).astype(str(data.dtype).rsplit(".", 1)[-1])
    mask = record.from_host(
        scale, getattr(data, "device", None) if record.name != "numpy" else None
    )
    if mask.dtype != data.dtype:
        mask = xp.astype(mask, data.dtype)
    return Dropout(mask)(x)


class Embedding(Function):
    grad_may_alias = False

    def forward(self, w: Any, indices: Any) -> Any:
        self.indices, self.shape, self.dtype = indices, tuple(w.shape), w.dtype
        return take_rows(self.xp, w, indices)

    def backward(self, gy: Any) -> tuple[Any, None]:
        gw = self.xp.zeros(self.shape, dtype=self.dtype)
        return scatter_add_rows(self.xp, gw, self.indices, gy), None


def embedding(indices: Any, weight: Any) -> Tensor:
    """``weight[indices]`` for integer ``indices`` of any shape; the backward adds the
    gradients of repeated indices together."""
    idx = _data(indices)
    xp = backend_for(idx)[0]
    if not xp.isdtype(idx.dtype, "integral"):
        raise DtypeError(f"embedding indices must be integers, got {idx.dtype}")
    return Embedding()(weight, idx)


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
    and shift by ``bias`` (both of the last axis' size)."""
    return LayerNorm(eps)(x, weight, bias)


_ = matmul  # re-exported: F.matmul(a, b)
