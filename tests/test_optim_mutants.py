"""What mutation testing of optim.py found unchecked (issue #21): the messages of every
refusal, the defaults, zero as a valid rate or momentum, learning rates that are not Python
floats, a parameter without a gradient before one with, the state names of each rule, the
float16 path that widens the state, moving an optimizer between backends, and the validation
of a loaded snapshot."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim, registry
from nnbackend.errors import ArgumentError, CheckpointError
from nnbackend.namespace import backend_for

ALL = [optim.SGD, optim.Momentum, optim.Nesterov, optim.AdaGrad, optim.RMSprop, optim.Adam,
       optim.AdamW, optim.BookAdam]  # fmt: skip


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


def host(x: Any) -> np.ndarray:
    data = x.data if isinstance(x, nb.Tensor) else x
    return np.asarray(backend_for(data)[1].to_host(data))


def params(*arrays: Any) -> list[nn.Parameter]:
    return [nn.Parameter(np.array(a, dtype=np.float64)) for a in arrays]


# -- construction -------------------------------------------------------------------------
def test_a_non_tensor_parameter_is_named_by_its_type() -> None:
    with pytest.raises(TypeError, match=r"got ndarray$"):
        optim.SGD([np.zeros(2)])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: optim.SGD(p, lr=-1), "lr must be >= 0, got -1.0"),
        (lambda p: optim.AdaGrad(p, eps=-1), "eps must be >= 0, got -1.0"),
        (lambda p: optim.RMSprop(p, eps=-1), "eps must be >= 0, got -1.0"),
        (lambda p: optim.RMSprop(p, alpha=1.0), "alpha must be in [0, 1), got 1.0"),
        (lambda p: optim.Momentum(p, momentum=1), "momentum must be in [0, 1), got 1.0"),
        (lambda p: optim.Adam(p, betas=(1.0, 0.9)), "betas[0] must be in [0, 1), got 1.0"),
        (lambda p: optim.Adam(p, betas=(0.9, 1.5)), "betas[1] must be in [0, 1), got 1.5"),
        (lambda p: optim.Adam(p, eps=-2), "eps must be >= 0, got -2.0"),
        (lambda p: optim.Adam(p, weight_decay=-1), "weight_decay must be >= 0, got -1.0"),
        (lambda p: optim.clip_grad_norm(p, 0), "max_norm must be > 0, got 0.0"),
        (lambda p: optim.Adam([], lr=0.1), "Adam got an empty parameter list"),
    ],
)
def test_refusals_name_the_argument_and_its_bound(make: Any, message: str) -> None:
    with pytest.raises(ArgumentError, match=exactly(message)):
        make(params([1.0]))


@pytest.mark.parametrize(
    ("cls", "defaults"),
    [
        (optim.SGD, {"lr": 0.01}),
        (optim.Momentum, {"lr": 0.01, "momentum": 0.9}),
        (optim.Nesterov, {"lr": 0.01, "momentum": 0.9}),
        (optim.AdaGrad, {"lr": 0.01, "eps": 1e-10}),
        (optim.RMSprop, {"lr": 0.01, "alpha": 0.99, "eps": 1e-8}),
        (optim.Adam, {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0}),
        (optim.AdamW, {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                       "weight_decay": 0.01}),
        (optim.BookAdam, {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7,
                          "weight_decay": 0}),
    ],
)  # fmt: skip
def test_documented_defaults(cls: type[optim.Optimizer], defaults: dict[str, float]) -> None:
    assert cls(params([1.0])).state_dict()["hyperparameters"] == defaults


def test_repr_lists_the_hyperparameters() -> None:
    opt = optim.Adam(params([1.0], [2.0]), lr=0.5)
    assert repr(opt) == "Adam(2 parameters, lr=0.5, beta1=0.9, beta2=0.999, eps=1e-08, " + (
        "weight_decay=0.0)"
    )


def test_module_dir_is_the_public_names() -> None:
    assert dir(optim) == sorted(optim.__all__)


# -- learning rates and zero ----------------------------------------------------------------
def test_zero_momentum_is_plain_sgd() -> None:
    a, b = params([1.0, -2.0]), params([1.0, -2.0])
    momentum, sgd = optim.Momentum(a, lr=0.1, momentum=0.0), optim.SGD(b, lr=0.1)
    for g in ([0.5, 1.0], [-1.0, 2.0]):
        a[0].grad, b[0].grad = np.array(g), np.array(g)
        momentum.step()
        sgd.step()
    np.testing.assert_array_equal(host(a[0]), host(b[0]))


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam])
@pytest.mark.parametrize("lr", [0, 1, np.float32(0.5), np.float64(0.25), 0.0])
def test_a_rate_that_is_not_a_python_float_is_used_as_its_value(
    cls: type[optim.Optimizer], lr: Any
) -> None:
    ours, ref = params([1.0, -2.0]), params([1.0, -2.0])
    opt, reference = cls(ours, lr=0.1), cls(ref, lr=float(lr))
    opt.lr = lr
    for p in (*ours, *ref):
        p.grad = np.array([0.5, -1.0])
    opt.step()
    reference.step()
    assert opt.lr == float(lr) and type(opt.lr) is float
    np.testing.assert_array_equal(host(ours[0]), host(ref[0]))
    if float(lr) == 0.0:
        np.testing.assert_array_equal(host(ours[0]), [1.0, -2.0])


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam])
def test_a_bad_rate_at_step_says_how_to_fix_it(cls: type[optim.Optimizer]) -> None:
    p = params([1.0])
    opt = cls(p, lr=0.1)
    p[0].grad = np.array([1.0])
    opt.lr = -1.0
    message = (
        f"{cls.__name__}.lr must be a finite number >= 0 at step(), got -1.0; set it to a "
        "valid rate (e.g. opt.lr = 0.01) before the next step"
    )
    with pytest.raises(ArgumentError, match=exactly(message)):
        opt.step()
    np.testing.assert_array_equal(host(p[0]), [1.0])


# -- the generic step -----------------------------------------------------------------------
def test_an_optimizer_without_a_rule_names_itself() -> None:
    class Plain(optim.Optimizer):
        pass

    p = params([1.0])
    p[0].grad = np.array([1.0])
    with pytest.raises(NotImplementedError, match=exactly("Plain must define _rule()")):
        Plain(p, lr=0.1).step()


@pytest.mark.parametrize("cls", ALL)
def test_a_parameter_without_gradient_does_not_stop_the_ones_after_it(
    cls: type[optim.Optimizer],
) -> None:
    first, second = params([1.0], [2.0])
    opt = cls([first, second], lr=0.1)
    second.grad = np.array([1.0])
    opt.step()
    assert host(first)[0] == 1.0
    assert host(second)[0] < 2.0
    assert opt.state[0] == {}
    assert (opt.state[1] != {}) == bool(cls.state_names)


def test_sgd_rule_through_the_generic_step_equals_its_fast_path() -> None:
    class GenericSGD(optim.SGD):
        step = optim.Optimizer.step

    a, b = params([1.0, 2.0]), params([1.0, 2.0])
    generic, fast = GenericSGD(a, lr=0.25), optim.SGD(b, lr=0.25)
    for g in ([0.5, -1.0], [2.0, 4.0]):
        a[0].grad, b[0].grad = np.array(g), np.array(g)
        generic.step()
        fast.step()
    np.testing.assert_array_equal(host(a[0]), [0.375, 1.25])
    np.testing.assert_array_equal(host(a[0]), host(b[0]))


@pytest.mark.parametrize("cls", ALL)
def test_each_rule_keeps_exactly_its_named_state(cls: type[optim.Optimizer]) -> None:
    p = params([1.0, 2.0])
    opt = cls(p, lr=0.1)
    for _ in range(2):
        p[0].grad = np.array([0.5, -1.0])
        opt.step()
    expected = set(cls.state_names) | ({"step"} if cls.counts_steps_per_param else set())
    assert set(opt.state[0]) == expected
    assert set(opt.state_dict()["state"].get(0, {})) == expected


def test_book_adam_weight_decay_is_added_to_the_gradient() -> None:
    rng = np.random.default_rng(3)
    p0, grads = rng.normal(size=4), [rng.normal(size=4) for _ in range(3)]
    lr, wd, b1, b2, eps = 0.01, 0.3, 0.9, 0.999, 1e-7
    p, m, v = p0.copy(), np.zeros(4), np.zeros(4)
    for t, g in enumerate(grads, start=1):
        g = g + wd * p
        m += (1 - b1) * (g - m)
        v += (1 - b2) * (g * g - v)
        p -= lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
    ours = params(p0)
    opt = optim.BookAdam(ours, lr=lr, weight_decay=wd)
    assert opt.weight_decay == wd
    for g in grads:
        ours[0].grad = g
        opt.step()
    np.testing.assert_allclose(host(ours[0]), p, rtol=1e-13)


def test_float16_state_is_widened_for_the_rule_and_stored_back() -> None:
    """NumPy computes float16 in float32 for arrays past a few hundred values: the state
    arrays named by the rule go through that path and come back float16."""
    rng = np.random.default_rng(4)
    p0 = rng.normal(size=(20, 30))
    grads = [rng.normal(size=p0.shape) for _ in range(3)]
    p16 = nn.Parameter(p0.astype(np.float16))
    opt = optim.Adam([p16], lr=0.01)
    ref = nn.Parameter(p0.astype(np.float16).astype(np.float64))
    reference = optim.Adam([ref], lr=0.01)
    for g in grads:
        p16.grad, ref.grad = g.astype(np.float16), g.astype(np.float16).astype(np.float64)
        opt.step()
        reference.step()
    assert p16.data.dtype == np.float16
    assert opt.state[0]["m"].dtype == np.float16 and opt.state[0]["step"] == 3
    np.testing.assert_allclose(host(p16), host(ref), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("other", ["array_api_strict", "torch"])
def test_optimizers_on_two_backends_in_one_process(other: str) -> None:
    """Each parameter gets its own backend's ops (a cache keyed wrongly would hand the second
    backend the first one's)."""
    if registry.probe(other) is not None:
        pytest.skip(f"{other} is unavailable")
    a = params([1.0, 2.0])
    b = [nn.Parameter(nb.to_device(np.array([1.0, 2.0]), other))]
    opts = [optim.RMSprop(a, lr=0.1), optim.RMSprop(b, lr=0.1)]
    for _ in range(2):
        a[0].grad = np.array([0.5, -1.0])
        b[0].grad = nb.to_device(np.array([0.5, -1.0]), other)
        for opt in opts:
            opt.step()
    assert backend_for(b[0].data)[1] is registry.get(other)
    np.testing.assert_allclose(host(b[0]), host(a[0]), rtol=1e-15)


