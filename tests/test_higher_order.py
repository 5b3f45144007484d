"""Higher-order derivatives: ``backward(create_graph=True)``, ``nb.grad`` and
``gradgradcheck``, checked against ``torch.autograd`` (first and second derivatives of the
elementwise functions, matmul, softmax-cross-entropy and an MLP's Hessian-vector product),
against central differences on every backend, and on the Newton's-method example."""

from __future__ import annotations

import importlib.util
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nnbackend as nb
import nnbackend.functional as F
import nnbackend.nn.functional as NF
from nnbackend import nn
from nnbackend.errors import GradientError

torch = pytest.importorskip("torch")

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUDGET = settings.default.max_examples
few = settings(max_examples=max(2, BUDGET // 8))
TOL = 1e-10  # float64 against float64


def host(x: Any) -> np.ndarray:
    return np.asarray((x if isinstance(x, nb.Tensor) else nb.Tensor(x)).tolist(), dtype=float)


# name: (nnbackend function, torch function, low, high)
ELEMENTWISE: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any], float, float]] = {
    "exp": (F.exp, torch.exp, -2, 2),
    "log": (F.log, torch.log, 0.2, 2),
    "log1p": (F.log1p, torch.log1p, -0.5, 2),
    "expm1": (F.expm1, torch.expm1, -2, 2),
    "sqrt": (F.sqrt, torch.sqrt, 0.2, 2),
    "abs": (F.abs, torch.abs, -2, 2),
    "sin": (F.sin, torch.sin, -2, 2),
    "cos": (F.cos, torch.cos, -2, 2),
    "tan": (F.tan, torch.tan, -1, 1),
    "tanh": (F.tanh, torch.tanh, -2, 2),
    "sigmoid": (F.sigmoid, torch.sigmoid, -4, 4),
    "softplus": (F.softplus, torch.nn.functional.softplus, -4, 4),
    "nn.sigmoid": (NF.sigmoid, torch.sigmoid, -4, 4),
    "nn.tanh": (NF.tanh, torch.tanh, -2, 2),
    "nn.leaky_relu": (
        lambda x: NF.leaky_relu(x, 0.1),
        lambda x: torch.nn.functional.leaky_relu(x, 0.1),
        -2,
        2,
    ),
    "clip": (lambda x: F.clip(x, -0.5, 0.5), lambda x: torch.clamp(x, -0.5, 0.5), -2, 2),
    "cube": (lambda x: x**3, lambda x: x**3, -2, 2),
    "pow_tensor": (lambda x: x**x, lambda x: x**x, 0.2, 2),
    "reciprocal": (lambda x: 1.0 / x, lambda x: 1.0 / x, 0.5, 2),
    "mul_self": (lambda x: x * F.exp(-x), lambda x: x * torch.exp(-x), -2, 2),
    "softmax": (lambda x: NF.softmax(x, 1), lambda x: torch.softmax(x, 1), -2, 2),
    "log_softmax": (lambda x: NF.log_softmax(x, 0), lambda x: torch.log_softmax(x, 0), -2, 2),
    "logsumexp": (lambda x: F.logsumexp(x, 1, True), lambda x: torch.logsumexp(x, 1, True), -2, 2),
    "var": (lambda x: F.var(x, 0), lambda x: torch.var(x, 0, correction=0), -2, 2),
    "prod": (lambda x: F.prod(x, 1), lambda x: torch.prod(x, 1), 0.5, 1.5),
    "max": (lambda x: F.max(x, 1), lambda x: torch.amax(x, 1), -2, 2),
    "min": (lambda x: F.min(x, 0), lambda x: torch.amin(x, 0), -2, 2),
    "mean": (lambda x: F.mean(x, 0, True), lambda x: torch.mean(x, 0, True), -2, 2),
    "flip_pad": (
        lambda x: F.pad(F.flip(x, 1), ((1, 0), (0, 1))),
        lambda x: torch.nn.functional.pad(torch.flip(x, (1,)), (0, 1, 1, 0)),
        -2,
        2,
    ),
}


