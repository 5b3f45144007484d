"""Every function of ``nnbackend.functional`` against float64 central differences, through
the ``xp`` fixture (numpy, array_api_strict, torch; float64, float32 and float16 where the
backend has it), with broadcasting and ``keepdims`` edge cases drawn by hypothesis.

Values lie on a 1/16 grid (exact in float16). Functions with a kink (abs, clip, maximum,
minimum) get values on the grid shifted by 1/32, so no value sits on the kink (or ties with
the other operand); max/min reductions draw distinct values. Tolerances are gradcheck's
defaults, scaled by the dtype's epsilon.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nnbackend as nb
import nnbackend.functional as F
from nnbackend.errors import ArgumentError, BackendMismatchError, ShapeError

STEP = 1.0 / 16.0
BUDGET = settings.default.max_examples
# ~45 functions x 3 backends x 3 dtypes: a few examples each keeps the suite fast.
few = settings(max_examples=max(2, BUDGET // 8))

shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3)


def values(
    data: st.DataObject,
    shape: tuple[int, ...],
    lo: float = -2.0,
    hi: float = 2.0,
    shift: bool = False,
    unique: bool = False,
) -> np.ndarray:
    grid = st.integers(round(lo / STEP), round(hi / STEP)).map(
        lambda k: k * STEP + (STEP / 2 if shift else 0.0)
    )
    return data.draw(hnp.arrays(np.float64, shape, elements=grid, unique=unique))


def arr(xp: Any, dtype: str, a: np.ndarray) -> Any:
    return xp.asarray(a.tolist(), dtype=getattr(xp, dtype))


def broadcast_partner(data: st.DataObject, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape that broadcasts against ``shape``: fewer leading axes and some 1s."""
    drop = data.draw(st.integers(0, len(shape)))
    rest = shape[drop:]
    return tuple(1 if data.draw(st.booleans()) else n for n in rest)


def axis_and_keepdims(data: st.DataObject, ndim: int) -> tuple[Any, bool]:
    axis = data.draw(
        st.one_of(
            st.none(),
            st.integers(-ndim, ndim - 1),
            st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple),
        )
    )
    return axis, data.draw(st.booleans())


