"""The compiled training step (``nb.compile_step``, ``Trainer(compile=True)``): replays equal
the eager step bit for bit, re-record on a new signature, never freeze hyperparameters,
optimizer state or dropout masks, and refuse what they cannot replay with typed errors."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim, schedules
from nnbackend.errors import (
    ArgumentError,
    BackendMismatchError,
    CompileError,
    CompileWarning,
    LabelError,
)

STEPS = 200
OPTIMIZERS = {
    "sgd": lambda p: optim.SGD(p, lr=0.1),
    "momentum": lambda p: optim.Momentum(p, lr=0.05, momentum=0.9),
    "adam": lambda p: optim.Adam(p, lr=0.01),
}


def _data(n: int = 150, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 2)), rng.integers(0, 3, n)


def _step_of(model: Any, opt: Any) -> Any:
    """One training step of ``model`` with ``opt`` on softmax cross-entropy, as users write it."""
    loss_fn = nn.SoftmaxCrossEntropy()

    def step(x: Any, t: Any) -> Any:
        opt.zero_grad()
        loss = loss_fn(model(x), t)
        loss.backward()
        opt.step()
        return loss

    return step


def _setup(backend: str, opt_name: str, dropout: bool) -> tuple[Any, Any, Any]:
    """A model, its optimizer and a one-step function on ``backend`` (same seed each time)."""
    with nb.using(backend=backend):
        nb.random.seed(0)
        layers: list[Any] = [nn.Linear(2, 16), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(0.3))
        layers += [nn.Linear(16, 16), nn.Sigmoid(), nn.Linear(16, 3)]
        model = nn.Sequential(*layers)
    opt = OPTIMIZERS[opt_name](model.parameters())
    step = _step_of(model, opt)

    return model, opt, step


def _batches(backend: str, steps: int, batch: int = 30) -> list[tuple[Any, Any]]:
    x, t = _data()
    out = []
    for i in range(steps):
        lo = (i * batch) % len(x)
        xb, tb = x[lo : lo + batch], t[lo : lo + batch]
        with nb.using(backend=backend):
            out.append((nb.to_backend(xb), nb.to_backend(tb)))
    return out


def _train(backend: str, step: Any, batches: list[tuple[Any, Any]]) -> list[float]:
    nb.random.seed(7)  # the dropout masks' stream
    with nb.using(backend=backend):
        return [float(step(x, t).item()) for x, t in batches]


def _host(model: Any) -> list[np.ndarray]:
    return [np.asarray(p.numpy()) for p in model.parameters()]


@pytest.mark.parametrize("dropout", [False, True], ids=["plain", "dropout"])
@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_replays_equal_the_eager_step_bit_for_bit(backend: str, opt_name: str, dropout: bool):
    """200 steps: every loss and every parameter equal the eager run's exactly (the replay
    runs the nodes' own code, inline or through their methods, on the same arrays in the
    same order; the optimizer's step runs as written, so Adam's step counts and the state
    are live, and dropout draws a fresh mask per replay from the same stream). This holds on
    every eager backend, torch and array-api-strict included: no tolerance is needed because
    no operation differs. (On jax, opted in, too: ``jit=False`` replays its nodes eagerly;
    the jitted step has its own test.)"""
    batches = _batches(backend, STEPS)
    eager_model, _, eager_step = _setup(backend, opt_name, dropout)
    model, _, step = _setup(backend, opt_name, dropout)
    compiled = nb.compile_step(step, jit=False)
    expected = _train(backend, eager_step, batches)
    got = _train(backend, compiled, batches)
    assert compiled.replays == STEPS - 2 and compiled.records == 2
    assert got == expected
    for a, b in zip(_host(model), _host(eager_model), strict=True):
        np.testing.assert_array_equal(a, b)


def _inline_case(name: str) -> tuple[Any, Any]:
    """A model and a batch for :func:`test_small_nodes_run_inline_and_equal_eager`."""
    x, t = _data(150)
    if name == "no_bias_leaky":
        layers = [nn.Linear(2, 8, bias=False), nn.LeakyReLU(0.2), nn.Linear(8, 3, bias=False)]
    elif name == "batch_of_one":  # Linear keeps its methods for one row
        layers = [nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3)]
        x, t = x[:1], t[:1]
    elif name == "float64":
        layers = [nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 3)]
    else:  # "wide": above the recycling size, so Linear replays through its methods
        layers = [nn.Linear(2, 300), nn.ReLU(), nn.Linear(300, 3)]
    dtype = "float64" if name == "float64" else "float32"
    return nn.Sequential(*layers), (x.astype(dtype), t)


@pytest.mark.parametrize("name", ["no_bias_leaky", "batch_of_one", "float64", "wide"])
def test_small_nodes_run_inline_and_equal_eager(name: str):
    """Linear, the ReLU family, Sigmoid and the softmax loss give a replay their own code
    (``Function.replay_code``), written into it in place of calls to their methods, where
    their arrays are small; elsewhere they keep the calls. Either way 20 steps equal the
    eager steps bit for bit, and the method calls left are the ones expected."""
    runs, codes = [], []
    for compiled in (False, True):
        with nb.using(backend="numpy", dtype="float64" if name == "float64" else "float32"):
            nb.random.seed(0)
            model, (x, t) = _inline_case(name)
        opt = optim.SGD(model.parameters(), lr=0.1)
        step = nb.compile_step(_step_of(model, opt)) if compiled else _step_of(model, opt)
        runs.append(([float(step(x, t).item()) for _ in range(20)], _host(model)))
        if compiled:
            assert step.replays == 18
            (rec,) = step._cache.values()
            codes = [line.strip() for line in rec.code.splitlines()]
    assert runs[1][0] == runs[0][0]
    for a, b in zip(runs[1][1], runs[0][1], strict=True):
        np.testing.assert_array_equal(a, b)
    calls = sorted({line.split("(")[0].split(" = ")[-1] for line in codes if ".replay" in line})
    backwards = [line for line in codes if ".backward(" in line]
    expected = {
        "no_bias_leaky": ([], 0),
        "batch_of_one": (["n0.replay_forward", "n2.replay_forward"], 2),
        "float64": (["n1.forward"], 1),  # Tanh has no code of its own
        "wide": (["n0.replay_forward", "n2.replay_forward"], 2),
    }[name]
    calls += sorted({line.split("(")[0].split(" = ")[-1] for line in codes if ".forward(" in line})
    assert (calls, len(backwards)) == expected, codes
    # The loss's inline backward takes its gradient as one (x * 1 is x): the seed of
    # loss.backward() is not even made.
    assert not [line for line in codes if "ONE_" in line], codes


@pytest.mark.parametrize("seed", ["explicit", "shaped"])
def test_a_loss_given_its_own_gradient_replays_it(seed: str):
    """``loss.backward(g)`` with a gradient other than the implicit one, or a one-element
    loss of shape (1,), is replayed with that gradient (the product with the implicit seed
    is left out only where the seed is the 0-d one): 8 steps equal the eager steps."""
    runs = []
    for compiled in (False, True):
        with nb.using(backend="numpy"):
            nb.random.seed(0)
            model = nn.Sequential(nn.Linear(2, 8), nn.Sigmoid(), nn.Linear(8, 3))
        opt = optim.SGD(model.parameters(), lr=0.1)
        loss_fn = nn.SoftmaxCrossEntropy()

        def step(x: Any, t: Any, model: Any = model, opt: Any = opt, loss_fn: Any = loss_fn) -> Any:
            opt.zero_grad()
            loss = loss_fn(model(x), t)
            if seed == "explicit":
                loss.backward(np.asarray(2.5))
            else:
                loss = loss.reshape(1)
                loss.backward()
            opt.step()
            return loss

        run = nb.compile_step(step) if compiled else step
        x, t = _batches("numpy", 1)[0]
        runs.append(([float(run(x, t).numpy().sum()) for _ in range(8)], _host(model)))
        if compiled:
            assert run.replays == 6
    assert runs[1][0] == runs[0][0]
    for a, b in zip(runs[1][1], runs[0][1], strict=True):
        np.testing.assert_array_equal(a, b)


def _sigmoid_net_run(dtype: str, compiled: bool, steps: int = 40) -> tuple[list[float], Any]:
    """The tiny 2-40-3 sigmoid network (SGD, integer labels) trained ``steps`` steps in
    ``dtype``, eagerly or compiled; its losses and model."""
    x, t = _data()
    with nb.using(backend="numpy", dtype=dtype):
        nb.random.seed(0)
        model = nn.Sequential(nn.Linear(2, 40), nn.Sigmoid(), nn.Linear(40, 3))
    opt = optim.SGD(model.parameters(), lr=0.5)
    step = _step_of(model, opt)

    run = nb.compile_step(step) if compiled else step
    xs = x.astype(dtype)
    losses = []
    for i in range(steps):
        lo = (i * 30) % len(x)
        losses.append(float(run(xs[lo : lo + 30], t[lo : lo + 30]).item()))
    if compiled:
        assert run.replays >= steps - 3  # (a first call may see other settings)
    return losses, model


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_replayed_nodes_keep_the_decisions_of_their_recording(dtype: str):
    """Linear, Sigmoid and SoftmaxCrossEntropy replay through ``replay_forward`` (forward
    without deciding again what the recording decided); in float16 NumPy computes all three
    in float32 at these sizes (1200 sigmoid elements, 2400 and 3600 multiply-adds) and stores
    float16: replays equal the eager steps bit for bit on both paths."""
    got, model = _sigmoid_net_run(dtype, compiled=True)
    expected, eager_model = _sigmoid_net_run(dtype, compiled=False)
    assert got == expected
    for a, b in zip(_host(model), _host(eager_model), strict=True):
        assert a.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a, b)


def _with_node(node: type, lr: float) -> tuple[list[list[float]], Any]:
    """Six steps of Linear(2, 8) -> ``node()`` -> Linear(8, 3) on the softmax loss, eager and
    then compiled (same seed): the losses of each, and the compiled step."""
    losses, run = [], None
    for compiled in (False, True):
        with nb.using(backend="numpy"):
            nb.random.seed(0)
            model, head = nn.Linear(2, 8), nn.Linear(8, 3)
        opt = optim.SGD([*model.parameters(), *head.parameters()], lr=lr)

        def step(xb: Any, tb: Any, model: Any = model, head: Any = head, opt: Any = opt) -> Any:
            opt.zero_grad()
            loss = nn.SoftmaxCrossEntropy()(head(node()(model(xb))), tb)
            loss.backward()
            opt.step()
            return loss

        run = nb.compile_step(step) if compiled else step
        x, t = _batches("numpy", 1)[0]
        losses.append([float(run(x, t).item()) for _ in range(6)])
    return losses, run


def test_a_subclass_overriding_forward_alone_is_replayed_with_its_forward():
    """A Function subclass that overrides ``forward`` but inherits ``replay_forward`` (from
    the built-in Sigmoid) is replayed with its own ``forward``: the inherited shortcut would
    skip the override. With the override doubling the output, replays equal the eager steps."""
    from nnbackend.nn import functional as F

    class DoubledSigmoid(F.Sigmoid):
        def forward(self, x: Any) -> Any:
            return super().forward(x) * 2.0

        def backward(self, gy: Any) -> Any:
            return super().backward(gy * 2.0)

    losses, run = _with_node(DoubledSigmoid, lr=0.1)
    assert run.replays == 4
    assert losses[1] == losses[0]


def test_a_subclass_overriding_backward_alone_keeps_its_backward_in_a_replay():
    """A subclass of a node with replay code (Sigmoid) that overrides only ``backward`` (its
    own gradient, here doubled) is replayed through its methods, not the inherited code that
    would skip the override: replays equal the eager steps."""
    from nnbackend.nn import functional as F

    class SteeperSigmoid(F.Sigmoid):
        def backward(self, gy: Any) -> Any:
            return super().backward(gy) * 2.0

    losses, run = _with_node(SteeperSigmoid, lr=0.5)
    assert run.replays == 4
    (rec,) = run._cache.values()
    assert "n1.backward(" in rec.code
    assert losses[1] == losses[0]


def test_labels_out_of_range_raise_a_label_error_in_a_replay():
    """A replay checks the labels of every call, as the eager step does: a new label array of
    the recorded shape and dtype with a label out of range is a LabelError, not a loss."""
    _, _, step = _setup("numpy", "sgd", dropout=False)
    compiled = nb.compile_step(step)
    x, t = _batches("numpy", 1)[0]
    for _ in range(3):
        compiled(x, t)
    assert compiled.replays == 1
    bad = np.array(t, copy=True)
    bad[4] = 3  # three classes
    with pytest.raises(LabelError, match=r"\[3\]"):
        compiled(x, bad)
    bad[4] = -1
    with pytest.raises(LabelError, match=r"\[-1\]"):
        compiled(x, bad)


def test_dropout_masks_are_drawn_afresh_on_every_replay():
    """Two replays of one batch give two different losses (two masks); a frozen mask would
    give the same loss twice with lr=0."""
    _, opt, step = _setup("numpy", "sgd", dropout=True)
    opt.lr = 0.0
    compiled = nb.compile_step(step)
    x, t = _batches("numpy", 1)[0]
    losses = [float(compiled(x, t).item()) for _ in range(6)]
    assert compiled.replays == 4
    assert len(set(losses[2:])) == 4


def _wide_step() -> Any:
    """A one-step function of a 64-256-4 MLP with dropout (its activations of 128 rows are
    256 KiB in float64), seeded the same on each call."""
    with nb.using(backend="numpy"):
        nb.random.seed(0)
        model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 4))
    opt = optim.SGD(model.parameters(), lr=0.05)
    step = _step_of(model, opt)

    return step


def test_a_fresh_interpreter_records_twice_then_replays(run_python: Any):
    """The first use of nnbackend reads the environment, which bumps the settings version
    that a recording's signature holds. Where the compiled step is that first use (a Tensor
    made from a NumPy array reads nothing), the environment is now read before the first
    signature, so the second call is not a new signature (three recordings instead of two)."""
    result = run_python(
        """
        import numpy as np
        import nnbackend as nb
        w = nb.Tensor(np.ones(3), requires_grad=True)
        def step(x):
            w.grad = None
            loss = (w * x).sum()
            loss.backward()
            return loss
        compiled = nb.compile_step(step)
        for _ in range(4):
            compiled(np.ones(3))
        print(compiled.records, compiled.replays)
        """
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["2", "2"]


def test_a_replay_keeps_no_activations_between_steps():
    """After a step, eager holds nothing of its graph; a replay reuses the recorded nodes,
    and lets go of the large arrays their forward kept for backward (inputs, masks,
    outputs), so a compiled step holds no step's activations between calls. Losses still
    equal eager's, with dropout."""
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((128, 64)), rng.integers(0, 4, 128)
    runs = []
    for compiled in (False, True):
        step = nb.compile_step(_wide_step()) if compiled else _wide_step()
        nb.random.seed(1)
        runs.append([float(step(x, t).item()) for _ in range(4)])
    assert runs[0] == runs[1]
    assert step.replays == 2
    (rec,) = step._cache.values()
    held = {
        (type(f).__name__, key): getattr(v, "nbytes", 0)
        for f in rec.nodes
        for key, v in vars(f).items()
        if getattr(v, "nbytes", 0) >= 64 * 1024
    }
    assert held == {}


