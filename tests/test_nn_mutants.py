"""Behaviour of ``nnbackend.nn`` that mutation testing (issue #21, ``scripts/mutation_module.py
nn``) found unchecked: each layer's repr, the error messages that tell a user what to fix,
``Module._apply`` on attributes that are not parameters, the weight gradient of a one-row
batch, the float16 path of ``Linear`` where NumPy computes it in float32, the label check on
a host backend other than NumPy's.

Each test was checked against the mutant it was written for (the line patched by hand in
``src/``, the test run and seen to fail, the line restored).
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, registry
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import (
    ArgumentError,
    CheckpointError,
    DtypeError,
    LabelError,
    ShapeError,
)
from nnbackend.namespace import backend_for, ops_for
from nnbackend.nn import attention, conv, normalization, pooling, recurrent, sampling, summary
from nnbackend.nn import functional as F


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, Tensor) else a
    return np.array(registry.get(registry.backend_of(a)).to_host(a), copy=True)


# -- repr: every layer names the arguments that make it --------------------------------------
REPRS: list[tuple[Callable[[], nn.Module], str]] = [
    (lambda: nn.Linear(2, 3), "Linear(in_features=2, out_features=3, bias=True)"),
    (lambda: nn.Linear(2, 3, bias=False), "Linear(in_features=2, out_features=3, bias=False)"),
    (lambda: nn.MatMul(nb.namespace().ones((2, 3))), "MatMul(weight_shape=(2, 3))"),
    (lambda: nn.LeakyReLU(0.25), "LeakyReLU(negative_slope=0.25)"),
    (lambda: nn.Softmax(axis=0), "Softmax(axis=0)"),
    (lambda: nn.Dropout(0.3), "Dropout(p=0.3)"),
    (lambda: nn.Embedding(5, 4), "Embedding(5, 4)"),
    (lambda: nn.LayerNorm(6, eps=1e-3), "LayerNorm((6,), eps=0.001)"),
    (lambda: nn.SoftmaxCrossEntropy(), "SoftmaxCrossEntropy()"),
    (lambda: nn.SoftmaxCrossEntropy(ignore_index=-1), "SoftmaxCrossEntropy(ignore_index=-1)"),
    (
        lambda: nn.GroupNorm(2, 4, eps=1e-4, affine=False),
        "GroupNorm(2, 4, eps=0.0001, affine=False)",
    ),
    (
        lambda: nn.BatchNorm1d(3, eps=1e-3, momentum=0.2, affine=False, track_running_stats=False),
        "BatchNorm1d(3, eps=0.001, momentum=0.2, affine=False, track_running_stats=False)",
    ),
    (
        lambda: nn.BatchNorm2d(3),
        "BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)",
    ),
    (
        lambda: nn.MaxPool2d(3, stride=2, padding=1),
        "MaxPool2d(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))",
    ),
    (lambda: nn.AvgPool2d(2), "AvgPool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))"),
    (lambda: nn.AdaptiveAvgPool2d((2, 3)), "AdaptiveAvgPool2d(output_size=(2, 3))"),
    (lambda: nn.Flatten(2), "Flatten(start_dim=2)"),
    (lambda: nn.RNN(3, 4), "RNN(3, 4)"),
    (lambda: nn.LSTM(3, 4, stateful=True), "LSTM(3, 4, stateful=True)"),
    (lambda: nn.GRU(2, 5), "GRU(2, 5)"),
    (lambda: nn.Conv2d(3, 4, 3), "Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1))"),
    (
        lambda: nn.Conv2d(2, 4, (3, 1), stride=2, padding=1, dilation=2, groups=2, bias=False),
        "Conv2d(2, 4, kernel_size=(3, 1), stride=(2, 2), padding=(1, 1), dilation=(2, 2), "
        "groups=2, bias=False)",
    ),
    (
        lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1),
        "ConvTranspose2d(3, 4, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), "
        "output_padding=(1, 1))",
    ),
    (
        lambda: nn.ConvTranspose2d(3, 4, 2),
        "ConvTranspose2d(3, 4, kernel_size=(2, 2), stride=(1, 1))",
    ),
    (lambda: nn.EmbeddingDot(5, 2), "EmbeddingDot(5, 2)"),
    (lambda: nn.EmbeddingDot(weight=nb.namespace().ones((6, 3))), "EmbeddingDot(6, 3)"),
    (
        lambda: nn.NegativeSamplingLoss(4, 3, [0, 1, 2, 3, 1], power=0.5, sample_size=2),
        "NegativeSamplingLoss(vocab_size=4, sample_size=2, power=0.5\n"
        "  (embed): EmbeddingDot(4, 3)\n)",
    ),
    (
        lambda: nn.Sequential(nn.Linear(2, 3), nn.ReLU()),
        "Sequential(\n  (0): Linear(in_features=2, out_features=3, bias=True)\n  (1): ReLU()\n)",
    ),
    (lambda: nn.Tanh(), "Tanh()"),
    (lambda: nn.MSELoss(), "MSELoss()"),
]


@pytest.mark.parametrize(("make", "expected"), REPRS, ids=[text.split("(")[0] for _, text in REPRS])
def test_layer_repr_names_the_arguments_that_differ_from_the_defaults(
    xp64: Any, make: Callable[[], nn.Module], expected: str
) -> None:
    assert repr(make()) == expected


# -- the error messages say what was wrong -----------------------------------------------------
SIZE_ERRORS: list[tuple[Callable[[], nn.Module], str]] = [
    (lambda: nn.Linear(2.5, 3),
     "Linear: in_features must be an integer >= 1, got 2.5 of type float"),
    (lambda: nn.Linear(2, True),
     "Linear: out_features must be an integer >= 1, got True of type bool"),
    (lambda: nn.Embedding("5", 2),
     "Embedding: num_embeddings must be an integer >= 1, got '5' of type str"),
    (lambda: nn.Embedding(5, None),
     "Embedding: embedding_dim must be an integer >= 1, got None of type NoneType"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "message"), SIZE_ERRORS)
def test_layer_sizes_that_are_not_integers_are_named_with_their_layer(
    xp64: Any, make: Callable[[], nn.Module], message: str
) -> None:
    with pytest.raises(ArgumentError) as info:
        make()
    assert info.value.args[0] == message


def test_ignore_index_with_float_labels_says_what_labels_it_needs(xp64: Any) -> None:
    logits = xp64.zeros((3, 4))
    labels = xp64.asarray([[0.0, 1.0, 0.0, 0.0]] * 3)
    with pytest.raises(ArgumentError) as info:
        F.softmax_cross_entropy(logits, labels, ignore_index=-1)
    message = str(info.value)
    assert message.startswith(
        "softmax_cross_entropy: ignore_index needs integer labels of shape (N,) or (N, T), "
        "got (3, 4) "
    )
    assert "float64" in message


def test_embedding_index_out_of_range_says_negative_ones_do_not_wrap(
    xp64: Any, gathers_nan: bool
) -> None:
    layer = nn.Embedding(4, 2)
    if gathers_nan:  # on a device: the rows of bad indices are NaN (no synchronisation)
        rows = np.asarray(layer(xp64.asarray([1, -1, 4])).data.tolist())
        assert np.isfinite(rows[0]).all() and np.isnan(rows[1:]).all()
        return
    with pytest.raises(ArgumentError) as info:
        layer(xp64.asarray([1, -1, 4]))
    assert str(info.value) == (
        "embedding indices must lie in [0, 4) for a weight of 4 rows; found [-1, 4] "
        "(a negative index does not count from the end)"
    )


def test_load_state_dict_names_an_entry_that_is_no_array(xp64: Any) -> None:
    layer = nn.Linear(2, 3)
    state = layer.state_dict()
    state["weight"] = [[1.0, 2.0, 3.0]] * 2  # a nested list: no shape, no dtype
    with pytest.raises(CheckpointError, match=re.escape("has shape ?, dtype None")):
        layer.load_state_dict(state)


# -- Module._apply: attributes that are not parameters ---------------------------------------
class _Holder(nn.Module):
    def __init__(self, xp: Any) -> None:
        super().__init__()
        self.inner = nn.Linear(2, 3)
        self.scale = xp.asarray([1.0, 2.0])
        self.tag = "label"
        self.sizes = [4, 5]


def test_moving_a_module_moves_held_arrays_and_keeps_other_attributes(backend: str) -> None:
    other = "array_api_strict" if backend == "numpy" else "numpy"
    with nb.using(backend=backend, dtype="float64"):
        model = _Holder(nb.namespace())
    model.to(other)
    assert registry.backend_of(model.scale) == other
    np.testing.assert_array_equal(_host(model.scale), [1.0, 2.0])
    assert model.tag == "label"
    assert model.sizes == [4, 5]
    assert model.inner.in_features == 2
    assert registry.backend_of(model.inner.weight.data) == other


# -- Linear: a one-row batch, and float16 computed in float32 --------------------------------
def test_linear_weight_gradient_of_a_one_row_batch_on_torch() -> None:
    """A batch of one row takes the outer-product kernel of the weight gradient; torch
    (unlike NumPy) rejects a malformed reshape there. float64, small: no float16 in forked
    test processes (see CONTRIBUTING)."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    with nb.using(backend="torch", dtype="float64"):
        xp = nb.namespace()
        layer = nn.Linear(3, 2)
        x = rng.standard_normal((1, 3))
        gy = rng.standard_normal((1, 2))
        (layer(xp.asarray(x)) * Tensor(xp.asarray(gy))).sum().backward()
        np.testing.assert_allclose(_host(layer.weight.grad), x.T @ gy, rtol=1e-12)
        np.testing.assert_allclose(_host(layer.bias.grad), gy[0], rtol=1e-12)


