"""Float16 without a CPU cliff, precision policies (mixed16) and dynamic loss scaling."""

from __future__ import annotations

import gc
import importlib.util
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend import config, nn, optim, precision
from nnbackend.backends.numpy import kernels as numpy_kernels
from nnbackend.errors import BackendError, CheckpointError, DtypeError
from nnbackend.namespace import backend_for
from nnbackend.namespace import ops_for as _ops_for
from nnbackend.nn import functional as F
from nnbackend.precision import LossScaleError, LossScaler, Policy

ALL_HALVES = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)


def to_host(x: Any) -> Any:
    data = x.data if isinstance(x, nb.Tensor) else x
    return np.asarray(backend_for(data)[1].to_host(data))


def same_bits(a: Any, b: Any) -> bool:
    """Equal values, NaN where NaN (payloads aside), signed zeros told apart."""
    a, b = np.asarray(a), np.asarray(b)
    nan = np.isnan(a)
    if not np.array_equal(nan, np.isnan(b)):
        return False
    ints = {2: np.uint16, 4: np.uint32}[a.dtype.itemsize]
    return bool(np.array_equal(a[~nan].view(ints), b[~nan].view(ints)))


# -- the NumPy backend's float16 conversions -----------------------------------------------------
_STEP_SCRIPT = """
import sys
import numpy as np
import nnbackend as nb
from nnbackend import nn, optim
nb.set_default_dtype(sys.argv[1])
nb.random.seed(0)
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
opt = optim.SGD(model.parameters(), lr=0.1)
x = nb.namespace().asarray(np.random.default_rng(0).random((32, 64)).astype(sys.argv[1]))
t = nb.namespace().asarray(np.arange(32) % 10)
for _ in range(3):
    opt.zero_grad()
    nn.SoftmaxCrossEntropy()(model(x), t).backward()
    opt.step()
print("numba" in sys.modules)
"""


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_numba_is_imported_only_by_a_float16_conversion(dtype: str) -> None:
    """numba costs about 130 MB once imported: a float32 or float64 training run never loads
    it; a float16 run does on its first conversion of 256 values or more (where numba is
    installed and not turned off)."""
    import os
    import subprocess
    import sys

    from nnbackend.backends import numpy as numpy_backend

    env = {k: v for k, v in os.environ.items() if k != numpy_backend.NUMBA_ENV}
    done = subprocess.run(
        [sys.executable, "-c", _STEP_SCRIPT, dtype],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    expected = dtype == "float16" and numpy_backend.numba_unused(env) is None
    assert done.stdout.split()[-1] == str(expected)


@pytest.fixture(scope="module", params=["compiled", "numpy"])
def convert(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The NumPy backend's kernels with each conversion: compiled with numba (where it is
    installed) and NumPy's bit arithmetic (``NNBACKEND_NUMBA=0``)."""
    from nnbackend.backends import numpy as numpy_backend

    with pytest.MonkeyPatch.context() as mp:
        if request.param == "numpy":
            mp.setenv(numpy_backend.NUMBA_ENV, "0")
        else:
            mp.delenv(numpy_backend.NUMBA_ENV, raising=False)
            module, reason = numpy_backend.compiled_conversions()
            if module is None:
                pytest.skip(f"compiled conversions unused: {reason}")
        compiled = numpy_backend.compiled_conversions()[0] is not None
        assert compiled == (request.param == "compiled")
        return numpy_kernels()


def test_numba_switch_and_its_report(monkeypatch: pytest.MonkeyPatch) -> None:
    from nnbackend.backends import numpy as numpy_backend

    for off in ("0", "false", "Off"):
        monkeypatch.setenv(numpy_backend.NUMBA_ENV, off)
        assert numpy_backend.numba_unused() == f"turned off by NNBACKEND_NUMBA={off}"
        assert "NumPy's (turned off" in numpy_backend.facts()["float16_conversion"]
    monkeypatch.setenv(numpy_backend.NUMBA_ENV, "1")
    installed = importlib.util.find_spec("numba") is not None
    reason = numpy_backend.numba_unused()
    assert (reason is None) == installed
    if not installed:
        assert reason is not None and "pip install 'nnbackend[fast16]'" in reason
    conversion = {b.name: b for b in nb.info().backends}["numpy"].facts["float16_conversion"]
    assert conversion.startswith("compiled with numba" if installed else "NumPy's")


def test_a_numba_that_cannot_compile_falls_back_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loops compile when first asked for, so a broken numba is found then, reported by
    ``nnbackend info``, and NumPy's conversions run instead, with the same results."""
    if importlib.util.find_spec("numba") is None:
        pytest.skip("numba is not installed")
    from nnbackend.backends import numba_half
    from nnbackend.backends import numpy as numpy_backend

    def broken(*args: Any) -> None:
        raise RuntimeError("no LLVM target for this CPU")

    monkeypatch.delenv(numpy_backend.NUMBA_ENV, raising=False)
    monkeypatch.setattr(numpy_backend, "_compiled", {})
    monkeypatch.setattr(numba_half, "widen_into", broken)
    module, reason = numpy_backend.compiled_conversions()
    assert module is None
    assert reason == "numba fails here (RuntimeError: no LLVM target for this CPU)"
    assert numpy_backend.float16_conversion() == f"NumPy's ({reason})"
    widen = numpy_kernels()["float16_to_float32"]
    assert same_bits(widen(ALL_HALVES), ALL_HALVES.astype(np.float32))


def test_widen_is_astype_for_every_float16(convert: dict[str, Any]) -> None:
    widen = convert["float16_to_float32"]
    assert same_bits(widen(ALL_HALVES), ALL_HALVES.astype(np.float32))
    grid = ALL_HALVES.reshape(256, 256)
    assert same_bits(widen(grid.T), grid.T.astype(np.float32))  # strided input
    out = np.empty((256, 256), np.float32)
    assert widen(grid, out) is out and same_bits(out, grid.astype(np.float32))


def _narrow_cases() -> np.ndarray:
    rng = np.random.default_rng(0)
    finite = np.unique(ALL_HALVES[np.isfinite(ALL_HALVES)].astype(np.float64))
    mids = ((finite[1:] + finite[:-1]) / 2).astype(np.float32)  # ties: to even
    return np.concatenate(
        [
            rng.integers(0, 2**32, size=300_000, dtype=np.uint64)
            .astype(np.uint32)
            .view(np.float32),
            ALL_HALVES.astype(np.float32),
            mids,
            np.nextafter(mids, np.float32(np.inf)),
            np.nextafter(mids, np.float32(-np.inf)),
            np.array(
                [np.inf, -np.inf, np.nan, -np.nan, 65504, 65519.99, 65520, 1e-10, -0.0],
                dtype=np.float32,
            ),
        ]
    )


def test_narrow_is_astype_for_every_kind_of_float32(convert: dict[str, Any]) -> None:
    """Round to nearest even, overflow to inf, subnormals, NaN stays NaN: astype's results."""
    xs = _narrow_cases()
    with np.errstate(all="ignore"):
        expected = xs.astype(np.float16)
    assert same_bits(convert["float32_to_float16"](xs), expected)
    grid = xs[: 1000 * 300].reshape(1000, 300)
    with np.errstate(all="ignore"):
        assert same_bits(convert["float32_to_float16"](grid.T), grid.T.astype(np.float16))


@given(st.lists(st.floats(width=32, allow_nan=True), min_size=0, max_size=5000))
def test_narrow_property(values: list[float]) -> None:
    xs = np.asarray(values, dtype=np.float32)
    with np.errstate(all="ignore"):
        assert same_bits(numpy_kernels()["float32_to_float16"](xs), xs.astype(np.float16))


def test_float16_bit_kernels(convert: dict[str, Any]) -> None:
    with np.errstate(invalid="ignore"):
        assert np.array_equal(convert["float16_positive"](ALL_HALVES), ALL_HALVES > 0)
    mask = np.random.default_rng(1).random(ALL_HALVES.shape) > 0.5
    assert same_bits(convert["float16_keep"](mask, ALL_HALVES), np.where(mask, ALL_HALVES, 0.0))


def test_float16_sub_scaled_is_the_rounded_float32_update(
    convert: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """SGD's float16 update ``p -= lr * g`` in one compiled pass: the bits of the float32
    update rounded once, for every float16 value of ``p`` against gradients that overflow,
    underflow to subnormals, are infinite or NaN; where it does not apply (no numba, a NumPy
    scalar rate, a strided or overlapping operand) it answers False and writes nothing."""
    kernel = convert["float16_sub_scaled"]
    rng = np.random.default_rng(7)
    g = (rng.standard_normal(ALL_HALVES.size) * 100.0).astype(np.float16)
    g[::97] = np.inf
    g[5::89] = -np.inf
    g[7::83] = np.nan
    g[9::7] *= np.float16(1e-5)
    for lr in (0.01, 700.0, 1e-9):
        p = ALL_HALVES.copy()
        with np.errstate(over="ignore", invalid="ignore"):
            expected = (p.astype(np.float32) - np.float32(lr) * g.astype(np.float32)).astype(
                np.float16
            )
        compiled = request.node.callspec.params["convert"] == "compiled"
        assert kernel(p, lr, g) is compiled
        assert same_bits(p, expected if compiled else ALL_HALVES)
    p = ALL_HALVES.copy()
    refused = [
        kernel(p, np.float64(0.01), g),  # a NumPy scalar: NumPy would compute in float64
        kernel(p[::2], 0.01, g[::2]),
        kernel(p[1:], 0.01, p[:-1]),
        kernel(p, 0.01, g.astype(np.float32)),
    ]
    assert refused == [False] * 4 and same_bits(p, ALL_HALVES)


# -- float16 nodes: float32 math, float16 results -------------------------------------------------
def _reference(build: Callable[[str], Any], x: np.ndarray) -> tuple[Any, Any]:
    """``build`` run in float64 from the same float16 values: output and input gradient."""
    t = nb.Tensor(x.astype(np.float64), requires_grad=True)
    with nb.using(dtype="float64"):
        y = build("float64")(t)
        (y * y).sum().backward()
    return to_host(y), to_host(t.grad)


NODES: dict[str, Callable[[str], Any]] = {
    "sigmoid": lambda d: F.sigmoid,
    "tanh": lambda d: F.tanh,
    "relu": lambda d: F.relu,
    "leaky_relu": lambda d: lambda x: F.leaky_relu(x, 0.1),
    "softmax": lambda d: F.softmax,
    "log_softmax": lambda d: F.log_softmax,
    "sum": lambda d: lambda x: x.sum(axis=0),
    "mean": lambda d: lambda x: x.mean(axis=1, keepdims=True),
}


@pytest.mark.parametrize("name", list(NODES))
def test_float16_nodes_keep_float16_and_match_float64(name: str) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 120)).astype(np.float16)  # big enough for the fast kernels
    t = nb.Tensor(x, requires_grad=True)
    with nb.using(dtype="float16"):
        y = NODES[name]("float16")(t)
        (y * y).sum().backward()
    assert y.dtype == np.float16 and t.grad.dtype == np.float16
    ref_y, ref_g = _reference(NODES[name], x)
    eps = float(np.finfo(np.float16).eps)
    np.testing.assert_allclose(to_host(y).astype(np.float64), ref_y, rtol=4 * eps, atol=4 * eps)
    scale = np.abs(ref_g).max()
    np.testing.assert_allclose(to_host(t.grad).astype(np.float64), ref_g, atol=16 * eps * scale)