def test_a_new_batch_size_records_again_and_both_recordings_stay_cached():
    """The last, smaller batch of an epoch has its own signature: recorded on its own, then
    replayed; the full batches keep replaying their recording. Equal to eager throughout."""
    x, t = _data(100)
    sizes = [30, 30, 30, 10] * 6  # four epochs of 100 rows in batches of 30
    eager_model, _, eager_step = _setup("numpy", "adam", True)
    model, _, step = _setup("numpy", "adam", True)
    compiled = nb.compile_step(step)
    for run in (eager_step, compiled):
        nb.random.seed(3)
        lo = 0
        for n in sizes:
            run(x[lo : lo + n], t[lo : lo + n])
            lo = (lo + n) % 100
    assert compiled.records == 4  # two signatures, each recorded twice (checked)
    assert compiled.replays == len(sizes) - 4
    for a, b in zip(_host(model), _host(eager_model), strict=True):
        np.testing.assert_array_equal(a, b)


def _changes() -> dict[str, Any]:
    """Ways one call's signature can differ from the replayed one: each maps the hot
    arguments ``(x, t, scale)`` and the key's state to the changed call."""
    return {
        "batch size": lambda x, t, s, k: ((x[:20], t[:20], s), k),
        "a dtype": lambda x, t, s, k: ((x, t.astype(np.int32), s), k),
        "a Tensor argument": lambda x, t, s, k: ((nb.Tensor(x), t, s), k),
        "a scalar's value": lambda x, t, s, k: ((x, t, 0.5), k),
        "a scalar's type": lambda x, t, s, k: ((x, t, 2), k),
        "the key": lambda x, t, s, k: ((x, t, s), not k),
    }


