"""Fixes and attacks on the functional API's indexing and reductions (``F.getitem`` /
``Tensor.__getitem__``, ``F.take``, ``F.max`` / ``F.min`` / ``F.argmax`` / ``F.argmin``,
``F.sum`` / ``F.mean`` over axes, keepdims, negative and tuple axes, empty arrays, NaN):
several integer index arrays (NumPy's advanced indexing, with ``np.add.at`` gradients),
index arrays of another library, and reductions of empty arrays, compared with NumPy and
torch on every selected backend (``NNBACKEND_TEST_BACKENDS``) in float64."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import nnbackend as nb
import nnbackend.functional as F
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import ArgumentError, DtypeError, NNBackendError, ShapeError


def _leaf(xp: Any, values: Any) -> Tensor:
    return Tensor(xp.asarray(np.asarray(values, dtype=float).tolist()), requires_grad=True)


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, Tensor) else a
    out = np.asarray(a.tolist() if hasattr(a, "tolist") else np.asarray(a), dtype=float)
    return out.reshape(tuple(a.shape))


def _to_backend(xp: Any, key: Any) -> Any:
    """``key`` with its NumPy integer arrays as arrays of ``xp``."""
    if isinstance(key, tuple):
        return tuple(_to_backend(xp, k) for k in key)
    if isinstance(key, np.ndarray):
        return xp.asarray(key.tolist(), dtype=xp.bool if key.dtype == bool else xp.int64)
    return key


X3 = np.arange(24.0).reshape(2, 3, 4)
R = np.random.default_rng(0).standard_normal((2, 3, 4))


def _check_against_numpy(xp: Any, a: np.ndarray, key: Any) -> None:
    """Forward equal to NumPy's ``a[key]``; gradient of ``sum(w * x[key])`` equal to
    ``np.add.at(zeros, key, w)``."""
    want = a[key]
    x = _leaf(xp, a)
    y = F.getitem(x, _to_backend(xp, key))
    assert tuple(y.shape) == want.shape
    np.testing.assert_array_equal(_host(y), want)
    w = np.arange(1.0, want.size + 1).reshape(want.shape)
    (
        y * Tensor(xp.reshape(xp.asarray(w.ravel().tolist(), dtype=xp.float64), w.shape))
    ).sum().backward()
    g = np.zeros_like(a)
    np.add.at(g, key, w)
    np.testing.assert_array_equal(_host(x.grad), g)


ADVANCED_KEYS = [
    (np.array([0, 1]), np.array([1, 2])),
    (np.array([0, 1, 1]), np.array([2, 2, 2])),  # repeated: gradients accumulate
    (np.array([[0], [1]]), np.array([0, 2, 2])),  # broadcast to (2, 3)
    (np.array([1, 0]), np.array([2, 1]), np.array([3, -1])),  # every axis, a negative index
    (slice(None), np.array([0, 2, 2]), np.array([1, 3, 1])),  # adjacent after a slice
    (np.array([0, 1]), slice(None), np.array([3, 0])),  # separated: index axes first
    (Ellipsis, np.array([0, 2]), np.array([1, 3])),
    (np.array([1, 1]), np.array([0, 2]), slice(None, None, -1)),  # and a reversed slice
    (slice(None), np.array([0, 2])),  # one array, not on the first axis
    (slice(None), slice(1, 3), np.array([3, 0, 3])),
    (1, np.array([0, 2]), np.array([1, 1])),  # an int next to the arrays
    (slice(None), 1, np.array([0, 3])),
    (None, np.array([0, 1]), np.array([2, 0])),
    (np.array([0, 1]), None, np.array([2, 0])),
    (np.array([[0, 1], [1, 0]]), np.array([[2, 0], [1, 1]]), slice(1, 3)),
    (np.array([True, False]), slice(None), np.array([0, 3])),  # a mask with an array
    (np.array([0, 1]), np.array([[True, False, False, False], [False] * 4, [False] * 3 + [True]])),
    (np.array([], dtype=int), np.array([], dtype=int)),
]


@pytest.mark.parametrize("key", ADVANCED_KEYS, ids=[str(i) for i in range(len(ADVANCED_KEYS))])
def test_several_index_arrays_match_numpy(xp64: Any, key: Any) -> None:
    """``x[[0, 1], [1, 2]]`` (and every other key with an index array off the first axis or
    more than one array) raised a bare NotImplementedError: it now gathers as NumPy does,
    with gradients that accumulate repeated elements (``np.add.at``)."""
    try:
        _check_against_numpy(xp64, R, key)
    except ArgumentError as e:  # only a backend without data-dependent shapes (jax)
        assert "boolean mask" in str(e)


def test_two_index_lists_gradient_matches_torch(xp64: Any) -> None:
    """``x[[0, 1, 1], [1, 2, 2]]`` with lists raised NotImplementedError; forward and
    gradient now equal torch's."""
    torch = pytest.importorskip("torch")
    a = np.arange(12.0).reshape(3, 4)
    x = _leaf(xp64, a)
    y = x[[0, 1, 1], [1, 2, 2]]
    t = torch.tensor(a, requires_grad=True)
    ty = t[[0, 1, 1], [1, 2, 2]]
    np.testing.assert_array_equal(_host(y), ty.detach().numpy())
    (y * y).sum().backward()
    (ty * ty).sum().backward()
    np.testing.assert_array_equal(_host(x.grad), t.grad.numpy())