def test_float16_linear_and_loss_match_float64() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(32, 200)).astype(np.float16)
    w = (rng.normal(size=(200, 50)) * 0.07).astype(np.float16)
    b = rng.normal(size=50).astype(np.float16)
    labels = rng.integers(0, 50, 32)
    results = {}
    for dtype in ("float16", "float64"):
        ts = [nb.Tensor(a.astype(dtype), requires_grad=True) for a in (x, w, b)]
        with nb.using(dtype=dtype):
            loss = F.softmax_cross_entropy(F.linear(*ts), labels)
            loss.backward()
        results[dtype] = [loss] + [t.grad for t in ts]
    for got, ref in zip(results["float16"], results["float64"], strict=True):
        assert got.dtype == np.float16
        ref = to_host(ref)
        tol = 8 * float(np.finfo(np.float16).eps) * max(np.abs(ref).max(), 1e-3)
        np.testing.assert_allclose(to_host(got).astype(np.float64), ref, atol=tol)


def test_float16_linear_reuses_one_float32_copy_per_weight() -> None:
    layer_w = nn.Parameter(np.ones((300, 40), np.float16))
    x = np.ones((5, 300), np.float16)
    F.linear(x, layer_w)
    weights = _ops_for(backend_for(x)[0], x)._weights  # the numpy ops' float32 copies
    first = weights[id(layer_w.data)][1]
    layer_w.data[...] = 2.0  # an in-place update, as optimizers do
    y = F.linear(x, layer_w)
    assert weights[id(layer_w.data)][1] is first  # the same memory, rewritten
    assert float(to_host(y)[0, 0]) == 600.0
    key = id(layer_w.data)
    del layer_w, y
    gc.collect()
    assert key not in weights  # forgotten with its weight