def _scaled_step(model: Any, opt: Any, flag: list[bool]) -> Any:
    """A step whose loss is scaled by its third argument, negated while ``flag[0]``."""
    loss_fn = nn.SoftmaxCrossEntropy()

    def step(x: Any, t: Any, scale: Any) -> Any:
        opt.zero_grad()
        loss = loss_fn(model(x), t) * (scale if not flag[0] else -scale)
        loss.backward()
        opt.step()
        return loss

    return step


@pytest.mark.parametrize("change", sorted(_changes()))
def test_a_call_with_another_signature_never_takes_the_replayed_recording(change: str):
    """After replays of one signature, a call differing in any part of it (an argument's
    shape, dtype or kind, a scalar's value or type, the ``key()``) records its own step,
    equal to eager; the first signature then replays again."""
    x, t = _data(30)
    results = []
    for compile_it in (False, True):
        model, opt, _ = _setup("numpy", "sgd", False)
        flag = [False]
        step = _scaled_step(model, opt, flag)
        run = nb.compile_step(step, key=lambda f=flag: f[0]) if compile_it else step
        losses = [float(run(x, t, 2.0).item()) for _ in range(4)]
        args, flag[0] = _changes()[change](x, t, 2.0, flag[0])
        losses += [float(run(*args).item()) for _ in range(3)]
        flag[0] = False
        losses += [float(run(x, t, 2.0).item()) for _ in range(2)]
        results.append((losses, _host(model)))
        if compile_it:
            assert (run.records, run.replays) == (4, 5), (run.records, run.replays)
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("setting", ["no_grad", "using", "set_default_dtype"])
def test_a_replay_steps_aside_when_the_settings_change(setting: str):
    """Grad mode, a ``using`` block and a process setting are part of the signature: a call
    under another one records (or runs) its own step, never the replayed recording."""
    x, t = _data(30)
    _, _, step = _setup("numpy", "sgd", False)
    run = nb.compile_step(step)
    for _ in range(3):
        run(x, t)
    assert (run.records, run.replays) == (2, 1)
    if setting == "no_grad":
        with nb.no_grad(), pytest.raises(nb.errors.GradientError):
            run(x, t)  # eager: backward() without a graph
    elif setting == "using":
        with nb.using(check_dtypes=True):
            run(x, t)
    else:
        old = nb.get_default_dtype()
        nb.set_default_dtype("float32" if old != "float32" else "float64")
        try:
            run(x, t)
        finally:
            nb.set_default_dtype(old)
    assert run.replays == 1
    run(x, t)
    if setting == "set_default_dtype":  # the settings' version moved on: a new signature
        assert (run.records, run.replays) == (4, 1)
    else:
        assert (run.records, run.replays) == (2 + (setting == "using"), 2)


