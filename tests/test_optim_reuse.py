"""The optimizers' rules without parameter-sized temporaries (issue 19, 2026-12-01 (2)).

Momentum, Nesterov, AdaGrad, RMSprop and the Adam family are written with the ops' update
primitives (``add_scaled_``, ``sub_scaled_ratio_``, ...); NumPy computes their temporaries in
scratch buffers kept across steps. The results are those of the rules' plain formulas bit for
bit (the reference below, written out with host NumPy), on every backend (NumPy's ufunc paths:
its BLAS axpy is tested in tests/test_blas_axpy.py), and a steady-state
NumPy step on a large parameter allocates nothing of the parameter's size."""

from __future__ import annotations

import dataclasses
import math
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim, registry
from nnbackend.backends import numpy as numpy_ops
from nnbackend.backends.numpy import _CHUNK, _SCRATCH_MIN
from nnbackend.namespace import backend_for, ops_for

# The scratch-buffer paths, bit for bit: NumPy's BLAS axpy (Momentum's ``p -= lr * b``,
# rounded once) is tested in tests/test_blas_axpy.py.
pytestmark = pytest.mark.usefixtures("ufunc_updates")

# A 0-d, a small and two large parameters (the large ones take NumPy's scratch buffers; the
# last one three cache-sized blocks, the third of them short).
SHAPES = [(), (3, 2), (_SCRATCH_MIN // 8 + 3, 8), (2 * _CHUNK // 8 + 229, 8)]
LRS = (0.1, 0.03, 0.2)  # changed between steps


def _host(a: Any) -> np.ndarray:
    return np.array(registry.get(registry.backend_of(a)).to_host(a), copy=True)


# The rules' formulas as they read, out of place, on the backend's own arrays (torch's sqrt
# and division may round differently from NumPy's), Python floats for the hyperparameters as
# the optimizers hold them: (p, g, state dict, lr, xp) -> new p, the state dict updated.
def _momentum(
    p: Any, g: Any, st: dict[str, Any], lr: float, xp: Any, nesterov: bool = False
) -> Any:
    mu = 0.9
    b = st["b"] = st.get("b", xp.zeros_like(p)) * mu + g
    return p - lr * (g + mu * b) if nesterov else p - lr * b


def _adagrad(p: Any, g: Any, st: dict[str, Any], lr: float, xp: Any) -> Any:
    h = st["h"] = st.get("h", xp.zeros_like(p)) + g * g
    return p - lr * g / (xp.sqrt(h) + 1e-10)


def _rmsprop(p: Any, g: Any, st: dict[str, Any], lr: float, xp: Any) -> Any:
    a = 0.99
    h = st["h"] = st.get("h", xp.zeros_like(p)) * a + (1.0 - a) * (g * g)
    return p - lr * g / (xp.sqrt(h) + 1e-8)


def _adam(
    p: Any,
    g: Any,
    st: dict[str, Any],
    lr: float,
    xp: Any,
    wd: float = 0.0,
    decoupled: bool = False,
) -> Any:
    b1, b2 = 0.9, 0.999
    t = st["t"] = st.get("t", 0) + 1
    step_size = lr / (1.0 - b1**t)
    inv = 1.0 / math.sqrt(1.0 - b2**t)
    if wd and decoupled:
        p = p * (1.0 - lr * wd)
    elif wd:
        g = g + wd * p
    m = st["m"] = st.get("m", xp.zeros_like(p)) * b1 + (1.0 - b1) * g
    v = st["v"] = st.get("v", xp.zeros_like(p)) * b2 + (1.0 - b2) * (g * g)
    return p - step_size * m / (xp.sqrt(v) * inv + 1e-8)


def _book_adam(p: Any, g: Any, st: dict[str, Any], lr: float, xp: Any, wd: float = 0.0) -> Any:
    b1, b2 = 0.9, 0.999
    t = st["t"] = st.get("t", 0) + 1
    lr_t = lr * math.sqrt(1.0 - b2**t) / (1.0 - b1**t)
    if wd:
        g = g + wd * p
    m = st.get("m", xp.zeros_like(p))
    m = st["m"] = m + (1.0 - b1) * (g - m)
    v = st.get("v", xp.zeros_like(p))
    v = st["v"] = v + (1.0 - b2) * (g * g - v)
    return p - lr_t * m / (xp.sqrt(v) + 1e-7)


CASES: dict[str, tuple[Callable[[list[Any]], optim.Optimizer], Callable[..., Any]]] = {
    "momentum": (lambda ps: optim.Momentum(ps, lr=0.1), _momentum),
    "nesterov": (
        lambda ps: optim.Nesterov(ps, lr=0.1),
        lambda p, g, st, lr, xp: _momentum(p, g, st, lr, xp, nesterov=True),
    ),
    "adagrad": (lambda ps: optim.AdaGrad(ps, lr=0.1), _adagrad),
    "rmsprop": (lambda ps: optim.RMSprop(ps, lr=0.1), _rmsprop),
    "adam": (lambda ps: optim.Adam(ps, lr=0.1), _adam),
    "adam_l2": (
        lambda ps: optim.Adam(ps, lr=0.1, weight_decay=0.05),
        lambda p, g, st, lr, xp: _adam(p, g, st, lr, xp, wd=0.05),
    ),
    "adamw": (
        lambda ps: optim.AdamW(ps, lr=0.1, weight_decay=0.05),
        lambda p, g, st, lr, xp: _adam(p, g, st, lr, xp, wd=0.05, decoupled=True),
    ),
    "book_adam": (lambda ps: optim.BookAdam(ps, lr=0.1), _book_adam),
    "book_adam_l2": (
        lambda ps: optim.BookAdam(ps, lr=0.1, weight_decay=0.05),
        lambda p, g, st, lr, xp: _book_adam(p, g, st, lr, xp, wd=0.05),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rules_equal_their_formulas_bit_for_bit(xp: Any, dtype: str, case: str) -> None:
    if dtype == "float16":
        pytest.skip("float16 is updated in float32 by apply_update: tests/test_optim.py")
    make, reference = CASES[case]
    rng = np.random.default_rng(1)
    values = [xp.asarray(rng.standard_normal(s).astype(dtype)) for s in SHAPES]
    params = [nn.Parameter(xp.asarray(_host(v))) for v in values]  # copies
    opt = make(params)
    states: list[dict[str, Any]] = [{} for _ in SHAPES]
    for lr in LRS:
        opt.lr = lr
        grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        for p, g in zip(params, grads, strict=True):
            p.grad = xp.asarray(g)
        opt.step()
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            before = _host(values[i])
            values[i] = reference(values[i], xp.asarray(g), states[i], lr, xp)
            assert values[i].dtype == p.data.dtype
            np.testing.assert_array_equal(_host(p.grad), g)  # the gradient is never written
            if case == "momentum" and backend_for(p.data)[1].name == "cupy":
                # CuPy's fused kernel is one fused multiply-add: one rounding where the
                # formula rounds twice, so they differ by up to an ulp of the operands (many
                # ulps of a result that cancels; tests/test_cupy_backend.py checks the kernel)
                want, got = _host(values[i]), _host(p.data)
                top = np.maximum.reduce([np.abs(before), np.abs(before - want), np.abs(want)])
                tol = np.spacing(np.maximum(top, np.abs(got)).astype(dtype))
                assert np.all(np.abs(got - want) <= tol), f"{case} {i}"
                values[i] = xp.asarray(_host(p.data))  # go on from the kernel's values
                continue
            np.testing.assert_array_equal(_host(p.data), _host(values[i]), err_msg=f"{case} {i}")


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_a_steady_state_step_allocates_no_parameter_sized_array(case: str, dtype_name: str) -> None:
    with nb.using(backend="numpy", dtype=dtype_name):
        xp = nb.namespace()
        rng = np.random.default_rng(2)
        shape = (512, 128)
        p = nn.Parameter(xp.asarray(rng.standard_normal(shape).astype(dtype_name)))
        p.grad = xp.asarray(rng.standard_normal(shape).astype(dtype_name))
        opt = CASES[case][0]([p])
        opt.step()  # the first step makes the state and the scratch buffers
        data, state = p.data, dict(opt.state[0])
        nbytes = p.data.nbytes
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            opt.step()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak - before < nbytes // 8, f"{case}: {peak - before} bytes during a step"
        assert p.data is data
        for name in opt.state_names:
            assert opt.state[0][name] is state[name]  # updated in place, never rebound


# Each primitive against its formula on NumPy, small (generic path) and large (scratch path):
# (call, formula, the arrays it may write: the first argument only).
def _primitive_cases(ops: Any, a: Any, b: Any, c: Any) -> list[tuple[str, Any, Any]]:
    h = np.abs(c)
    return [
        ("add_scaled_", lambda: ops.add_scaled_(a, 0.3, b), lambda: a + 0.3 * b),
        (
            "add_scaled_square_",
            lambda: ops.add_scaled_square_(a, 0.3, b),
            lambda: a + 0.3 * (b * b),
        ),
        ("add_scaled_square_ None", lambda: ops.add_scaled_square_(a, None, b), lambda: a + b * b),
        ("add_scaled_diff_", lambda: ops.add_scaled_diff_(a, 0.1, b), lambda: a + 0.1 * (b - a)),
        (
            "add_scaled_diff_ square",
            lambda: ops.add_scaled_diff_(a, 0.1, b, square=True),
            lambda: a + 0.1 * (b * b - a),
        ),
        ("sub_times_", lambda: ops.sub_times_(a, 0.3, b), lambda: a - 0.3 * b),
        (
            "sub_scaled_sum_",
            lambda: ops.sub_scaled_sum_(a, 0.3, b, 0.9, c),
            lambda: a - 0.3 * (b + 0.9 * c),
        ),
        (
            "sub_scaled_ratio_",
            lambda: ops.sub_scaled_ratio_(a, 0.3, b, h, 1.7, 1e-8),
            lambda: a - 0.3 * b / (np.sqrt(h) * 1.7 + 1e-8),
        ),
        (
            "sub_scaled_ratio_ None",
            lambda: ops.sub_scaled_ratio_(a, 0.3, b, h, None, 1e-8),
            lambda: a - 0.3 * b / (np.sqrt(h) + 1e-8),
        ),
        ("scaled_sum", lambda: ops.scaled_sum(b, 0.3, c), lambda: b + 0.3 * c),
    ]


@pytest.mark.parametrize("inplace", [True, False])
@pytest.mark.parametrize(
    ("shape", "own_blocks"),
    [
        ((3, 2), False),
        ((_SCRATCH_MIN // 8 + 3, 8), False),
        ((2 * _CHUNK // 8 + 229, 8), False),  # blocks at the start of the scratch buffers
        ((2 * _CHUNK // 8 + 229, 8), True),  # blocks of their own (from 32 MiB; here 1 KiB)
    ],
)
def test_each_primitive_is_its_formula_in_place_or_rebound(
    inplace: bool, shape: tuple[int, ...], own_blocks: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if own_blocks:
        monkeypatch.setattr(numpy_ops, "_OWN_BLOCK_MIN_BYTES", 1024)
    record = registry.get("numpy")
    if not inplace:  # the record forbids writes: every primitive returns a new array
        registry.register_backend(
            dataclasses.replace(
                record, capabilities=dataclasses.replace(record.capabilities, inplace=False)
            ),
            replace=True,
        )
    try:
        xp = nb.namespace("numpy")
        ops = ops_for(xp, xp.zeros(1))
        assert ops.inplace is inplace
        rng = np.random.default_rng(4)
        originals = [rng.standard_normal(shape) for _ in range(3)]
        count = len(_primitive_cases(ops, *originals))
        for i in range(count):
            a, b, c = (o.copy() for o in originals)
            name, call, formula = _primitive_cases(ops, a, b, c)[i]
            want = formula()
            got = call()
            np.testing.assert_array_equal(got, want, err_msg=name)
            # Only the updated array (the first argument) is written, and only in place.
            writes_a = inplace and name != "scaled_sum"
            assert (got is a) is writes_a, name
            np.testing.assert_array_equal(b, originals[1], err_msg=name)
            np.testing.assert_array_equal(c, originals[2], err_msg=name)
            if not writes_a:
                np.testing.assert_array_equal(a, originals[0], err_msg=name)
    finally:
        registry.register_backend(record, replace=True)


def _train_alone(name: str, seed: int, out: dict[int, Any]) -> None:
    rng = np.random.default_rng(seed)
    xp = nb.namespace("numpy", "float64")
    p = nn.Parameter(xp.asarray(rng.normal(size=(512, 512))))
    opt = getattr(optim, name)([p], lr=0.01)
    grads = [rng.normal(size=(512, 512)) for _ in range(3)]
    for step in range(40):
        p.grad = grads[step % 3].copy()
        opt.step()
    out[seed] = p.data.copy()


@pytest.mark.parametrize("name", ["SGD", "Momentum", "Nesterov", "RMSprop", "Adam", "AdamW"])
def test_models_trained_in_threads_equal_those_trained_one_after_another(name: str) -> None:
    """NumPy lets go of the GIL inside a large ufunc: scratch buffers shared between threads
    would take another thread's temporary between a rule's two calls (before they were kept
    per thread, SGD's parameters were 0.4 off after 60 steps of two threads, Adam's NaN)."""
    import threading

    alone: dict[int, Any] = {}
    for seed in range(3):
        _train_alone(name, seed, alone)
    together: dict[int, Any] = {}
    threads = [threading.Thread(target=_train_alone, args=(name, s, together)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed in range(3):
        np.testing.assert_array_equal(together[seed], alone[seed])