def test_sgd_float16_rounds_the_float32_update_once() -> None:
    rng = np.random.default_rng(4)
    p0 = rng.normal(size=(300, 500)).astype(np.float16)
    g = (rng.normal(size=(300, 500)) * 1e-3).astype(np.float16)  # many subnormal updates
    p = nn.Parameter(p0.copy())
    data = p.data
    opt = optim.SGD([p], lr=0.01)
    p.grad = g
    opt.step()
    expected = (p0.astype(np.float32) - np.float32(0.01) * g.astype(np.float32)).astype(np.float16)
    assert p.data is data
    assert same_bits(p.data, expected)


@pytest.mark.parametrize("name", ["Momentum", "Adam"])
def test_float16_optimizers_compute_in_float32(name: str) -> None:
    rng = np.random.default_rng(5)
    p0 = rng.normal(size=(40, 30)).astype(np.float16)
    grads = [(rng.normal(size=(40, 30)) * 0.1).astype(np.float16) for _ in range(3)]
    half, wide = nn.Parameter(p0.copy()), nn.Parameter(p0.astype(np.float32))
    opts = [getattr(optim, name)([q], lr=0.01) for q in (half, wide)]
    for g in grads:
        half.grad, wide.grad = g, g.astype(np.float32)
        for opt in opts:
            opt.step()
    assert half.data.dtype == np.float16
    for key, value in opts[0].state[0].items():
        if key != "step":
            assert value.dtype == np.float16, key
    np.testing.assert_allclose(
        half.data.astype(np.float32), wide.data, rtol=2e-3, atol=2e-3 * np.abs(p0).max()
    )


