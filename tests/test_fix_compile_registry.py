"""Fixes to backend loading (``nnbackend.registry``) and the compiled step (``nb.compile_step``).

Covered: a backend whose ``load_namespace`` fails with something other than ImportError (a
broken install raising AttributeError, OSError, RuntimeError or calling ``sys.exit()``) through
``nb.namespace``, ``backend_for`` and the record's loader itself (what ``device`` and
``datasets`` call), and the registry's state after such a failure; then an attacker's review of
the compiled step, compared with the eager step bit for bit on NumPy: a Parameter object, a
buffer, a submodule (with or without parameters) or the optimizer replaced between calls (in a
module, in a dict the step reads, on a bound ``self``), ``model.eval()`` between calls,
replacements between the two checking recordings, a KeyboardInterrupt inside a replay followed
by more calls, parameters cast to float32 mid-run, and the step returning non-scalars (a tuple
and a list holding the logits, kept over several replays).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim, registry
from nnbackend.autograd.function import Function
from nnbackend.errors import BackendError, BackendUnavailableError, CompileWarning
from nnbackend.namespace import backend_for

PLUGIN = "fixcompreg"


def _compat_numpy() -> Any:
    import array_api_compat.numpy as xp

    return xp


@pytest.fixture
def plugin() -> Iterator[Callable[..., nb.Backend]]:
    """``plugin(load)``: registers a NumPy-array backend whose ``load_namespace`` is ``load``;
    unregistered after the test."""

    def register(load: Callable[[], Any], **fields: Any) -> nb.Backend:
        record = nb.Backend(
            name=PLUGIN,
            load_namespace=load,
            probe=lambda: None,
            array_modules=("numpy",),
            to_host=np.asarray,
            from_host=lambda a, device=None: np.asarray(a),
            **fields,
        )
        return nb.register_backend(
            record, replace="numpy" if registry.find(PLUGIN) is None else True
        )

    yield register
    if registry.find(PLUGIN) is not None:
        registry.unregister_backend(PLUGIN)


def _failing(exc: BaseException, calls: list[int]) -> Callable[[], Any]:
    def load() -> Any:
        calls.append(1)
        raise exc

    return load


# -- 1. load_namespace failing with something other than ImportError -------------------------


@pytest.mark.parametrize(
    "exc",
    [
        AttributeError("module 'brokenlib' has no attribute 'linalg'"),
        OSError("libcudart.so.12: cannot open shared object file"),
        RuntimeError("function '_has_torch_function' already has a docstring"),
        SystemExit(1),
    ],
    ids=["attribute", "oserror", "runtime", "sys_exit"],
)
def test_a_broken_load_namespace_raises_a_backend_error_naming_it(
    plugin: Any, exc: BaseException
) -> None:
    """A backend whose load_namespace raised AttributeError, OSError, RuntimeError or
    SystemExit (a broken install) came through nb.namespace() unwrapped (SystemExit ended the
    program), without the backend's name or a fix."""
    plugin(_failing(exc, []), install_hint="pip install brokenlib")
    with pytest.raises(BackendError) as caught:
        nb.namespace(PLUGIN)
    error = caught.value
    assert isinstance(error, BackendUnavailableError)
    assert error.__cause__ is exc
    message = str(error)
    assert repr(PLUGIN) in message
    assert type(exc).__name__ in message
    assert "reinstall" in message and "pip install brokenlib" in message
    assert "another backend" in message


def test_every_caller_of_the_loader_gets_the_typed_error(plugin: Any) -> None:
    """backend_for() of an array, and the record's own load_namespace() (which device moves
    and datasets call), raised the loader's bare RuntimeError."""
    boom = RuntimeError("CUDA driver initialization failed")
    plugin(_failing(boom, []))
    with pytest.raises(BackendError) as caught:
        backend_for(np.ones(3))
    assert caught.value.__cause__ is boom
    with pytest.raises(BackendError) as caught:
        registry.get(PLUGIN).load_namespace()
    assert caught.value.__cause__ is boom


