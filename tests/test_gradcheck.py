"""``nnbackend.gradcheck``: True on correct gradients; on a wrong one, a GradientError that
names the input, the worst element and both values; integer inputs pass through."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend.autograd import Function, Tensor
from nnbackend.autograd.gradcheck import default_tolerance
from nnbackend.errors import ArgumentError, GradientError

NUMBER = r"-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"


def arr(xp: Any, dtype: str, values: Any) -> Any:
    return xp.asarray(np.asarray(values, dtype=np.float64).tolist(), dtype=getattr(xp, dtype))


class Cube(Function):
    def forward(self, x: Any) -> Any:
        self.x = x
        return x**3

    def backward(self, gy: Any) -> Any:
        return 3.0 * self.x**2 * gy


class CubeOffByAFactor(Cube):
    def backward(self, gy: Any) -> Any:
        return 6.0 * self.x**2 * gy  # twice the true gradient


class TripleWithABump(Function):
    """y = 3x, but the gradient of element (1, 2) is 100 too large."""

    def forward(self, x: Any) -> Any:
        return x * 3.0

    def backward(self, gy: Any) -> Any:
        xp = self.xp
        # Built, not written into: jax arrays are immutable.
        rows = xp.reshape(xp.arange(gy.shape[0]), (-1, 1))
        cols = xp.reshape(xp.arange(gy.shape[1]), (1, -1))
        bump = xp.astype((rows == 1) & (cols == 2), gy.dtype) * 100.0
        return gy * 3.0 + bump


class Nudged(Function):
    """y = x, with a gradient off by a relative ``amount``."""

    def __init__(self, amount: float) -> None:
        self.amount = amount

    def forward(self, x: Any) -> Any:
        return x * 1.0

    def backward(self, gy: Any) -> Any:
        return gy * (1.0 + self.amount)


def test_returns_true_on_correct_gradients(xp: Any, dtype: str) -> None:
    x = arr(xp, dtype, [[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
    w = arr(xp, dtype, [[1.0, 2.0], [0.5, -0.5], [-1.0, 0.25]])
    assert nb.gradcheck(lambda t: Cube()(t), x) is True
    assert nb.gradcheck(lambda a, b: (a @ b).exp().sum(), x, w) is True
    assert nb.gradcheck(lambda a: (a * a).mean(axis=0), Tensor(x)) is True  # Tensor input


def test_off_by_a_factor_is_caught(xp: Any, dtype: str) -> None:
    x = arr(xp, dtype, [0.5, -1.0, 2.0, 1.5])
    with pytest.raises(GradientError, match="input 0"):
        nb.gradcheck(lambda t: CubeOffByAFactor()(t), x)


def test_error_names_input_worst_element_and_both_values(backend: str) -> None:
    for dtype in ("float64", "float32"):
        xp = nb.namespace(backend, dtype)
        x = arr(xp, dtype, np.linspace(-1.0, 1.0, 12).reshape(3, 4))
        y = arr(xp, dtype, np.linspace(0.5, 2.0, 12).reshape(3, 4))
        with pytest.raises(GradientError) as info:
            nb.gradcheck(lambda a, b: a * 2.0 + TripleWithABump()(b), x, y)
        message = str(info.value)
        assert "input 1" in message
        assert "(1, 2)" in message
        numbers = [float(n) for n in re.findall(NUMBER, message)]
        # The numeric value is 3 * p for a projection weight p in [-1, 1]; backward adds 100.
        analytic = [n for n in numbers if 96.0 <= n <= 104.0]
        numeric = [n for n in numbers if -3.0 <= n <= 3.0 and n not in (0.0, 1.0, 2.0)]
        assert any(abs(a - n - 100.0) < 1e-3 for a in analytic for n in numeric), message


def test_integer_inputs_pass_through(xp: Any, dtype: str) -> None:
    x = arr(xp, dtype, [[1.0, 2.0], [3.0, 4.0], [5.0, -6.0]])
    labels = xp.asarray([2, 0, 2, 1], dtype=xp.int64)
    seen: list[Any] = []

    def pick(t: Tensor, idx: Any) -> Tensor:
        seen.append(idx)
        return (t[idx] * t[idx]).sum(axis=1)

    assert nb.gradcheck(pick, x, labels) is True
    assert nb.gradcheck(lambda idx, t: pick(t, idx), labels, x) is True
    # Integer inputs keep an integer dtype on every call, analytic and numeric.
    for idx in seen:
        idx = idx.data if isinstance(idx, Tensor) else idx
        assert "int" in str(idx.dtype)
    np.testing.assert_array_equal(np.asarray(Tensor(labels).numpy()), [2, 0, 2, 1])


def test_needs_a_floating_input(xp: Any) -> None:
    labels = xp.asarray([1, 2], dtype=xp.int64)
    with pytest.raises(GradientError, match="floating"):
        nb.gradcheck(lambda i: Tensor(i) * 1, labels)


def test_leaves_its_inputs_alone(xp: Any, dtype: str) -> None:
    x = Tensor(arr(xp, dtype, [0.5, 1.0, -2.0]), requires_grad=True)
    before = x.numpy().copy()
    nb.gradcheck(lambda t: (t * t).sum(), x)
    assert x.grad is None
    np.testing.assert_array_equal(x.numpy(), before)


def test_scalar_and_non_scalar_outputs(xp: Any, dtype: str) -> None:
    x = arr(xp, dtype, [[0.5, 1.0], [-2.0, 0.25]])
    assert nb.gradcheck(lambda t: t.sum(), x)  # 0-d output
    assert nb.gradcheck(lambda t: t * t, x)  # same shape as the input
    assert nb.gradcheck(lambda t: t.reshape(1, 4, 1) * 2.0, x)


def test_default_tolerance_scales_with_machine_epsilon() -> None:
    for name in ("float16", "float32", "float64"):
        eps = float(np.finfo(name).eps)
        assert default_tolerance(name) == pytest.approx(max(10.0 * eps**0.5, 1e-6))
    assert default_tolerance("float16") > default_tolerance("float32")
    assert default_tolerance("float32") > default_tolerance("float64")


@settings(max_examples=max(1, settings.default.max_examples * 3 // 5))
@given(amount=st.floats(0.05, 0.5))
def test_explicit_tolerances_decide(amount: float, backend: str) -> None:
    xp = nb.namespace(backend, "float64")
    x = arr(xp, "float64", [0.5, -1.0, 2.0])
    # A relative error of `amount` fails under a tighter rtol and passes under a looser one.
    with pytest.raises(GradientError):
        nb.gradcheck(lambda t: Nudged(amount)(t), x, rtol=amount / 2, atol=0.0)
    assert nb.gradcheck(lambda t: Nudged(amount)(t), x, rtol=amount * 2, atol=0.0)


def test_float64_default_tolerance_catches_small_errors(backend: str) -> None:
    xp = nb.namespace(backend, "float64")
    x = arr(xp, "float64", [0.5, -1.0, 2.0])
    with pytest.raises(GradientError):
        nb.gradcheck(lambda t: Nudged(1e-4)(t), x)


def test_eps_is_honoured(backend: str) -> None:
    xp = nb.namespace(backend, "float64")
    x = arr(xp, "float64", [0.5, -1.0, 2.0])
    assert nb.gradcheck(lambda t: Cube()(t), x, eps=1e-5)
    # A huge step makes the central difference of x^3 wrong by eps^2 (f''' / 6 * eps^2 * 2).
    with pytest.raises(GradientError):
        nb.gradcheck(lambda t: Cube()(t), x, eps=0.5)


class CubeWithNaNBackward(Cube):
    def backward(self, gy: Any) -> Any:
        return 3.0 * self.x**2 * gy * float("nan")


class CubeUndefinedOffItsPoint(Function):
    """``x**3``, but element 0 is NaN anywhere except at exactly 0.5 (so its central
    difference is NaN); backward is 1000x too big at element 1."""

    def forward(self, x: Any) -> Any:
        self.x = x
        xp = self.xp
        first = xp.arange(x.shape[0]) == 0
        return xp.where(first & (x != 0.5), float("nan"), x**3)

    def backward(self, gy: Any) -> Any:
        xp = self.xp
        second = xp.astype(xp.arange(self.x.shape[0]) == 1, self.x.dtype)
        return 3.0 * self.x**2 * gy * (1.0 + 999.0 * second)


def test_a_nan_backward_never_passes(xp: Any, dtype: str) -> None:
    x = arr(xp, dtype, [0.5, -1.0, 2.0])
    with pytest.raises(GradientError, match="non-finite") as info:
        nb.gradcheck(lambda t: CubeWithNaNBackward()(t), x)
    assert "nan" in str(info.value)


def test_a_nan_in_the_numeric_gradient_hides_no_error(xp: Any, dtype: str) -> None:
    x = arr(xp, dtype, [0.5, -1.0, 2.0])
    with pytest.raises(GradientError, match="input 0"):
        nb.gradcheck(lambda t: CubeUndefinedOffItsPoint()(t), x)


@pytest.mark.parametrize("eps", [0, 0.0, -1e-6, float("nan"), float("inf"), "tiny"])
def test_a_step_that_is_no_step_is_an_argument_error(eps: Any, backend: str) -> None:
    x = arr(nb.namespace(backend, "float64"), "float64", [0.5, -1.0])
    with pytest.raises(ArgumentError, match="eps must be a finite number > 0"):
        nb.gradcheck(lambda t: Cube()(t), x, eps=eps)


@pytest.mark.parametrize("name", ["rtol", "atol"])
def test_a_negative_or_nan_tolerance_is_an_argument_error(name: str, backend: str) -> None:
    x = arr(nb.namespace(backend, "float64"), "float64", [0.5, -1.0])
    for bad in (-1.0, float("nan")):
        with pytest.raises(ArgumentError, match=name):
            nb.gradcheck(lambda t: Cube()(t), x, **{name: bad})


def test_a_function_that_returns_no_tensor_is_a_gradient_error(xp: Any, dtype: str) -> None:
    x = arr(xp, dtype, [0.5, -1.0])
    with pytest.raises(GradientError, match="not a Tensor"):
        nb.gradcheck(lambda t: t.data * 2.0, x)
    with pytest.raises(GradientError, match="not a Tensor"):
        nb.gradcheck(lambda t: float((t * t).sum().item()), x)
