"""Softmax cross-entropy over sequences with ``ignore_index`` (the book's ``ignore_label``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn
from nnbackend.errors import LabelError
from nnbackend.namespace import backend_for
from nnbackend.nn import functional as F


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, nb.Tensor) else a
    return np.asarray(backend_for(a)[1].to_host(a), dtype=np.float64)


def _masked_reference(x: np.ndarray, t: np.ndarray, ignore: int) -> tuple[float, np.ndarray]:
    """The book's TimeSoftmaxWithLoss by hand: mean over unmasked labels and its gradient."""
    x2, t2 = x.reshape(-1, x.shape[-1]), t.reshape(-1)
    mask = t2 != ignore
    z = x2 - x2.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    safe = np.where(mask, t2, 0)
    logp = np.log(p[np.arange(len(t2)), safe])
    loss = -(logp * mask).sum() / mask.sum()
    g = p.copy()
    g[np.arange(len(t2)), safe] -= 1
    g *= (mask / mask.sum())[:, None]
    return float(loss), g.reshape(x.shape)


@pytest.mark.parametrize("ignore", [-1, 0])
def test_ignore_index_matches_a_masked_hand_computation(xp: Any, dtype: str, ignore: int) -> None:
    rng = np.random.default_rng(0)
    x_host = rng.normal(size=(3, 5, 7))
    t_host = rng.integers(0, 7, size=(3, 5))
    t_host[0, 1] = t_host[2, 4] = t_host[1, 0] = ignore
    expected_loss, expected_grad = _masked_reference(x_host, t_host, ignore)
    x = nb.Tensor(xp.asarray(x_host.astype(dtype)), requires_grad=True)
    loss = nn.SoftmaxCrossEntropy(ignore_index=ignore)(x, xp.asarray(t_host))
    loss.backward()
    eps = float(np.finfo(dtype).eps)
    assert str(loss.dtype) == str(x.dtype) and str(x.grad.dtype) == str(x.dtype)
    assert abs(float(loss.item()) - expected_loss) <= 20 * eps * abs(expected_loss)
    np.testing.assert_allclose(_host(x.grad), expected_grad, rtol=0, atol=20 * eps)
    masked = _host(x.grad).reshape(-1, 7)[(t_host == ignore).reshape(-1)]
    assert not masked.any()


def test_without_ignore_index_sequences_flatten(xp: Any) -> None:
    rng = np.random.default_rng(1)
    x = xp.asarray(rng.normal(size=(2, 3, 4)))
    t = xp.asarray(rng.integers(0, 4, size=(2, 3)))
    flat = F.softmax_cross_entropy(xp.reshape(x, (6, 4)), xp.reshape(t, (6,)))
    seq = F.softmax_cross_entropy(x, t)
    assert float(seq.item()) == float(flat.item())


def test_gradcheck_masked_loss(backend: str) -> None:
    if backend == "cupy":
        pytest.skip("central differences on the host; covered by numpy")
    with nb.using(backend=backend, dtype="float64"):
        xp = nb.namespace()
        rng = np.random.default_rng(2)
        t = xp.asarray(np.array([[1, -1, 2], [-1, 0, 3]]))
        x = xp.asarray(rng.normal(size=(2, 3, 4)))
        assert nb.gradcheck(lambda a, b: F.softmax_cross_entropy(a, b, ignore_index=-1), x, t)


def test_ignored_labels_only_give_zero_and_bad_labels_are_named() -> None:
    with nb.using(backend="numpy", dtype="float64"):
        xp = nb.namespace()
        x = nb.Tensor(xp.ones((2, 3)), requires_grad=True)
        loss = F.softmax_cross_entropy(x, xp.asarray([-1, -1]), ignore_index=-1)
        loss.backward()
        assert loss.item() == 0.0 and not x.grad.any()
        with pytest.raises(LabelError, match=r"\[5\]"):
            F.softmax_cross_entropy(x, xp.asarray([-1, 5]), ignore_index=-1)


def test_weight_tying_sums_the_gradients_of_both_uses(backend: str) -> None:
    # Chapter 6: the output layer is the embedding matrix transposed; one Parameter, used
    # twice, gets the sum of both gradients (the book's remove_duplicate adds them by hand).
    if backend == "cupy":
        pytest.skip("central differences on the host; covered by numpy")
    with nb.using(backend=backend, dtype="float64"):
        xp = nb.namespace()
        rng = np.random.default_rng(3)
        w = xp.asarray(rng.normal(size=(6, 4)))
        ids = xp.asarray(np.array([[1, 5, 2], [0, 3, 3]]))
        labels = xp.asarray(np.array([[5, 2, -1], [3, 3, 4]]))

        def tied(weight: Any, idx: Any, t: Any) -> Any:
            h = nn.functional.embedding(idx, weight)
            logits = nn.functional.linear(h, weight.T)
            return F.softmax_cross_entropy(logits, t, ignore_index=-1)

        assert nb.gradcheck(tied, w, ids, labels)
