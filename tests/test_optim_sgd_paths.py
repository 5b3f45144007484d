"""Every path of ``SGD.step`` gives ``p - lr * g`` as NumPy's ufuncs compute it, or rounded
once where a fused multiply-add computes it (torch; NumPy's BLAS axpy for large arrays:
tests/test_blas_axpy.py). Issue #21: mutation testing of optim.py found the float16 block loop
and the scratch-buffer path, taken only by large parameters, checked by nothing. So: float16
parameters updated in float32 and rounded once, a block of rows at a time; large
float32/float64 parameters through a scratch buffer shared between parameters; a learning
rate changed between steps."""

from __future__ import annotations

import threading
import tracemalloc
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim, registry
from nnbackend.backends import numpy as numpy_ops
from nnbackend.backends.numpy import _CHUNK, _SCRATCH_MIN, _UPDATE_SCRATCH_MIN
from nnbackend.namespace import backend_for, ops_for


def _host(a: Any) -> np.ndarray:
    a = getattr(a, "data", a)
    return np.array(registry.get(registry.backend_of(a)).to_host(a), copy=True)


# Shapes that take every path: a 0-d and a small parameter, a mid-sized one (its a * x in the
# scratch buffer), one above the scratch threshold, and one of several float16 row blocks
# (more rows than fit one _CHUNK).
SHAPES = [
    (),
    (3, 2),
    (_UPDATE_SCRATCH_MIN // 10 + 1, 10),
    (_SCRATCH_MIN // 8 + 3, 8),
    (2 * _CHUNK // 300 + 7, 300),
]


def test_every_sgd_path_matches_numpy(xp: Any, dtype: str) -> None:
    rng = np.random.default_rng(0)
    np_dtype = np.dtype(dtype)
    values = [rng.standard_normal(s).astype(np_dtype) for s in SHAPES]
    params = [nn.Parameter(xp.asarray(v.copy())) for v in values]  # updated in place
    opt = optim.SGD(params, lr=0.1)
    for lr in (0.1, 0.03, 0.25):  # changed between steps: never a stale lr * g
        opt.lr = lr
        grads = [rng.standard_normal(s).astype(np_dtype) for s in SHAPES]
        for p, g in zip(params, grads, strict=True):
            p.grad = xp.asarray(g)
        opt.step()
        for i, (v, g) in enumerate(zip(values, grads, strict=True)):
            data = params[i].data
            wide = ops_for(backend_for(data)[0], data).compute_dtype(data.dtype, data)
            if np_dtype == np.float16 and wide != data.dtype:  # in float32, rounded once
                want = v.astype(np.float32) - np.float32(lr) * g.astype(np.float32)
                want = want.astype(np.float16)
            else:  # in the dtype itself (float16 where the backend computes it natively)
                want = v - np_dtype.type(lr) * g
            got = _host(params[i])
            assert got.dtype == np_dtype and got.shape == v.shape
            eps = float(np.finfo(np_dtype).eps)
            # Bitwise where the backend rounds as NumPy's ufuncs do. A fused multiply-add
            # (torch's add_, NumPy's BLAS axpy for large arrays) skips the rounding of lr * g:
            # within eps of it, plus one rounding of the result.
            slack = eps * np.abs(np_dtype.type(lr) * g.astype(want.dtype)) + eps * np.abs(want)
            assert np.all(np.abs(got - want) <= slack + eps * 1e-3), str(i)
            values[i] = got
    assert opt.steps == 3


def test_a_parameter_without_gradient_is_left_alone(xp: Any) -> None:
    a = nn.Parameter(xp.asarray(np.ones(_SCRATCH_MIN + 1)))
    b = nn.Parameter(xp.asarray(np.ones(_SCRATCH_MIN + 1)))
    opt = optim.SGD([a, b], lr=0.5)
    a.grad = xp.asarray(np.full(_SCRATCH_MIN + 1, 2.0))
    opt.step()
    assert np.all(_host(a) == 0.0) and np.all(_host(b) == 1.0)
    b.grad, a.grad = xp.asarray(np.full(_SCRATCH_MIN + 1, 4.0)), None
    opt.step()  # b now uses the scratch buffer a used: a's values must not leak into it
    assert np.all(_host(a) == 0.0) and np.all(_host(b) == -1.0)


def _numpy_ops() -> Any:
    xp = nb.namespace("numpy")
    return ops_for(xp, xp.zeros(1))


@pytest.fixture(params=["own block", "start of the scratch buffer"])
def block_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Either kind of block for the test's arrays: a block of its own from 1 KiB (it starts
    at 32 MiB), or the start of the gradient-sized scratch buffer (below that size)."""
    if request.param == "own block":
        monkeypatch.setattr(numpy_ops, "_OWN_BLOCK_MIN_BYTES", 1024)
    return str(request.param)


@pytest.mark.usefixtures("ufunc_updates")
def test_blocked_sgd_update_equals_the_formula_bit_for_bit(block_kind: str) -> None:
    """Large C-contiguous parameters are updated a cache-sized block at a time (NumPy): the
    same two ufuncs on every element, so the same bits as ``p - lr * g``, across the blocks'
    edges and the short last block; a transposed view, another dtype and aliasing arrays
    take the whole-array path, with the same values."""
    ops = _numpy_ops()
    rng = np.random.default_rng(5)
    n = 2 * _CHUNK + 1829  # two full blocks and a short one
    for dtype in (np.float32, np.float64):
        p = rng.standard_normal((n // 7 + 1, 7)).astype(dtype)
        g = rng.standard_normal(p.shape).astype(dtype)
        for lr in (0.1, np.float32(0.03)):
            want = p - lr * g
            assert ops.sub_scaled_(p, lr, g) is p
            np.testing.assert_array_equal(p, want)
    p = rng.standard_normal((400, 300))
    g = rng.standard_normal((300, 400)).T  # not C-contiguous
    want = p - 0.2 * g
    np.testing.assert_array_equal(ops.sub_scaled_(p, 0.2, g), want)
    p32, g64 = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n)
    want32 = p32.copy()
    want32 -= 0.2 * g64  # a float64 gradient into a float32 parameter: NumPy's same_kind cast
    np.testing.assert_array_equal(ops.sub_scaled_(p32, 0.2, g64), want32)
    both = rng.standard_normal(n + 3)
    y, x = both[3:], both[:-3]  # overlapping views: the blocks must not see their own writes
    want = y - 0.2 * x
    np.testing.assert_array_equal(ops.sub_scaled_(y, 0.2, x), want)


@pytest.mark.usefixtures("ufunc_updates")
def test_a_large_sgd_step_keeps_no_parameter_sized_scratch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From 32 MiB (here from 1 KiB) the blocked update keeps one block of scratch per dtype
    and thread, never an array of the parameter's size (a 4096x4096 float32 layer kept 64
    MiB). Run in a new thread, whose scratch buffers start empty."""
    monkeypatch.setattr(numpy_ops, "_OWN_BLOCK_MIN_BYTES", 1024)
    ops = _numpy_ops()
    rng = np.random.default_rng(6)
    p = rng.standard_normal((1024, 513))
    g = rng.standard_normal(p.shape)
    kept: list[int] = []

    def first_step() -> None:
        before = tracemalloc.get_traced_memory()[0]
        ops.sub_scaled_(p, 0.1, g)
        kept.append(tracemalloc.get_traced_memory()[0] - before)

    tracemalloc.start()
    try:
        worker = threading.Thread(target=first_step)
        worker.start()
        worker.join()
    finally:
        tracemalloc.stop()
    assert kept and kept[0] <= _CHUNK * 8 + 4096, f"{kept} bytes kept after a step"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_mid_sized_sgd_update_makes_no_temporary(dtype: str) -> None:
    """A 1024 x 10 parameter's update made ``a * x`` a new 80 KiB array every step (float64):
    freed at the top of the heap, glibc now and then handed its pages back, and the next step
    took 18-20 page faults (the medium float64 MLP's last layer). From
    ``_UPDATE_SCRATCH_MIN`` elements it goes to the scratch buffer, with the same bits."""
    ops = _numpy_ops()
    rng = np.random.default_rng(7)
    p = rng.standard_normal((1024, 10)).astype(dtype)
    g = rng.standard_normal(p.shape).astype(dtype)
    want = p - 0.1 * g
    ops.sub_scaled_(p, 0.1, g)  # (the first call may make the scratch buffer)
    np.testing.assert_array_equal(p, want)
    want = p - 0.03 * g
    tracemalloc.start()
    try:
        ops.sub_scaled_(p, 0.03, g)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(p, want)
    assert peak < g.nbytes // 4, f"{peak} bytes allocated by an update of {g.nbytes} bytes"


def test_small_updates_by_a_kept_rate_array_equal_the_python_float_formula() -> None:
    """Below the scratch size, ``sub_scaled_`` multiplies by the rate kept as a 0-d array of
    the gradient's dtype (NumPy 2 converts a Python float operand on every call). Its values
    are those of ``y - a * x`` with the Python float, whatever the order of rates and dtypes:
    a rate changed between calls, the same rate in another dtype, a NumPy scalar rate (not
    weak: it computes in its own dtype, as before) and a rate that leaves the array alone."""
    ops = ops_for(nb.namespace("numpy"), np.zeros(1))
    rng = np.random.default_rng(3)
    cases = [
        (0.1, "float32"),
        (0.1, "float32"),
        (0.3, "float32"),
        (0.3, "float64"),
        (0.1, "float32"),
        (np.float64(0.1), "float32"),
        (0.0, "float64"),
        (1e-30, "float32"),
    ]
    for rate, dtype in cases:
        y, x = (rng.standard_normal((5, 4)).astype(dtype) for _ in range(2))
        expected = y.copy()
        expected -= rate * x
        got = ops.sub_scaled_(y, rate, x)
        assert got is y and got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("n", [3, 256, 1000, 40_000])
@pytest.mark.parametrize("grad_dtype", ["float32", "float64"])
def test_a_float16_parameter_with_a_wider_gradient_set_by_hand(n: int, grad_dtype: str) -> None:
    """A float32 gradient set by hand on a float16 parameter went down the float16 paths,
    which read its bytes as float16: twice the elements, written past the end of a buffer
    (garbage, NaN, then a crash). It gets what NumPy's ``p -= lr * g`` gives."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal(n).astype(np.float16)
    grad = rng.standard_normal(n).astype(grad_dtype)
    p = nn.Parameter(data.copy())
    p.grad = grad
    optim.SGD([p], lr=0.1).step()
    want = data.copy()
    want -= 0.1 * grad
    np.testing.assert_array_equal(_host(p), want)


def test_float16_to_float32_converts_what_is_not_float16_by_value() -> None:
    """The conversion reads float16 bits: given another dtype it converts by value instead
    of reading twice (or four times) as many elements."""
    convert = numpy_ops.kernels()["float16_to_float32"]
    x = np.arange(1000, dtype=np.float32) / 7
    np.testing.assert_array_equal(convert(x), x)
    out = np.empty(1000, np.float32)
    assert convert(x.astype(np.float64), out=out) is out
    np.testing.assert_array_equal(out, x)


def test_float16_sgd_with_a_gradient_overlapping_the_parameter() -> None:
    """The float16 path updated a block of rows at a time, reading the gradient block by
    block: a gradient that is the parameter reversed read rows already updated."""
    n = 2 * _CHUNK + 17
    data = np.random.default_rng(1).standard_normal(n).astype(np.float16)
    p = nn.Parameter(data.copy())
    p.grad = p.data[::-1]
    optim.SGD([p], lr=0.25).step()
    want = (data.astype(np.float32) - np.float32(0.25) * data[::-1].astype(np.float32)).astype(
        np.float16
    )
    np.testing.assert_array_equal(_host(p), want)


@pytest.mark.parametrize("n", [300, _SCRATCH_MIN])
@pytest.mark.parametrize("grad_dtype", ["int32", "bool"])
def test_sgd_with_an_integer_or_boolean_gradient_set_by_hand(n: int, grad_dtype: str) -> None:
    """The cached 0-d rate took the gradient's dtype: an int32 gradient's rate 0.5 became 0
    (no update), a boolean's became 1; from the scratch size up the scratch buffer took the
    integer dtype and the multiply raised. NumPy's ``p -= lr * g`` is what comes out."""
    p = nn.Parameter(np.zeros(n, np.float32))
    p.grad = np.ones(n, dtype=grad_dtype)
    optim.SGD([p], lr=0.5).step()
    np.testing.assert_array_equal(_host(p), np.full(n, -0.5, np.float32))


def test_the_float16_update_kernel_refuses_a_wider_parameter() -> None:
    """Called with a float32 ``y`` (through Ops.kernel), the compiled loop read ``x`` past
    its end: y's bytes seen as float16 are twice as many elements."""
    kernel = numpy_ops.kernels()["float16_sub_scaled"]
    y = np.zeros(4096, np.float32)
    assert kernel(y, 0.5, np.ones(4096, np.float16)) is False
    assert not y.any()


@pytest.mark.parametrize("name", ["adam", "momentum", "rmsprop", "adagrad"])
@pytest.mark.parametrize("n", [3, 255, 256, 4096])
def test_float16_rules_run_in_float32_at_every_size(name: str, n: int) -> None:
    """Below 256 elements the rules ran in float16 arithmetic (Adam's (1 - b2) g^2
    underflowed: a bias took steps 13 times too large), and the choice followed the
    gradient's dtype, not the parameter's. A float16 parameter now matches the same rule
    run in float32 on a float32 copy, rounded once, at every size."""
    tiny = 2.0**-14  # float16's smallest normal: the eps floor of a float16 parameter
    make = {
        "adam": lambda p: optim.Adam(p, lr=1e-3, eps=tiny),
        "momentum": lambda p: optim.Momentum(p, lr=0.1),
        "rmsprop": lambda p: optim.RMSprop(p, lr=1e-3, eps=tiny),
        "adagrad": lambda p: optim.AdaGrad(p, lr=0.1, eps=tiny),
    }[name]
    rng = np.random.default_rng(0)
    start = rng.standard_normal(n).astype(np.float16)
    grads = [(rng.standard_normal(n) * 1e-3).astype(np.float16) for _ in range(3)]
    half = nn.Parameter(start.copy())
    wide = nn.Parameter(start.astype(np.float32))
    opt_half, opt_wide = make([half]), make([wide])
    for g in grads:
        half.grad, wide.grad = g.copy(), g.astype(np.float32)
        opt_half.step()
        opt_wide.step()
        # the float32 run rounded as the float16 one stores: parameter and state
        wide.data[...] = wide.data.astype(np.float16).astype(np.float32)
        for st in opt_wide.state:
            for v in st.values():
                if hasattr(v, "dtype"):
                    v[...] = v.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(_host(half), wide.data.astype(np.float16))


def test_a_float16_gradient_does_not_round_a_float32_parameter() -> None:
    """The rule was run wide and narrowed by the gradient's dtype: a float32 parameter was
    stored at float16 precision."""
    start = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    g = (np.random.default_rng(2).standard_normal(1000) * 1e-2).astype(np.float16)
    p = nn.Parameter(start.copy())
    ref = nn.Parameter(start.copy())
    p.grad, ref.grad = g, g.astype(np.float32)
    optim.Adam([p], lr=1e-3).step()
    optim.Adam([ref], lr=1e-3).step()
    np.testing.assert_array_equal(_host(p), _host(ref))
