"""Tests of nnbackend.nn: Parameter, Module, Sequential, layers, losses and init.

Every layer is checked on every available backend and in float64, float32 and float16 (where
the backend has it): forward outputs, input gradients and parameter gradients keep the dtype,
and parameter gradients are arrays of the parameter's own backend and shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend import nn, registry
from nnbackend.errors import ArgumentError, CheckpointError, DtypeError, ShapeError
from nnbackend.namespace import backend_for
from nnbackend.namespace import ops_for as _ops_for


# -- helpers ------------------------------------------------------------------------------
def to_host(x: Any) -> np.ndarray:
    data = x.data if isinstance(x, nb.Tensor) else x
    return np.asarray(backend_for(data)[1].to_host(data))


def on(backend: str, a: np.ndarray) -> Any:
    """A host array moved to ``backend`` (a copy)."""
    return registry.get(backend).from_host(np.array(a, copy=True), None)


def eps(dtype: str) -> float:
    return float(np.finfo(dtype).eps)


def same_backend(a: Any, b: Any) -> bool:
    return backend_for(a)[1].name == backend_for(b)[1].name


def assert_param_grads(model: nn.Module, dtype: str) -> None:
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert str(p.grad.dtype).endswith(dtype), f"{name}.grad is {p.grad.dtype}, not {dtype}"
        assert tuple(p.grad.shape) == p.shape, name
        assert same_backend(p.grad, p.data), name
        assert str(p.data.dtype).endswith(dtype), name


# -- Parameter ------------------------------------------------------------------------------
def test_parameter_requires_grad_and_grad_matches_data(xp: Any, backend: str, dtype: str) -> None:
    p = nn.Parameter(xp.asarray([[1.0, 2.0], [3.0, 4.0]]))
    assert p.requires_grad
    assert isinstance(p, nb.Tensor)
    assert str(p.dtype).endswith(dtype)
    x = nb.Tensor(xp.asarray([[0.5, -1.0]]))
    y = (x @ p).sum()
    y.backward()
    assert p.grad is not None
    assert tuple(p.grad.shape) == (2, 2)
    assert p.grad.dtype == p.data.dtype
    assert same_backend(p.grad, p.data)
    np.testing.assert_allclose(to_host(p.grad), [[0.5, 0.5], [-1.0, -1.0]])


def test_parameter_data_is_assignable(xp: Any) -> None:
    p = nn.Parameter(xp.zeros((3,)))
    new = xp.ones((3,))
    p.data = new
    assert p.data is new
    assert p.requires_grad


def test_parameter_is_lightweight() -> None:
    p = nn.Parameter([1.0])
    assert not hasattr(p, "__dict__")


def test_parameter_rejects_integer_data() -> None:
    xp = nb.namespace("numpy")
    with pytest.raises(DtypeError, match="floating"):
        nn.Parameter(xp.asarray([1, 2]))


# -- Module registration and traversal -----------------------------------------------------
class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.zeta = nn.Linear(2, 3)
        self.alpha = nn.Parameter([1.0, 2.0, 3.0])
        self.act = nn.Tanh()
        self.mid = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2, bias=False))
        self.plain = 5  # not registered

    def forward(self, x: Any) -> Any:
        return self.mid(self.act(self.zeta(x) * self.alpha))


def test_named_parameters_registration_order_and_dotted_names() -> None:
    names = [name for name, _ in Block().named_parameters()]
    assert names == [
        "alpha",
        "zeta.weight",
        "zeta.bias",
        "mid.0.weight",
        "mid.0.bias",
        "mid.2.weight",
    ]


def test_named_parameters_is_deterministic_and_matches_parameters() -> None:
    a, b = Block(), Block()
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    assert [id(p) for p in a.parameters()] == [id(p) for _, p in a.named_parameters()]
    assert isinstance(list(a.parameters()), list)


def test_module_without_super_init_still_registers() -> None:
    class NoInit(nn.Module):
        def __init__(self) -> None:
            self.w = nn.Parameter([1.0])

    assert [n for n, _ in NoInit().named_parameters()] == ["w"]


def test_shared_parameter_listed_once() -> None:
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.Sigmoid(), shared)
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias"]
    assert len(list(model.modules())) == 3  # Sequential, Linear (once), Sigmoid


def test_children_and_modules() -> None:
    block = Block()
    assert [type(m).__name__ for m in block.children()] == ["Linear", "Tanh", "Sequential"]
    assert [n for n, _ in block.named_modules()] == [
        "",
        "zeta",
        "act",
        "mid",
        "mid.0",
        "mid.1",
        "mid.2",
    ]


def test_reassigning_a_parameter_name_needs_a_parameter() -> None:
    layer = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"\.data"):
        layer.weight = nb.namespace().zeros((2, 2))
    layer.weight = nn.Parameter(nb.namespace().zeros((2, 2)))
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    del layer.bias
    assert [n for n, _ in layer.named_parameters()] == ["weight"]


def test_train_eval_propagates() -> None:
    model = Block()
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_zero_grad_clears_every_gradient() -> None:
    model = Block()
    model(nb.namespace().ones((4, 2))).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_repr_like_pytorch() -> None:
    model = nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Dropout(0.25))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Linear(in_features=2, out_features=10, bias=True)\n"
        "  (1): Sigmoid()\n"
        "  (2): Dropout(p=0.25)\n"
        ")"
    )
    assert "    (0): Linear(in_features=3, out_features=3, bias=True)" in repr(Block())


# -- Sequential ---------------------------------------------------------------------------
def test_sequential_len_index_slice_iter_append() -> None:
    layers = [nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3)]
    model = nn.Sequential(*layers)
    assert len(model) == 3
    assert model[0] is layers[0] and model[-1] is layers[2]
    assert list(model) == layers
    head = model[:2]
    assert isinstance(head, nn.Sequential) and list(head) == layers[:2]
    assert head(nb.namespace().ones((5, 2))).shape == (5, 4)
    extra = nn.Sigmoid()
    assert model.append(extra) is model
    assert len(model) == 4 and model[3] is extra
    assert model(nb.namespace().ones((5, 2))).shape == (5, 3)
    with pytest.raises(TypeError, match="Module"):
        model.append(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        model[10]


# -- Layers: dtype preservation on every backend and dtype ----------------------------------
LAYERS: dict[str, Callable[[], nn.Module]] = {
    "Linear": lambda: nn.Linear(4, 3),
    "Linear-nobias": lambda: nn.Linear(4, 3, bias=False),
    "MatMul": lambda: nn.MatMul(nb.random.normal((4, 3))),
    "Sigmoid": nn.Sigmoid,
    "ReLU": nn.ReLU,
    "LeakyReLU": lambda: nn.LeakyReLU(0.1),
    "Tanh": nn.Tanh,
    "Softmax": nn.Softmax,
    "Dropout": lambda: nn.Dropout(0.5),
    "LayerNorm": lambda: nn.LayerNorm(4),
    "Sequential": lambda: nn.Sequential(
        nn.Linear(4, 8), nn.Tanh(), nn.LayerNorm(8), nn.Dropout(0.2), nn.Linear(8, 3), nn.Softmax()
    ),
}


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_keeps_dtype(name: str, mode: str, xp: Any, backend: str, dtype: str) -> None:
    nb.random.seed(3)
    layer = LAYERS[name]()
    layer.train(mode == "train")
    host_x = np.random.default_rng(0).normal(size=(5, 4))
    x = nb.Tensor(on(backend, host_x.astype(dtype)), requires_grad=True)
    y = layer(x)
    assert isinstance(y, nb.Tensor)
    assert str(y.dtype).endswith(dtype), f"{name} output is {y.dtype}"
    assert same_backend(y.data, x.data)
    # A random projection, so no gradient is identically zero by symmetry (Softmax).
    proj = on(backend, np.random.default_rng(1).normal(size=tuple(y.shape)).astype(dtype))
    (y * nb.Tensor(proj)).sum().backward()
    assert x.grad is not None and str(x.grad.dtype).endswith(dtype)
    assert tuple(x.grad.shape) == (5, 4)
    assert_param_grads(layer, dtype)
    assert np.all(np.isfinite(to_host(x.grad).astype(np.float64)))


def test_embedding_keeps_dtype(xp: Any, backend: str, dtype: str) -> None:
    emb = nn.Embedding(6, 3)
    assert str(emb.weight.dtype).endswith(dtype)
    idx = on(backend, np.array([[1, 2], [5, 1]], dtype=np.int64))
    y = emb(idx)
    assert y.shape == (2, 2, 3) and str(y.dtype).endswith(dtype)
    y.sum().backward()
    assert_param_grads(emb, dtype)


# -- Linear ---------------------------------------------------------------------------------
def test_linear_matches_reference_and_accepts_batch_axes(xp: Any, backend: str, dtype: str) -> None:
    layer = nn.Linear(3, 2)
    layer.bias.data = xp.asarray([0.5, -0.25])
    w = to_host(layer.weight).astype(np.float64)
    host_x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype(dtype)
    y = layer(on(backend, host_x))
    assert y.shape == (2, 4, 2)
    expected = host_x.astype(np.float64) @ w + np.array([0.5, -0.25])
    tol = 8 * eps(dtype) * 4
    np.testing.assert_allclose(to_host(y).astype(np.float64), expected, rtol=tol, atol=tol)


def test_linear_default_init_is_xavier_normal() -> None:
    nb.random.seed(0)
    layer = nn.Linear(400, 300)
    w = to_host(layer.weight)
    assert w.shape == (400, 300)
    assert abs(w.std() - math.sqrt(1 / 400)) < 0.002
    assert np.all(to_host(layer.bias) == 0)


def test_linear_shape_error_names_layer_and_shapes(xp: Any) -> None:
    model = nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))
    with pytest.raises(ShapeError) as info:
        model(xp.ones((30, 3)))
    message = str(info.value)
    assert "Linear(in_features=2, out_features=10" in message
    assert "(..., 2)" in message and "(30, 3)" in message


def test_linear_shape_error_for_second_layer(xp: Any) -> None:
    with pytest.raises(ShapeError, match=r"in_features=5.*\(\.\.\., 5\).*\(4, 3\)"):
        nn.Linear(5, 1)(xp.ones((4, 3)))


@pytest.mark.parametrize(
    ("layer_dtype", "input_dtype"),
    [("float32", "float64"), ("float64", "float32"), ("float16", "float32")],
)
def test_linear_rejects_other_float_dtype(backend: str, layer_dtype: str, input_dtype: str) -> None:
    if "float16" in (layer_dtype, input_dtype) and not registry.get(backend).capabilities.float16:
        pytest.skip(f"{backend} has no float16")
    with nb.using(backend=backend, dtype=layer_dtype):
        layer = nn.Linear(2, 3)
    x = on(backend, np.ones((4, 2), dtype=input_dtype))
    with pytest.raises(DtypeError) as info:
        layer(x)
    assert layer_dtype in str(info.value) and input_dtype in str(info.value)
    with pytest.raises(DtypeError):
        layer(nb.Tensor(x))


def test_parameters_follow_active_backend_and_dtype(backend: str, dtype: str) -> None:
    with nb.using(backend=backend, dtype=dtype):
        model = nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3), nn.Embedding(4, 3))
    for name, p in model.named_parameters():
        assert backend_for(p.data)[1].name == backend, name
        assert str(p.dtype).endswith(dtype), name


@given(batch=st.integers(1, 6), n_in=st.integers(1, 5), n_out=st.integers(1, 5), bias=st.booleans())
def test_linear_gradients_property(
    backend: str, batch: int, n_in: int, n_out: int, bias: bool
) -> None:
    """d(sum(P * (xW + b)))/dW = x^T P, /db = sum(P), /dx = P W^T, on every backend."""
    rng = np.random.default_rng(batch * 100 + n_in * 10 + n_out)
    with nb.using(backend=backend, dtype="float64"):
        layer = nn.Linear(n_in, n_out, bias=bias)
    hx = rng.normal(size=(batch, n_in))
    hp = rng.normal(size=(batch, n_out))
    x = nb.Tensor(on(backend, hx), requires_grad=True)
    (layer(x) * nb.Tensor(on(backend, hp))).sum().backward()
    w = to_host(layer.weight)
    np.testing.assert_allclose(to_host(layer.weight.grad), hx.T @ hp, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_host(x.grad), hp @ w.T, rtol=1e-12, atol=1e-12)
    if bias:
        np.testing.assert_allclose(to_host(layer.bias.grad), hp.sum(0), rtol=1e-12, atol=1e-12)


def test_model_parameter_gradients_match_central_differences() -> None:
    """Every parameter gradient of a small model against float64 central differences."""
    nb.random.seed(1)
    model = nn.Sequential(
        nn.Linear(3, 4), nn.Tanh(), nn.LayerNorm(4), nn.LeakyReLU(0.2), nn.Linear(4, 3)
    )
    loss_fn = nn.SoftmaxCrossEntropy()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3))
    t = np.array([0, 2, 1, 1, 0])
    loss_fn(model(x), t).backward()
    h = 1e-6
    for name, p in model.named_parameters():
        flat = p.data.reshape(-1)
        numeric = np.zeros_like(flat)
        for j in range(flat.size):
            saved = flat[j]
            flat[j] = saved + h
            plus = loss_fn(model(x), t).item()
            flat[j] = saved - h
            minus = loss_fn(model(x), t).item()
            flat[j] = saved
            numeric[j] = (plus - minus) / (2 * h)
        np.testing.assert_allclose(p.grad.reshape(-1), numeric, rtol=1e-5, atol=1e-7, err_msg=name)


def test_model_input_gradcheck() -> None:
    nb.random.seed(2)
    model = nn.Sequential(
        nn.Linear(3, 4), nn.Sigmoid(), nn.LayerNorm(4), nn.Linear(4, 2), nn.Softmax()
    )
    x = nb.namespace("numpy", "float64").asarray(np.random.default_rng(0).normal(size=(3, 3)))
    assert nb.gradcheck(model, x)


# -- Dropout --------------------------------------------------------------------------------
def test_dropout_identity_in_eval(xp: Any, backend: str, dtype: str) -> None:
    layer = nn.Dropout(0.5).eval()
    x = xp.asarray(np.random.default_rng(0).normal(size=(8, 8)).tolist())
    x = xp.astype(x, getattr(xp, dtype))
    np.testing.assert_array_equal(to_host(layer(x)), to_host(x))


def test_dropout_inverted_scaling_in_train(backend: str) -> None:
    with nb.using(backend=backend, dtype="float64"):
        layer = nn.Dropout(0.25, generator=nb.random.Generator(0))
        x = nb.Tensor(nb.namespace().ones((200, 50)), requires_grad=True)
        y = layer(x)
    values = to_host(y)
    kept = values != 0
    assert 0.70 < kept.mean() < 0.80
    np.testing.assert_allclose(values[kept], 1 / 0.75)
    y.sum().backward()
    np.testing.assert_array_equal(to_host(x.grad), values)


def test_dropout_rejects_bad_p() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        nn.Dropout(1.0)


# -- Embedding ------------------------------------------------------------------------------
def test_embedding_backward_accumulates_repeated_indices(xp: Any, backend: str, dtype: str) -> None:
    emb = nn.Embedding(5, 2)
    idx = on(backend, np.array([[0, 3, 0], [0, 4, 3]], dtype=np.int64))
    y = emb(idx)
    np.testing.assert_array_equal(to_host(y), to_host(emb.weight)[[[0, 3, 0], [0, 4, 3]]])
    gy = np.arange(12, dtype=np.float64).reshape(2, 3, 2)
    y.backward(on(backend, gy.astype(dtype)))
    expected = np.zeros((5, 2))
    np.add.at(expected, np.array([[0, 3, 0], [0, 4, 3]]), gy)
    np.testing.assert_array_equal(to_host(emb.weight.grad).astype(np.float64), expected)


def test_embedding_rejects_float_indices(xp: Any) -> None:
    emb = nn.Embedding(5, 2)
    with pytest.raises(DtypeError, match="integers"):
        emb(xp.asarray([1.0, 2.0]))


@pytest.mark.parametrize("bad", [-1, 5, 7, -5])
def test_embedding_indices_out_of_range_are_refused(xp: Any, backend: str, bad: int) -> None:
    """-1 used to wrap around to the last row, and 5 to fail inside the library. Where the
    indices live on a device (cupy), reading them back would synchronise: the bad rows are
    NaN there instead (the next test fakes that path on the CPU)."""
    emb = nn.Embedding(5, 2)
    idx = on(backend, np.array([[0, 3], [bad, 4]], dtype=np.int64))
    if not _ops_for(backend_for(idx)[0], idx).on_host(idx):
        rows = to_host(emb(idx))
        assert np.isnan(rows[1, 0]).all() and not np.isnan(rows[[0, 1], [0, 1]]).any()
        return
    with pytest.raises(ArgumentError, match=rf"\[0, 5\).*\[{bad}\]"):
        emb(idx)
    with pytest.raises(ArgumentError, match=r"\[0, 5\)"):
        nn.functional.embedding(idx, emb.weight)
    emb(on(backend, np.array([0, 4], dtype=np.int64)))  # the bounds themselves are fine


def test_embedding_indices_out_of_range_on_a_device_give_nan_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where reading the indices back would synchronise a device, bad indices give NaN rows
    (so the loss is NaN) instead of another row's values; good rows are untouched."""
    emb = nn.Embedding(5, 2)
    idx = np.array([1, -1, 5, 4], dtype=np.int64)
    k = _ops_for(nb.namespace().__wrapped__, idx)
    monkeypatch.setattr(k, "on_host", lambda array: False)
    y = to_host(emb(idx))
    w = to_host(emb.weight)
    np.testing.assert_array_equal(y[[0, 3]], w[[1, 4]])
    assert np.isnan(y[[1, 2]]).all()


