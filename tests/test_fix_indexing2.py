"""Fixes and attacks on indexing, gathers and scatters with gradients (``Tensor[key]`` /
``F.getitem``, ``F.take``, ``nn.functional.embedding``, the backward's scatter-add and the
one-hot fallback of ``Ops.scatter_add`` that backends without an in-place scatter-add use):
keys with two ``...``, negative, out-of-range and narrow-dtype (int8, uint8, int16) index
arrays, index lists next to reversed slices, compared with NumPy (``np.add.at`` for the
gradients) on every selected backend (``NNBACKEND_TEST_BACKENDS``), array_api_strict's
fallback included."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnbackend as nb
import nnbackend.functional as F
import nnbackend.nn.functional as NF
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import ArgumentError, BackendMismatchError, ShapeError
from nnbackend.namespace import backend_for, ops_for


def _leaf(xp: Any, values: Any) -> Tensor:
    return Tensor(xp.asarray(np.asarray(values, dtype=float).tolist()), requires_grad=True)


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, Tensor) else a
    out = np.asarray(a.tolist() if hasattr(a, "tolist") else np.asarray(a), dtype=float)
    return out.reshape(tuple(a.shape))


X3 = np.arange(24.0).reshape(2, 3, 4)


@pytest.mark.parametrize(
    "key",
    [
        (Ellipsis, Ellipsis),
        (0, Ellipsis, Ellipsis),
        (Ellipsis, None, Ellipsis),
        (Ellipsis, 1, Ellipsis),
        (Ellipsis, slice(None), Ellipsis, 0),
    ],
    ids=["...,...", "0,...,...", "...,None,...", "...,1,...", "...,:,...,0"],
)
def test_two_ellipses_are_argument_errors_on_every_backend(xp64: Any, key: Any) -> None:
    """``x[..., ...]`` worked on torch (which accepts it) and ended in a ShapeError quoting
    NumPy's message elsewhere: an index with two ``...`` is now an ArgumentError saying so
    on every backend, as NumPy's IndexError, for Tensor indexing and F.getitem."""
    with pytest.raises(IndexError, match="single ellipsis"):
        X3[key]
    x = _leaf(xp64, X3)
    with pytest.raises(ArgumentError, match=r"one \.\.\."):
        x[key]
    with pytest.raises(ArgumentError, match=r"one \.\.\."):
        F.getitem(x, key)


def test_two_ellipses_refused_before_any_graph_is_built(xp64: Any) -> None:
    """The refusal of ``x[..., ...]`` came, on torch, never: the backward then wrote the
    gradient through the same key (the scatter's ``gx[key] = gy``). Now nothing is
    recorded: the leaf has no gradient after the failed call."""
    x = _leaf(xp64, X3)
    with pytest.raises(ArgumentError):
        x[Ellipsis, 0, Ellipsis].sum().backward()
    assert x.grad is None


NARROW = ["int8", "uint8", "int16", "int32"]


@pytest.mark.parametrize("dtype", NARROW)
@pytest.mark.parametrize("rows", [3, 200])
def test_narrow_integer_row_indices_match_numpy(xp64: Any, dtype: str, rows: int) -> None:
    """``x[idx]`` and ``F.take(x, idx)`` with an int8 / uint8 / int16 index array failed
    with valid indices: a bare OverflowError on NumPy and array_api_strict (``idx + n``
    with ``n`` past the dtype, or ``idx < -n`` for an unsigned one), and on torch a
    ShapeError claiming that in-range indices were out of range (its take wants int64).
    They now gather as NumPy does, gradients included."""
    a = np.arange(rows * 2.0).reshape(rows, 2)
    signed = not dtype.startswith("u")
    first = -min(rows, 128)  # the first row, as far as int8 reaches
    idx = np.array([1, 2, 2, -1, first] if signed else [1, 2, 2, rows - 1], dtype=dtype)
    want = a[idx]
    grad = np.zeros_like(a)
    np.add.at(grad, idx, 1.0)
    for gather in (lambda x, i: x[i], lambda x, i: F.take(x, i, 0)):
        x = _leaf(xp64, a)
        y = gather(x, xp64.asarray(idx.tolist(), dtype=getattr(xp64, dtype)))
        np.testing.assert_array_equal(_host(y), want)
        y.sum().backward()
        np.testing.assert_array_equal(_host(x.grad), grad)


