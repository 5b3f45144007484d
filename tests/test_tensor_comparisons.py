"""Comparison operators of a Tensor: elementwise, as NumPy compares, on every backend.

The operators handed the operand to the backend as it came: torch answered
``t == [1.0, 5.0, 3.0]`` with one ``False`` and ``t != ndarray`` with one ``True`` (a Tensor
around a Python bool, whose ``.shape`` then failed); array-api-strict raised its own
TypeError for ``t == True``. A list is now compared as an array, an array of another library
is refused where arithmetic refuses it, ``None`` gets Python's answer, and what a backend
cannot compare is a typed error.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import ArgumentError, BackendMismatchError, ShapeError

OPS = [operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge]


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, Tensor) else a
    return np.asarray(a.tolist() if hasattr(a, "tolist") else np.asarray(a))


@given(
    values=st.lists(st.sampled_from([-1.5, 0.0, 1.1, 2.0, 3.0]), min_size=3, max_size=3),
    other=st.lists(st.sampled_from([-1.5, 0.0, 1.1, 2.0, 3.0]), min_size=3, max_size=3),
    op=st.sampled_from(OPS),
    form=st.sampled_from(["list", "array", "tensor", "number", "True", "reflected"]),
)
@settings(max_examples=60, deadline=None)
def test_comparisons_are_elementwise_as_numpy(
    xp64: Any, values: list[float], other: list[float], op: Any, form: str
) -> None:
    t = Tensor(xp64.asarray(values))
    want_other: Any = np.asarray(other)
    operand: Any = other
    if form == "array":
        operand = xp64.asarray(other)
    elif form == "tensor":
        operand = Tensor(xp64.asarray(other))
    elif form == "number":
        operand = want_other = other[0]
    elif form == "True":
        operand = want_other = True
    if form == "reflected":  # array op Tensor: the Tensor's reflected operator answers
        if "array_api_strict" in xp64.__name__:
            # Its arrays raise on an operand they do not know instead of returning
            # NotImplemented (documented in models.md): nothing to answer with.
            with pytest.raises(TypeError, match="Expected Array"):
                op(xp64.asarray(other), t)
            return
        got = op(xp64.asarray(other), t)
        want = op(want_other, np.asarray(values))
    else:
        got = op(t, operand)
        want = op(np.asarray(values), want_other)
    assert isinstance(got, Tensor) and not got.requires_grad
    assert tuple(got.shape) == want.shape
    np.testing.assert_array_equal(_host(got), want)


def test_an_array_of_another_library_is_refused_where_arithmetic_refuses_it(
    backend: str,
) -> None:
    import nnbackend as nb

    with nb.using(backend=backend, dtype="float64"):
        xp = nb.namespace()
        t = Tensor(xp.asarray([1.0, 2.0]))
        other = np.array([1.0, 5.0])
        try:
            t + other
        except BackendMismatchError:
            with pytest.raises(BackendMismatchError, match=r"nb\.to_device"):
                t != other  # noqa: B015
        else:  # (NumPy itself; JAX takes NumPy arrays of its dtypes)
            np.testing.assert_array_equal(_host(t != other), [False, True])


def test_none_and_other_objects_get_pythons_answer(xp64: Any) -> None:
    t = Tensor(xp64.asarray([1.0, 2.0]))
    assert (t == None) is False  # noqa: E711  (the operator is what is tested)
    assert (t != None) is True  # noqa: E711
    assert (t == "a") is False
    with pytest.raises(TypeError):
        t < None  # noqa: B015


def test_what_cannot_be_compared_is_a_typed_error(xp64: Any) -> None:
    t = Tensor(xp64.asarray([1.0, 2.0, 3.0]))
    with pytest.raises(ShapeError, match="do not broadcast"):
        t == xp64.asarray([1.0, 2.0])  # noqa: B015
    with pytest.raises(ArgumentError, match="rectangular"):
        t == [[1.0], [1.0, 2.0]]  # noqa: B015
