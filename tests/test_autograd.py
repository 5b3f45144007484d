"""The engine's behaviour: dtype preservation, backward semantics, graph lifetime, grad modes,
evaluation order, custom Functions and the Tensor's own properties.

Numeric correctness of each op's gradient lives in test_ops_gradients.py; here the questions
are what the engine does around the arithmetic.
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend.autograd import Function, Tensor, is_grad_enabled
from nnbackend.errors import BackendMismatchError, DtypeError, GradientError, ShapeError
from nnbackend.namespace import backend_for


def positive(xp: Any, dtype: str, shape: tuple[int, ...], seed: int = 0) -> Any:
    """A backend array of ``shape`` and ``dtype`` with values in [0.5, 1.5)."""
    values = np.random.default_rng(seed).uniform(0.5, 1.5, shape)
    return xp.asarray(values.tolist(), dtype=getattr(xp, dtype))


def host(x: Any) -> np.ndarray:
    """A host float64 copy of a backend array or Tensor."""
    return np.asarray((x if isinstance(x, Tensor) else Tensor(x)).numpy(), dtype=np.float64)


def mutable(array: Any) -> bool:
    """Whether ``array``'s backend writes in place (``x[...] = y``). Only there can a gradient
    that shares memory, or a read-only one, break an in-place optimizer; on a backend with
    immutable arrays (jax) the engine and optimizers rebind, and the tests do not write."""
    return bool(backend_for(array)[1].capabilities.inplace)


def leaf(xp: Any, dtype: str, shape: tuple[int, ...], seed: int = 0) -> Tensor:
    return Tensor(positive(xp, dtype, shape, seed), requires_grad=True)


# ------------------------------------------------------------------------ dtype preservation
# name -> (input shapes, fn(xp, *tensors)); inputs are positive so log and pow are defined.
OPS: dict[str, tuple[list[tuple[int, ...]], Callable[..., Tensor]]] = {
    "add": ([(3, 4), (4,)], lambda xp, a, b: a + b),
    "add_float": ([(3, 4)], lambda xp, a: a + 2.5),
    "radd_int": ([(3, 4)], lambda xp, a: 2 + a),
    "sub": ([(3, 1), (1, 4)], lambda xp, a, b: a - b),
    "rsub_float": ([(3, 4)], lambda xp, a: 1.5 - a),
    "mul": ([(3, 4), (3, 4)], lambda xp, a, b: a * b),
    "mul_float": ([(3, 4)], lambda xp, a: a * 2.0),
    "rmul_int": ([(3, 4)], lambda xp, a: 3 * a),
    "div": ([(3, 4), (4,)], lambda xp, a, b: a / b),
    "div_float": ([(3, 4)], lambda xp, a: a / 3.0),
    "rdiv_float": ([(3, 4)], lambda xp, a: 1.0 / a),
    "pow_int": ([(3, 4)], lambda xp, a: a**2),
    "pow_float": ([(3, 4)], lambda xp, a: a**0.5),
    "pow_tensor": ([(3, 4), (3, 4)], lambda xp, a, b: a**b),
    "matmul": ([(3, 4), (4, 2)], lambda xp, a, b: a @ b),
    "matmul_batched": ([(2, 3, 4), (4, 2)], lambda xp, a, b: a @ b),
    "matmul_1d": ([(4,), (4, 2)], lambda xp, a, b: a @ b),
    "matmul_vec_vec": ([(4,), (4,)], lambda xp, a, b: a @ b),
    "neg": ([(3, 4)], lambda xp, a: -a),
    "reshape": ([(3, 4)], lambda xp, a: a.reshape(2, -1)),
    "transpose": ([(2, 3, 4)], lambda xp, a: a.transpose(2, 0, 1)),
    "T": ([(3, 4)], lambda xp, a: a.T),
    "sum": ([(3, 4)], lambda xp, a: a.sum()),
    "sum_axis": ([(3, 4)], lambda xp, a: a.sum(axis=0)),
    "mean": ([(3, 4)], lambda xp, a: a.mean()),
    "mean_axis_keepdims": ([(3, 4)], lambda xp, a: a.mean(axis=1, keepdims=True)),
    "max": ([(3, 4)], lambda xp, a: a.max()),
    "max_axis": ([(3, 4)], lambda xp, a: a.max(axis=-1)),
    "exp": ([(3, 4)], lambda xp, a: a.exp()),
    "log": ([(3, 4)], lambda xp, a: a.log()),
    "getitem_slice": ([(3, 4)], lambda xp, a: a[1:, ::2]),
    "getitem_int": ([(3, 4)], lambda xp, a: a[1, ...]),
    "getitem_rows": ([(3, 4)], lambda xp, a: a[xp.asarray([2, 0, 2], dtype=xp.int64)]),
}


@pytest.mark.parametrize("op", list(OPS))
def test_every_op_keeps_the_dtype_forward_and_backward(op: str, xp: Any, dtype: str) -> None:
    shapes, fn = OPS[op]
    want = getattr(xp, dtype)
    inputs = [leaf(xp, dtype, shape, seed=i) for i, shape in enumerate(shapes)]
    out = fn(xp, *inputs)
    assert out.dtype == want, f"{op} forward gave {out.dtype}, expected {want}"
    assert out.requires_grad
    out.backward(xp.ones(out.shape, dtype=want))
    for i, t in enumerate(inputs):
        assert t.grad is not None, f"{op}: input {i} got no gradient"
        assert t.grad.dtype == want, f"{op}: input {i} gradient is {t.grad.dtype}, not {want}"
        assert tuple(t.grad.shape) == t.shape
    for t in inputs:  # optimizers update gradients in place: none may be a read-only view
        if mutable(t.grad):
            t.grad[...] = 0.0


def test_rpow_forward_keeps_the_dtype(xp: Any, dtype: str) -> None:
    assert (2.0 ** Tensor(positive(xp, dtype, (3,)))).dtype == getattr(xp, dtype)


def test_every_intermediate_gradient_keeps_the_dtype(xp: Any, dtype: str) -> None:
    want = getattr(xp, dtype)
    x, w = leaf(xp, dtype, (5, 3)), leaf(xp, dtype, (3, 4), seed=1)
    h1 = x @ w
    h2 = 1.0 / (1.0 + (-h1).exp())
    h3 = (h2 - h2.max(axis=1, keepdims=True)) * 0.5
    h4 = (h3**2).mean(axis=0)
    loss = h4.sum()
    loss.backward(retain_grad=True)
    for name, t in {"x": x, "w": w, "h1": h1, "h2": h2, "h3": h3, "h4": h4}.items():
        assert t.dtype == want, name
        assert t.grad is not None and t.grad.dtype == want, name


SCALAR_FORMS: dict[str, Callable[[Tensor, float], Tensor]] = {
    "t+s": lambda t, s: t + s,
    "s+t": lambda t, s: s + t,
    "t-s": lambda t, s: t - s,
    "s-t": lambda t, s: s - t,
    "t*s": lambda t, s: t * s,
    "s*t": lambda t, s: s * t,
    "t/s": lambda t, s: t / s,
    "s/t": lambda t, s: s / t,
    "t**s": lambda t, s: t**s,
}


@settings(max_examples=max(1, settings.default.max_examples * 4 // 5))
@given(
    form=st.sampled_from(sorted(SCALAR_FORMS)),
    scalar=st.one_of(
        st.integers(-5, 5).filter(bool),
        st.floats(-1e3, 1e3, allow_nan=False).filter(lambda v: abs(v) > 1e-3),
    ),
)
def test_python_scalars_never_upcast(xp: Any, dtype: str, form: str, scalar: float) -> None:
    want = getattr(xp, dtype)
    t = leaf(xp, dtype, (2, 3))
    if form == "t**s":
        scalar = float(min(abs(scalar), 3.0))  # keep float16 finite
    out = SCALAR_FORMS[form](t, scalar)
    assert out.dtype == want
    out.backward(xp.ones(out.shape, dtype=want))
    assert t.grad.dtype == want


MIXERS: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a**b,
    "matmul": lambda a, b: a @ b,
}


@pytest.mark.parametrize("op", list(MIXERS))
@pytest.mark.parametrize(
    "case", ["float32 @ float64 Tensor", "float64 @ float32 Tensor", "float32 @ float64 array"]
)
def test_mixing_float32_and_float64_raises_naming_both(op: str, case: str, backend: str) -> None:
    xp = nb.namespace(backend, "float64")
    a = Tensor(positive(xp, "float32", (3, 3)), requires_grad=True)
    b = positive(xp, "float64", (3, 3))
    if case.endswith("Tensor"):
        b = Tensor(b)
    first, second = (b, a) if case.startswith("float64") else (a, b)
    with pytest.raises(DtypeError) as info:
        MIXERS[op](first, second)
    assert "float32" in str(info.value) and "float64" in str(info.value)


@pytest.mark.parametrize("op", ["add", "mul", "div", "pow"])
def test_a_0d_float64_array_is_no_python_scalar(op: str, backend: str) -> None:
    xp = nb.namespace(backend, "float32")
    t = Tensor(positive(xp, "float32", (3,)), requires_grad=True)
    with pytest.raises(DtypeError, match="float64"):
        MIXERS[op](t, xp.asarray(2.0, dtype=xp.float64))


ZERO_D_OPS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mul": lambda x, v: x * x,
    "add": lambda x, v: x + 1.0,
    "sub": lambda x, v: 1.0 - x,
    "neg": lambda x, v: -x,
    "div": lambda x, v: x / x,
    "pow": lambda x, v: x**2,
    "rpow": lambda x, v: 2.0**x,
    "exp": lambda x, v: x.exp(),
    "log": lambda x, v: x.log(),
    "sum": lambda x, v: (x**2).sum(),
    "mean": lambda x, v: x.mean(),
    "max": lambda x, v: x.max(),
    "reshape": lambda x, v: x.reshape(()),
    "cast": lambda x, v: x.astype("float32").astype(x.dtype),
    "index": lambda x, v: v[1] * x,
    "vector_sum": lambda x, v: (v * x).sum(),
    "vector_mean": lambda x, v: (v * x).mean(),
    "vector_max": lambda x, v: (v * x).max(),
    "sigmoid": lambda x, v: nb.nn.functional.sigmoid(x),
    "tanh": lambda x, v: nb.nn.functional.tanh(x),
    "relu": lambda x, v: nb.nn.functional.relu(x),
    "mse": lambda x, v: nb.nn.functional.mse_loss(v * x, v),
}


@pytest.mark.parametrize("op", sorted(ZERO_D_OPS))
def test_0d_results_and_gradients_are_arrays_of_the_backend(
    op: str, xp: Any, dtype: str, backend: str
) -> None:
    """NumPy turns 0-d arithmetic into numpy.float64 scalars; every op and every gradient
    must stay an array of the backend (the Array API's rule), so a 0-d leaf's .grad can be
    written in place."""
    x = Tensor(xp.asarray(0.75), requires_grad=True)
    v = Tensor(xp.asarray([0.5, 2.0, 1.5]))
    array_type = type(x.data)
    y = ZERO_D_OPS[op](x, v)
    assert type(y.data) is array_type and tuple(y.data.shape) == ()
    y.backward()
    y.backward()  # accumulating into the leaf keeps an array too
    assert type(x.grad) is array_type and tuple(x.grad.shape) == ()
    assert str(x.grad.dtype).endswith(dtype)
    if nb.registry.get(backend).capabilities.inplace:
        x.grad[...] = 0.0  # in place: impossible on a numpy.float64
        assert float(x.grad) == 0.0
    for compared in (x == 0.75, x < 1.0, x >= v[0]):
        assert type(compared.data) is array_type


def test_0d_parameters_stay_arrays_through_an_optimizer_step(xp: Any, dtype: str) -> None:
    p = nb.nn.Parameter(xp.asarray(2.0))
    array_type = type(p.data)
    opt = nb.optim.Adam([p], lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        (p * p).backward()
        opt.step()
        assert type(p.data) is array_type and type(p.grad) is array_type


def test_a_numpy_scalar_becomes_a_0d_array() -> None:
    t = Tensor(np.float32(1.5), requires_grad=True)
    assert type(t.data) is np.ndarray and t.data.dtype == np.float32
    t.backward(np.float32(2.0))
    assert type(t.grad) is np.ndarray and t.grad.dtype == np.float32


@pytest.mark.parametrize("values", [[1, 2, 3], [True, False], 4])
def test_only_floating_tensors_can_require_a_gradient(values: Any, backend: str) -> None:
    """An integer leaf's float gradient used to be truncated to 0 silently."""
    with nb.using(backend=backend):
        data = nb.namespace().asarray(values)
        with pytest.raises(DtypeError, match="only floating-point tensors can require"):
            Tensor(data, requires_grad=True)
        with pytest.raises(DtypeError, match="only floating-point tensors can require"):
            Tensor(values, requires_grad=True)
        assert not Tensor(data).requires_grad  # as a constant it is fine
        assert Tensor(nb.namespace().asarray(1.5), requires_grad=True).requires_grad


# ------------------------------------------------------------------------------- backward
def test_backward_on_a_non_scalar_without_grad_says_what_to_do(xp: Any, dtype: str) -> None:
    y = leaf(xp, dtype, (2, 3)) * 2.0
    with pytest.raises(GradientError, match=r"one-element.*\(2, 3\)"):
        y.backward()


def test_backward_on_a_one_element_tensor_needs_no_grad(xp: Any, dtype: str) -> None:
    w = leaf(xp, dtype, (1, 1))
    (w * 3.0).backward()
    np.testing.assert_array_equal(host(w.grad), [[3.0]])


def test_backward_with_a_wrongly_shaped_grad_raises(xp: Any, dtype: str) -> None:
    y = leaf(xp, dtype, (2, 3)) * 2.0
    with pytest.raises(GradientError, match=r"\(3, 2\).*\(2, 3\)"):
        y.backward(xp.ones((3, 2), dtype=getattr(xp, dtype)))
    with pytest.raises(GradientError):
        y.backward(xp.ones((6,), dtype=getattr(xp, dtype)))


def test_backward_with_an_explicit_grad(xp: Any, dtype: str) -> None:
    w = leaf(xp, dtype, (2, 3))
    g = positive(xp, dtype, (2, 3), seed=5)
    (w * w).backward(g)
    np.testing.assert_allclose(host(w.grad), 2 * host(w) * host(g), rtol=2e-3)
    w.zero_grad()
    (w * 1.0).backward(Tensor(g))  # a Tensor gradient is accepted too
    np.testing.assert_array_equal(host(w.grad), host(g))


def test_backward_without_requires_grad_raises(xp: Any, dtype: str) -> None:
    with pytest.raises(GradientError, match="requires_grad"):
        (Tensor(positive(xp, dtype, (2,))) * 2.0).sum().backward()


def test_backward_twice_accumulates_on_leaves(xp: Any, dtype: str) -> None:
    w = leaf(xp, dtype, (4,))
    loss = (w * w).sum()
    loss.backward()
    first = host(w.grad)
    np.testing.assert_allclose(first, 2 * host(w), rtol=1e-3)
    loss.backward()
    np.testing.assert_allclose(host(w.grad), 2 * first, rtol=1e-3)
    w.zero_grad()
    assert w.grad is None
    loss.backward()
    np.testing.assert_allclose(host(w.grad), first, rtol=1e-3)


def test_backward_on_a_leaf_accumulates(xp: Any, dtype: str) -> None:
    w = leaf(xp, dtype, (3,))
    g = xp.ones((3,), dtype=getattr(xp, dtype))
    w.backward(g)
    w.backward(g)
    np.testing.assert_array_equal(host(w.grad), [2.0, 2.0, 2.0])


@pytest.mark.parametrize("how", ["retain_grad=True", ".retain_grad()"])
def test_backward_twice_with_retained_intermediates(how: str, xp: Any, dtype: str) -> None:
    w = leaf(xp, dtype, (3,))
    h = w * 2.0
    if how == ".retain_grad()":
        h.retain_grad()
    loss = (h * 1.0).sum()
    for _ in range(2):
        loss.backward(retain_grad=how == "retain_grad=True")
    # Leaves get the documented sum of two passes: 2 * dloss/dw = 2 * 2.
    np.testing.assert_array_equal(host(w.grad), [4.0, 4.0, 4.0])


# name -> fn(a, b) returning (result, shape of the grad to pass or None for a scalar result)
SHARED: dict[str, Callable[[Tensor, Tensor], tuple[Tensor, tuple[int, ...] | None]]] = {
    "add": lambda a, b: ((a + b).sum(), None),
    "sub": lambda a, b: ((a - b).sum(), None),
    "broadcast": lambda a, b: ((a + b[0:1, ...]).sum(), None),
    "add with grad=": lambda a, b: (a + b, (2, 3)),
    "getitem": lambda a, b: ((a[1:, ...] + b[1:, ...]).sum(), None),
    "reshape": lambda a, b: ((a.reshape(6) + b.reshape(6)).sum(), None),
    "transpose": lambda a, b: ((a.T + b.T).sum(), None),
}


@pytest.mark.parametrize(
    "case",
    list(SHARED),
)
def test_leaf_gradients_never_share_memory(case: str, xp: Any, dtype: str) -> None:
    a, b = leaf(xp, dtype, (2, 3)), leaf(xp, dtype, (2, 3), seed=1)
    y, grad_shape = SHARED[case](a, b)
    y.backward(None if grad_shape is None else xp.ones(grad_shape, dtype=getattr(xp, dtype)))
    before = host(b.grad)
    if mutable(a.grad):
        a.grad[...] = 7.0  # what an in-place optimizer or clip_grad_norm does
    np.testing.assert_array_equal(host(b.grad), before)


@pytest.mark.parametrize(
    "case",
    [
        "add",
        "leaf",
        "reshape",
        "transpose",
    ],
)
def test_leaf_gradients_never_share_memory_with_the_given_grad(
    case: str, xp: Any, dtype: str
) -> None:
    w, c = leaf(xp, dtype, (2, 3)), leaf(xp, dtype, (2, 3), seed=1)
    y = {"add": w + c, "leaf": w, "reshape": w.reshape(6), "transpose": w.T}[case]
    g = xp.ones(y.shape, dtype=getattr(xp, dtype))
    y.backward(g)
    if mutable(w.grad):
        w.grad[...] = 7.0
    np.testing.assert_array_equal(host(g), np.ones(y.shape))


def test_intermediate_grads_are_freed_unless_retained(xp: Any, dtype: str) -> None:
    w = leaf(xp, dtype, (3,))
    h = w * 2.0
    h2 = h * h
    loss = h2.sum()
    loss.backward()
    assert w.grad is not None
    assert h.grad is None and h2.grad is None

    w.zero_grad()
    loss.backward(retain_grad=True)
    np.testing.assert_allclose(host(h.grad), 2 * host(h), rtol=1e-3)
    np.testing.assert_array_equal(host(h2.grad), [1.0, 1.0, 1.0])

    w2 = leaf(xp, dtype, (3,))
    g = w2 * 2.0
    assert g.retain_grad() is g
    g2 = g * g
    (g2.sum()).backward()
    np.testing.assert_allclose(host(g.grad), 2 * host(g), rtol=1e-3)
    assert g2.grad is None


def test_tensors_that_need_no_grad_get_none(xp: Any, dtype: str) -> None:
    w = leaf(xp, dtype, (3,))
    c = Tensor(positive(xp, dtype, (3,), seed=1))
    (w * c).sum().backward()
    assert w.grad is not None
    assert c.grad is None


# -------------------------------------------------------------------------- graph lifetime
def _graph(xp: Any, dtype: str) -> tuple[Tensor, Tensor, list[weakref.ref[Any]]]:
    w = leaf(xp, dtype, (3, 3))
    h = w @ w
    y = (h.exp() * 2.0).sum()
    nodes = []
    f = y.creator
    while f is not None:
        nodes.append(weakref.ref(f))
        f = next((x.creator for x in f.inputs if x is not None and x.creator is not None), None)
    return w, y, nodes


def test_finished_graphs_are_freed(xp: Any, dtype: str) -> None:
    w, y, nodes = _graph(xp, dtype)
    names = [ref().name for ref in nodes]
    assert names == ["Sum", "Mul", "Exp", "MatMul"]
    intermediate = weakref.ref(y.creator.inputs[0])
    gc.collect()
    assert all(ref() is not None for ref in nodes), "the graph must live while its result does"
    y.backward()
    gc.disable()  # outputs are held weakly: no reference cycle, so refcounting alone frees it
    try:
        del y
        assert [ref() for ref in nodes] == [None] * len(nodes)
        assert intermediate() is None
    finally:
        gc.enable()
    assert w.grad is not None  # the leaf and its gradient survive


def test_graph_is_garbage_after_del_without_backward(xp: Any, dtype: str) -> None:
    _, y, nodes = _graph(xp, dtype)
    del y
    gc.collect()
    assert [ref() for ref in nodes] == [None] * len(nodes)


def test_function_holds_its_outputs_weakly(xp: Any, dtype: str) -> None:
    w = leaf(xp, dtype, (2,))
    y = w * 3.0
    node = y.creator
    assert node.outputs[0]() is y
    del y
    gc.collect()
    assert node.outputs[0]() is None


# ------------------------------------------------------------------------------ grad modes
def test_no_grad_records_nothing_and_enable_grad_records_again(xp: Any, dtype: str) -> None:
    w = leaf(xp, dtype, (3,))
    assert is_grad_enabled()
    with nb.no_grad():
        assert not is_grad_enabled()
        y = (w * 2.0).sum()
        assert not y.requires_grad and y.creator is None
        with pytest.raises(GradientError):
            y.backward()
        with nb.enable_grad():
            assert is_grad_enabled()
            z = (w * 2.0).sum()
        assert not is_grad_enabled()
        z.backward()
    assert is_grad_enabled()
    assert z.requires_grad and z.creator is not None
    np.testing.assert_array_equal(host(w.grad), [2.0, 2.0, 2.0])


def test_no_grad_is_restored_after_an_exception() -> None:
    with pytest.raises(ZeroDivisionError), nb.no_grad():
        1 / 0  # noqa: B018
    assert is_grad_enabled()


def test_no_grad_is_per_thread() -> None:
    seen: list[bool] = []
    with nb.no_grad():
        thread = threading.Thread(target=lambda: seen.append(is_grad_enabled()))
        thread.start()
        thread.join()
        assert not is_grad_enabled()
    assert seen == [True]


# ------------------------------------------------------------------------ evaluation order
calls: list[str] = []


class TaggedMul(Function):
    def __init__(self, tag: str) -> None:
        self.tag = tag

    def forward(self, a: Any, b: Any) -> Any:
        self.a, self.b = a, b
        return a * b

    def backward(self, gy: Any) -> tuple[Any, Any]:
        calls.append(self.tag)
        return gy * self.b, gy * self.a


class TaggedAdd(Function):
    def __init__(self, tag: str) -> None:
        self.tag = tag

    def forward(self, a: Any, b: Any) -> Any:
        return a + b

    def backward(self, gy: Any) -> tuple[Any, Any]:
        calls.append(self.tag)
        return gy, gy


def test_diamond_calls_each_backward_once_in_topological_order(xp: Any, dtype: str) -> None:
    calls.clear()
    a = Tensor(xp.asarray([2.0], dtype=getattr(xp, dtype)), requires_grad=True)
    b = Tensor(xp.asarray([3.0], dtype=getattr(xp, dtype)), requires_grad=True)
    y = TaggedMul("y")(a, b)  # y = a*b = 6
    w = TaggedMul("w")(y, y)
    z = TaggedAdd("z")(y, w)  # z = y + y*y; dz/dy = 1 + 2y = 13
    z.backward()
    assert calls == ["z", "w", "y"]
    np.testing.assert_array_equal(host(a.grad), [39.0])
    np.testing.assert_array_equal(host(b.grad), [26.0])


def test_deep_diamonds_count_each_path_once(xp: Any, dtype: str) -> None:
    calls.clear()
    x = Tensor(xp.asarray([1.0], dtype=getattr(xp, dtype)), requires_grad=True)
    half = Tensor(xp.asarray([0.5], dtype=getattr(xp, dtype)))
    y = x
    depth = 12  # 4096 paths: an engine that walks paths, not nodes, fails fast
    for i in range(depth):
        # y = y/2 + y/2: every level doubles the number of paths; dy/dx stays 1.
        y = TaggedAdd(f"add{i}")(TaggedMul(f"l{i}")(y, half), TaggedMul(f"r{i}")(y, half))
    y.backward()
    assert sorted(calls) == sorted(f"{k}{i}" for i in range(depth) for k in ("add", "l", "r"))
    np.testing.assert_array_equal(host(x.grad), [1.0])


def _tied_branches_grad(xp: Any, dtype: str, scales: list[float], noise: Any) -> bytes:
    """The gradient of ``sum_i x * scale_i`` with respect to ``x``: every ``x * scale_i`` node
    has the same generation, so the order in which their gradients are added into ``x.grad``
    is the engine's tie-break. ``noise(i)`` allocates between the nodes, moving them around
    in memory."""
    x = Tensor(xp.asarray([1.0, -1.0, 0.5], dtype=getattr(xp, dtype)), requires_grad=True)
    keep = []
    branches = []
    for i, s in enumerate(scales):
        keep.append(noise(i))
        branches.append(x * s)
    total = branches[0]
    for b in branches[1:]:
        total = total + b
    total.sum().backward()
    return Tensor(x.grad).numpy().tobytes()


def test_backward_is_bitwise_reproducible_under_allocation_noise(xp: Any, dtype: str) -> None:
    """Ties between nodes of equal generation are broken by creation order, never by memory
    address: thirty passes with different allocations in between give one gradient."""
    rng = np.random.default_rng(0)
    # Magnitudes far apart, so the floating-point sum depends on the order of the terms.
    scales = [float(v) for v in rng.choice([1e-4, 1e-2, 1.0, 3.0, 1e2, 7e3], size=40)]

    def noise_for(run: int) -> Any:
        sizes = np.random.default_rng(run).integers(1, 400, size=len(scales))
        return lambda i: [object() for _ in range(int(sizes[i]))] + [bytearray(int(sizes[i]))]

    results = {_tied_branches_grad(xp, dtype, scales, noise_for(run)) for run in range(30)}
    assert len(results) == 1


# ------------------------------------------------------------------------ custom Functions
class Cube(Function):
    """The worked example of function.py's docstring."""

    def forward(self, x: Any) -> Any:
        self.x = x
        return x**3

    def backward(self, gy: Any) -> Any:
        return 3.0 * self.x**2 * gy


def test_custom_function_cube(xp: Any, dtype: str) -> None:
    x = Tensor(xp.asarray([-1.0, 0.5, 2.0], dtype=getattr(xp, dtype)), requires_grad=True)
    y = Cube()(x)
    assert isinstance(y, Tensor) and y.creator.name == "Cube" and y.dtype == x.dtype
    np.testing.assert_array_equal(host(y), [-1.0, 0.125, 8.0])
    (y * 2.0).sum().backward()
    np.testing.assert_array_equal(host(x.grad), [6.0, 1.5, 24.0])
    assert nb.gradcheck(lambda t: Cube()(t), x)
    assert nb.gradcheck(lambda t: (Cube()(t) * t).sum(), x)


class Probe(Function):
    """Records needs_input_grad and returns a gradient for every input, needed or not."""

    seen: tuple[bool, ...] = ()

    def forward(self, a: Any, b: Any, c: Any, s: float) -> Any:
        return a * b * c * s

    def backward(self, gy: Any) -> tuple[Any, ...]:
        Probe.seen = self.needs_input_grad
        return gy, gy, gy, None


def test_needs_input_grad(xp: Any, dtype: str) -> None:
    a = leaf(xp, dtype, (2,))
    b = Tensor(positive(xp, dtype, (2,), seed=1))
    c = positive(xp, dtype, (2,), seed=2)
    y = Probe()(a, b, c, 2.0)
    assert y.creator.needs_input_grad == (True, False, False, False)
    y.backward(xp.ones((2,), dtype=getattr(xp, dtype)))
    assert Probe.seen == (True, False, False, False)
    assert a.grad is not None
    assert b.grad is None  # a gradient returned for an input that needs none is dropped

    y2 = Probe()(b, b, c, 2.0)  # nothing needs a gradient: no node is recorded
    assert not y2.requires_grad and y2.creator is None


class WrongShape(Function):
    def forward(self, x: Any) -> Any:
        return x * 2.0

    def backward(self, gy: Any) -> Any:
        return self.xp.sum(gy, axis=0)


class WrongDtype(Function):
    def forward(self, x: Any) -> Any:
        return x * 2.0

    def backward(self, gy: Any) -> Any:
        other = self.xp.float64 if gy.dtype != self.xp.float64 else self.xp.float32
        return self.xp.astype(gy, other)


class WrongCount(Function):
    def forward(self, x: Any) -> Any:
        return x * 2.0

    def backward(self, gy: Any) -> Any:
        return gy, gy


def test_function_with_a_wrongly_shaped_grad_names_the_op(xp: Any, dtype: str) -> None:
    y = WrongShape()(leaf(xp, dtype, (3, 2)))
    with pytest.raises(ShapeError, match=r"WrongShape.*\(2,\).*\(3, 2\)"):
        y.sum().backward()


def test_function_with_a_wrong_dtype_grad_names_the_op(xp: Any, dtype: str) -> None:
    y = WrongDtype()(leaf(xp, dtype, (3,)))
    with pytest.raises(DtypeError, match="WrongDtype"):
        y.sum().backward()


def test_function_with_the_wrong_number_of_grads(xp: Any, dtype: str) -> None:
    y = WrongCount()(leaf(xp, dtype, (3,)))
    with pytest.raises(GradientError, match=r"WrongCount.*2 gradients for 1 input"):
        y.sum().backward()


def test_function_base_class_errors(xp: Any, dtype: str) -> None:
    with pytest.raises(NotImplementedError, match="forward"):
        Function()(leaf(xp, dtype, (2,)))
    with pytest.raises(TypeError, match="Tensor or array"):
        Cube()(2.0)


# -------------------------------------------------------------------------- Tensor facts
def test_tensor_array_facts(xp: Any, dtype: str) -> None:
    data = positive(xp, dtype, (2, 3, 4))
    t = Tensor(data, requires_grad=True, name="w")
    assert t.shape == (2, 3, 4) and type(t.shape) is tuple
    assert all(type(n) is int for n in t.shape)
    assert t.dtype == getattr(xp, dtype)
    assert t.ndim == 3 and t.size == 24 and len(t) == 2
    assert t.device == data.device
    assert t.data is data and t.name == "w"
    assert t.xp is not None and t.backend in nb.backends()


def test_item(xp: Any, dtype: str) -> None:
    for shape in [(), (1,), (1, 1)]:
        value = Tensor(xp.reshape(xp.asarray([1.5], dtype=getattr(xp, dtype)), shape)).item()
        assert type(value) is float and value == 1.5
    assert Tensor(xp.asarray([3], dtype=xp.int64)).item() == 3
    assert type(Tensor(xp.asarray([3], dtype=xp.int64)).item()) is int
    assert Tensor(xp.asarray([True])).item() is True
    with pytest.raises(ValueError, match=r"\(2,\)"):
        Tensor(positive(xp, dtype, (2,))).item()


def test_numpy_is_a_host_copy(xp: Any, dtype: str, backend: str) -> None:
    t = Tensor(xp.asarray([1.0, 2.0, 3.0], dtype=getattr(xp, dtype)))
    host_copy = t.numpy()
    assert isinstance(host_copy, np.ndarray)
    assert host_copy.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(host_copy, [1.0, 2.0, 3.0])
    if backend == "numpy":
        assert not np.shares_memory(host_copy, t.data)
    host_copy[0] = 99.0
    assert host(t)[0] == 1.0
    assert t.tolist() == [1.0, 2.0, 3.0]


def test_len_and_repr(xp: Any, dtype: str) -> None:
    with pytest.raises(TypeError, match="0-d"):
        len(Tensor(xp.asarray(1.0, dtype=getattr(xp, dtype))))
    w = leaf(xp, dtype, (2,))
    assert repr(w).startswith("Tensor(") and "requires_grad=True" in repr(w)
    assert "creator=Mul" in repr(w * 2.0)
    assert "requires_grad" not in repr(Tensor(positive(xp, dtype, (2,))))


COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


@pytest.mark.parametrize("op", list(COMPARISONS))
def test_comparisons_are_bool_tensors_without_grad(op: str, xp: Any, dtype: str) -> None:
    a_host = np.array([1.0, 2.0, 3.0])
    b_host = np.array([3.0, 2.0, 1.0])
    a = Tensor(xp.asarray(a_host.tolist(), dtype=getattr(xp, dtype)), requires_grad=True)
    b = Tensor(xp.asarray(b_host.tolist(), dtype=getattr(xp, dtype)), requires_grad=True)
    for other, other_host in [(b, b_host), (b.data, b_host), (2.0, 2.0)]:
        result = COMPARISONS[op](a, other)
        assert isinstance(result, Tensor)
        assert result.dtype == xp.bool
        assert not result.requires_grad and result.creator is None
        np.testing.assert_array_equal(result.numpy(), COMPARISONS[op](a_host, other_host))


def test_tensors_stay_hashable(xp: Any, dtype: str) -> None:
    a, b = leaf(xp, dtype, (2,)), leaf(xp, dtype, (2,))
    assert len({a, b, a}) == 2
    assert {a: 1}[a] == 1


def test_construction(xp: Any, dtype: str) -> None:
    t = Tensor([1.0, 2.0])
    assert t.dtype == getattr(xp, dtype)  # the active default float dtype
    assert Tensor(t).data is t.data
    d = leaf(xp, dtype, (2,))
    detached = (d * 2.0).detach()
    assert detached.creator is None and not detached.requires_grad
    with pytest.raises(BackendMismatchError, match="registered backend"):
        Tensor(object())


def test_builtin_abs_of_a_tensor_is_differentiable(xp64: Any) -> None:
    """``abs(t)`` works as on NumPy arrays and torch tensors: |x| forward, sign(x) backward."""
    x = Tensor(xp64.asarray([-2.0, 0.5, 3.0]), requires_grad=True)
    y = abs(x)
    assert isinstance(y, Tensor)
    y.sum().backward()
    host = nb.registry.get(nb.registry.backend_of(y.data)).to_host
    assert np.asarray(host(y.data)).tolist() == [2.0, 0.5, 3.0]
    assert np.asarray(host(x.grad)).tolist() == [-1.0, 1.0, 1.0]