@pytest.mark.parametrize("bad", [2.5, 0, -1, True, "3", None, 3.0])
def test_layer_sizes_must_be_integers_of_at_least_one(bad: Any) -> None:
    for make, what in [
        (lambda: nn.Linear(bad, 3), "in_features"),
        (lambda: nn.Linear(3, bad), "out_features"),
        (lambda: nn.Embedding(bad, 3), "num_embeddings"),
        (lambda: nn.Embedding(3, bad), "embedding_dim"),
    ]:
        with pytest.raises(ArgumentError, match=f"{what} must be an integer >= 1"):
            make()


def test_layer_sizes_take_any_integral_type() -> None:
    layer = nn.Linear(np.int64(2), np.int32(3))
    assert layer.weight.shape == (2, 3) and type(layer.in_features) is int
    assert nn.Embedding(np.int64(4), 2).weight.shape == (4, 2)


def test_embedding_init_is_standard_normal() -> None:
    nb.random.seed(0)
    w = to_host(nn.Embedding(1000, 50).weight)
    assert abs(w.std() - 1.0) < 0.02


# -- LayerNorm ------------------------------------------------------------------------------
def test_layer_norm_normalises_last_axis(backend: str) -> None:
    with nb.using(backend=backend, dtype="float64"):
        layer = nn.LayerNorm(6)
        x = on(backend, np.random.default_rng(0).normal(3.0, 2.0, size=(4, 6)))
        y = to_host(layer(x))
    np.testing.assert_allclose(y.mean(axis=-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=-1), 1.0, rtol=1e-4)


