"""The networks the cases time: the hand-written NumPy (or CuPy) MLP with explicit backward,
the same MLP on nnbackend's engine, and on PyTorch. Not a case module (its name starts with
``_``); the case modules import it.

A *step* is forward, softmax-cross-entropy, backward and an SGD update (lr 0.01). All three
networks have the same layers: ``Linear`` layers with a bias, ReLU or sigmoid between them,
no activation after the last.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import numpy as np

import nnbackend as nb
from benchmarks import Skip
from nnbackend import nn, optim

__all__ = [
    "TINY",
    "MEDIUM",
    "LARGE",
    "EngineCallsMLP",
    "HandMLP",
    "HandReusedMLP",
    "data",
    "engine_step",
    "gemm_products",
    "has_torch",
    "mixed16_step",
    "step_flops",
    "torch_step",
]

# (layer sizes, activation, batch)
TINY = ([2, 10, 3], "sigmoid", 30)  # the book's chapter-1 network on the spiral
MEDIUM = ([784, 1024, 1024, 10], "relu", 256)
LARGE = ([4096, 4096, 4096, 10], "relu", 1024)  # GPU only

LR = 0.01


class HandMLP:
    """A lean hand-written MLP with explicit backward, after the book's chapter-1 network
    ("Deep Learning from Scratch 2") but as one loop, without its layer objects and gradient
    copies (``_book.py`` has the book's own structure), on NumPy or any library with NumPy's
    API (``xp=cupy``).

    Each Affine layer computes ``dx``, the first one included, as the book's does; the engine
    skips that product because the data needs no gradient, which is part of what is measured.
    """

    def __init__(
        self, sizes: list[int], activation: str, dtype: str, seed: int = 0, xp: Any = np
    ) -> None:
        rng = np.random.default_rng(seed)
        self.xp = xp
        self.params = []
        for n_in, n_out in pairwise(sizes):
            w = (rng.normal(size=(n_in, n_out)) * np.sqrt(1.0 / n_in)).astype(dtype)
            self.params.append([xp.asarray(w), xp.zeros(n_out, dtype=dtype)])
        self.activation = activation

    def step(self, x: Any, t: Any, lr: float = LR) -> Any:
        xp = self.xp
        caches = []
        h = x
        last = len(self.params) - 1
        for i, (w, b) in enumerate(self.params):
            a = h @ w + b
            caches.append(h)
            if i < last:
                if self.activation == "relu":
                    mask = a <= 0
                    a[mask] = 0
                    caches.append(mask)
                else:
                    a = 1 / (1 + xp.exp(-a))
                    caches.append(a)
            h = a
        # softmax with cross entropy
        n = h.shape[0]
        z = h - h.max(axis=1, keepdims=True)
        e = xp.exp(z)
        p = e / e.sum(axis=1, keepdims=True)
        rows = xp.arange(n)
        loss = -xp.log(p[rows, t] + 1e-7).sum() / n
        dout = p.copy()
        dout[rows, t] -= 1
        dout /= n
        for i in range(last, -1, -1):
            w, b = self.params[i]
            if i < last:
                act = caches.pop()
                if self.activation == "relu":
                    dout[act] = 0
                else:
                    dout = dout * act * (1 - act)
            x_in = caches.pop()
            dw = x_in.T @ dout
            db = dout.sum(axis=0)
            dout = dout @ w.T  # the book's Affine computes dx, the first layer's included
            w -= lr * dw
            b -= lr * db
        return loss


class HandReusedMLP(HandMLP):
    """The lean hand-written loop with its arrays made once and reused, as a NumPy user who
    minds memory writes it (issue 19's "hand NumPy, reused buffers"): each product into a
    kept array (``matmul(out=)``), the bias, the activation and the gradients' scalings in
    place, SGD as ``g *= lr; w -= g``. Unlike :class:`HandMLP` (the book's shape), it
    computes no input gradient for the first layer (the data needs none) and masks ReLU's
    gradient with a product instead of boolean indexing. The same step, to rounding, as
    :class:`HandMLP`'s from the same seed. Its arrays are made for the first batch size
    it sees, and again when the size changes.
    """

    def __init__(
        self, sizes: list[int], activation: str, dtype: str, seed: int = 0, xp: Any = np
    ) -> None:
        super().__init__(sizes, activation, dtype, seed, xp)
        self._batch = -1

    def _make(self, batch: int, dtype: Any) -> None:
        xp = self.xp
        outs = [w.shape[1] for w, _ in self.params]
        self.a = [xp.empty((batch, n), dtype=dtype) for n in outs]  # activations, in place
        self.mask = [xp.empty((batch, n), dtype=bool) for n in outs[:-1]]
        self.dx = [xp.empty((batch, n), dtype=dtype) for n in outs[:-1]]
        self.tmp = [xp.empty((batch, n), dtype=dtype) for n in outs[:-1]]  # sigmoid's
        self.p = xp.empty((batch, outs[-1]), dtype=dtype)
        self.gw = [xp.empty_like(w) for w, _ in self.params]
        self.gb = [xp.empty_like(b) for _, b in self.params]
        self.rows = xp.arange(batch)
        self._batch = batch

    def step(self, x: Any, t: Any, lr: float = LR) -> Any:
        xp = self.xp
        n = x.shape[0]
        if n != self._batch:
            self._make(n, x.dtype)
        last = len(self.params) - 1
        relu = self.activation == "relu"
        h = x
        for i, (w, b) in enumerate(self.params):
            a = xp.matmul(h, w, out=self.a[i])
            a += b
            if i < last:
                if relu:
                    xp.greater(a, 0, out=self.mask[i])
                    xp.maximum(a, 0, out=a)
                else:
                    xp.negative(a, out=a)
                    xp.exp(a, out=a)
                    a += 1
                    xp.reciprocal(a, out=a)
            h = a
        # softmax with cross entropy, as HandMLP's
        p, rows = self.p, self.rows
        xp.subtract(h, h.max(axis=1, keepdims=True), out=p)
        xp.exp(p, out=p)
        p /= p.sum(axis=1, keepdims=True)
        loss = -xp.log(p[rows, t] + 1e-7).sum() / n
        p[rows, t] -= 1
        p /= n
        dout = p
        for i in range(last, -1, -1):
            w, b = self.params[i]
            h_in = x if i == 0 else self.a[i - 1]
            gw = xp.matmul(h_in.T, dout, out=self.gw[i])
            gb = xp.sum(dout, axis=0, out=self.gb[i])
            if i > 0:
                dx = xp.matmul(dout, w.T, out=self.dx[i - 1])
                if relu:
                    dx *= self.mask[i - 1]
                else:
                    act, tmp = self.a[i - 1], self.tmp[i - 1]
                    xp.subtract(1, act, out=tmp)
                    tmp *= act
                    dx *= tmp
                dout = dx
            gw *= lr
            w -= gw
            gb *= lr
            b -= gb
        return loss


def _model(sizes: list[int], activation: str) -> nn.Sequential:
    nb.random.seed(0)
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU() if activation == "relu" else nn.Sigmoid())
    return nn.Sequential(*layers)


def engine_step(
    sizes: list[int], activation: str, dtype: str, backend: str = "numpy"
) -> Callable[[Any, Any], Any]:
    """One training step of the MLP on nnbackend's engine, its parameters made on
    ``backend`` in ``dtype``."""
    with nb.using(backend=backend, dtype=dtype):
        model = _model(sizes, activation)
    loss_fn = nn.SoftmaxCrossEntropy()
    opt = optim.SGD(model.parameters(), lr=LR)

    def step(x: Any, t: Any) -> Any:
        opt.zero_grad()
        loss = loss_fn(model(x), t)
        loss.backward()
        opt.step()
        return loss

    step.model = model  # type: ignore[attr-defined]  # (for a replica's starting weights)
    step.parts = (model, loss_fn, opt)  # type: ignore[attr-defined]  # (gpu_phases' phases)
    return step


def mixed16_step(
    sizes: list[int], activation: str, backend: str = "numpy"
) -> Callable[[Any, Any], Any]:
    """The engine step under the mixed precision policy (``using(dtype="mixed16")``: float32
    master parameters, layers computing in float16) with dynamic loss scaling
    (``precision.LossScaler``: scale the loss, unscale and check the gradients, step), as
    ``nnbackend.precision``'s docs show it; :class:`~benchmarks.Skip` where that module is
    missing. The data stays float32, as a user's would."""
    if importlib.util.find_spec("nnbackend.precision") is None:
        raise Skip(
            "mixed16 needs nnbackend.precision (issue 5), which this checkout does not have yet"
        )
    from nnbackend import precision

    if "mixed16" not in getattr(nb.config, "POLICIES", ()):
        raise Skip("this nnbackend has no 'mixed16' policy in nnbackend.config.POLICIES")
    with nb.using(backend=backend, dtype="mixed16"):
        model = _model(sizes, activation)
        scaler = precision.LossScaler() if hasattr(precision, "LossScaler") else None
    loss_fn = nn.SoftmaxCrossEntropy()
    opt = optim.SGD(model.parameters(), lr=LR)

    def step(x: Any, t: Any) -> Any:
        with nb.using(dtype="mixed16"):
            opt.zero_grad()
            loss = loss_fn(model(x), t)
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale_loss(loss).backward()
                scaler.step(opt)
        return loss

    return step


def torch_step(
    sizes: list[int], activation: str, device: str = "cpu", dtype: str = "float32"
) -> Callable[[Any, Any], Any]:
    """The same MLP in PyTorch (``torch.nn.Linear`` keeps its weight as (out, in), a
    transposed layout of the same products)."""
    import torch

    torch.manual_seed(0)
    layers: list[Any] = []
    for i, (n_in, n_out) in enumerate(pairwise(sizes)):
        layers.append(torch.nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU() if activation == "relu" else torch.nn.Sigmoid())
    model = torch.nn.Sequential(*layers).to(device=device, dtype=getattr(torch, dtype))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x: Any, t: Any) -> Any:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), t)
        loss.backward()
        opt.step()
        return loss

    step.parts = (model, loss_fn, opt)  # type: ignore[attr-defined]  # (gpu_phases' phases)
    return step