# -- policies --------------------------------------------------------------------------------
def test_policy_table() -> None:
    assert [
        (p.name, p.param_dtype, p.compute_dtype, p.loss_dtype, p.loss_scaling)
        for p in map(Policy.named, precision.POLICIES)
    ] == [
        ("float64", "float64", "float64", "float64", False),
        ("float32", "float32", "float32", "float32", False),
        ("float16", "float16", "float16", "float16", False),
        ("mixed16", "float32", "float16", "float32", True),
    ]
    assert Policy.named("mixed_float16").name == "mixed16"
    assert Policy.named(np.float32).name == "float32"
    with pytest.raises(DtypeError, match="'mixed16'"):
        Policy.named("bfloat16")


def test_mixed16_by_using_block() -> None:
    assert precision.policy().name == "float64"
    with nb.using(dtype="mixed16"):
        assert nb.get_default_dtype() == "float32"
        assert config.get_policy() == "mixed16"
        assert nb.namespace().zeros(1).dtype == np.float32
        assert precision.policy().mixed
        assert config.sources()["dtype"] == ("mixed16", "using() block")
    with nb.using(dtype=Policy.named("mixed16")):
        assert config.get_policy() == "mixed16"


def test_mixed16_by_set_default_dtype_and_environment(
    fresh_settings: Callable[..., None], run_python: Callable[..., Any]
) -> None:
    nb.set_default_dtype("mixed16")
    assert (config.get_policy(), nb.get_default_dtype()) == ("mixed16", "float32")
    fresh_settings(NNBACKEND_DTYPE="mixed16")
    assert config.get_policy() == "mixed16"
    assert config.sources()["dtype"] == ("mixed16", "from NNBACKEND_DTYPE")
    proc = run_python(
        """
        import nnbackend as nb
        from nnbackend import nn
        model = nn.Linear(3, 2)
        y = model(nb.namespace().ones((4, 3)))
        print(nb.precision.policy().name, model.weight.dtype, y.dtype)
        """,
        env={"NNBACKEND_DTYPE": "mixed16"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["mixed16", "float32", "float16"]


def _mlp(dtype: str) -> nn.Sequential:
    with nb.using(dtype=dtype):
        nb.random.seed(0)
        return nn.Sequential(
            nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
        )


def test_mixed16_dtypes_through_forward_backward_and_step() -> None:
    model = _mlp("mixed16")
    opt = optim.Adam(model.parameters(), lr=1e-3)
    x = np.random.default_rng(0).normal(size=(8, 6)).astype(np.float32)
    with nb.using(dtype="mixed16"):
        hidden = model[:2](x)
        logits = model(x)
        loss = nn.SoftmaxCrossEntropy()(logits, np.arange(8) % 3)
        loss.backward()
        opt.step()
    assert hidden.dtype == np.float16 and logits.dtype == np.float16
    assert loss.dtype == np.float32
    for name, p in model.named_parameters():
        assert p.dtype == np.float32 and p.grad.dtype == np.float32, name
    for state in opt.state:
        assert state["m"].dtype == np.float32


def test_mixed16_gradients_match_float64() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(16, 6))
    labels = rng.integers(0, 3, 16)
    grads = {}
    for dtype in ("mixed16", "float64"):
        model = _mlp(dtype)
        if dtype == "float64":  # the same starting weights as the mixed16 model
            for p, q in zip(model.parameters(), _mlp("mixed16").parameters(), strict=True):
                p.data = q.data.astype(np.float64)
        with nb.using(dtype=dtype):
            xd = x.astype(nb.get_default_dtype())
            nn.SoftmaxCrossEntropy()(model(xd), labels).backward()
        grads[dtype] = [to_host(p.grad) for p in model.parameters()]
    for got, ref in zip(grads["mixed16"], grads["float64"], strict=True):
        np.testing.assert_allclose(got, ref, atol=5e-3 * max(np.abs(ref).max(), 1e-2))


def test_mixed16_matmul_embedding_and_layer_norm() -> None:
    with nb.using(dtype="mixed16"):
        nb.random.seed(0)
        emb = nn.Embedding(10, 4)
        mm = nn.MatMul(nb.namespace().ones((4, 5)))
        ln = nn.LayerNorm(5)
        rows = emb(np.array([[1, 2], [3, 3]]))
        y = mm(rows)
        z = F.layer_norm(y, ln.weight, ln.bias)
        (z.astype("float32") * 1.0).sum().backward()
    assert rows.dtype == np.float16 and y.dtype == np.float16 and z.dtype == np.float16
    for p in (emb.weight, mm.weight, ln.weight, ln.bias):
        assert p.dtype == np.float32 and p.grad.dtype == np.float32


def test_mixed16_needs_a_backend_with_float16() -> None:
    with nb.using(backend="array_api_strict", dtype="mixed16"):
        layer = nn.Linear(2, 2)
        assert str(layer.weight.dtype).endswith("float32")
        with pytest.raises(BackendError, match="has no float16, which the mixed16 policy"):
            layer(nb.namespace().ones((1, 2)))


def test_outside_a_mixed_policy_mismatched_dtypes_are_still_rejected() -> None:
    model = _mlp("float32")
    with pytest.raises(DtypeError, match="float16"):
        model(np.ones((2, 6), np.float16))


# -- loss scaling --------------------------------------------------------------------------------
def _param(value: float = 1.0) -> nn.Parameter:
    return nn.Parameter(np.full(3, value, np.float32))


def test_loss_scaler_unscales_and_steps() -> None:
    p = _param()
    opt = optim.SGD([p], lr=0.5)
    scaler = LossScaler(init_scale=8.0)
    loss = (p * 2.0).sum()
    scaled = scaler.scale_loss(loss)
    assert float(to_host(scaled)) == 8.0 * float(to_host(loss))
    scaled.backward()
    assert scaler.step(opt) is True
    np.testing.assert_array_equal(to_host(p), [0.0, 0.0, 0.0])  # 1 - 0.5 * 2
    assert (scaler.steps, scaler.skipped, scaler.scale) == (1, 0, 8.0)


def test_loss_scaler_skips_non_finite_steps_and_halves() -> None:
    p = _param()
    opt = optim.Momentum([p], lr=0.5)
    scaler = LossScaler(init_scale=1024.0, growth_interval=3)
    for bad in (np.inf, np.nan):
        p.grad = np.array([1.0, bad, 1.0], np.float32)
        assert scaler.step(opt) is False
    np.testing.assert_array_equal(to_host(p), [1.0, 1.0, 1.0])
    assert opt.state[0] == {} and opt.steps == 0
    assert (scaler.scale, scaler.skipped, scaler.steps) == (256.0, 2, 2)
    for _ in range(3):
        p.grad = np.ones(3, np.float32) * 256.0
        assert scaler.step(opt)
    assert (scaler.scale, scaler.growths, scaler.good_steps) == (512.0, 1, 0)


def test_loss_scaler_raises_instead_of_skipping_forever() -> None:
    p = _param()
    opt = optim.SGD([p], lr=0.1)
    scaler = LossScaler(init_scale=4.0)
    p.grad = np.full(3, np.nan, np.float32)
    scaler.step(opt)
    scaler.step(opt)  # 4 -> 2 -> 1
    assert scaler.scale == 1.0
    with pytest.raises(LossScaleError, match=r"to 0.5, below min_scale=1, after 3 skipped steps"):
        scaler.step(opt)


def test_static_loss_scale_keeps_its_scale() -> None:
    p = _param()
    scaler = LossScaler(init_scale=128.0, dynamic=False, growth_interval=1)
    p.grad = np.full(3, np.inf, np.float32)
    assert not scaler.step(optim.SGD([p], lr=0.1))
    p.grad = np.ones(3, np.float32)
    assert scaler.step(optim.SGD([p], lr=0.1))
    assert scaler.scale == 128.0 and scaler.skipped == 1


def test_unscale_before_clipping() -> None:
    p = _param()
    opt = optim.SGD([p], lr=1.0)
    scaler = LossScaler(init_scale=1000.0)
    p.grad = np.array([3000.0, 4000.0, 0.0], np.float32)
    scaler.unscale(opt)
    np.testing.assert_allclose(to_host(p.grad), [3.0, 4.0, 0.0])
    optim.clip_grad_norm([p], 1.0)
    scaler.step(opt)  # does not unscale twice
    np.testing.assert_allclose(to_host(p), [1 - 0.6, 1 - 0.8, 1.0], rtol=1e-5)


@pytest.mark.parametrize("name", ["SGD", "Momentum", "Adam"])
def test_device_mode_matches_host_mode(name: str) -> None:
    """check="device" never reads a flag back: it restores the old parameters and state on
    the device where the gradients were not finite. Same parameters as the host mode."""
    rng = np.random.default_rng(7)
    grads = [rng.normal(size=3).astype(np.float32) * 64 for _ in range(6)]
    grads[2][1] = np.inf
    grads[4][0] = np.nan
    results = []
    for check in ("host", "device"):
        p = _param()
        opt = getattr(optim, name)([p], lr=0.1)
        scaler = LossScaler(init_scale=64.0, growth_interval=2, check=check)
        for g in grads:
            p.grad = g.copy()
            scaler.step(opt)
        results.append((to_host(p).copy(), scaler.state_dict()))
    (host_p, host_state), (dev_p, dev_state) = results
    if name == "Adam":  # device mode counts skipped steps in Adam's bias correction
        np.testing.assert_allclose(dev_p, host_p, rtol=0.05)
    else:
        np.testing.assert_array_equal(dev_p, host_p)
    assert dev_state == host_state


def test_loss_scaler_state_dict_round_trip_and_validation() -> None:
    scaler = LossScaler(init_scale=16.0)
    p = _param()
    p.grad = np.full(3, np.inf, np.float32)
    scaler.step(optim.SGD([p], lr=0.1))
    other = LossScaler()
    other.load_state_dict(scaler.state_dict())
    assert other.state_dict() == {
        "scale": 8.0,
        "good_steps": 0,
        "skipped": 1,
        "growths": 0,
        "steps": 1,
    }
    with pytest.raises(CheckpointError, match="keys"):
        other.load_state_dict({"scale": 2.0})
    with pytest.raises(CheckpointError, match="scale"):
        other.load_state_dict({**scaler.state_dict(), "scale": -1.0})
    assert other.scale == 8.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"init_scale": 0.0}, "init_scale"),
        ({"growth_factor": 1.0}, "growth_factor"),
        ({"backoff_factor": 1.0}, "backoff_factor"),
        ({"growth_interval": 0}, "growth_interval"),
        ({"min_scale": 4.0, "init_scale": 2.0}, "below min_scale"),
        ({"check": "gpu"}, "check"),
    ],
)
def test_loss_scaler_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LossScaler(**kwargs)