def test_a_failed_backend_is_not_left_half_registered(plugin: Any) -> None:
    """After its load_namespace failed, the backend stayed listed as usable
    (available_backends, probe() None) and every later call imported again, raising whatever
    the half-imported library raised the second time."""
    calls: list[int] = []
    first = RuntimeError("first import failed half-way")
    plugin(_failing(first, calls))
    assert PLUGIN in nb.available_backends()  # (its probe said so)
    with pytest.raises(BackendError):
        nb.namespace(PLUGIN)
    assert calls == [1]
    assert PLUGIN not in nb.available_backends()
    reason = registry.probe(PLUGIN)
    assert reason is not None and "first import failed half-way" in reason
    for _ in range(2):  # the first failure again, not a second import
        with pytest.raises(BackendError) as caught:
            nb.namespace(PLUGIN)
        assert caught.value.__cause__ is first
        assert isinstance(caught.value, BackendUnavailableError)
    assert calls == [1]
    # Registering a working record under the name starts afresh.
    plugin(_compat_numpy)
    assert nb.namespace(PLUGIN, "float64").asarray([1.0]).dtype == np.float64
    assert PLUGIN in nb.available_backends()


def test_a_keyboard_interrupt_in_the_loader_is_not_kept(plugin: Any) -> None:
    """(The user's Ctrl-C while a library imports propagates, and is no reason the backend
    is broken: the next call loads it.)"""
    state = {"interrupt": True}

    def load() -> Any:
        if state.pop("interrupt", False):
            raise KeyboardInterrupt
        return _compat_numpy()

    plugin(load)
    with pytest.raises(KeyboardInterrupt):
        nb.namespace(PLUGIN)
    assert nb.namespace(PLUGIN, "float64").ones(2).dtype == np.float64


def test_built_in_loaders_still_work_and_copies_are_guarded_under_their_name() -> None:
    """(The guard keeps the records themselves: a built-in's loader still returns its
    namespace, and a record copied with dataclasses.replace names itself in the error.)"""
    record = registry.get("numpy")
    assert record.load_namespace() is _compat_numpy()
    boom = OSError("no such library")
    copy = dataclasses.replace(
        record, name=PLUGIN, load_namespace=_failing(boom, []), array_modules=()
    )
    nb.register_backend(copy)
    try:
        with pytest.raises(BackendError, match=repr(PLUGIN)):
            copy.load_namespace()
        renamed = dataclasses.replace(copy, name=PLUGIN + "2")  # (copies the guarded loader)
        nb.register_backend(renamed)
        with pytest.raises(BackendError, match=repr(PLUGIN + "2")):
            renamed.load_namespace()
        registry.unregister_backend(PLUGIN + "2")
    finally:
        registry.unregister_backend(PLUGIN)


# -- 2. the compiled step after a parameter, module or optimizer object was replaced ----------


def _net(rng: np.random.Generator) -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    for p in model.parameters():
        p.data = rng.standard_normal(p.data.shape)
    return model


def _state(model: nn.Module) -> list[np.ndarray]:
    return [np.array(a, copy=True) for a in model.state_dict().values()]


def _run(compiled: bool, change: Callable[[dict[str, Any]], None], calls: int = 4) -> Any:
    """Train through a dict the step reads (``held``) for ``calls`` calls, ``change(held)``,
    then ``calls`` more; the losses, the model's state and the step."""
    nb.random.seed(0)
    rng = np.random.default_rng(0)
    held: dict[str, Any] = {"model": _net(rng)}
    held["opt"] = optim.SGD(held["model"].parameters(), lr=0.1)
    loss_fn = nn.MSELoss()

    def train(x: Any, t: Any) -> Any:
        held["opt"].zero_grad()
        loss = loss_fn(held["model"](x), t)
        loss.backward()
        held["opt"].step()
        return loss

    step: Any = nb.compile_step(train) if compiled else train
    x, t = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    losses = [float(step(x, t).item()) for _ in range(calls)]
    change(held)
    losses += [float(step(x, t).item()) for _ in range(calls)]
    return losses, _state(held["model"]), step


def _replace_weight(held: dict[str, Any]) -> None:
    held["model"][3].weight = nn.Parameter(np.full((6, 2), 0.5))


