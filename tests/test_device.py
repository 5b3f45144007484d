"""Moving arrays, Tensors, Modules and optimizer state between backends and devices
(``nnbackend.to_device``, ``Module.to``, ``nnbackend.from_dlpack``, ``nnbackend.empty_cache``).

Everything here runs on the CPU through the real code paths: NumPy, torch (CPU and its
``meta`` device, which holds no data, so any host read of it fails) and array_api_strict
(which has a second device, ``device1``). The GPU side of the same code is in
``test_cupy_backend.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nnbackend as nb
from nnbackend import nn, optim, registry
from nnbackend.device import Target, parse_target
from nnbackend.errors import (
    ArgumentError,
    BackendError,
    BackendMismatchError,
    BackendUnavailableError,
    DtypeError,
)


def _require(*names: str) -> None:
    for name in names:
        reason = registry.probe(name)
        if reason is not None:
            pytest.skip(f"backend {name!r} is unavailable: {reason}")


@pytest.fixture
def strict() -> None:
    """Skip where array_api_strict is not installed (the GPU machine has none)."""
    _require("array_api_strict")


def _host(x: Any) -> np.ndarray:
    if isinstance(x, nb.Tensor):
        return x.numpy()
    return np.array(registry.get(registry.backend_of(x) or "numpy").to_host(x), copy=True)


def _shares(a: Any, b: Any) -> bool:
    """True when writing into ``b`` (a torch tensor or numpy array) shows in ``a``."""
    before = _host(a).copy()
    b[(0,) * b.ndim] = before.flat[0] + 1000.0
    changed = not np.array_equal(_host(a), before)
    b[(0,) * b.ndim] = before.flat[0]
    return changed


# ---------------------------------------------------------------------------------- targets
def test_parse_target_forms() -> None:
    assert parse_target("numpy") == Target("numpy", None)
    assert parse_target(" torch ") == Target("torch", None)
    assert parse_target("cupy:0") == Target("cupy", "0")  # parsed even where cupy is missing
    assert parse_target("torch:cuda:0") == Target("torch", "cuda:0")
    assert parse_target("array_api_strict:device1") == Target("array_api_strict", "device1")
    assert parse_target("meta") == Target(None, "meta")  # a device of the object's backend
    assert parse_target(Target("numpy", None)) == Target("numpy", None)
    assert str(Target("cupy", "1")) == "cupy:1" and str(Target(None, "meta")) == "meta"


def test_parse_target_follows_settings() -> None:
    assert parse_target(None) == Target("numpy", None)
    with nb.using(backend="array_api_strict", device="device1"):
        assert parse_target(None) == Target("array_api_strict", "device1")
        # naming the active backend keeps the active device; another backend its default
        assert parse_target("array_api_strict") == Target("array_api_strict", "device1")
        assert parse_target("numpy") == Target("numpy", None)
    # config parses cupy:N into backend cupy, device "N" (cupy:0: it exists on any GPU machine)
    with nb.using(device="cupy:0"):
        assert (nb.get_backend(), nb.get_device()) == ("cupy", "0")
        assert parse_target("cupy") == Target("cupy", "0")
        assert parse_target(None) == Target("cupy", "0")


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("", "a target is a backend name"),
        ("cupy:", "names backend 'cupy' but no device"),
        ("cupy:x", "bad device 'x' for backend 'cupy'"),
        ("numpy:gpu", "bad device 'gpu' for backend 'numpy'"),
    ],
)
def test_parse_target_errors(target: str, fragment: str) -> None:
    with pytest.raises(BackendError, match=fragment):
        parse_target(target)


def test_unknown_target_lists_backends() -> None:
    with pytest.raises(BackendError) as excinfo:
        nb.to_device(np.zeros(2), "nosuchlib")
    message = str(excinfo.value)
    assert "'nosuchlib' is neither a backend" in message
    for name in ("numpy", "cupy", "torch", "array_api_strict", "jax"):
        assert name in message
    with pytest.raises(BackendError):
        parse_target(3)  # type: ignore[arg-type]


def test_unavailable_target_says_why() -> None:
    reason = registry.probe("cupy")
    if reason is None:
        pytest.skip("cupy is usable here")
    model = nn.Linear(2, 2)
    before = model.weight.data
    with pytest.raises(BackendUnavailableError) as excinfo:
        model.to("cupy")
    assert reason in str(excinfo.value)
    assert model.weight.data is before
    with pytest.raises(BackendUnavailableError, match="cupy"):
        nb.to_device(np.zeros(2), "cupy:0")


# ---------------------------------------------------------------------------------- arrays
def test_same_place_is_no_copy() -> None:
    x = np.arange(3.0)
    assert nb.to_device(x, "numpy") is x
    assert nb.to_device(x, "numpy:cpu") is x
    assert nb.to_device(x, "cpu") is x
    y = nb.to_device(x, "numpy", copy=True)
    assert y is not x and np.array_equal(y, x) and not np.shares_memory(x, y)


def test_numpy_torch_share_memory_through_dlpack() -> None:
    _require("torch")
    import torch

    x = np.arange(6.0).reshape(2, 3)
    t = nb.to_device(x, "torch")
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64 and tuple(t.shape) == (2, 3)
    assert _shares(x, t)
    back = nb.to_device(t, "numpy")
    assert isinstance(back, np.ndarray) and _shares(t, back)
    copied = nb.to_device(x, "torch", copy=True)
    assert not _shares(x, copied) and np.array_equal(copied.numpy(), x)
    assert nb.to_device(x, "torch", copy=False).data_ptr() == t.data_ptr()


def test_namespace_asarray_shares_host_memory() -> None:
    """``xp.asarray`` of another library's CPU array takes it without a copy (numpy <-> torch),
    as the libraries themselves do; nnbackend's wrapper adds no copy."""
    _require("torch")
    x = np.arange(3.0)
    t = nb.namespace("torch").asarray(x)
    assert _shares(x, t)
    assert _shares(t, nb.namespace("numpy").asarray(t))
    assert str(t.dtype) == "torch.float64"  # a float64 array keeps its dtype


