"""Edge inputs of the built-in layers and losses that gave wrong values (found by an
attacker's review of issue 19's fast paths, 2026-12-03): labels at the top of a small
integer dtype, classes masked with -inf, label counts that do not fit the logits, empty
batches, sequence labels in a compiled step, float16 NaN through ReLU and float16 sums of
many elements, a bias of the wrong shape."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import DtypeError, ShapeError

F = nn.functional


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
@pytest.mark.parametrize(
    "dtype, label, classes",
    [("int8", 127, 200), ("uint8", 255, 256), ("uint8", 5, 300), ("int16", 5, 70_000)],
)
def test_labels_at_the_top_of_a_small_integer_dtype(
    backend: str, dtype: str, label: int, classes: int
) -> None:
    """uint8 label 255 of 256 classes (a byte model's) took a NaN row (label + 1 wrapped
    around); uint8 labels of 300 classes raised LabelError (the class range overflowed)."""
    with nb.using(backend=backend):
        xp = nb.namespace()
        logits = xp.zeros((2, classes), dtype=xp.float32)
        labels = xp.asarray(np.array([label, 0], dtype=dtype))
        loss = float(F.softmax_cross_entropy(Tensor(logits), labels).item())
        masked = float(F.softmax_cross_entropy(Tensor(logits), labels, ignore_index=1).item())
    assert loss == pytest.approx(math.log(classes), rel=1e-6)
    assert masked == pytest.approx(math.log(classes), rel=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_a_class_masked_with_minus_infinity(backend: str) -> None:
    """A -inf logit in a class that is not the label made the loss NaN (0 * -inf); torch
    gives the finite loss. The gradient was right and stays so."""
    x = np.array([[1.0, 2.0, -np.inf], [0.5, -np.inf, 1.0]])
    t = np.array([0, 2])
    z = x - x.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    want = -(log_p[0, 0] + log_p[1, 2]) / 2
    with nb.using(backend=backend, dtype="float64"):
        xt = Tensor(nb.to_backend(x), requires_grad=True)
        loss = F.softmax_cross_entropy(xt, nb.to_backend(t))
        loss.backward()
        ignored = F.softmax_cross_entropy(
            Tensor(nb.to_backend(np.array([[1.0, 2.0, 0.0], [np.nan, -np.inf, 1.0]]))),
            nb.to_backend(np.array([0, -1])),
            ignore_index=-1,
        )
    assert float(loss.item()) == pytest.approx(want, rel=1e-12)
    p = np.exp(log_p)
    p[[0, 1], t] -= 1
    grad = nb.registry.get(nb.registry.backend_of(xt.grad)).to_host(xt.grad)
    np.testing.assert_allclose(np.asarray(grad), p / 2, rtol=1e-12)
    row0 = np.array([1.0, 2.0, 0.0])
    want_ignored = -(row0[0] - np.log(np.exp(row0).sum()))
    assert float(ignored.item()) == pytest.approx(want_ignored, rel=1e-12)


@pytest.mark.parametrize("ignore_index", [None, -1])
@pytest.mark.parametrize("n_labels", [1, 2, 4])
def test_label_count_must_fit_the_logits(n_labels: int, ignore_index: Any) -> None:
    """One label for three rows was broadcast to every row, silently."""
    logits = Tensor(np.zeros((3, 3)), requires_grad=True)
    with pytest.raises(ShapeError, match="logits of 3 rows"):
        F.softmax_cross_entropy(logits, np.zeros(n_labels, dtype=np.int64), ignore_index)


@pytest.mark.parametrize(
    "loss",
    [
        lambda y: F.softmax_cross_entropy(y, np.zeros(0, dtype=np.int64)),
        lambda y: F.softmax_cross_entropy(y, np.zeros((0, 3))),
        lambda y: F.mse_loss(y, np.zeros((0, 3))),
    ],
    ids=["labels", "soft", "mse"],
)
def test_an_empty_batch_is_a_shape_error(loss: Any) -> None:
    """(It crashed backward with ZeroDivisionError.)"""
    with pytest.raises(ShapeError, match="empty"):
        loss(Tensor(np.zeros((0, 3)), requires_grad=True))


@pytest.mark.parametrize("check", [True, False])
def test_sequence_labels_in_a_compiled_step(check: bool) -> None:
    """Logits (N, T, C) with labels (N, T): the labels were flattened outside the graph, so
    a compiled step froze the first call's labels (check=False) or never compiled."""
    rng = np.random.default_rng(0)
    runs = []
    for compiled in (False, True):
        nb.random.seed(0)
        model = nn.Linear(4, 5)
        opt = optim.SGD(model.parameters(), lr=0.1)

        def step(x: Any, t: Any, model: Any = model, opt: Any = opt) -> Any:
            opt.zero_grad()
            loss = F.softmax_cross_entropy(model(x), t)
            loss.backward()
            opt.step()
            return loss

        f = nb.compile_step(step, check=check) if compiled else step
        rng = np.random.default_rng(0)
        losses = [
            float(f(rng.standard_normal((2, 3, 4)), rng.integers(0, 5, (2, 3))).item())
            for _ in range(5)
        ]
        runs.append((losses, model.weight.data.copy()))
        if compiled:
            assert f.replays >= 2
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("n", [1023, 1024, 40_000])
def test_float16_relu_keeps_nan(n: int) -> None:
    """From 1024 elements float16 ReLU computes through a bit mask of x > 0, which zeroed
    NaN (maximum(x, 0) keeps it, float32 kept it): a diverging model looked finite."""
    x = np.ones(n, dtype=np.float16)
    x[:2] = [np.nan, -np.nan]
    x[2:4] = [-1.0, np.inf]
    y = F.relu(Tensor(x, requires_grad=True))
    got = np.asarray(y.data)
    assert np.isnan(got[:2]).all() and got[2] == 0 and got[3] == np.inf
    assert got.dtype == np.float16


