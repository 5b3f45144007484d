"""Sums, means and products of boolean and integer tensors count as NumPy counts.

``Sum`` summed in the input's dtype: ``(pred == labels).sum()`` was ``True`` and
``(pred == labels).mean()``, the accuracy of a batch, was 1/N whatever the predictions; an
int32 sum past 2**31 and a uint8 sum past 255 wrapped around. They now sum in the default
integer dtype (unsigned: uint64), as NumPy and the Array API standard do, and a mean of
integers is in the active default float dtype, on every backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnbackend as nb
import nnbackend.functional as F
from nnbackend.autograd.tensor import Tensor


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, Tensor) else a
    return np.asarray(a.tolist() if hasattr(a, "tolist") else np.asarray(a))


@given(
    pred=st.lists(st.integers(0, 3), min_size=1, max_size=40),
    seed=st.integers(0, 2**16),
    axis=st.sampled_from([None, 0, -1]),
    keepdims=st.booleans(),
)
@settings(max_examples=30, deadline=None)
def test_the_accuracy_of_a_batch_is_the_fraction_right(
    xp64: Any, pred: list[int], seed: int, axis: Any, keepdims: bool
) -> None:
    labels = np.random.default_rng(seed).integers(0, 4, size=len(pred))
    right = Tensor(xp64.asarray(pred)) == Tensor(xp64.asarray(labels.tolist()))
    want = np.asarray(pred) == labels
    got_sum = right.sum(axis=axis, keepdims=keepdims)
    np.testing.assert_array_equal(_host(got_sum), want.sum(axis=axis, keepdims=keepdims))
    assert xp64.isdtype(got_sum.dtype, "signed integer")
    got_mean = right.mean(axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(_host(got_mean), want.mean(axis=axis, keepdims=keepdims))
    assert got_mean.dtype == xp64.float64  # the active default float dtype


@pytest.mark.parametrize(
    ("dtype", "values", "total"),
    [
        ("int32", [2**31 - 1, 1], 2**31),
        ("int8", [100, 100, 100], 300),
        ("uint8", [200, 100], 300),
        ("int16", [-(2**15), -(2**15)], -(2**16)),
    ],
)
def test_narrow_integers_sum_without_wrapping(
    xp64: Any, dtype: str, values: list[int], total: int
) -> None:
    t = Tensor(xp64.asarray(values, dtype=getattr(xp64, dtype)))
    assert int(t.sum().item()) == total
    assert float(t.mean().item()) == total / len(values)
    assert int(F.sum(t, axis=0).item()) == total


def test_products_of_integers_and_bools_count_too(xp64: Any) -> None:
    t = Tensor(xp64.asarray([2**20, 2**20], dtype=xp64.int32))
    assert int(F.prod(t).item()) == 2**40
    b = Tensor(xp64.asarray([True, True, False]))
    np.testing.assert_array_equal(_host(F.prod(b, axis=0, keepdims=True)), [0])
    assert xp64.isdtype(F.prod(b).dtype, "signed integer")


def test_the_mean_of_integers_follows_the_default_float_dtype(backend: str) -> None:
    with nb.using(backend=backend, dtype="float32"):
        xp = nb.namespace()
        m = Tensor(xp.asarray([1, 2])).mean()
        assert m.dtype == xp.float32 and float(m.item()) == 1.5
