"""optim.BookAdam: the book's Adam step, and where it parts from PyTorch's Adam."""

from __future__ import annotations

from typing import Any

import numpy as np

import nnbackend as nb
from nnbackend import optim
from nnbackend.namespace import backend_for


def _book_adam(p: np.ndarray, grads: list[np.ndarray], lr: float) -> np.ndarray:
    """common/optimizer.py's Adam, verbatim in NumPy."""
    b1, b2 = 0.9, 0.999
    m, v = np.zeros_like(p), np.zeros_like(p)
    p = p.copy()
    for it, g in enumerate(grads, start=1):
        lr_t = lr * np.sqrt(1.0 - b2**it) / (1.0 - b1**it)
        m += (1 - b1) * (g - m)
        v += (1 - b2) * (g**2 - v)
        p -= lr_t * m / (np.sqrt(v) + 1e-7)
    return p


def _run(cls: Any, p0: np.ndarray, grads: list[np.ndarray], lr: float) -> np.ndarray:
    xp = nb.namespace()
    p = nb.nn.Parameter(xp.asarray(p0))
    opt = cls([p], lr=lr)
    for g in grads:
        p.grad = xp.asarray(g)
        opt.step()
    return np.asarray(backend_for(p.data)[1].to_host(p.data))


def test_book_adam_equals_the_books_code(backend: str) -> None:
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(5, 3))
    grads = [rng.normal(size=(5, 3)) * 1e-6 for _ in range(150)]
    expected = _book_adam(p0, grads, 0.001)
    with nb.using(backend=backend, dtype="float64"):
        np.testing.assert_allclose(_run(optim.BookAdam, p0, grads, 0.001), expected, atol=1e-15)
        # With word2vec-sized gradients PyTorch's Adam goes elsewhere: the reason for the option.
        assert np.abs(_run(optim.Adam, p0, grads, 0.001) - expected).max() > 1e-3