def _derivatives(
    nb_fn: Callable[[Any], Any], x: np.ndarray, v: np.ndarray, w: np.ndarray, on: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with nb.using(backend=on, dtype="float64"):
        xp = nb.namespace()
        t = nb.Tensor(xp.asarray(x.tolist()), requires_grad=True)
        y = nb_fn(t)
        (g,) = nb.grad(y, t, xp.asarray(v.reshape(y.shape).tolist()), create_graph=True)
        if not g.requires_grad:  # a linear function: its gradient is a constant
            return host(y), host(g), None
        (h,) = nb.grad((g * xp.asarray(w.tolist())).sum(), t)
        return host(y), host(g), host(h)


def _torch_derivatives(
    fn: Callable[[Any], Any], x: np.ndarray, v: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = torch.tensor(x, requires_grad=True)
    y = fn(t)
    (g,) = torch.autograd.grad(y, t, torch.tensor(v.reshape(y.shape)), create_graph=True)
    if not g.requires_grad:
        return y.detach().numpy(), g.detach().numpy(), None
    (h,) = torch.autograd.grad((g * torch.tensor(w)).sum(), t)
    return y.detach().numpy(), g.detach().numpy(), h.numpy(force=True)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_first_and_second_derivatives_match_torch(name: str, backend: str) -> None:
    nb_fn, torch_fn, lo, hi = ELEMENTWISE[name]
    rng = np.random.default_rng(sorted(ELEMENTWISE).index(name))
    x = rng.uniform(lo, hi, size=(3, 4))
    tx = torch.tensor(x)
    v = rng.uniform(-1, 1, size=tuple(torch_fn(tx).shape))
    w = rng.uniform(-1, 1, size=x.shape)
    got = _derivatives(nb_fn, x, v, w, backend)
    want = _torch_derivatives(torch_fn, x, v, w)
    # Where torch's gradient is a constant (linear and masked functions), the second
    # derivative here is zero too (nnbackend keeps piecewise gradients in the graph) ...
    if want[2] is None:
        assert got[2] is None or not np.any(got[2]), name
        want = (*want[:2], got[2])
    assert got[2] is not None or want[2] is None, name
    for what, a, b in zip(("value", "gradient", "second derivative"), got, want, strict=True):
        if a is not None:  # ... and every value agrees
            np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL, err_msg=f"{name}: {what}")


def test_matmul_second_derivatives_match_torch(backend: str) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 3, 4)), rng.normal(size=(4, 5))
    v, w = rng.normal(size=(2, 3, 5)), rng.normal(size=(2, 3, 4))
    with nb.using(backend=backend, dtype="float64"):
        xp = nb.namespace()
        ta = nb.Tensor(xp.asarray(a.tolist()), requires_grad=True)
        tb = nb.Tensor(xp.asarray(b.tolist()), requires_grad=True)
        y = (ta @ tb) ** 2
        (ga,) = nb.grad(y, ta, xp.asarray(v.tolist()), create_graph=True)
        hab = nb.grad((ga * xp.asarray(w.tolist())).sum(), [ta, tb])
    pa, pb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    (qa,) = torch.autograd.grad((pa @ pb) ** 2, pa, torch.tensor(v), create_graph=True)
    want = torch.autograd.grad((qa * torch.tensor(w)).sum(), [pa, pb])
    for got, exp in zip(hab, want, strict=True):
        np.testing.assert_allclose(host(got), exp.numpy(), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("targets", ["labels", "probabilities"])
def test_softmax_cross_entropy_hessian_vector_product_matches_torch(
    backend: str, targets: str
) -> None:
    rng = np.random.default_rng(2)
    x, v = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    probs = rng.dirichlet(np.ones(4), size=5)
    with nb.using(backend=backend, dtype="float64"):
        xp = nb.namespace()
        t = xp.asarray(labels.tolist()) if targets == "labels" else xp.asarray(probs.tolist())
        tx = nb.Tensor(xp.asarray(x.tolist()), requires_grad=True)
        (g,) = nb.grad(NF.softmax_cross_entropy(tx, t), tx, create_graph=True)
        (hv,) = nb.grad((g * xp.asarray(v.tolist())).sum(), tx)
    px = torch.tensor(x, requires_grad=True)
    pt = torch.tensor(labels) if targets == "labels" else torch.tensor(probs)
    (q,) = torch.autograd.grad(torch.nn.functional.cross_entropy(px, pt), px, create_graph=True)
    (want,) = torch.autograd.grad((q * torch.tensor(v)).sum(), px)
    np.testing.assert_allclose(host(g), q.detach().numpy(), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(host(hv), want.numpy(), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("activation", ["Sigmoid", "Tanh", "ReLU"])
def test_mlp_hessian_vector_product_matches_torch(backend: str, activation: str) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 3))
    labels = np.array([0, 1, 2, 1, 0, 2])
    with nb.using(backend=backend, dtype="float64"):
        xp = nb.namespace()
        model = nn.Sequential(nn.Linear(3, 5), getattr(nn, activation)(), nn.Linear(5, 3))
        params = list(model.parameters())
        values = [host(p) for p in params]
        vs = [rng.normal(size=v.shape) for v in values]
        loss = NF.softmax_cross_entropy(model(xp.asarray(x.tolist())), xp.asarray(labels.tolist()))
        grads = nb.grad(loss, params, create_graph=True)
        dot = sum(((g * xp.asarray(v.tolist())).sum() for g, v in zip(grads, vs, strict=True)))
        hvp = nb.grad(dot, params)
    tp = [torch.tensor(v, requires_grad=True) for v in values]
    act = {"Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "ReLU": torch.relu}[activation]
    logits = act(torch.tensor(x) @ tp[0] + tp[1]) @ tp[2] + tp[3]
    tl = torch.nn.functional.cross_entropy(logits, torch.tensor(labels))
    tg = torch.autograd.grad(tl, tp, create_graph=True)
    want = torch.autograd.grad(
        sum((g * torch.tensor(v)).sum() for g, v in zip(tg, vs, strict=True)), tp
    )
    np.testing.assert_allclose(host(loss), tl.item(), rtol=TOL)
    for got, exp in zip(hvp, want, strict=True):
        np.testing.assert_allclose(host(got), exp.numpy(), rtol=TOL, atol=TOL)


GRADGRAD: dict[str, tuple[Callable[..., Any], int]] = {
    # name: (function, number of inputs); inputs are drawn in [0.5, 1.5] (positive for log)
    "mul_div": (lambda a, b: a * b / (a + b), 2),
    "matmul_tanh": (lambda a, b: F.tanh(a @ F.transpose(b)), 2),
    "linear_sigmoid": (lambda a, b: NF.sigmoid(NF.linear(a, F.transpose(b))), 2),
    "softmax_ce": (lambda a, b: NF.softmax_cross_entropy(a * b, NF.softmax(b, 1)), 2),
    "softmax_ce_ignore_index": (
        lambda a, b: NF.softmax_cross_entropy(
            a * b, a.xp.asarray([2, -1, 0][: a.shape[0]]), ignore_index=-1
        ),
        2,
    ),
    "logsumexp_var": (lambda a, b: F.logsumexp(a, 1) * F.var(b, 1), 2),
    "concat_take_log": (lambda a, b: F.log(F.take(F.concat([a, b], 1), [0, 3, 3], 1)), 2),
    "sqrt_where": (lambda a: F.where(a > 1.03125, F.sqrt(a), a * a), 1),
    "pow_tensor": (lambda a, b: a**b, 2),
    "layer_norm": (lambda a, b: NF.layer_norm(a, b[0, :], b[1, :]), 2),
    "mse": (lambda a, b: NF.mse_loss(F.sin(a), b), 2),
    "getitem_prod": (lambda a: F.prod(a[0:2, 1:], 0), 1),
    "split_one_part_unused": (lambda a: F.split(a, [1, 2], 1)[1] ** 3, 1),
    "sigmoid_ce": (lambda a, b: NF.sigmoid_cross_entropy(a * b, NF.sigmoid(b)), 2),
    "embedding": (lambda a: NF.embedding(a.xp.asarray([[0, 1], [1, 1]]), a) ** 3, 1),
    "dropout": (lambda a: NF.dropout(a, 0.5, generator=nb.random.Generator(0)) ** 3, 1),
    "stack_flip_pad": (lambda a, b: F.pad(F.flip(F.stack([a, b * a], 1), 1), (1, 1)) ** 2, 2),
}


@pytest.mark.parametrize("name", sorted(GRADGRAD))
@few
@given(data=st.data())
def test_gradgradcheck(name: str, xp: Any, dtype: str, data: st.DataObject) -> None:
    fn, n = GRADGRAD[name]
    if name == "dropout" and _draws_on_a_device(xp):
        # gradcheck takes its central differences on NumPy, whose mask comes from the host
        # stream; a GPU draws its own from a seed (another mask), so they cannot agree
        pytest.skip("dropout's device mask differs from the host stream gradcheck uses")
    rows = data.draw(st.integers(2, 3))
    grid = st.integers(8, 24).map(lambda k: k / 16.0)
    inputs = [
        xp.asarray(
            data.draw(hnp.arrays(np.float64, (rows, 3), elements=grid)).tolist(),
            dtype=getattr(xp, dtype),
        )
        for _ in range(n)
    ]
    assert nb.gradgradcheck(fn, *inputs)


def _draws_on_a_device(xp: Any) -> bool:
    from nnbackend.namespace import ops_for

    a = xp.asarray([0.0])
    return not ops_for(xp, a).on_host(a)


def test_gradgradcheck_catches_a_wrong_second_derivative() -> None:
    class BadSquare(nb.Function):
        def forward(self, x: Any) -> Any:
            return x * x

        def graph_backward(self, gy: nb.Tensor) -> nb.Tensor:
            return gy * 2.0 * self.inputs[0].detach()  # first derivative right, second lost

    x = np.array([0.5, 1.5])
    assert nb.gradcheck(lambda t: BadSquare()(t), x)
    with pytest.raises(GradientError, match="gradcheck failed"):
        nb.gradgradcheck(lambda t: BadSquare()(t), x)


def test_backward_create_graph_leaves_tensor_grads_and_the_default_stays_raw() -> None:
    x = nb.Tensor([1.5, -0.5], requires_grad=True)
    (x**3).sum().backward()
    assert not isinstance(x.grad, nb.Tensor)  # the fast path: a raw array
    x.grad = None
    (x**3).sum().backward(create_graph=True)
    gx = x.grad
    assert isinstance(gx, nb.Tensor) and gx.requires_grad
    assert gx.tolist() == [6.75, 0.75]
    x.grad = None
    gx.sum().backward()
    assert nb.Tensor(x.grad).tolist() == [9.0, -3.0]


def test_grad_leaves_dot_grad_alone_and_reports_unused_inputs() -> None:
    x = nb.Tensor([2.0], requires_grad=True)
    z = nb.Tensor([3.0], requires_grad=True)
    y = (x * x).sum()
    (g,) = nb.grad(y, x)
    assert g.tolist() == [4.0] and x.grad is None and not g.requires_grad
    with pytest.raises(GradientError, match="allow_unused"):
        nb.grad(y, [x, z])
    assert nb.grad(y, [x, z], allow_unused=True)[1] is None
    with pytest.raises(GradientError, match="one-element"):
        nb.grad(x * z * nb.Tensor([1.0, 1.0]), x)


def test_gradient_penalty_of_an_intermediate() -> None:
    """d/dw of |d loss / d h|^2 where h is an intermediate: a gradient penalty."""
    rng = np.random.default_rng(4)
    x, w0 = rng.normal(size=(4, 3)), rng.normal(size=(3, 2))
    w = nb.Tensor(w0, requires_grad=True)
    h = nb.Tensor(x) @ w
    loss = F.tanh(h).sum()
    (gh,) = nb.grad(loss, h, create_graph=True)
    (gw,) = nb.grad((gh * gh).sum(), w)
    pw = torch.tensor(w0, requires_grad=True)
    ph = torch.tensor(x) @ pw
    (qh,) = torch.autograd.grad(torch.tanh(ph).sum(), ph, create_graph=True)
    (want,) = torch.autograd.grad((qh * qh).sum(), pw)
    np.testing.assert_allclose(host(gw), want.numpy(), rtol=TOL, atol=TOL)


def test_a_raw_backward_gives_first_derivatives_and_refuses_second_ones() -> None:
    class Cube(nb.Function):
        def forward(self, x: Any) -> Any:
            self.x = x
            return x**3

        def backward(self, gy: Any) -> Any:
            return 3.0 * self.x**2 * gy

    x = nb.Tensor([2.0], requires_grad=True)
    (g,) = nb.grad(Cube()(x).sum(), x, create_graph=True)
    assert g.tolist() == [12.0] and g.requires_grad
    with pytest.raises(GradientError, match="graph_backward"):
        nb.grad(g.sum(), x)
    assert not Cube.supports_double_backward()


def test_a_graph_backward_serves_both_modes() -> None:
    class Cube(nb.Function):
        def forward(self, x: Any) -> Any:
            return x**3

        def graph_backward(self, gy: nb.Tensor) -> nb.Tensor:
            x = self.inputs[0]
            return 3.0 * x * x * gy

    x = nb.Tensor([2.0], requires_grad=True)
    Cube()(x).sum().backward()
    assert nb.Tensor(x.grad).tolist() == [12.0]
    (g,) = nb.grad(Cube()(x).sum(), x, create_graph=True)
    assert nb.grad(g.sum(), x)[0].tolist() == [12.0]


def test_float32_stays_float32_through_second_derivatives() -> None:
    with nb.using(dtype="float32", check_dtypes=True):
        xp = nb.namespace()
        w = nb.Tensor(xp.asarray([[0.5, -1.0], [1.5, 0.25]]), requires_grad=True)
        loss = NF.softmax_cross_entropy(F.sigmoid(w @ w) * 2.0, xp.asarray([0, 1]))
        (g,) = nb.grad(loss, w, create_graph=True)
        (h,) = nb.grad((g * g).sum(), w)
        assert g.dtype == xp.float32 and h.dtype == xp.float32


def _load_newton() -> Any:
    spec = importlib.util.spec_from_file_location("newton", ROOT / "examples" / "newton.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("on", ["numpy", "array_api_strict", "torch"])
def test_newton_example_converges_in_the_documented_steps(on: str) -> None:
    newton = _load_newton()
    with nb.using(backend=on, dtype="float64"):
        xs = newton.newton()
        vs = newton.newton_2d()
    assert len(xs) == newton.STEPS + 1 == 8
    assert xs[:3] == pytest.approx([2.0, 16 / 11, 1.1510467893775467], rel=1e-14)
    assert abs(xs[-2] - 1.0) > 1e-13 and xs[-1] == 1.0  # 7 steps, not 6
    assert max(abs(v - 1.0) for v in vs[-1]) < 1e-10 < max(abs(v - 1.0) for v in vs[-2])


def test_every_builtin_function_supports_double_backward() -> None:
    from nnbackend.autograd import functions, ops

    found = []
    for module in (ops, functions, NF):
        for name, obj in vars(module).items():
            if (
                isinstance(obj, type)
                and issubclass(obj, nb.Function)
                and obj.__module__ == module.__name__
            ):
                found.append(obj)
                assert obj.supports_double_backward(), f"{module.__name__}.{name}"
    assert len(found) > 40


# name: (nnbackend function, torch function) of two (3, 4) inputs, the second in [0.5, 1.5]
TWO_INPUTS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "concat": (lambda a, b: F.concat([a, b * a], 1), lambda a, b: torch.cat([a, b * a], 1)),
    "stack": (lambda a, b: F.stack([a, b], 2), lambda a, b: torch.stack([a, b], 2)),
    "split": (
        lambda a, b: F.split(a * b, [1, 3], 1)[1],
        lambda a, b: torch.split(a * b, [1, 3], 1)[1],
    ),
    "take": (
        lambda a, b: F.take(a * b, [[2, 0], [2, 2]], 1),
        lambda a, b: (a * b)[:, torch.tensor([[2, 0], [2, 2]])],
    ),
    "einsum": (
        lambda a, b: F.einsum("ij,kj->ki", a, b),
        lambda a, b: torch.einsum("ij,kj->ki", a, b),
    ),
    "batched_matmul": (
        lambda a, b: F.reshape(a, (3, 4, 1)) @ F.reshape(b, (3, 1, 4)),
        lambda a, b: a.reshape(3, 4, 1) @ b.reshape(3, 1, 4),
    ),
    "where": (lambda a, b: F.where(a > 0, a * b, b), lambda a, b: torch.where(a > 0, a * b, b)),
    "maximum": (F.maximum, torch.maximum),
    "minimum": (F.minimum, torch.minimum),
    "pow": (lambda a, b: b**a, lambda a, b: b**a),
    "std": (
        lambda a, b: F.std(a * b, 0, True, correction=1.0),
        lambda a, b: torch.std(a * b, 0, keepdim=True, correction=1),
    ),
    "pad": (
        lambda a, b: F.pad(a * b, ((0, 1), (2, 0)), value=-1.0),
        lambda a, b: torch.nn.functional.pad(a * b, (2, 0, 0, 1), value=-1.0),
    ),
    "negative_step": (
        lambda a, b: (a * b)[::-2, 1::-1],
        lambda a, b: (a * b).flip(0)[::2].flip(1)[:, 2:],
    ),
    "prod_keepdims": (
        lambda a, b: F.prod(a * b, (0, 1), True),
        lambda a, b: (a * b).prod().reshape(1, 1),
    ),
}


@pytest.mark.parametrize("name", sorted(TWO_INPUTS))
def test_shape_and_binary_functions_match_torch(name: str, backend: str) -> None:
    nb_fn, torch_fn = TWO_INPUTS[name]
    rng = np.random.default_rng(sorted(TWO_INPUTS).index(name))
    a, b = rng.uniform(-2, 2, size=(3, 4)), rng.uniform(0.5, 1.5, size=(3, 4))
    pa, pb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    want = torch_fn(pa, pb)
    v = rng.uniform(-1, 1, size=tuple(want.shape))
    want_grads = torch.autograd.grad(want, [pa, pb], torch.tensor(v))
    with nb.using(backend=backend, dtype="float64"):
        xp = nb.namespace()
        ta = nb.Tensor(xp.asarray(a.tolist()), requires_grad=True)
        tb = nb.Tensor(xp.asarray(b.tolist()), requires_grad=True)
        got = nb_fn(ta, tb)
        grads = nb.grad(got, [ta, tb], xp.asarray(v.tolist()))
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=TOL, atol=TOL)
    for g, w in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=TOL, atol=TOL)


