"""``t[key] = value`` on a Tensor (``nnbackend.autograd.assign``).

Before it, ``w[0] = 0`` was Python's bare "object does not support item assignment", and users
coming from PyTorch wrote into ``w.data`` by hand (in place on NumPy, which silently changed
the arrays a recorded graph had saved; impossible on JAX). Assignment now works on every
backend as NumPy assigns, outside the graph: it binds an updated copy, refuses with a
GradientError where a gradient would have to flow through the write, and refuses with a
CompileError inside a step being recorded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend import nn, optim
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import (
    ArgumentError,
    BackendMismatchError,
    CompileError,
    GradientError,
    ShapeError,
)

X = np.arange(24.0).reshape(2, 3, 4)


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, Tensor) else a
    out = np.asarray(a.tolist() if hasattr(a, "tolist") else np.asarray(a), dtype=float)
    return out.reshape(tuple(a.shape))


def _tensor(xp: Any, values: Any = X) -> Tensor:
    return Tensor(xp.asarray(np.asarray(values).tolist()))


def _unsupported(backend: str, key: Any) -> bool:
    """Keys a backend's own arrays cannot be written through (the engine says so with an
    ArgumentError): integer arrays on array-api-strict (the standard specifies reads only),
    negative steps on torch."""
    parts = key if isinstance(key, tuple) else (key,)
    arrays = any(isinstance(k, list | np.ndarray) and np.asarray(k).dtype != bool for k in parts)
    negative = any(isinstance(k, slice) and (k.step or 1) < 0 for k in parts)
    return (backend == "array_api_strict" and arrays) or (backend == "torch" and negative)


KEYS: list[Any] = [
    1,
    -1,
    (0, 2),
    (slice(None), slice(1, None, 2)),
    (..., 0),
    (1, ..., slice(0, 3)),
    (None, 0),
    (slice(None, None, -1),),
    [1, 0],
    (np.array([0, 1]), np.array([2, 0])),
    X > 10,
    X[:, :, 0] > 4,
    (slice(None), [0, 2]),
]


def _values(key: Any) -> st.SearchStrategy[Any]:
    """A Python number, or an array of the selected shape or one that broadcasts to it."""
    shape = X[key].shape
    numbers = st.floats(-100, 100, allow_nan=False).map(lambda v: round(v, 2))
    full = st.just(np.arange(float(np.prod(shape))).reshape(shape) - 5.0)
    last = st.just(np.arange(float(shape[-1])) + 0.5) if shape else st.nothing()
    return st.one_of(numbers, full, last)


@pytest.mark.parametrize("key", KEYS, ids=[f"key{i}" for i in range(len(KEYS))])
@given(data=st.data())
def test_assignment_is_numpys_on_every_backend(xp64: Any, key: Any, data: Any) -> None:
    value = data.draw(_values(key))
    expected = X.copy()
    expected[key] = value
    t = _tensor(xp64)
    given_value = value if np.isscalar(value) else xp64.asarray(value.tolist())
    if _unsupported(_backend_name(t), key):
        with pytest.raises(ArgumentError, match="cannot write through the key"):
            t[key] = given_value
        np.testing.assert_array_equal(_host(t), X)  # unchanged
        return
    t[key] = given_value
    np.testing.assert_array_equal(_host(t), expected)
    assert t.dtype == xp64.float64


def _backend_name(t: Tensor) -> str:
    from nnbackend.namespace import backend_for

    return backend_for(t.data)[1].name


def test_assignment_binds_a_copy_so_a_recorded_graph_keeps_its_values(xp64: Any) -> None:
    """A graph saved ``x`` for its backward; writing into ``x`` afterwards must not change
    the gradient that graph computes (an in-place write on NumPy did)."""
    w = Tensor(xp64.asarray([1.0, 2.0, 3.0]), requires_grad=True)
    x = _tensor(xp64, [4.0, 5.0, 6.0])
    loss = (w * x).sum()
    before = x.data
    x[0] = 100.0
    loss.backward()
    np.testing.assert_array_equal(_host(w.grad), [4.0, 5.0, 6.0])
    np.testing.assert_array_equal(_host(before), [4.0, 5.0, 6.0])  # the old array untouched
    np.testing.assert_array_equal(_host(x), [100.0, 5.0, 6.0])


def test_a_parameter_is_written_under_no_grad_and_trains_on(xp64: Any) -> None:
    nb.random.seed(0)
    emb = nn.Embedding(5, 3)
    opt = optim.SGD(emb.parameters(), lr=0.5)
    with nb.no_grad():
        emb.weight[0] = 0.0
    np.testing.assert_array_equal(_host(emb.weight)[0], [0.0, 0.0, 0.0])
    idx = xp64.asarray([0, 1])
    loss = emb(idx).sum()
    loss.backward()
    opt.step()  # the optimizer updates the new array
    np.testing.assert_array_equal(_host(emb.weight)[0], [-0.5, -0.5, -0.5])


@pytest.mark.parametrize("where", ["leaf", "computed", "value"])
def test_writes_a_gradient_would_flow_through_are_refused(xp64: Any, where: str) -> None:
    w = Tensor(xp64.asarray([1.0, 2.0, 3.0]), requires_grad=True)
    plain = _tensor(xp64, [0.0, 0.0, 0.0])
    target, value = {"leaf": (w, 0.0), "computed": (w * 2.0, 0.0), "value": (plain, w[0])}[where]
    before = _host(target)
    with pytest.raises(GradientError, match="no_grad"):
        target[0] = value
    np.testing.assert_array_equal(_host(target), before)
    with nb.no_grad():
        target[0] = value if where != "value" else w.detach()[0]
    assert _host(target)[0] == (1.0 if where == "value" else 0.0)


def test_out_of_range_and_bad_keys_are_typed_errors_and_change_nothing(xp64: Any) -> None:
    t = _tensor(xp64)
    cases: list[tuple[Any, Any, type[Exception], str]] = [
        (2, 0.0, ShapeError, r"t\[key\] = value"),
        ((0, 5), 0.0, ShapeError, r"t\[key\] = value"),
        ((..., ...), 0.0, ArgumentError, "Ellipsis"),
        (0, np.ones(5).tolist(), ShapeError, "does not broadcast"),
        ("a", 0.0, TypeError, "integer"),
    ]
    for key, value, kind, words in cases:
        with pytest.raises(kind, match=words):
            t[key] = xp64.asarray(value) if isinstance(value, list) else value
        np.testing.assert_array_equal(_host(t), X)


def test_values_are_cast_to_the_tensors_dtype(backend: str) -> None:
    with nb.using(backend=backend, dtype="float32"):
        xp = nb.namespace()
        t = Tensor(xp.zeros((2, 3)))
        t[0] = xp.asarray([1.5, 2.5, 3.5], dtype=xp.float64)
        assert t.dtype == xp.float32
        assert _host(t)[0].tolist() == [1.5, 2.5, 3.5]
        n = Tensor(xp.asarray([1, 2, 3]))
        n[1] = 7
        assert _host(n).tolist() == [1.0, 7.0, 3.0] and n.dtype == xp.asarray([1]).dtype


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        1e30,
        2**70,
        10**400,
        np.float64("nan"),
        np.int64(2**40),
        "x",
        None,
        1 + 2j,
        [[1], [2, 3]],
    ],
    ids=[
        "nan",
        "inf",
        "1e30",
        "2**70",
        "10**400",
        "np.nan",
        "np.int64(2**40)",
        "str",
        "None",
        "complex",
        "ragged",
    ],
)
def test_a_value_an_integer_tensor_cannot_hold_is_an_argument_error(xp64: Any, value: Any) -> None:
    """NaN, infinities and overflowing numbers into integers were backend errors in their own
    words (NumPy's ValueError, a bare OverflowError) or silent garbage (torch, jax cast
    them); strings, None and complex numbers slipped through as bare errors or warnings.
    NumPy scalars went the arrays' way: ``np.float64("nan")`` was stored as INT_MIN,
    ``np.int64(2**40)`` as 0; ``10**400`` raised math's OverflowError. (The tensor is int32,
    where 2**40 overflows; NumPy and JAX without x64 default to other integer widths.)"""
    n = Tensor(xp64.asarray([1, 2, 3], dtype=xp64.int32))
    before = _host(n).tolist()
    with pytest.raises(ArgumentError, match=r"t\[key\] = value"):
        n[0] = value
    assert _host(n).tolist() == before
    n[0] = 2.7  # a finite number in range is truncated toward zero, as NumPy stores it
    n[1] = True
    assert _host(n).tolist() == [2.0, 1.0, 3.0]


def test_complex_arrays_are_refused_rather_than_cut_to_their_real_part() -> None:
    t = Tensor(np.zeros(2))
    with pytest.raises(ArgumentError, match="imaginary"):
        t[:] = np.array([1 + 1j, 2 + 0j])
    assert t.data.tolist() == [0.0, 0.0]


def test_a_value_of_another_library_is_converted_or_refused(xp64: Any) -> None:
    t = _tensor(xp64, [0.0, 0.0, 0.0])
    try:
        t[:] = np.array([1.0, 2.0, 3.0])
    except BackendMismatchError as exc:
        assert "to_device" in str(exc)
        np.testing.assert_array_equal(_host(t), [0.0, 0.0, 0.0])
    else:
        np.testing.assert_array_equal(_host(t), [1.0, 2.0, 3.0])
        assert type(t.data) is type(xp64.asarray([0.0]))


def test_a_write_inside_a_compiled_step_is_refused() -> None:
    nb.random.seed(0)
    model = nn.Linear(3, 1)
    opt = optim.SGD(model.parameters(), lr=0.1)
    mask = Tensor(np.ones((4, 1)))

    def train(x: Any, t: Any) -> Any:
        opt.zero_grad()
        mask[0] = 0.0  # a NumPy-style write a replay would not repeat
        loss = nn.MSELoss()(model(x) * mask, t)
        loss.backward()
        opt.step()
        return loss

    step = nb.compile_step(train)
    rng = np.random.default_rng(0)
    with pytest.raises(CompileError, match="t\\[key\\] = value"):
        step(rng.standard_normal((4, 3)), rng.standard_normal((4, 1)))


def test_a_tensor_kept_by_the_caller_sees_no_change_on_any_backend(xp64: Any) -> None:
    """``a = t.data`` then ``t[0] = 1``: ``a`` is as it was everywhere (JAX cannot write in
    place, so no backend does)."""
    t = _tensor(xp64, [0.0, 0.0])
    a = t.data
    t[0] = 1.0
    assert _host(a).tolist() == [0.0, 0.0] and _host(t).tolist() == [1.0, 0.0]


# -- reading: an integer out of range is a ShapeError on every backend --------------------------
@pytest.mark.parametrize(
    "key",
    [2, -3, (0, 5), (slice(None), 3), (0, 0, 4), (..., 4), (None, 2), np.int64(2), (1, ..., -5)],
    ids=lambda k: repr(k).replace(" ", ""),
)
def test_an_integer_out_of_range_is_a_shape_error(xp64: Any, key: Any) -> None:
    """JAX clamps an out-of-range integer index silently: ``t[2]`` of 2 rows read the last
    row, and an assignment through it wrote there. Every backend now refuses it, as NumPy
    does, with a ShapeError naming the axis."""
    with pytest.raises(IndexError):
        X[key]
    t = _tensor(xp64)
    with pytest.raises(ShapeError, match="out of range for axis"):
        t[key]
    with pytest.raises(ShapeError, match=r"t\[key\] = value"):
        t[key] = 0.0
    np.testing.assert_array_equal(_host(t), X)


@pytest.mark.parametrize(
    "key", [(0, True), (True, 2), (1, True, 0), (..., True, 1), (True, ..., 0, 1)], ids=repr
)
def test_a_bool_scalar_beside_integers_names_no_axis(key: Any) -> None:
    """A bool scalar in a key adds an axis, as None does, and names none: the range check
    took ``True`` for the integer 1 and checked it against the next axis (``x[0, True]`` of
    shape (3, 1) raised "index 1 is out of range"), shifting the axes the later integers
    were checked against."""
    x = np.arange(6.0).reshape(3, 1, 2)
    t = Tensor(x)
    np.testing.assert_array_equal(t[key].data, x[key])
    with pytest.raises(ShapeError, match="index 4 is out of range for axis 0 of length 3"):
        t[True, 4]


@pytest.mark.parametrize("rows", [[5], [-3], [0, 2], 2], ids=["5", "-3", "0,2", "0-d 2"])
def test_an_index_array_out_of_range_is_a_shape_error(
    xp64: Any, rows: Any, gathers_nan: bool
) -> None:
    """``x[idx]`` with an index array gathers with ``take``: JAX's fills NaN for an index
    out of range (a 0-d index array too), CuPy's wraps around. Where the indices are on the
    host every backend now raises, as NumPy does; on a device the rows are NaN."""
    t = _tensor(xp64, X[:, :, 0])  # 2 rows
    if gathers_nan:
        assert np.isnan(_host(t[xp64.asarray(rows)])).any()
        return
    with pytest.raises(ShapeError, match=r"out of (range|bounds)"):
        t[xp64.asarray(rows)]
    np.testing.assert_array_equal(_host(t[xp64.asarray([-2, 1, -1])]), X[[-2, 1, -1], :, 0])


def test_on_a_device_rows_of_bad_indices_are_nan_and_never_another_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(The device path, run on NumPy: a backend whose ``take`` does not check and whose
    indices live on a device, where reading them would synchronise.)"""
    from nnbackend.namespace import backend_for, ops_for

    w = Tensor(np.arange(9.0).reshape(3, 3), requires_grad=True)
    ops = ops_for(backend_for(w.data)[0], w.data)
    monkeypatch.setattr(type(ops), "take_checks_range", False)
    monkeypatch.setattr(ops, "on_host", lambda a: False)
    y = w[np.array([1, 5, -1])]
    got = _host(y)
    np.testing.assert_array_equal(got[0], [3.0, 4.0, 5.0])
    assert np.isnan(got[1]).all()
    np.testing.assert_array_equal(got[2], [6.0, 7.0, 8.0])
    y.sum().backward()  # the bad index's gradient lands in row 0, inside the array
    np.testing.assert_array_equal(_host(w.grad), np.ones((3, 3)))
    n = Tensor(np.arange(6).reshape(3, 2))
    np.testing.assert_array_equal(_host(n[np.array([7, 2])]), [[0, 1], [4, 5]])


