"""What mutation testing of ``autograd/`` found unchecked (issue #21).

Each test checks a behaviour of the engine that a sampled mutant changed without any test
failing: gradients checked with random (not unit) weights and N-D inputs, the order and the
summation of a backward pass through shared subgraphs, what ``retain_grad`` and
``create_graph`` keep, the recording switch restored on errors, the messages of refusals, and
what makes a compiled step record again. numpy and array_api_strict only (torch float16
deadlocks in mutmut's forked children).
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend.autograd.tensor import Tensor
from nnbackend.namespace import backend_for
from nnbackend.nn import functional as NF

namespace_module = importlib.import_module("nnbackend.namespace")


def host(x: Any) -> np.ndarray:
    data = x.data if isinstance(x, Tensor) else x
    return np.asarray(backend_for(data)[1].to_host(data))


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


def rand(xp: Any, *shape: int, seed: int = 0, low: float = -1.0, high: float = 1.0) -> Any:
    values = np.random.default_rng(seed).uniform(low, high, size=shape)
    return xp.asarray(values.tolist(), dtype=xp.float64)


# -- second derivatives with a cold ops cache ---------------------------------------------------
def test_layer_norm_second_derivatives_with_a_cold_ops_cache(xp64: Any) -> None:
    """The graph backward of layer_norm looks its backend's ops up itself: it must pass an
    array, not the Tensor gradient (which only worked while the cache was warm)."""
    x = Tensor(rand(xp64, 2, 4, seed=1), requires_grad=True)
    w = Tensor(rand(xp64, 4, seed=2), requires_grad=True)
    b = Tensor(rand(xp64, 4, seed=3), requires_grad=True)
    y = (NF.layer_norm(x, w, b) ** 2).sum()
    namespace_module._ops.clear()  # as a registry change does
    (gx,) = nb.grad(y, x, create_graph=True)
    (ggx,) = nb.grad(gx.sum(), x)
    assert ggx.shape == (2, 4)


# -- compile_step's whole-step path (jax.jit), with an identity "compiler" on NumPy ------------
@pytest.fixture
def identity_jit(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """NumPy's ops given a tracing compiler that returns the function unchanged, so that
    compile_step takes its whole-step path (``_JitRecording``) without jax: the function it
    compiles is then run as it is, and must give the eager step's numbers. Returns the list
    of functions handed to the compiler."""
    from nnbackend.backends.numpy import NumpyOps

    compiled: list[Any] = []

    def jit(self: Any, fn: Any) -> Any:
        if getattr(fn, "__name__", "") == "_pure":  # not compile_step's probe
            compiled.append(fn)
        return fn

    monkeypatch.setattr(NumpyOps, "jit", jit)
    return compiled


def _jit_setup(opt_name: str, dropout: bool, unused: bool = False) -> tuple[Any, Any, Any]:
    from nnbackend import nn, optim

    nb.random.seed(0)
    layers: list[Any] = [nn.Linear(3, 5), nn.Tanh()]
    if dropout:
        layers.append(nn.Dropout(0.4))
    layers.append(nn.Linear(5, 2))
    model = nn.Sequential(*layers)
    params = list(model.parameters())
    spare = nn.Parameter(np.full(4, 0.5)) if unused else None
    if spare is not None:
        params.append(spare)  # never in the loss: it never has a gradient
    make = {
        "sgd": lambda p: optim.SGD(p, lr=0.1),
        "momentum": lambda p: optim.Momentum(p, lr=0.05, momentum=0.8),
        "adam": lambda p: optim.Adam(p, lr=0.02),
    }[opt_name]
    opt = make(params)
    loss_fn = nn.MSELoss()

    def step(x: Any, t: Any) -> Any:
        opt.zero_grad()
        loss = loss_fn(model(x), t)
        loss.backward()
        opt.step()
        return loss

    return model, opt, step


def _jit_batches(n: int) -> list[tuple[Any, Any]]:
    rng = np.random.default_rng(4)
    return [(rng.uniform(-1, 1, (6, 3)), rng.uniform(-1, 1, (6, 2))) for _ in range(n)]


@pytest.mark.parametrize("dropout", [False, True], ids=["plain", "dropout"])
@pytest.mark.parametrize("opt_name", ["sgd", "momentum", "adam"])
def test_the_whole_step_path_equals_the_eager_step(
    identity_jit: list[Any], opt_name: str, dropout: bool
) -> None:
    """Parameters, gradients, optimizer state, per-parameter step counts (Python ints), the
    optimizer's step count and the dropout masks go in and out of the compiled function on
    every call: with a compiler that changes nothing, every loss, parameter, gradient and
    state array equals the eager run's exactly."""
    batches = _jit_batches(7)
    runs = []
    for compiled in (False, True):
        model, opt, step = _jit_setup(opt_name, dropout, unused=True)
        run = nb.compile_step(step) if compiled else step
        nb.random.seed(9)
        losses = [float(run(x, t).item()) for x, t in batches]
        runs.append((losses, model, opt, run))
    (le, me, oe, _), (lc, mc, oc, run) = runs
    assert type(next(iter(run._cache.values()))).__name__ == "_JitRecording"
    assert run.records == 2 and run.replays == 5 and len(identity_jit) == 1
    assert lc == le
    assert oc.steps == oe.steps == 7
    for pe, pc in zip(me.parameters(), mc.parameters(), strict=True):
        np.testing.assert_array_equal(host(pc), host(pe))
        np.testing.assert_array_equal(host(pc.grad), host(pe.grad))
        assert type(pc.grad) is type(pe.grad)
    for se, sc in zip(oe.state, oc.state, strict=True):
        assert sorted(sc) == sorted(se)
        for k in se:
            if k == "step":
                assert type(sc[k]) is int and sc[k] == se[k]
            else:
                np.testing.assert_array_equal(host(sc[k]), host(se[k]))
    if opt_name == "adam":  # the parameter without a gradient has taken no step
        assert oc.state[-1].get("step", 0) == 0 and oc.state[0]["step"] == 7
    assert oc.lr == oe.lr and type(oc.lr) is float