def test_float16_linear_gradients_where_numpy_computes_in_float32() -> None:
    """NumPy computes float16 products this large in float32 and stores float16: the
    gradients come back in float16 and agree with float64 to float16's precision."""
    rng = np.random.default_rng(4)
    x64 = (rng.standard_normal((16, 64)) * 0.5).astype(np.float16)
    w64 = (rng.standard_normal((64, 8)) * 0.2).astype(np.float16)
    b64 = rng.standard_normal(8).astype(np.float16)
    gy64 = rng.standard_normal((16, 8)).astype(np.float16)
    with nb.using(backend="numpy", dtype="float16"):
        xp = nb.namespace()
        x = Tensor(xp.asarray(x64), requires_grad=True)
        w = Tensor(xp.asarray(w64), requires_grad=True)
        b = Tensor(xp.asarray(b64), requires_grad=True)
        y = F.linear(x, w, b)
        (y * Tensor(xp.asarray(gy64))).sum().backward()
    x16, w16, gy16 = (a.astype(np.float64) for a in (x64, w64, gy64))
    for got, want in ((x.grad, gy16 @ w16.T), (w.grad, x16.T @ gy16), (b.grad, gy16.sum(0))):
        assert str(got.dtype) == "float16"
        np.testing.assert_allclose(_host(got).astype(np.float64), want, rtol=0.02, atol=0.05)
    np.testing.assert_allclose(
        _host(y.data), x16 @ w16 + b64.astype(np.float64), rtol=0.02, atol=0.05
    )


# -- labels out of range on a host backend whose arrays know their device --------------------
def test_labels_out_of_range_raise_on_torch_cpu() -> None:
    pytest.importorskip("torch")
    with nb.using(backend="torch", dtype="float64"):
        xp = nb.namespace()
        logits = xp.zeros((2, 3))
        with pytest.raises(LabelError):
            F.softmax_cross_entropy(logits, xp.asarray([0, 3]))


# -- Module bookkeeping: names, order, modes, registration -----------------------------------
class _Block(nn.Module):
    def __init__(self, xp: Any) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(3)
        self.scale = nn.Parameter(xp.ones(3))
        self.fc = nn.Linear(3, 2)
        self.register_buffer("count", xp.zeros(()))


class _Net(nn.Module):
    def __init__(self, xp: Any) -> None:
        super().__init__()
        self.first = nn.Linear(4, 3)
        self.block = _Block(xp)
        self.again = self.first  # shared: listed once, under its first name
        self.head = nn.Parameter(xp.ones(2))


PARAMETER_NAMES = [
    "head",  # the module's own parameters first, then each child's, depth first
    "first.weight",
    "first.bias",
    "block.scale",
    "block.norm.weight",
    "block.norm.bias",
    "block.fc.weight",
    "block.fc.bias",
]
BUFFER_NAMES = ["block.count", "block.norm.running_mean", "block.norm.running_var"]


def test_parameters_buffers_and_modules_are_named_in_registration_order(xp64: Any) -> None:
    net = _Net(xp64)
    assert [name for name, _ in net.named_parameters()] == PARAMETER_NAMES
    assert [name for name, _ in net.named_parameters(prefix="m")] == [
        f"m.{name}" for name in PARAMETER_NAMES
    ]
    assert [name for name, _ in net.named_parameters(recurse=False)] == ["head"]
    assert list(net.parameters()) == [p for _, p in net.named_parameters()]
    assert list(net.parameters(recurse=False)) == [net.head]
    assert [name for name, _ in net.named_buffers()] == BUFFER_NAMES
    assert list(net.named_buffers(recurse=False)) == []
    assert [name for name, _ in net.block.named_buffers(prefix="b", recurse=False)] == ["b.count"]
    assert list(net.buffers()) == [b for _, b in net.named_buffers()]
    assert list(net.block.buffers(recurse=False)) == [net.block.count]
    assert [name for name, _ in net.named_modules()] == [
        "",
        "first",
        "block",
        "block.norm",
        "block.fc",
    ]
    assert [name for name, _ in net.named_modules("net")][:3] == ["net", "net.first", "net.block"]
    assert list(net.modules()) == [m for _, m in net.named_modules()]
    assert [name for name, _ in net.named_children()] == ["first", "block", "again"]
    assert list(net.children()) == [net.first, net.block, net.first]
    assert list(net.state_dict()) == PARAMETER_NAMES + BUFFER_NAMES
    assert [name for name, _ in net.named_state()] == PARAMETER_NAMES + BUFFER_NAMES


def test_train_and_eval_reach_every_descendant_and_return_the_module(xp64: Any) -> None:
    net = _Net(xp64)
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    assert net.train() is net
    assert all(m.training is True for m in net.modules())
    net.block.train(False)
    assert [m.training for _, m in net.named_modules()] == [True, True, False, False, False]
    net.train(0)
    assert net.training is False


def test_zero_grad_forgets_every_gradient(xp64: Any) -> None:
    net = _Net(xp64)
    for p in net.parameters():
        p.grad = xp64.ones(p.data.shape)
    net.zero_grad()
    assert [p.grad for p in net.parameters()] == [None] * len(PARAMETER_NAMES)


def test_registration_rules_and_their_messages(xp64: Any) -> None:
    net = _Net(xp64)
    with pytest.raises(ArgumentError, match=re.escape("got 'a.b'")):
        net.register_buffer("a.b", xp64.zeros(1))
    with pytest.raises(ArgumentError, match=re.escape("cannot register buffer 'head' on _Net")):
        net.register_buffer("head", xp64.zeros(1))
    with pytest.raises(ArgumentError, match=re.escape("cannot register buffer 'first' on _Net")):
        net.register_buffer("first", xp64.zeros(1))
    with pytest.raises(TypeError, match=re.escape("to parameter 'head' of _Net")):
        net.head = xp64.zeros(2)
    with pytest.raises(TypeError, match=re.escape("to submodule 'first' of _Net")):
        net.first = 3
    with pytest.raises(TypeError, match=re.escape("wrap it: self.layers = nn.ModuleList(...)")):
        net.layers = [nn.ReLU()]
    with pytest.raises(TypeError, match=re.escape("wrap it: self.table = nn.ModuleDict(...)")):
        net.table = {"a": nn.ReLU()}
    with pytest.raises(TypeError, match=re.escape("cannot assign a Parameter to buffer 'c' of")):
        net.block.register_buffer("c", nn.Parameter(xp64.zeros(())))
    net.table = {"a": 1}  # a dict of no layers is a plain attribute
    assert net.table == {"a": 1}
    net.head = None  # a parameter may be cleared, and is then left out
    assert "head" not in dict(net.named_parameters())
    net.block.count = xp64.ones(())  # assigning an array to a buffer replaces its values
    count = dict(net.named_buffers())["block.count"]
    assert isinstance(count, Tensor) and not count.requires_grad
    assert float(_host(count)) == 1.0
    net.first = None
    assert [name for name, _ in net.named_children()] == ["block", "again"]
    net.first = nn.Parameter(xp64.zeros(1))  # a submodule name taken over by a parameter
    assert "first" in dict(net.named_parameters(recurse=False))
    del net.block
    assert "block" not in dict(net.named_children())
    with pytest.raises(TypeError, match=re.escape("register_parameter needs an nn.Parameter")):
        net.register_parameter("w", xp64.zeros(1))
    with pytest.raises(TypeError, match=re.escape("add_module needs an nn.Module")):
        net.add_module("m", xp64.zeros(1))