def test_layer_norm_errors(xp: Any) -> None:
    layer = nn.LayerNorm(4)
    with pytest.raises(ShapeError, match=r"\(\.\.\., 4\).*\(2, 3\)"):
        layer(xp.ones((2, 3)))


# -- Losses -----------------------------------------------------------------------------------
def test_softmax_cross_entropy_gradient_is_softmax_minus_onehot(
    xp: Any, backend: str, dtype: str
) -> None:
    host_x = np.random.default_rng(0).normal(size=(6, 4))
    labels = np.array([0, 3, 1, 1, 2, 0])
    x = nb.Tensor(on(backend, host_x.astype(dtype)), requires_grad=True)
    loss = nn.SoftmaxCrossEntropy()(x, on(backend, labels))
    assert str(loss.dtype).endswith(dtype) and loss.shape == ()
    loss.backward()
    xs = host_x.astype(dtype).astype(np.float64)
    p = np.exp(xs - xs.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = (p - np.eye(4)[labels]) / 6
    assert str(x.grad.dtype).endswith(dtype)
    tol = 16 * eps(dtype)
    np.testing.assert_allclose(to_host(x.grad).astype(np.float64), expected, atol=tol)
    expected_loss = -np.mean(np.log(p[np.arange(6), labels]))
    assert abs(loss.item() - expected_loss) <= 16 * eps(dtype) * max(1.0, expected_loss)


def test_softmax_cross_entropy_large_logits(backend: str) -> None:
    with nb.using(backend=backend, dtype="float32"):
        logits = on(backend, np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4]], dtype=np.float32))
        loss = nn.SoftmaxCrossEntropy()(logits, on(backend, np.array([1, 2])))
    # Row 0: log-sum-exp = 1e4, loss 1e4 - 0; row 1: log(2).
    assert loss.item() == pytest.approx((1e4 + math.log(2)) / 2, rel=1e-6)


