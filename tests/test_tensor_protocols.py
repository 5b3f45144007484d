"""Python's and NumPy's protocols on a Tensor: iteration and ``numpy.asarray``.

Iteration fell back to indexing until an IndexError, but an index past the end is a
ShapeError here, so ``list(t)``, ``for row in t`` and ``x in t`` failed at the end;
``numpy.asarray(t)`` gave an object array holding the Tensor (a 0-d one) or failed the same
way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import nnbackend.functional as F
from nnbackend.autograd.tensor import Tensor

X = np.arange(6.0).reshape(3, 2)


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, Tensor) else a
    return np.asarray(a.tolist() if hasattr(a, "tolist") else np.asarray(a))


def test_iteration_gives_the_rows_in_the_graph(xp64: Any) -> None:
    t = Tensor(xp64.asarray(X), requires_grad=True)
    rows = list(t)
    assert len(rows) == 3
    for row, want in zip(rows, X, strict=True):
        np.testing.assert_array_equal(_host(row), want)
    F.sum(rows[0] * 2.0 + rows[2]).backward()
    np.testing.assert_array_equal(_host(t.grad), [[2.0, 2.0], [0.0, 0.0], [1.0, 1.0]])
    assert [float(v.item()) for v in t[1]] == [2.0, 3.0]
    assert max(t[2]).item() == 5.0
    with pytest.raises(TypeError, match="0-d"):
        iter(Tensor(xp64.asarray(1.0)))


def test_numpy_asarray_gives_the_values(xp64: Any) -> None:
    t = Tensor(xp64.asarray(X))
    if not hasattr(t.data, "__array__"):
        pytest.skip("this library's arrays refuse an implicit conversion (CuPy)")
    np.testing.assert_array_equal(np.asarray(t), X)
    assert np.asarray(t).dtype == np.float64
    assert np.asarray(F.sum(t)).shape == () and float(np.asarray(F.sum(t))) == 15.0
    assert np.asarray(t, dtype=np.float32).dtype == np.float32
    copied = np.array(t, copy=True)
    copied[0, 0] = 100.0
    np.testing.assert_array_equal(_host(t), X)
