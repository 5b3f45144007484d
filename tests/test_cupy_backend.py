"""The cupy backend and the GPU check script.

Three kinds of test:

* CPU tests of the backend's own logic (``CUDA_VISIBLE_DEVICES``, device indices, memory
  facts, ``empty_cache``) through its real functions, with the CUDA runtime replaced by a small
  stand-in module where a GPU would answer;
* ``gpu``-marked tests that run on a machine with a usable cupy (``nox -s gpu``,
  ``python scripts/gpu_check.py``) and are reported as skipped elsewhere;
* CPU tests of ``scripts/gpu_check.py``'s pieces (its dry run is the check as a whole).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import datasets, nn, optim, registry
from nnbackend.backends import cupy as cupy_backend
from nnbackend.errors import ArgumentError, BackendError, BackendUnavailableError

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------- devices
@pytest.mark.parametrize(
    ("value", "entries"),
    [
        (None, None),
        ("", []),
        ("-1", []),
        ("0", ["0"]),
        ("2,3", ["2", "3"]),
        (" 1 , 0 ", ["1", "0"]),
        ("1,x,2", ["1"]),  # the runtime stops at the first bad entry
        ("GPU-8f1c,3", ["GPU-8f1c", "3"]),
        ("MIG-abc", ["MIG-abc"]),
    ],
)
def test_visible_devices(value: str | None, entries: list[str] | None) -> None:
    environ = {} if value is None else {"CUDA_VISIBLE_DEVICES": value}
    assert cupy_backend.visible_devices(environ) == entries


def test_physical_name_follows_cuda_visible_devices() -> None:
    assert cupy_backend.physical_name(1, {}) == "GPU 1"
    assert cupy_backend.physical_name(1, {"CUDA_VISIBLE_DEVICES": "2,3"}) == "GPU 3"
    assert cupy_backend.physical_name(0, {"CUDA_VISIBLE_DEVICES": "GPU-8f1c"}) == "GPU-8f1c"


def test_check_device_index() -> None:
    cupy_backend.check_device_index(1, 2, {})
    with pytest.raises(
        ValueError, match=r"cupy:2 does not exist: this machine has cupy:0, cupy:1$"
    ):
        cupy_backend.check_device_index(2, 2, {})
    with pytest.raises(ValueError, match=r"CUDA_VISIBLE_DEVICES='3' leaves 1 visible") as info:
        cupy_backend.check_device_index(1, 1, {"CUDA_VISIBLE_DEVICES": "3"})
    assert "numbered among the visible ones" in str(info.value)
    with pytest.raises(ValueError, match="has none"):
        cupy_backend.check_device_index(0, 0, {})


def test_record_is_data() -> None:
    record = registry.get("cupy")
    assert record.array_modules == ("cupy",)
    caps = record.capabilities
    assert caps.float16 and caps.inplace and caps.fast_float16_matmul
    assert record.scatter_add is cupy_backend.scatter_add
    assert record.on_host(object()) is False  # the engine never reads a cupy value eagerly
    assert record.kernels is cupy_backend.kernels
    assert "pip install" in record.install_hint


def test_using_cupy_device_without_a_gpu() -> None:
    reason = registry.probe("cupy")
    if reason is None:
        pytest.skip("cupy is usable here: test_devices_and_using covers it")
    with nb.using(device="cupy:1", dtype="float32"):  # parsed and accepted here ...
        assert (nb.get_backend(), nb.get_device(), nb.get_default_dtype()) == (
            "cupy",
            "1",
            "float32",
        )
        with pytest.raises(BackendUnavailableError) as excinfo:  # ... refused at first use
            nb.namespace()
    assert reason in str(excinfo.value)
    with pytest.raises(BackendError, match="bad device 'x' for backend 'cupy'"):
        nb.using(device="cupy:x").__enter__()


# ---------------------------------------------------------------------------------- stand-in
class _Pool:
    def __init__(self, used: int, total: int) -> None:
        self.used, self.total = used, total

    def used_bytes(self) -> int:
        return self.used

    def total_bytes(self) -> int:
        return self.total

    def free_bytes(self) -> int:
        return self.total - self.used

    def get_limit(self) -> int:
        return 0

    def free_all_blocks(self) -> None:
        self.total = self.used

    def n_free_blocks(self) -> int:
        return 2


def _fake_cupy(count: int) -> types.ModuleType:
    """What the backend asks of cupy, answered as a machine with ``count`` GPUs would."""
    props = {"name": b"NVIDIA H100 80GB HBM3", "totalGlobalMem": 80 << 30, "major": 9, "minor": 0}
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: count,
        getDeviceProperties=lambda index: dict(props),
        runtimeGetVersion=lambda: 13000,
        driverGetVersion=lambda: 13000,
    )

    class Device:
        def __init__(self, index: int) -> None:
            self.id = index

    module = types.ModuleType("cupy")
    module.__version__ = "14.2.0"  # type: ignore[attr-defined]
    module.cuda = types.SimpleNamespace(runtime=runtime, Device=Device)  # type: ignore[attr-defined]
    pool, pinned = _Pool(used=3 << 20, total=10 << 20), _Pool(used=0, total=0)
    module.get_default_memory_pool = lambda: pool  # type: ignore[attr-defined]
    module.get_default_pinned_memory_pool = lambda: pinned  # type: ignore[attr-defined]
    return module


@pytest.fixture
def fake_cupy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], types.ModuleType]]:
    registry.probe("cupy")  # the real answer, cached before the stand-in shadows cupy

    def install(count: int) -> types.ModuleType:
        module = _fake_cupy(count)
        monkeypatch.setitem(sys.modules, "cupy", module)
        return module

    yield install


def test_devices_and_device_with_a_runtime(
    fake_cupy: Callable[[int], types.ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_cupy(2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert cupy_backend.devices() == ["cupy:0", "cupy:1"]
    assert cupy_backend.device("1").id == 1
    assert cupy_backend.device("cuda:0").id == 0
    with pytest.raises(ValueError, match=r"cupy:2 does not exist.*CUDA_VISIBLE_DEVICES='2,3'"):
        cupy_backend.device("2")
    # config.using reports it as a bad device, with the same explanation
    with pytest.raises(BackendError, match="bad device '2' for backend 'cupy': cupy:2 does not"):
        nb.using(device="cupy:2").__enter__()


def test_device_count_failure_is_left_to_first_use(
    fake_cupy: Callable[[int], types.ModuleType],
) -> None:
    module = fake_cupy(1)

    def no_driver() -> int:
        raise RuntimeError("cudaErrorInsufficientDriver")

    module.cuda.runtime.getDeviceCount = no_driver  # type: ignore[attr-defined]
    assert cupy_backend.device("3").id == 3  # no range check possible: the probe will say why
    assert cupy_backend.devices() == []


def test_facts_and_empty_cache_with_a_runtime(
    fake_cupy: Callable[[int], types.ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_cupy(2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    facts = cupy_backend.facts()
    assert facts["cuda_visible_devices"] == "2,3"
    assert [g["device"] for g in facts["gpus"]] == ["cupy:0", "cupy:1"]
    assert [g["physical"] for g in facts["gpus"]] == ["GPU 2", "GPU 3"]
    gpu = facts["gpus"][0]
    assert gpu["name"] == "NVIDIA H100 80GB HBM3" and gpu["compute_capability"] == "9.0"
    assert gpu["tensor_cores"] is True and gpu["memory_bytes"] == 80 << 30
    assert facts["memory_pool_used_bytes"] == 3 << 20
    assert facts["memory_pool_total_bytes"] == 10 << 20
    assert facts["memory_pool_free_bytes"] == 7 << 20
    assert facts["pinned_pool_free_blocks"] == 2
    assert cupy_backend.empty_cache() == {"freed_bytes": 7 << 20, "held_bytes": 3 << 20}
    released = nb.empty_cache()  # (and NumPy's recycled arrays, where earlier tests left some)
    assert released["cupy"] == {"freed_bytes": 0, "held_bytes": 3 << 20}
    assert set(released) <= {"cupy", "numpy"}


def test_empty_cache_imports_nothing() -> None:
    if "cupy" in sys.modules:
        pytest.skip("cupy is already imported in this process")
    assert cupy_backend.empty_cache() == {}
    assert "cupy" not in sys.modules


@pytest.mark.skipif(importlib.util.find_spec("cupy") is None, reason="cupy is not installed")
def test_hidden_gpus_give_the_no_device_reason(run_python: Callable[..., Any]) -> None:
    code = """
    import nnbackend as nb
    try:
        nb.namespace()
    except nb.errors.BackendUnavailableError as exc:
        print(exc)
    """
    proc = run_python(code, env={"NNBACKEND": "cupy", "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr
    assert "no device: CUDA_VISIBLE_DEVICES='' hides every GPU" in proc.stdout


# ---------------------------------------------------------------------------------- on a GPU
@pytest.fixture
def cp() -> Any:
    """The cupy module, where the cupy backend is usable (a GPU test on a torch-only CUDA
    machine is skipped, not failed)."""
    reason = registry.probe("cupy")
    if reason is not None:
        pytest.skip(f"backend 'cupy' is unavailable: {reason}")
    import cupy

    return cupy


def _mlp(dtype: str, seed: int = 0) -> nn.Module:
    with nb.using(dtype=dtype):
        nb.random.seed(seed)
        return nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))


def _spiral(backend: str, dtype: str) -> tuple[Any, Any]:
    x, t = datasets.spiral()
    return nb.to_device(np.asarray(x, dtype=dtype), backend), nb.to_device(np.asarray(t), backend)


def _train(backend: str, dtype: str, steps: int, make_opt: Any = None) -> dict[str, np.ndarray]:
    model = _mlp(dtype).to(backend)
    opt = (make_opt or (lambda ps: optim.SGD(ps, lr=1.0)))(model.parameters())
    x, t = _spiral(backend, dtype)
    for _ in range(steps):
        loss = nn.SoftmaxCrossEntropy()(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {name: p.numpy() for name, p in model.named_parameters()}


@pytest.mark.gpu
def test_devices_and_using(cp: Any) -> None:
    count = int(cp.cuda.runtime.getDeviceCount())
    assert registry.get("cupy").devices() == [f"cupy:{i}" for i in range(count)]
    with nb.using(device="cupy:0", dtype="float32"):
        xp = nb.namespace()
        x = xp.zeros(3)
        assert isinstance(x, cp.ndarray) and x.device.id == 0 and x.dtype == cp.float32
        assert xp.asarray([1.0, 2.0]).dtype == cp.float32
    with pytest.raises(BackendError, match=f"cupy:{count} does not exist"):
        nb.using(device=f"cupy:{count}").__enter__()
    if count > 1:
        with nb.using(device="cupy:1"):  # GPU 1 becomes current: kernels launch there
            assert cp.cuda.Device().id == 1
            y = nb.namespace().ones(4)
            assert (y + y).device.id == 1
            assert y.device.id == 1
            assert nb.to_device(np.arange(2.0), "cupy").device.id == 1
        assert cp.cuda.Device().id == 0  # and stops being current after the block
        moved = nb.to_device(cp.arange(3.0), "cupy:1")
        assert moved.device.id == 1


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_namespace_dtypes_on_gpu(cp: Any, dtype: str) -> None:
    xp = nb.namespace("cupy", dtype)
    for made in (xp.zeros(2), xp.ones((2, 2)), xp.asarray([1.0]), xp.linspace(0, 1, 3)):
        assert isinstance(made, cp.ndarray) and made.dtype == cp.dtype(dtype)
    assert xp.__array_namespace_info__().default_dtypes()["real floating"] == cp.dtype(dtype)


@pytest.mark.gpu
def test_memory_pool_facts_and_empty_cache(cp: Any) -> None:
    pool = cp.get_default_memory_pool()
    # Larger than any free block the pool holds: x gets a chunk of its own, which deleting x
    # frees whole. (A 4 MiB array could land in the free part of a chunk that arrays of
    # earlier tests in this worker still use: then only 279,040 bytes came free, on an H200.)
    size = ((int(pool.free_bytes()) >> 20) + 4) << 20
    x = cp.ones(size // 4, dtype=cp.float32)
    facts = registry.get("cupy").facts()
    assert facts["memory_pool_used_bytes"] >= size
    assert facts["memory_pool_total_bytes"] >= facts["memory_pool_used_bytes"]
    assert "memory pool" in str(nb.info())
    del x
    freed = nb.empty_cache()["cupy"]
    assert freed["freed_bytes"] >= size
    assert freed["held_bytes"] == pool.total_bytes()


@pytest.mark.gpu
def test_info_reports_the_gpu(cp: Any) -> None:
    text = str(nb.info())
    assert "GPU 0:" in text and "CUDA runtime" in text
    status = {b.name: b for b in nb.info().backends}["cupy"]
    assert status.available and status.facts["gpus"][0]["device"] == "cupy:0"
    assert "tensor_cores" in status.facts["gpus"][0]


@pytest.mark.gpu
def test_scatter_add_accumulates_repeated_rows(cp: Any) -> None:
    xp = nb.namespace("cupy", "float32")
    target = xp.zeros((5, 3))
    out = registry.get("cupy").scatter_add(target, xp.asarray([0, 2, 0, 4, 0]), xp.ones((5, 3)))
    assert out is target
    np.testing.assert_array_equal(out.get()[:, 0], [3.0, 0.0, 1.0, 0.0, 1.0])
    # through the engine: Embedding's backward on cupy equals NumPy's np.add.at
    indices = np.array([[1, 2, 1], [5, 1, 0]])
    emb = nn.Embedding(6, 4)
    (emb(indices) * emb(indices)).sum().backward()
    want = emb.weight.grad.copy()
    emb.zero_grad()
    emb.to("cupy")
    gpu_indices = cp.asarray(indices)
    (emb(gpu_indices) * emb(gpu_indices)).sum().backward()
    assert isinstance(emb.weight.grad, cp.ndarray)
    eps = float(np.finfo(np.float64).eps)
    np.testing.assert_allclose(emb.weight.grad.get(), want, rtol=8 * eps, atol=8 * eps)


@pytest.mark.gpu
def test_float16_matmul_runs_on_tensor_cores(cp: Any) -> None:
    from nnbackend.autograd.ops import matmul_arrays

    xp = registry.get("cupy").load_namespace()
    a32 = cp.random.standard_normal((4096, 4096), dtype=cp.float32)
    a16 = a32.astype(cp.float16)
    a32 = a16.astype(cp.float32)  # the same values in both dtypes
    y = matmul_arrays(xp, a16, a16)  # the engine's product: float16 kept, not widened
    assert y.dtype == cp.float16
    ref = a32 @ a32
    err = float(cp.max(cp.abs(y.astype(cp.float32) - ref)) / cp.max(cp.abs(ref)))
    assert err <= float(np.finfo(np.float16).eps)

    def ms(a: Any) -> float:
        a @ a
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        for _ in range(10):
            a @ a
        end.record()
        end.synchronize()
        return float(cp.cuda.get_elapsed_time(start, end)) / 10

    t16, t32 = ms(a16), ms(a32)
    assert t16 < t32, f"float16 matmul {t16:.2f} ms is not faster than float32 {t32:.2f} ms"


@pytest.mark.gpu
def test_training_step_never_synchronises(cp: Any) -> None:
    """Queue seconds of GPU work, run one training step, and look at the stream: if the step
    waited for the GPU anywhere (a value read back, a blocking copy), the queue has drained."""
    model = _mlp("float32").to("cupy")
    opt = optim.Adam(model.parameters(), lr=0.01)
    x, t = _spiral("cupy", "float32")

    def step() -> Any:
        loss = nn.SoftmaxCrossEntropy()(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    step()
    step()  # every kernel compiled, every pool block allocated
    stream = cp.cuda.get_current_stream()
    stream.synchronize()
    big = cp.ones((8192, 8192), dtype=cp.float32)
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    big @ big
    end.record()
    end.synchronize()
    one = max(float(cp.cuda.get_elapsed_time(start, end)), 0.1)
    for _ in range(min(500, math.ceil(2000.0 / one))):  # about two seconds of queued work
        big @ big
    began = time.perf_counter()
    loss = step()
    host_s = time.perf_counter() - began
    busy = not stream.done
    stream.synchronize()
    assert busy, f"the training step waited for the GPU (it took {host_s:.3f} s on the host)"
    assert bool(cp.isfinite(loss.data))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_same_training_on_cpu_and_gpu(cp: Any, dtype: str) -> None:
    want = _train("numpy", dtype, 100)
    got = _train("cupy", dtype, 100)
    eps = float(np.finfo(dtype).eps)
    for name in want:
        scale = max(1.0, float(np.max(np.abs(want[name]))))
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e3 * eps * scale)


@pytest.mark.gpu
def test_model_and_optimizer_move_to_gpu_and_back(cp: Any) -> None:
    def make(ps: Any) -> optim.Optimizer:
        return optim.Adam(ps, lr=0.05)

    want = _train("numpy", "float32", 4, make)
    model = _mlp("float32")
    params = list(model.parameters())
    opt = make(model.parameters())
    for backend in ("numpy", "cupy", "cupy:0", "numpy"):
        nb.to_device((model, opt), backend)
        x, t = _spiral(backend.partition(":")[0], "float32")
        loss = nn.SoftmaxCrossEntropy()(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if backend.startswith("cupy"):
            assert all(isinstance(p.data, cp.ndarray) for p in params)
            assert all(isinstance(s["m"], cp.ndarray) for s in opt.state)
    assert list(model.parameters()) == params
    eps = float(np.finfo(np.float32).eps)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.numpy(), want[name], rtol=0, atol=1e3 * eps)


@pytest.mark.gpu
def test_transfers_and_dlpack(cp: Any) -> None:
    host = np.arange(4.0)
    on_gpu = nb.to_device(host, "cupy")
    assert isinstance(on_gpu, cp.ndarray) and on_gpu.device.id == 0
    np.testing.assert_array_equal(on_gpu.get(), host)
    assert nb.to_device(on_gpu, "cupy") is on_gpu
    with pytest.raises(ArgumentError, match="copy=False"):
        nb.to_device(host, "cupy", copy=False)  # host memory cannot become device memory
    back = nb.to_device(on_gpu, "numpy")
    assert isinstance(back, np.ndarray) and back.tolist() == host.tolist()
    record = registry.get("cupy")
    assert record.from_host(host, cp.cuda.Device(0)).device.id == 0
    assert isinstance(record.to_host(on_gpu), np.ndarray)
    if registry.probe("torch") is not None:
        pytest.skip("torch is not installed: the torch CUDA <-> cupy half is not run")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here: the torch CUDA <-> cupy half is not run")
    t = torch.arange(6.0, device="cuda")
    c = nb.from_dlpack(t, "cupy")
    assert isinstance(c, cp.ndarray) and c.data.ptr == t.data_ptr()  # no copy
    assert nb.to_device(c, "torch").data_ptr() == t.data_ptr()
    assert nb.namespace("cupy").asarray(t).data.ptr == t.data_ptr()
    assert nb.namespace("torch").asarray(c).data_ptr() == c.data.ptr
    assert nb.to_device(c, "torch:cpu").device.type == "cpu"


@pytest.mark.gpu
def test_cupy_kernels_agree_with_the_namespace(cp: Any) -> None:
    xp = registry.get("cupy").load_namespace()
    kernels = cupy_backend.kernels()
    x = cp.random.standard_normal((7, 5), dtype=cp.float32)
    for axis in (None, 0, 1):
        for keepdims in (False, True):
            got = kernels["sum"](x, axis=axis, keepdims=keepdims)
            want = xp.sum(x, axis=axis, keepdims=keepdims)
            assert got.shape == want.shape and got.dtype == want.dtype
            cp.testing.assert_allclose(got, want, rtol=1e-6)
            cp.testing.assert_array_equal(
                kernels["max"](x, axis=axis, keepdims=keepdims),
                xp.max(x, axis=axis, keepdims=keepdims),
            )
    assert kernels["astype"](x, cp.float16).dtype == cp.float16


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_fused_lstm_kernels_agree_with_the_generic_step(cp: Any, dtype: str) -> None:
    """The one-kernel LSTM step (and its backward) against the namespace code it replaces,
    with the gate blocks as strided views of one (N, 4H) array, as the layer passes them."""
    from nnbackend.backends import ops as generic

    xp = registry.get("cupy").load_namespace()
    cell, cell_backward = cupy_backend._lstm_kernels(cp)
    rng = cp.random.default_rng(0)
    n, h = 5, 7
    a = (rng.standard_normal((n, 4 * h)) * 3).astype(dtype)
    c_prev, dh, dc = (rng.standard_normal((n, h)).astype(dtype) for _ in range(3))
    tol = {"float16": 1e-2, "float32": 1e-5, "float64": 1e-12}[dtype]
    got = cell(a, c_prev)
    want = generic.lstm_cell(xp, a, c_prev)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        cp.testing.assert_allclose(g, w, rtol=tol, atol=tol)
    got_b = cell_backward(dh, dc, *want[2:], c_prev)
    want_b = generic.lstm_cell_backward(xp, dh, dc, *want[2:], c_prev)
    for g, w in zip(got_b, want_b, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        cp.testing.assert_allclose(g, w, rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_the_fused_update_check_refuses_a_wrong_or_failing_kernel(dtype: str) -> None:
    """The one-time check before CuPy's fused ``y -= a * x`` is used, run with NumPy standing
    in for CuPy: the right update passes, one that is off by any amount or raises (a kernel
    that does not compile) is refused, so the generic update runs instead."""
    dt = np.dtype(dtype)

    def right(x: Any, a: float, y: Any) -> None:
        np.subtract(y, a * x, out=y)

    def off(x: Any, a: float, y: Any) -> None:
        right(x, a, y)
        y[17] += dt.type(0.5)

    def fails(x: Any, a: float, y: Any) -> None:
        raise RuntimeError("nvrtc: error: identifier undefined")

    def ignores_the_rate(x: Any, a: float, y: Any) -> None:
        right(x, 1.0, y)

    assert cupy_backend.checked_update(np, right, dt, np.asarray)
    for wrong in (off, fails, ignores_the_rate):
        assert not cupy_backend.checked_update(np, wrong, dt, np.asarray)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_the_fused_relu_backward_check_refuses_a_wrong_or_failing_kernel(dtype: str) -> None:
    """The same one-time check for ReLU's fused backward, NumPy standing in for CuPy."""
    dt = np.dtype(dtype)

    def right(gy: Any, mask: Any) -> Any:
        return gy * mask.astype(gy.dtype)

    def keeps_everything(gy: Any, mask: Any) -> Any:
        return gy.copy()

    def widens(gy: Any, mask: Any) -> Any:
        return right(gy, mask).astype(np.float64) if dt != np.float64 else right(gy, ~mask)

    def fails(gy: Any, mask: Any) -> Any:
        raise RuntimeError("nvrtc: error: no instance of overloaded function")

    assert cupy_backend.checked_relu_backward(np, right, dt, np.asarray)
    for wrong in (keeps_everything, widens, fails):
        assert not cupy_backend.checked_relu_backward(np, wrong, dt, np.asarray)