def test_dezero_step_36_double_backprop() -> None:
    """y = x^2, z = (dy/dx)^3 + y: dz/dx = 24 x^2 + 2x = 100 at x = 2."""
    x = nb.Tensor(2.0, requires_grad=True)
    y = x**2
    y.backward(create_graph=True)
    gx = x.grad
    x.grad = None
    z = gx**3 + y
    z.backward()
    assert float(nb.Tensor(x.grad)) == 100.0


@pytest.mark.parametrize("fn", ["tanh", "sin", "sigmoid", "log1p"])
def test_fourth_derivatives_match_torch(backend: str, fn: str) -> None:
    """DeZero step 35: repeated differentiation; each order is a graph of the same ops."""
    x0 = np.array([0.3, -0.7, 1.1])
    with nb.using(backend=backend, dtype="float64"):
        x = nb.Tensor(nb.namespace().asarray(x0.tolist()), requires_grad=True)
        g = getattr(F, fn)(x).sum()
        ours = []
        for _ in range(4):
            (g,) = nb.grad(g.sum(), x, create_graph=True)
            ours.append(g.numpy())
    t = torch.tensor(x0, requires_grad=True)
    h = getattr(torch, fn)(t).sum()
    for order in range(4):
        (h,) = torch.autograd.grad(h.sum(), t, create_graph=True)
        np.testing.assert_allclose(ours[order], h.detach().numpy(), rtol=1e-9, atol=1e-12)