def test_several_index_arrays_second_derivative(xp64: Any) -> None:
    """The gather with several index arrays kept no second derivative path: the gradient of
    ``sum(x[i, j] ** 3)`` is now itself differentiable (the Hessian diagonal adds up)."""
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    x = _leaf(xp64, a)
    y = x[[0, 1, 1], [1, 0, 0]]
    (g,) = nb.grad((y**3).sum(), x, create_graph=True)
    # d/dx of 3 x^2 * count: 6 x * count
    g.sum().backward()
    count = np.array([[0.0, 1.0], [2.0, 0.0]])
    np.testing.assert_allclose(_host(x.grad), 6 * a * count)


@pytest.mark.parametrize(
    "key",
    [
        (np.array([0, 2]), np.array([1, 4])),  # 4 is past the end of an axis of length 4
        (np.array([0, 3]), np.array([1, 1])),  # 3 past an axis of length 3: flat index fits
        (np.array([-4, 0]), np.array([0, 0])),
        (1, np.array([0, 1]), np.array([4, 0])),
    ],
)
def test_out_of_range_index_arrays_are_shape_errors(xp64: Any, key: Any) -> None:
    """An index past an axis among several arrays must not wrap into the flattened
    neighbours (``x[[0, 3], [1, 1]]`` on a (3, 4) array is row 3, which does not exist): a
    ShapeError naming the axis, as NumPy's IndexError."""
    a = np.arange(12.0).reshape(3, 4) if len(key) == 2 else X3
    with pytest.raises(IndexError):
        a[key]
    with pytest.raises(ShapeError, match="out of range"):
        F.getitem(_leaf(xp64, a), _to_backend(xp64, key))


def test_index_arrays_that_do_not_broadcast_are_shape_errors(xp64: Any) -> None:
    """Index arrays of shapes (2,) and (3,) got a bare NotImplementedError; NumPy raises
    "shape mismatch": a ShapeError naming both shapes."""
    x = _leaf(xp64, np.arange(12.0).reshape(3, 4))
    with pytest.raises(ShapeError, match=r"\(2,\).*\(3,\)"):
        x[[0, 1], [0, 1, 2]]


def test_float_index_array_among_several_is_a_dtype_error(xp64: Any) -> None:
    """A float index array next to another array got NotImplementedError: a DtypeError."""
    x = _leaf(xp64, np.arange(12.0).reshape(3, 4))
    with pytest.raises(DtypeError, match="integer"):
        x[xp64.asarray([0, 1]), xp64.asarray([0.0, 1.0])]