class _DeviceArray(np.ndarray):
    """A NumPy array standing in for a CuPy one: ``data.ptr`` and ``device`` as CuPy has them."""

    @property
    def data(self) -> Any:  # type: ignore[override]
        return types.SimpleNamespace(ptr=self.__array_interface__["data"][0])

    @property
    def device(self) -> Any:  # type: ignore[override]
        return contextlib.nullcontext()


def _kernel_cupy(calls: list[str], broken: bool) -> types.ModuleType:
    """A stand-in cupy whose ElementwiseKernel runs the two fused kernels' formulas in NumPy
    (the update through float32 for float16, as the CUDA code does) and logs each call;
    ``broken`` kernels raise, as one that NVRTC cannot compile would."""

    class ElementwiseKernel:
        def __init__(self, in_params: str, out_params: str, op: str, name: str, **kw: Any):
            self.name = name

        def __call__(self, *args: Any) -> Any:
            calls.append(self.name)
            if broken:
                raise RuntimeError("CompileException: nvrtc")
            if self.name == "nnbackend_sub_scaled":
                x, a, y = args
                wide = np.float32 if y.dtype == np.float16 else y.dtype.type
                y[...] = (y.astype(wide) - wide(a) * x.astype(wide)).astype(y.dtype)
                return y
            gy, mask = args
            return (gy * mask.astype(gy.dtype)).view(_DeviceArray)

    module = types.ModuleType("cupy")
    module.ndarray = _DeviceArray  # type: ignore[attr-defined]
    module.ElementwiseKernel = ElementwiseKernel  # type: ignore[attr-defined]
    module.asarray = lambda a: np.array(a).view(_DeviceArray)  # type: ignore[attr-defined]
    module.asnumpy = lambda a: np.asarray(a).view(np.ndarray)  # type: ignore[attr-defined]
    return module