def test_clip_grad_norm_sums_float16_gradients_in_float32() -> None:
    p = nn.Parameter(np.ones(3, dtype=np.float16))
    p.grad = np.full(3, 300.0, dtype=np.float16)  # squares overflow float16 (max 65504)
    norm = optim.clip_grad_norm([p], 1.0)
    assert norm.dtype == np.float32
    np.testing.assert_allclose(float(norm), 300.0 * np.sqrt(3.0), rtol=1e-6)
    assert p.grad.dtype == np.float16
    np.testing.assert_allclose(host(p.grad), np.full(3, 1 / np.sqrt(3.0)), rtol=1e-3)


# -- moving ---------------------------------------------------------------------------------
def test_moving_an_optimizer_moves_its_state_and_arrays_and_keeps_stepping() -> None:
    if registry.probe("array_api_strict") is not None:
        pytest.skip("array_api_strict is unavailable")
    rng = np.random.default_rng(5)
    w0 = rng.normal(size=3)
    grads = [rng.normal(size=3) for _ in range(4)]
    moved, stay = params(w0), params(w0)
    opt, reference = optim.Adam(moved, lr=0.1), optim.Adam(stay, lr=0.1)
    opt.extra = np.ones(2)  # any array attribute moves too
    for g in grads[:2]:
        moved[0].grad, stay[0].grad = g, g
        opt.step()
        reference.step()
    state = opt.state[0]
    assert nb.to_device(opt, "array_api_strict") is opt
    assert opt.state[0] is state
    strict = registry.get("array_api_strict")
    for array in (moved[0].data, state["m"], state["v"], opt.extra):
        assert backend_for(array)[1] is strict
    for g in grads[2:]:
        moved[0].grad, stay[0].grad = nb.to_device(g, "array_api_strict"), g
        opt.step()
        reference.step()
    assert backend_for(moved[0].data)[1] is strict
    np.testing.assert_allclose(host(moved[0]), host(stay[0]), rtol=1e-15)
    assert state["step"] == 4