# -- elementwise --------------------------------------------------------------------------
UNARY: dict[str, tuple[Callable[[Any], Any], float, float, bool]] = {
    # name: (function, lo, hi, shifted grid)
    "exp": (F.exp, -2.0, 2.0, False),
    "log": (F.log, 0.25, 2.0, False),
    "log1p": (F.log1p, -0.5, 2.0, False),
    "expm1": (F.expm1, -2.0, 2.0, False),
    "sqrt": (F.sqrt, 0.25, 2.0, False),
    "abs": (F.abs, -2.0, 2.0, True),
    "sin": (F.sin, -2.0, 2.0, False),
    "cos": (F.cos, -2.0, 2.0, False),
    "tan": (F.tan, -1.0, 1.0, False),
    "tanh": (F.tanh, -2.0, 2.0, False),
    "sigmoid": (F.sigmoid, -4.0, 4.0, False),
    "softplus": (F.softplus, -4.0, 4.0, False),
    "clip": (lambda x: F.clip(x, -0.5, 0.75), -2.0, 2.0, True),
    "clip_min": (lambda x: F.clip(x, min=0.0), -2.0, 2.0, True),
    "pow_scalar": (lambda x: x**3, -2.0, 2.0, False),
    "scalar_pow": (lambda x: 2.0**x, -2.0, 2.0, False),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@few
@given(data=st.data())
def test_unary(name: str, xp: Any, dtype: str, data: st.DataObject) -> None:
    fn, lo, hi, shift = UNARY[name]
    x = arr(xp, dtype, values(data, data.draw(shapes), lo, hi, shift))
    y = fn(nb.Tensor(x))
    assert y.dtype == x.dtype and y.shape == tuple(x.shape)
    assert nb.gradcheck(fn, x)


BINARY: dict[str, tuple[Callable[[Any, Any], Any], tuple[float, float], tuple[float, float]]] = {
    "maximum": (F.maximum, (-2.0, 2.0), (-2.0, 2.0)),
    "minimum": (F.minimum, (-2.0, 2.0), (-2.0, 2.0)),
    "where": (lambda a, b: F.where(a > b, a * b, b - a), (-2.0, 2.0), (-2.0, 2.0)),
    "pow_tensor": (F.power, (0.5, 2.0), (-2.0, 2.0)),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@few
@given(data=st.data())
def test_binary_broadcasting(name: str, xp: Any, dtype: str, data: st.DataObject) -> None:
    fn, (alo, ahi), (blo, bhi) = BINARY[name]
    shape = data.draw(shapes)
    other = broadcast_partner(data, shape)
    if data.draw(st.booleans()):
        shape, other = other, shape
    a = arr(xp, dtype, values(data, shape, alo, ahi))
    b = arr(xp, dtype, values(data, other, blo, bhi, shift=True))  # never ties with a
    y = fn(nb.Tensor(a), nb.Tensor(b))
    assert y.dtype == a.dtype
    assert y.shape == np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
    assert nb.gradcheck(fn, a, b)


def test_maximum_ties_share_the_gradient(xp: Any, dtype: str) -> None:
    a = nb.Tensor(xp.asarray([1.0, 2.0, 3.0]), requires_grad=True)
    b = nb.Tensor(xp.asarray([1.0, 5.0, 0.0]), requires_grad=True)
    F.maximum(a, b).sum().backward()
    assert nb.Tensor(a.grad).tolist() == [0.5, 0.0, 1.0] and nb.Tensor(b.grad).tolist() == [
        0.5,
        1.0,
        0.0,
    ]


def test_scalars_keep_the_dtype(xp: Any, dtype: str) -> None:
    x = nb.Tensor(xp.asarray([0.5, 1.5]), requires_grad=True)
    for y in (F.maximum(x, 1.0), F.where(x > 1.0, x, 0.0), F.clip(x, 0.0, 1.0), 2.0**x):
        assert y.dtype == x.dtype


# -- reductions -----------------------------------------------------------------------------
REDUCTIONS: dict[str, tuple[Callable[..., Any], float, float, bool]] = {
    # name: (function(x, axis, keepdims), lo, hi, distinct values)
    "sum": (F.sum, -2.0, 2.0, False),
    "mean": (F.mean, -2.0, 2.0, False),
    "max": (F.max, -2.0, 2.0, True),
    "min": (F.min, -2.0, 2.0, True),
    "var": (F.var, -2.0, 2.0, False),
    "var_unbiased": (lambda x, a, k: F.var(x, a, k, correction=1.0), -2.0, 2.0, False),
    "std": (F.std, -2.0, 2.0, True),
    "logsumexp": (F.logsumexp, -2.0, 2.0, False),
    "prod": (F.prod, 0.5, 1.5, False),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@few
@given(data=st.data())
def test_reduction(name: str, xp: Any, dtype: str, data: st.DataObject) -> None:
    fn, lo, hi, unique = REDUCTIONS[name]
    min_side = 2 if name in ("std", "var_unbiased") else 1
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=min_side, max_side=3))
    x = arr(xp, dtype, values(data, shape, lo, hi, unique=unique))
    axis, keepdims = axis_and_keepdims(data, len(shape))
    y = fn(nb.Tensor(x), axis, keepdims)
    expected = np.sum(np.zeros(shape), axis=axis, keepdims=keepdims).shape
    assert y.shape == expected and y.dtype == x.dtype
    assert nb.gradcheck(lambda t: fn(t, axis, keepdims), x)


def test_prod_gradient_at_zeros(xp: Any, dtype: str) -> None:
    x = nb.Tensor(
        xp.asarray([[2.0, 0.0, 3.0], [0.0, 0.0, 5.0], [1.0, 2.0, 4.0]]), requires_grad=True
    )
    F.prod(x, axis=1).sum().backward()
    assert nb.Tensor(x.grad).tolist() == [[0.0, 6.0, 0.0], [0.0, 0.0, 0.0], [8.0, 4.0, 2.0]]


def test_argmax_argmin_carry_no_gradient(xp: Any, dtype: str) -> None:
    x = nb.Tensor(xp.asarray([[1.0, 3.0, 2.0], [4.0, 0.0, 5.0]]), requires_grad=True)
    assert x.argmax().item() == 5 and x.argmin().item() == 4
    assert x.argmax(axis=1).tolist() == [1, 2] and x.argmin(axis=0).tolist() == [0, 1, 0]
    assert x.argmax(axis=1, keepdims=True).shape == (2, 1)
    assert not x.argmax().requires_grad


# -- shape ------------------------------------------------------------------------------------
@few
@given(data=st.data())
def test_shape_functions(xp: Any, dtype: str, data: st.DataObject) -> None:
    shape = data.draw(hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=3))
    x = arr(xp, dtype, values(data, shape))
    n = len(shape)
    perm = data.draw(st.permutations(range(n)))
    start = data.draw(st.integers(0, n - 1))
    end = data.draw(st.integers(start, n - 1))
    axis = data.draw(st.integers(-n, n - 1))
    cases = {
        "permute": lambda t: F.permute(t, perm),
        "transpose": lambda t: t.transpose(),
        "flatten": lambda t: F.flatten(t, start, end),
        "squeeze": lambda t: F.squeeze(F.expand_dims(t, 1)),
        "expand_dims": lambda t: F.expand_dims(t, -1) * F.expand_dims(t, 0).sum(),
        "broadcast_to": lambda t: F.broadcast_to(t, (2, *shape)),
        "sum_to": lambda t: F.sum_to(t, (1, *shape[1:])),
        "flip": lambda t: F.flip(t, axis),
        "flip_all": lambda t: F.flip(t),
        "pad": lambda t: F.pad(t, [(1, 0)] + [(0, 2)] * (n - 1), value=0.5),
        "reshape": lambda t: t.reshape(-1),
    }
    for name, fn in cases.items():
        assert fn(nb.Tensor(x)).dtype == x.dtype, name
        assert nb.gradcheck(fn, x), name