@pytest.mark.parametrize("n", [1000, 70_000])
def test_float16_losses_sum_in_float32(n: int) -> None:
    """mse_loss and sigmoid_cross_entropy summed float16 in float16: at 70,000 elements
    the count is infinite in float16 and the sum overflows (0.0 and NaN came out)."""
    rng = np.random.default_rng(0)
    y = (rng.standard_normal(n) * 0.01).astype(np.float16)
    t = np.zeros(n, dtype=np.float16)
    yt = Tensor(y, requires_grad=True)
    mse = F.mse_loss(yt, t)
    mse.backward()
    y32 = y.astype(np.float32)
    assert float(mse.item()) == pytest.approx(float(np.mean(y32 * y32)), rel=2e-3)
    assert mse.data.dtype == np.float16 and yt.grad.dtype == np.float16
    # (float16's subnormal spacing is 6e-8: the gradients of 70,000 elements are near it)
    np.testing.assert_allclose(yt.grad.astype(np.float32), 2 * y32 / n, rtol=2e-3, atol=6e-8)
    logits = (rng.standard_normal(n) * 3).astype(np.float16)
    lt = Tensor(logits, requires_grad=True)
    targets = (rng.random(n) < 0.5).astype(np.float16)
    bce = F.sigmoid_cross_entropy(lt, targets)
    bce.backward()
    x64, t64 = logits.astype(np.float64), targets.astype(np.float64)
    want = np.mean(np.maximum(x64, 0) - x64 * t64 + np.log1p(np.exp(-np.abs(x64))))
    assert float(bce.item()) == pytest.approx(want, rel=2e-3)
    grad = (1 / (1 + np.exp(-x64)) - t64) / n
    np.testing.assert_allclose(lt.grad.astype(np.float64), grad, rtol=2e-3, atol=6e-8)


@pytest.mark.parametrize(
    "bias, error",
    [
        (np.zeros((3, 2), np.float32), ShapeError),
        (np.zeros((1, 2), np.float32), ShapeError),
        (np.zeros(3, np.float32), ShapeError),
        (np.zeros(2, np.float64), DtypeError),
    ],
    ids=["per_row", "row", "length", "dtype"],
)
def test_linear_checks_its_bias(bias: Any, error: Any) -> None:
    """A bias of shape (N, out) broadcast in forward and got column sums for a gradient
    (the node's gradients are trusted, so nothing checked them)."""
    x = Tensor(np.ones((3, 4), np.float32))
    w = Tensor(np.ones((4, 2), np.float32), requires_grad=True)
    with pytest.raises(error, match="linear: bias"):
        F.linear(x, w, Tensor(bias, requires_grad=True))


def test_float64_to_float16_is_rounded_once() -> None:
    """float64 -> float16 went through float32, rounding twice: 1 + 2^-11 + 2^-30 became 1.0
    where NumPy's astype gives 1.001."""
    x = np.full(5000, 1 + 2.0**-11 + 2.0**-30)
    got = Tensor(x).astype("float16").data
    np.testing.assert_array_equal(got, x.astype(np.float16))


def test_a_widening_into_an_unfit_out_ignores_it() -> None:
    """The float16 -> float32 conversion trusted ``out``: an int32 one was filled with
    truncated values, one overlapping the input gave zeros."""
    from nnbackend.backends import numpy as numpy_ops

    widen = numpy_ops.kernels()["float16_to_float32"]
    x = (np.arange(4096) / 7).astype(np.float16)
    for out in (np.empty(4096, np.int32), np.empty(4096, np.float64)):
        np.testing.assert_array_equal(widen(x, out=out), x.astype(np.float32))
    buf = np.empty(8192 * 2, np.uint8)
    x_in = buf[:8192].view(np.float16)
    x_in[...] = x
    overlapping = buf.view(np.float32)[:4096]
    np.testing.assert_array_equal(widen(x_in, out=overlapping), x.astype(np.float32))


def test_linear_checks_its_bias_under_the_mixed_policy() -> None:
    """The mixed16 node had no bias check either."""
    with nb.using(dtype="mixed16"):
        x = Tensor(np.ones((3, 4), np.float32))
        w = Tensor(np.ones((4, 2), np.float32), requires_grad=True)
        with pytest.raises(ShapeError, match="linear: bias"):
            F.linear(x, w, Tensor(np.zeros((3, 2), np.float32), requires_grad=True))
        y = F.linear(x, w, Tensor(np.zeros(2, np.float32), requires_grad=True))
    assert y.data.shape == (3, 2)
