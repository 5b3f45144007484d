"""An attacker's review of the compiled training step (``nb.compile_step``) on torch and jax and
at its edges: compiled against eager step by step with SGD, Momentum, Adam and AdamW, weight
decay, learning-rate schedules, dropout with train/eval switches (keyed), batches of another
size, float16/32/64, steps returning several values or none, steps raising mid-way, clipping,
parameters frozen between calls, two compiled steps sharing one model and one optimizer,
independent compiled steps in threads, ``zero_grad()`` after the update, optimizer state
reset mid-training, and arguments a jitted step could not take (a string). Each test below
failed before its fix."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim
from nnbackend.errors import ArgumentError


def _data(n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)), rng.integers(0, 3, n)


def _host(params: Any) -> list[np.ndarray]:
    return [np.asarray(p.numpy(), dtype=np.float64) for p in params]


def _same(backend: str, a: list[np.ndarray], b: list[np.ndarray]) -> None:
    """Equal bit for bit; on jax, whose jitted step XLA compiles differently, within 1e-6."""
    for p, q in zip(a, b, strict=True):
        if backend == "jax":
            np.testing.assert_allclose(p, q, rtol=0, atol=1e-6)
        else:
            np.testing.assert_array_equal(p, q)


def _two_heads(backend: str, compiled: bool, jit: bool = True) -> list[np.ndarray]:
    """Two steps sharing an encoder and one optimizer over every parameter, each training
    its own head (multi-task training), called in turn."""
    x, t = _data()
    with nb.using(backend=backend):
        nb.random.seed(0)
        enc, head_a, head_b = nn.Linear(4, 8), nn.Linear(8, 3), nn.Linear(8, 3)
        params = [*enc.parameters(), *head_a.parameters(), *head_b.parameters()]
        opt = optim.SGD(params, lr=0.1)
        loss_fn = nn.SoftmaxCrossEntropy()

        def step_a(xb: Any, tb: Any) -> Any:
            opt.zero_grad()
            loss = loss_fn(head_a(enc(xb)), tb)
            loss.backward()
            opt.step()
            return loss

        def step_b(xb: Any, tb: Any) -> Any:
            opt.zero_grad()
            loss = loss_fn(head_b(enc(xb)), tb)
            loss.backward()
            opt.step()
            return loss

        fa, fb = step_a, step_b
        if compiled:
            fa, fb = nb.compile_step(step_a, jit=jit), nb.compile_step(step_b, jit=jit)
        for i in range(8):
            lo = (i * 8) % 40
            fa(nb.to_backend(x[lo : lo + 8]), nb.to_backend(t[lo : lo + 8]))
            fb(nb.to_backend(x[lo + 8 : lo + 16]), nb.to_backend(t[lo + 8 : lo + 16]))
        if compiled:
            assert fa.replays >= 5 and fb.replays >= 5
    return _host(params)


def test_zero_grad_of_a_parameter_the_step_does_not_train_is_replayed(backend: str):
    """A replay skipped ``opt.zero_grad()`` for parameters whose gradient the step does not
    write (the other task's head): the optimizer's replayed ``step()`` then applied the
    gradient the other step had left, every call (numpy and torch: up to 0.15 off after 8
    steps each)."""
    _same(backend, _two_heads(backend, False), _two_heads(backend, True))


def _keyed_freeze(backend: str, compiled: bool) -> tuple[list[np.ndarray], list[Any]]:
    with nb.using(backend=backend):
        nb.random.seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        opt = optim.Adam(model.parameters(), lr=0.01)
        loss_fn = nn.SoftmaxCrossEntropy()
        bias = model[0].bias

        def step(xb: Any, tb: Any) -> Any:
            opt.zero_grad()
            loss = loss_fn(model(xb), tb)
            loss.backward()
            opt.step()
            return loss

        run = nb.compile_step(step, key=lambda: bias.requires_grad) if compiled else step
        x, t = _data()
        for i in range(15):
            bias.requires_grad = i % 3 != 0
            run(nb.to_backend(x[:8]), nb.to_backend(t[:8]))
    return _host(model.parameters()), [st.get("step") for st in opt.state]


def test_a_parameter_frozen_on_some_calls_is_not_updated_by_a_replay(backend: str):
    """With ``key=lambda: p.requires_grad`` (both states cached), a replay of the frozen
    recording kept the gradient the last unfrozen call left, and Adam updated the frozen
    bias with it (its step count 12 where eager's is 10)."""
    (pa, ca), (pb, cb) = _keyed_freeze(backend, False), _keyed_freeze(backend, True)
    assert ca == cb
    _same(backend, pa, pb)


def test_zero_grad_after_the_update_records_and_replays(backend: str):
    """``loss.backward(); opt.step(); opt.zero_grad()`` (PyTorch's other usual order) was
    refused with a CompileError ("the gradient of parameter 0 changed after the last
    recorded call"), although the module promises a zero_grad() at the end of the step."""
    x, t = _data()
    results = []
    for compiled in (False, True):
        with nb.using(backend=backend):
            nb.random.seed(0)
            model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
            opt = optim.Momentum(model.parameters(), lr=0.05)
            loss_fn = nn.SoftmaxCrossEntropy()

            def step(
                xb: Any, tb: Any, model: Any = model, opt: Any = opt, loss_fn: Any = loss_fn
            ) -> Any:
                loss = loss_fn(model(xb), tb)
                loss.backward()
                opt.step()
                opt.zero_grad()
                return loss

            run = nb.compile_step(step) if compiled else step
            losses = [
                float(run(nb.to_backend(x[i : i + 8]), nb.to_backend(t[i : i + 8])).item())
                for i in range(0, 40, 4)
            ]
        results.append((losses, _host(model.parameters())))
        assert all(p.grad is None for p in model.parameters())
        if compiled:
            assert run.replays == 8
    _same(backend, [np.array(results[0][0])], [np.array(results[1][0])])
    _same(backend, results[0][1], results[1][1])


def test_zero_grad_between_backward_and_the_update_is_replayed(backend: str):
    """A step resetting the gradients between ``backward()`` and ``step()`` (a step that
    only evaluates, written oddly) must not update on replay either: eager's step sees no
    gradient."""
    x, t = _data()
    with nb.using(backend=backend):
        nb.random.seed(0)
        model = nn.Sequential(nn.Linear(4, 3))
        opt = optim.SGD(model.parameters(), lr=0.5)
        loss_fn = nn.SoftmaxCrossEntropy()

        def step(xb: Any, tb: Any) -> Any:
            loss = loss_fn(model(xb), tb)
            loss.backward()
            opt.zero_grad()
            opt.step()
            return loss

        run = nb.compile_step(step)
        before = _host(model.parameters())
        for i in range(5):
            run(nb.to_backend(x[i : i + 8]), nb.to_backend(t[i : i + 8]))
        assert run.replays == 3
    for a, b in zip(before, _host(model.parameters()), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_step_returning_a_list_returns_a_list_on_replay(backend: str):
    """A step returning ``[loss, out]`` got a list from its recordings and a tuple from
    every replay (``out.append`` then failed from the third call on)."""
    x, t = _data()
    with nb.using(backend=backend):
        model = nn.Linear(4, 3)
        opt = optim.SGD(model.parameters(), lr=0.1)

        def step(xb: Any, tb: Any) -> Any:
            opt.zero_grad()
            y = model(xb)
            loss = nn.SoftmaxCrossEntropy()(y, tb)
            loss.backward()
            opt.step()
            return [loss, y]

        run = nb.compile_step(step)
        outs = [run(nb.to_backend(x[:8]), nb.to_backend(t[:8])) for _ in range(4)]
    assert [type(o) for o in outs] == [list] * 4
    assert all(isinstance(v, nb.Tensor) for v in outs[-1])


# -- jax: the jitted whole step -----------------------------------------------------------


def _jax_run(step_of: Any, calls: list[tuple[Any, ...]], compiled: bool, **kw: Any) -> Any:
    """Run ``step_of()``'s (model, optimizer, step) over ``calls`` on jax float32, eagerly
    or compiled; return the parameters, the optimizer and the compiled step."""
    with nb.using(backend="jax", dtype="float32"):
        nb.random.seed(0)
        model, opt, step, before = step_of()
        run = nb.compile_step(step, **kw) if compiled else step
        for i, args in enumerate(calls):
            before(i)
            run(*(nb.to_backend(a) if isinstance(a, np.ndarray) else a for a in args))
    return _host(model.parameters()), opt, run


def _plain_step(opt_cls: Any = optim.Adam, twice: bool = False, reset_at: int = -1) -> Any:
    def make() -> Any:
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        opt = opt_cls(model.parameters(), lr=0.01)
        fresh = opt.state_dict()
        loss_fn = nn.SoftmaxCrossEntropy()

        def step(xb: Any, tb: Any, *_rest: Any) -> Any:
            opt.zero_grad()
            loss = loss_fn(model(xb), tb)
            loss.backward()
            opt.step()
            if twice:
                opt.step()
            return loss

        def before(i: int) -> None:
            if i == reset_at:
                opt.load_state_dict(fresh)

        return model, opt, step, before

    return make


def _close(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    for p, q in zip(a, b, strict=True):
        assert float(np.max(np.abs(p - q))) <= 1e-5


def _alternating_batches(n: int) -> list[tuple[Any, ...]]:
    """Full batches of 8 and, every third call, the epoch's last batch of 5 rows."""
    x, t = _data()
    return [(x[:5], t[:5]) if i % 3 == 2 else (x[8:16], t[8:16]) for i in range(n)]


@pytest.mark.usefixtures("require_jax")
def test_jax_batches_of_two_sizes_keep_both_recordings():
    """On jax (immutable arrays: every update rebinds the parameters) a call of one cached
    signature invalidated the other's recording: with a last smaller batch per epoch, every
    call recorded again (30 recordings and no replay in 30 calls, never jitted)."""
    calls = _alternating_batches(30)
    eager, _, _ = _jax_run(_plain_step(), calls, False)
    got, _, run = _jax_run(_plain_step(), calls, True)
    _close(eager, got)
    assert run.records == 4 and run.replays == 26


@pytest.mark.usefixtures("require_jax")
def test_jax_a_string_argument_is_not_passed_into_the_trace():
    """A step taking a Python string (``step(x, t, "train")``, part of the signature by
    value) failed in its first jitted replay with jax's TypeError ("not a valid JAX type")."""
    x, t = _data()
    calls = [(x[i : i + 8], t[i : i + 8], "train") for i in range(0, 40, 8)]
    eager, _, _ = _jax_run(_plain_step(), calls, False)
    got, _, run = _jax_run(_plain_step(), calls, True)
    assert run.replays == 3
    _close(eager, got)


@pytest.mark.usefixtures("require_jax")
def test_jax_adam_state_reset_mid_training_replays():
    """Loading an optimizer state saved before its first step (empty per-parameter state)
    between jitted replays ended in a bare ``KeyError: 'step'``."""
    x, t = _data()
    calls = [(x[i : i + 8], t[i : i + 8]) for i in range(0, 40, 4)]
    eager, opt_e, _ = _jax_run(_plain_step(reset_at=5), calls, False)
    got, opt_c, run = _jax_run(_plain_step(reset_at=5), calls, True)
    assert run.replays == 8
    assert [st.get("step") for st in opt_c.state] == [st.get("step") for st in opt_e.state]
    _close(eager, got)


@pytest.mark.usefixtures("require_jax")
def test_jax_two_optimizer_steps_in_one_step_count_both():
    """A step calling ``opt.step()`` twice: the jitted replay advanced ``opt.steps`` and
    Adam's per-parameter counts by one per call where the trace (and eager) advanced them
    by two, so the bias corrections of later calls were wrong (1.4e-3 off after 6 calls)."""
    x, t = _data()
    calls = [(x[i : i + 8], t[i : i + 8]) for i in range(0, 24, 4)]
    eager, opt_e, _ = _jax_run(_plain_step(twice=True), calls, False)
    got, opt_c, run = _jax_run(_plain_step(twice=True), calls, True)
    assert run.replays == 4
    assert opt_c.steps == opt_e.steps == 12
    assert [st.get("step") for st in opt_c.state] == [12] * 4
    _close(eager, got)


@pytest.mark.usefixtures("require_jax")
def test_jax_zero_grad_of_a_parameter_the_step_does_not_train():
    """Two compiled steps sharing a model on jax never replayed: each step's update rebound
    the shared parameters, which invalidated the other's recording, so every call recorded
    again. Now both replay, jitted and not, and the other head's gradient is reset as
    eager's ``zero_grad()`` resets it."""
    eager = _two_heads("jax", False)
    for jit in (True, False):
        _close(eager, _two_heads("jax", True, jit=jit))


@pytest.mark.usefixtures("require_jax")
def test_jax_a_parameter_the_step_does_not_use_keeps_a_real_array():
    """An optimizer over two heads, a step training one head without ``zero_grad()`` while
    the other head held a gradient: the jitted trace updated that head as a constant of the
    trace, its ``.data`` became a leaked tracer (the parameter lost) and the next use raised
    jax's UnexpectedTracerError."""
    x, t = _data()
    results = []
    for compiled in (False, True):
        with nb.using(backend="jax", dtype="float32"):
            nb.random.seed(0)
            enc, head_a, head_b = nn.Linear(4, 8), nn.Linear(8, 3), nn.Linear(8, 3)
            params = [*enc.parameters(), *head_a.parameters(), *head_b.parameters()]
            opt = optim.SGD(params, lr=0.1)
            loss_fn = nn.SoftmaxCrossEntropy()

            def step_a(
                xb: Any, tb: Any, head_a: Any = head_a, parts: Any = (enc, opt, loss_fn)
            ) -> Any:
                enc, opt, loss_fn = parts
                loss = loss_fn(head_a(enc(xb)), tb)
                loss.backward()
                opt.step()  # (also applies head_b's gradient, as eager's does)
                return loss

            def step_b(
                xb: Any, tb: Any, head_b: Any = head_b, parts: Any = (enc, opt, loss_fn)
            ) -> Any:
                enc, opt, loss_fn = parts
                loss = loss_fn(head_b(enc(xb)), tb)
                loss.backward()
                opt.step()
                return loss

            fa, fb = step_a, step_b
            if compiled:
                fa, fb = nb.compile_step(step_a), nb.compile_step(step_b)
            for i in range(6):
                if i % 2 == 0:
                    opt.zero_grad()
                fa(nb.to_backend(x[:8]), nb.to_backend(t[:8]))
                fb(nb.to_backend(x[8:16]), nb.to_backend(t[8:16]))
            if compiled:
                assert fa.replays == 4 and fb.replays == 4
        results.append(_host(params))
    _close(*results)


def test_an_unhashable_key_is_an_argument_error():
    """``compile_step(fn, key=lambda: [model.training])`` raised a bare ``TypeError:
    unhashable type: 'list'`` from the signature cache on the first call."""
    model = nn.Linear(4, 3)
    opt = optim.SGD(model.parameters(), lr=0.1)

    def step(xb: Any) -> Any:
        opt.zero_grad()
        loss = (model(xb) ** 2).sum()
        loss.backward()
        opt.step()
        return loss

    run = nb.compile_step(step, key=lambda: [model.training])
    with pytest.raises(ArgumentError, match=r"key.*hashable"):
        run(np.ones((2, 4)))