def test_strict_shares_and_second_device(strict: None) -> None:
    xs = nb.namespace("array_api_strict")
    x = np.arange(4.0)
    s = nb.to_device(x, "array_api_strict")
    assert registry.backend_of(s) == "array_api_strict"
    assert np.array_equal(_host(s), x)
    s1 = nb.to_device(s, "array_api_strict:device1")
    assert s1.device == registry.get("array_api_strict").device("device1")
    assert nb.to_device(s1, "device1") is s1  # a device of the array's own backend
    moved = nb.to_device(x, "array_api_strict:device1")
    assert moved.device == s1.device
    with pytest.raises(ArgumentError, match="changes the device"):
        nb.to_device(s, "array_api_strict:device1", copy=False)
    with pytest.raises(BackendError, match="neither a backend"):
        nb.to_device(xs.zeros(2), "meta")  # not a strict device


def test_read_only_arrays_are_copied_not_aliased() -> None:
    _require("torch")
    x = np.arange(3.0)
    x.flags.writeable = False
    t = nb.to_device(x, "torch")
    t[0] = 42.0  # writable on the torch side ...
    assert x[0] == 0.0  # ... without writing into the read-only array
    with pytest.raises(ArgumentError, match="copy=False"):
        nb.to_device(x, "torch", copy=False)


def test_float16_to_strict_is_a_dtype_error(strict: None) -> None:
    with pytest.raises(DtypeError, match="no float16") as excinfo:
        nb.to_device(np.zeros(2, dtype=np.float16), "array_api_strict")
    assert "'array_api_strict'" in str(excinfo.value)