def test_sigmoid_cross_entropy_large_logits(backend: str) -> None:
    with nb.using(backend=backend, dtype="float64"):
        logits = nb.Tensor(on(backend, np.array([1e4, -1e4, 0.0])), requires_grad=True)
        loss = nn.SigmoidCrossEntropy()(logits, on(backend, np.array([0.0, 0.0, 1.0])))
    assert loss.item() == pytest.approx((1e4 + 0.0 + math.log(2)) / 3)
    loss.backward()
    np.testing.assert_allclose(to_host(logits.grad), np.array([1.0, 0.0, -0.5]) / 3)


@pytest.mark.parametrize("size", [801, 4001], ids=["small", "wide"])  # wide: float16 in float32
def test_sigmoid_keeps_relative_precision_over_minus_80_to_80(
    xp: Any, backend: str, dtype: str, size: int
) -> None:
    """Relative error against an extended-precision reference, for negative inputs too (the
    tanh form lost it: 2.6% at x = -15 in float32, 0 below x = -17), and no overflow in
    float16. Where the true value is below the dtype's smallest normal number, the error
    bound is the subnormal spacing."""
    x = np.linspace(-80.0, 80.0, size).astype(dtype)
    with np.errstate(over="raise", invalid="raise"):  # a NumPy overflow in float16 fails
        y = to_host(nn.functional.sigmoid(nb.Tensor(on(backend, x)))).astype(np.longdouble)
    ref = 1.0 / (1.0 + np.exp(-x.astype(np.longdouble)))
    info = np.finfo(dtype)
    bound = 4 * float(info.eps) * ref + float(info.smallest_normal) * float(info.eps)
    error = np.abs(y - ref)
    worst = int(np.argmax(error / bound))
    assert np.all(error <= bound), (
        f"sigmoid({float(x[worst])}) = {float(y[worst])!r}, expected {float(ref[worst])!r}"
    )
    assert np.all(np.isfinite(y))


