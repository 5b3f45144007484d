"""Review of the functional API (``nnbackend.functional`` / ``autograd/functions.py``): each
public function compared with NumPy (``numpy.pad``, ``numpy.where``, ``numpy.take``,
``numpy.expand_dims``, logsumexp's definition, indexing) and torch, and fed user mistakes
(bad widths, axes, shapes, indices and bounds), on numpy and array_api_strict in float64
(torch too where it is installed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import nnbackend as nb
import nnbackend.functional as F
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import ArgumentError, DtypeError, NNBackendError, ShapeError

BACKENDS = ["numpy", "array_api_strict"]
try:
    import torch  # noqa: F401

    BACKENDS.append("torch")
except ImportError:  # pragma: no cover - torch is optional
    pass


@pytest.fixture(params=BACKENDS)
def xp(request: Any) -> Any:
    with nb.using(backend=request.param, dtype="float64"):
        yield nb.namespace()


def _leaf(xp: Any, values: Any) -> Tensor:
    return Tensor(xp.asarray(np.asarray(values, dtype=float).tolist()), requires_grad=True)


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, Tensor) else a
    return np.asarray(a.tolist() if hasattr(a, "tolist") else a, dtype=float)


A = np.arange(6.0).reshape(2, 3)


@pytest.mark.parametrize(
    "width", [1, (1,), (1, 2), ((1, 2),), [(0, 1), (2, 0)], (np.int64(1), np.int64(2))]
)
def test_pad_accepts_numpy_widths(xp: Any, width: Any) -> None:
    """``F.pad(x, 1)`` raised "'int' object is not iterable", and pairs of NumPy integers or
    ``(n,)`` / ``((b, a),)`` failed: every form ``numpy.pad`` accepts now works."""
    x = _leaf(xp, A)
    y = F.pad(x, width)
    np.testing.assert_array_equal(_host(y), np.pad(A, width))
    y.sum().backward()
    np.testing.assert_array_equal(_host(x.grad), np.ones_like(A))


@pytest.mark.parametrize("width", [1.5, -1, "ab", [(1, 2, 3), (1, 1)]])
def test_pad_bad_widths_are_argument_errors(xp: Any, width: Any) -> None:
    """Float, negative, string or three-number widths raised bare TypeError / ValueError."""
    with pytest.raises(ArgumentError, match="pad_width"):
        F.pad(_leaf(xp, A), width)


def test_logsumexp_over_an_empty_axis_is_minus_inf(xp: Any) -> None:
    """``logsumexp`` over an axis of length 0 raised a bare ValueError (the maximum has no
    identity); ``log(sum(exp([])))`` is -inf, as in NumPy and torch."""
    x = _leaf(xp, np.zeros((2, 0)))
    y = F.logsumexp(x, axis=1)
    assert _host(y).tolist() == [-np.inf, -np.inf]
    assert F.logsumexp(x, axis=1, keepdims=True).shape == (2, 1)
    assert float(_host(F.logsumexp(x))) == -np.inf
    y.sum().backward()
    assert x.grad.shape == (2, 0)


def test_where_with_two_python_scalars(xp: Any) -> None:
    """``F.where(cond, 1.0, 0.0)`` raised a bare TypeError (no array input); it is
    ``numpy.where``'s array of the active float dtype."""
    cond = xp.asarray([True, False, True])
    y = F.where(cond, 1.0, 0.0)
    assert _host(y).tolist() == [1.0, 0.0, 1.0]
    assert y.dtype == xp.float64


def test_where_condition_list_and_mistakes(xp: Any) -> None:
    """A list condition failed on strict and torch with a bare TypeError; a float condition
    or shapes that do not broadcast raised bare backend errors."""
    x = _leaf(xp, A)
    y = F.where([True, False, True], x, 0.0)
    np.testing.assert_array_equal(_host(y), np.where([True, False, True], A, 0.0))
    with pytest.raises(ShapeError, match="broadcast"):
        F.where(xp.asarray([True, False]), x, 0.0)