def test_sequential_indexing_and_edits(xp64: Any) -> None:
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    seq = nn.Sequential(a, b)
    assert seq.append(c) is seq
    assert list(seq) == [a, b, c] and len(seq) == 3
    assert seq[0] is a and seq[-1] is c
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and list(head) == [a, b]
    assert [name for name, _ in seq[1:].named_children()] == ["1", "2"]
    delattr(seq, "1")
    assert list(seq) == [a, c] and len(seq) == 2
    seq.append(b)  # the next free name, not one in use
    assert [name for name, _ in seq.named_children()] == ["0", "2", "3"]
    seq.extra = nn.Tanh()
    assert seq[-1] is seq.extra
    named = nn.Sequential({"enc": a, "act": b})
    assert [name for name, _ in named.named_children()] == ["enc", "act"]
    with pytest.raises(TypeError, match=re.escape("Sequential holds nn.Module objects, got int")):
        nn.Sequential(a, 3)


def test_parameter_rejects_integer_arrays_naming_the_dtype(xp64: Any) -> None:
    with pytest.raises(DtypeError, match="a Parameter holds floating-point values, got dtype "):
        nn.Parameter(xp64.asarray([1, 2]), requires_grad=False)


def test_layer_norm_second_derivative_with_the_ops_cache_cold(xp64: Any) -> None:
    """The double backward of layer_norm looked up its ops from a Tensor: that works only
    while the ops cache is warm, and any registry change empties it between a forward and
    a ``create_graph`` backward (found by mutmut, whose tests start with a cold cache)."""
    rng = np.random.default_rng(5)
    x = Tensor(xp64.asarray(rng.standard_normal((2, 3))), requires_grad=True)
    w = Tensor(xp64.asarray(rng.standard_normal(3)), requires_grad=True)
    b = Tensor(xp64.asarray(rng.standard_normal(3)), requires_grad=True)
    y = F.layer_norm(x, w, b)
    importlib.import_module("nnbackend.namespace")._ops.clear()  # as registry.on_change does
    (gx,) = nb.grad(y, [x], Tensor(xp64.asarray(rng.standard_normal((2, 3)))), create_graph=True)
    assert tuple(gx.shape) == (2, 3)
    (ggx,) = nb.grad(gx.sum(), [x])
    assert tuple(ggx.shape) == (2, 3)


# -- conv, pooling and recurrent errors: the whole message, which says what to fix ------------
def _z(*shape: int, dtype: str = "float64") -> Any:
    xp = nb.namespace("numpy", "float64")
    return xp.zeros(shape, dtype=getattr(xp, dtype))


def _host_ints(value: Any) -> Any:
    return nb.namespace("numpy", "float64").asarray(value)


ERRORS: dict[str, tuple[Callable[[], Any], type[Exception], str]] = {
    "pair_len": (
        lambda: nn.Conv2d(1, 1, (1, 2, 3)),
        ArgumentError,
        "kernel_size must be an int or a pair of ints, got (1, 2, 3)",
    ),
    "pair_min": (
        lambda: nn.Conv2d(1, 1, 3, stride=0),
        ArgumentError,
        "stride must be integers >= 1, got 0",
    ),
    "kernel_fit": (
        lambda: conv.conv2d(_z(1, 1, 2, 2), _z(1, 1, 3, 3)),
        ShapeError,
        "a kernel of size (3, 3) with dilation (1, 1) does not fit a (padded) input of height "
        "and width (2, 2); use a smaller kernel or more padding",
    ),
    "transpose_padding": (
        lambda: conv.conv_transpose2d(_z(1, 1, 1, 1), _z(1, 1, 1, 1), padding=1),
        ShapeError,
        "conv_transpose2d: padding (1, 1) leaves no output for an input of height and width "
        "(1, 1); use less padding",
    ),
    "images": (
        lambda: conv.conv2d(_z(1, 2, 2), _z(1, 1, 1, 1)),
        ShapeError,
        "conv2d: input must be a batch of images (N, C, H, W), got shape (1, 2, 2); add a batch "
        "axis with x.reshape(1, *x.shape) or a channel axis with x.reshape(N, 1, H, W)",
    ),
    "weight_axes": (
        lambda: conv.conv2d(_z(1, 1, 2, 2), _z(1, 1, 1)),
        ShapeError,
        "conv2d: weight must have 4 axes, got shape (1, 1, 1)",
    ),
    "channels": (
        lambda: conv.conv2d(_z(1, 2, 3, 3), _z(1, 1, 1, 1)),
        ShapeError,
        "conv2d: input has 2 channels (shape (1, 2, 3, 3)), the weight of shape (1, 1, 1, 1) "
        "with groups=1 expects 1",
    ),
    "dtype": (
        lambda: conv.conv2d(_z(1, 1, 3, 3, dtype="float32"), _z(1, 1, 1, 1), _z(1)),
        DtypeError,
        "conv2d: input dtype float32 differs from weight dtype float64 (bias float64); cast the "
        "input (xp.astype) or build the layer under the input's dtype",
    ),
    "bias": (
        lambda: conv.conv2d(_z(1, 1, 3, 3), _z(1, 1, 1, 1), _z(1, 1)),
        ShapeError,
        "conv2d: bias must be 1-D, got shape (1, 1)",
    ),
    "groups": (
        lambda: conv.conv2d(_z(1, 1, 3, 3), _z(1, 1, 1, 1), groups=0),
        ArgumentError,
        "conv2d: groups must be a positive int, got 0",
    ),
    "divisible": (
        lambda: nn.Conv2d(3, 4, 1, groups=2),
        ArgumentError,
        "Conv2d: in_channels (3) must be divisible by groups (2)",
    ),
    "output_padding": (
        lambda: conv.conv_transpose2d(_z(1, 1, 2, 2), _z(1, 1, 2, 2), stride=2, output_padding=2),
        ArgumentError,
        "conv_transpose2d: output_padding (2, 2) must be smaller than the stride (2, 2)",
    ),
    "layer_names_itself": (
        lambda: nn.Conv2d(2, 3, 1)(_z(1, 1, 3, 3)),
        ShapeError,
        "Conv2d(2, 3, kernel_size=(1, 1), stride=(1, 1)): conv2d: input has 1 channels (shape "
        "(1, 1, 3, 3)), the weight of shape (3, 2, 1, 1) with groups=1 expects 2",
    ),
    "pool_images": (
        lambda: pooling.max_pool2d(_z(2, 3), 2),
        ShapeError,
        "max_pool2d: input must be a batch of images (N, C, H, W), got shape (2, 3)",
    ),
    "pool_floating": (
        lambda: pooling.avg_pool2d(_z(1, 1, 2, 2, dtype="int64"), 2),
        ArgumentError,
        "avg_pool2d: input must be floating, got dtype int64",
    ),
    "rnn_weights": (
        lambda: recurrent.rnn(_z(1, 2, 3), None, _z(3, 4), _z(4, 5), _z(4)),
        ShapeError,
        "rnn: weights of shapes weight_x (3, 4), weight_h (4, 5) do not form a RNN layer; "
        "expected (D, 1*H) and (H, 1*H)",
    ),
    "rnn_input": (
        lambda: recurrent.rnn(_z(1, 2, 2), None, _z(3, 4), _z(4, 4), _z(4)),
        ShapeError,
        "rnn: expected input of shape (N, T, 3), got (1, 2, 2); a single time step is (N, 1, D)",
    ),
    "rnn_dtype": (
        lambda: recurrent.rnn(_z(1, 2, 3, dtype="float32"), None, _z(3, 4), _z(4, 4), _z(4)),
        DtypeError,
        "rnn: input dtype float32 differs from the weights' dtype float64; cast the input "
        "(xp.astype) or build the layer under the input's dtype",
    ),
    "rnn_h0": (
        lambda: recurrent.rnn(_z(1, 2, 3), _z(2, 4), _z(3, 4), _z(4, 4), _z(4)),
        ShapeError,
        "rnn: initial state h0 has shape (2, 4), expected (1, 4) (batch, hidden)",
    ),
    "rnn_h0_dtype": (
        lambda: recurrent.rnn(_z(1, 2, 3), _z(1, 4, dtype="float32"), _z(3, 4), _z(4, 4), _z(4)),
        DtypeError,
        "rnn: initial state h0 has dtype float32, the weights float64",
    ),
    "lstm_c0": (
        lambda: recurrent.lstm(_z(1, 2, 3), None, _z(2, 4), _z(3, 16), _z(4, 16), _z(16)),
        ShapeError,
        "lstm: initial state c0 has shape (2, 4), expected (1, 4) (batch, hidden)",
    ),
    "gru_weights": (
        lambda: recurrent.gru(_z(1, 2, 3), None, _z(3, 8), _z(4, 12), _z(12)),
        ShapeError,
        "gru: weights of shapes weight_x (3, 8), weight_h (4, 12) do not form a GRU layer; "
        "expected (D, 3*H) and (H, 3*H)",
    ),
}


