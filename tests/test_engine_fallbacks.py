"""Engine paths for backends that lack a capability, exercised on NumPy by handing the engine
a copy of NumPy's backend record with that capability switched off."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

import nnbackend as nb
from nnbackend.errors import ShapeError
from nnbackend.nn import functional as F

namespace_module = sys.modules["nnbackend.namespace"]


@pytest.fixture
def numpy_without_inplace(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = np.zeros(1)
    xp, record = namespace_module.backend_for(probe)
    caps = dataclasses.replace(record.capabilities, inplace=False)
    monkeypatch.setitem(
        namespace_module._by_type, np.ndarray, (xp, dataclasses.replace(record, capabilities=caps))
    )


def test_basic_indexing_gradient_without_inplace_writes(numpy_without_inplace: None) -> None:
    x = nb.random.Generator(0).normal((3, 4))

    def f(t: nb.Tensor) -> nb.Tensor:
        return (t[1:, ::2] * 3.0).sum() + t[:, 0].sum() + t[2, 3] * 2.0 + t[None, 1, :].sum()

    assert nb.gradcheck(f, x)
    w = nb.Tensor(x, requires_grad=True)
    (w[0, 1:3] * 2.0).sum().backward()
    expected = np.zeros((3, 4))
    expected[0, 1:3] = 2.0
    np.testing.assert_array_equal(w.grad, expected)


def test_softmax_cross_entropy_names_the_shape_it_needs() -> None:
    logits = nb.random.Generator(0).normal((2, 3, 4))
    # (N, T, C) logits take (N, T) labels (issue 15); labels of another shape are refused.
    with pytest.raises(ShapeError, match=r"shape \(N, C\), got \(2, 3, 4\)"):
        F.softmax_cross_entropy(logits, nb.namespace().asarray([0, 1]))