def test_sigmoid_gradient_at_large_negative_inputs(xp: Any, backend: str, dtype: str) -> None:
    """d sigmoid / dx = sigmoid(x) (1 - sigmoid(x)) keeps its relative precision where the
    tanh form gave 0 or a wrong value."""
    x = np.array([-60.0, -15.0, -9.0, -3.0, 0.0], dtype=dtype)
    t = nb.Tensor(on(backend, x), requires_grad=True)
    nn.functional.sigmoid(t).sum().backward()
    s = 1.0 / (1.0 + np.exp(-x.astype(np.longdouble)))
    ref = s * (1.0 - s)
    info = np.finfo(dtype)
    bound = 8 * float(info.eps) * ref + float(info.smallest_normal) * float(info.eps)
    assert np.all(np.abs(to_host(t.grad).astype(np.longdouble) - ref) <= bound)


def test_mse_loss(xp: Any, dtype: str) -> None:
    y = nb.Tensor(xp.asarray([1.0, 2.0, 4.0]), requires_grad=True)
    loss = nn.MSELoss()(y, xp.asarray([1.0, 0.0, 2.0]))
    assert str(loss.dtype).endswith(dtype)
    assert loss.item() == pytest.approx(8 / 3, rel=4 * eps(dtype))
    loss.backward()
    np.testing.assert_allclose(
        to_host(y.grad).astype(np.float64), [0.0, 4 / 3, 4 / 3], rtol=4 * eps(dtype)
    )


