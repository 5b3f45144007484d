"""Analytic gradients equal float64 central differences, per op and for random compositions.

Every test runs through the ``xp`` fixture: each available backend (numpy, array_api_strict,
torch, ...) in float64, float32 and float16 (float16 only where the backend has it), with
``nnbackend.gradcheck`` at its default, dtype-scaled tolerance. Shapes are small (sides 1..4)
and values come from a 1/16 grid, which is exact in float16 so every dtype sees the same
numbers; ``unique=True`` keeps maxima untied so the max gradient is well defined.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nnbackend as nb

STEP = 1.0 / 16.0

small_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
nonscalar_shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)
sides = st.integers(min_value=1, max_value=4)

# Per-op tests run on 3 backends x 3 dtypes, so each takes a fraction of the active profile's
# max_examples (15 of the default 25; HYPOTHESIS_PROFILE=thorough scales it up).
BUDGET = settings.default.max_examples
per_op = settings(max_examples=max(1, BUDGET * 3 // 5))


def grid(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Multiples of 1/16 in [lo, hi]: exactly representable in float16."""
    return st.integers(round(lo / STEP), round(hi / STEP)).map(lambda k: k * STEP)


def draw_host(
    data: st.DataObject,
    shape: tuple[int, ...],
    lo: float = -2.0,
    hi: float = 2.0,
    unique: bool = False,
) -> np.ndarray:
    return data.draw(hnp.arrays(np.float64, shape, elements=grid(lo, hi), unique=unique))


def to_xp(xp: Any, dtype: str, values: np.ndarray) -> Any:
    """A backend array of ``dtype`` holding ``values`` (through Python lists: portable)."""
    return xp.asarray(values.tolist(), dtype=getattr(xp, dtype))


def draw_array(
    data: st.DataObject,
    xp: Any,
    dtype: str,
    shape: tuple[int, ...],
    lo: float = -2.0,
    hi: float = 2.0,
    unique: bool = False,
) -> Any:
    return to_xp(xp, dtype, draw_host(data, shape, lo, hi, unique))


def check(fn: Callable[..., Any], *inputs: Any) -> None:
    assert nb.gradcheck(fn, *inputs) is True


# ---------------------------------------------------------------------------- arithmetic
BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}


@pytest.mark.parametrize("op", sorted(BINARY))
@per_op
@given(data=st.data())
def test_binary_op_with_broadcasting(op: str, xp: Any, dtype: str, data: st.DataObject) -> None:
    shape_a, shape_b = data.draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=4)
    ).input_shapes
    a = draw_array(data, xp, dtype, shape_a)
    # Denominators stay away from zero.
    b = draw_array(data, xp, dtype, shape_b, *((0.5, 2.0) if op == "div" else (-2.0, 2.0)))
    check(BINARY[op], a, b)


@pytest.mark.parametrize(
    ("op", "shape_a", "shape_b"),
    [
        (op, sa, sb)
        for op in sorted(BINARY)
        for sa, sb in [((3, 1), (1, 4)), ((4,), (3, 4)), ((3, 4), (4,)), ((2, 1, 3), (4, 1))]
    ],
)
def test_broadcasting_gradients(
    op: str, shape_a: tuple[int, ...], shape_b: tuple[int, ...], xp: Any, dtype: str
) -> None:
    rng = np.random.default_rng(7)
    a = to_xp(xp, dtype, rng.uniform(0.5, 2.0, shape_a))
    b = to_xp(xp, dtype, rng.uniform(0.5, 2.0, shape_b))
    check(BINARY[op], a, b)
    ta, tb = nb.Tensor(a, requires_grad=True), nb.Tensor(b, requires_grad=True)
    BINARY[op](ta, tb).sum().backward()
    assert ta.grad.shape == ta.data.shape
    assert tb.grad.shape == tb.data.shape


