"""``nnbackend.autograd.detect_anomaly()``: the first op whose forward or backward produced a
NaN or an infinity is named, with the shapes and dtypes involved."""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import config, nn
from nnbackend.autograd import AnomalyError, Function, detect_anomaly
from nnbackend.autograd import anomaly as anomaly_module


class BadGrad(Function):
    """Identity forward, an infinite gradient backward."""

    def forward(self, x: Any) -> Any:
        return x * 1.0

    def backward(self, gy: Any) -> Any:
        return gy / 0.0


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_forward_anomaly_names_the_first_op(xp: Any, dtype: str) -> None:
    w = nb.Tensor(xp.asarray([[1.0, -1.0], [2.0, 3.0]]), requires_grad=True)
    with detect_anomaly(), pytest.raises(AnomalyError) as info:
        h = w * 2.0  # fine
        ((h - 2.0) ** 0.5).sum()  # Pow of a negative number: NaN
    message = str(info.value)
    assert message.startswith("Pow forward produced NaN in output 0 (shape (2, 2) ")
    assert dtype in message and "input 0: shape (2, 2)" in message
    assert isinstance(info.value, FloatingPointError)


def test_inputs_that_already_hold_nan_are_pointed_out() -> None:
    x = np.array([1.0, np.nan])
    with detect_anomaly(), pytest.raises(AnomalyError, match=r"Exp .*already holds NaN"):
        nb.Tensor(x).exp()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_backward_anomaly_names_the_op_and_where_it_was_called() -> None:
    w = nb.Tensor(np.ones(3), requires_grad=True)
    with detect_anomaly():
        y = BadGrad()(w)  # the line the error shows
        loss = (y * 2.0).sum()
        with pytest.raises(AnomalyError) as info:
            loss.backward()
    message = str(info.value)
    assert message.startswith("BadGrad backward produced inf in the gradient of input 0")
    assert "input 0: shape (3,) float64" in message
    assert "output 0 gradient: shape (3,) float64" in message
    assert "\nThe op was called in the forward pass at:\n" in message
    if "MUTANT_UNDER_TEST" not in os.environ:
        # Under mutmut every engine function runs through trampolines (two frames more
        # each), which push the calling line out of the last frames shown.
        assert "test_anomaly.py" in message and "y = BadGrad()(w)" in message


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_record_stack_off() -> None:
    w = nb.Tensor(np.ones(3), requires_grad=True)
    with detect_anomaly(record_stack=False):
        y = BadGrad()(w)
        with pytest.raises(AnomalyError) as info:
            y.sum().backward()
    assert "called in the forward pass" not in str(info.value)


def test_outside_the_block_nothing_is_checked() -> None:
    w = nb.Tensor(np.array([-1.0]), requires_grad=True)
    with np.errstate(invalid="ignore"):
        y = (w**0.5).sum()
    assert np.isnan(y.item())
    assert not anomaly_module.is_enabled()


def test_the_block_is_local_and_nests() -> None:
    seen: list[bool] = []
    with detect_anomaly():
        with detect_anomaly():
            assert config.engine_switch.anomaly_blocks == 2
        assert anomaly_module.is_enabled()
        thread = threading.Thread(target=lambda: seen.append(anomaly_module.is_enabled()))
        thread.start()
        thread.join()
        assert seen == [False]  # another thread is not inside the block
    assert config.engine_switch.anomaly_blocks == 0
    assert not anomaly_module.is_enabled()


def test_a_finite_training_step_passes(backend: str) -> None:
    with nb.using(backend=backend, dtype="float32"):
        nb.random.seed(0)
        model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
        x = nb.namespace().ones((4, 3))
        with detect_anomaly():
            loss = nn.MSELoss()(model(x), nb.namespace().zeros((4, 2)))
            loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_finds_the_op_where_float16_overflows() -> None:
    x = nb.Tensor(np.full((2, 2), 300.0, np.float16), requires_grad=True)
    with detect_anomaly(), pytest.raises(AnomalyError, match=r"Mul forward produced inf .*float16"):
        (x * x).sum()  # 90000 > 65504