# -- init -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "xavier",
        "xavier_normal",
        "xavier_uniform",
        "he",
        "he_normal",
        "he_uniform",
        "normal",
        "uniform",
    ],
)
def test_init_same_seed_same_values_on_every_backend(name: str, backend: str, dtype: str) -> None:
    fn = getattr(nn.init, name)
    with nb.using(backend="numpy", dtype=dtype):
        nb.random.seed(11)
        reference = to_host(fn((7, 5)))
    with nb.using(backend=backend, dtype=dtype):
        nb.random.seed(11)
        values = fn((7, 5))
        own = fn((7, 5), generator=nb.random.Generator(11))
    assert backend_for(values)[1].name == backend
    assert str(values.dtype).endswith(dtype)
    np.testing.assert_array_equal(to_host(values), reference)
    np.testing.assert_array_equal(to_host(own), reference)


def test_init_scales() -> None:
    nb.random.seed(0)
    assert abs(to_host(nn.init.he((500, 200))).std() - math.sqrt(2 / 500)) < 0.002
    assert abs(to_host(nn.init.xavier((500, 200))).std() - math.sqrt(1 / 500)) < 0.002
    assert abs(to_host(nn.init.xavier_uniform((500, 200))).std() - math.sqrt(1 / 500)) < 0.002
    assert abs(to_host(nn.init.normal((500, 200), 0.01)).std() - 0.01) < 0.0005
    assert nn.init.fan_in((3, 4, 5)) == 12 and nn.init.fan_in(7) == 7


def test_init_zeros_ones_follow_settings(backend: str, dtype: str) -> None:
    with nb.using(backend=backend, dtype=dtype):
        z, o = nn.init.zeros((2, 3)), nn.init.ones(4)
    assert str(z.dtype).endswith(dtype) and str(o.dtype).endswith(dtype)
    assert np.all(to_host(z) == 0) and np.all(to_host(o) == 1)


def test_same_seed_same_model_on_every_backend(backend: str) -> None:
    def build() -> nn.Module:
        nb.random.seed(5)
        return nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Embedding(3, 4), nn.LayerNorm(4))

    with nb.using(backend="numpy", dtype="float32"):
        reference = {k: to_host(v) for k, v in build().state_dict().items()}
    with nb.using(backend=backend, dtype="float32"):
        model = build()
    assert list(model.state_dict()) == list(reference)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(to_host(value), reference[name], err_msg=name)