@pytest.mark.parametrize("opt_name", ["momentum", "adam"])
def test_a_learning_rate_schedule_is_read_on_every_replay(opt_name: str):
    """The lr changes every step (a schedule): the replayed steps follow it exactly."""
    batches = _batches("numpy", 60)
    results = []
    for compile_it in (False, True):
        model, opt, step = _setup("numpy", opt_name, False)
        sched = schedules.ExponentialLR(opt, gamma=0.95)
        run = nb.compile_step(step) if compile_it else step
        for x, t in batches:
            run(x, t)
            sched.step()
        results.append(_host(model))
        assert opt.lr < 0.01
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


def test_parameters_rebound_by_load_state_dict_record_again():
    """load_state_dict rebinds the parameters' arrays: the recording is dropped, the next
    call records, and training continues from the loaded weights, equal to eager."""
    batches = _batches("numpy", 20)
    results = []
    for compile_it in (False, True):
        model, _, step = _setup("numpy", "sgd", False)
        start = model.state_dict()
        run = nb.compile_step(step) if compile_it else step
        for x, t in batches[:10]:
            run(x, t)
        model.load_state_dict(start)
        for x, t in batches[10:]:
            run(x, t)
        results.append(_host(model))
        if compile_it:
            assert run.records == 4 and run.replays == 16
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


def test_parameters_moved_by_to_device_record_again():
    """``nb.to_device(..., copy=True)`` rebinds the parameters (and the optimizer's state) to
    new arrays: the next call records again, and training goes on equal to eager."""
    batches = _batches("numpy", 8)
    results = []
    for compile_it in (False, True):
        model, opt, step = _setup("numpy", "momentum", False)
        run = nb.compile_step(step) if compile_it else step
        for x, t in batches[:4]:
            run(x, t)
        before = [p.data for p in model.parameters()]
        nb.to_device([model, opt], "cpu", copy=True)
        assert all(p.data is not b for p, b in zip(model.parameters(), before, strict=True))
        for x, t in batches[4:]:
            run(x, t)
        if compile_it:
            assert run.records == 4 and run.replays == 4
        results.append(_host(model))
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


def test_requires_grad_switched_off_records_again():
    model, _, step = _setup("numpy", "sgd", False)
    compiled = nb.compile_step(step)
    batches = _batches("numpy", 5)
    for x, t in batches[:3]:
        compiled(x, t)
    frozen = model[0].weight
    kept = frozen.numpy().copy()
    frozen.requires_grad = False
    for x, t in batches[3:]:
        compiled(x, t)
    assert compiled.records == 4
    np.testing.assert_array_equal(frozen.numpy(), kept)


def test_a_non_callable_is_an_argument_error():
    with pytest.raises(ArgumentError, match="callable"):
        nb.compile_step(42)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match="cache_size"):
        nb.compile_step(lambda: None, cache_size=0)


@pytest.mark.filterwarnings("ignore:You are comparing:UserWarning")
def test_inputs_of_another_backend_are_a_backend_mismatch_error():
    if nb.registry.probe("array_api_strict") is not None:
        pytest.skip("array_api_strict is not installed")
    _, _, step = _setup("numpy", "sgd", False)
    compiled = nb.compile_step(step)
    x, t = _batches("array_api_strict", 1)[0]
    with pytest.raises(BackendMismatchError, match=r"array_api_strict.*numpy|numpy.*strict"):
        compiled(x, t)


def test_a_hand_written_update_is_refused():
    """``p.data -= lr * p.grad`` outside an optimizer is not a recorded call: replaying
    would skip it, so recording raises."""
    model = nn.Linear(2, 3)
    loss_fn = nn.SoftmaxCrossEntropy()

    def step(x: Any, t: Any) -> Any:
        model.zero_grad()
        loss = loss_fn(model(x), t)
        loss.backward()
        for p in model.parameters():
            p.data -= 0.1 * p.grad
        return loss

    x, t = _batches("numpy", 1)[0]
    with pytest.raises(CompileError, match="outside an optimizer"):
        nb.compile_step(step)(x, t)


def test_clipping_between_backward_and_step_is_recorded():
    batches = _batches("numpy", 30)
    results = []
    for compile_it in (False, True):
        model, opt, _ = _setup("numpy", "sgd", False)
        loss_fn = nn.SoftmaxCrossEntropy()

        def step(x: Any, t: Any, model: Any = model, opt: Any = opt, loss_fn: Any = loss_fn) -> Any:
            opt.zero_grad()
            loss = loss_fn(model(x), t)
            loss.backward()
            optim.clip_grad_norm(model.parameters(), 0.05)
            opt.step()
            return loss

        run = nb.compile_step(step) if compile_it else step
        for x, t in batches:
            run(x, t)
        if compile_it:
            assert run.replays == len(batches) - 2
        results.append(_host(model))
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_constant_computed_from_the_data_is_caught_and_the_step_runs_eagerly():
    """One-hot targets built outside the engine's Functions would be frozen by a replay; the
    second recording differs from the first, so the step runs eagerly, with a warning, and
    stays equal to eager."""
    batches = _batches("numpy", 12)
    results = []
    for compile_it in (False, True):
        model, opt, _ = _setup("numpy", "sgd", False)
        loss_fn = nn.SoftmaxCrossEntropy()

        def step(x: Any, t: Any, model: Any = model, opt: Any = opt, loss_fn: Any = loss_fn) -> Any:
            opt.zero_grad()
            onehot = (t[:, None] == np.arange(3)[None, :]).astype(x.dtype)
            loss = loss_fn(model(x), onehot)
            loss.backward()
            opt.step()
            return loss

        run = nb.compile_step(step) if compile_it else step
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for x, t in batches:
                run(x, t)
        if compile_it:
            assert run.replays == 0 and run.eager_signatures
            assert any(issubclass(w.category, CompileWarning) for w in caught)
        results.append(_host(model))
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