# -- training ------------------------------------------------------------------------------------
def test_mixed16_trains_digits_to_95_percent() -> None:
    pytest.importorskip("sklearn")
    with nb.using(dtype="mixed16"):
        nb.random.seed(0)
        (x, t), (x_test, t_test) = nb.datasets.digits()
        model = nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))
        trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), 0.5))
        trainer.fit(x, t, epochs=50, batch_size=32, seed=0, progress=False)
        _, accuracy = trainer.evaluate(x_test, t_test)
    assert isinstance(trainer.loss_scaler, LossScaler) and trainer.loss_scaler.steps == 50 * 43
    assert model[0].weight.dtype == np.float32
    assert accuracy is not None and accuracy >= 0.95, accuracy


def test_float16_trains_the_spiral_to_90_percent() -> None:
    with nb.using(dtype="float16"):
        nb.random.seed(0)
        x, t = nb.datasets.spiral()
        model = nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))
        trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), 1.0))
        trainer.fit(x, t, epochs=300, batch_size=30, seed=0, progress=False)
        _, accuracy = trainer.evaluate(x, t)
    assert trainer.loss_scaler is None
    assert model[0].weight.dtype == np.float16
    assert accuracy is not None and accuracy >= 0.90, accuracy


def test_trainer_precision_argument() -> None:
    model = _mlp("mixed16")
    x = np.random.default_rng(0).normal(size=(20, 6)).astype(np.float32)
    t = np.arange(20) % 3
    trainer = nb.Trainer(
        model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), 0.1), precision="mixed16"
    )
    history = trainer.fit(x, t, epochs=2, batch_size=10, progress=False)
    assert history.steps == 4 and trainer.loss_scaler is not None
    assert trainer.predict(x).dtype == np.float16  # predict runs under the policy too
    assert config.get_policy() == "float64"  # and leaves the settings as they were
    plain = nb.Trainer(
        model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), 0.1), loss_scaler=None
    )
    with nb.using(dtype="mixed16"):
        plain.fit(x, t, epochs=1, batch_size=10, progress=False)
    assert plain.loss_scaler is None
    with pytest.raises(TypeError, match="loss_scaler"):
        nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters()), loss_scaler=2)