def data(batch: int, n_in: int, n_out: int, dtype: str) -> tuple[Any, Any]:
    """A NumPy batch: normal inputs in ``dtype`` and int64 labels."""
    rng = np.random.default_rng(1)
    return rng.normal(size=(batch, n_in)).astype(dtype), rng.integers(0, n_out, batch)


def on_backend(backend: str, *arrays: Any) -> tuple[Any, ...]:
    """The NumPy ``arrays`` moved to ``backend`` (same dtypes)."""
    if backend == "numpy":
        return arrays
    xp = nb.namespace(backend)
    return tuple(xp.asarray(a) for a in arrays)


def has_torch() -> bool:
    return "torch" in nb.available_backends()


def step_flops(sizes: list[int], batch: int) -> int:
    """The issue's nominal FLOPs of a step: 6 * batch * weights (forward, weight gradient and
    input gradient of every layer, 2 FLOPs per multiply-add)."""
    return 6 * batch * sum(a * b for a, b in pairwise(sizes))


class EngineCallsMLP:
    """The NumPy calls the engine's eager step makes on a ReLU MLP, in its order and into
    buffers kept across steps as its pool keeps them, with no engine around them: the floor
    the engine's FLOP rate can reach with NumPy's kernels (issue 19). Per layer: the product
    into a kept array and the bias added in place; ``x > 0`` into a kept boolean mask and
    ``maximum`` against a kept array of zeros into another; backward, the weight gradient
    into a kept array, the bias gradient as a row of ones times the gradient, the input
    gradient (not the first layer's) into a kept array, ReLU's as the mask copied into
    float and multiplied in place; SGD through NumPy's BLAS axpy where the engine takes it
    (:mod:`nnbackend.backends.blas`). The loss's few (batch, classes) calls are written
    plainly. Counted by callgrind on the medium step (one thread), its instructions are the
    engine step's less 0.13% (328.4 against 328.8 million).
    """

    def __init__(self, params: list[tuple[Any, Any]], batch: int) -> None:
        from nnbackend.backends import blas
        from nnbackend.backends.numpy import _SCRATCH_MIN

        self.params = [(np.array(w), np.array(b)) for w, b in params]
        dtype = self.params[0][0].dtype
        self.axpy = blas.axpy_kernels(np).get(dtype.char)
        self.axpy_min = _SCRATCH_MIN  # the engine's size for the axpy and its pool
        self.address = blas.address
        outs = [w.shape[1] for w, _ in self.params]
        self.h = [np.empty((batch, n), dtype) for n in outs]
        self.y = [np.empty((batch, n), dtype) for n in outs[:-1]]
        self.mask = [np.empty((batch, n), bool) for n in outs[:-1]]
        self.zeros = [np.zeros((batch, n), dtype) for n in outs[:-1]]
        self.gx = [np.empty((batch, n), dtype) for n in outs[:-1]]
        self.gy = [np.empty((batch, n), dtype) for n in outs[:-1]]
        self.gw = [np.empty_like(w) for w, _ in self.params]
        self.ones = np.ones(batch, dtype)
        self.rows = np.arange(batch)

    def step(self, x: Any, t: Any, lr: float = LR) -> Any:
        last = len(self.params) - 1
        h = x
        for i, (w, b) in enumerate(self.params):
            out = self.h[i]
            np.matmul(h, w, out=out)
            out += b
            if i < last:
                np.greater(out, 0, out=self.mask[i])
                h = np.maximum(out, self.zeros[i], out=self.y[i])
        z = self.h[last]
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        p = e / s
        n = x.shape[0]
        loss = (np.log(s).sum() - z[self.rows, t].sum()) / n
        p[self.rows, t] -= 1.0
        g = p * (1.0 / n)
        for i in range(last, -1, -1):
            w, b = self.params[i]
            h_in = x if i == 0 else self.y[i - 1]
            gw = np.matmul(h_in.T, g, out=self.gw[i])
            gb = self.ones @ g
            if i > 0:
                gx = np.matmul(g, w.T, out=self.gx[i - 1])
                g = self.gy[i - 1]
                np.copyto(g, self.mask[i - 1])
                g *= gx
            if self.axpy is not None and w.size >= self.axpy_min:
                self.axpy(w.size, -lr, self.address(gw), self.address(w))
            else:
                w -= lr * gw
            b -= lr * gb
        return loss


def gemm_products(
    sizes: list[int], batch: int, dtype: str, xp: Any = np, first_dx: bool = False
) -> tuple[Callable[[], None], int]:
    """A function running, alone, the matrix products of one training step at its shapes and
    operand layouts, and their FLOPs: per layer ``x @ W`` (forward), ``x.T @ gy`` (weight
    gradient) and ``gy @ W.T`` (input gradient), the first layer's input gradient only with
    ``first_dx`` (the engine skips it, the hand-written network computes it)."""
    rng = np.random.default_rng(2)

    def arr(*shape: int) -> Any:
        return xp.asarray(rng.normal(size=shape).astype(dtype))

    products: list[tuple[Any, Any]] = []
    flops = 0
    for i, (n_in, n_out) in enumerate(pairwise(sizes)):
        x, w, gy = arr(batch, n_in), arr(n_in, n_out), arr(batch, n_out)
        products += [(x, w), (x.T, gy)]
        flops += 2 * 2 * batch * n_in * n_out
        if i > 0 or first_dx:
            products.append((gy, w.T))
            flops += 2 * batch * n_in * n_out

    def run() -> None:
        for a, b in products:
            a @ b

    return run, flops
