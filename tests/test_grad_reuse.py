"""Gradient buffers reused across steps (issue 19: no page faults in steady state).

``zero_grad`` keeps each parameter's gradient array aside; the next ``backward`` writes the
weight's new gradient into it (``matmul(out=)``) where the backend proves nothing else refers
to it (NumPy: the reference count), so a steady-state step allocates no weight-sized arrays.
A gradient the user kept is never written into, and the values are bit for bit those of a
step that allocates."""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

import nnbackend as nb
from nnbackend import nn, optim, registry
from nnbackend.backends.numpy import _SCRATCH_MIN
from nnbackend.namespace import ops_for

# The first weight has 256 * 160 = 40,960 elements: above the size NumPy reuses from.
SIZES = (256, 160, 4)
BATCH = 8


def _host(a: Any) -> np.ndarray:
    return np.array(registry.get(registry.backend_of(a)).to_host(a), copy=True)


def _model(xp: Any, dtype: str) -> nn.Sequential:
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(SIZES[0], SIZES[1]), nn.ReLU(), nn.Linear(SIZES[1], SIZES[2]))
    for p in model.parameters():  # the same start on every backend
        p.data = xp.asarray(rng.standard_normal(tuple(p.shape)).astype(dtype))
    return model


def _batch(xp: Any, dtype: str, k: int) -> tuple[Any, Any]:
    rng = np.random.default_rng(100 + k)
    x = xp.asarray(rng.standard_normal((BATCH, SIZES[0])).astype(dtype))
    t = xp.asarray(rng.integers(0, SIZES[-1], BATCH))
    return x, t


def _backward(model: nn.Module, xp: Any, dtype: str, k: int) -> None:
    x, t = _batch(xp, dtype, k)
    nn.SoftmaxCrossEntropy()(model(x), t).backward()


def _first_weight(model: nn.Module) -> Any:
    return next(iter(model.parameters()))


def test_a_gradient_the_user_kept_is_never_written_into(xp64: Any) -> None:
    model = _model(xp64, "float64")
    opt = optim.SGD(model.parameters(), lr=0.1)
    w = _first_weight(model)
    assert SIZES[0] * SIZES[1] >= _SCRATCH_MIN
    kept = []
    for k in range(4):
        opt.zero_grad()
        _backward(model, xp64, "float64", k)
        g = w.grad
        kept.append((g, _host(g)))
        opt.step()
    view = w.grad[1:, ...]  # a view holds the array too
    view_values = _host(view)
    model.zero_grad()
    _backward(model, xp64, "float64", 9)
    for g, values in kept:
        np.testing.assert_array_equal(_host(g), values)
        assert w.grad is not g
    np.testing.assert_array_equal(_host(view), view_values)


def test_an_unreferenced_gradient_array_is_reused_across_steps() -> None:
    with nb.using(backend="numpy", dtype="float32"):
        xp = nb.namespace()
        model = _model(xp, "float32")
        opt = optim.SGD(model.parameters(), lr=0.1)
        w = _first_weight(model)
        refs = []
        for k in range(4):
            opt.zero_grad()
            _backward(model, xp, "float32", k)
            # A weak reference: it neither keeps the array alive nor counts as a holder, and
            # an array that died is not mistaken for a new one at the same address.
            refs.append(weakref.ref(w.grad))
            opt.step()
        # The first step allocates; every later one writes into the same array.
        assert all(r() is w.grad for r in refs)
        w.zero_grad()  # Tensor.zero_grad keeps the spare too, as Module.zero_grad does
        _backward(model, xp, "float32", 7)
        assert refs[0]() is w.grad
        w.grad = None  # dropped, not kept aside: the array goes at once
        assert refs[0]() is None