def test_trainer_stops_on_a_collapsing_scale() -> None:
    model = _mlp("mixed16")

    def nan_loss(y: Any, t: Any) -> Any:
        return nn.SoftmaxCrossEntropy()(y, t) * math.nan

    trainer = nb.Trainer(model, nan_loss, optim.SGD(model.parameters(), 0.1), precision="mixed16")
    with pytest.raises(LossScaleError, match="not finite"):
        trainer.fit(np.ones((8, 6), np.float32), np.arange(8) % 3, epochs=20, progress=False)
    # 2**15 halved 15 times is 1; the 16th non-finite step raises instead of skipping on.
    assert trainer.loss_scaler is not None and trainer.loss_scaler.skipped == 16


def test_cast_parameters() -> None:
    model = _mlp("float64")
    precision.cast_parameters(model, "float32")
    assert all(p.dtype == np.float32 for p in model.parameters())
    w0 = model[0].weight.data
    ops = _ops_for(backend_for(w0)[0], w0)
    assert ops.compute_dtype(ops.float16) == ops.float32  # numpy: float16 computes wide


def test_precision_table_script_prints_the_guide_rows(
    run_python: Callable[..., Any],
) -> None:
    """scripts/precision_table.py (the source of docs/precision.md's table) trains the spiral
    network per policy and prints a Markdown row each, with the accuracy the guide reports."""
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "precision_table.py"
    proc = run_python(
        args=[
            str(script),
            "--repeats",
            "1",
            "--data",
            "spiral",
            "--policies",
            "float32",
            "float16",
            "--no-checkpoints",
        ],
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| spiral |")]
    assert [row.split("|")[2].strip() for row in rows] == ["float32", "float16"]
    for row in rows:
        accuracy = float(row.split("|")[4].strip().rstrip("%"))
        assert accuracy >= 90.0, row
    bad = run_python(args=[str(script), "--repeats", "0"])
    assert bad.returncode == 2 and "--repeats must be at least 1" in bad.stderr