def test_a_compiled_step_trains_the_assigned_weights_as_eager_does(
    mse_step: Callable[..., Any],
) -> None:
    """A write between calls rebinds the parameter's array, as ``p.data = ...`` does: the
    compiled step records again instead of replaying onto the old array."""

    def run(compiled: bool) -> list[float]:
        nb.random.seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
        opt = optim.SGD(model.parameters(), lr=0.1)
        train = mse_step(model, opt)
        step = nb.compile_step(train) if compiled else train
        rng = np.random.default_rng(1)
        x, t = rng.standard_normal((5, 3)), rng.standard_normal((5, 1))
        out = [float(step(x, t).item()) for _ in range(4)]
        with nb.no_grad():
            model[0].weight[0] = 0.0
            model[2].bias[...] = 3.0
        out += [float(step(x, t).item()) for _ in range(4)]
        return out + _host(model[0].weight).ravel().tolist()

    assert run(True) == run(False)


def test_take_on_a_device_gives_nan_for_bad_indices_along_its_axis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(``F.take``'s device path, run on NumPy as above.)"""
    import nnbackend.functional as F
    from nnbackend.namespace import backend_for, ops_for

    x = Tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
    ops = ops_for(backend_for(x.data)[0], x.data)
    with pytest.raises(ShapeError, match="out of range"):
        F.take(x, np.array([1, 9]), 1)  # on the host: checked
    monkeypatch.setattr(type(ops), "take_checks_range", False)
    monkeypatch.setattr(ops, "on_host", lambda a: False)
    y = F.take(x, np.array([1, 9, -1]), 1)
    got = _host(y)
    np.testing.assert_array_equal(got[:, 0], [1.0, 5.0, 9.0])
    assert np.isnan(got[:, 1]).all()
    np.testing.assert_array_equal(got[:, 2], [3.0, 7.0, 11.0])
    y.sum().backward()
    assert np.isfinite(_host(x.grad)).all()


@given(
    parts=st.lists(
        st.sampled_from([0, -1, slice(None), slice(1, None), None, ..., True, False]),
        min_size=1,
        max_size=4,
    ),
    kind=st.sampled_from([bool, np.bool_, np.array]),
    whole=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_bool_scalars_in_a_key_write_as_numpy(
    xp64: Any, parts: list[Any], kind: Callable[[bool], Any], whole: bool
) -> None:
    """``t[0, :, True] = v`` writes what NumPy writes: a false bool scalar selects nothing,
    true ones add an axis of length 1 that ``v`` broadcasts against. Array-api-strict
    refused bools, torch refused ``np.True_``; each backend now writes NumPy's values,
    for a number and for an array of the selected shape."""
    if not any(type(k) is bool for k in parts) or parts.count(...) > 1:
        return
    key = tuple(kind(k) if type(k) is bool else k for k in parts)
    try:
        shape = X[key].shape
    except IndexError:
        return  # (more axes named than there are: x[key] raises, tested with reading)
    value = np.arange(float(math.prod(shape))).reshape(shape) - 3.0 if whole else 7.5
    want = X.copy()
    want[key] = value
    t = _tensor(xp64)
    if whole:  # (through a flat list: the tolist of an empty array loses its shape)
        flat = xp64.asarray(value.ravel().tolist(), dtype=xp64.float64)
        t[key] = xp64.reshape(flat, shape)
    else:
        t[key] = value
    np.testing.assert_array_equal(_host(t), want)