def test_the_whole_step_reads_the_learning_rate_and_traces_again_for_other_settings(
    identity_jit: list[Any],
) -> None:
    """The learning rate goes in on every call (a schedule changes it without a new trace);
    another momentum is a constant of the trace: compiled again, once, and kept."""
    batches = _jit_batches(8)
    runs = []
    for compiled in (False, True):
        model, opt, step = _jit_setup("momentum", False)
        run = nb.compile_step(step) if compiled else step
        for i, (x, t) in enumerate(batches):
            opt.lr = 0.05 / (i + 1)
            if i == 5:
                opt.momentum = 0.5
            run(x, t)
        runs.append(model)
    assert len(identity_jit) == 2  # the first settings, then momentum 0.5
    for pe, pc in zip(runs[0].parameters(), runs[1].parameters(), strict=True):
        np.testing.assert_array_equal(host(pc), host(pe))


def test_the_whole_step_refuses_a_bad_learning_rate_before_running(
    identity_jit: list[Any],
) -> None:
    from nnbackend.errors import ArgumentError

    model, opt, step = _jit_setup("sgd", False)
    run = nb.compile_step(step)
    batches = _jit_batches(4)
    for x, t in batches[:3]:
        run(x, t)
    before = [host(p).copy() for p in model.parameters()]
    for bad in (float("nan"), -0.1, float("inf"), True, "0.1"):
        opt.lr = bad
        with pytest.raises(ArgumentError, match=r"^SGD\.lr must be a finite number >= 0 at step"):
            run(*batches[3])
    opt.lr = 0
    run(*batches[3])  # an int rate is a rate: the parameters stay (lr 0)
    assert opt.lr == 0.0 and type(opt.lr) is float
    for b, p in zip(before, model.parameters(), strict=True):
        np.testing.assert_array_equal(host(p), b)


def test_a_failing_whole_step_puts_back_the_parameters_rate_and_state(
    identity_jit: list[Any],
) -> None:
    """An exception inside the compiled function: every parameter gets back its array and
    gradient, the optimizer its rate and the very state it had, and the error propagates."""
    from nnbackend.autograd.function import Function

    class Fragile(Function):
        boom = False

        def forward(self, x: Any) -> Any:
            if Fragile.boom:
                raise RuntimeError("boom")
            return x * 1.0

        def backward(self, gy: Any) -> Any:
            return gy

    model, opt, inner = _jit_setup("adam", False)

    def step(x: Any, t: Any) -> Any:
        opt.zero_grad()
        loss = ((Fragile()(model(x)) - t) ** 2.0).mean()
        loss.backward()
        opt.step()
        return loss

    run = nb.compile_step(step)
    batches = _jit_batches(4)
    for x, t in batches[:3]:
        run(x, t)
    params = list(model.parameters())
    saved = [(p.data, p.grad) for p in params]
    state = [dict(st) for st in opt.state]
    opt.lr = 0.5
    Fragile.boom = True
    with pytest.raises(RuntimeError, match="boom"):
        run(*batches[3])
    for p, (d, g) in zip(params, saved, strict=True):
        assert p.data is d and p.grad is g
    assert opt.lr == 0.5
    for st, old in zip(opt.state, state, strict=True):
        assert st.keys() == old.keys() and all(st[k] is old[k] for k in old)
