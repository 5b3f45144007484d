"""Review of the autograd engine's differentiable operations: defects found by comparing
forward values and gradients with torch.autograd, and by feeding the operators user
mistakes, on numpy and array_api_strict in float64 and float32."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend.autograd.higher import grad
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import NNBackendError, ShapeError

torch = pytest.importorskip("torch")

BACKENDS = ("numpy", "array_api_strict")
DTYPES = ("float64", "float32")


@pytest.fixture(params=[(b, d) for b in BACKENDS for d in DTYPES], ids=lambda p: f"{p[0]}-{p[1]}")
def env(request: Any) -> Any:
    backend, dtype = request.param
    with nb.using(backend=backend, dtype=dtype):
        yield nb.namespace(), dtype


def _leaf(xp: Any, values: Any) -> Tensor:
    return Tensor(xp.asarray(np.asarray(values, dtype=float).tolist()), requires_grad=True)


def _host(a: Any) -> np.ndarray:
    return np.asarray(a.tolist() if hasattr(a, "tolist") else a, dtype=float)


def _torch_grads(fn: Any, *arrays: Any, dtype: str) -> tuple[np.ndarray, list[np.ndarray]]:
    ts = [
        torch.tensor(np.asarray(a, dtype=float), dtype=getattr(torch, dtype), requires_grad=True)
        for a in arrays
    ]
    y = fn(*ts)
    y.sum().backward()
    return y.detach().double().numpy(), [t.grad.double().numpy() for t in ts]


def _check(env: Any, fn: Any, tfn: Any, *arrays: Any) -> None:
    xp, dtype = env
    xs = [_leaf(xp, a) for a in arrays]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the IEEE infinities on the way
        y = fn(*xs)
        (y.sum() if y.ndim else y).backward()
    want_y, want_g = _torch_grads(tfn, *arrays, dtype=dtype)
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(_host(y.data), want_y, rtol=tol, atol=tol)
    for x, g in zip(xs, want_g, strict=True):
        np.testing.assert_allclose(_host(x.grad), g, rtol=tol, atol=tol)


# -- pow: the zero cases torch defines --------------------------------------------------------
def test_pow_zero_exponent_has_zero_gradient_at_zero(env: Any) -> None:
    """d/dx x**0 is 0 everywhere (torch); the rule 0 * x**-1 gave 0 * inf = nan at x = 0."""
    _check(env, lambda x: x**0, lambda x: x**0, [0.0, 1.0, -2.0])
    _check(env, lambda x: x**0.0, lambda x: x**0.0, [0.0, 1.0, -2.0])


def test_pow_tensor_exponents_with_zero_base(env: Any) -> None:
    """d/db 0**b is 0 for b >= 0 (torch); y * log(0) gave 0 * -inf = nan, and d/da 0**0 was
    nan too."""
    _check(env, lambda a, b: a**b, lambda a, b: a**b, [0.0, 0.0, 2.0], [2.0, 0.0, 3.0])


@pytest.mark.parametrize("base", [0.0, -2.0])
def test_pow_scalar_base_not_positive(env: Any, base: float) -> None:
    """``0.0 ** x`` and ``(-2.0) ** x`` crashed in backward with math.log's bare ValueError
    ("math domain error"); torch gives 0 (base 0, exponent >= 0) and nan (negative base)."""
    xp, dtype = env
    x = _leaf(xp, [1.0, 2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        (base**x).sum().backward()
    _, (want,) = _torch_grads(lambda t: base**t, [1.0, 2.0], dtype=dtype)
    np.testing.assert_allclose(_host(x.grad), want)


def test_pow_zero_cases_second_order() -> None:
    """The create_graph rules have the same zero cases (gradient of a gradient)."""
    x = Tensor(np.array([0.0, 1.0]), requires_grad=True)
    (g,) = grad((x**0).sum(), x, create_graph=True)
    assert g.tolist() == [0.0, 0.0]
    b = Tensor(np.array([2.0, 3.0]), requires_grad=True)
    (gb,) = grad((0.0**b).sum(), b, create_graph=True)
    assert gb.tolist() == [0.0, 0.0]


# -- reductions ------------------------------------------------------------------------------
def test_std_of_constant_values_has_zero_gradient(env: Any) -> None:
    """torch's std gives 0, not nan, where the deviation is 0 (a constant feature): the
    chain sqrt'(0) * var' = inf * 0 was nan and poisoned every parameter behind it."""
    _check(
        env,
        lambda x: x.std(axis=1),
        lambda x: x.std(dim=1, correction=0),
        [[1.0, 1.0, 1.0], [1.0, 2.0, 4.0]],
    )


def test_std_zero_second_order_is_finite() -> None:
    x = Tensor(np.array([[1.0, 1.0], [1.0, 3.0]]), requires_grad=True)
    (g,) = grad(x.std(axis=1).sum(), x, create_graph=True)
    (h,) = grad((g * g).sum(), x)
    assert np.isfinite(h.numpy()).all()


@pytest.mark.parametrize("fill", [-np.inf, np.inf])
def test_logsumexp_of_infinite_rows(env: Any, fill: float) -> None:
    """A row of -inf (every class masked out) gives -inf and a row with +inf gives +inf, as
    in torch; shifting by the max computed -inf - -inf = nan."""
    xp, _ = env
    x = Tensor(xp.asarray([[fill, fill], [0.0, 1.0]]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = _host(x.logsumexp(axis=1).data)
    want = torch.tensor([[fill, fill], [0.0, 1.0]]).logsumexp(dim=1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)


# -- indexing --------------------------------------------------------------------------------
def test_negative_row_indices_gradient(env: Any) -> None:
    """``x[[-1, -1, 0]]``: on array_api_strict the scatter-add of the backward matched no row
    for -1 and dropped those gradients silently ([1, 0, 0] instead of [1, 0, 2])."""
    idx = [-1, -1, 0]
    _check(env, lambda x: x[idx], lambda x: x[idx], [1.0, 2.0, 3.0])
    xp, _ = env
    _check(env, lambda x: x[xp.asarray(idx)], lambda x: x[idx], [1.0, 2.0, 3.0])


def test_take_negative_indices_gradient(env: Any) -> None:
    xp, _ = env
    _check(
        env,
        lambda x: x.take(xp.asarray([-1, 0, -1]), axis=-1),
        lambda x: x[:, [-1, 0, -1]],
        [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
    )


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-4, 3), min_size=1, max_size=6))
def test_row_indexing_matches_torch(idx: list[int]) -> None:
    with nb.using(backend="array_api_strict"):
        xp = nb.namespace()
        x = _leaf(xp, [1.0, 2.0, 3.0, 4.0])
        (x[xp.asarray(idx)] * xp.asarray([float(i + 1) for i in range(len(idx))])).sum().backward()
    t = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64, requires_grad=True)
    (t[idx] * torch.arange(1.0, len(idx) + 1, dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(_host(x.grad), t.grad.numpy())


def test_empty_index_list(env: Any) -> None:
    """``x[[]]`` selects no rows (torch, NumPy); the empty list became a float array and the
    take raised a bare TypeError."""
    xp, _ = env
    x = _leaf(xp, [[1.0, 2.0], [3.0, 4.0]])
    y = x[[]]
    assert y.shape == (0, 2)
    y.sum().backward()
    assert _host(x.grad).tolist() == [[0.0, 0.0], [0.0, 0.0]]


# -- user mistakes get nnbackend errors ------------------------------------------------------
def _mistakes(xp: Any) -> list[tuple[str, Any]]:
    x = _leaf(xp, np.arange(6.0).reshape(2, 3))
    return [
        ("reshape", lambda: x.reshape(4, 2)),
        ("transpose too few axes", lambda: x.transpose(0)),
        ("transpose repeated axis", lambda: x.transpose(0, 0)),
        ("add broadcast", lambda: x + _leaf(xp, [1.0, 2.0, 3.0, 4.0])),
        ("mul broadcast", lambda: x * _leaf(xp, [1.0, 2.0])),
        ("sub broadcast", lambda: x - _leaf(xp, [[1.0], [2.0], [3.0]])),
        ("div broadcast", lambda: x / _leaf(xp, [1.0, 2.0])),
        ("pow broadcast", lambda: x ** _leaf(xp, [1.0, 2.0])),
        ("matmul batch", lambda: _leaf(xp, np.ones((2, 3, 4))) @ _leaf(xp, np.ones((5, 4, 6)))),
        ("matmul scalar", lambda: x @ 2.0),
        ("float index", lambda: x[1.0]),
        ("backward list of the wrong shape", lambda: (x * 2.0).backward([1.0, 2.0])),
        ("backward string", lambda: (x * 2.0).backward("ones")),
        ("item", lambda: x.item()),
        ("sum repeated axis", lambda: x.sum(axis=(0, 0))),
    ]


@pytest.mark.parametrize("case", range(15))
def test_user_mistakes_raise_nnbackend_errors(env: Any, case: int) -> None:
    """Each raised a bare ValueError / TypeError / AttributeError from inside the backend,
    not an nnbackend error saying what was wrong."""
    xp, _ = env
    name, call = _mistakes(xp)[case]
    with pytest.raises(NNBackendError) as info:
        call()
    assert str(info.value), name


def test_backward_list_gradient_accepted_like_an_array() -> None:
    """A nested list of the right shape is a gradient too (it is turned into an array)."""
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 3.0).backward([1.0, 2.0])
    assert x.grad.tolist() == [3.0, 6.0]


def test_broadcast_error_names_shapes() -> None:
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(ShapeError, match=r"\(2, 3\).*\(4,\)"):
        x + Tensor(np.ones(4))


def test_index_array_with_reversed_slice(env: Any) -> None:
    """``x[idx, ::-1]`` raised "truth value of an array is ambiguous" (list.count compared the
    index array with ``...``); it is x[idx] reversed along the second axis, as in torch."""
    xp, _ = env
    _check(
        env,
        lambda x: x[xp.asarray([1, 1, 0]), ::-1] * x[xp.asarray([0, 1, 1])],
        lambda x: x[[1, 1, 0]].flip(1) * x[[0, 1, 1]],
        [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
    )