@few
@given(data=st.data())
def test_concat_stack_split(xp: Any, dtype: str, data: st.DataObject) -> None:
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    a = arr(xp, dtype, values(data, shape))
    b = arr(xp, dtype, values(data, shape))
    longer = list(shape)
    longer[axis] += 1
    c = arr(xp, dtype, values(data, tuple(longer)))
    assert nb.gradcheck(lambda s, t, u: F.concat([s, t, u], axis) * 1.5, a, b, c)
    assert nb.gradcheck(lambda s, t: F.stack([s, t * t], axis), a, b)
    assert F.stack([a, b], axis).shape == np.stack([np.zeros(shape)] * 2, axis).shape

    def weighted_parts(t: nb.Tensor) -> nb.Tensor:
        parts = F.split(t, [1, longer[axis] - 1], axis)
        return F.concat([parts[1] * 2.0, parts[0] * -1.0], axis)

    assert nb.gradcheck(weighted_parts, c)
    # One part unused: its gradient is zero, the other's flows.
    assert nb.gradcheck(lambda t: F.split(t, [1, longer[axis] - 1], axis)[1] * 3.0, c)


@few
@given(data=st.data())
def test_take_and_getitem(xp: Any, dtype: str, data: st.DataObject) -> None:
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = arr(xp, dtype, values(data, shape))
    idx_shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=3))
    idx = data.draw(hnp.arrays(np.int64, idx_shape, elements=st.integers(0, shape[axis] - 1)))
    indices = idx.tolist()  # a list: gradcheck's float64 reference runs on NumPy
    y = F.take(nb.Tensor(x), indices, axis)
    expected = np.take(np.zeros(shape), idx, axis=axis).shape
    assert y.shape == expected
    assert nb.gradcheck(lambda t: F.take(t, indices, axis), x)
    assert nb.gradcheck(lambda t: t[..., :1] * 2.0, x)