def test_integer_bool_and_scalar_arrays(strict: None) -> None:
    _require("torch")
    ints = nb.to_device(np.array([3, 1, 2]), "torch")
    assert str(ints.dtype) == "torch.int64" and ints.tolist() == [3, 1, 2]
    flags = nb.to_device(np.array([True, False]), "array_api_strict")
    assert _host(flags).tolist() == [True, False]
    zero_d = nb.to_device(np.float32(2.5), "torch")
    assert zero_d.shape == () and float(zero_d) == 2.5 and str(zero_d.dtype) == "torch.float32"
    strided = np.arange(10.0)[::-3]
    assert nb.to_device(strided, "torch").tolist() == strided.tolist()


def test_torch_device_change_within_torch() -> None:
    _require("torch")
    t = nb.namespace("torch").ones(3)
    on_meta = nb.to_device(t, "meta")
    assert on_meta.device.type == "meta" and on_meta.shape == t.shape
    assert nb.to_device(on_meta, "torch:meta") is on_meta
    with pytest.raises(BackendError, match="cannot move an array from 'torch' to 'numpy'"):
        nb.to_device(on_meta, "numpy")  # a meta tensor holds no data
    import torch

    if not torch.cuda.is_available():  # the library's own refusal, as a BackendError
        with pytest.raises(BackendError, match="from 'numpy' to 'torch:cuda:0'"):
            nb.to_device(np.zeros(2), "torch:cuda:0")


def test_not_movable() -> None:
    with pytest.raises(TypeError, match="to_device moves arrays"):
        nb.to_device(object(), "numpy")
    with pytest.raises(TypeError, match="to_device moves arrays"):
        nb.to_device(np.random.default_rng(0), "numpy")  # a numpy object, not an array
    with pytest.raises(ArgumentError, match="copy must be"):
        nb.to_device(np.zeros(1), "numpy", copy="yes")  # type: ignore[arg-type]


class _Pair(NamedTuple):
    a: Any
    b: Any


def test_containers_keep_their_shape_and_aliasing(strict: None) -> None:
    x = np.arange(2.0)
    moved = nb.to_device(
        {"x": x, "again": x, "items": [x, 1, None, "s"], "pair": _Pair(x, 2.0)},
        "array_api_strict",
    )
    assert set(moved) == {"x", "again", "items", "pair"}
    assert moved["x"] is moved["again"]  # one source array stays one array
    assert moved["items"][0] is moved["x"] and moved["items"][1:] == [1, None, "s"]
    assert isinstance(moved["pair"], _Pair) and moved["pair"].a is moved["x"]


@given(
    array=hnp.arrays(
        dtype=st.sampled_from([np.float64, np.float32, np.float16, np.int32, np.int64, np.bool_]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
    )
)
def test_round_trip_preserves_values(backend: str, array: np.ndarray) -> None:
    record = registry.get(backend)
    # A dtype the backend cannot hold here (float16 on array_api_strict; 64-bit types on jax
    # with x64 off, which it would truncate to 32 bits) is refused, never converted.
    if array.dtype == np.float16 and not record.capabilities.float16:
        held = None
    else:
        held = record.load_namespace().asarray(np.zeros(1, array.dtype)).dtype
    if held is None or str(held).rsplit(".", 1)[-1] != array.dtype.name:
        with pytest.raises(DtypeError):
            nb.to_device(array, backend)
        return
    there = nb.to_device(array, backend)
    assert registry.backend_of(there) == backend
    assert tuple(there.shape) == array.shape
    assert str(there.dtype).rsplit(".", 1)[-1] == array.dtype.name
    back = nb.to_device(there, "numpy")
    assert isinstance(back, np.ndarray) and back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)
    copied = nb.to_device(there, backend, copy=True)
    assert copied is not there
    np.testing.assert_array_equal(_host(copied), array)