def test_int_and_array_split_by_slice_is_refused(xp64: Any) -> None:
    """``x[0, :, idx]`` is (2, 3)-shaped in NumPy but (3, 2) in torch: the engine, one code
    base for both, refuses it with an ArgumentError saying how to write either order."""
    x = _leaf(xp64, X3)
    with pytest.raises(ArgumentError, match=r"x\[0\]\[:, idx\]"):
        x[0, :, xp64.asarray([0, 1])]
    # the spelling the message gives works, as torch's order
    np.testing.assert_array_equal(_host(x[0][:, xp64.asarray([0, 1])]), X3[0][:, [0, 1]])


def test_unsupported_index_is_typed(xp64: Any) -> None:
    """An index that is no index at all (a string among arrays) raised a bare error: an
    NNBackendError saying what an index may be."""
    x = _leaf(xp64, np.arange(12.0).reshape(3, 4))
    with pytest.raises(NNBackendError):
        x[[0, 1], "a"]


@pytest.mark.parametrize("key", [np.array([0, 2]), (np.array([0, 2]), slice(None))])
def test_numpy_index_array_on_another_backend(backend: str, key: Any) -> None:
    """A NumPy index array for a torch / array_api_strict Tensor got a misleading "is not an
    integer" DtypeError (torch) or a ShapeError about a dtype (array_api_strict): it is now
    converted to the Tensor's backend, as torch does for lists, with its gradient."""
    with nb.using(backend=backend, dtype="float64"):
        xp = nb.namespace()
        a = np.arange(12.0).reshape(3, 4)
        x = _leaf(xp, a)
        y = x[key]
        np.testing.assert_array_equal(_host(y), a[key])
        y.sum().backward()
        g = np.zeros_like(a)
        np.add.at(g, key, 1.0)
        np.testing.assert_array_equal(_host(x.grad), g)
        # two arrays, one of them NumPy's
        y2 = x[np.array([0, 2]), xp.asarray([1, 3])]
        np.testing.assert_array_equal(_host(y2), a[[0, 2], [1, 3]])


# -- reductions -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("shape, axis", [((0,), None), ((0, 3), 0), ((0, 3), None), ((2, 0), -1)])
def test_extremum_of_empty_axis_is_a_shape_error(
    xp64: Any, name: str, shape: tuple[int, ...], axis: Any
) -> None:
    """``F.min`` / ``F.max`` of an empty axis raised NumPy's bare "zero-size array to
    reduction operation maximum" ValueError (torch: IndexError), naming max for a min: a
    ShapeError naming the function, the shape and the fix."""
    x = Tensor(xp64.zeros(shape), requires_grad=True)
    with pytest.raises(ShapeError, match=rf"{name}: .*{shape}.*length > 0"):
        getattr(F, name)(x, axis)
    if name == "max":
        with pytest.raises(ShapeError, match="max"):
            x.max(axis)
    else:
        with pytest.raises(ShapeError, match="min"):
            x.min(axis)


@pytest.mark.parametrize("name", ["max", "min"])
def test_extremum_over_non_empty_axis_of_empty_array(xp64: Any, name: str) -> None:
    """A guard for the empty-axis error: reducing a (0, 3) array over its axis of length 3
    still gives shape (0,) as in NumPy, and
    keepdims (0, 1), with a gradient of shape (0, 3)."""
    x = Tensor(xp64.zeros((0, 3)), requires_grad=True)
    y = getattr(F, name)(x, 1)
    assert tuple(y.shape) == (0,)
    assert tuple(getattr(F, name)(x, -1, keepdims=True).shape) == (0, 1)
    y.sum().backward()
    assert tuple(x.grad.shape) == (0, 3)


