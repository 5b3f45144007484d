"""The book's own chapter-1 network, as the tiny step's baseline: "Deep Learning from Scratch
2" (Koki Saitoh, O'Reilly Japan), ``ch01/two_layer_net.py`` with the layers of
``common/layers.py`` and the ``SGD`` of ``common/optimizer.py``, written out here with the same
array operations and the same structure: layer objects with ``forward`` / ``backward``, an
``Affine`` that computes ``dx`` and copies its gradients into preallocated arrays
(``grads[0][...] = dW``), a ``SoftmaxWithLoss`` that indexes the picked probabilities, and an
optimizer that loops over ``params`` and ``grads``.

Issue 3 states the tiny target against "a hand-written NumPy step with explicit backward in the
book's style (about 40 us on this machine)": this is that step. ``HandMLP`` in ``_nets.py`` is
a leaner loop (no layer objects, no gradient copies) that the cases also report.

Two deviations, both in the baseline's favour: labels are integers (the book's spiral data is
one-hot, and its loss takes ``argmax`` every step), and the weights are made in the requested
dtype (the book's ``np.random.randn`` gives float64).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["BookTwoLayerNet"]


class _Affine:
    def __init__(self, w: Any, b: Any) -> None:
        self.params = [w, b]
        self.grads = [np.zeros_like(w), np.zeros_like(b)]
        self.x: Any = None

    def forward(self, x: Any) -> Any:
        w, b = self.params
        self.x = x
        return np.dot(x, w) + b

    def backward(self, dout: Any) -> Any:
        w, _ = self.params
        dx = np.dot(dout, w.T)
        self.grads[0][...] = np.dot(self.x.T, dout)
        self.grads[1][...] = np.sum(dout, axis=0)
        return dx


class _Sigmoid:
    def __init__(self) -> None:
        self.params: list[Any] = []
        self.grads: list[Any] = []
        self.out: Any = None

    def forward(self, x: Any) -> Any:
        self.out = out = 1 / (1 + np.exp(-x))
        return out

    def backward(self, dout: Any) -> Any:
        return dout * (1.0 - self.out) * self.out


def _softmax(x: Any) -> Any:
    x = x - x.max(axis=1, keepdims=True)
    x = np.exp(x)
    x /= x.sum(axis=1, keepdims=True)
    return x


def _cross_entropy_error(y: Any, t: Any) -> Any:
    if t.size == y.size:
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size


class _SoftmaxWithLoss:
    def __init__(self) -> None:
        self.y: Any = None
        self.t: Any = None

    def forward(self, x: Any, t: Any) -> Any:
        self.t = t
        self.y = _softmax(x)
        if self.t.size == self.y.size:
            self.t = self.t.argmax(axis=1)
        return _cross_entropy_error(self.y, self.t)

    def backward(self, dout: Any = 1) -> Any:
        batch_size = self.t.shape[0]
        dx = self.y.copy()
        dx[np.arange(batch_size), self.t] -= 1
        dx *= dout
        return dx / batch_size


class _SGD:
    def __init__(self, lr: float) -> None:
        self.lr = lr

    def update(self, params: list[Any], grads: list[Any]) -> None:
        for i in range(len(params)):
            params[i] -= self.lr * grads[i]


class BookTwoLayerNet:
    """Affine, Sigmoid, Affine and SoftmaxWithLoss, trained by SGD: one ``step(x, t)`` is the
    book's training-loop body (``forward``, ``backward``, ``optimizer.update``)."""

    def __init__(self, sizes: list[int], dtype: str, lr: float, seed: int = 0) -> None:
        n_in, hidden, n_out = sizes
        rng = np.random.default_rng(seed)
        w1 = (0.01 * rng.standard_normal((n_in, hidden))).astype(dtype)
        w2 = (0.01 * rng.standard_normal((hidden, n_out))).astype(dtype)
        self.layers = [
            _Affine(w1, np.zeros(hidden, dtype=dtype)),
            _Sigmoid(),
            _Affine(w2, np.zeros(n_out, dtype=dtype)),
        ]
        self.loss_layer = _SoftmaxWithLoss()
        self.params: list[Any] = []
        self.grads: list[Any] = []
        for layer in self.layers:
            self.params += layer.params
            self.grads += layer.grads
        self.optimizer = _SGD(lr)

    def forward(self, x: Any, t: Any) -> Any:
        for layer in self.layers:
            x = layer.forward(x)
        return self.loss_layer.forward(x, t)

    def backward(self, dout: Any = 1) -> Any:
        dout = self.loss_layer.backward(dout)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def step(self, x: Any, t: Any) -> Any:
        loss = self.forward(x, t)
        self.backward()
        self.optimizer.update(self.params, self.grads)
        return loss