def test_broadcast_add_gradient_counts_the_copies(xp: Any, dtype: str) -> None:
    a = nb.Tensor(xp.zeros((3, 1), dtype=getattr(xp, dtype)), requires_grad=True)
    b = nb.Tensor(xp.zeros((1, 4), dtype=getattr(xp, dtype)), requires_grad=True)
    c = nb.Tensor(xp.zeros((4,), dtype=getattr(xp, dtype)), requires_grad=True)
    ((a + b) + c).sum().backward()
    assert a.grad.shape == (3, 1)
    np.testing.assert_array_equal(nb.Tensor(a.grad).numpy(), np.full((3, 1), 4.0))
    np.testing.assert_array_equal(nb.Tensor(b.grad).numpy(), np.full((1, 4), 3.0))
    np.testing.assert_array_equal(nb.Tensor(c.grad).numpy(), np.full((4,), 3.0))


SCALAR_OPS: dict[str, Callable[[Any, float], Any]] = {
    "t+s": lambda t, s: t + s,
    "s+t": lambda t, s: s + t,
    "t-s": lambda t, s: t - s,
    "s-t": lambda t, s: s - t,
    "t*s": lambda t, s: t * s,
    "s*t": lambda t, s: s * t,
    "t/s": lambda t, s: t / s,
    "s/t": lambda t, s: s / t,
}


@pytest.mark.parametrize("op", list(SCALAR_OPS))
@per_op
@given(data=st.data())
def test_python_scalar_operand(op: str, xp: Any, dtype: str, data: st.DataObject) -> None:
    shape = data.draw(small_shapes)
    x = draw_array(data, xp, dtype, shape, 0.5, 2.0)
    s = data.draw(grid(0.5, 2.0)) * data.draw(st.sampled_from([-1.0, 1.0]))
    check(lambda t: SCALAR_OPS[op](t, s), x)


@per_op
@given(data=st.data())
def test_neg(xp: Any, dtype: str, data: st.DataObject) -> None:
    check(lambda t: -t, draw_array(data, xp, dtype, data.draw(small_shapes)))


@pytest.mark.parametrize("exponent", [2, 3, -1, 0.5, 1.5, -0.75])
@per_op
@given(data=st.data())
def test_pow_scalar_exponent(exponent: float, xp: Any, dtype: str, data: st.DataObject) -> None:
    # Positive bases (negative ones only for integer exponents, which are defined there).
    lo = -2.0 if isinstance(exponent, int) and exponent > 0 else 0.5
    x = draw_array(data, xp, dtype, data.draw(small_shapes), lo, 2.0)
    check(lambda t: t**exponent, x)


@per_op
@given(data=st.data())
def test_pow_tensor_exponent(xp: Any, dtype: str, data: st.DataObject) -> None:
    shape_a, shape_b = data.draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=4)
    ).input_shapes
    base = draw_array(data, xp, dtype, shape_a, 0.5, 2.0)
    exponent = draw_array(data, xp, dtype, shape_b, -2.0, 2.0)
    check(lambda a, b: a**b, base, exponent)


@per_op
@given(data=st.data())
def test_rpow_python_base(xp: Any, dtype: str, data: st.DataObject) -> None:
    base = data.draw(grid(0.5, 3.0))
    x = draw_array(data, xp, dtype, data.draw(small_shapes), -1.0, 1.0)
    check(lambda t: base**t, x)


@per_op
@given(data=st.data())
def test_exp(xp: Any, dtype: str, data: st.DataObject) -> None:
    check(lambda t: t.exp(), draw_array(data, xp, dtype, data.draw(small_shapes), -2.0, 2.0))


@per_op
@given(data=st.data())
def test_log(xp: Any, dtype: str, data: st.DataObject) -> None:
    check(lambda t: t.log(), draw_array(data, xp, dtype, data.draw(small_shapes), 0.5, 3.0))