@pytest.mark.parametrize("broken", [False, True])
def test_cupy_ops_route_updates_to_the_fused_kernels_only_where_they_apply(
    monkeypatch: pytest.MonkeyPatch, broken: bool
) -> None:
    """CupyOps' choice between its fused kernels and the generic update, run on the CPU with
    a stand-in cupy: the fused kernel for contiguous arrays of one float dtype and a Python
    float rate (checked once per dtype, then called), the generic update for views, array
    rates, float16 Momentum and other slopes; a kernel that fails its check is never used
    again and the generic update gives the same values."""
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "cupy", _kernel_cupy(calls, broken))
    monkeypatch.setattr(cupy_backend, "_update_kernels", {})
    record = registry.get("numpy")
    ops = cupy_backend.CupyOps(record.load_namespace(), record)
    rng = np.random.default_rng(0)
    fused = "nnbackend_sub_scaled"

    def arrays(dtype: str) -> tuple[Any, Any, Any]:
        p = rng.standard_normal((8, 6)).astype(dtype)
        g = rng.standard_normal((8, 6)).astype(dtype)
        want = (p.astype(np.float64) - 0.25 * g.astype(np.float64)).astype(dtype)
        return p.view(_DeviceArray), g.view(_DeviceArray), want

    for dtype in ("float16", "float32", "float64"):
        p, g, want = arrays(dtype)
        calls.clear()
        out = ops.sub_scaled_(p, 0.25, g)
        assert out is p  # in place either way
        np.testing.assert_allclose(p, want, rtol=1e-3 if dtype == "float16" else 1e-6)
        # The first use checks (one call), then the update itself runs fused unless refused.
        assert calls == ([fused] if broken else [fused, fused]), (dtype, calls)
        calls.clear()
        ops.sub_scaled_(p, 0.25, g)
        assert calls == ([] if broken else [fused]), "checked once per dtype"
        assert (ops._fused["update", p.dtype.char] is None) is broken

    p, g, _ = arrays("float32")
    calls.clear()
    ops.sub_scaled_(p[:, ::2], 0.25, np.ascontiguousarray(g[:, ::2]).view(_DeviceArray))
    ops.sub_scaled_(p, np.float32(0.25), g)  # a NumPy scalar rate
    ops.sub_scaled_(p, 0.25, np.ascontiguousarray(g[:1]).view(_DeviceArray))  # broadcast
    assert calls == []
    p16, g16, _ = arrays("float16")
    ops.sub_times_(p16, 0.25, g16)  # Momentum computes float16 in float16
    assert calls == []
    ops.sub_times_(p, 0.25, g)
    assert calls == ([] if broken else [fused])

    gy = rng.standard_normal((8, 6)).astype("float32").view(_DeviceArray)
    mask = (rng.standard_normal((8, 6)) > 0).view(_DeviceArray)
    calls.clear()
    got = ops.leaky_relu_backward(gy, mask, 0.0)
    np.testing.assert_array_equal(got, gy * mask)
    relu = "nnbackend_relu_backward"
    assert calls == ([relu] if broken else [relu, relu])
    calls.clear()
    ops.leaky_relu_backward(gy, mask, 0.2)
    assert calls == []