ERRORS.update(
    {
        "bn_input": (
            lambda: normalization.batch_norm(_z(3), None, None, training=True),
            ShapeError,
            "batch_norm: input must be (N, C, ...), got shape (3,)",
        ),
        "bn_weight_shape": (
            lambda: normalization.batch_norm(_z(2, 3), None, None, _z(4), training=True),
            ShapeError,
            "batch_norm: weight has shape (4,), the input of shape (2, 3) has 3 channels; "
            "expected (3,)",
        ),
        "bn_weight_dtype": (
            lambda: normalization.batch_norm(
                _z(2, 3), None, None, _z(3, dtype="float32"), training=True
            ),
            DtypeError,
            "batch_norm: weight has dtype float32, the input float64; cast the input (xp.astype) "
            "or build the layer under the input's dtype",
        ),
        "bn_bias_alone": (
            lambda: normalization.batch_norm(_z(2, 3), None, None, None, _z(3), training=True),
            ArgumentError,
            "batch_norm: a bias without a weight is not supported; pass both",
        ),
        "bn_eval_stats": (
            lambda: normalization.batch_norm(_z(2, 3), None, None),
            ArgumentError,
            "batch_norm: evaluation (training=False) needs running_mean and running_var",
        ),
        "bn_one_value": (
            lambda: normalization.batch_norm(_z(1, 3), None, None, training=True),
            ArgumentError,
            "batch_norm: training needs more than one value per channel, got input of shape (1, "
            "3); use a larger batch, or model.eval()",
        ),
        "gn_divisible": (
            lambda: nn.GroupNorm(3, 4),
            ArgumentError,
            "GroupNorm: num_channels (4) must be divisible by num_groups (3)",
        ),
        "gn_input": (
            lambda: normalization.group_norm(_z(2, 3, 4), 2),
            ShapeError,
            "group_norm: input of shape (2, 3, 4) must be (N, C, ...) with C divisible by "
            "num_groups (2)",
        ),
        "gn_bias_alone": (
            lambda: normalization.group_norm(_z(2, 4, 3), 2, None, _z(4)),
            ArgumentError,
            "group_norm: a bias without a weight is not supported; pass both",
        ),
        "gn_dtype": (
            lambda: normalization.group_norm(_z(2, 4, 3), 2, _z(4, dtype="float32"), None),
            DtypeError,
            "group_norm: weight has dtype float32, the input float64",
        ),
        "bn_momentum": (
            lambda: nn.BatchNorm1d(3, momentum=1.5),
            ArgumentError,
            "momentum must be in [0, 1], got 1.5",
        ),
        "bn_layer_axes": (
            lambda: nn.BatchNorm2d(3)(_z(2, 3)),
            ShapeError,
            "BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True): "
            "expected input with 4 axes (N, C, ...), got shape (2, 3)",
        ),
        "bn1d_layer_axes": (
            lambda: nn.BatchNorm1d(3)(_z(2, 3, 4, 5)),
            ShapeError,
            "BatchNorm1d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True): "
            "expected input with 2 or 3 axes (N, C, ...), got shape (2, 3, 4, 5)",
        ),
        "sampler_empty": (
            lambda: sampling.UnigramSampler([]),
            ArgumentError,
            "UnigramSampler needs a non-empty corpus of word ids >= 0",
        ),
        "sampler_negative": (
            lambda: sampling.UnigramSampler([0, -1]),
            ArgumentError,
            "UnigramSampler needs a non-empty corpus of word ids >= 0",
        ),
        "sampler_vocab": (
            lambda: sampling.UnigramSampler([0, 3], vocab_size=3),
            ArgumentError,
            "UnigramSampler: vocab_size=3 but the corpus holds id 3",
        ),
        "sampler_size": (
            lambda: sampling.UnigramSampler([0, 1], sample_size=0),
            ArgumentError,
            "sample_size must be >= 1, got 0",
        ),
        "sampler_exclude": (
            lambda: sampling.UnigramSampler([0, 1], sample_size=2, exclude_target=True),
            ArgumentError,
            "exclude_target=True needs more distinct words in the corpus than sample_size",
        ),
        "embedding_dot": (
            lambda: sampling.embedding_dot(_z(2, 3), _z(4, 3), _host_ints([[[0]]])),
            ShapeError,
            "embedding_dot: expected h (N, H) and indices (N,) or (N, K), got (2, 3) and (1, 1, 1)",
        ),
        "ns_ids": (
            lambda: sampling.negative_sampling_loss(
                _z(2, 3), _z(4, 3), _z(2), _host_ints([[0], [1]])
            ),
            DtypeError,
            "word ids must be integers, got float64 and int64",
        ),
        "ns_shapes": (
            lambda: sampling.negative_sampling_loss(
                _z(2, 3), _z(4, 3), _host_ints([0, 1]), _host_ints([0, 1])
            ),
            ShapeError,
            "negative_sampling_loss: expected target (N,) and negatives (N, K), got (2,) and (2,)",
        ),
        "attention": (
            lambda: attention.attention(_z(2, 3, 4), _z(2, 3, 5)),
            ShapeError,
            "attention: expected encoder states (N, Te, H) and decoder states (N, Td, H), got "
            "(2, 3, 4) and (2, 3, 5)",
        ),
        "attention_layer": (
            lambda: nn.Attention()(_z(2, 3, 4), _z(2, 1, 4)),
            ShapeError,
            "Attention: expected a decoder state (N, H), got (2, 1, 4)",
        ),
        "summary_both": (
            lambda: summary.summary(nn.Linear(2, 3), _z(1, 2), input_shape=(2,)),
            ArgumentError,
            "give x or input_shape, not both",
        ),
        "dropout_p": (
            lambda: nn.Dropout(1.0),
            ArgumentError,
            "Dropout probability must be in [0, 1), got 1.0",
        ),
        "embedding_int": (
            lambda: nn.Embedding(3, 2)(_z(2)),
            DtypeError,
            "Embedding(3, 2): indices must be integers, got dtype float64",
        ),
        "layernorm_shape": (
            lambda: nn.LayerNorm(3)(_z(2, 4)),
            ShapeError,
            "LayerNorm((3,), eps=1e-05): expected input of shape (..., 3), got shape (2, 4)",
        ),
        "layernorm_dtype": (
            lambda: nn.LayerNorm(3)(_z(2, 3, dtype="float32")),
            DtypeError,
            "LayerNorm((3,), eps=1e-05): input dtype float32 differs from the layer's dtype "
            "float64; cast the input (xp.astype) first",
        ),
        "linear_shape": (
            lambda: nn.Linear(3, 2)(_z(2, 4)),
            ShapeError,
            "Linear(in_features=3, out_features=2, bias=True): expected input of shape (..., 3), "
            "got shape (2, 4)",
        ),
        "linear_dtype": (
            lambda: nn.Linear(3, 2)(_z(2, 3, dtype="float32")),
            DtypeError,
            "Linear(in_features=3, out_features=2, bias=True): input dtype float32 differs from "
            "the layer's dtype float64; cast the input (xp.astype) or build the layer under the "
            "input's dtype (nnbackend.using(dtype=...))",
        ),
        "linear_size_zero": (
            lambda: nn.Linear(0, 2),
            ArgumentError,
            "Linear: in_features must be an integer >= 1, got 0",
        ),
        "matmul_shape": (
            lambda: nn.MatMul(_z(3, 2))(_z(2, 4)),
            ShapeError,
            "MatMul(weight_shape=(3, 2)): expected input of shape (..., 3), got shape (2, 4)",
        ),
        "moduledict_key": (
            lambda: nn.ModuleDict({"a.b": nn.ReLU()}),
            KeyError,
            "ModuleDict keys are non-empty strings without '.' that are not ModuleDict "
            "attributes (keys, items, update, ...), got 'a.b'",
        ),
        "moduledict_missing": (
            lambda: nn.ModuleDict({"a": nn.ReLU()})["b"],
            KeyError,
            "'b' is not in this ModuleDict; it holds ['a']",
        ),
        "modulelist_type": (
            lambda: nn.ModuleList([3]),
            TypeError,
            "ModuleList holds nn.Module objects, got int",
        ),
    }
)


