"""NumPy's BLAS axpy for the optimizers' ``p -= lr * g`` (backends/blas.py, issue 19).

Where NumPy's wheels ship scipy-openblas, SGD's update and Momentum's ``p -= lr * b`` on large
float32/float64 parameters are one BLAS axpy: rounded once (a fused multiply-add, as PyTorch's
``add_(alpha=)``), so within one ulp of ``p - lr * g``. Everything else (NumPy scalars, views,
aliasing, other byte orders, ``lr == 0``, read-only arrays) takes the ufuncs and NumPy's exact
values and errors."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim
from nnbackend.backends import blas
from nnbackend.backends.numpy import _SCRATCH_MIN
from nnbackend.namespace import ops_for

N = 3 * _SCRATCH_MIN + 17  # large enough for the axpy path, not a multiple of any vector


def _numpy_ops() -> Any:
    xp = nb.namespace("numpy")
    return ops_for(xp, xp.zeros(1))


def _ships_openblas() -> bool:
    config = np.show_config(mode="dicts")
    return bool(config["Build Dependencies"]["blas"]["name"] == "scipy-openblas")


@pytest.fixture
def axpy_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the axpy calls made while the test runs (skips where NumPy's BLAS has no
    axpy that blas.py knows)."""
    if not blas.axpy_kernels(np):
        pytest.skip("NumPy's BLAS is not scipy-openblas here: the ufuncs always run")
    calls: list[int] = []
    usable = blas.usable

    def counting(np_: Any, y: Any, a: Any, x: Any) -> Any:
        kernel = usable(np_, y, a, x)
        if kernel is None:
            return None

        def call(n: int, alpha: float, xa: int, ya: int) -> None:
            calls.append(n)
            kernel(n, alpha, xa, ya)

        return call

    monkeypatch.setattr(blas, "usable", counting)
    return calls


def test_numpys_own_openblas_is_found_where_its_wheels_ship_it() -> None:
    kernels = blas.axpy_kernels(np)
    if _ships_openblas():
        assert set(kernels) == {"f", "d"}
    else:
        assert kernels == {}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_update_is_rounded_once(dtype: Any, axpy_calls: list[int]) -> None:
    """Within an ulp of ``p - lr * g`` (no cancellation here: p in [1, 2), lr * g small),
    closer to the exact value than the two roundings of the ufuncs, and equal to the exact
    value rounded once almost everywhere."""
    rng = np.random.default_rng(1)
    p = rng.uniform(1.0, 2.0, N).astype(dtype)
    g = rng.standard_normal(N).astype(dtype)
    lr = 0.0372
    two_roundings = p - lr * g
    wide = np.longdouble if dtype == np.float64 else np.float64
    exact = p.astype(wide) - wide(dtype(lr)) * g.astype(wide)
    got = _numpy_ops().sub_scaled_(p, lr, g)
    assert got is p and axpy_calls == [N]
    np.testing.assert_array_max_ulp(got, two_roundings, maxulp=1)
    error, ufunc_error = np.abs(got - exact), np.abs(two_roundings - exact)
    assert np.all(error <= ufunc_error)
    if np.finfo(wide).nmant > np.finfo(dtype).nmant + 8:  # the reference is wide enough
        assert np.mean(got == exact.astype(dtype)) > 0.999


def test_nothing_past_the_array_is_written(axpy_calls: list[int]) -> None:
    rng = np.random.default_rng(2)
    buffer = rng.standard_normal(N + 40).astype(np.float32)
    before = buffer.copy()
    p, g = buffer[5 : N + 5], rng.standard_normal(N).astype(np.float32)
    _numpy_ops().sub_scaled_(p, 0.5, g)
    assert axpy_calls == [N]
    np.testing.assert_array_equal(buffer[:5], before[:5])
    np.testing.assert_array_equal(buffer[N + 5 :], before[N + 5 :])
    np.testing.assert_array_max_ulp(p, before[5 : N + 5] - np.float32(0.5) * g, maxulp=1)


def test_addresses_are_the_first_elements_writable_or_not() -> None:
    """blas.address reads a writable array's address through the buffer protocol and falls
    back to ``ctypes.data`` for a read-only one; both are the first element's."""
    base = np.arange(N + 7, dtype=np.float32)
    view = base[7:]  # an offset view: its address is not its base's
    assert blas.address(view) == view.ctypes.data == base.ctypes.data + 7 * 4
    view.flags.writeable = False
    assert blas.address(view) == view.ctypes.data