# -------------------------------------------------------------------------------- matmul
MATMUL_SHAPES: dict[str, Callable[[int, int, int, int], tuple[tuple[int, ...], ...]]] = {
    "2d@2d": lambda b, n, m, k: ((n, m), (m, k)),
    "batched": lambda b, n, m, k: ((b, n, m), (b, m, k)),
    "batched@2d": lambda b, n, m, k: ((b, n, m), (m, k)),
    "2d@batched": lambda b, n, m, k: ((n, m), (b, m, k)),
    "broadcast-batch": lambda b, n, m, k: ((b, 1, n, m), (2, m, k)),
    "1d@2d": lambda b, n, m, k: ((m,), (m, k)),
    "2d@1d": lambda b, n, m, k: ((n, m), (m,)),
    "1d@1d": lambda b, n, m, k: ((m,), (m,)),
    "1d@batched": lambda b, n, m, k: ((m,), (b, m, k)),
    "batched@1d": lambda b, n, m, k: ((b, n, m), (m,)),
}


@pytest.mark.parametrize("case", list(MATMUL_SHAPES))
@per_op
@given(data=st.data())
def test_matmul(case: str, xp: Any, dtype: str, data: st.DataObject) -> None:
    shape_a, shape_b = MATMUL_SHAPES[case](*(data.draw(sides) for _ in range(4)))
    a = draw_array(data, xp, dtype, shape_a)
    b = draw_array(data, xp, dtype, shape_b)
    check(lambda x, y: x @ y, a, b)


# -------------------------------------------------------------------------- shape ops
@per_op
@given(data=st.data())
def test_reshape(xp: Any, dtype: str, data: st.DataObject) -> None:
    shape = data.draw(small_shapes)
    size = int(np.prod(shape))
    target = data.draw(st.sampled_from([(-1,), shape[::-1], (1, size), (size, 1), (size,)]))
    check(lambda t: t.reshape(target), draw_array(data, xp, dtype, shape))
    check(lambda t: t.reshape(*target), draw_array(data, xp, dtype, shape))


@per_op
@given(data=st.data())
def test_transpose(xp: Any, dtype: str, data: st.DataObject) -> None:
    shape = data.draw(nonscalar_shapes)
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    # Negative axes name the same permutation.
    signs = data.draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)))
    mixed = tuple(p - len(shape) if neg else p for p, neg in zip(perm, signs, strict=True))
    x = draw_array(data, xp, dtype, shape)
    check(lambda t: t.transpose(*perm), x)
    check(lambda t: t.transpose(*mixed), x)
    check(lambda t: t.transpose(perm), x)
    check(lambda t: t.transpose(), x)
    if len(shape) == 2:
        check(lambda t: t.T, x)


def test_transpose_negative_axes(xp: Any, dtype: str) -> None:
    x = to_xp(xp, dtype, np.arange(6.0).reshape(2, 3))
    check(lambda t: t.transpose(-1, 0), x)


# ---------------------------------------------------------------------------- reductions
@st.composite
def axis_and_shape(draw: st.DrawFn) -> tuple[tuple[int, ...], Any]:
    shape = draw(nonscalar_shapes)
    ndim = len(shape)
    axis = draw(
        st.one_of(
            st.none(),
            st.integers(-ndim, ndim - 1),
            st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(
                lambda axes: tuple(a - ndim if i % 2 else a for i, a in enumerate(axes))
            ),
        )
    )
    return shape, axis


@pytest.mark.parametrize("reduction", ["sum", "mean", "max"])
@per_op
@given(data=st.data())
def test_reductions(reduction: str, xp: Any, dtype: str, data: st.DataObject) -> None:
    shape, axis = data.draw(axis_and_shape())
    keepdims = data.draw(st.booleans())
    # Distinct values: max has a unique winner, so its gradient is defined.
    x = draw_array(data, xp, dtype, shape, -4.0, 4.0, unique=reduction == "max")
    check(lambda t: getattr(t, reduction)(axis=axis, keepdims=keepdims), x)


@pytest.mark.parametrize("reduction", ["sum", "mean", "max"])
def test_reduction_of_a_0d_tensor(reduction: str, xp: Any, dtype: str) -> None:
    check(lambda t: getattr(t, reduction)(), xp.asarray(1.5, dtype=getattr(xp, dtype)))


