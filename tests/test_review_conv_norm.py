"""Review of the convolution, pooling and normalisation layers: user mistakes that escaped as
bare Python errors (or were silently accepted), and state that was silently lost. Each test
failed before its fix."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, registry
from nnbackend.errors import ArgumentError, BackendMismatchError, DtypeError, ShapeError
from nnbackend.nn import conv as C
from nnbackend.nn import normalization as N
from nnbackend.nn import pooling as P

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _host(a: Any) -> np.ndarray:
    if isinstance(a, nb.Tensor):
        a = a.data
    return np.asarray(registry.get(registry.backend_of(a)).to_host(a), dtype=np.float64)


def test_conv_bias_of_the_wrong_length_is_a_shape_error(xp: Any) -> None:
    """A bias must have one value per output channel: a length-1 bias was broadcast silently
    over all the channels, other lengths raised NumPy's bare ValueError (torch's RuntimeError
    on the torch backend), a 0-d bias an IndexError."""
    x = xp.ones((2, 3, 5, 5))
    w, wt = xp.ones((4, 3, 3, 3)), xp.ones((3, 2, 3, 3))  # conv: 4 outputs; transpose: 2
    for bias in (xp.ones((1,)), xp.ones((3,)), xp.asarray(1.0)):
        with pytest.raises(ShapeError, match=r"bias (has shape .*\(4,\)|must be 1-D)"):
            C.conv2d(x, w, bias)
        with pytest.raises(ShapeError, match=r"bias (has shape .*\(2,\)|must be 1-D)"):
            C.conv_transpose2d(x, wt, bias)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_kernel_that_does_not_fit_is_a_shape_error_on_every_backend(backend: str) -> None:
    """The torch backend runs torch's own convolution, which raised its RuntimeError where the
    portable path raises ShapeError (and Conv2d adds its repr to ShapeError only)."""
    with nb.using(backend=backend, dtype="float64"):
        xp = nb.namespace()
        x = xp.ones((1, 3, 4, 4))
        with pytest.raises(ShapeError, match="does not fit"):
            C.conv2d(x, xp.ones((2, 3, 5, 5)))
        with pytest.raises(ShapeError, match=r"Conv2d\(3, 2"):
            nn.Conv2d(3, 2, 5)(x)
        with pytest.raises(ShapeError, match="leaves no output"):
            C.conv_transpose2d(x, xp.ones((3, 2, 1, 1)), padding=3)


def test_group_norm_checks_its_groups_and_per_channel_arrays() -> None:
    """num_groups=0 raised ZeroDivisionError; a weight of the wrong length was broadcast
    silently (GroupNorm(1, 1) on three channels) or raised NumPy's bare ValueError."""
    x = np.ones((2, 3, 4, 4))
    with pytest.raises(ArgumentError, match="num_groups"):
        N.group_norm(x, 0)
    with pytest.raises(ShapeError, match=r"weight has shape \(1,\)"):
        nn.GroupNorm(1, 1)(x)
    with pytest.raises(ShapeError, match=r"weight has shape \(2,\)"):
        nn.GroupNorm(1, 2)(np.ones((2, 4, 3, 3)))
    with pytest.raises(ShapeError, match="bias"):
        N.group_norm(x, 3, np.ones(3), np.ones(1))
    with pytest.raises(BackendMismatchError, match="list"):
        nn.GroupNorm(1, 3)([[1.0, 2.0, 3.0]])
    for groups, channels in ((2.5, 5), (2, -2)):
        with pytest.raises(ArgumentError, match="GroupNorm"):
            nn.GroupNorm(groups, channels)


def test_group_norm_of_an_empty_batch_is_empty_like_torch() -> None:
    """An empty batch raised NumPy's "cannot reshape array of size 0" ValueError."""
    x = nb.Tensor(np.zeros((0, 4, 3, 3)), requires_grad=True)
    y = N.group_norm(x, 2, np.ones(4), np.zeros(4))
    assert tuple(y.shape) == tuple(TF.group_norm(torch.zeros(0, 4, 3, 3), 2).shape)
    y.sum().backward()
    assert tuple(x.grad.shape) == (0, 4, 3, 3)


def test_batch_norm_momentum_none_is_an_argument_error() -> None:
    """PyTorch's momentum=None (cumulative average) raised a bare TypeError from a comparison."""
    with pytest.raises(ArgumentError, match="momentum"):
        nn.BatchNorm2d(3, momentum=None)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match="num_features"):
        nn.BatchNorm2d(-1)


def test_batch_norm_with_one_running_statistic_is_an_error() -> None:
    """Training with running_mean but no running_var left running_mean silently un-updated
    (torch raises); the estimate it was given for tracking was lost."""
    x = np.asarray([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    with pytest.raises(ValueError, match="both be None"):
        TF.batch_norm(torch.tensor(x), torch.zeros(3), None, training=True)
    for mean, var in ((np.zeros(3), None), (None, np.ones(3))):
        with pytest.raises(ArgumentError, match="running_mean and running_var"):
            N.batch_norm(x, mean, var, training=True)


def test_flatten_of_a_0d_array_is_1d_like_torch() -> None:
    """flatten(scalar, 0) passed the range check and then raised ZeroDivisionError."""
    assert tuple(torch.flatten(torch.tensor(2.0), 0).shape) == (1,)
    assert tuple(P.flatten(np.asarray(2.0), 0).shape) == (1,)
    with pytest.raises(ArgumentError, match="start_dim"):
        P.flatten(np.asarray(2.0), 1)


@pytest.mark.parametrize("layer", [nn.Conv2d, nn.ConvTranspose2d])
def test_conv_layers_with_no_channels_are_an_argument_error(layer: Any) -> None:
    """Conv2d(0, 4, 3) raised ZeroDivisionError, Conv2d(-1, 4, 3) "math domain error"."""
    for cin, cout in ((0, 4), (4, 0), (-1, 4), (3, -4)):
        with pytest.raises(ArgumentError, match="channels"):
            layer(cin, cout, 3)
    assert layer(np.int64(3), np.int64(4), 3).weight.shape[2:] == (3, 3)  # NumPy ints do


def test_layers_name_both_backends_when_the_input_is_on_another() -> None:
    """A NumPy input to a torch-backend layer was a DtypeError "float64 differs from
    torch.float64" (Linear says which backends; so must these, invariant 6)."""
    with nb.using(backend="torch", dtype="float64"):
        layers = [nn.Conv2d(3, 4, 3), nn.BatchNorm2d(3), nn.GroupNorm(1, 3)]
    for layer in layers:
        with pytest.raises(BackendMismatchError, match=r"'numpy'.*'torch'"):
            layer(np.ones((2, 3, 5, 5)))


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_normalising_integers_is_a_dtype_error(backend: str) -> None:
    """An integer input without parameters gave a float64 result on NumPy (a silent dtype
    change) and a bare TypeError on array_api_strict; conv and pooling reject integers."""
    with nb.using(backend=backend, dtype="float64"):
        x = nb.namespace().ones((2, 3, 2, 2), dtype=nb.namespace().int64)
        with pytest.raises(DtypeError, match="floating"):
            nn.BatchNorm2d(3, affine=False, track_running_stats=False)(x)
        with pytest.raises(DtypeError, match="floating"):
            nn.GroupNorm(1, 3, affine=False)(x)