def test_fused_kernels_take_arrays_that_are_the_same_or_apart() -> None:
    """An elementwise kernel reads and writes element i of both arrays in one thread: the
    same memory (``p -= lr * p``) and separate memory are safe, a partial overlap is not."""

    def at(ptr: int, nbytes: int) -> Any:
        return types.SimpleNamespace(data=types.SimpleNamespace(ptr=ptr), nbytes=nbytes)

    assert cupy_backend._disjoint_or_same(at(1000, 400), at(1000, 400))
    assert cupy_backend._disjoint_or_same(at(1000, 400), at(1400, 400))
    assert cupy_backend._disjoint_or_same(at(1400, 400), at(1000, 400))
    assert not cupy_backend._disjoint_or_same(at(1000, 400), at(1396, 400))
    assert not cupy_backend._disjoint_or_same(at(1396, 400), at(1000, 400))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_fused_sgd_and_momentum_updates_match_the_formula(cp: Any, dtype: str) -> None:
    """SGD's update (and Momentum's, float32 and float64) is the fused kernel on a GPU: in
    place, within one rounding of ``p - lr * g`` (float16: computed in float32 and rounded
    once, as on NumPy); views and array rates take the generic update with the same values."""
    from nnbackend.namespace import ops_for

    xp = registry.get("cupy").load_namespace()
    rng = np.random.default_rng(0)
    p_host = rng.standard_normal((64, 33)).astype(dtype)
    g_host = rng.standard_normal((64, 33)).astype(dtype)
    lr = 0.0123
    wide = np.float32 if dtype == "float16" else dtype
    want = (p_host.astype(wide) - np.asarray(lr, wide) * g_host.astype(wide)).astype(dtype)
    g = cp.asarray(g_host)
    ops = ops_for(xp, g)
    methods = [ops.sub_scaled_] + ([ops.sub_times_] if dtype != "float16" else [])
    for method in methods:
        p = cp.asarray(p_host)
        pointer = p.data.ptr
        out = method(p, lr, g)
        assert out is p and p.data.ptr == pointer  # in place
        got = cp.asnumpy(p)
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        # The fused multiply-add rounds once, the formula twice (lr * g, then the
        # difference): they differ by up to one ulp of the largest magnitude involved, |p|,
        # |lr * g| or the result (many ulps of a result that cancels; one ulp of a result
        # that crosses a power of two, 0.99999994 + 1.2e-7 -> 1.0000001).
        scaled = np.abs(np.asarray(lr, wide) * g_host.astype(wide)).astype(dtype)
        top = np.maximum.reduce([np.abs(p_host), scaled, np.abs(want), np.abs(got)])
        assert np.all(diff <= np.spacing(top).astype(np.float64)), (
            f"{method.__name__}: {diff.max()} > one ulp of the operands"
        )
    assert ops._fused["update", np.dtype(dtype).char] is not None, "the kernel was refused"

    # A strided view and a 0-d array rate go the generic way, to the same values.
    full = cp.asarray(p_host)
    view = full[:, ::2]
    got = ops.sub_scaled_(view, lr, cp.ascontiguousarray(g[:, ::2]))
    np.testing.assert_allclose(
        cp.asnumpy(got).astype(np.float64),
        want[:, ::2].astype(np.float64),
        rtol=0,
        atol=float(np.max(np.spacing(np.abs(want)))) * 2,
    )
    q = cp.asarray(p_host)
    q = ops.sub_scaled_(q, cp.asarray(lr, dtype=dtype), g)
    np.testing.assert_allclose(
        cp.asnumpy(q).astype(np.float64),
        want.astype(np.float64),
        rtol=0,
        atol=float(np.max(np.spacing(np.abs(want)))) * 2,
    )


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_fused_relu_backward_gives_the_generic_bits(cp: Any, dtype: str) -> None:
    """ReLU's backward in one kernel: bit for bit the generic conversion and product, NaN
    and negative zero included."""
    from nnbackend.backends.ops import Ops
    from nnbackend.namespace import ops_for

    xp = registry.get("cupy").load_namespace()
    rng = np.random.default_rng(1)
    x = cp.asarray(rng.standard_normal((128, 65)).astype(dtype))
    gy_host = rng.standard_normal((128, 65)).astype(dtype)
    gy_host[0, :4] = [np.nan, np.inf, -0.0, -1.0]
    gy = cp.asarray(gy_host)
    ops = ops_for(xp, x)
    mask = ops.relu_mask(x)
    got = ops.leaky_relu_backward(gy, mask, 0.0)
    want = Ops.leaky_relu_backward(ops, gy, mask, 0.0)
    bits = {"float16": np.uint16, "float32": np.uint32, "float64": np.uint64}[dtype]
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(cp.asnumpy(got).view(bits), cp.asnumpy(want).view(bits))
    assert ops._fused["relu_backward", np.dtype(dtype).char] is not None, "kernel refused"
    leaky = ops.leaky_relu_backward(gy, mask, 0.1)  # other slopes: the generic kernels
    np.testing.assert_array_equal(
        cp.asnumpy(leaky), cp.asnumpy(Ops.leaky_relu_backward(ops, gy, mask, 0.1))
    )