def test_max_shares_the_gradient_among_ties(xp: Any, dtype: str) -> None:
    x = nb.Tensor(
        to_xp(xp, dtype, np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]])), requires_grad=True
    )
    x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(nb.Tensor(x.grad).numpy(), [[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])


# ------------------------------------------------------------------------------ indexing
@st.composite
def basic_keys(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[Any, ...]:
    """One int or non-empty slice per axis (the standard's fully specified basic index)."""
    key: list[Any] = []
    for n in shape:
        if draw(st.booleans()):
            key.append(draw(st.integers(-n, n - 1)))
        else:
            start = draw(st.integers(0, n - 1))
            stop = draw(st.integers(start + 1, n))
            key.append(slice(start, stop, draw(st.sampled_from([None, 1, 2]))))
    return tuple(key)


@per_op
@given(data=st.data())
def test_basic_indexing(xp: Any, dtype: str, data: st.DataObject) -> None:
    shape = data.draw(nonscalar_shapes)
    key = data.draw(basic_keys(shape))
    x = draw_array(data, xp, dtype, shape)
    check(lambda t: t[key], x)
    check(lambda t: t[key[0], ...], x)
    # New axes (None) anywhere in the key: the backward stays standard-only (setitem takes
    # no None), so it runs on array_api_strict too.
    where = data.draw(st.integers(0, len(key)))
    check(lambda t: t[(*key[:where], None, *key[where:])], x)
    check(lambda t: t[..., None], x)
    check(lambda t: t[None, key[0], ...], x)


@pytest.mark.parametrize(
    "key",
    [(Ellipsis, None), (None,), (0, None), (slice(None, None, 2), None, 1), (None, ..., 1)],
    ids=["ellipsis-none", "none", "int-none", "slice-none-int", "none-ellipsis-int"],
)
def test_indexing_with_new_axes_has_the_exact_gradient(xp: Any, dtype: str, key: Any) -> None:
    values = np.arange(6.0).reshape(2, 3)
    x = nb.Tensor(to_xp(xp, dtype, values), requires_grad=True)
    if len([k for k in key if k is not None]) < 2 and ... not in key:
        key = (*key, ...)  # the standard needs every axis named, or an ellipsis
    (x[key] * x[key]).sum().backward()
    expected = np.zeros_like(values)
    expected[tuple(k for k in key if k is not None)] = 1
    np.testing.assert_array_equal(nb.Tensor(x.grad).numpy(), 2 * values * expected)


@per_op
@given(data=st.data())
def test_integer_array_rows_with_repeats(xp: Any, dtype: str, data: st.DataObject) -> None:
    shape = data.draw(nonscalar_shapes)
    n = shape[0]
    index_shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=5))
    rows = data.draw(hnp.arrays(np.int64, index_shape, elements=st.integers(0, n - 1)))
    idx = xp.asarray(rows.tolist(), dtype=xp.int64)
    x = draw_array(data, xp, dtype, shape)
    # The index goes in as an integer input: gradcheck passes it through unchanged.
    check(lambda t, i: t[i], x, idx)
    check(lambda t, i: t[i, ...], x, idx)


def test_repeated_rows_accumulate(xp: Any, dtype: str) -> None:
    x = nb.Tensor(xp.zeros((4, 2), dtype=getattr(xp, dtype)), requires_grad=True)
    x[xp.asarray([3, 0, 3, 3], dtype=xp.int64)].sum().backward()
    np.testing.assert_array_equal(
        nb.Tensor(x.grad).numpy(), [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [3.0, 3.0]]
    )


# ------------------------------------------------------------------------ compositions
# An expression is ("leaf", i) or (op, *operands, *params); every op keeps the shape of its
# operands, so trees compose freely. Unbounded ops are squashed (exp of x / (1 + x^2)) so
# values stay moderate at any depth.
def _swap_last(t: Any) -> Any:
    axes = list(range(t.ndim))
    axes[-1], axes[-2] = axes[-2], axes[-1]
    return t.transpose(axes)