@pytest.mark.parametrize(
    "key",
    [
        slice(1, 10),
        slice(-10, None),
        (slice(5, None), slice(None, None, -1)),
        (Ellipsis, slice(-7, 2)),
        (slice(None, 99), np.array([0, 2])),
    ],
)
def test_slice_ends_past_the_axis_are_clamped(xp64: Any, key: Any) -> None:
    """``x[1:10]`` of a length-3 axis (the last batch of ``x[i:i + batch]``) is clamped by
    NumPy and torch, but array_api_strict rejected it with a ShapeError (and with a reversed
    axis too, a bare IndexError): the ends are now clamped on every backend."""
    a = np.arange(9.0).reshape(3, 3)
    x = _leaf(xp64, a)
    y = F.getitem(x, _to_backend(xp64, key))
    np.testing.assert_array_equal(_host(y), a[key])
    y.sum().backward()
    g = np.zeros_like(a)
    np.add.at(g, key, 1.0)
    np.testing.assert_array_equal(_host(x.grad), g)


# -- attacks: take, indices below -n, axes ---------------------------------------------------
def test_index_below_minus_n_is_not_wrapped(xp64: Any, gathers_nan: bool) -> None:
    """``F.take(x, [-5], axis=1)`` on an axis of length 4 (and ``x[xp.asarray([-4])]`` on 3
    rows) silently returned the last element: -5 + 4 = -1 wrapped again. NumPy and torch
    raise: now a ShapeError (NaN on a device, where checking would synchronise)."""
    x = _leaf(xp64, np.arange(12.0).reshape(3, 4))
    if gathers_nan:
        assert np.isnan(_host(F.take(x, xp64.asarray([-5]), 1))).all()
        assert np.isnan(_host(x[xp64.asarray([-4])])).all()
        np.testing.assert_array_equal(_host(F.take(x, xp64.asarray([-4]), 1)).ravel(), [0, 4, 8])
        return
    with pytest.raises(ShapeError, match="out of range"):
        F.take(x, xp64.asarray([-5]), 1)
    with pytest.raises(ShapeError):
        x[xp64.asarray([-4])]
    with pytest.raises(ShapeError):
        x[xp64.asarray([0, -4]), xp64.asarray([0, 0])]
    np.testing.assert_array_equal(_host(F.take(x, xp64.asarray([-4]), 1)), [[0.0], [4.0], [8.0]])


def test_out_of_range_index_list_says_out_of_range(xp64: Any, gathers_nan: bool) -> None:
    """``x[[3]]`` on 3 rows said "index [3] is not an integer" (a DtypeError): now a
    ShapeError saying the index is out of bounds (NaN rows on a device)."""
    x = _leaf(xp64, np.arange(12.0).reshape(3, 4))
    if gathers_nan:
        assert np.isnan(_host(x[[3]])).all()
        return
    with pytest.raises(ShapeError, match="out of"):
        x[[3]]


def test_take_axis_none_flattens_as_numpy(xp64: Any) -> None:
    """``F.take(x, idx, axis=None)`` raised a bare TypeError ('<=' between int and None):
    it now takes from the flattened array, as ``numpy.take``, with gradients."""
    a = np.arange(12.0).reshape(3, 4)
    x = _leaf(xp64, a)
    y = F.take(x, [5, 5, -1], None)
    np.testing.assert_array_equal(_host(y), np.take(a, [5, 5, -1]))
    y.sum().backward()
    g = np.zeros(12)
    np.add.at(g, [5, 5, -1], 1.0)
    np.testing.assert_array_equal(_host(x.grad), g.reshape(3, 4))