def _train(xp: Any, dtype: str, reuse: bool, steps: int = 4) -> list[np.ndarray]:
    model = _model(xp, dtype)
    opt = optim.SGD(model.parameters(), lr=0.05)
    params = list(model.parameters())
    for k in range(steps):
        if reuse:
            opt.zero_grad()
        else:
            for p in params:
                p.grad = None  # drops the array: backward allocates
        _backward(model, xp, dtype, k)
        if k == steps - 1:  # accumulation over two backward calls, into a reused array
            _backward(model, xp, dtype, k + 1)
        opt.step()
    return [_host(p.data) for p in params] + [_host(p.grad) for p in params]


def test_results_are_bit_equal_with_and_without_reuse(xp: Any, dtype: str) -> None:
    reused = _train(xp, dtype, reuse=True)
    fresh = _train(xp, dtype, reuse=False)
    for a, b in zip(reused, fresh, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_numpy_ops_reuse_checks() -> None:
    with nb.using(backend="numpy", dtype="float64"):
        xp = nb.namespace()
        like = xp.zeros((2,))
        ops = ops_for(xp, like)
        shape = (_SCRATCH_MIN // 4, 4)
        a = np.empty(shape)
        assert ops.reuse(a, shape, a.dtype) is a
        b = a  # a second holder
        assert ops.reuse(a, shape, a.dtype) is None
        del b
        assert ops.reuse(a, shape, a.dtype) is a
        v = a[1:]
        assert ops.reuse(a, shape, a.dtype) is None
        del v
        assert ops.reuse(a, (shape[0] * 2, 2), a.dtype) is None  # another shape
        assert ops.reuse(a, shape, np.dtype(np.float32)) is None  # another dtype
        small = np.empty((4, 4))
        assert ops.reuse(small, (4, 4), small.dtype) is None  # below the size
        part = np.empty((shape[0] + 1, 4))[1:]  # owns no memory: a view of another array
        assert ops.reuse(part, shape, part.dtype) is None
        ro = np.empty(shape)
        ro.flags.writeable = False
        assert ops.reuse(ro, shape, ro.dtype) is None
        assert ops.reuse(a.T.copy().T, shape, a.dtype) is None  # not C-contiguous


def test_linear_and_relu_write_only_into_their_own_new_arrays(xp: Any, dtype: str) -> None:
    # Linear's forward adds the bias into the product, and ReLU's backward multiplies the
    # gradient into its 0/1 factors (one activation-sized array fewer each): the values are
    # those of ``x @ w + b`` and ``gy * factors`` bit for bit, and no input is written.
    rng = np.random.default_rng(3)
    x, w, b, gy = (
        rng.standard_normal(s).astype(dtype) for s in ((BATCH, 64), (64, 48), (48,), (BATCH, 48))
    )
    xa, wa, ba, gya = (xp.asarray(a.copy()) for a in (x, w, b, gy))
    y = nb.nn.functional.linear(nb.Tensor(xa), nb.Tensor(wa, requires_grad=True), ba)
    c = ops_for(xp, wa).compute_product(xa, 48)
    want = _host(c.narrow(c.widen(xp.asarray(x)) @ c.widen(xp.asarray(w)) + c.widen(xp.asarray(b))))
    np.testing.assert_array_equal(_host(y.data), want)
    slopes = (0.0, 0.2) if dtype != "float16" else ()  # float16 ReLU keeps or zeroes: no product
    relu = nb.nn.functional.leaky_relu
    for slope in slopes:
        # The sum's backward hands one gradient array to both ReLUs: neither may write it.
        t, u = nb.Tensor(y.data, requires_grad=True), nb.Tensor(-y.data, requires_grad=True)
        (relu(t, slope) + relu(u, slope)).backward(gya)
        for leaf, values in ((t, want), (u, -want)):
            factors = (values > 0).astype(dtype)
            if slope:
                factors = factors * np.dtype(dtype).type(1.0 - slope)
                factors = factors + np.dtype(dtype).type(slope)
            np.testing.assert_array_equal(_host(leaf.grad), gy * factors)
    for original, array in zip((x, w, b, gy), (xa, wa, ba, gya), strict=True):
        np.testing.assert_array_equal(_host(array), original)
