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
from nnbackend.errors import BackendMismatchError, GradientError, ShapeError

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


def test_truth_of_a_tensor_is_numpys_on_every_backend(xp64: Any) -> None:
    """One element: its truth (array-api-strict took only 0-d arrays); more: a ShapeError,
    which is a ValueError as NumPy's is (each library raised its own)."""
    assert bool(Tensor(xp64.asarray([2.0]))) is True
    assert bool(Tensor(xp64.asarray(0.0))) is False
    with pytest.raises(ShapeError, match="ambiguous"):
        bool(Tensor(xp64.asarray([1.0, 2.0])))
    with pytest.raises(ValueError):
        if Tensor(xp64.asarray([1.0, 2.0])):
            pass


@pytest.mark.parametrize("other", ["numpy", "torch"])
def test_backward_with_another_librarys_gradient_is_a_typed_error(xp64: Any, other: str) -> None:
    """A gradient array of another library was an AttributeError or TypeError of the
    backend's ('numpy.ndarray' object has no attribute 'to'); JAX, which takes NumPy
    arrays of its dtypes, still does."""
    w = Tensor(xp64.asarray([1.0, 2.0]), requires_grad=True)
    y = w * 2.0
    if other == "numpy":
        grad: Any = np.ones(2)
    else:
        torch = pytest.importorskip("torch")
        grad = torch.ones(2, dtype=torch.float64)
    same = type(grad).__module__.partition(".")[0] == type(y.data).__module__.partition(".")[0]
    jax_takes_numpy = "jax" in xp64.__name__ and other == "numpy"
    if same or jax_takes_numpy:
        y.backward(grad)
        np.testing.assert_array_equal(_host(w.grad), [2.0, 2.0])
        return
    with pytest.raises(BackendMismatchError, match=r"nb\.to_device"):
        y.backward(grad)
    assert w.grad is None


def test_backward_with_a_complex_gradient_is_refused(xp64: Any) -> None:
    """Its imaginary part was dropped silently (as ``t[key] = value`` refuses it)."""
    w = Tensor(xp64.asarray([1.0, 2.0]), requires_grad=True)
    y = w * 2.0
    grad = xp64.asarray([1 + 1j, 1 + 1j])
    with pytest.raises(GradientError, match="complex"):
        y.backward(grad)


def test_one_element_tensors_convert_as_numpy_scalars_do(xp64: Any) -> None:
    """``int(t)``, ``f"{loss:.4f}"``, ``lst[i]`` and ``+t`` were TypeErrors."""
    t = Tensor(xp64.asarray([3.7]))
    assert int(t) == 3
    assert f"{t:.2f}" == "3.70"
    assert f"{Tensor(xp64.asarray(0.5)):.1e}" == "5.0e-01"
    i = Tensor(xp64.asarray(2))
    assert [10, 20, 30][i] == 30 and list(range(i)) == [0, 1]
    assert +t is t
    with pytest.raises(TypeError, match="integer"):
        [1, 2][Tensor(xp64.asarray(1.0))]
    assert f"{Tensor(xp64.asarray([1.0, 2.0]))}".startswith("Tensor(")
