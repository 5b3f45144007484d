"""``t += v`` and the other in-place operators on a Tensor.

Without ``__iadd__`` and its kin Python rebound the name to a new Tensor: the hand-written
SGD step of every PyTorch tutorial, ``p -= lr * p.grad`` under ``no_grad()``, ran without an
error and left the parameters as they were. The operators now update the tensor as
``t[...] = value`` writes it (``t.data`` bound to the result), keep its shape and dtype,
refuse a leaf that requires a gradient as PyTorch does, and leave a tensor of the graph to
Python's out-of-place fallback, so gradients stay right.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend import nn, optim
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import CompileError, DtypeError, GradientError, ShapeError

IN_PLACE: dict[str, tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]]] = {
    "+=": (operator.iadd, operator.add),
    "-=": (operator.isub, operator.sub),
    "*=": (operator.imul, operator.mul),
    "/=": (operator.itruediv, operator.truediv),
    "**=": (operator.ipow, operator.pow),
}


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, Tensor) else a
    out = np.asarray(a.tolist() if hasattr(a, "tolist") else np.asarray(a), dtype=float)
    return out.reshape(tuple(a.shape))


def _on(xp: Any, values: Any) -> Any:
    return xp.asarray(np.asarray(values, dtype=float).tolist())


@given(
    values=st.lists(st.floats(0.5, 4.0), min_size=3, max_size=3),
    other=st.one_of(st.floats(0.5, 2.0), st.lists(st.floats(0.5, 2.0), min_size=3, max_size=3)),
    symbol=st.sampled_from(sorted(IN_PLACE)),
)
@settings(max_examples=40, deadline=None)
def test_an_update_outside_the_graph_changes_the_tensor_itself(
    xp64: Any, values: list[float], other: Any, symbol: str
) -> None:
    """``t op= v`` for a tensor that needs no gradient: the same object afterwards (an
    alias sees the update, as with NumPy arrays), holding NumPy's ``t op v``, in t's dtype;
    an array taken before (``a = t.data``) keeps its values."""
    in_place, plain = IN_PLACE[symbol]
    t = Tensor(_on(xp64, values))
    alias, before = t, t.data
    operand = _on(xp64, other) if isinstance(other, list) else other
    result = in_place(t, operand)
    assert result is t and alias is t
    want = plain(np.asarray(values), np.asarray(other))
    np.testing.assert_allclose(_host(t), want, rtol=1e-12)
    assert t.dtype == before.dtype
    np.testing.assert_array_equal(_host(before), np.asarray(values))


def _trained(xp: Any, by_hand: bool) -> list[np.ndarray]:
    nb.random.seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x = Tensor(_on(xp, np.arange(12.0).reshape(4, 3) / 10))
    params = list(model.parameters())
    opt = optim.SGD(params, lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        (model(x) * model(x)).sum().backward()
        if by_hand:
            with nb.no_grad():
                for p in params:
                    p -= 0.1 * p.grad
        else:
            opt.step()
    assert list(model.parameters()) == params  # the same Parameter objects, still leaves
    assert all(p.requires_grad and p.creator is None for p in params)
    return [_host(p) for p in params]


def test_the_hand_written_sgd_step_trains_as_the_optimizer_does(xp64: Any) -> None:
    """``p -= lr * p.grad`` under ``no_grad()`` did nothing; it now takes the steps that
    ``optim.SGD`` takes (to rounding: the optimizer may update with one fused multiply-add),
    and the parameters stay the model's leaves."""
    by_hand, by_optimizer = _trained(xp64, by_hand=True), _trained(xp64, by_hand=False)
    for a, b in zip(by_hand, by_optimizer, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    nb.random.seed(0)
    first = _host(nn.Linear(3, 4).weight)  # the first layer's starting weights
    assert not np.allclose(by_hand[0], first)  # it trained


def test_a_leaf_that_requires_a_gradient_is_refused_where_gradients_flow(xp64: Any) -> None:
    """As PyTorch refuses it: the update would escape the gradient. Nothing changes."""
    w = Tensor(_on(xp64, [1.0, 2.0]), requires_grad=True)
    before = w.data
    with pytest.raises(GradientError, match="no_grad"):
        w -= 1.0
    assert w.data is before and w.creator is None


def test_a_tensor_of_the_graph_gets_a_new_node_and_right_gradients(xp64: Any) -> None:
    """``h += c`` on a tensor computed in the graph is ``h = h + c``: the name is bound to
    a new node, an alias keeps the old tensor, and the gradient flows through both uses."""
    w = Tensor(_on(xp64, [1.0, 2.0, 3.0]), requires_grad=True)
    h = w * w
    alias = h
    h *= 3.0
    assert h is not alias and h.creator is not None
    np.testing.assert_array_equal(_host(alias), [1.0, 4.0, 9.0])
    (h + alias).sum().backward()
    np.testing.assert_array_equal(_host(w.grad), 8.0 * np.array([1.0, 2.0, 3.0]))


def test_a_constant_updated_after_recording_leaves_the_graph_its_values(xp64: Any) -> None:
    """A graph recorded before ``c += 1`` keeps the ``c`` it saw, as with ``t[key] = v``."""
    w = Tensor(_on(xp64, [1.0, 2.0]), requires_grad=True)
    c = Tensor(_on(xp64, [3.0, 5.0]))
    y = (w * c).sum()
    c += 1.0
    y.backward()
    np.testing.assert_array_equal(_host(w.grad), [3.0, 5.0])
    np.testing.assert_array_equal(_host(c), [4.0, 6.0])


def test_a_change_of_shape_or_dtype_is_refused_and_changes_nothing(xp64: Any) -> None:
    t = Tensor(_on(xp64, [1.0, 2.0, 3.0]))
    before = t.data
    with pytest.raises(ShapeError, match=r"keeps t's shape"):
        t += _on(xp64, [[1.0], [2.0]])
    labels = Tensor(xp64.asarray([1, 2, 3]))
    with pytest.raises(DtypeError, match=r"keeps t's dtype"):
        labels += 0.5
    assert t.data is before
    np.testing.assert_array_equal(_host(labels), [1.0, 2.0, 3.0])


def test_an_update_inside_a_compiled_step_is_refused() -> None:
    """A replay would not repeat it: a CompileError names the way that works."""
    nb.random.seed(0)
    model = nn.Linear(3, 1)
    params = list(model.parameters())

    def train(x: Any, t: Any) -> Any:
        for p in params:
            p.grad = None
        loss = nn.MSELoss()(model(x), t)
        loss.backward()
        with nb.no_grad():
            for p in params:
                p -= 0.1 * p.grad
        return loss

    step = nb.compile_step(train)
    rng = np.random.default_rng(0)
    with pytest.raises(CompileError, match="optimizer"):
        step(rng.standard_normal((4, 3)), rng.standard_normal((4, 1)))
