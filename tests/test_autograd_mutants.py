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
    from nnbackend.nn.functional import Dropout

    compiled: list[Any] = []
    tracing = [False]

    def jit(self: Any, fn: Any) -> Any:
        if getattr(fn, "__name__", "") != "_pure":  # compile_step's probe
            return fn
        compiled.append(fn)

        def traced(*args: Any) -> Any:  # as under jax.jit: no random draws inside
            tracing[0] = True
            try:
                return fn(*args)
            finally:
                tracing[0] = False

        return traced

    draw = Dropout.draw_random

    def draw_outside(self: Any, x: Any) -> Any:
        assert not tracing[0], "a dropout mask drawn inside the compiled function"
        return draw(self, x)

    monkeypatch.setattr(NumpyOps, "jit", jit)
    monkeypatch.setattr(Dropout, "draw_random", draw_outside)
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
    opt.lr = np.float32(0.0)  # a NumPy scalar is a rate too, as in the eager step()
    run(*batches[3])
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

    model, opt, _ = _jit_setup("adam", False)

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


# -- refusals say which op refused, exactly --------------------------------------------------
@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("add", lambda a, b: a + b),
        ("sub", lambda a, b: a - b),
        ("mul", lambda a, b: a * b),
        ("div", lambda a, b: a / b),
        ("pow", lambda a, b: a**b),
        ("matmul", lambda a, b: a @ b),
        ("maximum", lambda a, b: nb.functional.maximum(a, b)),
        ("minimum", lambda a, b: nb.functional.minimum(a, b)),
        ("where", lambda a, b: nb.functional.where(a.data > 0, a, b)),
        ("concat", lambda a, b: nb.functional.concat([a, b], 0)),
    ],
)
def test_mixed_dtypes_are_refused_naming_the_op(name: str, call: Any) -> None:
    a = Tensor(np.full((2, 2), 0.5), requires_grad=True)
    b = Tensor(np.full((2, 2), 0.25, dtype=np.float32), requires_grad=True)
    with pytest.raises(nb.errors.DtypeError, match=f"^{name}: operands have dtypes float64 and"):
        call(a, b)


def test_empty_sequences_are_refused_with_their_message() -> None:
    with pytest.raises(nb.errors.ArgumentError, match=exactly("stack needs at least one array")):
        nb.functional.stack([])
    with pytest.raises(nb.errors.ArgumentError, match=exactly("concat needs at least one array")):
        nb.functional.concat([])


def test_the_dtype_guard_names_a_strict_dtype_by_its_short_name() -> None:
    """array_api_strict's dtypes have no ``name``: the guard's message strips the module."""
    import array_api_strict as xs

    from nnbackend.autograd.function import Function

    class Widen(Function):
        def forward(self, x: Any) -> Any:
            return self.xp.astype(x, self.xp.float64)

        def backward(self, gy: Any) -> Any:
            return gy

    x = Tensor(xs.ones((2,), dtype=xs.float32), requires_grad=True)
    with nb.using(check_dtypes=True), pytest.raises(nb.errors.DtypeError) as info:
        Widen()(x)
    assert "where the policy expects float32; inputs ((2,) array_api_strict.float32)" in str(
        info.value
    )


# -- first derivatives under create_graph equal the plain backward's -------------------------
CREATE_GRAPH_CASES: dict[str, tuple[Any, list[tuple[int, ...]]]] = {
    "div": (lambda a, b: a / (b * b + 1.0), [(2, 3, 4), (3, 1)]),
    "div_broadcast": (lambda a, b: a / (b + 3.0), [(2, 3), (3,)]),
    "div_by_a_number": (lambda a, b: a / 2.5 * b, [(2, 3), (2, 3)]),
    "number_plus": (lambda a, b: (2.5 + a) * b + (b - 1.5) * a, [(2, 3), (2, 3)]),
    "number_by_div": (lambda a, b: 2.5 / (a * a + 1.0) * b, [(2, 3), (2, 3)]),
    "pow": (lambda a, b: (a * a + 1.0) ** b, [(2, 3), (2, 3)]),
    "vector_at_matrix": (lambda a, b: a @ b, [(3,), (3, 4)]),
    "matrix_at_vector": (lambda a, b: a @ b, [(2, 3), (3,)]),
    "batched_at_vector": (lambda a, b: a @ b, [(2, 2, 3), (3,)]),
    "vector_at_batched": (lambda a, b: a @ b, [(3,), (2, 3, 4)]),
    "vector_at_vector": (lambda a, b: a @ b, [(3,), (3,)]),
    "batched": (lambda a, b: a @ b, [(2, 2, 3), (3, 4)]),
    "prod_axis": (lambda a, b: a.prod(axis=0) * b, [(3, 2), (2,)]),
    "max_axis": (lambda a, b: a.max(axis=1, keepdims=True) * b, [(2, 3), (2, 1)]),
    "mean_axes": (lambda a, b: a.mean(axis=(0, 2)) * b, [(2, 3, 2), (3,)]),
    "cast": (lambda a, b: a.astype("float32").astype("float64") * b, [(2, 3), (2, 3)]),
    "flip_tuple": (lambda a, b: nb.functional.flip(a, [0, 1]) * b, [(2, 3), (2, 3)]),
    "einsum_transpose": (lambda a, b: nb.functional.einsum("ij->ji", a) * b, [(2, 3), (3, 2)]),
    "einsum_sum_then_transpose": (
        lambda a, b: nb.functional.einsum("ijk->kj", a) * b,
        [(2, 3, 4), (4, 3)],
    ),
    "take_nd": (lambda a, b: nb.functional.take(a, [[0, 2], [2, 2]], 1) * b, [(2, 3), (2, 2, 2)]),
}


@pytest.mark.parametrize("name", sorted(CREATE_GRAPH_CASES))
def test_create_graph_first_derivatives_equal_the_plain_ones(name: str, xp64: Any) -> None:
    """Random non-unit values and a random output weight, N-D and 1-D operands: the
    gradients ``graph_backward`` records equal ``backward``'s, which equal central
    differences (gradcheck)."""
    fn, shapes = CREATE_GRAPH_CASES[name]
    arrays = [rand(xp64, *s, seed=i + 3, low=0.3, high=1.7) for i, s in enumerate(shapes)]
    if name != "cast":  # float32 on the way: the float64 tolerance does not hold
        assert nb.gradcheck(fn, *arrays)
    plain = [Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*plain)
    weight = rand(xp64, *out.shape, seed=11)
    out.backward(weight)
    graph = [Tensor(a, requires_grad=True) for a in arrays]
    grads = nb.grad(fn(*graph), graph, weight, create_graph=True)
    for t, g in zip(plain, grads, strict=True):
        assert g.shape == t.shape and g.requires_grad
        np.testing.assert_allclose(host(g), host(t.grad), rtol=1e-12, atol=1e-12)


def test_an_array_times_a_tensor_is_in_the_graph() -> None:
    """``ndarray @ Tensor`` (NumPy defers to Tensor.__rmatmul__) records the product."""
    a = np.array([[1.0, 2.0, 0.5], [-1.0, 0.25, 3.0]])
    b = Tensor(np.array([[0.5, 1.0], [2.0, -1.0], [1.5, 0.75]]), requires_grad=True)
    y = a @ b
    assert isinstance(y, Tensor) and y.requires_grad
    np.testing.assert_array_equal(host(y), a @ host(b))
    w = np.array([[1.0, -2.0], [0.5, 3.0]])
    y.backward(w)
    np.testing.assert_array_equal(host(b.grad), a.T @ w)


def test_tensor_reductions_pass_their_axis_and_keepdims(xp64: Any) -> None:
    values = np.array([[0.5, 3.0, -1.0], [2.0, -4.0, 1.5]])
    a = Tensor(xp64.asarray(values))
    for method, ref in [("prod", np.prod), ("min", np.min), ("max", np.max), ("sum", np.sum),
                        ("mean", np.mean), ("var", np.var), ("std", np.std)]:  # fmt: skip
        for axis in (0, 1):
            got = getattr(a, method)(axis=axis)
            np.testing.assert_allclose(host(got), ref(values, axis=axis), rtol=1e-12)
            kept = getattr(a, method)(axis, True)
            assert kept.shape == ref(values, axis=axis, keepdims=True).shape
    np.testing.assert_allclose(
        host(a.var(axis=1, correction=1.0)), np.var(values, axis=1, ddof=1), rtol=1e-12
    )
    np.testing.assert_allclose(
        host(a.logsumexp(axis=0)), np.log(np.exp(values).sum(axis=0)), rtol=1e-12
    )


def test_argmax_and_argmin_of_the_flattened_array(xp64: Any) -> None:
    a = Tensor(xp64.asarray([[0.5, 3.0, -1.0], [2.0, -4.0, 1.0]]))
    assert int(host(a.argmax())) == 1 and int(host(a.argmin())) == 4
    assert host(a.argmax(keepdims=True)).shape == (1, 1)
    assert host(a.argmax(axis=1)).tolist() == [1, 0]


def test_cast_gradients_stay_on_their_backend_one_after_another() -> None:
    """The backward of a cast converts the gradient with its own backend's ops: NumPy's
    first, then array_api_strict's in the same process."""
    import array_api_strict as xs

    for xp in (namespace_module.namespace("numpy"), xs):
        x = Tensor(xp.asarray([0.5, 1.5], dtype=xp.float64), requires_grad=True)
        (x.astype("float32") * 3.0).sum().backward()
        assert type(x.grad) is type(x.data) and host(x.grad).tolist() == [3.0, 3.0]
        assert x.grad.dtype == xp.float64


# -- higher.py: what create_graph keeps and accumulates --------------------------------------
def test_create_graph_adds_to_a_raw_gradient_left_by_a_plain_backward(xp64: Any) -> None:
    x = Tensor(rand(xp64, 3, seed=5), requires_grad=True)
    (x * x).sum().backward()  # .grad = 2x, a raw array
    first = host(x.grad).copy()
    (x * x * x).sum().backward(create_graph=True)  # adds 3x^2, as a Tensor in the graph
    assert isinstance(x.grad, Tensor) and x.grad.requires_grad
    np.testing.assert_allclose(host(x.grad), first + 3 * host(x) ** 2, rtol=1e-12)


