"""LossScaler behaviour that mutation testing of precision.py found unchecked (issue #21):
the scaled loss's value, the sum that decides whether gradients are finite (it must not
overflow in float16, nor in float32 when the gradients are float64), and a step without
gradients."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim, registry
from nnbackend.autograd.tensor import Tensor
from nnbackend.precision import LossScaler


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, Tensor) else a
    return np.array(registry.get(registry.backend_of(a)).to_host(a), copy=True)


@pytest.mark.parametrize("check", ["host", "device"])
def test_scale_loss_multiplies_value_and_gradient(xp: Any, dtype: str, check: str) -> None:
    """Both modes: a host float scale, and the device-side array scale (GPUs), which the
    scale becomes after a step."""
    scaler = LossScaler(init_scale=8.0, check=check)
    other = nn.Parameter(xp.asarray(np.ones(2)))
    other.grad = xp.asarray(np.ones(2))
    scaler.step(optim.SGD([other], lr=0.0))  # finite: the scale stays 8
    w = Tensor(xp.asarray(np.array([1.5, -2.0])), requires_grad=True)
    loss = (w * w).sum()
    scaled = scaler.scale_loss(loss)
    assert scaled.data.dtype == loss.data.dtype
    assert float(_host(scaled)) == 8.0 * float(_host(loss))
    scaled.backward()
    assert _host(w.grad).tolist() == [8.0 * 3.0, 8.0 * -4.0]


@pytest.mark.parametrize(("dtype_name", "value"), [("float16", 30000.0), ("float64", 1e300)])
def test_large_finite_gradients_are_not_taken_for_an_overflow(
    backend: str, dtype_name: str, value: float
) -> None:
    """Each gradient is finite, but their sum overflows float16 (4 x 30000 > 65504) or
    float32 (2 x 1e300): the finiteness check must sum in a wider dtype, or it skips a good
    step."""
    if dtype_name == "float16" and not registry.get(backend).capabilities.float16:
        pytest.skip(f"{backend} has no float16")
    with nb.using(backend=backend, dtype=dtype_name):
        xp = nb.namespace()
        p = nn.Parameter(xp.asarray(np.zeros(4)))
        for check in ("host", "device"):
            p.data = xp.asarray(np.zeros(4))
            opt = optim.SGD([p], lr=1.0)
            scaler = LossScaler(init_scale=2.0, check=check)
            p.grad = xp.asarray(np.full(4, value))
            scaler.step(opt)
            assert scaler.skipped == 0, check
            assert _host(p.data).tolist() == [-value / 2.0] * 4, check


def test_a_step_without_gradients_is_taken(xp: Any) -> None:
    p = nn.Parameter(xp.asarray(np.ones(2)))
    opt = optim.SGD([p], lr=1.0)
    scaler = LossScaler(init_scale=4.0)
    assert scaler.step(opt) is True
    assert opt.steps == 1 and scaler.skipped == 0