# -- loading a snapshot ---------------------------------------------------------------------
def _adam_snapshot(**change: Any) -> tuple[optim.Adam, dict[str, Any]]:
    p = params([1.0, 2.0], [3.0])
    opt = optim.Adam(p, lr=0.1)
    p[0].grad, p[1].grad = np.array([1.0, -1.0]), np.array([0.5])
    opt.step()
    snap = opt.state_dict()
    snap.update(change)
    return opt, snap


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hyperparameters": 5}, "Adam hyperparameters are ['beta1', 'beta2', 'eps', 'lr', "
         "'weight_decay'], got 5"),
        ({"hyperparameters": {"lr": 0.1}}, "Adam hyperparameters are ['beta1', 'beta2', 'eps', "
         "'lr', 'weight_decay'], got ['lr']"),
        ({"state": [1]}, "state must map parameter indices to dicts, got list"),
        ({"state": {2: {}}}, "state for parameter 2, but Adam has 2 parameters"),
        ({"state": {0: 5}}, "state of parameter 0 needs entries ['m', 'step', 'v'], got 5"),
        ({"state": {0: {"m": 1}}}, "state of parameter 0 needs entries ['m', 'step', 'v'], "
         "got ['m']"),
    ],
)  # fmt: skip
def test_a_bad_snapshot_is_refused_with_what_was_wrong(change: dict, message: str) -> None:
    opt, snap = _adam_snapshot(**change)
    before = opt.state_dict()
    with pytest.raises(CheckpointError, match=exactly(message)):
        opt.load_state_dict(snap)
    assert opt.state_dict()["hyperparameters"] == before["hyperparameters"]