# ---------------------------------------------------------------------------------- from_dlpack
def test_from_dlpack(dlpack_producer: type) -> None:
    _require("torch")
    import torch

    x = np.arange(3.0)
    t = nb.from_dlpack(x, "torch")
    assert isinstance(t, torch.Tensor) and _shares(x, t)
    with nb.using(backend="torch"):
        assert isinstance(nb.from_dlpack(x), torch.Tensor)  # the active backend
    assert isinstance(nb.from_dlpack(nb.Tensor(t)), np.ndarray)  # a Tensor's data
    foreign = nb.from_dlpack(dlpack_producer(x), "torch")
    assert isinstance(foreign, torch.Tensor) and _shares(x, foreign)
    meta = nb.from_dlpack(x, "torch", device="meta")
    assert meta.device.type == "meta"
    with pytest.raises(BackendMismatchError, match="__dlpack__"):
        nb.from_dlpack([1.0, 2.0], "torch")
    with pytest.raises(BackendError, match="unknown backend 'nope'"):
        nb.from_dlpack(x, "nope")


# ---------------------------------------------------------------------------------- tensors
def test_tensor_is_copied_with_grad(strict: None) -> None:
    w = nn.Parameter(np.array([1.0, 2.0]), name="w")
    (w * w).sum().backward()
    moved = nb.to_device(w, "array_api_strict")
    assert type(moved) is nn.Parameter and moved is not w
    assert moved.requires_grad and moved.name == "w" and moved.backend == "array_api_strict"
    assert _host(moved.grad).tolist() == [2.0, 4.0]
    assert w.backend == "numpy"  # the input is unchanged
    plain = nb.to_device(nb.Tensor([1.0]), "array_api_strict")
    assert type(plain) is nb.Tensor and not plain.requires_grad and plain.grad is None


# ---------------------------------------------------------------------------------- modules
def _mlp(seed: int = 0) -> nn.Module:
    nb.random.seed(seed)
    return nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.normal(size=(30, 2)), rng.integers(0, 3, size=30)


def _step(model: nn.Module, opt: Any, x: np.ndarray, t: np.ndarray) -> None:
    backend = model[0].weight.backend
    loss = nn.SoftmaxCrossEntropy()(model(nb.to_device(x, backend)), nb.to_device(t, backend))
    opt.zero_grad()
    loss.backward()
    opt.step()


def _params(model: nn.Module) -> dict[str, np.ndarray]:
    return {name: p.numpy() for name, p in model.named_parameters()}


def test_module_to_is_in_place_and_keeps_identity(strict: None) -> None:
    model = _mlp()
    params = list(model.parameters())
    values = _params(model)
    assert model.to("array_api_strict") is model
    assert list(model.parameters()) == params  # the same Parameter objects
    assert {p.backend for p in params} == {"array_api_strict"}
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.numpy(), values[name])
    model.to("numpy")
    assert {p.backend for p in params} == {"numpy"}


OPTIMIZERS: list[tuple[str, Callable[[Any], optim.Optimizer]]] = [
    ("SGD", lambda ps: optim.SGD(ps, lr=0.5)),
    ("Momentum", lambda ps: optim.Momentum(ps, lr=0.1)),
    ("Nesterov", lambda ps: optim.Nesterov(ps, lr=0.1)),
    ("AdaGrad", lambda ps: optim.AdaGrad(ps, lr=0.1)),
    ("RMSprop", lambda ps: optim.RMSprop(ps, lr=0.01)),
    ("Adam", lambda ps: optim.Adam(ps, lr=0.05)),
    ("AdamW", lambda ps: optim.AdamW(ps, lr=0.05)),
]