def test_without_the_check_the_second_call_replays():
    _, _, step = _setup("numpy", "sgd", False)
    compiled = nb.compile_step(step, check=False)
    for x, t in _batches("numpy", 3):
        compiled(x, t)
    assert compiled.records == 1 and compiled.replays == 2


def test_a_replayed_step_returns_a_tensor_outside_any_graph():
    _, _, step = _setup("numpy", "sgd", False)
    compiled = nb.compile_step(step)
    for x, t in _batches("numpy", 3):
        loss = compiled(x, t)
    assert isinstance(loss, nb.Tensor) and loss.creator is None and not loss.requires_grad


# -- Trainer(compile=True) -----------------------------------------------------------------


def _fit(compile_it: bool, **kwargs: Any) -> tuple[list[np.ndarray], Any]:
    nb.random.seed(0)
    model = nn.Sequential(nn.Linear(2, 12), nn.ReLU(), nn.Dropout(0.2), nn.Linear(12, 3))
    trainer = nb.Trainer(
        model,
        nn.SoftmaxCrossEntropy(),
        optim.Adam(model.parameters(), lr=0.01),
        compile=compile_it,
    )
    x, t = _data(140)
    history = trainer.fit(x, t, epochs=4, batch_size=32, progress=False, seed=5, **kwargs)
    return _host(model), (trainer, history)


@pytest.mark.parametrize("max_grad", [None, 0.5])
def test_trainer_compile_equals_the_eager_trainer(max_grad: float | None):
    eager, (_, h_eager) = _fit(False, max_grad=max_grad)
    got, (trainer, h) = _fit(True, max_grad=max_grad)
    assert trainer._compiled.replays > 0
    for a, b in zip(got, eager, strict=True):
        np.testing.assert_array_equal(a, b)
    assert h.loss == h_eager.loss


def test_trainer_compile_with_a_loss_scaler_runs_eagerly_with_a_warning():
    nb.random.seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 3))
    trainer = nb.Trainer(
        model,
        nn.SoftmaxCrossEntropy(),
        optim.SGD(model.parameters(), lr=0.1),
        loss_scaler=nb.precision.LossScaler(),
        compile=True,
    )
    x, t = _data(64)
    with pytest.warns(CompileWarning, match="loss scaler"):
        trainer.fit(x, t, epochs=1, batch_size=16, progress=False)
    assert trainer._compiled is None and trainer.step == 4


def test_a_loss_scaler_inside_compile_step_is_refused():
    model = nn.Linear(2, 3)
    opt = optim.SGD(model.parameters(), lr=0.1)
    scaler = nb.precision.LossScaler()
    loss_fn = nn.SoftmaxCrossEntropy()

    def step(x: Any, t: Any) -> Any:
        opt.zero_grad()
        loss = loss_fn(model(x), t)
        scaler.scale_loss(loss).backward()
        scaler.step(opt)
        return loss

    x, t = _batches("numpy", 1)[0]
    with pytest.raises(CompileError, match="LossScaler"):
        nb.compile_step(step)(x, t)


def test_a_train_step_override_composes_through_super():
    """An override calling super().train_step gets the compiled base step."""
    calls = []

    class Counting(nb.Trainer):
        def train_step(self, x: Any, t: Any) -> tuple[Any, Any]:
            calls.append(int(x.shape[0]))
            return super().train_step(x, t)

    nb.random.seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3))
    trainer = Counting(
        model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1), compile=True
    )
    x, t = _data(64)
    trainer.fit(x, t, epochs=2, batch_size=16, progress=False)
    assert len(calls) == 8 and trainer._compiled.replays == 6


# -- jax: the whole step under jax.jit ---------------------------------------------------------

JAX_CHECK = """
import json, sys, warnings
import numpy as np
import nnbackend as nb
from nnbackend import nn, optim
warnings.simplefilter("error", nb.errors.CompileWarning)
dtype = sys.argv[1]
OPTS = {"sgd": lambda p: optim.SGD(p, lr=0.1), "momentum": lambda p: optim.Momentum(p, lr=0.05),
        "adam": lambda p: optim.Adam(p, lr=0.01)}
rng = np.random.default_rng(1)
x, t = rng.standard_normal((300, 2)), rng.integers(0, 3, 300)
with nb.using(backend="jax", dtype=dtype):
    batches = [(nb.to_backend(x[i:i + 30]), nb.to_backend(t[i:i + 30])) for i in range(0, 300, 30)]
out = {}
for name in sys.argv[2:]:
    for dropout in (False, True):
        runs = []
        for compiled in (False, True):
            with nb.using(backend="jax", dtype=dtype):
                nb.random.seed(0)
                layers = [nn.Linear(2, 16), nn.ReLU()] + [nn.Dropout(0.3)] * dropout
                model = nn.Sequential(*layers, nn.Linear(16, 3))
            opt = OPTS[name](model.parameters())
            loss_fn = nn.SoftmaxCrossEntropy()
            def step(xb, tb, model=model, opt=opt):
                opt.zero_grad()
                loss = loss_fn(model(xb), tb)
                loss.backward()
                opt.step()
                return loss
            run = nb.compile_step(step) if compiled else step
            nb.random.seed(5)
            losses = [float(run(*batches[i % 10]).item()) for i in range(200)]
            if compiled:
                rec = next(iter(run._cache.values()))
                assert type(rec).__name__ == "_JitRecording" and run.replays == 198
                counts = [st.get("step") for st in opt.state]
                assert all(c is None or (type(c) is int and c == 200) for c in counts), counts
            runs.append((losses, [np.asarray(p.data) for p in model.parameters()]))
        (la, pa), (lb, pb) = runs
        out[f"{name}-{dropout}"] = max(
            max(abs(a - b) for a, b in zip(la, lb)),
            max(float(np.max(np.abs(a - b))) for a, b in zip(pa, pb)),
        )
print(json.dumps(out))
"""