def test_a_snapshot_that_is_no_mapping_is_named() -> None:
    opt, _ = _adam_snapshot()
    with pytest.raises(CheckpointError, match=exactly("Adam.load_state_dict needs a mapping, "
                                                      "got list")):  # fmt: skip
        opt.load_state_dict([])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lr", -1.0, "hyperparameter lr must be >= 0, got -1.0"),
        ("eps", -1, "hyperparameter eps must be >= 0, got -1.0"),
        ("weight_decay", -0.5, "hyperparameter weight_decay must be >= 0, got -0.5"),
        ("beta1", 1.5, "hyperparameter beta1 must be in [0, 1), got 1.5"),
        ("beta2", -0.1, "hyperparameter beta2 must be in [0, 1), got -0.1"),
        ("lr", float("inf"), "hyperparameter 'lr' must be finite, got inf"),
        ("lr", "0.1", "hyperparameter 'lr' must be a number, got str '0.1'"),
        ("lr", True, "hyperparameter 'lr' must be a number, got bool True"),
    ],
)
def test_a_loaded_hyperparameter_is_held_to_the_constructors_bounds(
    key: str, value: Any, message: str
) -> None:
    opt, snap = _adam_snapshot()
    snap["hyperparameters"] = {**snap["hyperparameters"], key: value}
    with pytest.raises(CheckpointError, match=exactly(message)):
        opt.load_state_dict(snap)
    assert opt.lr == 0.1


def test_a_hyperparameter_of_your_own_may_be_negative() -> None:
    class Shifted(optim.SGD):
        hyperparameters = ("lr", "shift")
        shift = 0.0

    opt = Shifted(params([1.0]), lr=0.1)
    snap = opt.state_dict()
    snap["hyperparameters"] = {"lr": 0.2, "shift": -2.0}
    opt.load_state_dict(snap)
    assert (opt.lr, opt.shift) == (0.2, -2.0)


def test_a_bad_step_count_or_array_in_a_snapshot_names_its_place() -> None:
    opt, snap = _adam_snapshot()
    entry = snap["state"][0]
    with pytest.raises(CheckpointError, match=exactly("state[0]['step'] must be a "
                                                      "non-negative int, got -1")):  # fmt: skip
        opt.load_state_dict({**snap, "state": {0: {**entry, "step": -1}}})
    with pytest.raises(CheckpointError, match=re.escape("state[0]['m']")):
        opt.load_state_dict({**snap, "state": {0: {**entry, "m": np.zeros(5)}}})


def test_float16_numpy_update_is_computed_in_float32_after_another_backends_optimizer() -> None:
    """Each parameter gets its own backend's ops, looked up by its own namespace: a NumPy
    float16 parameter is updated in float32 and rounded once even when an optimizer over an
    array_api_strict parameter (whose ops compute float16 as float16) was made first."""
    if registry.probe("array_api_strict") is not None:
        pytest.skip("array_api_strict is unavailable")
    optim.Adam([nn.Parameter(nb.to_device(np.ones(2), "array_api_strict"))])
    rng = np.random.default_rng(6)
    p16 = rng.normal(size=(20, 30)).astype(np.float16)
    g16 = rng.normal(size=p16.shape).astype(np.float16)
    p = nn.Parameter(p16.copy())
    p.grad = g16
    lr, b1, b2 = 0.01, 0.9, 0.999
    eps = float(np.finfo(np.float16).smallest_normal)  # eps=1e-8 raised to float16's floor
    optim.Adam([p], lr=lr).step()
    g = g16.astype(np.float32)
    m, v = (1.0 - b1) * g, (1.0 - b2) * (g * g)
    expected = p16.astype(np.float32) - lr / (1.0 - b1) * m / (
        np.sqrt(v) * (1.0 / math.sqrt(1.0 - b2)) + eps
    )
    np.testing.assert_array_equal(host(p), expected.astype(np.float16))