@pytest.mark.parametrize("case", list(ERRORS))
def test_conv_pooling_and_recurrent_errors_say_what_to_fix(case: str) -> None:
    make, kind, message = ERRORS[case]
    with nb.using(backend="numpy", dtype="float64"), pytest.raises(kind) as info:
        make()
    assert info.value.args[0] == message


# -- sample A's survivors, second round -------------------------------------------------------
def test_a_cleared_buffer_does_not_hide_the_buffers_after_it(xp64: Any) -> None:
    module = nn.Module()
    module.register_buffer("empty", None)
    module.register_buffer("steps", xp64.zeros(()))
    module.register_buffer("again", None)
    module.register_buffer("total", xp64.ones(2))
    assert [name for name, _ in module.named_buffers()] == ["steps", "total"]


@pytest.mark.parametrize("make", [nn.init.zeros, nn.init.ones])
def test_init_fills_take_an_explicit_dtype(xp64: Any, make: Callable[..., Any]) -> None:
    a = make((2, 3), dtype="float32")
    assert tuple(a.shape) == (2, 3)
    assert str(a.dtype).endswith("float32")
    assert str(make(4).dtype).endswith("float64")  # the active default


def test_output_padding_equal_to_the_stride_on_either_axis_is_refused() -> None:
    with nb.using(backend="numpy", dtype="float64"):
        for out_pad in ((2, 0), (0, 2)):
            with pytest.raises(ArgumentError, match="must be smaller than the stride"):
                conv.conv_transpose2d(
                    _z(1, 1, 2, 2), _z(1, 1, 2, 2), stride=2, output_padding=out_pad
                )
        y = conv.conv_transpose2d(_z(1, 1, 2, 2), _z(1, 1, 2, 2), stride=2, output_padding=(1, 0))
        assert tuple(y.shape) == (1, 1, 5, 4)


def test_batch_norm_trains_on_a_batch_of_two(xp64: Any) -> None:
    layer = nn.BatchNorm1d(3)
    y = layer(xp64.asarray([[1.0, 2.0, 3.0], [3.0, 6.0, 9.0]]))
    np.testing.assert_allclose(_host(y), [[-1.0] * 3, [1.0] * 3], atol=1e-5)


def test_batch_norm_without_running_stats_uses_the_batch_in_eval_mode(xp64: Any) -> None:
    layer = nn.BatchNorm1d(2, track_running_stats=False).eval()
    assert layer.running_mean is None and layer.running_var is None
    assert list(layer.named_buffers()) == []
    y = layer(xp64.asarray([[0.0, 10.0], [2.0, 30.0]]))
    np.testing.assert_allclose(_host(y), [[-1.0, -1.0], [1.0, 1.0]], atol=1e-4)


def test_batch_norm_eval_gives_the_bias_its_gradient_with_the_weight_frozen(xp64: Any) -> None:
    layer = nn.BatchNorm1d(3).eval()
    layer.weight.requires_grad = False
    rng = np.random.default_rng(6)
    gy = rng.standard_normal((4, 3))
    y = layer(xp64.asarray(rng.standard_normal((4, 3))))
    (y * Tensor(xp64.asarray(gy))).sum().backward()
    assert layer.weight.grad is None
    np.testing.assert_allclose(_host(layer.bias.grad), gy.sum(0), rtol=1e-12)


def test_second_derivative_through_float16_dropout_computed_in_float32() -> None:
    """NumPy widens float16 dropout of this size to float32, keeping a float32 mask; its
    double backward casts the mask to the gradient's dtype."""
    rng = np.random.default_rng(7)
    with nb.using(backend="numpy", dtype="float16"):
        xp = nb.namespace()
        x = Tensor(xp.asarray(rng.standard_normal((32, 64)).astype(np.float16)), requires_grad=True)
        v = Tensor(xp.asarray(rng.standard_normal((32, 64)).astype(np.float16)), requires_grad=True)
        y = F.dropout(x, 0.5, training=True, generator=nb.random.Generator(3))
        (gx,) = nb.grad(y, [x], v, create_graph=True)
    kept = _host(y.data) != 0
    assert str(gx.dtype) == "float16"
    np.testing.assert_allclose(_host(gx.data), np.where(kept, 2 * _host(v.data), 0), rtol=1e-3)


def _without_in_place_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``Ops.write`` takes its caller's out-of-place construction, as on a backend
    whose arrays are immutable."""
    ops_class = importlib.import_module("nnbackend.backends.ops").Ops
    monkeypatch.setattr(ops_class, "write", lambda self, target, key, value, fallback: fallback())


@pytest.mark.parametrize("padding", [(1, 2), (2, 0), (0, 1)])
def test_padding_where_arrays_cannot_be_written_in_place(
    monkeypatch: pytest.MonkeyPatch, xp64: Any, padding: tuple[int, int]
) -> None:
    """Backends with immutable arrays pad by concatenation; it gives NumPy's pad."""
    x = xp64.asarray(np.arange(24.0).reshape(1, 2, 3, 4))
    want = np.pad(
        _host(x), ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2), constant_values=-5.0
    )
    _without_in_place_writes(monkeypatch)
    np.testing.assert_array_equal(_host(conv.pad2d(xp64, x, padding, -5.0)), want)


def test_conv_layers_agree_with_and_without_in_place_writes(
    monkeypatch: pytest.MonkeyPatch, xp64: Any
) -> None:
    """The out-of-place fallbacks of the convolutions and pools (backends with immutable
    arrays) give the same outputs and gradients as the in-place paths."""
    rng = np.random.default_rng(8)
    xh = rng.standard_normal((2, 2, 5, 5))
    layers = [
        nn.Conv2d(2, 3, 3, stride=2, padding=1),
        nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1),
        nn.ConvTranspose2d(2, 2, 2, stride=3, padding=(1, 0), output_padding=(2, 1)),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.AvgPool2d(2, padding=1),
    ]

    def run(layer: nn.Module) -> list[np.ndarray]:
        x = Tensor(xp64.asarray(xh), requires_grad=True)
        y = layer(x)
        proj = np.cos(np.arange(int(np.prod(tuple(y.shape))))).reshape(tuple(y.shape))
        (y * Tensor(xp64.asarray(proj))).sum().backward()
        return [_host(y), _host(x.grad)] + [_host(p.grad) for p in layer.parameters()]

    for layer in layers:
        in_place = run(layer)
        layer.zero_grad()
        with monkeypatch.context() as m:
            _without_in_place_writes(m)
            out_of_place = run(layer)
        for a, b in zip(in_place, out_of_place, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=repr(layer))


# -- sample B's survivors ------------------------------------------------------------------------
def test_attention_layers_hold_no_weights_before_their_first_call() -> None:
    assert nn.TimeAttention().attention_weights is None
    assert nn.Attention().attention_weights is None


def test_conv_weights_start_uniform_around_zero(xp64: Any) -> None:
    layer = nn.Conv2d(4, 8, 3, generator=nb.random.Generator(0))  # fan_in 36: U[-1/6, 1/6)
    weight = _host(layer.weight)  # 288 draws
    assert weight.min() < -0.1 and weight.max() > 0.1
    for p in (layer.weight, layer.bias):
        assert np.abs(_host(p)).max() <= 1 / 6