@pytest.mark.parametrize("dtype", NARROW)
def test_narrow_integer_take_along_a_later_axis(xp64: Any, dtype: str) -> None:
    """``F.take(x, idx, 1)`` with a narrow integer dtype and a long axis raised a bare
    OverflowError (NumPy, strict) or RuntimeError (torch); it now matches ``np.take``."""
    a = np.arange(600.0).reshape(2, 300)
    idx = np.array([0, 255, 255, 5, 0] if dtype == "uint8" else [0, -1, -1, 5, -128], dtype=dtype)
    x = _leaf(xp64, a)
    y = F.take(x, xp64.asarray(idx.tolist(), dtype=getattr(xp64, dtype)), 1)
    np.testing.assert_array_equal(_host(y), np.take(a, idx, 1))
    y.sum().backward()
    grad = np.zeros_like(a)
    np.add.at(grad, (slice(None), idx), 1.0)
    np.testing.assert_array_equal(_host(x.grad), grad)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16"])
def test_embedding_narrow_integer_indices(xp64: Any, dtype: str) -> None:
    """``embedding(idx, w)`` with int8 / uint8 indices and a weight of more than 255 rows
    gave a silently wrong gradient on array_api_strict (the one-hot fallback built
    ``arange(rows)`` in the indices' dtype, which wrapped: row 5's gradient also went to
    row 261), and torch raised a bare RuntimeError (index_select wants int32/int64). Both
    now give NumPy's rows and ``np.add.at``'s gradient."""
    a = np.arange(600.0).reshape(300, 2)
    idx = np.array([5, 5, 100, 0], dtype=dtype)
    w = _leaf(xp64, a)
    y = NF.embedding(xp64.asarray(idx.tolist(), dtype=getattr(xp64, dtype)), w)
    np.testing.assert_array_equal(_host(y), a[idx])
    y.sum().backward()
    grad = np.zeros_like(a)
    np.add.at(grad, idx, 1.0)
    np.testing.assert_array_equal(_host(w.grad), grad)


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "int8"])
def test_scatter_add_fallback_matches_add_at(dtype: str) -> None:
    """The one-hot fallback of ``Ops.scatter_add`` (array_api_strict) dropped negative
    indices silently (one-hot of -1 matches no row) where ``np.add.at`` counts them from
    the end, and with uint8/int8 indices on more than 255 rows it added into wrapped rows
    too. It now agrees with ``np.add.at``."""
    xp = nb.namespace("array_api_strict", "float64")
    rows = 300
    idx = [5, 0, 5, 255] if dtype == "uint8" else [5, -1, 5, 0, -1, -300]
    if dtype == "int8":
        idx = [5, -1, 5, 0, -1, -128]
    values = np.arange(len(idx) * 2.0).reshape(len(idx), 2)
    target = xp.zeros((rows, 2), dtype=xp.float64)
    ops = ops_for(backend_for(target)[0], target)
    assert ops.record.scatter_add is None  # the fallback is what is tested
    out = ops.scatter_add(
        target,
        xp.asarray(idx, dtype=getattr(xp, dtype)),
        xp.asarray(values.tolist(), dtype=xp.float64),
    )
    want = np.zeros((rows, 2))
    np.add.at(want, np.array(idx), values)
    np.testing.assert_array_equal(_host(out), want)


@pytest.mark.parametrize(
    "key",
    [
        ([-1, 0], slice(None, None, -1)),
        ([1, 1], slice(None), slice(None, None, -2)),
        (slice(None, None, -1), [2, 0]),
    ],
    ids=["list,::-1", "list,:,::-2", "::-1,list"],
)
def test_index_list_next_to_a_reversed_slice(xp64: Any, key: Any) -> None:
    """``x[[-1, 0], ::-1]`` (a list of indices and a negative-step slice) ended in a bare
    AttributeError ('list' object has no attribute 'ndim'); it now matches NumPy, with
    ``np.add.at``'s gradient."""
    want = X3[key]
    x = _leaf(xp64, X3)
    y = x[key]
    np.testing.assert_array_equal(_host(y), want)
    y.sum().backward()
    grad = np.zeros_like(X3)
    np.add.at(grad, key, 1.0)
    np.testing.assert_array_equal(_host(x.grad), grad)