def _jax_check(run_python: Any, dtype: str, names: list[str]) -> dict[str, float]:
    import json

    result = run_python(
        args=["-c", JAX_CHECK, dtype, *names], env={"JAX_ENABLE_X64": "1"}, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.usefixtures("require_jax")
def test_jax_jitted_steps_stay_within_1e_6_of_eager_over_200_steps(run_python: Any):
    """float64 (x64 on): SGD, Momentum and Adam, with and without dropout, jitted whole
    (parameters, state, step counts, lr and the dropout masks passed in; a frozen step count
    or mask would be far off): every loss and parameter within 1e-6 of the eager jax step."""
    diffs = _jax_check(run_python, "float64", ["sgd", "momentum", "adam"])
    assert len(diffs) == 6 and max(diffs.values()) <= 1e-6, diffs


@pytest.mark.usefixtures("require_jax")
def test_jax_jitted_steps_in_float32(run_python: Any):
    """float32: SGD, Momentum and Adam, with and without dropout, stay within 1e-6 of the
    eager jax step over 200 steps (2.4e-7 measured on 2026-12-01: one float32 ulp of the
    parameters; XLA folds a transpose into the product under jit, a last-bit difference)."""
    diffs = _jax_check(run_python, "float32", ["sgd", "momentum", "adam"])
    assert len(diffs) == 6 and max(diffs.values()) <= 1e-6, diffs


# -- found by an attacker's review (2026-12-03): each gave silently wrong results -------------


def _mlp(seed: int = 0, batchnorm: bool = False) -> Any:
    nb.random.seed(seed)
    layers: list[Any] = [nn.Linear(4, 8)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(8))
    layers += [nn.ReLU(), nn.Linear(8, 4)]
    return nn.Sequential(*layers)


def _same_params(a: Any, b: Any) -> bool:
    return all(
        np.array_equal(p.data, q.data) for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


def test_arguments_that_are_one_array_are_a_signature_of_their_own():
    """Recorded as step(x, x) (an autoencoder on its input), the replay named both arguments
    after the first: step(noisy, clean) then trained on the target."""
    rng = np.random.default_rng(0)
    runs = []
    for compiled in (False, True):
        model = _mlp()
        opt = optim.SGD(model.parameters(), lr=0.1)

        def step(x: Any, y: Any, model: Any = model, opt: Any = opt) -> Any:
            opt.zero_grad()
            loss = nn.MSELoss()(model(x), y)
            loss.backward()
            opt.step()
            return loss

        f = nb.compile_step(step) if compiled else step
        rng = np.random.default_rng(0)
        losses = []
        for i in range(6):
            clean = rng.standard_normal((5, 4))
            if i < 3:
                losses.append(float(f(clean, clean).item()))
            else:
                losses.append(float(f(clean + rng.standard_normal((5, 4)), clean).item()))
        runs.append((losses, model))
    assert runs[0][0] == runs[1][0]
    assert _same_params(runs[0][1], runs[1][1])


@pytest.mark.parametrize("reset", ["zero_grad", "direct", "caller", "never"])
@pytest.mark.parametrize("check", [True, False])
def test_replays_accumulate_gradients_as_eager_backward_does(reset: str, check: bool):
    """A replay stored each first gradient as the recording found it: with the reset left to
    the caller (gradient accumulation), or none at all, it overwrote where eager adds."""
    x, t = _data(40)
    results = []
    for compiled in (False, True):
        model = _mlp()
        opt = optim.SGD(model.parameters(), lr=0.05)

        def step(x: Any, t: Any, model: Any = model, opt: Any = opt) -> Any:
            loss_fn = nn.SoftmaxCrossEntropy()
            if reset == "zero_grad":
                opt.zero_grad()
            elif reset == "direct":
                for p in model.parameters():
                    p.grad = None
            loss = loss_fn(model(x), t)
            loss.backward()
            opt.step()
            return loss

        f = nb.compile_step(step, check=check) if compiled else step
        for i in range(8):
            if reset == "caller" and i % 3 == 0:
                opt.zero_grad()
            f(np.hstack([x, x])[i * 5 : i * 5 + 5], t[i * 5 : i * 5 + 5])
        results.append(model)
        if compiled:
            assert f.replays >= 5
    assert _same_params(*results)
    for p, q in zip(results[0].parameters(), results[1].parameters(), strict=True):
        assert np.array_equal(p.grad, q.grad)


def test_a_tensor_argument_that_requires_a_gradient_runs_eagerly_and_gets_it():
    """A replay gave the gradient to the Tensor of the recorded call, not to the caller's."""
    model = _mlp()
    loss_fn = nn.SoftmaxCrossEntropy()

    def step(x: Any, t: Any) -> Any:
        model.zero_grad()
        loss = loss_fn(model(x), t)
        loss.backward()
        return loss

    f = nb.compile_step(step)
    x, t = _data(5)
    xs = [nb.Tensor(np.hstack([x, x]), requires_grad=i >= 2) for i in range(5)]
    with pytest.warns(CompileWarning, match="requires a gradient"):
        for xi in xs:
            f(xi, t)
    assert [xi.grad is None for xi in xs] == [True, True, False, False, False]
    expected = nb.Tensor(np.hstack([x, x]), requires_grad=True)
    step(expected, t)
    assert np.array_equal(xs[-1].grad, expected.grad)


def test_arguments_that_are_not_arrays_raise_argument_error():
    f = nb.compile_step(lambda x: None)
    with pytest.raises(ArgumentError, match="argument 0 is a list"):
        f([[1.0, 2.0]])


def test_pending_recordings_are_bounded_by_the_cache_size():
    """A float argument new on every call (or NaN, never equal to itself) parked one
    recording per call."""
    model = _mlp()
    opt = optim.SGD(model.parameters(), lr=0.1)

    def step(x: Any, scale: float) -> Any:
        opt.zero_grad()
        loss = (model(x) * scale).sum()
        loss.backward()
        opt.step()
        return loss

    f = nb.compile_step(step, cache_size=3)
    x = np.ones((2, 4))
    for i in range(20):
        f(x, 0.1 * i)
    f(x, float("nan"))
    assert len(f._pending) <= 3


@pytest.mark.parametrize("trainer", [False, True])
def test_batchnorm_running_statistics_are_updated_by_replays(trainer: bool):
    """BatchNorm updated its running statistics in Python after its node: replays, which
    run the nodes only, left them at the recording's values."""
    x, t = _data(64)
    x = np.hstack([x, x * x])
    models = []
    for compiled in (False, True):
        model = _mlp(batchnorm=True)
        opt = optim.SGD(model.parameters(), lr=0.1)
        if trainer:
            tr = nb.Trainer(model, nn.SoftmaxCrossEntropy(), opt, compile=compiled)
            tr.fit(x, t, epochs=3, batch_size=16, shuffle=False, progress=False)
        else:
            step = _step_of(model, opt)
            f = nb.compile_step(step) if compiled else step
            for i in range(8):
                f(x[(i % 4) * 16 : (i % 4) * 16 + 16], t[(i % 4) * 16 : (i % 4) * 16 + 16])
        models.append(model)
    bn = [m[1] for m in models]
    assert np.array_equal(bn[0].running_mean.data, bn[1].running_mean.data)
    assert np.array_equal(bn[0].running_var.data, bn[1].running_var.data)
    assert not np.array_equal(bn[1].running_mean.data, np.zeros(8))
    assert _same_params(*models)


class _DoubledLoss(nn.Module):
    def forward(self, y: Any, t: Any) -> Any:
        return nn.SoftmaxCrossEntropy()(y, t) * 2.0


def _fit_twice(compiled: bool, change: Any) -> Any:
    x, t = _data(48)
    x = np.hstack([x, x])
    nb.random.seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 4))
    tr = nb.Trainer(
        model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1), compile=compiled
    )
    tr.fit(x, t, epochs=2, batch_size=16, shuffle=False, progress=False)
    change(tr)
    tr.fit(x, t, epochs=2, batch_size=16, shuffle=False, progress=False)
    return tr