@pytest.mark.parametrize(
    "make",
    [
        nn.init.he_normal,
        nn.init.he_uniform,
        nn.init.xavier_normal,
        nn.init.xavier_uniform,
        lambda shape, dtype: nn.init.normal(shape, 0.1, dtype=dtype),
        lambda shape, dtype: nn.init.uniform(shape, -1.0, 1.0, dtype=dtype),
    ],
)
def test_every_initialiser_takes_an_explicit_dtype(xp64: Any, make: Callable[..., Any]) -> None:
    a = make((4, 3), dtype="float32")
    assert tuple(a.shape) == (4, 3) and str(a.dtype).endswith("float32")


def test_functional_dropout_drops_unless_told_it_is_not_training(xp64: Any) -> None:
    x = xp64.ones((20, 20))
    dropped = _host(F.dropout(x, 0.5, generator=nb.random.Generator(1)))
    assert 0 < int((dropped == 0).sum()) < 400
    assert set(np.unique(dropped)) == {0.0, 2.0}
    np.testing.assert_array_equal(_host(F.dropout(x, 0.5, training=False)), _host(x))


def test_layer_norm_second_derivatives_random_weight_and_bias(xp64: Any) -> None:
    rng = np.random.default_rng(9)
    x = xp64.asarray(rng.standard_normal((3, 4)))
    w = xp64.asarray(rng.standard_normal(4) + 1.5)
    b = xp64.asarray(rng.standard_normal(4))
    assert nb.gradgradcheck(lambda a, ww, bb: F.layer_norm(a, ww, bb) ** 2, x, w, b)
    x3 = xp64.asarray(rng.standard_normal((2, 2, 3)))
    w3 = xp64.asarray(rng.standard_normal(3) + 1.5)
    b3 = xp64.asarray(rng.standard_normal(3))
    assert nb.gradgradcheck(lambda a, ww, bb: F.layer_norm(a, ww, bb) ** 2, x3, w3, b3)
    # gradgradcheck checks the graph-built first derivatives only against themselves: they
    # must also equal the plain backward's.
    for xa, wa, ba in ((x, w, b), (x3, w3, b3)):
        leaves = [Tensor(a, requires_grad=True) for a in (xa, wa, ba)]
        v = Tensor(xp64.asarray(rng.standard_normal(tuple(xa.shape))))
        plain = nb.grad(F.layer_norm(*leaves), leaves, v)
        graph = nb.grad(F.layer_norm(*leaves), leaves, v, create_graph=True)
        for p, g in zip(plain, graph, strict=True):
            np.testing.assert_allclose(_host(g), _host(p), rtol=1e-10, atol=1e-12)


def test_more_errors_say_what_to_fix() -> None:
    with nb.using(backend="numpy", dtype="float64"):
        xp = nb.namespace()
        with pytest.raises(ArgumentError) as info:
            conv.conv2d(_z(1, 1, 3, 3), _z(1, 1, 1, 1), padding=-1)
        assert info.value.args[0] == "padding must be integers >= 0, got -1"
        with pytest.raises(ArgumentError) as info:
            conv.conv_transpose2d(_z(1, 3, 3, 3), _z(3, 1, 1, 1), groups=2)
        assert info.value.args[0] == (
            "conv_transpose2d: in_channels (3) must be divisible by groups (2)"
        )
        with pytest.raises(ArgumentError) as info:
            pooling.adaptive_avg_pool2d(_z(1, 1, 2, 2), 0)
        assert info.value.args[0] == "output_size must be integers >= 1, got 0"
        with pytest.raises(DtypeError) as info:
            nn.MatMul(xp.ones((3, 2)))(xp.ones((2, 3), dtype=xp.float32))
        assert info.value.args[0] == (
            "MatMul(weight_shape=(3, 2)): input dtype float32 differs from the layer's dtype "
            "float64; cast the input (xp.astype) or build the layer under the input's dtype "
            "(nnbackend.using(dtype=...))"
        )
        layer = nn.Linear(3, 2)
        with pytest.raises(CheckpointError) as info:
            layer.load_state_dict({"weight": xp.ones((3, 2), dtype=xp.float32), "bias": xp.ones(2)})
        assert info.value.args[0] == (
            "entry 'weight' has dtype float32; the parameter has dtype float64 (cast the "
            "checkpoint first: nnbackend never converts silently)"
        )