def test_where_float_condition_is_a_dtype_error() -> None:
    """A float condition raised a bare TypeError on strict ("must be have a boolean")."""
    with nb.using(backend="array_api_strict", dtype="float64"):
        xp = nb.namespace()
        with pytest.raises(DtypeError, match="boolean"):
            F.where(xp.asarray([1.0, 0.0, 1.0]), _leaf(xp, A), 0.0)


@pytest.mark.parametrize(
    "key", [[True, False], "gt2", (slice(None), [True, False, True]), (Ellipsis, [False] * 3)]
)
def test_boolean_mask_indexing_with_gradient(xp: Any, key: Any) -> None:
    """A boolean mask in ``F.getitem`` / ``x[mask]`` raised NotImplementedError; it selects
    like NumPy and the gradient goes back to the selected elements."""
    x = _leaf(xp, A)
    if key == "gt2":
        np_key: Any = A > 2
        key = x > 2
    elif isinstance(key, tuple):
        np_key = tuple(np.asarray(k) if isinstance(k, list) else k for k in key)
        key = tuple(xp.asarray(k) if isinstance(k, list) else k for k in key)
    else:
        np_key = np.asarray(key)
        key = xp.asarray(key)
    y = x[key]
    np.testing.assert_array_equal(_host(y), A[np_key])
    (y * y).sum().backward()
    want = np.zeros_like(A)
    want[np_key] = 2 * A[np_key]
    np.testing.assert_array_equal(_host(x.grad), want)


def test_boolean_mask_gradcheck_and_wrong_shape() -> None:
    """The mask's gradient (float64, central differences); a mask of the wrong shape is a
    ShapeError naming both shapes."""
    x = Tensor(np.random.default_rng(0).normal(size=(3, 4)), requires_grad=True)
    mask = np.array([[True, False, True, True]] * 3)
    assert nb.gradcheck(lambda t: F.getitem(t, mask) ** 2, x)
    with pytest.raises(ShapeError, match=r"\(2,\).*\(3, 4\)"):
        F.getitem(x, np.array([True, False]))


def test_sum_to_a_shape_that_does_not_broadcast() -> None:
    """``F.sum_to(x of (2, 3), (4,))`` silently returned the column sums, shape (3,); it is a
    ShapeError (``(4,)`` does not broadcast to ``(2, 3)``)."""
    x = Tensor(A, requires_grad=True)
    with pytest.raises(ShapeError, match="sum_to"):
        F.sum_to(x, (4,))
    assert _host(F.sum_to(x, (1, 3))).tolist() == [[3.0, 5.0, 7.0]]


def test_take_out_of_range_indices(xp: Any) -> None:
    """``F.take(x, [-4], axis=1)`` on an axis of 3 silently gave the last column (the -1 left
    after adding 3 wrapped again); ``[5]`` raised a bare IndexError / RuntimeError."""
    x = _leaf(xp, A)
    for idx in ([-4], [5], [[0], [3]]):
        with pytest.raises(ShapeError, match="out of range"):
            F.take(x, idx, axis=1)
    np.testing.assert_array_equal(_host(F.take(x, [-3, 2], axis=1)), np.take(A, [-3, 2], 1))


def test_take_empty_index_list(xp: Any) -> None:
    """``F.take(x, [], axis=1)`` said "indices must be integers, got float64"."""
    assert F.take(_leaf(xp, A), [], axis=1).shape == (2, 0)


def test_strict_integer_index_of_a_matrix() -> None:
    """``x[0]`` of a 2-d Tensor on array_api_strict raised a bare IndexError (the standard
    wants ``x[0, ...]``); it is row 0, with its gradient."""
    with nb.using(backend="array_api_strict", dtype="float64"):
        x = _leaf(nb.namespace(), A)
        y = x[0] + x[1:2][0]
        assert _host(y).tolist() == [3.0, 5.0, 7.0]
        y.sum().backward()
        assert _host(x.grad).tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]