@pytest.mark.parametrize(
    "change",
    [
        lambda tr: setattr(tr, "optimizer", optim.Adam(tr.model.parameters(), lr=0.01)),
        lambda tr: setattr(tr, "loss_fn", _DoubledLoss()),
        lambda tr: tr.model.append(nn.Sigmoid()),
    ],
    ids=["optimizer", "loss_fn", "layer_added"],
)
def test_trainer_compiled_step_follows_what_the_trainer_trains(change: Any):
    """The compiled Trainer step kept replaying the first model, loss and optimizer, and
    read only the top module's mode."""
    eager, compiled = _fit_twice(False, change), _fit_twice(True, change)
    assert _same_params(eager.model, compiled.model)
    assert eager.optimizer.steps == compiled.optimizer.steps > 0


def test_trainer_compiled_step_follows_a_new_model():
    x, t = _data(48)
    x = np.hstack([x, x])
    trained = []
    for compiled in (False, True):
        model = _mlp()
        tr = nb.Trainer(
            model,
            nn.SoftmaxCrossEntropy(),
            optim.SGD(model.parameters(), lr=0.1),
            compile=compiled,
        )
        tr.fit(x, t, epochs=1, batch_size=16, shuffle=False, progress=False)
        new = _mlp(seed=1)
        tr.model, tr.optimizer = new, optim.SGD(new.parameters(), lr=0.1)
        tr.fit(x, t, epochs=2, batch_size=16, shuffle=False, progress=False)
        trained.append((model, new))
    assert _same_params(trained[0][0], trained[1][0])
    assert _same_params(trained[0][1], trained[1][1])
    assert not _same_params(trained[1][1], _mlp(seed=1))


def test_a_step_that_makes_parameters_nan_records_and_replays():
    """A diverging step (NaN parameters) read as "a parameter changed outside the
    optimizer" while recording: NaN never equals itself."""
    model = _mlp()
    opt = optim.SGD(model.parameters(), lr=0.1)

    def step(x: Any) -> Any:
        opt.zero_grad()
        loss = (model(x) * float("nan")).sum()
        loss.backward()
        opt.step()
        return loss

    f = nb.compile_step(step)
    for _ in range(4):
        f(np.ones((2, 4)))
    assert f.replays == 2
    assert all(np.isnan(p.data).all() for p in model.parameters())


@pytest.mark.parametrize("layer", ["dropout", "batchnorm"])
def test_trainer_compiled_step_follows_a_submodule_put_in_eval_mode(layer: str):
    """A callback freezing one Dropout or BatchNorm mid-fit (``.eval()`` on the submodule):
    the compiled step's key read only the top module's mode."""
    from nnbackend.train import Callback

    x, t = _data(64)
    x = np.hstack([x, x])
    trained = []
    for compiled in (False, True):
        nb.random.seed(0)
        mid = nn.Dropout(0.5) if layer == "dropout" else nn.BatchNorm1d(8)
        model = nn.Sequential(nn.Linear(4, 8), mid, nn.ReLU(), nn.Linear(8, 4))

        class Freeze(Callback):
            def on_epoch_end(self, trainer: Any, history: Any, mid: Any = mid) -> None:
                if trainer.epoch == 0:
                    mid.eval()

        tr = nb.Trainer(
            model,
            nn.SoftmaxCrossEntropy(),
            optim.SGD(model.parameters(), lr=0.1),
            compile=compiled,
        )
        nb.random.seed(3)
        tr.fit(x, t, epochs=3, batch_size=16, shuffle=False, progress=False, callbacks=[Freeze()])
        trained.append(model)
    assert _same_params(*trained)


