"""End-to-end training: the book's chapter-1 spiral network, loss curves that agree across
backends, every layer training on every backend and dtype, and a training step that never
reads an array back to the host."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim, registry
from nnbackend.namespace import backend_for
from nnbackend.namespace import ops_for as _ops_for


def to_host(x: Any) -> np.ndarray:
    data = x.data if isinstance(x, nb.Tensor) else x
    return np.asarray(backend_for(data)[1].to_host(data))


def on(backend: str, a: np.ndarray) -> Any:
    return registry.get(backend).from_host(np.array(a, copy=True), None)


def spiral(seed: int = 1984, n: int = 100, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The book's spiral dataset (Deep Learning from Scratch 2, dataset/spiral.py)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n * classes, 2))
    t = np.zeros(n * classes, dtype=np.int64)
    for j in range(classes):
        for i in range(n):
            rate = i / n
            radius = 1.0 * rate
            theta = j * 4.0 + 4.0 * rate + rng.standard_normal() * 0.2
            x[n * j + i] = radius * np.sin(theta), radius * np.cos(theta)
            t[n * j + i] = j
    return x, t


def chapter1_model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))


# -- the book's network ---------------------------------------------------------------------
def test_spiral_chapter1_network_reaches_95_percent_in_float32() -> None:
    """2-10-3, sigmoid, SoftmaxCrossEntropy, SGD lr 1.0, batch 30, 300 epochs (the book
    reports 97%)."""
    x, t = spiral()
    with nb.using(backend="numpy", dtype="float32"):
        nb.random.seed(0)
        model = chapter1_model()
        loss_fn = nn.SoftmaxCrossEntropy()
        opt = optim.SGD(model.parameters(), lr=1.0)
        xs = x.astype(np.float32)
        order = np.random.default_rng(0)
        start = time.perf_counter()
        first = last = None
        for _ in range(300):
            idx = order.permutation(len(xs))
            for it in range(len(xs) // 30):
                batch = idx[it * 30 : (it + 1) * 30]
                loss = loss_fn(model(xs[batch]), t[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
                if first is None:
                    first = loss
            last = loss
        elapsed = time.perf_counter() - start
        with nb.no_grad():
            scores = model(xs)
    assert str(scores.dtype) == "float32"
    assert all(str(p.dtype) == "float32" for p in model.parameters())
    accuracy = float(np.mean(np.argmax(to_host(scores), axis=1) == t))
    assert accuracy >= 0.95, f"training accuracy {accuracy:.3f}"
    assert last.item() < 0.25 * first.item()
    assert elapsed < 30.0  # 3000 steps; about half a second on a laptop


# -- the same run on every backend ----------------------------------------------------------
def _loss_curve(backend: str, dtype: str, opt_name: str, steps: int = 30) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2))
    t = rng.integers(0, 3, 60)
    order = np.random.default_rng(1)
    with nb.using(backend=backend, dtype=dtype):
        nb.random.seed(0)
        model = chapter1_model()
        params = model.parameters()
        opt = (
            optim.SGD(params, lr=1.0)
            if opt_name == "SGD"
            else optim.Adam(params, lr=0.01)
            if opt_name == "Adam"
            else optim.Momentum(params, lr=0.1)
        )
        xs, ts = on(backend, x.astype(dtype)), on(backend, t)
        xp = nb.namespace()
        losses = []
        for _ in range(steps):
            batch = on(backend, order.permutation(60)[:30])
            loss = nn.SoftmaxCrossEntropy()(
                model(xp.take(xs, batch, axis=0)), xp.take(ts, batch, axis=0)
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            assert str(loss.dtype).endswith(dtype)
            losses.append(loss.item())
    return np.array(losses)


@pytest.mark.jax_rotate("opt_name")
@pytest.mark.parametrize("opt_name", ["SGD", "Momentum", "Adam"])
def test_loss_curve_agrees_across_backends(backend: str, dtype: str, opt_name: str) -> None:
    """Same seed, model and data: the same loss curve as numpy within a few dozen units of the
    dtype's machine epsilon (measured: at most 2 over these 30 steps)."""
    reference = _loss_curve("numpy", dtype, opt_name)
    curve = _loss_curve(backend, dtype, opt_name)
    tol = 32 * float(np.finfo(dtype).eps)
    np.testing.assert_allclose(curve, reference, rtol=tol, atol=tol)
    assert curve[-5:].mean() < curve[:5].mean()


# -- every layer, every optimizer, every backend and dtype -------------------------------------
class Tagger(nn.Module):
    """Embedding -> LayerNorm -> Linear -> LeakyReLU -> Dropout -> Linear, mean-pooled."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 8)
        self.norm = nn.LayerNorm(8)
        self.body = nn.Sequential(
            nn.Linear(8, 16), nn.LeakyReLU(0.1), nn.Dropout(0.1), nn.Linear(16, 3)
        )

    def forward(self, tokens: Any) -> Any:
        return self.body(self.norm(self.embed(tokens))).mean(axis=1)


@pytest.mark.jax_rotate("opt_name")
@pytest.mark.parametrize(
    "opt_name", ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "AdamW"]
)
def test_every_layer_trains_and_keeps_dtype(
    xp: Any, backend: str, dtype: str, opt_name: str
) -> None:
    nb.random.seed(0)
    model = Tagger()
    lr = {"SGD": 0.5, "Momentum": 0.1, "Nesterov": 0.1, "AdaGrad": 0.1}.get(opt_name, 0.01)
    opt = getattr(optim, opt_name)(model.parameters(), lr=lr)
    rng = np.random.default_rng(0)
    tokens = on(backend, rng.integers(0, 7, size=(12, 4)))
    labels = on(backend, rng.integers(0, 3, size=12))
    losses = []
    for _ in range(15):
        scores = model(tokens)
        assert str(scores.dtype).endswith(dtype)
        loss = nn.SoftmaxCrossEntropy()(scores, labels)
        opt.zero_grad()
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, name
            assert str(p.grad.dtype).endswith(dtype), name
        opt.step()
        for name, p in model.named_parameters():
            assert str(p.dtype).endswith(dtype), name
            assert backend_for(p.data)[1].name == backend
        losses.append(loss.item())
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    model.eval()
    with nb.no_grad():
        a, b = to_host(model(tokens)), to_host(model(tokens))
    np.testing.assert_array_equal(a, b)  # Dropout is the identity in eval mode


# -- no hidden device synchronisation --------------------------------------------------------


def test_training_step_reads_nothing_back_to_the_host(
    no_host_reads: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forward, backward, clipping and the update of a model of every layer, with one-hot
    targets (integer labels and embedding indices are range-checked eagerly on host
    backends, by design: the backend is made to report its arrays as device arrays, so the
    embedding takes the path a GPU takes)."""
    with nb.using(backend="array_api_strict", dtype="float32"):
        nb.random.seed(0)
        model = Tagger()
        xp = nb.namespace()
        rng = np.random.default_rng(0)
        tokens = on("array_api_strict", rng.integers(0, 7, size=(6, 4)))
        monkeypatch.setattr(_ops_for(xp.__wrapped__, tokens), "on_host", lambda array: False)
        onehot = on("array_api_strict", np.eye(3, dtype=np.float32)[rng.integers(0, 3, 6)])
        opt = optim.Adam(model.parameters())
        with no_host_reads():
            for _ in range(2):
                loss = nn.SoftmaxCrossEntropy()(model(tokens), onehot)
                opt.zero_grad()
                loss.backward()
                optim.clip_grad_norm(model.parameters(), 1.0)
                opt.step()
        assert xp.isdtype(loss.dtype, "real floating")