# -- state_dict ---------------------------------------------------------------------------------
def test_state_dict_round_trip_across_backends(backend: str) -> None:
    with nb.using(backend="numpy", dtype="float32"):
        nb.random.seed(0)
        source = Block()
    with nb.using(backend=backend, dtype="float32"):
        nb.random.seed(99)
        target = Block()
    target.load_state_dict(source.state_dict())
    for (name, a), (_, b) in zip(source.named_parameters(), target.named_parameters(), strict=True):
        assert backend_for(b.data)[1].name == backend
        np.testing.assert_array_equal(to_host(b), to_host(a), err_msg=name)
    # A copy: changing the source does not change the target.
    source.alpha.data[0] = 100.0
    assert to_host(target.alpha)[0] != 100.0


def test_load_state_dict_validates_before_touching_anything() -> None:
    model = Block()
    before = {k: to_host(v).copy() for k, v in model.state_dict().items()}
    good = {k: np.zeros_like(v) for k, v in before.items()}

    bad_shape = dict(good, **{"mid.2.weight": np.zeros((2, 3))})
    with pytest.raises(CheckpointError, match=r"mid\.2\.weight.*\(2, 3\).*\(3, 2\)"):
        model.load_state_dict(bad_shape)
    bad_dtype = dict(good, **{"mid.2.weight": np.zeros((3, 2), dtype=np.float32)})
    with pytest.raises(CheckpointError, match=r"float32.*float64"):
        model.load_state_dict(bad_dtype)
    missing = {k: v for k, v in good.items() if k != "alpha"}
    with pytest.raises(CheckpointError, match="missing keys \\['alpha'\\]"):
        model.load_state_dict(missing)
    with pytest.raises(CheckpointError, match="unexpected keys \\['extra'\\]"):
        model.load_state_dict(dict(good, extra=np.zeros(1)))
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(to_host(value), before[name])

    model.load_state_dict(missing, strict=False)
    np.testing.assert_array_equal(to_host(model.alpha), before["alpha"])
    assert np.all(to_host(model.zeta.weight) == 0)


def test_linear_batch_one_weight_gradient_is_an_outer_product(
    xp: Any, dtype: str, backend: str
) -> None:
    """Issue 19: with one row, the weight gradient ``x.T @ gy`` is an outer product, which
    OpenBLAS's GEMM ran 3-4x slower than a broadcast multiply; the engine picks the multiply
    by shape. Same values as the product (one multiply per element), in the weight's dtype."""
    rng = np.random.default_rng(3)
    x64 = rng.normal(size=(1, 7))
    gy64 = rng.normal(size=(1, 5))
    w64 = rng.normal(size=(7, 5))
    x = nb.Tensor(on(backend, x64.astype(dtype)))
    w = nb.Tensor(on(backend, w64.astype(dtype)), requires_grad=True)
    b = nb.Tensor(on(backend, np.zeros(5, dtype)), requires_grad=True)
    y = nn.functional.linear(x, w, b)
    y.backward(on(backend, gy64.astype(dtype)))
    assert w.grad.dtype == getattr(xp, dtype) and tuple(w.grad.shape) == (7, 5)
    ref = x64.astype(dtype).astype(np.float64).T @ gy64.astype(dtype).astype(np.float64)
    np.testing.assert_allclose(to_host(w.grad), ref, rtol=4 * eps(dtype), atol=4 * eps(dtype))
    if backend == "numpy":  # the very values of the product
        product = x64.astype(dtype).T @ gy64.astype(dtype)
        assert np.array_equal(to_host(w.grad), product)


def test_linear_batch_one_backward_runs_no_matrix_product() -> None:
    """The batch-1 weight gradient is not a GEMM: with the data needing no gradient, backward
    makes no matrix product at all (counted on array_api_strict's arrays)."""
    if registry.probe("array_api_strict") is not None:
        pytest.skip("array_api_strict is unavailable")
    sx = nb.namespace("array_api_strict", "float64")
    array = type(sx.asarray([1.0]))
    calls = []
    original = array.__matmul__

    def counted(self: Any, other: Any) -> Any:
        calls.append(other.shape)
        return original(self, other)

    with nb.using(backend="array_api_strict", dtype="float64"):
        x = nb.Tensor(sx.ones((1, 6)))
        w = nb.Tensor(sx.ones((6, 4)), requires_grad=True)
        y = nn.functional.linear(x, w)
        gy = sx.ones((1, 4))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(array, "__matmul__", counted)
            y.backward(gy)
            assert calls == []
            x2 = nb.Tensor(sx.ones((2, 6)))
            nn.functional.linear(x2, w).backward(sx.ones((2, 4)))
            assert calls == [(6, 4), (2, 4)]  # two rows: forward x @ W, then x.T @ gy
    np.testing.assert_array_equal(to_host(w.grad), np.full((6, 4), 3.0))


