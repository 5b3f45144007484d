"""``nnbackend.datasets``: the book's spiral (bit for bit), XOR, and scikit-learn's digits, on
every backend in the active dtype."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import datasets, registry


def _host(a: Any) -> np.ndarray:
    return np.asarray(registry.get(registry.backend_of(a)).to_host(a))


def _book_spiral(seed: int = 1984) -> tuple[np.ndarray, np.ndarray]:
    """The book's dataset/spiral.py load_data(), verbatim apart from a private RandomState
    (np.random.seed + np.random.randn draw the same stream) and integer labels."""
    rng = np.random.RandomState(seed)
    N, DIM, CLS_NUM = 100, 2, 3
    x = np.zeros((N * CLS_NUM, DIM))
    t = np.zeros((N * CLS_NUM, CLS_NUM), dtype=int)
    for j in range(CLS_NUM):
        for i in range(N):
            rate = i / N
            radius = 1.0 * rate
            theta = j * 4.0 + 4.0 * rate + rng.randn() * 0.2
            ix = N * j + i
            x[ix] = np.array([radius * np.sin(theta), radius * np.cos(theta)]).flatten()
            t[ix, j] = 1
    return x, t.argmax(axis=1)


def test_spiral_is_the_books_data_bit_for_bit() -> None:
    x, t = datasets.spiral()
    bx, bt = _book_spiral()
    assert np.array_equal(_host(x), bx)
    assert np.array_equal(_host(t), bt)


def test_spiral_on_every_backend_and_dtype(xp: Any, backend: str, dtype: str) -> None:
    x, t = datasets.spiral()
    assert registry.backend_of(x) == backend and registry.backend_of(t) == backend
    assert x.dtype == getattr(xp, dtype)
    assert t.dtype == xp.int64
    assert tuple(x.shape) == (300, 2) and tuple(t.shape) == (300,)
    expected = _book_spiral()[0].astype(dtype)
    assert np.array_equal(_host(x), expected)  # cast on the host: the same bits everywhere


def test_spiral_explicit_dtype_and_sizes() -> None:
    ds = datasets.spiral(n_per_class=7, n_classes=5, seed=3, dtype="float32")
    assert ds.x.dtype == np.float32
    assert ds.n_samples == 35 and ds.n_classes == 5
    assert np.bincount(_host(ds.t)).tolist() == [7] * 5
    radius = np.hypot(*_host(ds.x).T.astype(np.float64))
    assert radius.max() < 1.0
    assert not np.array_equal(_host(datasets.spiral(seed=1).x), _host(datasets.spiral().x))


@pytest.mark.parametrize("kwargs", [{"n_per_class": 0}, {"n_classes": 0}])
def test_spiral_rejects_empty(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="spiral needs"):
        datasets.spiral(**kwargs)


def test_xor() -> None:
    x, t = datasets.xor()
    assert _host(x).tolist() == [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
    assert _host(t).tolist() == [0, 1, 1, 0]
    noisy = datasets.xor(n_per_corner=25, noise=0.1, seed=4)
    assert noisy.n_samples == 100
    again = datasets.xor(n_per_corner=25, noise=0.1, seed=4)
    assert np.array_equal(_host(noisy.x), _host(again.x))
    centre = np.repeat([[0, 0], [0, 1], [1, 0], [1, 1]], 25, axis=0)
    assert 0.0 < np.abs(_host(noisy.x) - centre).max() < 0.6
    with pytest.raises(ValueError):
        datasets.xor(n_per_corner=0)


def test_xor_on_strict() -> None:
    with nb.using(backend="array_api_strict", dtype="float32"):
        x, t = datasets.xor()
    assert registry.backend_of(x) == "array_api_strict"
    assert "float32" in str(x.dtype) and "int64" in str(t.dtype)


def test_unusable_backend_raises_its_own_error() -> None:
    with (
        nb.using(backend="array_api_strict", dtype="float16"),
        pytest.raises(nb.errors.DtypeError, match="no float16"),
    ):
        datasets.spiral()


def test_digits() -> None:
    pytest.importorskip("sklearn", reason="digits() needs scikit-learn")
    (x_train, t_train), (x_test, t_test) = datasets.digits()
    assert x_train.dtype == np.float64 and t_train.dtype == np.int64
    assert x_train.shape[1] == 64 and x_train.shape[0] + x_test.shape[0] == 1797
    assert 0.2 < x_test.shape[0] / 1797 < 0.3
    hx = np.concatenate([_host(x_train), _host(x_test)])
    assert hx.min() == 0.0 and hx.max() == 1.0
    # Stratified: every digit in both sets, in about the same share.
    train_share = np.bincount(_host(t_train), minlength=10) / len(t_train)
    test_share = np.bincount(_host(t_test), minlength=10) / len(t_test)
    assert (test_share > 0).all() and np.abs(train_share - test_share).max() < 0.01
    # Seeded: the same split again, another with another seed.
    (x2, _), _ = datasets.digits()
    assert np.array_equal(_host(x2), _host(x_train))
    (x3, _), _ = datasets.digits(seed=1)
    assert not np.array_equal(_host(x3), _host(x_train))
    # Train and test share no image (up to the few duplicate images in the data).
    train_rows = {row.tobytes() for row in _host(x_train)}
    overlap = sum(row.tobytes() in train_rows for row in _host(x_test))
    assert overlap <= 5


def test_digits_on_torch_float32() -> None:
    pytest.importorskip("sklearn", reason="digits() needs scikit-learn")
    if registry.probe("torch") is not None:
        pytest.skip(registry.probe("torch"))
    with nb.using(backend="torch", dtype="float32"):
        (x, t), _ = datasets.digits()
    assert registry.backend_of(x) == "torch" and str(x.dtype) == "torch.float32"
    assert str(t.dtype) == "torch.int64"


def test_digits_without_scikit_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        datasets.digits()


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_digits_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        datasets.digits(test_fraction=fraction)
