"""Every layer with parameters, gradient-checked as users call it (the Module, on the active
backend in float64) with random weights and biases, never the default ones and zeros, and
with N-D inputs where the layer accepts them: a backward that forgets a weight, transposes a
square matrix or sums over the wrong axes passes with unit weights or 2-D inputs, and fails
here (issue #21). Layers without parameters get the N-D check too.

The numerical gradient is a central difference of ``sum(layer(x) * R)`` (``R`` a fixed
random projection) in float64, entry by entry, computed on the host from the layer itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend import nn, registry
from nnbackend.autograd.tensor import Tensor

STEP = 1e-6
TOL = 1e-6  # central differences in float64 with step 1e-6: errors ~1e-9 relative


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, Tensor) else a
    return np.array(registry.get(registry.backend_of(a)).to_host(a), copy=True)


def _randomise(module: nn.Module, xp: Any, rng: np.random.Generator) -> None:
    """Every parameter of ``module`` to random values away from 0 and 1."""
    for p in module.parameters():
        p.data = xp.asarray(rng.standard_normal(tuple(p.data.shape)) * 0.8 + 0.3)


def _check(module: nn.Module, x: Any, xp: Any, *, input_grad: bool = True) -> None:
    """Analytic gradients of ``sum(module(x) * R)`` against central differences, for every
    parameter and (floating ``x``) the input."""
    rng = np.random.default_rng(99)
    out = module(x)
    proj_host = rng.standard_normal(tuple(out.shape))
    proj = xp.asarray(proj_host)

    def value() -> float:
        with nb.no_grad():
            return float(np.sum(_host(module(x_leaf if input_grad else x)) * proj_host))

    x_leaf = Tensor(x, requires_grad=True) if input_grad else x
    for p in module.parameters():
        p.grad = None
    (module(x_leaf) * Tensor(proj)).sum().backward()
    targets: list[tuple[str, Any, Callable[[Any], None]]] = []
    for name, p in module.named_parameters():
        targets.append((name, p, lambda v, p=p: setattr(p, "data", v)))
    if input_grad:
        targets.append(("input", x_leaf, lambda v: setattr(x_leaf, "data", v)))
    for name, holder, put in targets:
        analytic = _host(holder.grad)
        base = _host(holder.data)
        numeric = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            values = []
            for sign in (1.0, -1.0):
                moved = base.copy()
                moved[index] += sign * STEP
                put(xp.asarray(moved))
                values.append(value())
            put(xp.asarray(base))
            numeric[index] = (values[0] - values[1]) / (2 * STEP)
        scale = max(1.0, float(np.abs(numeric).max()))
        np.testing.assert_allclose(analytic, numeric, rtol=TOL, atol=TOL * scale, err_msg=name)


@pytest.mark.parametrize("lead", [(5,), (2, 3), (2, 1, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_random_weights_nd_input(xp64: Any, lead: tuple[int, ...], bias: bool) -> None:
    rng = np.random.default_rng(len(lead))
    layer = nn.Linear(4, 3, bias=bias)
    _randomise(layer, xp64, rng)
    _check(layer, xp64.asarray(rng.standard_normal((*lead, 4))), xp64)


@pytest.mark.parametrize("lead", [(5,), (2, 3)])
def test_matmul_random_square_weight_nd_input(xp64: Any, lead: tuple[int, ...]) -> None:
    """A square weight: a backward that forgets a transpose keeps the shapes and is caught."""
    rng = np.random.default_rng(3)
    layer = nn.MatMul(xp64.asarray(rng.standard_normal((4, 4))))
    _check(layer, xp64.asarray(rng.standard_normal((*lead, 4))), xp64)


@pytest.mark.parametrize("lead", [(4,), (2, 3), (2, 2, 2)])
def test_layer_norm_random_weight_and_bias_nd_input(xp64: Any, lead: tuple[int, ...]) -> None:
    rng = np.random.default_rng(4)
    layer = nn.LayerNorm(5)
    _randomise(layer, xp64, rng)
    assert not np.allclose(_host(layer.weight), 1.0)
    _check(layer, xp64.asarray(rng.standard_normal((*lead, 5))), xp64)


def test_embedding_random_weight_nd_indices_with_repeats(xp64: Any) -> None:
    rng = np.random.default_rng(5)
    layer = nn.Embedding(6, 3)
    _randomise(layer, xp64, rng)
    indices = xp64.asarray(np.array([[0, 5, 2], [2, 2, 4]], dtype=np.int64))
    _check(layer, indices, xp64, input_grad=False)


def test_a_stack_of_every_parametrised_layer(xp64: Any) -> None:
    """The layers composed, with N-D activations between them: each layer's gradient must
    use the gradients it receives, not assume ones."""
    rng = np.random.default_rng(6)
    model = nn.Sequential(
        nn.Linear(3, 4), nn.Tanh(), nn.LayerNorm(4), nn.MatMul(xp64.asarray(np.eye(4))),
        nn.LeakyReLU(0.2), nn.Linear(4, 2), nn.Sigmoid(),
    )  # fmt: skip
    _randomise(model, xp64, rng)
    _check(model, xp64.asarray(rng.standard_normal((2, 3, 3))), xp64)


# -- N-D inputs: the same numbers as the rows taken one 2-D batch at a time --------------------
LAYERS: dict[str, Callable[[], nn.Module]] = {
    "Linear": lambda: nn.Linear(4, 3),
    "Linear-nobias": lambda: nn.Linear(4, 3, bias=False),
    "LayerNorm": lambda: nn.LayerNorm(4),
    "Sigmoid": nn.Sigmoid,
    "Tanh": nn.Tanh,
    "ReLU": nn.ReLU,
    "LeakyReLU": lambda: nn.LeakyReLU(0.1),
    "Softmax": nn.Softmax,
    "Dropout-eval": lambda: nn.Dropout(0.5).eval(),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
@given(lead=st.lists(st.integers(1, 3), min_size=1, max_size=3))
def test_nd_input_equals_the_flattened_rows(xp64: Any, name: str, lead: list[int]) -> None:
    """Output and gradients (input and parameters) of a ``(*lead, 4)`` input equal those of
    the same rows as one ``(prod(lead), 4)`` batch."""
    rng = np.random.default_rng(sum(lead))
    layer = LAYERS[name]()
    _randomise(layer, xp64, rng)
    x_host = rng.standard_normal((*lead, 4))
    results = []
    for shape in (x_host.shape, (-1, 4)):
        x = Tensor(xp64.asarray(x_host.reshape(shape)), requires_grad=True)
        for p in layer.parameters():
            p.grad = None
        y = layer(x)
        proj = np.reshape(np.arange(_host(y).size, dtype=np.float64) % 5 - 2.0, tuple(y.shape))
        (y * Tensor(xp64.asarray(proj))).sum().backward()
        grads = [_host(p.grad) for p in layer.parameters()]
        results.append((_host(y).reshape(-1), _host(x.grad).reshape(-1), grads))
    (y_nd, gx_nd, gp_nd), (y_2d, gx_2d, gp_2d) = results
    np.testing.assert_allclose(y_nd, y_2d, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(gx_nd, gx_2d, rtol=1e-12, atol=1e-12)
    for a, b in zip(gp_nd, gp_2d, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


# -- normalization, convolution and recurrent layers, random weights ---------------------------
@pytest.mark.parametrize("shape", [(4, 3), (4, 3, 2)])
def test_batch_norm_1d_training_random_weight_and_bias(xp64: Any, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(11)
    layer = nn.BatchNorm1d(3)
    _randomise(layer, xp64, rng)
    _check(layer, xp64.asarray(rng.standard_normal(shape)), xp64)


def test_batch_norm_2d_training_random_weight_and_bias(xp64: Any) -> None:
    rng = np.random.default_rng(12)
    layer = nn.BatchNorm2d(2)
    _randomise(layer, xp64, rng)
    _check(layer, xp64.asarray(rng.standard_normal((3, 2, 2, 2))), xp64)


def test_batch_norm_eval_random_weight_bias_and_running_statistics(xp64: Any) -> None:
    rng = np.random.default_rng(13)
    layer = nn.BatchNorm1d(3)
    _randomise(layer, xp64, rng)
    layer.running_mean = xp64.asarray(rng.standard_normal(3))
    layer.running_var = xp64.asarray(rng.uniform(0.5, 2.0, 3))
    layer.eval()
    _check(layer, xp64.asarray(rng.standard_normal((4, 3, 2))), xp64)


def test_batch_norm_without_affine_parameters(xp64: Any) -> None:
    rng = np.random.default_rng(14)
    _check(nn.BatchNorm1d(3, affine=False), xp64.asarray(rng.standard_normal((5, 3))), xp64)


@pytest.mark.parametrize("shape", [(2, 4, 3), (2, 4, 2, 2)])
def test_group_norm_random_weight_and_bias(xp64: Any, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(15)
    layer = nn.GroupNorm(2, 4)
    _randomise(layer, xp64, rng)
    _check(layer, xp64.asarray(rng.standard_normal(shape)), xp64)


CONVS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "conv": (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 2, 5, 5)),
    "conv-groups-dilation": (lambda: nn.Conv2d(2, 4, 2, groups=2, dilation=2), (1, 2, 5, 4)),
    "conv-rect": (lambda: nn.Conv2d(1, 2, (3, 1), stride=(1, 2), padding=(0, 1)), (1, 1, 4, 5)),
    "transpose": (
        lambda: nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1),
        (1, 2, 3, 3),
    ),
    "transpose-groups": (lambda: nn.ConvTranspose2d(2, 4, 2, groups=2, bias=False), (1, 2, 2, 3)),
}


@pytest.mark.parametrize("name", sorted(CONVS))
def test_convolutions_random_weights_and_bias(xp64: Any, name: str) -> None:
    rng = np.random.default_rng(16)
    make, shape = CONVS[name]
    layer = make()
    _randomise(layer, xp64, rng)
    _check(layer, xp64.asarray(rng.standard_normal(shape)), xp64)


class _Sequence(nn.Module):
    """A recurrent layer from a trainable initial state: its output sequence, the final
    hidden state (and cell) added in, so every output's gradient path is checked."""

    def __init__(self, layer: nn.Module, xp: Any, hidden: int, lstm: bool) -> None:
        super().__init__()
        self.layer = layer
        self.h0 = nn.Parameter(xp.zeros((2, hidden)))
        self.c0 = nn.Parameter(xp.zeros((2, hidden))) if lstm else None
        self.lstm = lstm

    def forward(self, x: Any) -> Any:
        if self.lstm:
            hs, (h, c) = self.layer(x, (self.h0, self.c0))
            return hs + (h + c * 0.5).reshape((2, 1, -1))
        hs, h = self.layer(x, self.h0)
        return hs + h.reshape((2, 1, -1))


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_recurrent_layers_random_weights_and_initial_state(xp64: Any, kind: str) -> None:
    rng = np.random.default_rng(17)
    layer = getattr(nn, kind)(3, 2)
    model = _Sequence(layer, xp64, 2, kind == "LSTM")
    _randomise(model, xp64, rng)
    _check(model, xp64.asarray(rng.standard_normal((2, 3, 3))), xp64)
