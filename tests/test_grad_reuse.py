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
import pytest

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


# Convolution, Embedding and the recurrent layers write their weight gradients into the
# spare too (2026-12-01 (2)): each weight below has at least _SCRATCH_MIN elements.
LAYERS: dict[str, tuple[Any, tuple[int, ...]]] = {
    "conv": (lambda: nn.Conv2d(32, 128, 3), (2, 32, 5, 5)),
    "conv_groups": (lambda: nn.Conv2d(64, 128, 3, groups=2), (2, 64, 5, 5)),
    "conv_transpose": (lambda: nn.ConvTranspose2d(128, 32, 3), (2, 128, 3, 3)),
    "embedding": (lambda: nn.Embedding(1000, 40), (4, 6)),
    "rnn": (lambda: nn.RNN(200, 200), (2, 3, 200)),
    "lstm": (lambda: nn.LSTM(100, 100), (2, 3, 100)),
    "gru": (lambda: nn.GRU(110, 110), (2, 3, 110)),
}


def _big_weights(module: nn.Module) -> list[Any]:
    return [p for p in module.parameters() if p.size >= _SCRATCH_MIN]


def _layer(xp: Any, dtype: str, name: str) -> nn.Module:
    rng = np.random.default_rng(5)
    module = LAYERS[name][0]()
    for p in module.parameters():
        p.data = xp.asarray((0.1 * rng.standard_normal(tuple(p.shape))).astype(dtype))
    assert len(_big_weights(module)) == (2 if name in ("rnn", "lstm", "gru") else 1)
    return module


def _layer_backward(module: nn.Module, xp: Any, dtype: str, name: str, k: int) -> None:
    rng = np.random.default_rng(200 + k)
    shape = LAYERS[name][1]
    if name == "embedding":  # repeated rows: their gradients add up in the scatter
        x = xp.asarray(rng.integers(0, 50, shape))
    else:
        x = xp.asarray(rng.standard_normal(shape).astype(dtype))
    out = module(x)
    y = out[0] if isinstance(out, tuple) else out
    target = xp.asarray(rng.standard_normal(tuple(y.shape)).astype(dtype))
    nn.MSELoss()(y, target).backward()


LAYER_NAMES = sorted(LAYERS)


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_layer_weight_gradients_are_reused_across_steps(name: str) -> None:
    with nb.using(backend="numpy", dtype="float32"):
        xp = nb.namespace()
        module = _layer(xp, "float32", name)
        opt = optim.SGD(module.parameters(), lr=0.01)
        refs: list[list[Any]] = []
        for k in range(3):
            opt.zero_grad()
            _layer_backward(module, xp, "float32", name, k)
            refs.append([weakref.ref(p.grad) for p in _big_weights(module)])
            opt.step()
        for step in refs[1:]:
            for first, later in zip(refs[0], step, strict=True):
                assert later() is first() is not None


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_a_layer_gradient_the_user_kept_is_never_written_into(xp64: Any, name: str) -> None:
    module = _layer(xp64, "float64", name)
    opt = optim.SGD(module.parameters(), lr=0.01)
    kept = []
    for k in range(3):
        opt.zero_grad()
        _layer_backward(module, xp64, "float64", name, k)
        kept += [(p.grad, _host(p.grad)) for p in _big_weights(module)]
        opt.step()
    for g, values in kept:
        np.testing.assert_array_equal(_host(g), values)


def _train_layer(xp: Any, dtype: str, name: str, reuse: bool, steps: int = 3) -> list[Any]:
    module = _layer(xp, dtype, name)
    opt = optim.SGD(module.parameters(), lr=0.01)
    params = list(module.parameters())
    for k in range(steps):
        if reuse:
            opt.zero_grad()
        else:
            for p in params:
                p.grad = None
        _layer_backward(module, xp, dtype, name, k)
        if k == steps - 1:  # accumulation over two backward calls, into a reused array
            _layer_backward(module, xp, dtype, name, k + 1)
        opt.step()
    return [_host(p.data) for p in params] + [_host(p.grad) for p in params]


@pytest.mark.jax_rotate("name")
@pytest.mark.parametrize("name", LAYER_NAMES)
def test_layer_results_are_bit_equal_with_and_without_reuse(xp: Any, dtype: str, name: str) -> None:
    reused = _train_layer(xp, dtype, name, reuse=True)
    fresh = _train_layer(xp, dtype, name, reuse=False)
    # CuPy's scatter-add (cupyx.scatter_add: atomic adds) sums repeated indices in whatever
    # order the threads reach them, so two runs of a scatter-based layer differ in their
    # last bits with or without reuse; everywhere else the results are bit-equal.
    atomic = _backend(xp) == "cupy" and name in ("embedding", "conv_transpose")
    for a, b in zip(reused, fresh, strict=True):
        assert a.dtype == b.dtype
        if atomic:
            tol = {"float16": 1e-2, "float32": 1e-5, "float64": 1e-12}[str(a.dtype)]
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
        else:
            np.testing.assert_array_equal(a, b)


def _backend(xp: Any) -> str:
    from nnbackend.namespace import backend_for

    return backend_for(xp.zeros(1))[1].name


def test_reference_probes_under_a_tracer_that_reads_locals(run_python: Any) -> None:
    """The reference-count baselines, measured while a debugger-style tracer read
    ``frame.f_locals`` (it keeps a reference to every local it saw), came out one too high:
    after the tracer went, arrays the user held were written into."""
    result = run_python(
        """
        import sys
        import numpy as np

        def tracer(frame, event, arg):
            frame.f_locals
            return tracer

        # NumPy's numpy.typing fails to import under such a tracer on Python 3.12 (a
        # module-level comprehension over globals()): imported first. nnbackend's own
        # modules import under it (tests/test_module_scope.py).
        import numpy.typing, array_api_compat.numpy
        sys.settrace(tracer)
        import nnbackend as nb
        from nnbackend import nn, optim

        rng = np.random.default_rng(0)
        model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
        opt = optim.SGD(model.parameters(), lr=0.1)
        loss_fn = nn.SoftmaxCrossEntropy()

        def step(kept):
            x, t = rng.standard_normal((256, 256)), rng.integers(0, 10, 256)
            opt.zero_grad()
            h = model[1](model[0](x))
            loss_fn(model[2](h), t).backward()
            kept.append((model[0].weight.grad, model[0].weight.grad.copy()))
            kept.append((h.data, h.data.copy()))
            opt.step()

        step([])
        sys.settrace(None)
        kept = []
        for _ in range(3):
            step(kept)
        print(sum(not np.array_equal(a, b) for a, b in kept))
        """
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["0"]