def test_numpy_integer_index(xp: Any) -> None:
    """``x[np.int64(1)]`` raised "is not an integer" (torch) or a bare TypeError (strict)."""
    x = _leaf(xp, A)
    assert _host(x[np.int64(1)]).tolist() == [3.0, 4.0, 5.0]
    assert _host(F.getitem(x, (np.int64(1), slice(None, None, -1)))).tolist() == [5.0, 4.0, 3.0]


def test_extremum_of_two_python_scalars() -> None:
    """``F.maximum(1.0, 2.0)`` raised a bare TypeError; NumPy gives 2.0."""
    assert float(_host(F.maximum(1.0, 2.0))) == 2.0
    assert float(_host(F.minimum(1.0, 2.0))) == 1.0


def test_expand_dims_tuple_of_axes(xp: Any) -> None:
    """``F.expand_dims(x, (0, 1))`` raised a bare TypeError; NumPy accepts a tuple."""
    for axes in ((0, 1), (0, -1), (1, 3)):
        assert F.expand_dims(_leaf(xp, A), axes).shape == np.expand_dims(A, axes).shape


def test_clip_nan_bound_is_an_error(xp: Any) -> None:
    """``F.clip(x, nan, 4)`` silently ignored the NaN bound (NumPy and torch give all NaN);
    array bounds raised "truth value of an array is ambiguous"."""
    x = _leaf(xp, A)
    with pytest.raises(ArgumentError, match="NaN"):
        F.clip(x, float("nan"), 4.0)
    with pytest.raises(ArgumentError, match=r"F\.maximum"):
        F.clip(x, xp.asarray([0.0, 1.0, 2.0]), 3.0)
    assert _host(F.clip(x, np.float32(1.0), 4)).tolist() == np.clip(A, 1, 4).tolist()


def _mistakes(xp: Any) -> list[tuple[str, Any]]:
    x = _leaf(xp, A)
    zero = _leaf(xp, np.zeros((0,)))
    return [
        ("concat ndim", lambda: F.concat([x, _leaf(xp, [1.0, 2.0])], axis=0)),
        ("concat shapes", lambda: F.concat([x, _leaf(xp, np.ones((2, 2)))], axis=0)),
        ("concat 0-d", lambda: F.concat([_leaf(xp, 1.0), _leaf(xp, 2.0)])),
        ("flip axis", lambda: F.flip(x, 5)),
        ("argmax axis", lambda: F.argmax(x, axis=3)),
        ("argmax empty", lambda: F.argmax(zero)),
        ("argmin empty", lambda: F.argmin(zero)),
        ("broadcast_to", lambda: F.broadcast_to(x, (3, 3))),
        ("broadcast_to negative", lambda: F.broadcast_to(x, (2, -1))),
        ("maximum broadcast", lambda: F.maximum(x, _leaf(xp, np.ones(4)))),
        ("split numpy int", lambda: F.split(x, 1.5, axis=1)),
        ("split float lengths", lambda: F.split(x, [1.5, 2.5], axis=1)),
        ("einsum two arrows", lambda: F.einsum("ij->j->i", x)),
        ("getitem step 0", lambda: F.getitem(x, slice(None, None, 0))),
        ("getitem out of bounds", lambda: F.getitem(x, 5)),
        ("getitem too many", lambda: F.getitem(x, (0, 1, 2, slice(None, None, -1)))),
    ]


@pytest.mark.parametrize("case", range(16))
def test_user_mistakes_raise_nnbackend_errors(xp: Any, case: int) -> None:
    """Each raised a bare ValueError / TypeError / IndexError / RuntimeError / AxisError from
    inside the backend, not an nnbackend error saying what was wrong."""
    name, call = _mistakes(xp)[case]
    with pytest.raises(NNBackendError) as info:
        call()
    assert str(info.value), name


def test_split_numpy_integer_sections(xp: Any) -> None:
    """``F.split(x, np.int64(3), axis=1)`` raised "'numpy.int64' object is not iterable"."""
    parts = F.split(_leaf(xp, A), np.int64(3), axis=1)
    assert [_host(p).tolist() for p in parts] == [p.tolist() for p in np.split(A, 3, axis=1)]