def test_create_graph_keeps_retained_intermediate_gradients_only(xp64: Any) -> None:
    x = Tensor(rand(xp64, 3, seed=6), requires_grad=True)
    kept = (x * 2.0).retain_grad()
    dropped = kept * kept
    root = dropped.sum()
    root.backward(create_graph=True)
    assert isinstance(kept.grad, Tensor)
    np.testing.assert_allclose(host(kept.grad), 2 * host(kept), rtol=1e-12)
    assert dropped.grad is None
    assert isinstance(root.grad, Tensor) and float(host(root.grad)) == 1.0


def test_a_raw_backward_refuses_second_derivatives_also_through_the_output_gradient() -> None:
    """The gradient of a Function with only a raw backward depends on the incoming
    gradient too: differentiating with respect to that gradient must also refuse clearly."""
    from nnbackend.autograd.function import Function

    class Twice(Function):
        def forward(self, x: Any) -> Any:
            return x * 2.0

        def backward(self, gy: Any) -> Any:
            return gy * 2.0

    x = Tensor(np.array([0.5, 1.5]), requires_grad=True)
    v = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    (gx,) = nb.grad(Twice()(x), x, v, create_graph=True)
    np.testing.assert_array_equal(host(gx), [2.0, -4.0])
    # The recorded gradient hangs off both: the input and the incoming gradient.
    assert any(t is v for t in gx.creator.inputs) and any(t is x for t in gx.creator.inputs)
    message = (
        "Twice defines backward() on arrays only, so its gradient cannot be differentiated "
        "again; define graph_backward() with differentiable Tensor operations (see the "
        "'Writing a Function' guide)"
    )
    with pytest.raises(nb.errors.GradientError, match=exactly(message)):
        nb.grad(gx.sum(), v)


# -- anomaly detection in ops with several outputs -------------------------------------------
def test_anomaly_in_the_second_output_of_a_split_is_named() -> None:
    from nnbackend.autograd import AnomalyError, detect_anomaly

    x = Tensor(np.array([1.0, 2.0, np.inf]), requires_grad=True)
    with detect_anomaly(), pytest.raises(AnomalyError) as info:
        nb.functional.split(x, [2, 1])
    assert str(info.value).startswith("Split forward produced inf in output 1 (shape (1,) ")


# -- compile_step: which differences between two recordings matter ---------------------------
def _linear_step(extra: Any) -> tuple[Any, Any]:
    """A one-layer model and a step whose loss goes through ``extra(h)`` (a callable run
    inside the step on the layer's output Tensor)."""
    from nnbackend import nn, optim

    nb.random.seed(1)
    model = nn.Linear(3, 2)
    opt = optim.SGD(model.parameters(), lr=0.1)

    def step(x: Any) -> Any:
        opt.zero_grad()
        loss = (extra(model(x)) ** 2.0).sum()
        loss.backward()
        opt.step()
        return loss

    return model, step