def _gram(t: Any) -> Any:
    if t.ndim >= 2:
        return (t @ (_swap_last(t) @ t)) * 0.125
    if t.ndim == 1:
        return t * (t @ t) * 0.125
    return t * t


UNARY: dict[str, Callable[[Any], Any]] = {
    "neg": lambda t: -t,
    "scale": lambda t: t * 0.5,
    "shift": lambda t: 1.5 - t,
    "square": lambda t: t**2,
    "squash_exp": lambda t: (t / (1.0 + t * t)).exp(),
    "log1p_sq": lambda t: (1.0 + t * t).log(),
    "pow": lambda t: (1.0 + t * t) ** 0.75,
    "pow_tensor": lambda t: (1.5 + t * t) ** (t / (1.0 + t * t)),
    "recip": lambda t: 1.0 / (1.0 + t * t),
    "center": lambda t: t - t.mean(axis=-1, keepdims=True) if t.ndim else t,
    "add_colsum": lambda t: t + t.sum(axis=0, keepdims=True) * 0.25 if t.ndim else t,
    "reshape": lambda t: t.reshape(-1).reshape(t.shape),
    "transpose": lambda t: t.T.T * 1.0 if t.ndim < 2 else _swap_last(_swap_last(t) * 0.5),
    "gram": _gram,
    "first_rows": lambda t: t[0:1, ...] * t if t.ndim else t,
}
BINARY_TREE: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (1.0 + b * b),
}


def expressions(n_leaves: int) -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        st.integers(0, n_leaves - 1).map(lambda i: ("leaf", i)),
        # max on a leaf only: leaves hold distinct values, so there are no ties.
        st.integers(0, n_leaves - 1).map(lambda i: ("leafmax", i)),
    )
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.tuples(st.sampled_from(sorted(UNARY)), children),
            st.tuples(st.sampled_from(sorted(BINARY_TREE)), children, children),
            st.tuples(st.just("rows"), children),
        ),
        max_leaves=6,
    )


def evaluate(expr: Any, leaves: list[Any], rows: Any) -> Any:
    kind = expr[0]
    if kind == "leaf":
        return leaves[expr[1]]
    if kind == "leafmax":
        t = leaves[expr[1]]
        return t - t.max(axis=-1, keepdims=True) if t.ndim else t
    if kind == "rows":
        t = evaluate(expr[1], leaves, rows)
        return t[rows] if t.ndim else t
    if kind in UNARY:
        return UNARY[kind](evaluate(expr[1], leaves, rows))
    return BINARY_TREE[kind](evaluate(expr[1], leaves, rows), evaluate(expr[2], leaves, rows))


@pytest.fixture(params=["float64", "float32"])
def wide_xp(request: pytest.FixtureRequest, backend: str) -> Iterator[tuple[Any, str]]:
    """Like ``xp`` but float64 and float32 only (float16 is checked per op above)."""
    with nb.using(backend=backend, dtype=request.param):
        yield nb.namespace(backend, request.param), request.param


@settings(max_examples=BUDGET * 3)
@given(data=st.data())
def test_random_compositions(wide_xp: tuple[Any, str], data: st.DataObject) -> None:
    xp, dtype = wide_xp
    shape = data.draw(small_shapes)
    expr = data.draw(expressions(2))
    a = draw_array(data, xp, dtype, shape, -4.0, 4.0, unique=True)
    b = draw_array(data, xp, dtype, shape, -4.0, 4.0, unique=True)
    n = shape[0] if shape else 1
    # A same-length row selection with repeats, so the tree keeps its shape.
    rows = data.draw(st.lists(st.integers(0, n - 1), min_size=n, max_size=n))
    idx = xp.asarray(rows, dtype=xp.int64)
    check(lambda x, y, i: evaluate(expr, [x, y], i), a, b, idx)