@pytest.mark.usefixtures("require_jax")
def test_jax_jitted_steps_accumulate_gradients_as_eager_ones():
    """The jitted whole step began every call with no gradients: a step without zero_grad()
    failed inside the trace (None + a traced array)."""
    x, t = _data(40)
    x = np.hstack([x, x]).astype("float32")
    results = []
    for compiled in (False, True):
        with nb.using(backend="jax", dtype="float32"):
            model = _mlp()
            opt = optim.SGD(model.parameters(), lr=0.05)

            def step(x: Any, t: Any, model: Any = model, opt: Any = opt) -> Any:
                loss = nn.SoftmaxCrossEntropy()(model(x), t)
                loss.backward()
                opt.step()
                return loss

            f = nb.compile_step(step) if compiled else step
            for i in range(8):
                if i % 3 == 0:
                    opt.zero_grad()
                f(nb.to_backend(x[i * 5 : i * 5 + 5]), nb.to_backend(t[i * 5 : i * 5 + 5]))
        results.append([np.asarray(p.data) for p in model.parameters()])
        if compiled:
            assert f.replays >= 5
    for a, b in zip(*results, strict=True):
        assert float(np.max(np.abs(a - b))) <= 1e-6


# -- a second review (2026-12-03): what Trainer(compile=True) keyed on ------------------------


def _trainer_data() -> tuple[np.ndarray, np.ndarray]:
    r = np.random.default_rng(1)
    return r.standard_normal((48, 4)), r.integers(0, 3, 48)


def _bn_net() -> Any:
    nb.random.seed(0)
    return nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.LeakyReLU(0.1), nn.Dropout(0.5), nn.Linear(8, 3)
    )


def _set_bias_none(m: Any) -> None:
    m[4].bias = None


def _new_weight(m: Any) -> None:
    m[4].weight = nn.Parameter(np.zeros((8, 3)))


def _reset_running_mean(m: Any) -> None:
    m[1].running_mean = np.zeros(8)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: setattr(m[3], "p", 0.0),
        lambda m: setattr(m[1], "momentum", 0.9),
        lambda m: setattr(m[1], "eps", 0.5),
        lambda m: setattr(m[2], "negative_slope", 0.5),
        _reset_running_mean,
        _set_bias_none,
        _new_weight,
    ],
    ids=["dropout_p", "momentum", "eps", "slope", "buffer", "bias_removed", "weight_replaced"],
)
def test_trainer_compiled_step_follows_module_settings_and_what_they_hold(change: Any):
    """Python settings of the model's modules, a buffer reassigned and a parameter removed
    or replaced between fits were frozen (or orphaned) by the first recording."""
    x, t = _trainer_data()
    results = []
    for compiled in (False, True):
        m = _bn_net()
        tr = nb.Trainer(
            m, nn.SoftmaxCrossEntropy(), optim.SGD(m.parameters(), lr=0.1), compile=compiled
        )
        tr.fit(x, t, epochs=2, batch_size=16, seed=3, progress=False)
        change(m)
        h = tr.fit(x, t, epochs=2, batch_size=16, seed=3, progress=False)
        results.append((h.epoch_loss, m, np.array(m[1].running_mean.data)))
    assert results[0][0] == results[1][0]
    assert _same_params(results[0][1], results[1][1])
    assert np.array_equal(results[0][2], results[1][2])


def test_trainer_compiled_step_follows_a_wrapped_model():
    """A model that is a callable wrapper, not a Module: its network put in eval mode
    between fits kept replaying its training-mode (dropout) step."""

    class Wrapper:
        def __init__(self, net: Any) -> None:
            self.net = net

        def parameters(self) -> Any:
            return self.net.parameters()

        def __call__(self, x: Any) -> Any:
            return self.net(x)

    x, t = _trainer_data()
    results = []
    for compiled in (False, True):
        nb.random.seed(0)
        net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
        tr = nb.Trainer(
            Wrapper(net),
            nn.SoftmaxCrossEntropy(),
            optim.SGD(net.parameters(), lr=0.1),
            compile=compiled,
        )
        tr.fit(x, t, epochs=2, batch_size=16, seed=3, progress=False)
        net.eval()
        h = tr.fit(x, t, epochs=2, batch_size=16, seed=3, progress=False)
        results.append((h.epoch_loss, net))
    assert results[0][0] == results[1][0]
    assert _same_params(results[0][1], results[1][1])


@pytest.mark.parametrize("compiled", [False, True])
def test_trainer_trains_a_function_model(compiled: bool):
    """A model that is a plain function of the batch (the docstring allows any callable):
    the data was converted "like" the function, a BackendMismatchError."""
    x, t = _trainer_data()
    net = nn.Linear(4, 3)
    tr = nb.Trainer(
        lambda xb: net(xb),
        nn.SoftmaxCrossEntropy(),
        optim.SGD(net.parameters(), lr=0.1),
        compile=compiled,
    )
    h = tr.fit(x, t, epochs=3, batch_size=16, progress=False)
    assert h.steps == 9 and h.epoch_loss[-1] < h.epoch_loss[0]


@pytest.mark.parametrize("compiled", [False, True])
def test_a_second_ctrl_c_during_a_step_leaves_a_history_of_every_applied_step(compiled: bool):
    """Two Ctrl-C while the optimizer's update ran (or, compiled, anywhere in the step,
    which the guard holds whole): the step was applied and counted, but its loss was missing
    from the history (the interrupt was raised before the step's bookkeeping)."""
    import signal

    x, t = _trainer_data()
    nb.random.seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = optim.SGD(m.parameters(), lr=0.1)
    real_step = opt.step
    calls = [0]

    def step_then_ctrl_c() -> None:
        real_step()
        calls[0] += 1
        if calls[0] == 2:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)

    ce = nn.SoftmaxCrossEntropy()

    values: list[float] = []

    def loss(y: Any, tt: Any) -> Any:
        calls[0] += 1 if compiled else 0
        if compiled and calls[0] == 2:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        out = ce(y, tt)
        values.append(float(out.item()))  # (the first two steps run this, compiled or not)
        return out

    if not compiled:
        opt.step = step_then_ctrl_c  # type: ignore[method-assign]
    tr = nb.Trainer(m, loss, opt, compile=compiled)
    h = tr.fit(x, t, epochs=3, batch_size=16, seed=3, progress=False)
    assert h.interrupted
    assert h.steps == 2 == h.report_steps[-1]
    assert len(h.loss) == len(h.report_steps) == 1
    assert h.loss[0] == pytest.approx((values[0] + values[1]) / 2, rel=1e-12)