def _run_compiled(extra: Any, calls: int = 5) -> tuple[Any, list[Any]]:
    import warnings

    _, step = _linear_step(extra)
    run = nb.compile_step(step)
    x = np.random.default_rng(2).uniform(-1, 1, (4, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(calls):
            run(x)
    return run, [w for w in caught if issubclass(w.category, nb.errors.CompileWarning)]


class _Weighted(nb.autograd.Function):
    """``x * factor * weights``, with its settings (a number, an array, a NaN) kept on the
    node, where compile_step compares them between two recordings."""

    def __init__(self, factor: float, weights: Any) -> None:
        self.factor, self.weights, self.unused = factor, weights, float("nan")

    def forward(self, x: Any) -> Any:
        return x * self.factor * self.weights

    def backward(self, gy: Any) -> Any:
        return gy * self.factor * self.weights


def test_equal_settings_made_afresh_each_step_still_replay() -> None:
    """Literals and node settings built anew on every call (equal values, other objects:
    numbers, arrays, a NaN equal to a NaN) are the same recording: replayed, no warning."""

    def extra(h: Any) -> Any:
        half = float("0.5")  # a new float object every call
        return _Weighted(float("1.5"), np.array([0.5, 2.0]))(h * half)

    run, warned = _run_compiled(extra)
    assert not warned and run.records == 2 and run.replays == 3


def test_a_setting_array_that_changes_between_recordings_runs_eagerly() -> None:
    calls = []

    def drifting(h: Any) -> Any:
        calls.append(None)
        return _Weighted(1.5, np.array([0.5, float(len(calls))]))(h)

    run, warned = _run_compiled(drifting)
    assert run.replays == 0 and len(warned) == 1
    assert "the settings of node 1 (_Weighted) differ" in str(warned[0].message)


def test_a_tensor_made_inside_the_step_is_compared_by_value() -> None:
    calls = []

    def same(h: Any) -> Any:
        return h * Tensor(np.array([0.5, 2.0]), requires_grad=True)

    run, warned = _run_compiled(same)
    assert not warned and run.replays == 3

    def drifting(h: Any) -> Any:
        calls.append(None)
        return h * Tensor(np.array([0.5, float(len(calls))]), requires_grad=True)

    run, warned = _run_compiled(drifting)
    assert run.replays == 0 and len(warned) == 1
    assert "a Tensor made inside the step holds other values" in str(warned[0].message)


def test_a_python_number_that_changes_between_recordings_runs_eagerly() -> None:
    calls = []

    def drifting(h: Any) -> Any:
        calls.append(None)
        return h * float(len(calls))

    run, warned = _run_compiled(drifting)
    assert run.replays == 0 and len(warned) == 1
    assert "a Python value given to a node differs (1.0 against 2.0)" in str(warned[0].message)


def test_a_nan_setting_against_a_number_differs() -> None:
    calls = []

    def drifting(h: Any) -> Any:
        calls.append(None)
        node = _Weighted(1.5, np.array([0.5, 2.0]))
        node.unused = float("nan") if len(calls) == 1 else 0.0
        return node(h)

    run, warned = _run_compiled(drifting)
    assert run.replays == 0 and len(warned) == 1


def test_flattening_reshapes_use_minus_one_on_torch() -> None:
    """argmax of the flattened array and take with 2-D indices reshape with ``-1``: NumPy
    and array_api_strict accept any negative length there, torch only ``-1``."""
    if nb.registry.probe("torch") is not None:
        pytest.skip("torch is not installed")
    with nb.using(backend="torch", dtype="float64"):
        xp = nb.namespace()
        a = Tensor(xp.asarray([[0.5, 3.0, -1.0], [2.0, -4.0, 1.5]]), requires_grad=True)
        assert int(a.argmax().item()) == 1 and int(a.argmin().item()) == 4
        picked = nb.functional.take(a, xp.asarray([[2, 0], [1, 1]]), 1)
        assert picked.shape == (2, 2, 2)
        picked.sum().backward()
        assert host(a.grad).tolist() == [[1.0, 2.0, 1.0], [1.0, 2.0, 1.0]]


# -- compile_step: what records again ----------------------------------------------------------
def test_the_signature_holds_what_a_replay_depends_on() -> None:
    _, step = _linear_step(lambda h: h)
    run = nb.compile_step(step)
    x = np.ones((2, 3))
    base = run.signature(x)
    assert run.signature(np.ones((2, 3))) == base
    assert run.signature(np.ones((3, 3))) != base  # shape
    assert run.signature(np.ones((2, 3), dtype=np.float32)) != base  # dtype
    assert run.signature(Tensor(x)) != base  # a Tensor, not an array
    assert run.signature(x, 2) != run.signature(x, 3)  # Python scalars by value
    assert run.signature(x, 2) != run.signature(x, 2.0)  # ... and by type
    with nb.no_grad():
        assert run.signature(x) != base
    with nb.using(check_dtypes=False):
        assert run.signature(x) != base
    nb.set_default_dtype("float32")
    try:
        assert run.signature(x) != base
    finally:
        nb.set_default_dtype("float64")
    mode = ["train"]
    keyed = nb.compile_step(step, key=lambda: mode[0])
    first = keyed.signature(x)
    mode[0] = "eval"
    assert keyed.signature(x) != first


def test_a_key_change_records_again_and_both_recordings_are_kept() -> None:
    _, step = _linear_step(lambda h: h)
    mode = ["a"]
    run = nb.compile_step(step, key=lambda: mode[0])
    x = np.ones((2, 3))
    for m in ["a", "a", "a", "b", "b", "b", "a", "b"]:
        mode[0] = m
        run(x)
    assert run.records == 4 and run.replays == 4


def test_the_cache_keeps_the_last_recordings_only() -> None:
    _, step = _linear_step(lambda h: h)
    run = nb.compile_step(step, check=False, cache_size=2)
    xs = [np.ones((n, 3)) for n in (1, 2, 3)]
    for x in xs:  # three signatures, recorded once each (check=False)
        run(x)
    assert run.records == 3 and len(run._cache) == 2
    run(xs[2])
    run(xs[1])
    assert run.replays == 2
    run(xs[0])  # dropped from the cache: recorded again
    assert run.records == 4 and len(run._cache) == 2
    run.reset()
    assert not run._cache and not run._pending and not run.eager_signatures
    run(xs[0])
    assert run.records == 5


def test_without_the_check_the_second_call_replays_and_with_it_the_third() -> None:
    for check, records in ((True, 2), (False, 1)):
        _, step = _linear_step(lambda h: h)
        run = nb.compile_step(step, check=check)
        for _ in range(4):
            run(np.ones((2, 3)))
        assert run.records == records and run.replays == 4 - records


def test_a_signature_found_to_differ_stays_eager() -> None:
    calls = []

    def drifting(h: Any) -> Any:
        calls.append(None)
        return h * float(len(calls))

    run, warned = _run_compiled(drifting, calls=6)
    assert len(warned) == 1 and run.records == 2 and run.replays == 0
    assert len(run.eager_signatures) == 1
    assert "a Python value given to a node differs" in next(iter(run.eager_signatures.values()))
    assert len(calls) == 6  # every call ran the function


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": 3}, "compile_step: key must be a callable or None, got 3"),
        ({"cache_size": 0}, "compile_step: cache_size must be an int >= 1, got 0"),
        ({"cache_size": True}, "compile_step: cache_size must be an int >= 1, got True"),
        ({"cache_size": 2.0}, "compile_step: cache_size must be an int >= 1, got 2.0"),
    ],
)
def test_compile_step_refuses_bad_settings_exactly(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(nb.errors.ArgumentError, match=exactly(message)):
        nb.compile_step(lambda: None, **kwargs)


def test_compile_step_refuses_a_non_callable_exactly() -> None:
    message = "compile_step needs a callable running one training step, got int 42"
    with pytest.raises(nb.errors.ArgumentError, match=exactly(message)):
        nb.compile_step(42)  # type: ignore[arg-type]
    assert nb.compile_step(lambda: None, cache_size=1).cache_size == 1


# -- every refusal of the engine, word for word ------------------------------------------------
def _t(*shape: int, requires_grad: bool = True) -> Tensor:
    n = int(np.prod(shape)) if shape else 1
    values = (np.arange(n, dtype=np.float64) + 1.0).reshape(shape)
    return Tensor(values, requires_grad=requires_grad)


def _wrong_shape_grad() -> Any:
    from nnbackend.autograd.function import Function

    class Bad(Function):
        def forward(self, x: Any) -> Any:
            return x * 2.0

        def backward(self, gy: Any) -> Any:
            return gy[:1]

    return Bad()(_t(3)).sum().backward()


def _wrong_dtype_grad() -> Any:
    from nnbackend.autograd.function import Function

    class Bad(Function):
        def forward(self, x: Any) -> Any:
            return x * 2.0

        def backward(self, gy: Any) -> Any:
            return gy.astype(np.float32)

    return Bad()(_t(3)).sum().backward()


def _wrong_count() -> Any:
    from nnbackend.autograd.function import Function

    class Bad(Function):
        def forward(self, x: Any) -> Any:
            return x * 2.0

        def backward(self, gy: Any) -> Any:
            return gy, gy

    return Bad()(_t(3)).sum().backward()


def _no_forward() -> Any:
    return nb.autograd.Function()(_t(2))


def _no_backward() -> Any:
    from nnbackend.autograd.function import Function

    class Fwd(Function):
        def forward(self, x: Any) -> Any:
            return x * 1.0

    return Fwd()(_t(2)).sum().backward()


def _no_graph_backward() -> Any:
    from nnbackend.autograd.function import Function

    class Fwd(Function):
        def forward(self, x: Any) -> Any:
            return x * 1.0

    return Fwd().graph_backward(None)


def _scalars_only() -> Any:
    from nnbackend.autograd.function import Function

    class Fwd(Function):
        def forward(self, a: Any, b: Any) -> Any:
            return a

    return Fwd()(1.0, 2)


REFUSALS: dict[str, tuple[Any, type, str]] = {
    "int_requires_grad": (
        lambda: Tensor(np.arange(3), requires_grad=True),
        nb.errors.DtypeError,
        "only floating-point tensors can require a gradient, got dtype int64; a gradient of "
        "integers would be truncated to 0. Cast first, e.g. Tensor(xp.astype(x, xp.float32), "
        "requires_grad=True)",
    ),
    "item": (
        lambda: _t(2).item(),
        ValueError,
        "item() needs a tensor with one element, this one has shape (2,)",
    ),
    "len": (lambda: len(_t()), TypeError, "len() of a 0-d tensor"),
    "backward_no_grad": (
        lambda: _t(2, requires_grad=False).sum().backward(),
        nb.errors.GradientError,
        "backward() on a tensor that does not require a gradient: no input of its graph has "
        "requires_grad=True (or it was computed under no_grad())",
    ),
    "backward_not_scalar": (
        lambda: (_t(2, 3) * 2.0).backward(),
        nb.errors.GradientError,
        "backward() without a gradient needs a one-element tensor, this one has shape (2, 3); "
        "pass grad= an array of that shape (or reduce it first, e.g. loss.sum())",
    ),
    "backward_grad_shape": (
        lambda: (_t(2, 3) * 2.0).backward(np.ones((3, 2))),
        nb.errors.GradientError,
        "backward() got a gradient of shape (3, 2) for a tensor of shape (2, 3)",
    ),
    "grad_shape": (
        _wrong_shape_grad,
        nb.errors.ShapeError,
        "Bad.backward returned a gradient of shape (1,) for an input of shape (3,); gradients "
        "must have their input's shape",
    ),
    "grad_dtype": (
        _wrong_dtype_grad,
        nb.errors.DtypeError,
        "Bad.backward returned a float32 gradient for a float64 input; cast it back "
        "(xp.astype) so the model keeps its dtype",
    ),
    "grad_count": (
        _wrong_count,
        nb.errors.GradientError,
        "Bad.backward returned 2 gradients for 1 inputs",
    ),
    "no_forward": (_no_forward, NotImplementedError, "Function must define forward()"),
    "no_backward": (
        _no_backward,
        NotImplementedError,
        "Fwd defines neither backward() nor graph_backward()",
    ),
    "no_graph_backward": (
        _no_graph_backward,
        NotImplementedError,
        "Fwd does not define graph_backward()",
    ),
    "scalars_only": (
        _scalars_only,
        TypeError,
        "Fwd needs at least one Tensor or array input, got only Python scalars (1.0, 2)",
    ),
    "matmul_0d": (
        lambda: _t() @ _t(2),
        nb.errors.ShapeError,
        "matmul needs operands with at least one dimension; use * for scalars",
    ),
    "matmul_align": (
        lambda: _t(2, 3) @ _t(2, 3),
        nb.errors.ShapeError,
        "matmul: shapes (2, 3) and (2, 3) do not align (3 != 2)",
    ),
    "matmul_align_vector": (
        lambda: _t(2, 3) @ _t(2),
        nb.errors.ShapeError,
        "matmul: shapes (2, 3) and (2,) do not align (3 != 2)",
    ),
    "getitem_split_by_slice": (  # (several index arrays index now: this order is refused)
        lambda: _t(2, 3, 4)[0, :, np.array([0, 1])],
        nb.errors.ArgumentError,
        "getitem: (0, slice(None, None, None), array([0, 1])) has an int and index arrays "
        "separated by a slice: NumPy puts the indexed axes first and torch keeps them in "
        "place, so the result's axes would depend on the backend. Index the int first for "
        "torch's order (x[0][:, idx] for x[0, :, idx]), or move the axes with F.permute for "
        "NumPy's",
    ),
    "getitem_mask": (  # (boolean masks index now: a mask of the wrong shape is refused)
        lambda: _t(3)[np.array([True, False])],
        nb.errors.ShapeError,
        "getitem: a boolean mask of shape (2,) for axes 0 to 0 of an array of shape (3,): the "
        "mask must have those axes' lengths",
    ),
    "sum_to": (
        lambda: nb.functional.sum_to(_t(3), (1, 1, 3)),
        nb.errors.ShapeError,
        "sum_to: cannot sum shape (3,) to (1, 1, 3): (1, 1, 3) must broadcast to (3,) (each "
        "axis of that length or 1)",
    ),
    "clip": (
        lambda: nb.functional.clip(_t(3), 2.0, 1.0),
        nb.errors.ArgumentError,
        "clip: min 2.0 is greater than max 1.0",
    ),
    "var": (
        lambda: _t(2, 3).var(axis=0, correction=2.0),
        nb.errors.ArgumentError,
        "var: 2 elements with correction 2.0: nothing to divide",
    ),
    "flatten": (
        lambda: nb.functional.flatten(_t(2, 3, 4), 2, 1),
        nb.errors.ArgumentError,
        "flatten: start axis 2 comes after end axis 1",
    ),
    "squeeze": (
        lambda: nb.functional.squeeze(_t(2, 1, 3), (1, 2)),
        nb.errors.ShapeError,
        "squeeze: axes [2] of shape (2, 1, 3) do not have length 1",
    ),
    "expand_dims_high": (
        lambda: nb.functional.expand_dims(_t(2, 3), 3),
        nb.errors.ArgumentError,
        "expand_dims: axis 3 is out of range for 2 axes",
    ),
    "expand_dims_low": (
        lambda: nb.functional.expand_dims(_t(2, 3), -4),
        nb.errors.ArgumentError,
        "expand_dims: axis -4 is out of range for 2 axes",
    ),
    "stack_shapes": (
        lambda: nb.functional.stack([_t(2), _t(3)]),
        nb.errors.ShapeError,
        "stack needs arrays of one shape, got [(2,), (3,)]",
    ),
    "split_0d": (
        lambda: nb.functional.split(_t(), 1),
        nb.errors.ShapeError,
        "split needs an array with at least one axis",
    ),
    "split_unequal": (
        lambda: nb.functional.split(_t(5), 2),
        nb.errors.ShapeError,
        "split: an axis of length 5 does not split into 2 equal parts",
    ),
    "split_zero": (
        lambda: nb.functional.split(_t(4), 0),
        nb.errors.ShapeError,
        "split: an axis of length 4 does not split into 0 equal parts",
    ),
    "split_sizes": (
        lambda: nb.functional.split(_t(4), [1, 2]),
        nb.errors.ShapeError,
        "split: part lengths [1, 2] do not add up to the axis' 4",
    ),
    "split_negative": (
        lambda: nb.functional.split(_t(4), [5, -1]),
        nb.errors.ShapeError,
        "split: part lengths [5, -1] do not add up to the axis' 4",
    ),
    "pad_pairs": (
        lambda: nb.functional.pad(_t(2, 3), [(1, 1)] * 3),
        nb.errors.ShapeError,
        "pad: 3 (before, after) pairs for an array of 2 axes; give one pair per axis, or one "
        "pair for all of them",
    ),
    "pad_negative": (
        lambda: nb.functional.pad(_t(2, 3), [(0, 0), (1, -1)]),
        nb.errors.ArgumentError,
        "pad: pad_width [(0, 0), (1, -1)] has a negative width; give an int, a (before, "
        "after) pair of non-negative ints, or one such pair for each of the 2 axes",
    ),
    "take_float": (
        lambda: nb.functional.take(_t(3), np.array([0.0, 1.0])),
        nb.errors.ArgumentError,
        "take: indices must be integers, got float64",
    ),
    "einsum_implicit": (
        lambda: nb.functional.einsum("ij,jk", _t(2, 2), _t(2, 2)),
        nb.errors.ArgumentError,
        "einsum: 'ij,jk': write the output explicitly (e.g. 'ij,jk->ik'); '...' is not supported",
    ),
    "einsum_ellipsis": (
        lambda: nb.functional.einsum("...i->i", _t(2, 2)),
        nb.errors.ArgumentError,
        "einsum: '...i->i': write the output explicitly (e.g. 'ij,jk->ik'); '...' is not supported",
    ),
    "einsum_operands": (
        lambda: nb.functional.einsum("ij->ij", _t(2, 2), _t(2, 2)),
        nb.errors.ArgumentError,
        "einsum: 'ij->ij' needs 1 or 2 operands, got 2",
    ),
    "einsum_three": (
        lambda: nb.functional.einsum("i,i,i->", _t(2), _t(2), _t(2)),
        nb.errors.ArgumentError,
        "einsum: 'i,i,i->' needs 1 or 2 operands, got 3",
    ),
    "einsum_diagonal": (
        lambda: nb.functional.einsum("ii->i", _t(2, 2)),
        nb.errors.ArgumentError,
        "einsum: repeated index in 'ii' (diagonals) is not supported",
    ),
    "einsum_axes": (
        lambda: nb.functional.einsum("ijk->i", _t(2, 2)),
        nb.errors.ShapeError,
        "einsum: 'ijk' names 3 axes of a 2-d operand",
    ),
    "einsum_output": (
        lambda: nb.functional.einsum("ij->ik", _t(2, 2)),
        nb.errors.ArgumentError,
        "einsum: output indices 'ik' do not all appear in the inputs",
    ),
    "einsum_lengths": (
        lambda: nb.functional.einsum("ij,jk->ik", _t(2, 3), _t(2, 2)),
        nb.errors.ShapeError,
        "einsum: index 'j' has lengths 2 and 3",
    ),
    "getitem_ellipses": (
        lambda: nb.functional.getitem(_t(2, 3), (Ellipsis, slice(None, None, -1), Ellipsis)),
        nb.errors.ArgumentError,
        "getitem: at most one ... in an index, got (Ellipsis, slice(None, None, -1), Ellipsis)",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_word_for_word(case: str) -> None:
    call, error, message = REFUSALS[case]
    with pytest.raises(error, match=exactly(message)):
        call()


def test_limits_that_are_allowed() -> None:
    """The edges of each refusal pass: min == max, N - correction > 0, start == end, the
    extreme positions of a new axis, empty parts and zero widths."""
    assert host(nb.functional.clip(_t(3), 2.0, 2.0)).tolist() == [2.0, 2.0, 2.0]
    assert host(_t(2, 3).var(axis=0, correction=1.5)).shape == (3,)
    assert nb.functional.flatten(_t(2, 3, 4), 1, 1).shape == (2, 3, 4)
    assert nb.functional.flatten(_t(2, 3, 4), -2).shape == (2, 12)
    assert nb.functional.flatten(_t()).shape == (1,)
    assert nb.functional.expand_dims(_t(2, 3), 2).shape == (2, 3, 1)
    assert nb.functional.expand_dims(_t(2, 3), -3).shape == (1, 2, 3)
    assert nb.functional.expand_dims(_t(2, 3), -1).shape == (2, 3, 1)
    assert [p.shape for p in nb.functional.split(_t(4), [0, 4])] == [(0,), (4,)]
    assert [p.shape for p in nb.functional.split(_t(2, 4), 2, axis=-1)] == [(2, 2), (2, 2)]
    assert nb.functional.pad(_t(2, 3), [(0, 0), (0, 2)]).shape == (2, 5)
    assert nb.functional.pad(_t(2, 3), (1, 2)).shape == (5, 6)
    assert nb.functional.squeeze(_t(2, 1, 3), -2).shape == (2, 3)
    assert nb.functional.squeeze(_t(1, 2, 1)).shape == (2,)


# -- gradcheck: its report, its arguments and its comparisons ----------------------------------
class _Off(nb.autograd.Function):
    """``x * 2`` whose backward adds ``bump`` where ``mask`` is set (and may put non-finite
    values there)."""

    def __init__(self, bump: Any, mask: Any) -> None:
        self.bump, self.mask = bump, mask

    def forward(self, x: Any) -> Any:
        return x * 2.0

    def backward(self, gy: Any) -> Any:
        return gy * 2.0 + self.xp.asarray(np.where(self.mask, self.bump, 0.0).tolist())


def test_gradcheck_reports_the_worst_element_exactly() -> None:
    x = np.array([[0.5, 1.0, 1.5], [2.0, 2.5, 3.0]])
    mask = np.array([[0, 0, 1], [0, 1, 0]], bool)
    bump = np.array([[0.0, 0.0, 0.1], [0.0, 0.3, 0.0]])
    with pytest.raises(nb.errors.GradientError) as info:
        nb.gradcheck(lambda t: _Off(bump, mask)(t), x)
    message = str(info.value)
    weight = np.random.default_rng(0).uniform(-1.0, 1.0, size=(2, 3))[1, 1]
    numeric, analytic = 2.0 * weight, 2.0 * weight + 0.3
    head = "gradcheck failed for input 0 (shape (2, 3), float64) at index (1, 1): backward gives "
    assert message.startswith(head), message
    got_a, got_n = (float(v) for v in re.findall(r"give[s]? (-?[\d.e-]+)", message))
    assert got_a == pytest.approx(analytic, abs=1e-9)
    assert got_n == pytest.approx(numeric, abs=1e-6)
    assert message.endswith("(rtol=1e-06, atol=1e-06)")


@pytest.mark.parametrize(
    ("bump", "count"),
    [(float("nan"), 1), (float("inf"), 2)],
)
def test_gradcheck_counts_non_finite_mismatches(bump: float, count: int) -> None:
    x = np.array([0.5, 1.0, 1.5])
    mask = np.array([False, True, count == 2])
    with pytest.raises(nb.errors.GradientError) as info:
        nb.gradcheck(lambda t: _Off(bump, mask)(t), x)
    plural = "s" if count != 1 else ""
    assert str(info.value).endswith(
        f"(a non-finite gradient where the other is finite or differs ({count} element{plural}))"
    )
    assert " at index (1,): backward gives " in str(info.value)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_gradcheck_accepts_equal_non_finite_gradients() -> None:
    """An infinity where central differences also give that infinity (and NaN against NaN)
    is no mismatch; +inf against -inf is."""
    from nnbackend.autograd.gradcheck import _compare
    from nnbackend.backends.ops import Ops

    np_ = Ops.host_numpy()
    inf, nan = float("inf"), float("nan")
    same = np.array([1.0, inf, -inf, nan])
    _compare(np_, 0, (4,), "float64", same, same.copy(), 1e-6, 1e-6)
    with pytest.raises(nb.errors.GradientError, match=r"at index \(1,\)"):
        _compare(np_, 0, (4,), "float64", same, np.array([1.0, -inf, -inf, nan]), 1e-6, 1e-6)
    with pytest.raises(nb.errors.GradientError, match=r"at index \(3,\)"):
        _compare(np_, 0, (4,), "float64", same, np.array([1.0, inf, -inf, inf]), 1e-6, 1e-6)
    # Within atol + rtol * |numeric| passes, just beyond fails.
    _compare(
        np_, 0, (2,), "float64", np.array([1.0, 10.0]), np.array([1.0, 10.0 + 1e-5]), 1e-6, 1e-6
    )
    with pytest.raises(nb.errors.GradientError, match=r"at index \(1,\)"):
        _compare(
            np_, 0, (2,), "float64", np.array([1.0, 10.0]), np.array([1.0, 10.0 + 2e-5]), 1e-6, 1e-6
        )
    # atol alone decides near zero.
    _compare(np_, 0, (1,), "float64", np.array([0.0]), np.array([0.5e-6]), 0.0, 1e-6)
    with pytest.raises(nb.errors.GradientError):
        _compare(np_, 0, (1,), "float64", np.array([0.0]), np.array([2e-6]), 0.0, 1e-6)
    _compare(np_, 0, (0,), "float64", np.zeros(0), np.zeros(0), 0.0, 0.0)  # nothing to compare


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eps": 0}, "gradcheck: eps must be a finite number > 0, got 0 (central differences "
         "need a step, e.g. eps=1e-6)"),
        ({"eps": True}, "gradcheck: eps must be a finite number > 0, got True (central "
         "differences need a step, e.g. eps=1e-6)"),
        ({"rtol": -1.0}, "gradcheck: rtol must be a finite number >= 0, got -1.0"),
        ({"atol": "x"}, "gradcheck: atol must be a finite number >= 0, got 'x'"),
        ({"atol": float("inf")}, "gradcheck: atol must be a finite number >= 0, got inf"),
    ],
)  # fmt: skip
def test_gradcheck_refuses_bad_arguments_exactly(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(nb.errors.ArgumentError, match=exactly(message)):
        nb.gradcheck(lambda t: t * t, np.array([0.5, 1.0]), **kwargs)


def test_gradcheck_takes_zero_tolerances_and_a_given_step() -> None:
    x = np.array([0.5, 1.0])
    assert nb.gradcheck(lambda t: t * 3.0, x, rtol=0.0, atol=1e-9, eps=0.25)
    assert nb.gradcheck(lambda t: t * 3.0, x, rtol=1e-9, atol=0.0)


def test_gradcheck_refusals_of_its_function_and_inputs_exactly() -> None:
    with pytest.raises(
        nb.errors.GradientError, match=exactly("gradcheck needs at least one floating-point input")
    ):
        nb.gradcheck(lambda i: Tensor(i), np.array([1, 2]))

    def returns_array(t: Tensor) -> Any:
        return t.data

    message = (
        "gradcheck: fn 'returns_array' returned numpy.ndarray, not a Tensor; it must compute "
        "its result from the Tensors it is given (with Tensor operations) so that the result "
        "can be differentiated"
    )
    with pytest.raises(nb.errors.GradientError, match=exactly(message)):
        nb.gradcheck(returns_array, np.array([0.5]))


def test_gradcheck_of_a_constant_function_and_of_an_unused_input() -> None:
    """A function whose output needs no gradient has analytic gradients 0; so has an input
    it ignores; both equal central differences."""
    x, y = np.array([0.5, 1.0]), np.array([2.0, 3.0])
    assert nb.gradcheck(lambda t: Tensor(np.ones(2)), x)
    assert nb.gradcheck(lambda a, b: a * 2.0, x, y)
    with pytest.raises(nb.errors.GradientError, match="for input 1 "):
        nb.gradcheck(lambda a, b: a * 2.0 + Tensor(b.data), x, y)


def test_gradcheck_projects_with_its_seed() -> None:
    """The output is weighted by uniform(-1, 1) numbers from ``seed``: a gradient wrong by
    a multiple of one weight is found at that weight's index, for each seed."""
    x = np.array([0.5, 1.0, 1.5, 2.0])
    for seed in (0, 5):
        weights = np.random.default_rng(seed).uniform(-1.0, 1.0, size=4)
        worst = int(np.argmax(np.abs(weights)))

        class Scaled(nb.autograd.Function):
            def forward(self, t: Any) -> Any:
                return t * 1.0

            def backward(self, gy: Any) -> Any:
                return gy * 2.0  # twice the true gradient: off by |weight| everywhere

        with pytest.raises(nb.errors.GradientError, match=rf"at index \({worst},\)"):
            nb.gradcheck(lambda t: Scaled()(t), x, seed=seed)


# -- every Tensor method and operator computes what it says -----------------------------------
_A = np.array([[0.5, -1.25, 2.0], [1.5, 0.75, -0.5]])
_B = np.array([[1.5, 0.5, -2.0], [0.25, 2.0, 1.0]])

METHODS: dict[str, tuple[Any, Any]] = {
    "neg": (lambda a, b: -a, lambda a, b: -a),
    "radd": (lambda a, b: 2.5 + a, lambda a, b: 2.5 + a),
    "rsub": (lambda a, b: 2.5 - a, lambda a, b: 2.5 - a),
    "rmul": (lambda a, b: 2.5 * a, lambda a, b: 2.5 * a),
    "rtruediv": (lambda a, b: 2.5 / a, lambda a, b: 2.5 / a),
    "rpow": (lambda a, b: 2.5**a, lambda a, b: 2.5**a),
    "pow": (lambda a, b: a.abs() ** 1.5, lambda a, b: np.abs(a) ** 1.5),
    "sub": (lambda a, b: a - b, lambda a, b: a - b),
    "truediv": (lambda a, b: a / b, lambda a, b: a / b),
    "matmul": (lambda a, b: a @ b.T, lambda a, b: a @ b.T),
    "exp": (lambda a, b: a.exp(), np.exp),
    "log": (lambda a, b: a.abs().log(), lambda a, b: np.log(np.abs(a))),
    "sqrt": (lambda a, b: a.abs().sqrt(), lambda a, b: np.sqrt(np.abs(a))),
    "log1p": (lambda a, b: a.abs().log1p(), lambda a, b: np.log1p(np.abs(a))),
    "expm1": (lambda a, b: a.expm1(), lambda a, b: np.expm1(a)),
    "sin": (lambda a, b: a.sin(), lambda a, b: np.sin(a)),
    "cos": (lambda a, b: a.cos(), lambda a, b: np.cos(a)),
    "tan": (lambda a, b: a.tan(), lambda a, b: np.tan(a)),
    "tanh": (lambda a, b: a.tanh(), lambda a, b: np.tanh(a)),
    "sigmoid": (lambda a, b: a.sigmoid(), lambda a, b: 1.0 / (1.0 + np.exp(-a))),
    "softplus": (lambda a, b: a.softplus(), lambda a, b: np.log1p(np.exp(a))),
    "clip": (lambda a, b: a.clip(-1.0, 1.0), lambda a, b: np.clip(a, -1.0, 1.0)),
    "clip_low": (lambda a, b: a.clip(min=0.6), lambda a, b: np.maximum(a, 0.6)),
    "clip_high": (lambda a, b: a.clip(max=0.6), lambda a, b: np.minimum(a, 0.6)),
    "maximum": (lambda a, b: a.maximum(b), np.maximum),
    "minimum": (lambda a, b: a.minimum(b), np.minimum),
    "permute": (lambda a, b: a.reshape(1, 2, 3).permute(2, 0, 1), lambda a, b: a.reshape(1, 2, 3).transpose(2, 0, 1)),  # noqa: E501
    "permute_tuple": (lambda a, b: a.permute((1, 0)), lambda a, b: a.T),
    "transpose": (lambda a, b: a.reshape(1, 2, 3).transpose(1, 2, 0), lambda a, b: a.reshape(1, 2, 3).transpose(1, 2, 0)),  # noqa: E501
    "transpose_list": (lambda a, b: a.transpose([1, 0]), lambda a, b: a.T),
    "transpose_none": (lambda a, b: a.reshape(1, 2, 3).transpose(), lambda a, b: a.reshape(1, 2, 3).T),  # noqa: E501
    "T": (lambda a, b: a.T, lambda a, b: a.T),
    "reshape_list": (lambda a, b: a.reshape([3, 2]), lambda a, b: a.reshape(3, 2)),
    "flatten": (lambda a, b: a.reshape(1, 2, 3).flatten(1), lambda a, b: a.reshape(1, 6)),
    "flatten_end": (lambda a, b: a.reshape(1, 2, 3).flatten(0, 1), lambda a, b: a.reshape(2, 3)),
    "squeeze": (lambda a, b: a.reshape(1, 2, 1, 3).squeeze(2), lambda a, b: a.reshape(1, 2, 3)),
    "expand_dims": (lambda a, b: a.expand_dims(1), lambda a, b: a.reshape(2, 1, 3)),
    "unsqueeze": (lambda a, b: a.unsqueeze(-1), lambda a, b: a.reshape(2, 3, 1)),
    "broadcast_to": (lambda a, b: a[0, :].broadcast_to((4, 3)), lambda a, b: np.broadcast_to(a[0], (4, 3))),  # noqa: E501
    "sum_to": (lambda a, b: a.sum_to((1, 3)), lambda a, b: a.sum(axis=0, keepdims=True)),
    "flip": (lambda a, b: a.flip(1), lambda a, b: a[:, ::-1]),
    "flip_all": (lambda a, b: a.flip(), lambda a, b: a[::-1, ::-1]),
    "take": (lambda a, b: a.take([2, 0], axis=1), lambda a, b: a[:, [2, 0]]),
    "take_rows": (lambda a, b: a.take([1, 1, 0]), lambda a, b: a[[1, 1, 0]]),
    "split": (lambda a, b: a.split([1, 2], axis=1)[1], lambda a, b: a[:, 1:]),
    "min": (lambda a, b: a.min(), lambda a, b: np.min(a)),
    "max": (lambda a, b: a.max(), lambda a, b: np.max(a)),
    "mean_keep": (lambda a, b: a.mean(1, True), lambda a, b: a.mean(1, keepdims=True)),
    "sum_keep": (lambda a, b: a.sum(0, True), lambda a, b: a.sum(0, keepdims=True)),
    "std": (lambda a, b: a.std(1, False, 1.0), lambda a, b: a.std(1, ddof=1)),
    "logsumexp_keep": (lambda a, b: a.logsumexp(1, True), lambda a, b: np.log(np.exp(a).sum(1, keepdims=True))),  # noqa: E501
    "getitem": (lambda a, b: a[1, ::2], lambda a, b: a[1, ::2]),
    "getitem_reversed": (lambda a, b: a[:, ::-1], lambda a, b: a[:, ::-1]),
    "getitem_reversed_empty": (lambda a, b: a[:, 1:1:-1], lambda a, b: a[:, 1:1:-1]),
    "getitem_reversed_part": (lambda a, b: a[:, 2:0:-1], lambda a, b: a[:, 2:0:-1]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(METHODS))
def test_tensor_methods_compute_what_they_say(name: str, xp64: Any) -> None:
    method, reference = METHODS[name]
    a = Tensor(xp64.asarray(_A.tolist()), requires_grad=True)
    b = Tensor(xp64.asarray(_B.tolist()), requires_grad=True)
    got = method(a, b)
    want = np.asarray(reference(_A, _B))
    assert got.shape == want.shape
    np.testing.assert_allclose(host(got), want, rtol=1e-12, atol=1e-12)
    if got.requires_grad:  # and the gradient is that of the same function
        assert nb.gradcheck(method, a.data, b.data)


def test_argmin_argmax_keepdims_and_axes(xp64: Any) -> None:
    a = Tensor(xp64.asarray(_A.tolist()))
    assert host(a.argmin(axis=1)).tolist() == [1, 2]
    assert host(a.argmax(axis=0, keepdims=True)).tolist() == [[1, 1, 0]]
    assert host(a.argmin(keepdims=True)).tolist() == [[1]]


def test_a_one_element_tensor_backward_seeds_ones(xp64: Any) -> None:
    x = Tensor(xp64.asarray([[1.5]]), requires_grad=True)
    y = x * 3.0
    y.backward()
    assert host(x.grad).tolist() == [[3.0]] and host(y.grad).tolist() == [[1.0]]


def test_backward_takes_a_tensor_or_another_dtype_and_copies_it(xp64: Any) -> None:
    x = Tensor(xp64.asarray([1.0, 2.0]), requires_grad=True)
    seed = xp64.asarray([0.5, -1.0], dtype=xp64.float32)
    y = x * 2.0
    y.backward(seed)
    assert host(x.grad).tolist() == [1.0, -2.0] and x.grad.dtype == xp64.float64
    assert y.grad.dtype == xp64.float64
    given = xp64.asarray([1.0, 1.0])
    z = x * 1.0
    z.backward(Tensor(given))
    assert z.grad is not given
    np.testing.assert_array_equal(host(x.grad), [2.0, -1.0])
    leaf = Tensor(xp64.asarray([1.0, 2.0]), requires_grad=True)
    leaf.backward(given)
    leaf.backward(given)  # a leaf's own backward accumulates too
    assert host(leaf.grad).tolist() == [2.0, 2.0] and host(given).tolist() == [1.0, 1.0]


def test_moving_a_tensor_maps_its_data_and_gradient(xp64: Any) -> None:
    t = Tensor(xp64.asarray([1.0, 2.0]), requires_grad=True, name="w")
    seen = []

    def twice(a: Any) -> Any:
        seen.append(a)
        return a * 2.0

    assert t._applied(twice).grad is None
    t.grad = xp64.asarray([0.5, 0.25])
    copy = t._applied(twice)
    assert copy is not t and copy.requires_grad and copy.name == "w" and copy.creator is None
    assert host(copy).tolist() == [2.0, 4.0] and host(copy.grad).tolist() == [1.0, 0.5]
    assert host(t).tolist() == [1.0, 2.0]
    frozen = Tensor(xp64.asarray([1.0]))._applied(twice)
    assert not frozen.requires_grad
    assert t._apply(twice) is t
    assert host(t).tolist() == [2.0, 4.0] and host(t.grad).tolist() == [1.0, 0.5]
    t.zero_grad()
    assert t.grad is None and t._apply(twice).grad is None


def test_tensor_conversions_and_repr(xp64: Any) -> None:
    assert float(Tensor(xp64.asarray([2.5]))) == 2.5
    assert bool(Tensor(xp64.asarray(0.0))) is False and bool(Tensor(xp64.asarray(1.0))) is True
    w = Tensor(xp64.asarray([1.0]), requires_grad=True)
    assert repr(w) == f"Tensor({w.data!r}, requires_grad=True)"
    y = w * 2.0
    assert repr(y) == f"Tensor({y.data!r}, requires_grad=True, creator=Mul)"
    assert repr(Tensor(xp64.asarray([1.0]))) == f"Tensor({xp64.asarray([1.0])!r})"
    assert Tensor(np.float64(2.5)).shape == ()


# -- nb.grad: its arguments, several outputs, and what it returns ------------------------------
def test_grad_of_several_outputs_sums_their_weighted_gradients(xp64: Any) -> None:
    x = Tensor(rand(xp64, 2, 3, seed=7), requires_grad=True)
    a, b = x * 2.0, (x * x).sum(axis=1)
    wa, wb = rand(xp64, 2, 3, seed=8), rand(xp64, 2, seed=9)
    (g,) = nb.grad([a, b], x, [wa, Tensor(wb)])
    want = 2.0 * host(wa) + 2.0 * host(x) * host(wb)[:, None]
    np.testing.assert_allclose(host(g), want, rtol=1e-12)
    assert x.grad is None and not g.requires_grad and g.creator is None
    (g2,) = nb.grad(a, [x], wa)  # one array for one output; inputs as a list
    np.testing.assert_allclose(host(g2), 2.0 * host(wa), rtol=1e-12)
    (g3,) = nb.grad((a, b), (x,), (wa, wb), create_graph=True, retain_graph=True)
    assert g3.requires_grad
    np.testing.assert_allclose(host(g3), want, rtol=1e-12)


def test_grad_with_respect_to_an_intermediate_and_a_leaf_used_twice(xp64: Any) -> None:
    x = Tensor(rand(xp64, 3, seed=10), requires_grad=True)
    h = x * x
    y = (h * x + h).sum()  # x used through h and directly
    gh, gx = nb.grad(y, [h, x])
    np.testing.assert_allclose(host(gh), host(x) + 1.0, rtol=1e-12)
    np.testing.assert_allclose(host(gx), 3.0 * host(x) ** 2 + 2.0 * host(x), rtol=1e-12)


def test_grad_refuses_word_for_word(xp64: Any) -> None:
    x = Tensor(rand(xp64, 2, seed=1), requires_grad=True)
    y = x * 2.0
    with pytest.raises(
        nb.errors.GradientError,
        match=exactly("grad(): 2 grad_outputs for 1 outputs; pass one each"),
    ):
        nb.grad(y, x, [xp64.ones(2), xp64.ones(2)])
    with pytest.raises(TypeError, match=exactly("grad(): outputs must be Tensors, got ndarray")):
        nb.grad([np.ones(2)], x)
    with pytest.raises(TypeError, match=exactly("grad(): inputs must be Tensors, got list")):
        nb.grad(y, [[x]])
    message = (
        "grad(): an output does not require a gradient: no input of its graph has "
        "requires_grad=True (or it was computed under no_grad())"
    )
    with pytest.raises(nb.errors.GradientError, match=exactly(message)):
        nb.grad(Tensor(xp64.ones(2)), x, xp64.ones(2))
    message = (
        "grad(): grad_outputs may be omitted only for one-element outputs, this one has "
        "shape (2,); pass an array of that shape"
    )
    with pytest.raises(nb.errors.GradientError, match=exactly(message)):
        nb.grad(y, x)
    with pytest.raises(
        nb.errors.GradientError,
        match=exactly("grad(): a gradient of shape (3,) for an output of shape (2,)"),
    ):
        nb.grad(y, x, xp64.ones(3))
    z = Tensor(rand(xp64, 4, seed=2), requires_grad=True)
    message = (
        "grad(): input 1 (shape (4,)) is not used by the outputs' graph (or does not require "
        "a gradient); pass allow_unused=True to get None for it"
    )
    with pytest.raises(nb.errors.GradientError, match=exactly(message)):
        nb.grad(y, [x, z], xp64.ones(2))


def test_grad_casts_a_host_gradient_to_the_outputs_dtype(xp64: Any) -> None:
    x = Tensor(xp64.asarray([1.0, 2.0], dtype=xp64.float32), requires_grad=True)
    (g,) = nb.grad(x * 3.0, x, [[1.0, 0.5]])
    assert g.dtype == xp64.float32 and host(g).tolist() == [3.0, 1.5]


def test_create_graph_through_a_multi_output_node_with_one_output_unused(xp64: Any) -> None:
    """A split whose first part is not used: its gradient there is zeros, and the second
    derivative through the used part is right."""
    x = Tensor(rand(xp64, 5, seed=3), requires_grad=True)
    _, right = x.split([2, 3])  # an unused part of two elements (no truth value)
    y = (right**3).sum()
    (g,) = nb.grad(y, x, create_graph=True)
    xs = host(x)
    np.testing.assert_allclose(host(g), np.r_[0.0, 0.0, 3 * xs[2:] ** 2], rtol=1e-12)
    (gg,) = nb.grad(g.sum(), x)
    np.testing.assert_allclose(host(gg), np.r_[0.0, 0.0, 6 * xs[2:]], rtol=1e-12)


def test_backward_create_graph_leaves_constants_alone(xp64: Any) -> None:
    """Leaves that need no gradient get none; a leaf's gradient adds on a second pass."""
    x = Tensor(rand(xp64, 3, seed=4), requires_grad=True)
    c = Tensor(rand(xp64, 3, seed=5))
    y = (x * c).sum()
    y.backward(create_graph=True)
    y.backward(create_graph=True)
    assert c.grad is None
    np.testing.assert_allclose(host(x.grad), 2.0 * host(c), rtol=1e-12)


# -- anomaly detection: what each message says -------------------------------------------------
class _Emit(nb.autograd.Function):
    """Forward returns ``x * 1`` plus ``extra`` (an array), backward returns ``grad``."""

    def __init__(self, extra: Any = None, grad: Any = None) -> None:
        self.extra, self.grad = extra, grad

    def forward(self, x: Any, *rest: Any) -> Any:
        return x * 1.0 if self.extra is None else x * 1.0 + self.extra

    def backward(self, gy: Any) -> Any:
        g = gy if self.grad is None else gy * 0.0 + self.grad
        return (g,) + (None,) * (len(self.inputs) - 1)


@pytest.mark.parametrize(
    ("extra", "kind"),
    [
        ([0.0, np.nan, 0.0], "NaN"),
        ([0.0, np.inf, 0.0], "inf"),
        ([0.0, -np.inf, 0.0], "-inf"),
        ([np.nan, np.inf, -np.inf], "NaN and inf and -inf"),
        ([np.inf, -np.inf, 0.0], "inf and -inf"),
    ],
)
def test_anomaly_names_each_kind_of_non_finite_value(extra: list[float], kind: str) -> None:
    from nnbackend.autograd import AnomalyError, detect_anomaly

    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    with detect_anomaly(), pytest.raises(AnomalyError) as info:
        _Emit(np.array(extra))(x, 2.5, None)
    assert str(info.value) == (
        f"_Emit forward produced {kind} in output 0 (shape (3,) float64); input 0: shape (3,) "
        "float64; input 1: 2.5; input 2: None"
    )


def test_anomaly_in_a_backward_names_the_gradients_and_shapes() -> None:
    from nnbackend.autograd import AnomalyError, detect_anomaly

    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with detect_anomaly(record_stack=False):
        y = _Emit(grad=np.array([np.nan, 0.0]))(x, 2.0)
        with pytest.raises(AnomalyError) as info:
            y.backward(np.array([1.0, 1.0]))
    assert str(info.value) == (
        "_Emit backward produced NaN in the gradient of input 0 (shape (2,) float64); input 0: "
        "shape (2,) float64; input 1: None; output 0 gradient: shape (2,) float64"
    )


def test_anomaly_shows_the_last_forward_frames_of_the_op() -> None:
    from nnbackend.autograd import AnomalyError, detect_anomaly

    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with detect_anomaly():
        y = _Emit(grad=np.array([np.inf, 0.0]))(x)
        with pytest.raises(AnomalyError) as info:
            y.backward(np.array([1.0, 1.0]))
    head, sep, stack = str(info.value).partition("\nThe op was called in the forward pass at:\n")
    assert sep and head.endswith("output 0 gradient: shape (2,) float64")
    assert stack.count('  File "') == 4
    if "MUTANT_UNDER_TEST" not in __import__("os").environ:  # trampolines add frames there
        assert stack.rstrip().endswith("y = _Emit(grad=np.array([np.inf, 0.0]))(x)")


def test_anomaly_checks_gradients_in_create_graph_passes_too() -> None:
    from nnbackend.autograd import AnomalyError, detect_anomaly

    class Given(nb.autograd.Function):
        def forward(self, x: Any) -> Any:
            return x * 1.0

        def graph_backward(self, gy: Any) -> Any:
            return Tensor(np.array([1.0, np.inf]))  # made outside any op

    x = Tensor(np.array([0.0, 1.0]), requires_grad=True)
    with detect_anomaly(record_stack=False):
        y = Given()(x).sum()
        with pytest.raises(AnomalyError, match=r"^Given backward produced inf in the gradient"):
            nb.grad(y, x, create_graph=True)
        with pytest.raises(AnomalyError, match=r"^Given backward produced inf in the gradient"):
            nb.grad(y, x)


# -- to_dot: the whole text ----------------------------------------------------------------------
def _numbered(dot: str) -> str:
    """DOT text with each ``t<id>`` / ``f<id>`` renamed in order of first appearance."""
    names: dict[str, str] = {}

    def rename(m: re.Match[str]) -> str:
        key = m.group(0)
        if key not in names:
            names[key] = f"{key[0]}{sum(1 for k in names if k[0] == key[0])}"
        return names[key]

    return re.sub(r"\b[tf]\d{6,}\b", rename, dot)


def test_to_dot_writes_every_op_tensor_and_edge(xp64: Any) -> None:
    from nnbackend.autograd import to_dot

    w = Tensor(xp64.ones(2), requires_grad=True, name='w"1')
    c = Tensor(xp64.ones(2))
    y = (w * c + w * xp64.ones(2)).sum()
    got = _numbered(to_dot(y, title="t\\x"))
    want = """digraph "t\\\\x" {
  rankdir=LR;
  node [fontname="Helvetica"];
  t0 [label="() float64", shape=ellipse];
  f0 [label="Sum", shape=box, style=filled, fillcolor="lightgrey"];
  f0 -> t0;
  t1 [label="(2,) float64", shape=ellipse];
  t1 -> f0;
  f1 [label="Add", shape=box, style=filled, fillcolor="lightgrey"];
  f1 -> t1;
  t2 [label="(2,) float64", shape=ellipse];
  t2 -> f1;
  t3 [label="(2,) float64", shape=ellipse];
  t3 -> f1;
  f2 [label="Mul", shape=box, style=filled, fillcolor="lightgrey"];
  f2 -> t3;
  t4 [label="w\\"1\\n(2,) float64", shape=ellipse, style=filled, fillcolor="lightblue"];
  t4 -> f2;
  f3 [label="Mul", shape=box, style=filled, fillcolor="lightgrey"];
  f3 -> t2;
  t4 -> f3;
  t5 [label="(2,) float64", shape=ellipse];
  t5 -> f3;
}"""
    assert got == want


def test_to_dot_skips_dead_outputs_and_draws_a_leaf_alone(xp64: Any) -> None:
    from nnbackend.autograd import to_dot

    x = Tensor(xp64.ones(4), requires_grad=True)
    left, right = x.split(2)
    del right  # the split's second output is gone
    dot = _numbered(to_dot(left * 2.0))
    assert dot.count("-> t") == 2  # Mul -> its output, Split -> left only
    assert 'f1 [label="Split"' in dot
    leaf = _numbered(to_dot(x, title="x"))
    assert leaf.splitlines() == [
        'digraph "x" {',
        "  rankdir=LR;",
        '  node [fontname="Helvetica"];',
        '  t0 [label="(4,) float64", shape=ellipse, style=filled, fillcolor="lightblue"];',
        "}",
    ]


# -- compile_step: refusals word for word, and the replay of less usual steps ------------------
def _compile_params() -> tuple[Any, Any]:
    from nnbackend import nn, optim

    w = nn.Parameter(np.array([[0.5, -1.0], [1.5, 0.25]]))
    return w, optim.SGD([w], lr=0.1)


def _refusal(body: Any) -> str:
    w, opt = _compile_params()
    outside = w * 2.0

    def step(x: Any) -> Any:
        return body(w, opt, x, outside)

    with pytest.raises((nb.errors.CompileError, nb.errors.GradientError)) as info:
        nb.compile_step(step)(np.ones((3, 2)))
    return str(info.value)


def test_compile_step_refusals_word_for_word() -> None:
    def create_graph(w: Any, opt: Any, x: Any, outside: Any) -> Any:
        (Tensor(x) @ w).sum().backward(create_graph=True)

    assert _refusal(create_graph) == (
        "compile_step cannot record backward(create_graph=True); take higher-order gradients "
        "eagerly"
    )

    def on_leaf(w: Any, opt: Any, x: Any, outside: Any) -> Any:
        w.backward(np.ones((2, 2)))

    assert _refusal(on_leaf) == "compile_step cannot record backward() on a leaf Tensor"

    def on_outside(w: Any, opt: Any, x: Any, outside: Any) -> Any:
        outside.sum().backward()

    assert _refusal(on_outside) == (
        "compile_step: backward() reaches a Tensor computed outside the step being recorded; "
        "compute everything the loss depends on inside the step"
    )

    def root_outside(w: Any, opt: Any, x: Any, outside: Any) -> Any:
        outside.backward(np.ones((2, 2)))

    assert _refusal(root_outside) == (
        "compile_step: backward() on a Tensor computed outside the step being recorded"
    )

    def not_scalar(w: Any, opt: Any, x: Any, outside: Any) -> Any:
        (Tensor(x) @ w).backward()

    assert _refusal(not_scalar) == (
        "backward() without a gradient needs a one-element tensor, this one has shape (3, 2)"
    )

    def returns_number(w: Any, opt: Any, x: Any, outside: Any) -> Any:
        return 1.5

    assert _refusal(returns_number) == (
        "compile_step: the step returned the Python value 1.5, which a replay would freeze; "
        "return Tensors (the loss) and read them with .item()"
    )

    def returns_array(w: Any, opt: Any, x: Any, outside: Any) -> Any:
        return np.zeros(2)

    assert _refusal(returns_array) == (
        "compile_step: the step returned a ndarray that no recorded node made; return Tensors"
    )

    def returns_foreign(w: Any, opt: Any, x: Any, outside: Any) -> Any:
        return outside

    assert _refusal(returns_foreign) == (
        "compile_step: the step returned a Tensor that no recorded node made"
    )

    def hand_update(w: Any, opt: Any, x: Any, outside: Any) -> Any:
        opt.zero_grad()
        (Tensor(x) @ w).sum().backward()
        w.data = w.data - 0.1
        opt.step()

    assert _refusal(hand_update) == (
        "compile_step cannot record this step: parameter 0 (shape (2, 2)) changed before "
        "SGD.step outside an optimizer's step() (a hand-written update): replays run only "
        "recorded calls. Use an nnbackend.optim optimizer, or a decorated step "
        "(nnbackend.autograd.trace.recorded)"
    )

    def grad_edit(w: Any, opt: Any, x: Any, outside: Any) -> Any:
        opt.zero_grad()
        (Tensor(x) @ w).sum().backward()
        w.grad = w.grad * 0.5
        opt.step()

    assert _refusal(grad_edit) == (
        "compile_step cannot record this step: the gradient of parameter 0 changed before "
        "SGD.step outside backward() and clip_grad_norm(); replays would not repeat that change"
    )

    class OnlyGraph(nb.autograd.Function):
        def forward(self, x: Any) -> Any:
            return x * 1.0

        def graph_backward(self, gy: Any) -> Any:
            return gy

    def graph_only(w: Any, opt: Any, x: Any, outside: Any) -> Any:
        return OnlyGraph()(w)

    assert _refusal(graph_only) == (
        "compile_step cannot record OnlyGraph: it defines only graph_backward(), which reads "
        "the recorded input Tensors; define backward()"
    )


def test_unusual_steps_replay_like_eager_ones() -> None:
    """A step with a parameter used twice (leaf gradients summed), a view-like node whose
    gradient may alias (copied onto the leaf), a 0-d intermediate, two slices of one result, a
    seed gradient given explicitly and a one-element root, a zero_grad at its end, and a tuple
    of results with a leaf in it: replays equal eager calls exactly."""

    def make() -> tuple[Any, Any, Any]:
        from nnbackend import nn, optim

        w = nn.Parameter(np.array([[0.5, -1.0, 0.25], [1.5, 0.25, -0.5]]))
        b = nn.Parameter(np.array([0.1, -0.2, 0.3]))
        opt = optim.Momentum([w, b], lr=0.05, momentum=0.5)

        def step(x: Any, seed: Any) -> Any:
            opt.zero_grad()
            h = Tensor(x) @ w + b
            left, right = h[:, :1], h[:, 1:]
            scale = (w * w).sum()  # 0-d, w used a second time
            y = (left * right[:, :1] + right.reshape(-1)[0] * scale).reshape(-1)
            z = y.sum(keepdims=True)  # one element, not 0-d
            z.backward()
            h2 = (Tensor(x) @ w).T  # Transpose: its gradient may alias
            h2.backward(seed)
            opt.step()
            total = z * 1.0
            return total, (w,), b

        return w, b, step

    rng = np.random.default_rng(3)
    batches = [(rng.uniform(-1, 1, (4, 2)), rng.uniform(-1, 1, (3, 4))) for _ in range(5)]
    runs = []
    for compiled in (False, True):
        w, b, step = make()
        run = nb.compile_step(step) if compiled else step
        outs = [run(x, s) for x, s in batches]
        runs.append((w, b, outs, run))
    (we, be, oe, _), (wc, bc, oc, run) = runs
    assert run.replays == 3
    np.testing.assert_array_equal(host(wc), host(we))
    np.testing.assert_array_equal(host(bc), host(be))
    np.testing.assert_array_equal(host(wc.grad), host(we.grad))
    for i, (e, c) in enumerate(zip(oe, oc, strict=True)):
        np.testing.assert_array_equal(host(c[0]), host(e[0]))
        assert c[1][0] is wc and c[2] is bc
        assert c[0].requires_grad is (i < 2)  # the two recordings ran eagerly


def test_matmul_on_numpy_then_strict_in_one_process() -> None:
    """Each product looks up its own backend's ops (NumPy's float16 policy is not strict's)."""
    import array_api_strict as xs

    for xp in (namespace_module.namespace("numpy"), xs):
        a = Tensor(xp.asarray([[1.0, 2.0]], dtype=xp.float32), requires_grad=True)
        b = Tensor(xp.asarray([[0.5], [0.25]], dtype=xp.float32), requires_grad=True)
        y = a @ b
        assert type(y.data) is type(a.data) and host(y).tolist() == [[1.0]]
        y.sum().backward()
        assert host(a.grad).tolist() == [[0.5, 0.25]]


def test_a_constant_graph_backward_gives_a_constant_gradient() -> None:
    """A graph_backward may return a raw array (a gradient that does not depend on
    anything): it is wrapped as a constant, whose own gradient is refused clearly."""

    class Linear2(nb.autograd.Function):
        def forward(self, x: Any) -> Any:
            return x * 2.0

        def graph_backward(self, gy: Any) -> Any:
            return self.xp.full(self.inputs[0].shape, 2.0)

    x = Tensor(np.array([0.5, 1.5]), requires_grad=True)
    (g,) = nb.grad(Linear2()(x).sum(), x, create_graph=True)
    assert host(g).tolist() == [2.0, 2.0] and not g.requires_grad and g.creator is None


def test_gradcheck_names_a_callable_without_a_name() -> None:
    import functools

    def scaled(t: Tensor, k: float) -> Any:
        return t.data * k

    fn = functools.partial(scaled, k=2.0)
    with pytest.raises(nb.errors.GradientError) as info:
        nb.gradcheck(fn, np.array([0.5]))
    assert str(info.value).startswith(f"gradcheck: fn {fn!r} returned numpy.ndarray, not a Tensor")


def test_a_setting_array_of_another_dtype_differs() -> None:
    calls = []

    def drifting(h: Any) -> Any:
        calls.append(None)
        dtype = np.float64 if len(calls) == 1 else np.float32
        return _Weighted(1.5, np.array([0.5, 2.0], dtype=dtype))(h)

    run, warned = _run_compiled(drifting)
    assert run.replays == 0 and len(warned) == 1


class _TwoOut(nb.autograd.Function):
    """``(2 x, 3 x)``: a node with two outputs and a raw backward."""

    def forward(self, x: Any) -> Any:
        return x * 2.0, x * 3.0

    def backward(self, g1: Any, g2: Any) -> Any:
        total = 0.0
        if g1 is not None:
            total = total + g1 * 2.0
        if g2 is not None:
            total = total + g2 * 3.0
        return total


def _replays_equal_eager(make: Any, args: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``make()``'s step eagerly and compiled on ``args``: the results, parameters and
    gradients must be equal. Returns the compiled run's results."""
    runs = []
    for compiled in (False, True):
        params, step = make()
        run = nb.compile_step(step) if compiled else step
        outs = [run(*a) for a in args]
        runs.append((params, outs, run))
    (pe, oe, _), (pc, oc, run) = runs
    assert run.replays == len(args) - 2
    for a, b in zip(pe, pc, strict=True):
        np.testing.assert_array_equal(host(b), host(a))
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            np.testing.assert_array_equal(host(b.grad), host(a.grad))
    for e, c in zip(oe, oc, strict=True):
        e_list = e if isinstance(e, tuple) else (e,)
        c_list = c if isinstance(c, tuple) else (c,)
        assert type(c) is type(e) and len(c_list) == len(e_list)
        for x, y in zip(e_list, c_list, strict=True):
            np.testing.assert_array_equal(host(y), host(x))
    return [o for o in oc]


def test_steps_with_scalars_first_two_outputs_a_0d_bias_and_a_norm_replay() -> None:
    """A Python number before the array argument (arguments after it are inputs too), a node
    with two outputs, a 0-d parameter (its gradient a NumPy scalar on the way), the norm
    clip_grad_norm returns, returned in a 1-tuple: replays equal eager."""
    from nnbackend import nn, optim

    def make() -> tuple[list[Any], Any]:
        w = nn.Parameter(np.array([[0.5, -1.0], [1.5, 0.25]]))
        b = nn.Parameter(np.array(0.25))
        opt = optim.SGD([w, b], lr=0.05)

        def step(scale: float, x: Any) -> Any:
            opt.zero_grad()
            two, three = _TwoOut()(Tensor(x) @ w)
            loss = ((two - three * scale) ** 2.0).mean() + b
            loss.backward()
            norm = optim.clip_grad_norm([w, b], 10.0)
            opt.step()
            return (norm,)

        return [w, b], step

    rng = np.random.default_rng(5)
    args = [(0.5, rng.uniform(-1, 1, (3, 2))) for _ in range(5)]
    outs = _replays_equal_eager(make, args)
    assert all(type(o) is tuple and len(o) == 1 for o in outs)


def test_a_parameter_of_another_backend_is_named_as_a_parameter() -> None:
    import array_api_strict as xs

    from nnbackend import nn

    w = nn.Parameter(xs.asarray([[0.5], [1.0]], dtype=xs.float64))

    def step(x: Any) -> Any:
        return Tensor(x) * 2.0 + w.sum()

    message = (
        "compile_step: a parameter is a array_api_strict array where the step's other arrays "
        "are numpy; move it with nb.to_backend(x, 'numpy') first"
    )
    with pytest.raises(nb.errors.BackendMismatchError, match=exactly(message)):
        nb.compile_step(step)(np.ones(2))


def test_the_loss_a_recording_returned_can_still_be_drawn() -> None:
    """A recording lets go of its graph (the nodes' inputs), and what it returned stays a
    valid Tensor: drawing it shows the ops, without their inputs."""
    from nnbackend import nn, optim
    from nnbackend.autograd import to_dot

    w = nn.Parameter(np.array([[0.5, -1.0], [1.5, 0.25]]))
    opt = optim.SGD([w], lr=0.05)

    def step(x: Any) -> Any:
        opt.zero_grad()
        loss = ((Tensor(x) @ w) ** 2.0).sum()
        loss.backward()
        opt.step()
        return loss

    loss = nb.compile_step(step)(np.ones((2, 2)))
    dot = to_dot(loss)
    assert '[label="Sum"' in dot and '[label="MatMul"' not in dot


class _Both(nb.autograd.Function):
    """``a * b`` with a raw backward for both inputs."""

    def forward(self, a: Any, b: Any) -> Any:
        self.a, self.b = a, b
        return a * b

    def backward(self, gy: Any) -> Any:
        return gy * self.b, gy * self.a


def test_create_graph_through_raw_backwards_of_two_inputs_and_two_outputs() -> None:
    """First derivatives through Functions that define only a raw backward: one with two
    inputs (both gradients kept), one with two outputs of which one is gone."""
    a = Tensor(np.array([0.5, 1.5]), requires_grad=True)
    b = Tensor(np.array([2.0, -1.0]), requires_grad=True)
    ga, gb = nb.grad(_Both()(a, b).sum(), [a, b], create_graph=True)
    assert host(ga).tolist() == [2.0, -1.0] and host(gb).tolist() == [0.5, 1.5]
    assert ga.requires_grad and gb.requires_grad
    two, three = _TwoOut()(a)
    del three  # the second output is gone: its gradient is None
    (g,) = nb.grad(two.sum(), a, create_graph=True)
    assert host(g).tolist() == [2.0, 2.0]


def test_outputs_of_a_multi_output_node_keep_their_gradient_only_when_retained() -> None:
    x = Tensor(np.array([0.5, 1.5, 2.5]), requires_grad=True)
    left, right = x.split([1, 2])
    right.retain_grad()
    ((left * 2.0).sum() + (right * 3.0).sum()).backward()
    assert left.grad is None
    assert host(right.grad).tolist() == [3.0, 3.0]
    assert host(x.grad).tolist() == [2.0, 3.0, 3.0]


def test_second_derivatives_of_piecewise_functions_are_constant_zeros() -> None:
    x = Tensor(np.array([-1.5, 0.5, 2.0]), requires_grad=True)
    (g,) = nb.grad(x.abs().sum(), x, create_graph=True)
    (gg,) = nb.grad(g.sum(), x, create_graph=True)
    assert host(gg).tolist() == [0.0, 0.0, 0.0] and not gg.requires_grad


def test_extrema_with_a_python_number_on_either_side() -> None:
    x = Tensor(np.array([-1.5, 0.5, 2.0]), requires_grad=True)
    y = nb.functional.maximum(0.5, x) + nb.functional.minimum(x, 0.5)
    y.sum().backward()
    assert host(y).tolist() == [-1.0, 1.0, 2.5]
    assert host(x.grad).tolist() == [1.0, 1.0, 1.0]  # the tie at 0.5 shares: 0.5 + 0.5


def test_a_cast_to_the_same_dtype_is_a_copy() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x.astype("float64")
    assert not np.shares_memory(y.data, x.data)


def test_create_graph_of_a_product_with_a_plain_array() -> None:
    w = Tensor(np.array([[0.5, -1.0], [1.5, 0.25]]), requires_grad=True)
    x = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    (gw,) = nb.grad(((x @ w) ** 2.0).sum(), w, create_graph=True)
    np.testing.assert_allclose(host(gw), x.T @ (2.0 * (x @ host(w))), rtol=1e-12)
    (gw2,) = nb.grad(((w @ x.T) ** 2.0).sum(), w, create_graph=True)
    np.testing.assert_allclose(host(gw2), (2.0 * (host(w) @ x.T)) @ x, rtol=1e-12)


def test_jit_false_replays_the_nodes_even_where_a_compiler_exists(identity_jit: list[Any]) -> None:
    _, _, step = _jit_setup("sgd", False)
    run = nb.compile_step(step, jit=False)
    for x, t in _jit_batches(3):
        run(x, t)
    assert type(next(iter(run._cache.values()))).__name__ == "_Recording"
    assert not identity_jit


def test_a_list_setting_that_changes_between_recordings_runs_eagerly() -> None:
    calls = []

    def drifting(h: Any) -> Any:
        calls.append(None)
        node = _Weighted(1.5, np.array([0.5, 2.0]))
        node.unused = [1.0, float(len(calls))]
        return node(h)

    run, warned = _run_compiled(drifting)
    assert run.replays == 0 and len(warned) == 1


def test_a_recorded_backward_keeps_intermediate_gradients_when_asked() -> None:
    from nnbackend import nn, optim

    w = nn.Parameter(np.array([[0.5, -1.0], [1.5, 0.25]]))
    opt = optim.SGD([w], lr=0.05)
    seen: list[Any] = []

    def step(x: Any) -> Any:
        opt.zero_grad()
        h = Tensor(x) @ w
        loss = (h * h).sum()
        loss.backward(retain_grad=True)
        seen.append(h.grad)
        opt.step()
        return loss

    x = np.array([[1.0, 2.0]])
    nb.compile_step(step)(x)
    np.testing.assert_allclose(host(seen[0]), 2.0 * (x @ np.array([[0.5, -1.0], [1.5, 0.25]])))


def test_a_recorded_call_with_another_number_of_arguments_runs_eagerly() -> None:
    import warnings

    from nnbackend import nn, optim

    nb.namespace()  # settings read before the first signature is taken
    w = nn.Parameter(np.array([[0.5, -1.0], [1.5, 0.25]]))
    opt = optim.SGD([w], lr=0.05)
    calls = []

    def step(x: Any) -> Any:
        calls.append(None)
        opt.zero_grad()
        loss = ((Tensor(x) @ w) ** 2.0).sum()
        loss.backward()
        args = (1.0,) if len(calls) == 1 else (1.0, 1e-3)
        optim.clip_grad_norm([w], *args)
        opt.step()
        return loss

    run = nb.compile_step(step)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            run(np.ones((2, 2)))
    assert run.replays == 0 and len(caught) == 1
    assert "(the call to clip_grad_norm differs)" in str(caught[0].message)
