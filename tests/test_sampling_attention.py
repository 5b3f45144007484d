"""Word2vec's negative sampling (sampler law, reproducibility, loss) and chapter 8's attention."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn
from nnbackend.errors import ArgumentError, ShapeError
from nnbackend.namespace import backend_for
from nnbackend.nn.attention import attention
from nnbackend.nn.sampling import embedding_dot, negative_sampling_loss

COUNTS = np.array([1, 2, 3, 5, 8, 13, 21, 34, 55, 89])
CORPUS = np.repeat(np.arange(10), COUNTS)
# The 0.999 quantile of the chi-squared law with 9 degrees of freedom.
CHI2_9_999 = 27.877


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, nb.Tensor) else a
    return np.asarray(backend_for(a)[1].to_host(a))


def _chi2(draws: np.ndarray, p: np.ndarray) -> float:
    observed = np.bincount(draws.reshape(-1), minlength=len(p))
    expected = p * draws.size
    return float(((observed - expected) ** 2 / expected).sum())


def test_sampler_follows_the_unigram_power_law() -> None:
    law = COUNTS**0.75 / (COUNTS**0.75).sum()
    sampler = nn.UnigramSampler(CORPUS, power=0.75, sample_size=5, generator=0)
    np.testing.assert_allclose(sampler.word_p, law, rtol=1e-15)
    with nb.using(backend="numpy"):
        draws = _host(sampler.draw((20000, 5)))
    assert _chi2(draws, law) < CHI2_9_999
    # The test has power: plain unigram frequencies (power 1) are rejected by the same test.
    plain = nn.UnigramSampler(CORPUS, power=1.0, sample_size=5, generator=0)
    with nb.using(backend="numpy"):
        assert _chi2(_host(plain.draw((20000, 5))), law) > CHI2_9_999


def test_sampler_is_identical_across_backends(backend: str) -> None:
    with nb.using(backend="numpy"):
        expected = _host(nn.UnigramSampler(CORPUS, generator=7).sample(np.arange(64) % 10))
    with nb.using(backend=backend):
        xp = nb.namespace()
        got = nn.UnigramSampler(CORPUS, generator=7).sample(xp.asarray(np.arange(64) % 10))
        assert backend_for(got)[1].name == backend
        np.testing.assert_array_equal(_host(got), expected)
    nb.random.seed(3)
    with nb.using(backend="numpy"):
        a = _host(nn.UnigramSampler(CORPUS).draw(50))
    nb.random.seed(3)
    with nb.using(backend=backend):
        b = _host(nn.UnigramSampler(CORPUS).draw(50))
    np.testing.assert_array_equal(a, b)


def test_exclude_target_is_the_books_cpu_sampler() -> None:
    sampler = nn.UnigramSampler(CORPUS, sample_size=4, exclude_target=True, generator=1)
    target = np.arange(200) % 10
    with nb.using(backend="numpy"):
        neg = _host(sampler.sample(target))
    assert neg.shape == (200, 4)
    assert not (neg == target[:, None]).any()
    assert all(len(set(row)) == 4 for row in neg.tolist())
    with pytest.raises(ArgumentError):
        nn.UnigramSampler([0, 1], sample_size=2, exclude_target=True)
    with pytest.raises(ArgumentError, match="vocab_size"):
        nn.UnigramSampler([0, 5], vocab_size=3)


def _book_loss(h: np.ndarray, w: np.ndarray, target: np.ndarray, neg: np.ndarray) -> float:
    """The book's NegativeSamplingLoss (without its 1e-7 inside the log)."""

    def sig(x: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-x))

    loss = -np.log(sig((w[target] * h).sum(1))).mean()
    for i in range(neg.shape[1]):
        loss += -np.log(1 - sig((w[neg[:, i]] * h).sum(1))).mean()
    return float(loss)