@pytest.mark.parametrize("make", [m for _, m in OPTIMIZERS], ids=[n for n, _ in OPTIMIZERS])
def test_training_continues_across_backends(make: Callable[[Any], optim.Optimizer]) -> None:
    """Train 4 steps on numpy; train the same model 1 step on numpy, then move model and
    optimizer state to torch, array_api_strict and back for one step each: same weights."""
    x, t = _data()
    reference = _mlp()
    ref_opt = make(reference.parameters())
    for _ in range(4):
        _step(reference, ref_opt, x, t)

    model = _mlp()
    opt = make(model.parameters())
    _step(model, opt, x, t)
    route = [name for name in ("torch", "array_api_strict") if registry.probe(name) is None]
    for name in [*route, "numpy"]:
        assert nb.to_device((model, opt), name) == (model, opt)
        assert {p.backend for p in model.parameters()} == {name}
        for state in opt.state:
            for value in state.values():
                if not isinstance(value, int):
                    assert registry.backend_of(value) == name
        _step(model, opt, x, t)
    for _ in range(4 - 1 - len(route) - 1):
        _step(model, opt, x, t)
    eps = float(np.finfo(np.float64).eps)
    got, want = _params(model), _params(reference)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e3 * eps, atol=1e3 * eps)


def test_optimizer_refreshes_its_per_parameter_caches(strict: None) -> None:
    model = _mlp()
    sgd = optim.SGD(model.parameters(), lr=0.1)
    adam = optim.Adam(model.parameters(), lr=0.1)
    nb.to_device((model, sgd, adam), "array_api_strict")
    xp_strict = registry.get("array_api_strict").load_namespace()
    assert all(entry[2].xp is xp_strict for entry in adam._entries)
    assert all(entry[2].xp is xp_strict for entry in sgd._entries)
    if hasattr(sgd, "_pairs"):  # an older SGD cached (param, in-place?) pairs too
        assert [p for p, _ in sgd._pairs] == sgd.params
    assert all(st is adam.state[i] for i, (_, st, *_rest) in enumerate(adam._entries))


def test_moving_optimizer_moves_its_parameters(strict: None) -> None:
    model = _mlp()
    opt = optim.Momentum(model.parameters(), lr=0.1)
    x, t = _data()
    _step(model, opt, x, t)
    assert nb.to_device(opt, "array_api_strict") is opt
    assert {p.backend for p in model.parameters()} == {"array_api_strict"}
    assert {registry.backend_of(s["momentum_buffer"]) for s in opt.state} == {"array_api_strict"}
    _step(model, opt, x, t)


def test_optimizer_refresh_hook_is_used(strict: None) -> None:
    model = _mlp()
    calls = []

    class Hooked(optim.SGD):
        def _refresh_entries(self) -> None:
            calls.append(self.params[0].backend)

    opt = Hooked(model.parameters(), lr=0.1)
    nb.to_device(opt, "array_api_strict")
    # _apply runs once while planning (nothing moved yet) and once committing.
    assert calls == ["numpy", "array_api_strict"]


class _WithBuffers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.running = np.zeros(2)
        self.frozen = nb.Tensor(np.ones(2))
        self.history = [np.ones(1), "label"]
        self.tied = self.running
        self.generator = nb.random.Generator(0)
        self.note = "kept"

    def forward(self, x: Any) -> Any:
        return self.linear(x)


def test_module_arrays_and_tensors_move_too(strict: None) -> None:
    module = _WithBuffers()
    frozen = module.frozen
    module.to("array_api_strict")
    assert registry.backend_of(module.running) == "array_api_strict"
    assert module.tied is module.running
    assert module.frozen is frozen and frozen.backend == "array_api_strict"
    assert registry.backend_of(module.history[0]) == "array_api_strict"
    assert module.history[1] == "label" and module.note == "kept"
    assert isinstance(module.generator, nb.random.Generator)
    assert module.linear.weight.backend == "array_api_strict"


def test_failed_move_changes_nothing(strict: None) -> None:
    with nb.using(dtype="float16"):
        model = _mlp()
    opt = optim.Adam(model.parameters(), lr=0.1)
    x, t = _data()
    _step(model, opt, x.astype(np.float16), t)
    before = {name: p.data for name, p in model.named_parameters()}
    state_before = [dict(s) for s in opt.state]
    with pytest.raises(DtypeError, match="no float16"):
        nb.to_device((model, opt), "array_api_strict")
    assert {name: p.data for name, p in model.named_parameters()} == before
    for old, new in zip(state_before, opt.state, strict=True):
        assert all(old[k] is new[k] for k in old)


