"""What mutation testing of precision.py found unchecked (issue #21): the LossScaler's
argument bounds and messages, its defaults, the host/device choice, device-mode growth at the
top of float32, mixed-dtype gradients on a strict namespace, float16 unscaling by a scale
that is not a power of two, its snapshot checks and repr, and ``policy(name)``."""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim, registry
from nnbackend.errors import ArgumentError, CheckpointError
from nnbackend.namespace import backend_for
from nnbackend.precision import LossScaleError, LossScaler, policy


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


def host(x: Any) -> np.ndarray:
    data = x.data if isinstance(x, nb.Tensor) else x
    return np.asarray(backend_for(data)[1].to_host(data))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"init_scale": 0.0}, "init_scale must be a positive finite number, got 0.0"),
        ({"init_scale": float("inf")}, "init_scale must be a positive finite number, got inf"),
        ({"backoff_factor": 0.0}, "backoff_factor must be in (0, 1), got 0.0"),
        ({"growth_interval": 2.5}, "growth_interval must be an int >= 1, got 2.5"),
        ({"growth_interval": 0}, "growth_interval must be an int >= 1, got 0"),
        ({"min_scale": 0.0}, "min_scale must be > 0, got 0.0"),
    ],
)
def test_bad_arguments_are_refused_with_their_bound(kwargs: dict, message: str) -> None:
    with pytest.raises(ArgumentError, match=exactly(message)):
        LossScaler(**kwargs)


def test_defaults_and_the_edges_that_are_allowed() -> None:
    scaler = LossScaler()
    assert (scaler.scale, scaler.growth_interval, scaler.good_steps) == (2.0**15, 2000, 0)
    assert LossScaler(init_scale=0.5, min_scale=0.25).scale == 0.5
    assert LossScaler(init_scale=2.0, min_scale=2.0).scale == 2.0
    assert LossScaler(check="device").check == "device"


def test_repr_says_dynamic_or_static() -> None:
    assert repr(LossScaler(init_scale=8.0)) == "LossScaler(dynamic, scale=8, skipped=0/0)"
    assert repr(LossScaler(dynamic=False)) == "LossScaler(static, scale=32768, skipped=0/0)"


def test_policy_by_name_ignores_the_active_setting() -> None:
    with nb.using(dtype="float32"):
        assert policy("mixed16").loss_scaling is True
        assert policy().name == "float32"


def _sgd(values: list[float], grads: list[float]) -> tuple[nn.Parameter, optim.SGD]:
    p = nn.Parameter(np.array(values))
    p.grad = np.array(grads)
    return p, optim.SGD([p], lr=1.0)


@pytest.mark.parametrize(("check", "device"), [("host", False), ("device", True),
                                               ("auto", False)])  # fmt: skip
def test_check_decides_where_a_skip_is_decided(check: str, device: bool) -> None:
    """Host mode returns False for a skipped step; device mode cannot know and returns True
    (its counters say it); "auto" is host mode for NumPy arrays, whichever parameter comes
    first (one without a gradient included)."""
    idle = nn.Parameter(np.zeros(2))
    p = nn.Parameter(np.zeros(2))
    p.grad = np.array([np.inf, 1.0])
    scaler = LossScaler(init_scale=4.0, check=check)
    taken = scaler.step(optim.SGD([idle, p], lr=1.0))
    assert taken is device
    assert scaler.skipped == 1 and scaler.scale == 2.0
    np.testing.assert_array_equal(host(p), [0.0, 0.0])


def test_the_device_step_works_for_an_optimizer_without_state() -> None:
    class Bare:
        def __init__(self, params: list[nn.Parameter]) -> None:
            self.params = params

        def step(self) -> None:
            for p in self.params:
                p.data = p.data - p.grad

    p = nn.Parameter(np.array([1.0]))
    p.grad = np.array([8.0])
    scaler = LossScaler(init_scale=4.0, check="device")
    assert scaler.step(Bare([p])) is True
    np.testing.assert_array_equal(host(p), [-1.0])


def test_unscale_takes_an_optimizers_params_before_its_parameters() -> None:
    p, q = nn.Parameter(np.array([0.0])), nn.Parameter(np.array([0.0]))
    p.grad, q.grad = np.array([8.0]), np.array([8.0])

    class Both:
        def __init__(self) -> None:
            self.params = [p]

        def parameters(self) -> list[nn.Parameter]:
            return [p, q]

    LossScaler(init_scale=4.0).unscale(Both())
    assert (host(p.grad)[0], host(q.grad)[0]) == (2.0, 8.0)
    r = nn.Parameter(np.array([0.0]))
    r.grad = np.array([8.0])
    LossScaler(init_scale=4.0).unscale([r])  # a plain list of parameters
    assert host(r.grad)[0] == 2.0


def test_device_growth_that_would_overflow_float32_keeps_the_scale_and_is_not_counted() -> None:
    _, opt = _sgd([0.0], [1.0])
    scaler = LossScaler(init_scale=2.0**127, growth_interval=1, check="device")
    with warnings.catch_warnings():  # a step that went right: no overflow warning either
        warnings.simplefilter("error")
        scaler.step(opt)
    assert scaler.scale == 2.0**127
    assert scaler.growths == 0 and scaler.good_steps == 0