def test_batch_norm_refuses_running_statistics_it_cannot_update(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with nb.using(backend="numpy", dtype="float64"):
        mean, var = _z(2), _z(2) + 1.0
        monkeypatch.setattr(ops_for(backend_for(mean)[0], mean), "inplace", False)
        with pytest.raises(ArgumentError) as info:
            normalization.batch_norm(_z(3, 2), mean, var, training=True)
    assert info.value.args[0] == (
        "batch_norm: running_mean is a numpy array, which cannot be updated in place (the "
        "backend's arrays are immutable); pass the running statistics as Tensors "
        "(nb.Tensor(array)), whose .data is rebound, or use nn.BatchNorm"
    )


def test_a_layer_call_is_its_forward() -> None:
    """Calling a module runs its class's forward directly (one frame per layer)."""
    assert nn.Linear.__call__ is nn.Linear.forward
    assert nn.Sequential.__call__ is nn.Sequential.forward

    class Own(nn.Module):
        def forward(self, x: Any) -> Any:
            return x

        def __call__(self, x: Any) -> Any:
            return ("own", x)

    assert Own()(1) == ("own", 1)
    assert _Net.__call__ is nn.Module.__call__  # no forward of its own: the base call


def test_add_module_binds_the_attribute_and_shared_buffers_are_listed_once(xp64: Any) -> None:
    outer = nn.Module()
    inner = nn.Linear(2, 2)
    outer.add_module("enc", inner)
    assert outer.enc is inner
    shared = xp64.zeros(3)
    outer.register_buffer("stats", shared)
    inner.register_buffer("stats", outer.stats)  # the same Tensor under two names
    assert [name for name, _ in outer.named_buffers()] == ["stats"]


def test_group_norm_without_affine_and_with_its_own_eps(xp64: Any) -> None:
    rng = np.random.default_rng(10)
    xh = rng.standard_normal((2, 4, 3))
    layer = nn.GroupNorm(2, 4, eps=0.5, affine=False)
    assert list(layer.parameters()) == [] and layer.bias is None and layer.weight is None
    groups = xh.reshape(2, 2, -1)
    mean = groups.mean(-1, keepdims=True)
    var = groups.var(-1, keepdims=True)
    want = ((groups - mean) / np.sqrt(var + 0.5)).reshape(xh.shape)
    np.testing.assert_allclose(_host(layer(xp64.asarray(xh))), want, rtol=1e-10)


def test_negative_sampling_loss_in_float32(backend: str) -> None:
    """The labels are made in the scores' dtype (float32 here), not the active default
    float64: array_api_strict refuses to mix the two."""
    with nb.using(backend=backend, dtype="float32"):
        xp = nb.namespace()
        h = xp.ones((2, 3))
        w = xp.ones((5, 3)) * 0.1
        target = xp.asarray([0, 1])
        negatives = xp.asarray([[2, 3], [3, 4]])
    with nb.using(backend=backend, dtype="float64"):
        loss = sampling.negative_sampling_loss(h, w, target, negatives)
    assert str(loss.dtype).endswith("float32")
    score = 1 / (1 + np.exp(-0.3))  # every score is h . w = 0.3
    want = -np.log(score) - 2 * np.log(1 - score)
    np.testing.assert_allclose(float(_host(loss)), want, rtol=1e-5)


def test_summary_counts_frozen_parameters_apart(xp64: Any) -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    model[0].weight.requires_grad = False
    assert model.summary(input_shape=(2,)).splitlines()[-1] == (
        "parameters: 13 (trainable 7); float64: 104 bytes"
    )


# -- graph-built first derivatives equal the plain backward's, for every fused node -----------
def _graph_cases(xp: Any, rng: np.random.Generator) -> dict[str, tuple[Callable[..., Any], list]]:
    """Each fused node's function and its inputs."""

    def r(*shape: int) -> Any:
        return xp.asarray(rng.standard_normal(shape))

    soft = xp.asarray(rng.uniform(0.1, 0.6, (4, 3)))  # rows that do not sum to 1
    labels = xp.asarray([0, 2, 1, 2])
    masked = xp.asarray([0, -1, 1, 2])
    raw_x = r(3, 4)  # a plain array: the node records no input Tensor for it
    return {
        "linear-nd": (F.linear, [r(2, 3, 4), r(4, 2), r(2)]),
        "linear-no-bias": (F.linear, [r(5, 4), r(4, 3)]),
        "matmul": (F.matmul, [r(3, 4), r(4, 2)]),
        "sigmoid": (F.sigmoid, [r(3, 4)]),
        "tanh": (F.tanh, [r(3, 4)]),
        "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), [r(3, 4)]),
        "softmax": (lambda x: F.softmax(x, axis=0), [r(3, 4)]),
        "log_softmax": (F.log_softmax, [r(3, 4)]),
        "softmax_ce-labels": (lambda x: F.softmax_cross_entropy(x, labels), [r(4, 3)]),
        "softmax_ce-soft": (F.softmax_cross_entropy, [r(4, 3), soft]),
        "softmax_ce-ignore": (
            lambda x: F.softmax_cross_entropy(x, masked, ignore_index=-1),
            [r(4, 3)],
        ),
        "sigmoid_ce": (F.sigmoid_cross_entropy, [r(4, 3), soft]),
        "mse": (F.mse_loss, [r(4, 3), r(4, 3)]),
        "dropout": (
            lambda x: F.dropout(x, 0.4, generator=nb.random.Generator(5)),
            [r(4, 3)],
        ),
        "embedding": (
            lambda w: F.embedding(xp.asarray([[0, 2], [2, 1]]), w),
            [r(3, 4)],
        ),
        "layer_norm": (lambda x, w, b: F.layer_norm(x, w, b), [r(2, 3, 4), r(4), r(4)]),
        "layer_norm-raw-input": (
            lambda w, b: F.layer_norm(raw_x, w, b),
            [r(4), r(4)],
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "linear-nd", "linear-no-bias", "matmul", "sigmoid", "tanh", "leaky_relu", "softmax",
        "log_softmax", "softmax_ce-labels", "softmax_ce-soft", "softmax_ce-ignore",
        "sigmoid_ce", "mse", "dropout", "embedding", "layer_norm", "layer_norm-raw-input",
    ],
)  # fmt: skip
def test_graph_first_derivatives_equal_the_plain_ones(xp64: Any, case: str) -> None:
    """``create_graph=True`` runs each node's ``graph_backward``, a second implementation of
    its gradient: it must give the plain backward's numbers (gradgradcheck only checks the
    graph against itself), with random values, N-D inputs and soft targets."""
    rng = np.random.default_rng(20)
    cases = _graph_cases(xp64, rng)
    fn, arrays = cases[case]
    v = None
    results = []
    for create_graph in (False, True):
        leaves = [Tensor(a, requires_grad=True) for a in arrays]
        y = fn(*leaves)
        if v is None:
            v = xp64.asarray(rng.standard_normal(tuple(y.shape)))
        grads = nb.grad(y, leaves, Tensor(v), create_graph=create_graph)
        results.append([_host(g) for g in grads])
    for plain, graph in zip(*results, strict=True):
        np.testing.assert_allclose(graph, plain, rtol=1e-10, atol=1e-12, err_msg=case)


def test_mixed_policy_widens_only_float16_predictions_in_losses() -> None:
    """Under "mixed16" a loss sums float16 predictions in float32; wider ones are left alone."""
    xp = nb.namespace("numpy", "float64")
    labels = xp.asarray([0, 1, 1])
    with nb.using(dtype="mixed16"):
        wide = F.softmax_cross_entropy(xp.ones((3, 2)), labels)
        narrow = F.softmax_cross_entropy(xp.ones((3, 2), dtype=xp.float16), labels)
    assert str(wide.dtype) == "float64"
    assert str(narrow.dtype) == "float32"
    np.testing.assert_allclose(float(_host(wide)), np.log(2.0), rtol=1e-12)


# -- sample C's survivors ------------------------------------------------------------------------
def test_module_list_item_assignment_replaces_the_layer(xp64: Any) -> None:
    layers = nn.ModuleList([nn.ReLU(), nn.Tanh()])
    new = nn.Sigmoid()
    layers[1] = new
    assert list(layers) == [layers[0], new]
    assert dict(layers.named_children())["1"] is new


def test_still_more_errors_say_what_to_fix() -> None:
    with nb.using(backend="numpy", dtype="float64"):
        cases: list[tuple[Callable[[], Any], type[Exception], str]] = [
            (
                lambda: nn.Conv2d(1, 1, 3, padding=-1),
                ArgumentError,
                "padding must be integers >= 0, got -1",
            ),
            (
                lambda: nn.ConvTranspose2d(2, 1, 1)(_z(1, 1, 2, 2)),
                ShapeError,
                "ConvTranspose2d(2, 1, kernel_size=(1, 1), stride=(1, 1)): conv_transpose2d: input "
                "has 1 channels (shape (1, 1, 2, 2)), the weight of shape (2, 1, 1, 1) with "
                "groups=1 expects 2",
            ),
            (
                lambda: F.mse_loss(_z(2, 3), _z(3, 2)),
                ShapeError,
                "mse_loss: shapes (2, 3) and (3, 2) differ",
            ),
            (
                lambda: pooling.adaptive_avg_pool2d(_z(2, 3), 1),
                ShapeError,
                "adaptive_avg_pool2d: input must be a batch of images (N, C, H, W), got shape "
                "(2, 3)",
            ),
            (
                lambda: normalization.batch_norm(_z(2, 3), _z(3), None),
                ArgumentError,
                "batch_norm: evaluation (training=False) needs running_mean and running_var",
            ),
            (
                lambda: nn.EmbeddingDot(5),
                ArgumentError,
                "EmbeddingDot needs num_embeddings and embedding_dim, or weight",
            ),
            (
                lambda: nn.GRU(2, 3).load_state_dict(
                    {"weight_ih_l0": _z(9, 2), "weight_hh_l0": _z(9, 3)}, layout="torch"
                ),
                ArgumentError,
                "the book's GRU and PyTorch's GRU are different functions (PyTorch applies the "
                "reset gate after the hidden product and swaps z and 1-z): no layout converter",
            ),
            (
                lambda: nn.Linear(2, 3).summary(input_shape=("a",)),
                ArgumentError,
                "input_shape is the shape of one sample, a tuple of ints, got ('a',)",
            ),
        ]
        for make, kind, message in cases:
            with pytest.raises(kind) as info:
                make()
            assert info.value.args[0] == message


def test_a_layer_on_one_backend_named_when_called_with_another() -> None:
    with nb.using(backend="array_api_strict", dtype="float64"):
        layer = nn.Linear(2, 3)
    with pytest.raises(nb.errors.BackendMismatchError) as info:
        layer(_z(1, 2))
    assert info.value.args[0] == (
        "the input is an array of backend 'numpy' but the layer's weights are on backend "
        "'array_api_strict'; move the data first with nnbackend.to_backend(x, like=model) "
        "(Trainer.fit/evaluate/predict do it for you)"
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_layer_of_another_backend_never_compares_its_dtypes(dtype: str) -> None:
    """A NumPy input to an array_api_strict layer is a backend mismatch, of either dtype,
    without array_api_strict's warning about comparing its dtypes with NumPy's."""
    with nb.using(backend="array_api_strict", dtype="float32"):
        layer = nn.Linear(2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(nb.errors.BackendMismatchError):
            layer(np.ones((1, 2), dtype=dtype))


@pytest.mark.parametrize("masked", [False, True])
def test_softmax_cross_entropy_shifts_each_row_by_its_own_maximum(xp64: Any, masked: bool) -> None:
    """Rows a thousand apart: one shift for the whole batch would underflow the low row."""
    logits = xp64.asarray([[1000.0, 999.0], [-1000.0, -1001.0]])
    labels = xp64.asarray([0, 0])
    loss = F.softmax_cross_entropy(logits, labels, ignore_index=-1 if masked else None)
    np.testing.assert_allclose(float(_host(loss)), np.log1p(np.exp(-1.0)), rtol=1e-12)


@pytest.mark.parametrize("make", [nn.init.he_uniform, nn.init.xavier_uniform])
def test_uniform_initialisers_are_centred(xp64: Any, make: Callable[..., Any]) -> None:
    values = _host(make((20, 20), generator=nb.random.Generator(2)))
    assert values.min() < -0.05 and values.max() > 0.05
    assert abs(values.mean()) < 0.05


def test_softmax_layer_normalises_along_its_axis(xp64: Any) -> None:
    x = xp64.asarray(np.arange(6.0).reshape(2, 3))
    np.testing.assert_allclose(_host(nn.Softmax(axis=0)(x)).sum(0), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(_host(nn.Softmax()(x)).sum(1), [1.0, 1.0])


def test_an_inherited_own_call_is_kept_by_a_subclass_with_a_forward() -> None:
    class Wrapped(nn.Module):
        def __call__(self, x: Any) -> Any:
            return ("wrapped", self.forward(x))

        def forward(self, x: Any) -> Any:
            return x

    class Child(Wrapped):
        def forward(self, x: Any) -> Any:
            return x + 1

    assert Child()(1) == ("wrapped", 2)


@pytest.mark.parametrize(
    "make",
    [
        lambda g: nn.RNN(3, 4, generator=g).weight_x,
        lambda g: nn.LSTM(3, 2, generator=g).weight_h,
        lambda g: nn.EmbeddingDot(5, 3, generator=g).weight,
    ],
)
def test_layers_draw_their_weights_from_the_generator_given(
    xp64: Any, make: Callable[[Any], Any]
) -> None:
    first = _host(make(nb.random.Generator(4)))
    nb.random.default_generator().normal((7,))  # moves the module-level stream
    np.testing.assert_array_equal(_host(make(nb.random.Generator(4))), first)


def test_a_stateful_layer_starts_from_the_state_set(xp64: Any) -> None:
    layer = nn.RNN(2, 3, stateful=True)
    x = xp64.asarray(np.ones((1, 2, 2)))
    h0 = xp64.asarray(np.full((1, 3), 0.5))
    layer.set_state(Tensor(h0))
    assert layer.state is not None
    _, from_state = layer(x)
    fresh = nn.RNN(2, 3)
    fresh.load_state_dict(layer.state_dict())
    _, from_h0 = fresh(x, h0)
    np.testing.assert_allclose(_host(from_state), _host(from_h0), rtol=1e-12)


def test_linear_takes_plain_arrays_as_weights(xp64: Any) -> None:
    x, w, b = xp64.ones((2, 3)), xp64.ones((3, 4)), xp64.zeros(4)
    np.testing.assert_allclose(_host(F.linear(x, w, b)), np.full((2, 4), 3.0))


def test_mixed_policy_casts_operands_and_float_targets() -> None:
    xp = nb.namespace("numpy", "float32")
    with nb.using(backend="numpy", dtype="mixed16"):
        y = F.matmul(xp.ones((2, 3)), xp.ones((3, 2)))
        assert str(y.dtype) == "float16"
        pred = Tensor(xp.asarray(np.full((2, 2), 0.5, dtype=np.float16)), requires_grad=True)
        target = Tensor(xp.asarray(np.zeros((2, 2), dtype=np.float16)), requires_grad=True)
        loss = F.mse_loss(pred, target)
        loss.backward()
        raw = F.mse_loss(pred, xp.asarray(np.zeros((2, 2), dtype=np.float64)))
    assert str(loss.dtype) == "float32" and str(raw.dtype) == "float32"
    assert target.grad is not None and str(target.grad.dtype) == "float16"
    np.testing.assert_allclose(_host(target.grad).astype(float), np.full((2, 2), -0.25))


def test_max_pooling_with_one_window_element_returns_a_new_array() -> None:
    """A 1x1 max pool's output holds its own copy: a view of the input would let an in-place
    write to one change the other."""
    with nb.using(backend="numpy", dtype="float64"):
        x = nb.namespace().asarray(np.arange(8.0).reshape(1, 2, 2, 2))
        y = pooling.max_pool2d(x, 1)
    np.testing.assert_array_equal(_host(y), _host(x))
    assert not np.shares_memory(y.data, x)


# -- sample D's survivors (checked by hand after D's run) ----------------------------------------
def test_transposed_conv_argument_errors_name_the_argument() -> None:
    with nb.using(backend="numpy", dtype="float64"):
        for kwargs, message in (
            ({"stride": 0}, "stride must be integers >= 1, got 0"),
            ({"padding": -1}, "padding must be integers >= 0, got -1"),
        ):
            with pytest.raises(ArgumentError) as info:
                conv.conv_transpose2d(_z(1, 1, 2, 2), _z(1, 1, 1, 1), **kwargs)
            assert info.value.args[0] == message


def test_summary_of_a_model_without_parameters() -> None:
    class Identity(nn.Module):
        def forward(self, x: Any) -> Any:
            return x

    with nb.using(backend="numpy", dtype="float64"):
        last = Identity().summary(input_shape=(2,)).splitlines()[-1]
    assert last == "parameters: 0 (trainable 0); no arrays"


@pytest.mark.parametrize(
    "make",
    [
        lambda g: nn.Conv2d(2, 3, 2, generator=g).bias,
        lambda g: nn.ConvTranspose2d(2, 3, 2, generator=g).weight,
        lambda g: nn.Embedding(4, 3, generator=g).weight,
    ],
)
def test_more_layers_draw_from_the_generator_given(xp64: Any, make: Callable[[Any], Any]) -> None:
    first = _host(make(nb.random.Generator(6)))
    nb.random.default_generator().normal((7,))  # moves the module-level stream
    np.testing.assert_array_equal(_host(make(nb.random.Generator(6))), first)


def test_functional_batch_norm_updates_running_statistics_with_momentum_a_tenth(
    xp64: Any,
) -> None:
    mean, var = Tensor(xp64.zeros(2)), Tensor(xp64.ones(2))
    x = xp64.asarray([[1.0, 2.0], [3.0, 6.0]])
    normalization.batch_norm(x, mean, var, training=True)
    np.testing.assert_allclose(_host(mean), [0.2, 0.4], rtol=1e-12)
    np.testing.assert_allclose(_host(var), [0.9 + 0.1 * 2.0, 0.9 + 0.1 * 8.0], rtol=1e-12)


def test_dropout_outside_training_returns_a_tensor_of_the_input(xp64: Any) -> None:
    x = xp64.ones((2, 3))
    for out in (F.dropout(x, 0.5, training=False), F.dropout(x, 0.0)):
        assert isinstance(out, Tensor)
        np.testing.assert_array_equal(_host(out), np.ones((2, 3)))


def test_group_norm_without_affine_parameters_goes_backward(xp64: Any) -> None:
    rng = np.random.default_rng(21)
    x = Tensor(xp64.asarray(rng.standard_normal((2, 4, 3))), requires_grad=True)
    y = nn.GroupNorm(2, 4, affine=False)(x)
    (y * Tensor(xp64.asarray(rng.standard_normal((2, 4, 3))))).sum().backward()
    assert tuple(x.grad.shape) == (2, 4, 3)
    assert np.abs(_host(x.grad).reshape(2, 2, -1).sum(-1)).max() < 1e-12  # mean-free groups


def test_rnn_whose_final_state_gets_no_gradient(xp64: Any) -> None:
    layer = nn.RNN(2, 3)
    x = Tensor(xp64.asarray(np.ones((1, 2, 2))), requires_grad=True)
    hs, _ = layer(x)
    hs.sum().backward()
    assert tuple(x.grad.shape) == (1, 2, 2)
    assert layer.weight_x.grad is not None


@pytest.mark.parametrize(
    "loss, target",
    [
        (nn.SoftmaxCrossEntropy(), [0, 1]),
        (nn.MSELoss(), [[0.0, 0.0, 0.0]] * 2),
        (nn.functional.sigmoid_cross_entropy, [[0.0, 1.0, 0.0]] * 2),
    ],
    ids=["softmax_cross_entropy", "mse", "sigmoid_cross_entropy"],
)
def test_a_loss_given_a_list_of_targets_names_it(loss: Any, target: Any) -> None:
    """Targets as a Python list raised AttributeError ('list' object has no attribute
    'ndim') from inside the loss: a typed error that says which argument, and the fix."""
    y = Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(nb.errors.BackendMismatchError, match=r"targets|labels") as info:
        loss(y, target)
    assert "builtins.list" in str(info.value) and "to_backend" in str(info.value)


def test_mse_against_a_python_number_names_it() -> None:
    """(It raised AttributeError: 'float' object has no attribute 'shape'.)"""
    y = Tensor(np.full((2, 3), 2.0), requires_grad=True)
    with pytest.raises(nb.errors.BackendMismatchError, match=r"mse_loss \(targets\)"):
        nn.MSELoss()(y, 0.0)
