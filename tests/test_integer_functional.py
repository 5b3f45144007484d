"""``nnbackend.functional`` on integer and boolean arrays, and axes given as NumPy integers,
compared with NumPy on every backend.

Found by a differential run of every function against NumPy: ``maximum``/``minimum`` cast a
Python float to the integers (``maximum([0, 1, -2], 0.5)`` was ``[0, 1, 0]``), ``min`` of
integers was ``-max(-x)``, which wraps at the bottom of the range (``min`` of uint8
``[0, 5, 200]`` was 5), ``clip`` made integers float, ``flip`` took no NumPy integer axis,
and ``softmax`` answered a bad axis or an empty array in its library's words.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import nnbackend as nb
import nnbackend.functional as F
import nnbackend.nn.functional as NF
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import ShapeError


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, Tensor) else a
    return np.asarray(a.tolist() if hasattr(a, "tolist") else np.asarray(a))


def _ints(xp: Any, values: Any, dtype: str = "int64") -> Tensor:
    return Tensor(xp.asarray(values, dtype=getattr(xp, dtype)))


@pytest.mark.parametrize("scalar_first", [False, True])
@pytest.mark.parametrize("fn", ["maximum", "minimum"])
def test_an_integer_array_and_a_float_give_floats(xp64: Any, fn: str, scalar_first: bool) -> None:
    values = [0, 1, -2, 3]
    t = _ints(xp64, values)
    got = getattr(F, fn)(0.5, t) if scalar_first else getattr(F, fn)(t, 0.5)
    np.testing.assert_array_equal(_host(got), getattr(np, fn)(np.asarray(values), 0.5))
    assert got.dtype == xp64.float64  # the active default float dtype
    same = getattr(F, fn)(t, 1)
    assert xp64.isdtype(same.dtype, "integral")
    np.testing.assert_array_equal(_host(same), getattr(np, fn)(np.asarray(values), 1))


@pytest.mark.parametrize(
    ("dtype", "values"),
    [("uint8", [0, 5, 200]), ("int8", [-128, 5, 7]), ("int64", [-(2**63), 0, 4])],
)
def test_min_of_integers_at_the_bottom_of_their_range(xp64: Any, dtype: str, values: Any) -> None:
    t = _ints(xp64, values, dtype)
    assert int(F.min(t).item()) == min(values)
    np.testing.assert_array_equal(_host(F.min(t, axis=0, keepdims=True)), [min(values)])


def test_min_of_bools_is_all(xp64: Any) -> None:
    b = Tensor(xp64.asarray([[True, False], [True, True]]))
    np.testing.assert_array_equal(_host(F.min(b, axis=1)), [False, True])


def test_clip_keeps_integers_and_takes_floats_as_numpy(xp64: Any) -> None:
    values = np.array([-3, 0, 5])
    whole = F.clip(_ints(xp64, values.tolist()), -1, 2)
    np.testing.assert_array_equal(_host(whole), np.clip(values, -1, 2))
    assert xp64.isdtype(whole.dtype, "integral")
    half = F.clip(_ints(xp64, values.tolist()), -1.5, 2)
    np.testing.assert_array_equal(_host(half), np.clip(values, -1.5, 2))
    assert half.dtype == xp64.float64


def test_flip_takes_a_numpy_integer_axis(xp64: Any) -> None:
    x = np.arange(6.0).reshape(2, 3)
    got = F.flip(Tensor(xp64.asarray(x)), np.int64(1))
    np.testing.assert_array_equal(_host(got), np.flip(x, 1))


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_axes_and_empty_arrays(xp64: Any, fn: str) -> None:
    f = getattr(NF, fn)
    x = Tensor(xp64.asarray(np.arange(6.0).reshape(2, 3)), requires_grad=True)
    with pytest.raises(ShapeError, match=f"{fn}: axis 5 is out of range"):
        f(x, 5)
    np.testing.assert_allclose(_host(f(x, np.int64(0))), _host(f(x, 0)))
    empty = Tensor(xp64.zeros((0, 3)), requires_grad=True)
    y = f(empty, 0)
    assert tuple(y.shape) == (0, 3)
    F.sum(y).backward()
    assert tuple(empty.grad.shape) == (0, 3)
    assert float(f(Tensor(xp64.asarray(2.0)), -1).item()) == (1.0 if fn == "softmax" else 0.0)


def test_the_mean_of_maximum_follows_a_float32_default(backend: str) -> None:
    with nb.using(backend=backend, dtype="float32"):
        xp = nb.namespace()
        got = F.maximum(Tensor(xp.asarray([0, 2])), 0.5)
        assert got.dtype == xp.float32