def test_gradients_move_with_parameters(strict: None) -> None:
    model = _mlp()
    x, t = _data()
    nn.SoftmaxCrossEntropy()(model(x), t).backward()
    grads = {name: p.grad.copy() for name, p in model.named_parameters()}
    model.to("array_api_strict")
    for name, p in model.named_parameters():
        assert registry.backend_of(p.grad) == "array_api_strict"
        np.testing.assert_array_equal(_host(p.grad), grads[name])


def test_training_step_on_meta_device_never_reads_the_host() -> None:
    """Invariant 5 on the CPU: torch's meta device holds no data, so any read of a value
    (``item``, ``float``, ``bool``, a copy to NumPy) inside the step raises. Forward,
    backward and the optimizer update must all run."""
    _require("torch")
    for make in (lambda ps: optim.Adam(ps, lr=0.1), lambda ps: optim.SGD(ps, lr=0.1)):
        model = _mlp()
        opt = make(model.parameters())
        nb.to_device((model, opt), "torch:meta")
        with nb.using(backend="torch", device="meta", dtype="float64"):
            xp = nb.namespace()
            loss = nn.MSELoss()(model(xp.ones((8, 2))), xp.zeros((8, 3)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            assert model[0].weight.data.device.type == "meta"
            assert model[0].weight.grad.device.type == "meta"
        with pytest.raises((RuntimeError, NotImplementedError)):
            float(loss.data)  # the sanity check: reading a value does fail on meta


def test_save_load_after_move(tmp_path: Any, strict: None) -> None:
    model = _mlp()
    model.to("array_api_strict")
    nb.save(model, tmp_path / "m.npz")
    fresh = _mlp(seed=5).to("array_api_strict")
    nb.load(fresh, tmp_path / "m.npz")
    assert fresh[0].weight.backend == "array_api_strict"
    np.testing.assert_array_equal(fresh[0].weight.numpy(), model[0].weight.numpy())


# ---------------------------------------------------------------------------------- cache
def test_empty_cache_without_gpu_imports_nothing(run_python: Callable[..., Any]) -> None:
    code = """
    import json, sys
    import nnbackend as nb
    print(json.dumps({"freed": nb.empty_cache(), "cupy": "cupy" in sys.modules}))
    """
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"freed": {}, "cupy": False}


def test_empty_cache_asks_every_backend_with_a_cache(
    numpy_like_backend: Callable[..., nb.Backend],
) -> None:
    """A registered backend's ``empty_cache`` hook is called and its answer reported under
    its name; an empty answer (nothing imported, nothing held) is left out."""
    pooled = {"freed_bytes": 5, "held_bytes": 2}
    nb.register_backend(numpy_like_backend("pooled", empty_cache=lambda: pooled))
    nb.register_backend(numpy_like_backend("idle_pool", empty_cache=dict))
    freed = nb.empty_cache()
    assert freed["pooled"] == {"freed_bytes": 5, "held_bytes": 2}
    assert "idle_pool" not in freed


def test_torch_empty_cache_without_cuda_initialises_nothing() -> None:
    if registry.probe("torch") is not None:
        pytest.skip("torch is not installed")
    import torch

    from nnbackend.backends import torch as torch_backend

    if torch.cuda.is_initialized():
        pytest.skip("torch CUDA is initialised in this process")
    assert torch_backend.empty_cache() == {}
    assert not torch.cuda.is_initialized()
    assert "torch" not in nb.empty_cache()


@pytest.mark.gpu
def test_torch_cuda_cache_is_emptied() -> None:
    if registry.probe("torch") is not None:
        pytest.skip("torch is not installed")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    x = torch.ones(1 << 20, device="cuda")  # 4 MiB
    del x
    freed = nb.empty_cache()["torch"]
    assert freed["freed_bytes"] >= 4 << 20
    assert freed["held_bytes"] == torch.cuda.memory_reserved()


def test_public_names() -> None:
    for name in ("to_device", "from_dlpack", "empty_cache"):
        assert name in nb.__all__ and callable(getattr(nb, name))


# -- objects move themselves: _apply ------------------------------------------------------


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(2, 2)
        self.second = nn.Linear(2, 2)
        self.second.weight = self.first.weight  # the same Parameter in two layers
        self.cache = (np.ones(3), [np.zeros(1)])


def test_module_apply_calls_fn_once_per_array_and_keeps_ties() -> None:
    module = _Tied()
    module.first.weight.grad = np.ones((2, 2))
    seen: list[int] = []

    def to32(a: Any) -> Any:
        seen.append(id(a))
        return a.astype(np.float32)

    weight = module.first.weight
    assert module._apply(to32) is module
    assert len(seen) == len(set(seen)) == 6  # weight, its grad, two biases, two cached
    assert module.second.weight is weight and weight.data.dtype == np.float32
    assert weight.grad.dtype == np.float32
    assert module.cache[0].dtype == np.float32 and module.cache[1][0].dtype == np.float32


def test_optimizer_apply_keeps_parameters_and_state_dicts() -> None:
    model = _mlp()
    opt = optim.Adam(model.parameters(), lr=0.1)
    x, t = _data()
    _step(model, opt, x, t)
    params, states = list(opt.params), list(opt.state)
    assert opt._apply(lambda a: a.astype(np.float32)) is opt
    assert opt.params == params and all(a is b for a, b in zip(opt.state, states, strict=True))
    assert {p.data.dtype for p in model.parameters()} == {np.dtype(np.float32)}
    assert {s[k].dtype for s in opt.state for k in ("m", "v")} == {np.dtype(np.float32)}


def test_a_class_with_apply_moves_with_to_device(strict: None) -> None:
    class Holder:
        def __init__(self) -> None:
            self.array = np.ones(2)

        def _apply(self, fn: Callable[[Any], Any]) -> Holder:
            self.array = fn(self.array)
            return self

    holder = Holder()
    assert nb.to_device(holder, "array_api_strict") is holder
    assert registry.backend_of(holder.array) == "array_api_strict"


def test_a_failure_late_in_a_move_leaves_earlier_objects_unmoved(strict: None) -> None:
    model = _mlp()
    with nb.using(dtype="float16"):
        half = nb.Tensor(nb.namespace().ones(2))
    before = [p.data for p in model.parameters()]
    with pytest.raises(DtypeError, match="no float16"):
        nb.to_device([model, half], "array_api_strict")
    assert [p.data for p in model.parameters()] == before


def test_a_model_on_a_second_device_trains_there() -> None:
    """The engine's constants (the loss's root gradient 1, ReLU's 0, a broadcast sum's
    gradient) are made on the device of the arrays they meet, not the backend's default:
    array_api_strict refuses to combine arrays of two devices, as CuPy on two GPUs would."""
    registry.get("array_api_strict")  # skips nothing: strict is a test dependency
    with nb.using(backend="array_api_strict", dtype="float64"):
        nb.random.seed(0)
        model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    model.to("array_api_strict:device1")
    opt = optim.SGD(model.parameters(), lr=0.1)
    x = nb.to_device(
        nb.Tensor(np.linspace(-1.0, 1.0, 12).reshape(4, 3)), "array_api_strict:device1"
    )
    t = nb.to_device(nb.Tensor(np.array([0, 1, 1, 0])), "array_api_strict:device1")
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = nn.SoftmaxCrossEntropy()(model(x), t) + (model(x) ** 2).sum() * 0.01
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    for p in model.parameters():
        assert str(p.data.device) == str(p.grad.device) == "array_api_strict.Device('device1')"
    assert losses[-1] < losses[0]


def _second_device_cases() -> dict[str, tuple[Callable[[], Any], Callable[..., Any]]]:
    """Models whose forward or backward makes constants (initial states, padding, a
    gradient for an unused slice, embedding rows), each with a loss of its output."""
    fn = nb.autograd.functions

    def seq(h: Any) -> Any:
        return (h[0] if isinstance(h, tuple) else h).sum()

    def ce(m: Any, x: Any) -> Any:
        return nn.SoftmaxCrossEntropy()(m(x), nb.to_device(nb.Tensor(np.array([0, 2])), DEV1))

    return {
        "rnn": (lambda: nn.RNN(6, 4), lambda m, x: seq(m(x))),
        "lstm": (lambda: nn.LSTM(6, 4), lambda m, x: seq(m(x))),
        "gru": (lambda: nn.GRU(6, 4), lambda m, x: seq(m(x))),
        "embedding": (
            lambda: nn.Sequential(nn.Embedding(5, 4), nn.Flatten(), nn.Linear(20, 3)),
            lambda m, x: ce(m, nb.to_device(nb.Tensor(np.array([[1, 2, 3, 1, 0]] * 2)), DEV1)),
        ),
        "conv": (
            lambda: nn.Sequential(nn.Conv2d(6, 4, 2, stride=3), nn.Flatten(), nn.Linear(16, 3)),
            lambda m, x: ce(m, nb.to_device(nb.Tensor(np.ones((2, 6, 6, 6))), DEV1)),
        ),
        "maximum": (
            lambda: nn.Linear(6, 4),
            lambda m, x: (fn.maximum(m(x), 0.1) + fn.minimum(0.2, m(x))).sum(),
        ),
        "slices": (
            lambda: nn.Linear(6, 4),
            lambda m, x: (fn.concat([m(x)[:, 0, :2], m(x)[1:, 1, 2:]], axis=0) ** 2).sum(),
        ),
    }


DEV1 = "array_api_strict:device1"


@pytest.mark.parametrize("case", sorted(_second_device_cases()))
def test_layers_that_make_constants_train_on_a_second_device(case: str) -> None:
    make, loss_of = _second_device_cases()[case]
    with nb.using(backend="array_api_strict", dtype="float64"):
        nb.random.seed(0)
        model = make()
    model.to(DEV1)
    x = nb.to_device(nb.Tensor(np.linspace(-1.0, 1.0, 60).reshape(2, 5, 6)), DEV1)
    opt = optim.Adam(model.parameters(), lr=0.01)
    for _ in range(2):
        opt.zero_grad()
        loss_of(model, x).backward()
        opt.step()
    for p in model.parameters():
        assert str(p.grad.device) == str(p.data.device) == f"{DEV1.split(':')[0]}.Device('device1')"


@pytest.mark.parametrize(
    "failure",
    [RuntimeError("driver exploded"), OSError("libcuda.so: cannot open"), KeyError("cuda")],
    ids=["RuntimeError", "OSError", "KeyError"],
)
def test_a_device_lookup_that_fails_is_a_typed_error(
    numpy_like_backend: Callable[..., nb.Backend], failure: Exception
) -> None:
    """A plugin's ``device()`` raising anything but ValueError or ImportError came out of
    ``nb.using(device=...)`` and ``nb.to_device`` as the bare exception."""

    def device(name: str) -> Any:
        raise failure

    nb.register_backend(numpy_like_backend("flaky_device", device=device))
    with pytest.raises(nb.errors.BackendUnavailableError, match="flaky_device") as info:
        nb.device.parse_target("flaky_device:0")
    assert info.value.__cause__ is failure
    with pytest.raises(nb.errors.BackendUnavailableError, match="flaky_device"):
        nb.using(device="flaky_device:0").__enter__()
    with pytest.raises(nb.errors.BackendUnavailableError):
        nb.to_device(np.zeros(2), "flaky_device:0")
