"""The ops' sigmoid, per-row reductions and one-hot labels (the softmax losses' kernels), on
every backend: the same values as the plain formulas, and labels out of range refused
whatever path a backend takes (NumPy leaves the check to the loss: a NaN one-hot row)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend.errors import DtypeError, LabelError
from nnbackend.namespace import backend_for, ops_for
from nnbackend.nn import functional as F

SHAPES = [(30, 3), (2, 2), (5, 1), (256, 10), (30, 16), (8, 300), (1, 7)]


def _ops(xp: Any) -> Any:
    a = xp.zeros((1,), dtype=xp.float32)
    return ops_for(backend_for(a)[0], a)


def _host(ops: Any, a: Any) -> Any:
    return np.asarray(ops.host_copy(a))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_row_max_is_each_rows_maximum(xp: Any, shape: tuple[int, int], dtype: str) -> None:
    ops = _ops(xp)
    values = np.random.default_rng(sum(shape)).normal(size=shape).astype(dtype)
    values[0, -1] = 7.5  # the maximum in the last column of one row
    got = ops.row_max(xp.asarray(values))
    assert tuple(got.shape) == (shape[0], 1)
    np.testing.assert_array_equal(_host(ops, got), values.max(axis=1, keepdims=True))


def test_row_max_propagates_nan(xp: Any) -> None:
    ops = _ops(xp)
    values = np.zeros((64, 3), np.float32)
    values[5, 1] = np.nan
    got = _host(ops, ops.row_max(xp.asarray(values)))
    assert np.isnan(got[5, 0])
    assert not np.isnan(np.delete(got, 5, axis=0)).any()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_row_sum_is_each_rows_sum(xp: Any, shape: tuple[int, int], dtype: str) -> None:
    ops = _ops(xp)
    values = np.random.default_rng(7 + sum(shape)).random(shape).astype(dtype)
    got = ops.row_sum(xp.asarray(values))
    assert tuple(got.shape) == (shape[0], 1)
    assert got.dtype == xp.asarray(values).dtype
    want = values.astype(np.float64).sum(axis=1, keepdims=True)
    rtol = 1e-6 if dtype == "float32" else 1e-13
    np.testing.assert_allclose(_host(ops, got), want, rtol=rtol)


def test_numpy_row_kernels_keep_float16() -> None:
    ops = _ops(nb.namespace("numpy"))
    values = np.random.default_rng(3).random((40, 3)).astype(np.float16)
    assert ops.row_sum(values).dtype == np.float16
    np.testing.assert_array_equal(ops.row_max(values), values.max(axis=1, keepdims=True))
    np.testing.assert_allclose(ops.row_sum(values), values.sum(axis=1, keepdims=True), rtol=2e-3)


def _sigmoid64(x: Any) -> Any:
    x = np.asarray(x, np.float64)
    return np.where(
        x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x)))
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_keeps_relative_precision_down_to_its_floor(xp: Any, dtype: str) -> None:
    ops = _ops(xp)
    lo = -87.0 if dtype == "float32" else -700.0
    x = np.concatenate([np.linspace(lo, -lo, 2001), [0.0, -0.0, 1e-8, -1e-8, -15.0, 15.0]])
    x = x.astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning anywhere
        got = _host(ops, ops.sigmoid(xp.asarray(x))).astype(np.float64)
    want = _sigmoid64(x)
    np.testing.assert_allclose(got, want, rtol=4 * np.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_far_below_zero_is_tiny_and_never_warns(xp: Any, dtype: str) -> None:
    ops = _ops(xp)
    below = -100.0 if dtype == "float32" else -800.0  # under the floor
    x = np.array([below, 10 * below, -np.inf, np.inf, np.nan, 1000.0], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _host(ops, ops.sigmoid(xp.asarray(x)))
    tiny = np.finfo(dtype).tiny  # the smallest normal number: the floor is subnormal
    assert ((got[:3] >= 0) & (got[:3] < tiny)).all()
    assert got[3] == 1.0 and got[5] == 1.0
    assert np.isnan(got[4])


def test_sigmoid_in_float16_goes_down_to_zero() -> None:
    """float16 takes the split form (its floor would be -11, a subnormal 1.5e-5 where the
    true values go on down to 0)."""
    ops = _ops(nb.namespace("numpy"))
    got = ops.sigmoid(np.array([-20.0, -12.0, 0.0, 30.0], np.float16))
    assert got.dtype == np.float16
    np.testing.assert_allclose(
        got.astype(np.float64), _sigmoid64([-20.0, -12.0, 0.0, 30.0]), rtol=1e-3, atol=1e-7
    )


@pytest.mark.parametrize("n_classes", [1, 3, 10, 300])
def test_one_hot_rows_of_labels_in_range(xp: Any, n_classes: int) -> None:
    ops = _ops(xp)
    labels = np.random.default_rng(n_classes).integers(0, n_classes, 50)
    onehot, bad = ops.one_hot(xp.asarray(labels), n_classes, xp.float32)
    assert bad is None or bad is False or not bool(bad)
    np.testing.assert_array_equal(_host(ops, onehot), np.eye(n_classes, dtype=np.float32)[labels])
    assert onehot.dtype == xp.float32


def test_one_hot_refuses_float_labels(xp: Any) -> None:
    with pytest.raises(DtypeError, match="integers"):
        _ops(xp).one_hot(xp.asarray([0.0, 1.0]), 3, xp.float32)


BAD_LABELS = [
    ("int64", [0, -1, 2]),
    ("int64", [0, 3]),
    ("int64", [2**62, 1]),
    ("int64", [-(2**63), 0]),
    ("int64", [2**63 - 1, 0]),
    ("int64", [-4, 0, 1]),  # wraps to a valid row in Python-style negative indexing
    ("int32", [0, -3]),
    ("int8", [127, 0]),
    ("int8", [-128, 0]),
    ("uint8", [255, 0]),
    ("uint8", [3, 0]),
]


@pytest.mark.parametrize(("dtype", "labels"), BAD_LABELS)
def test_labels_out_of_range_are_refused_by_the_loss(dtype: str, labels: list[int]) -> None:
    """On NumPy the one-hot rows of bad labels are NaN and the loss checks them: every kind of
    bad label (negative, too large, wrapping around in ``label + 1``) is a LabelError."""
    xp = nb.namespace("numpy")
    logits = xp.zeros((len(labels), 3), dtype=xp.float32)
    t = np.asarray(labels, dtype=dtype)
    with pytest.raises(LabelError, match="labels must lie in"):
        F.softmax_cross_entropy(logits, t)
    with pytest.raises(LabelError, match="labels must lie in"):
        F.softmax_cross_entropy(logits, t, ignore_index=1)


def test_labels_out_of_range_are_refused_on_every_backend(xp: Any) -> None:
    logits = xp.zeros((3, 3), dtype=xp.float32)
    if not _ops(xp).on_host(logits):
        pytest.skip("a device backend turns the loss NaN instead of syncing to check")
    for labels in ([0, 3, 1], [0, -1, 1]):
        with pytest.raises(LabelError):
            F.softmax_cross_entropy(logits, xp.asarray(labels))


def test_nan_logits_with_good_labels_give_a_nan_loss_not_an_error(xp: Any) -> None:
    values = np.zeros((4, 3), np.float32)
    values[2, 1] = np.nan
    loss = F.softmax_cross_entropy(xp.asarray(values), xp.asarray([0, 1, 2, 0]))
    assert np.isnan(float(loss.item()))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    c=st.integers(1, 12),
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from(["float32", "float64"]),
)
def test_softmax_cross_entropy_matches_the_formula(n: int, c: int, seed: int, dtype: str) -> None:
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=5.0, size=(n, c)).astype(dtype)
    labels = rng.integers(0, c, n)
    x = nb.Tensor(logits, requires_grad=True)
    loss = F.softmax_cross_entropy(x, labels)
    loss.backward()
    wide = logits.astype(np.float64)
    logp = wide - wide.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    rtol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(
        float(loss.item()), -logp[np.arange(n), labels].mean(), rtol=rtol, atol=rtol
    )
    grad = np.exp(logp)
    grad[np.arange(n), labels] -= 1.0
    np.testing.assert_allclose(x.grad, grad / n, rtol=rtol * 10, atol=rtol)


@pytest.mark.parametrize("shape", [(4, 5, 3), (2, 64, 8), (6, 2)])
def test_row_kernels_reduce_the_last_axis_of_any_array(xp: Any, shape: tuple[int, ...]) -> None:
    ops = _ops(xp)
    values = np.random.default_rng(len(shape)).normal(size=shape).astype(np.float32)
    for a in (values, np.swapaxes(values, 0, 1)):  # contiguous, and a transposed view
        x = xp.asarray(a)
        np.testing.assert_array_equal(_host(ops, ops.row_max(x)), a.max(axis=-1, keepdims=True))
        np.testing.assert_allclose(
            _host(ops, ops.row_sum(x)), a.sum(axis=-1, keepdims=True), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("axis", [-1, 0, 1, 2])
def test_softmax_and_log_softmax_along_each_axis(xp64: Any, axis: int) -> None:
    values = np.random.default_rng(axis + 5).normal(scale=3.0, size=(3, 40, 4))
    gy = np.random.default_rng(axis + 9).normal(size=values.shape)
    shifted = values - values.max(axis=axis, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(axis=axis, keepdims=True)
    for fn, want, grad in (
        (F.softmax, p, p * (gy - (gy * p).sum(axis=axis, keepdims=True))),
        (F.log_softmax, np.log(p), gy - p * gy.sum(axis=axis, keepdims=True)),
    ):
        x = nb.Tensor(xp64.asarray(values), requires_grad=True)
        y = fn(x, axis=axis)
        y.backward(xp64.asarray(gy))
        ops = _ops(xp64)
        np.testing.assert_allclose(_host(ops, y.data), want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(_host(ops, x.grad), grad, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("axis", [-1, 0])
def test_a_compiled_step_with_softmax_replays(axis: int) -> None:
    """The node keeps no per-call objects in its settings: two recordings agree, and the
    third call replays (no CompileWarning), equal to the eager step."""
    xp = nb.namespace("numpy", "float64")
    w = nb.Tensor(xp.asarray(np.random.default_rng(1).normal(size=(4, 4))), requires_grad=True)
    x = xp.asarray(np.random.default_rng(2).normal(size=(6, 4)))

    def step(a: Any) -> Any:
        w.grad = None
        loss = (F.log_softmax(a @ w, axis=axis) * F.softmax(a @ w, axis=axis)).sum()
        loss.backward()
        return loss

    compiled = nb.compile_step(step)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        losses = [float(compiled(x).item()) for _ in range(3)]
    assert compiled.replays == 1
    grad = w.grad.copy()
    assert losses[0] == losses[2] == float(step(x).item())
    np.testing.assert_array_equal(grad, w.grad)