def test_a_read_only_gradient_still_takes_the_axpy(axpy_calls: list[int]) -> None:
    rng = np.random.default_rng(4)
    p = rng.uniform(1.0, 2.0, N).astype(np.float32)
    g = rng.standard_normal(N).astype(np.float32)
    g.flags.writeable = False
    want = p - np.float32(0.25) * g
    got = _numpy_ops().sub_scaled_(p, 0.25, g)
    assert got is p and axpy_calls == [N]
    np.testing.assert_array_max_ulp(got, want, maxulp=1)


def _cases(rng: np.random.Generator) -> list[tuple[str, Any, Any, Any]]:
    """(name, p, lr, g) that must take the ufuncs: NumPy's values, bit for bit."""
    p = rng.standard_normal((N // 7, 7))
    both = rng.standard_normal(N + 3)
    return [
        ("a transposed gradient", p, 0.1, np.ascontiguousarray(p.T).T),
        ("overlapping views", both[3:], 0.1, both[:-3]),
        ("a NumPy scalar rate", p.astype(np.float32), np.float64(0.1), p.astype(np.float32)),
        ("an int rate", p.copy(), 2, p.copy()),
        ("big-endian arrays", p.astype(">f8"), 0.1, p.astype(">f8")),
        ("another dtype", p.astype(np.float32), 0.1, p),
        ("float16", p.astype(np.float16), 0.1, p.astype(np.float16)),
        ("a rate past float32's range", p.astype(np.float32), 1e39, p.astype(np.float32)),
    ]


def test_anything_unusual_takes_numpys_ufuncs(axpy_calls: list[int]) -> None:
    ops = _numpy_ops()
    rng = np.random.default_rng(3)
    for name, p, lr, g in _cases(rng):
        with np.errstate(over="ignore"):
            want = p.copy()
            if p.dtype == np.float16:  # updated in float32, rounded once
                want = (p.astype(np.float32) - np.float32(lr) * g.astype(np.float32)).astype(
                    np.float16
                )
            else:
                want -= lr * g
            got = ops.sub_scaled_(p, lr, g)
        assert got.dtype == p.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert axpy_calls == []


def test_a_zero_rate_still_spreads_a_nan_gradient(axpy_calls: list[int]) -> None:
    """axpy returns early for ``a == 0``; NumPy computes ``p - 0 * nan``: NaN, which is what
    the user must see (a NaN gradient is a bug to find, not to hide)."""
    p = np.ones(N, np.float32)
    g = np.zeros(N, np.float32)
    g[7] = np.nan
    got = _numpy_ops().sub_scaled_(p, 0.0, g)
    assert np.isnan(got[7]) and np.all(np.delete(got, 7) == 1.0)
    assert axpy_calls == []


@pytest.mark.parametrize("rate", [1e-46, -1e-46, 5e-324])
def test_a_rate_that_rounds_to_zero_in_float32_still_spreads_a_nan_gradient(
    rate: float, axpy_calls: list[int]
) -> None:
    """A Python float that is nonzero but 0 as a float32 made saxpy return early: the NaN
    and inf of the gradient vanished where NumPy's ``p - rate * g`` gives NaN."""
    p = np.ones(N, np.float32)
    g = np.zeros(N, np.float32)
    g[3], g[5] = np.nan, np.inf
    with np.errstate(invalid="ignore"):
        want = p - np.float32(rate) * g
        got = _numpy_ops().sub_scaled_(p.copy(), rate, g)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[3]) and np.isnan(got[5])
    assert axpy_calls == []


def test_a_read_only_parameter_raises_numpys_error_and_is_unchanged(
    axpy_calls: list[int],
) -> None:
    p = np.ones(N)
    p.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _numpy_ops().sub_scaled_(p, 0.1, np.ones(N))
    assert np.all(p == 1.0) and axpy_calls == []


def test_a_rebinding_backend_gets_the_same_bits_in_a_new_array(
    axpy_calls: list[int], numpy_without_inplace_writes: Callable[[], None]
) -> None:
    rng = np.random.default_rng(4)
    p, g = rng.standard_normal(N), rng.standard_normal(N)
    in_place = _numpy_ops().sub_scaled_(p.copy(), 0.1, g)
    numpy_without_inplace_writes()
    ops = _numpy_ops()
    assert not ops.inplace
    original = p.copy()
    rebound = ops.sub_scaled_(p, 0.1, g)
    assert rebound is not p
    np.testing.assert_array_equal(p, original)
    np.testing.assert_array_equal(rebound, in_place)
    assert axpy_calls == [N, N]


def test_threads_updating_their_own_parameters_get_what_one_thread_gets(
    axpy_calls: list[int],
) -> None:
    """ctypes lets go of the GIL during the call: four threads at once, each its own
    arrays, the same bits as one after another."""
    rng = np.random.default_rng(5)
    pairs = [(rng.standard_normal(N), rng.standard_normal(N)) for _ in range(4)]
    ops = _numpy_ops()
    serial = [ops.sub_scaled_(p.copy(), 0.01, g) for p, g in pairs]
    copies = [p.copy() for p, _ in pairs]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(20):
                ops.sub_scaled_(copies[i], 0.01, pairs[i][1])
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, (_, g) in enumerate(pairs):
        want = serial[i]
        for _ in range(19):
            want = ops.sub_scaled_(want, 0.01, g)
        np.testing.assert_array_equal(copies[i], want)


@pytest.mark.parametrize("name", ["SGD", "Momentum"])
def test_sgd_and_momentum_take_the_axpy(name: str, axpy_calls: list[int]) -> None:
    """Their large parameters' ``p -= lr * g`` (Momentum: ``p -= lr * b``) is the axpy, the
    small ones the ufuncs; the result is the ufunc formula to within an ulp."""
    rng = np.random.default_rng(6)
    xp = nb.namespace("numpy", "float32")
    big = nn.Parameter(xp.asarray(rng.uniform(1.0, 2.0, (N // 3, 3)).astype(np.float32)))
    small = nn.Parameter(xp.asarray(rng.uniform(1.0, 2.0, 5).astype(np.float32)))
    opt = getattr(optim, name)([big, small], lr=0.01)
    want = np.array(big.data)
    buffer = np.zeros_like(want)
    for step in range(3):
        g = rng.standard_normal(want.shape).astype(np.float32)
        big.grad, small.grad = xp.asarray(g), xp.ones(5)
        opt.step()
        buffer = buffer * np.float32(0.9) + g if name == "Momentum" else g
        want = want - np.float32(0.01) * buffer
        np.testing.assert_array_max_ulp(np.array(big.data), want, maxulp=2 + step)
    assert axpy_calls == [N // 3 * 3] * 3


def test_without_a_known_blas_the_ufuncs_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blas, "axpy_kernels", lambda np_: {})
    rng = np.random.default_rng(7)
    p, g = rng.standard_normal(N), rng.standard_normal(N)
    want = p - 0.1 * g
    np.testing.assert_array_equal(_numpy_ops().sub_scaled_(p, 0.1, g), want)


def _fake_kernel(dtype: Any, scale: float = 1.0, extra: int = 0) -> blas.Axpy:
    """An axpy in NumPy over the addresses it is given: right by default, else scaling ``a``
    by ``scale`` or writing ``extra`` elements past the end (as a wrong integer width
    would)."""
    c_type = ctypes.c_float if dtype == np.float32 else ctypes.c_double

    def kernel(n: int, a: float, x: int, y: int) -> None:
        xs = np.ctypeslib.as_array((c_type * (n + extra)).from_address(x))
        ys = np.ctypeslib.as_array((c_type * (n + extra)).from_address(y))
        ys += dtype(a * scale) * xs

    return kernel


def test_a_kernel_that_fails_its_check_is_never_used() -> None:
    """The check on first use drops a kernel that computes something else or writes past
    its length, and one that raises; a right one is kept."""
    right = _fake_kernel(np.float32)

    def raises(n: int, a: float, x: int, y: int) -> None:
        raise OSError("no such symbol")

    for bad in (_fake_kernel(np.float64, scale=2.0), _fake_kernel(np.float64, extra=1), raises):
        assert blas._checked(np, {"f": right, "d": bad}) == {"f": right}
    both = {"f": right, "d": _fake_kernel(np.float64)}
    assert blas._checked(np, both) == both