def test_a_linear_node_subclass_keeps_its_overrides_on_small_products() -> None:
    """The Linear node computes small products without calling ``replay_forward`` and
    differentiates them without its full ``backward``'s tests; a subclass that overrides
    ``replay_forward`` (here: doubling the output) or ``backward`` (doubling the weight's
    gradient) is not taken that way: eager runs its overrides."""
    from nnbackend.nn import functional as F

    class Doubled(F.Linear):
        def replay_forward(self, x: Any, w: Any, b: Any = None) -> Any:
            return super().replay_forward(x, w, b) * 2.0

    class SteeperWeight(F.Linear):
        def backward(self, gy: Any) -> Any:
            gx, gw, gb = super().backward(gy)
            return gx, gw * 2.0, gb

    xp = nb.namespace("numpy", "float64")
    x = xp.asarray([[1.0, 2.0], [3.0, 4.0]])
    b = nb.Tensor(xp.asarray([0.5, -0.5, 1.0]), requires_grad=True)
    w = nb.Tensor(xp.reshape(xp.arange(6.0), (2, 3)), requires_grad=True)
    plain = F.Linear()(x, w, b)
    np.testing.assert_array_equal(Doubled()(x, w, b).data, plain.data * 2.0)
    plain.backward(xp.ones((2, 3)))
    expected = w.grad * 2.0
    w.grad = None
    SteeperWeight()(x, w, b).backward(xp.ones((2, 3)))
    np.testing.assert_array_equal(w.grad, expected)


_FAULTS_SCRIPT = """
import os
import resource
import sys
import numpy as np
exec(os.environ.get("NNBACKEND_TEST_PRELUDE", ""))
import nnbackend as nb
from nnbackend import nn, optim
nb.set_default_dtype("float64")
nb.random.seed(0)
model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                      nn.Linear(1024, 10))
opt = optim.SGD(model.parameters(), lr=0.01)
x = nb.namespace().asarray(np.random.default_rng(0).normal(size=(256, 784)))
t = nb.namespace().asarray(np.arange(256) % 10)
def step():
    opt.zero_grad()
    nn.SoftmaxCrossEntropy()(model(x), t).backward()
    opt.step()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print({b.name: b for b in nb.info().backends}["numpy"].facts["allocator"])
"""


def test_opt_in_allocator_setting_stops_page_faults_in_steady_state() -> None:
    """Issue 19: the medium float64 step freed and refaulted its megabyte arrays every step
    (1,400 to 7,000 page faults a step, depending on where glibc's heap ended). It now
    writes them into recycled arrays (tests/test_recycled.py) and takes none by default;
    ``NNBACKEND_KEEP_FREED_MEMORY=1`` (glibc keeps all freed memory) keeps it at none, and
    with recycling turned off the setting is what stops the faults."""
    import os
    import platform
    import subprocess
    import sys

    from nnbackend.backends import numpy as numpy_backend

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the setting is glibc's")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNBACKEND")}

    def faults(**extra: str) -> tuple[int, str]:
        done = subprocess.run(
            [sys.executable, "-c", _FAULTS_SCRIPT],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        )
        count, fact = done.stdout.split("\n", 1)
        return int(count), fact.strip()

    kept, fact = faults(**{numpy_backend.KEEP_MEMORY_ENV: "1"})
    assert fact == "keeps freed memory (no page faults in steady state)"
    # 0 on a quiet machine; CI saw 1-2 (a Python object's page, not the step's arrays, which
    # cost thousands without the setting).
    assert kept < 50, kept
    count, fact = faults()  # the default: recycled arrays, nothing to fault in
    assert count < 50 and fact.startswith("the C library's default"), count
    # Without recycling, the step's arrays fault in again every step (4 steps measured) once
    # glibc hands freed arrays back: told to by its tunables here, as its dynamic thresholds do
    # depending on where the heap ends (4,500 faults here, 976 in a busy CI run without them).
    off = "from nnbackend.backends.numpy import NumpyOps\nNumpyOps.recycled = lambda *a: None\n"
    returns_memory = "glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=131072"
    count, _ = faults(NNBACKEND_TEST_PRELUDE=off, GLIBC_TUNABLES=returns_memory)
    assert count > 1000, count
    kept, _ = faults(NNBACKEND_TEST_PRELUDE=off, **{numpy_backend.KEEP_MEMORY_ENV: "1"})
    assert kept < 50, kept