def test_take_numpy_indices_on_another_backend(backend: str) -> None:
    """``F.take(t, np.array([0, 1]), 1)`` on torch said "indices must be integers, got
    int64", and array_api_strict raised a bare TypeError: the indices are converted."""
    with nb.using(backend=backend, dtype="float64"):
        xp = nb.namespace()
        a = np.arange(12.0).reshape(3, 4)
        y = F.take(_leaf(xp, a), np.array([0, 3]), 1)
        np.testing.assert_array_equal(_host(y), np.take(a, [0, 3], 1))


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "prod", "var", "logsumexp"])
def test_numpy_integer_axis(xp64: Any, name: str) -> None:
    """``F.sum(x, np.int64(1))`` (an axis from NumPy, e.g. ``np.argmax`` or a loop over
    ``np.arange``) raised a bare "'numpy.int64' object is not iterable" TypeError: NumPy
    integers are axes, as in NumPy and torch."""
    a = np.arange(12.0).reshape(3, 4) / 7
    x = _leaf(xp64, a)
    got = getattr(F, name)(x, np.int64(-1))
    want = getattr(F, name)(x, -1)
    np.testing.assert_allclose(_host(got), _host(want))
    got = getattr(F, name)(x, (np.int64(0), 1))
    assert tuple(got.shape) == ()


@pytest.mark.parametrize("axis", [1.0, "a", (0, 1.5), True])
def test_non_integer_axis_is_an_argument_error(xp64: Any, axis: Any) -> None:
    """An axis of 1.0 or "a" ended in a bare TypeError from deep inside: an ArgumentError
    saying the axis must be an int, a tuple of ints or None."""
    x = _leaf(xp64, np.ones((2, 3)))
    for fn in (F.sum, F.mean, F.max, F.min):
        with pytest.raises(ArgumentError, match="not an integer"):
            fn(x, axis)


@pytest.mark.parametrize("axis", [(0, 1), 1.0])
def test_argmax_bad_axis_is_an_argument_error(xp64: Any, axis: Any) -> None:
    """``F.argmax(x, (0, 1))`` raised a bare "'tuple' object cannot be interpreted as an
    integer" TypeError: an ArgumentError."""
    x = _leaf(xp64, np.ones((2, 3)))
    with pytest.raises(ArgumentError, match="not an integer"):
        F.argmax(x, axis)
    with pytest.raises(ArgumentError):
        F.argmin(x, axis)


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "prod"])
def test_zero_d_reduction_over_axis_zero(xp64: Any, name: str) -> None:
    """Reducing a 0-d array over axis 0 raised NumPy's bare AxisError on numpy and
    array_api_strict, worked on torch (and F.mean raised IndexError there): every backend
    now does as torch (axis 0 or -1 reduce nothing), and other axes are a ShapeError."""
    x = _leaf(xp64, 3.0)
    for axis in (0, -1, (0,)):
        y = getattr(F, name)(x, axis)
        assert tuple(y.shape) == ()
        assert float(_host(y)) == 3.0
    with pytest.raises(ShapeError, match="0-d"):
        getattr(F, name)(x, 1)


@pytest.mark.parametrize("key", [([1, 0], slice(None)), ([1, 0],), (Ellipsis, [2, 0])])
def test_list_among_tuple_parts(xp64: Any, key: Any) -> None:
    """``x[[1, 0], :]`` (a list inside a tuple key) raised "index [1, 0] is not an integer",
    a DtypeError, though ``x[[1, 0]]`` worked: lists are index arrays anywhere, as NumPy."""
    a = np.arange(6.0).reshape(2, 3)
    x = _leaf(xp64, a)
    y = x[key]
    np.testing.assert_array_equal(_host(y), a[key])
    y.sum().backward()
    g = np.zeros_like(a)
    np.add.at(g, key, 1.0)
    np.testing.assert_array_equal(_host(x.grad), g)


def test_a_float_index_list_among_several_is_refused(xp64: Any) -> None:
    """``x[[1.7, 1], [0, 1]]`` converted the list straight to int64 and read ``x[[1, 1], [0,
    1]]`` (NumPy refuses float indices): lists now go through the one conversion of
    ``ops.own_index``, and a float index array is a DtypeError."""
    x = _leaf(xp64, np.arange(12.0).reshape(3, 4))
    with pytest.raises(DtypeError):
        x[[1.7, 1], [0, 1]]
    np.testing.assert_array_equal(_host(x[[True, 1], [0, 1]]), [4.0, 5.0])  # as NumPy