@pytest.mark.parametrize("other", ["numpy", "torch"])
def test_embedding_of_another_librarys_index_array_is_typed(xp64: Any, other: str) -> None:
    """``embedding(idx, w)`` with ``idx`` a NumPy array and ``w`` a torch (or strict)
    weight, or the other way round, ended in a bare TypeError / AttributeError from deep
    inside ('min(): argument dim must be int', "'str' object has no attribute 'type'"). It
    is now the BackendMismatchError every layer gives for another backend's input, saying
    how to move the data; indices of the weight's own backend still work."""
    if other == "torch":
        torch = pytest.importorskip("torch")
        idx: Any = torch.tensor([2, 0, 2])
    else:
        idx = np.array([2, 0, 2])
    a = np.arange(12.0).reshape(3, 4)
    w = _leaf(xp64, a)
    if type(idx) is type(w.data):
        y = NF.embedding(idx, w)
        np.testing.assert_array_equal(_host(y), a[[2, 0, 2]])
        return
    with pytest.raises(BackendMismatchError, match="to_backend"):
        NF.embedding(idx, w)


def test_embedding_of_a_0d_weight_is_a_shape_error(xp64: Any) -> None:
    """A 0-d embedding weight ended in a bare IndexError ('tuple index out of range'); it
    is now a ShapeError asking for a weight with rows."""
    w = _leaf(xp64, 3.0)
    with pytest.raises(ShapeError, match="rows"):
        NF.embedding(xp64.asarray([0]), w)


@pytest.mark.parametrize(
    "indices",
    [[[0], [1, 2]], "a", None, 1.5, {0: 1}],
    ids=["ragged", "str", "None", "float", "dict"],
)
def test_take_with_no_index_is_an_argument_error(xp64: Any, indices: Any) -> None:
    """``F.take(x, indices)`` with a ragged list, a string, None, a float or a dict ended
    in a bare ValueError or AttributeError ("'str' object has no attribute 'dtype'"); it is
    now an ArgumentError saying what indices it takes."""
    x = _leaf(xp64, np.arange(12.0).reshape(3, 4))
    with pytest.raises(ArgumentError, match="integer"):
        F.take(x, indices, 0)


# Key parts among which bool scalars sit: NumPy counts a bool scalar as a 0-d mask, an
# advanced index that broadcasts with the integers to one axis of length 1 or 0.
BOOL_KEY_PARTS = [0, -1, slice(None), slice(1, None), None, Ellipsis, True, False]


@given(
    parts=st.lists(st.sampled_from(BOOL_KEY_PARTS), min_size=1, max_size=4),
    kind=st.sampled_from(["python", "numpy", "0-d array"]),
)
@settings(max_examples=60, deadline=None)
def test_bool_scalars_in_a_key_index_as_numpy_on_every_backend(
    xp64: Any, parts: list[Any], kind: str
) -> None:
    """``x[0, :, True]`` is (1, 3, 4) in NumPy: the bool and the integer are advanced indices
    that broadcast to one axis, put first when a slice separates them. Torch put the bool's
    axis where the bool was, as ``None`` ((3, 1, 4): silently other values), array_api_strict
    refused bools with a ShapeError quoting itself, and ``x[0, np.True_]`` was "not an index"
    on every backend. Now each backend gives NumPy's values and gradient (ones where an
    element was picked), for Python bools, ``np.True_`` and 0-d boolean arrays alike."""
    convert = {
        "python": bool,
        "numpy": np.bool_,
        "0-d array": lambda b: np.array(b),
    }[kind]
    key = tuple(convert(k) if type(k) is bool else k for k in parts)
    if not any(type(k) is bool for k in parts) or sum(k is Ellipsis for k in parts) > 1:
        return
    try:
        expected = X3[key]
    except IndexError:  # more axes named than there are: a typed error here
        with pytest.raises(ShapeError):
            _leaf(xp64, X3)[key]
        return
    x = _leaf(xp64, X3)
    y = x[key]
    assert tuple(y.shape) == expected.shape
    np.testing.assert_array_equal(_host(y), expected)
    picked = np.zeros(X3.size)
    np.add.at(picked, np.arange(X3.size).reshape(X3.shape)[key].ravel(), 1.0)
    F.sum(y * 2.0).backward()
    np.testing.assert_array_equal(_host(x.grad), 2.0 * picked.reshape(X3.shape))


@pytest.mark.parametrize("key", [([0, 1], True), (True, [0]), (np.array([0, 1]), np.True_)])
def test_a_bool_scalar_among_index_arrays_is_an_argument_error(xp64: Any, key: Any) -> None:
    """NumPy broadcasts a bool scalar with index arrays; that is left out, with the fix."""
    with pytest.raises(ArgumentError, match="bool scalar among index arrays"):
        _leaf(xp64, X3)[key]