def test_device_growth_restarts_the_count_of_good_steps() -> None:
    p, opt = _sgd([0.0], [1.0])
    scaler = LossScaler(init_scale=4.0, growth_interval=2, check="device")
    for _ in range(3):
        p.grad = np.array([1.0])
        scaler.step(opt)
    assert (scaler.scale, scaler.growths, scaler.good_steps) == (8.0, 1, 1)


@pytest.mark.parametrize("check", ["host", "device"])
def test_mixed_float32_and_float64_gradients_on_a_strict_namespace(check: str) -> None:
    """array_api_strict refuses float32 + float64: each gradient's sum is cast to the widest
    dtype before the finiteness total."""
    if registry.probe("array_api_strict") is not None:
        pytest.skip("array_api_strict is unavailable")
    a = nn.Parameter(nb.to_device(np.zeros(2, dtype=np.float32), "array_api_strict"))
    b = nn.Parameter(nb.to_device(np.zeros(2), "array_api_strict"))
    a.grad = nb.to_device(np.array([4.0, 8.0], dtype=np.float32), "array_api_strict")
    b.grad = nb.to_device(np.array([4.0, -4.0]), "array_api_strict")
    scaler = LossScaler(init_scale=4.0, check=check)
    scaler.step(optim.SGD([a, b], lr=1.0))
    assert scaler.skipped == 0
    np.testing.assert_array_equal(host(a), [-1.0, -2.0])
    np.testing.assert_array_equal(host(b), [-1.0, 1.0])


def test_float16_gradients_are_unscaled_in_float32_and_rounded_once() -> None:
    """1/3 is not a float16 number: multiplying by it in float16 would round it first."""
    g = np.array([1.0, 3.0, 7.0, 1000.0, 0.0999], dtype=np.float16)
    p = nn.Parameter(np.zeros(5, dtype=np.float16))
    p.grad = g.copy()
    LossScaler(init_scale=3.0, check="host").unscale([p])
    expected = (g.astype(np.float32) * np.float32(1.0 / 3.0)).astype(np.float16)
    assert p.grad.dtype == np.float16
    np.testing.assert_array_equal(host(p.grad), expected)
    assert not np.array_equal(expected, g * np.float16(1.0 / 3.0))


def test_check_scale_message_says_what_happened_and_what_to_do() -> None:
    scaler = LossScaler(init_scale=4.0, min_scale=1.0)
    scaler.load_state_dict({"scale": 0.5, "good_steps": 0, "skipped": 3, "growths": 0,
                            "steps": 7})  # fmt: skip
    message = (
        "loss scale would fall to 0.5, below min_scale=1, after 3 skipped steps of 7: the "
        "gradients are infinite or NaN even unscaled. The model has diverged or the loss "
        "itself is not finite: lower the learning rate, check the inputs, or run the step "
        "inside nnbackend.autograd.detect_anomaly() to find the op that produced it"
    )
    with pytest.raises(LossScaleError, match=exactly(message)):
        scaler.check_scale()


def test_scale_loss_of_a_plain_array_in_device_mode() -> None:
    _, opt = _sgd([0.0], [1.0])
    scaler = LossScaler(init_scale=4.0, check="device")
    scaler.step(opt)  # the scale is now a device array
    scaled = scaler.scale_loss(np.asarray(1.5))
    assert float(scaled) == 6.0


GOOD = {"scale": 4.0, "good_steps": 0, "skipped": 0, "growths": 0, "steps": 0}
KEYS = "['good_steps', 'growths', 'scale', 'skipped', 'steps']"


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ([1], f"LossScaler state needs keys {KEYS}, got list"),
        ({"scale": 1.0}, f"LossScaler state needs keys {KEYS}, got ['scale']"),
        ({**GOOD, "scale": 0.0}, "LossScaler state has a bad scale 0.0"),
        ({**GOOD, "steps": 1.5}, "LossScaler state 'steps' must be an int >= 0, got 1.5"),
        ({**GOOD, "skipped": "x"}, "LossScaler state 'skipped' must be an int >= 0, got 'x'"),
        ({**GOOD, "growths": -1}, "LossScaler state 'growths' must be an int >= 0, got -1"),
    ],
)
def test_a_bad_snapshot_is_refused(state: Any, message: str) -> None:
    scaler = LossScaler(init_scale=8.0)
    with pytest.raises(CheckpointError, match=exactly(message)):
        scaler.load_state_dict(state)
    assert scaler.scale == 8.0


def test_a_scale_below_one_loads() -> None:
    scaler = LossScaler(init_scale=8.0, min_scale=0.25)
    scaler.load_state_dict({**GOOD, "scale": 0.5})
    assert scaler.scale == 0.5


def test_cast_parameters_drops_the_gradients() -> None:
    from nnbackend.precision import cast_parameters

    p = nn.Parameter(np.ones(2))
    p.grad = np.ones(2)
    cast_parameters([p], "float32")
    assert p.data.dtype == np.float32 and p.grad is None