def test_take_repeated_indices_add(xp: Any, dtype: str) -> None:
    x = nb.Tensor(xp.asarray([[1.0, 2.0], [3.0, 4.0]]), requires_grad=True)
    F.take(x, xp.asarray([1, 1, 0]), axis=1).sum().backward()
    assert nb.Tensor(x.grad).tolist() == [[1.0, 2.0], [1.0, 2.0]]


def test_flip_reverses_a_sequence(xp: Any, dtype: str) -> None:
    x = nb.Tensor(xp.asarray([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    assert F.flip(x, 1).tolist() == [[3.0, 2.0, 1.0], [6.0, 5.0, 4.0]]


# -- products -----------------------------------------------------------------------------
@few
@given(data=st.data())
def test_batched_matmul_and_einsum(xp: Any, dtype: str, data: st.DataObject) -> None:
    b, i, j, k = (data.draw(st.integers(1, 3)) for _ in range(4))
    batch_a = (b,) if data.draw(st.booleans()) else (1,)
    a = arr(xp, dtype, values(data, (*batch_a, i, j), -1.0, 1.0))
    m = arr(xp, dtype, values(data, (b, j, k), -1.0, 1.0))
    v = arr(xp, dtype, values(data, (j,), -1.0, 1.0))
    assert nb.gradcheck(lambda s, t: s @ t, a, m)
    assert nb.gradcheck(lambda s, t: s @ t, a, v)
    c = arr(xp, dtype, values(data, (b, i, j), -1.0, 1.0))
    for pattern in ("bij,bjk->bik", "bij,bjk->ik", "bij,bjk->kb", "bij,bjk->"):
        assert nb.gradcheck(lambda s, t, p=pattern: F.einsum(p, s, t), c, m), pattern
    assert nb.gradcheck(lambda s: F.einsum("bjk->kj", s), m)
    assert nb.gradcheck(lambda s, t: F.einsum("j,bjk->bk", s, t), v, m)


def test_einsum_matches_numpy(xp: Any, dtype: str) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 4, 5))
    for pattern in ("bij,bjk->bik", "bij,bjk->ki", "bij,bjk->", "bij,bjk->bj"):
        got = F.einsum(pattern, nb.Tensor(arr(xp, dtype, a)), nb.Tensor(arr(xp, dtype, b)))
        want = np.einsum(pattern, a, b)
        tol = 10 * float(np.finfo(dtype).eps) * 100
        np.testing.assert_allclose(np.asarray(got.tolist()), want, rtol=tol, atol=tol)


def test_einsum_rejects_what_it_cannot_express() -> None:
    x = nb.Tensor([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(ArgumentError, match="repeated index"):
        F.einsum("ii->i", x)
    with pytest.raises(ArgumentError, match="output explicitly"):
        F.einsum("ij,jk", x, x)
    with pytest.raises(ShapeError, match="names 3 axes"):
        F.einsum("ijk->i", x)


def test_bad_arguments_say_what_was_wrong() -> None:
    x = nb.Tensor([[1.0, 2.0, 3.0]])
    with pytest.raises(ShapeError, match="equal parts"):
        F.split(x, 2, axis=1)
    with pytest.raises(ShapeError, match="do not add up"):
        F.split(x, [1, 1], axis=1)
    with pytest.raises(ShapeError, match="length 1"):
        F.squeeze(x, 1)
    with pytest.raises(ArgumentError, match="min 2"):
        F.clip(x, 2.0, 1.0)
    with pytest.raises(ShapeError, match="one shape"):
        F.stack([x, x.reshape(3, 1)])


def test_tensor_methods_are_the_functions() -> None:
    x = nb.Tensor([[0.5, -1.5], [2.0, 0.25]])
    pairs = [
        (x.abs(), F.abs(x)),
        (x.abs().sqrt(), F.sqrt(F.abs(x))),
        (x.sin(), F.sin(x)),
        (x.min(axis=0), F.min(x, 0)),
        (x.flatten(), F.flatten(x)),
        (x.clip(0.0, 1.0), F.clip(x, 0.0, 1.0)),
        (x.logsumexp(1), F.logsumexp(x, 1)),
        (x.unsqueeze(0), F.expand_dims(x, 0)),
        (x.flip(0), F.flip(x, 0)),
        (x.permute(1, 0), F.transpose(x)),
    ]
    for a, b in pairs:
        assert a.tolist() == b.tolist()


@few
@given(data=st.data())
def test_negative_step_slices(xp: Any, dtype: str, data: st.DataObject) -> None:
    """``x[:, ::-1]`` and friends: not in the standard, so sliced forwards and gathered."""
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    host_x = values(data, shape)
    step = st.one_of(st.none(), st.integers(-3, 3).filter(lambda s: s != 0))

    def part(n: int) -> slice:
        bound = st.one_of(st.none(), st.integers(-n, n - 1))  # in bounds: the standard's rule
        return data.draw(st.builds(slice, bound, bound, step))

    key = tuple(part(n) for n in shape)
    key = (*key[:-1], slice(None, None, -1)) if data.draw(st.booleans()) else key
    x = arr(xp, dtype, host_x)
    got = nb.Tensor(x)[key]
    assert got.numpy().shape == host_x[key].shape
    np.testing.assert_array_equal(got.numpy().astype(np.float64), host_x[key])
    if got.size:
        assert nb.gradcheck(lambda t: t[key] * 2.0, x)


def test_an_axis_out_of_range_is_an_error_not_another_axis() -> None:
    """``axis % ndim`` turned axis 5 of a 2-D array into axis 1 (sum, mean, max, concat) and
    returned a result for the wrong axis; NumPy raises. Now a ShapeError (a ValueError, like
    NumPy's AxisError) names the axis and the valid range; negative axes in range still
    count from the end (found probing, 2026-12-02)."""
    x = nb.Tensor(np.arange(6.0).reshape(2, 3))
    bad = {
        "sum": lambda: x.sum(axis=5),
        "mean": lambda: x.mean(axis=-3),
        "max": lambda: x.max(axis=2),
        "sum of a tuple": lambda: x.sum(axis=(0, 5)),
        "concat": lambda: F.concat([x, x], axis=3),
        "split": lambda: F.split(x, 2, axis=4),
        "take": lambda: F.take(x, np.array([0]), axis=3),
        "flatten": lambda: F.flatten(x, 0, 5),
        "transpose": lambda: x.transpose((0, 5)),
    }
    for name, call in bad.items():
        with pytest.raises(ShapeError, match=r"out of range for an array of 2 axes"):
            call()
        assert issubclass(ShapeError, ValueError), name
    np.testing.assert_array_equal(x.sum(axis=-1).data, [3.0, 12.0])
    np.testing.assert_array_equal(F.concat([x, x], axis=-1).data.shape, (2, 6))
    np.testing.assert_array_equal(x.max(axis=(0, -1)).data, 5.0)


def test_an_operand_that_is_no_array_is_a_typed_type_error() -> None:
    """``tensor + "a"`` or ``tensor * None`` raised AttributeError from inside the engine;
    now a BackendMismatchError (a TypeError, as NumPy and torch raise) naming what it got."""
    x = nb.Tensor(np.ones(3))
    for other in ("a", None, [1.0, 2.0, 3.0]):
        for call in (lambda o=other: x + o, lambda o=other: x * o, lambda o=other: o - x):
            with pytest.raises(BackendMismatchError) as info:
                call()
            assert isinstance(info.value, TypeError)
            assert type(other).__qualname__ in str(info.value)