def _replace_linear(held: dict[str, Any]) -> None:
    layer = nn.Linear(6, 2)
    layer.weight.data = np.full((6, 2), -0.25)
    setattr(held["model"], "3", layer)


def _replace_activation(held: dict[str, Any]) -> None:
    setattr(held["model"], "2", nn.Tanh())


def _replace_buffer(held: dict[str, Any]) -> None:
    held["model"][1].running_mean = np.ones(6)


def _replace_optimizer(held: dict[str, Any]) -> None:
    held["opt"] = optim.Adam(held["model"].parameters(), lr=0.01)


def _replace_model(held: dict[str, Any]) -> None:
    model = _net(np.random.default_rng(7))
    held["model"], held["opt"] = model, optim.SGD(model.parameters(), lr=0.1)


def _eval_mode(held: dict[str, Any]) -> None:
    held["model"].eval()


CHANGES = {
    "parameter": _replace_weight,
    "submodule": _replace_linear,
    "activation": _replace_activation,
    "buffer": _replace_buffer,
    "optimizer": _replace_optimizer,
    "model": _replace_model,
    "eval": _eval_mode,
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_a_replaced_object_is_seen_by_the_compiled_step(name: str) -> None:
    """A Parameter object (model.fc.weight = nn.Parameter(...)), a buffer, a submodule (a
    Linear, a parameterless ReLU), the optimizer or the whole model replaced between calls,
    or model.eval(), left the replay training the old objects (the old weight, the old
    BatchNorm statistics, SGD instead of Adam, dropout-free eval ignored) with no error and
    no step.reset(): the losses and the model then differed from the eager step's."""
    eager_losses, eager_state, _ = _run(False, CHANGES[name])
    losses, state, step = _run(True, CHANGES[name])
    assert losses == eager_losses
    for a, b in zip(state, eager_state, strict=True):
        np.testing.assert_array_equal(a, b)
    assert step.replays >= 4  # (replayed again after the change)


def test_objects_held_by_a_bound_self_are_seen() -> None:
    """A step that is a method reading self.model and self.opt kept the old model after
    self.model.head was replaced."""

    class Task:
        def __init__(self, rng: np.random.Generator) -> None:
            self.model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
            for p in self.model.parameters():
                p.data = rng.standard_normal(p.data.shape)
            self.opt = optim.SGD(self.model.parameters(), lr=0.05)

        def step(self, x: Any, t: Any) -> Any:
            self.opt.zero_grad()
            loss = nn.MSELoss()(self.model(x), t)
            loss.backward()
            self.opt.step()
            return loss

    def run(compiled: bool) -> list[float]:
        rng = np.random.default_rng(1)
        task = Task(rng)
        step = nb.compile_step(task.step) if compiled else task.step
        x, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 1))
        out = [float(step(x, t).item()) for _ in range(4)]
        task.model[2].bias = nn.Parameter(np.array([3.0]))
        return out + [float(step(x, t).item()) for _ in range(4)]

    assert run(True) == run(False)


def test_a_replacement_between_the_two_checking_recordings_is_no_disagreement(
    mse_step: Callable[..., Any],
) -> None:
    """A parameter replaced between a signature's first and second recording made them
    "differ" (a CompileWarning, and the signature ran eagerly for good), instead of the new
    parameter's recordings being compared with each other."""
    rng = np.random.default_rng(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    opt = optim.SGD(model.parameters(), lr=0.05)
    step = nb.compile_step(mse_step(model, opt))
    x, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)
        step(x, t)
        model[2].weight = nn.Parameter(rng.standard_normal((4, 1)))
        for _ in range(4):
            step(x, t)
    assert not step.eager_signatures
    assert step.replays == 2


def test_an_unchanged_model_still_replays_from_the_third_call() -> None:
    """(The checks of where the step finds its objects cost no replays.)"""
    _losses, _state_after, step = _run(True, lambda held: None, calls=5)
    assert (step.records, step.replays) == (2, 8)


# -- 3. attacker's checks of the compiled step (no defect found: kept as regressions) ---------