def test_the_kernel_compile_script_writes_kernels_as_cupy_generates_them() -> None:
    """``scripts/compile_cupy_kernels.py`` compiles the fused kernels with NVRTC on a machine
    without a GPU; the code it compiles must be CuPy's shape: the placeholder a typedef,
    arrays as references to their element (inputs const), the rate by value."""
    spec = importlib.util.spec_from_file_location(
        "compile_cupy_kernels", ROOT / "scripts" / "compile_cupy_kernels.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def param(name: str, dtype: Any, ctype: str, const: bool) -> Any:
        return types.SimpleNamespace(name=name, dtype=dtype, ctype=ctype, is_const=const)

    kernel = types.SimpleNamespace(
        name="nnbackend_sub_scaled",
        in_params=(param("x", None, "T", True), param("a", np.float64, "double", True)),
        out_params=(param("y", None, "T", False),),
        preamble="// the preamble",
        operation="y = (T)fma(-(W)a, nnb_wide(x), nnb_wide(y));",
    )
    code = module.source(kernel, "float16")
    assert "typedef float16 T;" in code
    assert "nnbackend_sub_scaled(const T* _raw_x, const double a, T* _raw_y, long long n)" in code
    assert "const T &x = _raw_x[i];" in code and "T &y = _raw_y[i];" in code
    assert "_raw_a" not in code  # the rate is a scalar
    assert code.index("// the preamble") < code.index("__global__") < code.index("fma(")


# ---------------------------------------------------------------------------------- check script
def _load_script() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up while it loads
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["gpu_check"]
    return module


@pytest.fixture(scope="module")
def script() -> Any:
    return _load_script()


def test_replace_section(script: Any) -> None:
    section = f"{script.BEGIN}\n## GPU check\nnew\n{script.END}\n"
    assert script.replace_section("", section).startswith("# Performance\n\n<!-- gpu -->")
    page = "# Performance\n\nCPU numbers.\n"
    once = script.replace_section(page, section)
    assert once == page + "\n" + section
    page_with = once + "\n## After\n\nkept\n"
    twice = script.replace_section(page_with, section.replace("new", "newer"))
    assert twice == page_with.replace("new\n", "newer\n")
    assert twice.count(script.BEGIN) == 1 and twice.endswith("## After\n\nkept\n")
    with pytest.raises(ValueError, match="without a matching"):
        script.replace_section(f"x\n{script.BEGIN}\nno end\n", section)
    with pytest.raises(ValueError, match="starts with"):
        script.replace_section(page, "## no markers\n")


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="5">
<testcase classname="tests.test_a" name="test_ok" time="0.1"/>
<testcase classname="tests.test_a" name="test_bad" time="0.1">
  <failure message="assert 1 == 2">long traceback</failure></testcase>
<testcase classname="tests.test_a" name="test_broken" time="0.1">
  <error message="fixture failed">trace</error></testcase>
<testcase classname="tests.test_b" name="test_gpu[cupy]" time="0.0">
  <skipped type="pytest.skip" message="needs a usable CUDA GPU: no device">skip</skipped></testcase>
<testcase classname="tests.test_b" name="test_gpu2" time="0.0">
  <skipped type="pytest.skip" message="needs a usable CUDA GPU: no device">skip</skipped></testcase>
</testsuite></testsuites>
"""


def test_parse_junit_and_summary(script: Any, tmp_path: Path) -> None:
    path = tmp_path / "r.xml"
    path.write_text(JUNIT)
    counts, failures, skips = script.parse_junit(path)
    assert counts == {"passed": 1, "failed": 1, "errors": 1, "skipped": 2}
    assert [f["test"] for f in failures] == ["tests.test_a::test_bad", "tests.test_a::test_broken"]
    assert failures[0]["message"] == "assert 1 == 2" and failures[1]["kind"] == "error"
    assert skips == {"needs a usable CUDA GPU: no device": 2}
    out = "....\n== 3 failed, 1176 passed, 5 skipped, 2 errors in 61.20s (0:01:01) ==\n"
    assert script.parse_summary(out) == {"failed": 3, "passed": 1176, "skipped": 5, "errors": 2}
    assert script.parse_summary("1 passed in 0.1s") == {"passed": 1}
    assert script.parse_summary("killed") == {}


def test_python_path_carries_pure_wheels(script: Any, tmp_path: Path) -> None:
    (tmp_path / "array_api_compat-1.16.0-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "cupy_cuda13x-14.2.0-cp312-cp312-manylinux2014_x86_64.whl").write_bytes(b"")
    entries = script.python_path({"PYTHONPATH": "/elsewhere"}, wheels=tmp_path).split(":")
    assert entries[0] == str(ROOT / "src") and entries[-1] == "/elsewhere"
    assert str(tmp_path / "array_api_compat-1.16.0-py3-none-any.whl") in entries
    assert not any("cupy_cuda13x" in e for e in entries)  # compiled wheels do not zip-import


@pytest.mark.parametrize("dry_run", [True, False])
def test_plan(script: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dry_run: bool) -> None:
    monkeypatch.setattr(script, "gpu_benchmark_cases", lambda env: (["mlp_large"], "", True))
    steps, skipped = script.plan(dry_run=dry_run, workers=4, budget=285, tmp=tmp_path, env={})
    assert skipped == []
    assert [s.name for s in steps] == ["gpu-tests", "benchmarks", "suite"]
    backend = "numpy" if dry_run else "cupy"
    gpu_tests, bench, suite = steps
    for step in (gpu_tests, suite):
        assert step.env["NNBACKEND"] == backend == step.env["NNBACKEND_TEST_BACKENDS"]
        assert step.env["JAX_PLATFORMS"] == "cpu"  # jax tested on a CPU, as in CI
    assert gpu_tests.argv[-5:] == ["-m", "gpu", "--junitxml", str(gpu_tests.junit), "tests"]
    assert suite.argv[-4:-2] == ["-m", "not gpu"]  # each test runs once
    assert bench.argv[2:5] == ["benchmarks", "--gpu", "--no-check"]
    assert ("--dry-run" in bench.argv) is dry_run
    for step in (gpu_tests, suite):
        assert step.argv[step.argv.index("-n") + 1] == "4"
    assert suite.timeout == 0.0 and gpu_tests.timeout + bench.timeout < 285
    monkeypatch.setattr(script, "gpu_benchmark_cases", lambda env: ([], "no GPU case yet", False))
    steps, skipped = script.plan(dry_run=dry_run, workers=0, budget=285, tmp=tmp_path, env={})
    assert [s.name for s in steps] == ["gpu-tests", "suite"]
    assert "-n" not in steps[0].argv and "-n" not in steps[1].argv
    assert skipped[0].status == "skipped" and skipped[0].note == "no GPU case yet"
    steps, _ = script.plan(
        dry_run=dry_run, workers=0, budget=285, tmp=tmp_path, env={"JAX_PLATFORMS": "cuda"}
    )
    assert steps[0].env["JAX_PLATFORMS"] == "cuda"  # the caller's choice wins


def _report(script: Any, dry_run: bool) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "when": "2026-11-27T00:00:00+00:00",
        "seconds": 80.0,
        "preflight": {"python": "3.12.3", "nvidia_smi": "NVIDIA H100, 580", "modules": {}},
        "steps": [
            {
                "name": "suite",
                "title": "whole suite",
                "status": "failed",
                "seconds": 60.0,
                "counts": {"passed": 10, "failed": 1},
                "failures": [{"test": "t::x", "kind": "failure", "message": "boom\nmore"}],
                "note": "",
            }
        ],
        "benchmarks": [
            {
                "case": "mlp_large",
                "rows": [
                    {
                        "name": "speedup",
                        "value": 12.5,
                        "unit": "x",
                        "target": ">= 10",
                        "passed": True,
                    },
                    {"name": "f16", "value": 1.2, "unit": "x", "target": ">= 1.5", "passed": False},
                    {"name": "info", "value": 3.0, "unit": "ms", "target": None, "passed": None},
                ],
            }
        ],
    }


def test_render_and_write_docs(script: Any, tmp_path: Path) -> None:
    text = script.render_section(_report(script, dry_run=True))
    assert text.startswith(script.BEGIN) and text.rstrip().endswith(script.END)
    assert "**Dry run**" in text and "not GPU results" in text
    assert "| whole suite | failed | 10 passed, 1 failed | 60 |" in text
    assert "`t::x`: boom" in text and "more" not in text
    assert "GPU benchmark targets: 1 of 2 met" in text and "missed: mlp_large / f16" in text
    real = script.render_section(_report(script, dry_run=False))
    assert "Dry run" not in real and "NVIDIA H100" in real
    page = tmp_path / "performance.md"
    page.write_text("# Performance\n\nkept\n")
    json_path = tmp_path / "gpu_check.json"
    json_path.write_text(json.dumps(_report(script, dry_run=False)))
    assert script.main(["--render-docs", str(json_path), "--docs", str(page)]) == 0
    written = page.read_text()
    assert written.startswith("# Performance\n\nkept\n") and "## GPU check" in written
    assert script.main(["--render-docs", str(json_path), "--docs", str(page)]) == 0
    assert page.read_text() == written  # idempotent


def test_run_command_kills_on_timeout(script: Any) -> None:
    code, output, seconds = script.run_command(
        [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(30)"],
        {"PATH": "/usr/bin:/bin"},
        1.5,
    )
    assert code is None and "started" in output and seconds < 20