def test_negative_sampling_loss_is_the_books_sum_and_has_right_gradients(
    xp: Any, dtype: str
) -> None:
    rng = np.random.default_rng(0)
    h, w = rng.normal(size=(6, 4)), rng.normal(size=(10, 4))
    target, neg = rng.integers(0, 10, 6), rng.integers(0, 10, (6, 3))
    got = negative_sampling_loss(
        xp.asarray(h.astype(dtype)),
        xp.asarray(w.astype(dtype)),
        xp.asarray(target),
        xp.asarray(neg),
    )
    eps = float(np.finfo(dtype).eps)
    assert str(got.dtype) == dtype or str(got.dtype).endswith(dtype)
    assert abs(got.item() - _book_loss(h, w, target, neg)) < 50 * eps * abs(got.item())
    if dtype == "float64":
        assert nb.gradcheck(
            negative_sampling_loss,
            xp.asarray(h),
            xp.asarray(w),
            xp.asarray(target),
            xp.asarray(neg),
        )


def test_negative_sampling_module_trains_the_output_embedding() -> None:
    with nb.using(backend="numpy", dtype="float64"):
        nb.random.seed(0)
        loss_layer = nn.NegativeSamplingLoss(10, 4, CORPUS, sample_size=3, generator=5)
        h = nb.Tensor(nb.random.normal((8, 4)), requires_grad=True)
        target = nb.namespace().asarray(np.arange(8))
        loss = loss_layer(h, target)
        neg = loss_layer.last_negatives
        w = loss_layer.embed.weight.data
        assert abs(loss.item() - _book_loss(h.data, w, np.arange(8), neg)) < 1e-13
        loss.backward()
        assert loss_layer.embed.weight.grad.shape == (10, 4) and h.grad.shape == (8, 4)
        assert [n for n, _ in loss_layer.named_parameters()] == ["embed.weight"]


def test_embedding_dot_shapes_and_errors() -> None:
    with nb.using(backend="numpy", dtype="float64"):
        xp = nb.namespace()
        layer = nn.EmbeddingDot(10, 3)
        h = xp.ones((4, 3))
        assert layer(h, xp.asarray([1, 2, 3, 4])).shape == (4,)
        assert embedding_dot(h, layer.weight, xp.asarray(np.zeros((4, 2), dtype=int))).shape == (
            4,
            2,
        )
        with pytest.raises(ShapeError):
            layer(h, xp.asarray([1, 2]))


def _book_attention(hs: np.ndarray, hd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The book's TimeAttention: for each decoder step, AttentionWeight then WeightSum."""
    cs, ws = [], []
    for t in range(hd.shape[1]):
        h = hd[:, t]
        s = (hs * h[:, None, :]).sum(axis=2)
        a = np.exp(s - s.max(axis=1, keepdims=True))
        a /= a.sum(axis=1, keepdims=True)
        cs.append((hs * a[:, :, None]).sum(axis=1))
        ws.append(a)
    return np.stack(cs, 1), np.stack(ws, 1)


def test_time_attention_matches_the_books_loop(xp: Any, dtype: str) -> None:
    rng = np.random.default_rng(1)
    hs, hd = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 4, 3))
    layer = nn.TimeAttention()
    c = layer(xp.asarray(hs.astype(dtype)), xp.asarray(hd.astype(dtype)))
    ref_c, ref_w = _book_attention(hs, hd)
    eps = float(np.finfo(dtype).eps)
    np.testing.assert_allclose(_host(c).astype(float), ref_c, rtol=0, atol=100 * eps)
    np.testing.assert_allclose(
        _host(layer.attention_weights).astype(float), ref_w, rtol=0, atol=100 * eps
    )
    one = nn.Attention()
    c1 = one(xp.asarray(hs.astype(dtype)), xp.asarray(hd[:, 2].astype(dtype)))
    np.testing.assert_allclose(_host(c1).astype(float), ref_c[:, 2], rtol=0, atol=100 * eps)


def test_attention_gradcheck(backend: str) -> None:
    if backend == "cupy":
        pytest.skip("central differences on the host; covered by numpy")
    with nb.using(backend=backend, dtype="float64"):
        xp = nb.namespace()
        rng = np.random.default_rng(2)
        hs, hd = xp.asarray(rng.normal(size=(2, 5, 3))), xp.asarray(rng.normal(size=(2, 4, 3)))
        assert nb.gradcheck(lambda a, b: attention(a, b)[0], hs, hd)
        with pytest.raises(ShapeError):
            attention(hs, xp.ones((2, 4, 2)))