class _Trap(Function):
    """x * 1, raising KeyboardInterrupt once in forward or backward when armed."""

    armed: str | None = None

    def forward(self, x: Any) -> Any:
        if _Trap.armed == "forward":
            _Trap.armed = None
            raise KeyboardInterrupt
        return x * 1.0

    def backward(self, gy: Any) -> Any:
        if _Trap.armed == "backward":
            _Trap.armed = None
            raise KeyboardInterrupt
        return gy * 1.0


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_a_keyboard_interrupt_inside_a_replay_then_more_calls_equal_eager(where: str) -> None:
    """(A Ctrl-C inside a replayed node, then more calls: the same losses, parameters and
    gradients as the eager step interrupted at the same place.)"""

    def run(compiled: bool) -> Any:
        rng = np.random.default_rng(3)
        model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
        for p in model.parameters():
            p.data = rng.standard_normal(p.data.shape)
        opt = optim.Adam(model.parameters(), lr=0.01)

        def train(x: Any, t: Any) -> Any:
            opt.zero_grad()
            loss = nn.MSELoss()(model[2](model[1](_Trap()(model[0](x)))), t)
            loss.backward()
            opt.step()
            return loss

        step = nb.compile_step(train) if compiled else train
        x, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
        out: list[Any] = []
        for i in range(8):
            _Trap.armed = where if i == 4 else None
            try:
                out.append(float(step(x, t).item()))
            except KeyboardInterrupt:
                out.append("interrupted")
        grads = [np.array(p.grad, copy=True) for p in model.parameters()]
        return out, [np.array(p.data, copy=True) for p in model.parameters()], grads

    eager, compiled = run(False), run(True)
    assert compiled[0] == eager[0] and "interrupted" in eager[0]
    for a, b in zip(compiled[1] + compiled[2], eager[1] + eager[2], strict=True):
        np.testing.assert_array_equal(a, b)


def test_non_scalar_results_kept_over_replays_equal_eager() -> None:
    """(A step returning (loss, logits) and [logits, loss]: results kept over several
    replays still hold their own step's values, as eager's.)"""

    def run(compiled: bool, as_list: bool) -> list[list[np.ndarray]]:
        nb.random.seed(0)
        rng = np.random.default_rng(4)
        model = nn.Sequential(nn.Linear(3, 5), nn.Dropout(0.3), nn.Linear(5, 2))
        opt = optim.SGD(model.parameters(), lr=0.1)

        def train(x: Any, t: Any) -> Any:
            opt.zero_grad()
            y = model(x)
            loss = nn.MSELoss()(y, t)
            loss.backward()
            opt.step()
            return [y, loss] if as_list else (loss, y)

        step = nb.compile_step(train) if compiled else train
        x, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
        kept = [step(x, t) for _ in range(6)]
        return [[np.array(r.data, copy=True) for r in out] for out in kept]

    for as_list in (False, True):
        for a, b in zip(run(True, as_list), run(False, as_list), strict=True):
            for u, v in zip(a, b, strict=True):
                np.testing.assert_array_equal(u, v)


def test_parameters_cast_to_float32_mid_run_equal_eager(mse_step: Callable[..., Any]) -> None:
    """(Parameters and data cast to float32 after some float64 steps: recorded again, and the
    same bits as eager.)"""

    def run(compiled: bool) -> Any:
        nb.random.seed(0)
        rng = np.random.default_rng(5)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
        opt = optim.Adam(model.parameters(), lr=0.01)
        train = mse_step(model, opt)
        step = nb.compile_step(train) if compiled else train
        x, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 1))
        out = [float(step(x, t).item()) for _ in range(4)]
        for p in model.parameters():
            p.data = p.data.astype(np.float32)
        x, t = x.astype(np.float32), t.astype(np.float32)
        out += [float(step(x, t).item()) for _ in range(4)]
        return out, [np.array(p.data, copy=True) for p in model.parameters()]

    eager, compiled = run(False), run(True)
    assert compiled[0] == eager[0]
    for a, b in zip(compiled[1], eager[1], strict=True):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
