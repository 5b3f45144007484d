"""The PyTorch backend, through array-api-compat's torch namespace.

Selecting a dtype never touches ``torch.set_default_dtype``: nnbackend's namespace passes the
dtype explicitly, so other torch code in the process is unaffected.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from nnbackend.backends.base import Backend, Capabilities
from nnbackend.backends.ops import Ops
from nnbackend.errors import ArgumentError


def load_namespace() -> Any:
    import array_api_compat.torch as xp

    return xp


def probe() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed: pip install 'nnbackend[torch]'"
    try:
        import torch  # noqa: F401
    except Exception as exc:  # a broken install raises all sorts of errors
        return f"torch is installed but fails to import ({type(exc).__name__}: {exc})"
    return None


def to_host(x: Any) -> Any:
    return x.detach().cpu().numpy()


def from_host(a: Any, device: Any = None) -> Any:
    import torch

    t = torch.from_numpy(a)
    return t if device is None else t.to(device)


def devices() -> list[str]:
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return names


def device(name: str) -> Any:
    import torch

    try:
        return torch.device(name)
    except RuntimeError as exc:  # torch says RuntimeError; the Backend contract is ValueError
        raise ValueError(str(exc)) from None


def version() -> str | None:
    import torch

    return str(torch.__version__)


def scatter_add(target: Any, indices: Any, values: Any) -> Any:
    return target.index_add_(0, indices, values)


def convolution(
    x: Any,
    w: Any,
    b: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    transposed: bool,
    output_padding: Any,
    groups: int,
) -> Any:
    """torch's own convolution (oneDNN on a CPU, cuDNN on a CUDA device) for
    ``nnbackend.nn.conv2d`` / ``conv_transpose2d``: same weight layout, same arguments."""
    import torch

    return torch.ops.aten.convolution(
        x, w, b, list(stride), list(padding), list(dilation), transposed,
        list(output_padding), groups,
    )  # fmt: skip


def convolution_backward(
    gy: Any,
    x: Any,
    w: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    transposed: bool,
    output_padding: Any,
    groups: int,
    mask: Any,
) -> Any:
    """``(gx, gw, gb)`` of :func:`convolution`, ``None`` where ``mask`` says not needed."""
    import torch

    bias_sizes = [w.shape[1] * groups if transposed else w.shape[0]] if mask[2] else None
    return torch.ops.aten.convolution_backward(
        gy.contiguous(), x, w, bias_sizes, list(stride), list(padding), list(dilation),
        transposed, list(output_padding), groups, list(mask),
    )  # fmt: skip


def max_pool2d(x: Any, kernel: Any, stride: Any, padding: Any, dilation: Any) -> Any:
    """``(y, indices)``: torch's max pooling (the first maximum of each window wins)."""
    import torch

    return torch.ops.aten.max_pool2d_with_indices(
        x, list(kernel), list(stride), list(padding), list(dilation), False
    )


def max_pool2d_backward(
    gy: Any, x: Any, kernel: Any, stride: Any, padding: Any, dilation: Any, indices: Any
) -> Any:
    import torch

    return torch.ops.aten.max_pool2d_with_indices_backward(
        gy, x, list(kernel), list(stride), list(padding), list(dilation), False, indices
    )


def kernels() -> dict[str, Any]:
    """The convolution and max pooling as torch computes them (see :mod:`nnbackend.nn.conv`
    and :mod:`nnbackend.nn.pooling`)."""
    return {
        "convolution": convolution,
        "convolution_backward": convolution_backward,
        "max_pool2d": max_pool2d,
        "max_pool2d_backward": max_pool2d_backward,
    }


FLOAT16_ENV = "NNBACKEND_FLOAT16_COMPUTE"
_FLOAT16_CHOICES = ("native", "float32")
# The probe's product: (64, 256) @ (256, 128), about two million multiply-adds: a fraction of a
# millisecond in float32, and big enough that a CPU without fast float16 shows it.
PROBE_SHAPE = (64, 256, 128)
# float16 counts as fast where its product takes at most this many times the float32 one.
PROBE_RATIO = 1.25
_probed: dict[str, tuple[str, float]] = {}  # device type -> (decision, measured ratio)


def float16_setting(environ: Mapping[str, str] = os.environ) -> str | None:
    """``NNBACKEND_FLOAT16_COMPUTE`` ("native" or "float32"), or ``None`` when unset; any
    other value raises :class:`~nnbackend.errors.ArgumentError`."""
    value = environ.get(FLOAT16_ENV, "").strip().lower()
    if not value:
        return None
    if value not in _FLOAT16_CHOICES:
        raise ArgumentError(
            f"{FLOAT16_ENV}={value!r} is not a float16 compute mode; use one of "
            f"{', '.join(_FLOAT16_CHOICES)} (or unset it to measure)"
        )
    return value


def probe_float16(device: Any = "cpu", rounds: int = 5) -> tuple[str, float]:
    """Time a float16 against a float32 matrix product (``PROBE_SHAPE``) on ``device`` and
    say ``("native", ratio)`` where float16 takes at most ``PROBE_RATIO`` times as long,
    else ``("float32", ratio)``. Interleaved rounds, the fastest of each kept; stops early
    once float16 is clearly slow (a CPU without fast float16 runs it 20-30x slower). On a
    CPU it runs on one thread: the ratio per core is what matters, and a thread descheduled
    by another busy process would stall a multi-threaded product for milliseconds."""
    import torch

    if torch.device(device).type == "cpu":
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return _probe(torch, device, rounds)
        finally:
            torch.set_num_threads(threads)
    return _probe(torch, device, rounds)


def _probe(torch: Any, device: Any, rounds: int) -> tuple[str, float]:
    m, k, n = PROBE_SHAPE
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    a32 = torch.rand((m, k), generator=gen).to(dev)
    b32 = torch.rand((k, n), generator=gen).to(dev)
    a16, b16 = a32.half(), b32.half()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    best = {torch.float32: float("inf"), torch.float16: float("inf")}
    for a, b in ((a32, b32), (a16, b16)):  # warm-up: first calls pick kernels, fault pages
        a @ b
    sync()
    for _ in range(rounds):
        for a, b in ((a32, b32), (a16, b16)):
            start = time.perf_counter()
            a @ b
            sync()
            best[a.dtype] = min(best[a.dtype], time.perf_counter() - start)
        if best[torch.float16] > 4 * PROBE_RATIO * best[torch.float32]:
            break  # clearly slow: no need to measure on
    ratio = best[torch.float16] / max(best[torch.float32], 1e-9)
    return ("native" if ratio <= PROBE_RATIO else "float32"), ratio


def float16_decision(device_type: str = "cpu") -> tuple[str, str]:
    """``(mode, why)`` for float16 on torch devices of ``device_type``: the environment
    variable if set, else CUDA native, else the probe's verdict (measured once per process
    and device type)."""
    setting = float16_setting()
    if setting is not None:
        return setting, f"set by {FLOAT16_ENV}"
    if device_type != "cpu":
        return "native", f"{device_type}: native float16"
    if device_type not in _probed:
        _probed[device_type] = probe_float16(device_type)
    mode, ratio = _probed[device_type]
    return mode, f"probe: float16 product {ratio:.2f}x float32 on the {device_type}"


class TorchOps(Ops):
    """torch's operations: ``index_add_`` for scatter-add, ``matmul`` with ``out=``, float16
    decided per device (CUDA native; on a CPU by :func:`probe_float16`, unless
    ``NNBACKEND_FLOAT16_COMPUTE`` says), and random bits drawn on CUDA devices."""

    float16_compute = "probe"
    small_float16_native = False
    float16_elementwise_native = True

    def __init__(self, xp: Any, record: Any) -> None:
        super().__init__(xp, record)
        self._slow_by_device: dict[str, Any] = {}

    def float16_policy(self, x: Any = None) -> str:
        """``"native"`` or ``"float32"`` for float16 arrays on ``x``'s device type."""
        device = getattr(x, "device", None)
        return float16_decision(getattr(device, "type", "cpu"))[0]

    def _slow_dtype(self, x: Any) -> Any:
        """Per device type (a CPU may compute float16 in float32 while a CUDA device of the
        same process computes it natively): decided at the first float16 question there."""
        device = getattr(x, "device", None)
        kind = getattr(device, "type", "cpu")
        try:
            return self._slow_by_device[kind]
        except KeyError:
            pass
        if self.float16 is None:
            slow = None
        else:
            slow = self.float16 if self.float16_policy(x) == "float32" else None
        self._slow_by_device[kind] = slow
        return slow

    def _store_narrow(self, y: Any, wide: Any) -> Any:
        """``wide`` rounded into ``y`` by one ``copy_`` (no float16 temporary)."""
        y.copy_(wide)
        return y

    def _to_wide(self, x: Any, out: Any = None) -> Any:
        """float16 -> float32, into ``out`` (a float32 array of ``x``'s shape) when given."""
        if out is not None and out.shape == x.shape:
            return out.copy_(x)
        return x.to(self.float32)

    def matmul(self, a: Any, b: Any, out: Any = None) -> Any:
        """``a @ b``, into ``out`` when given (``torch.matmul(out=)``)."""
        if out is not None:
            import torch

            return torch.matmul(a, b, out=out)
        return a @ b

    def uniform(self, generator: Any, shape: tuple[int, ...], like: Any) -> Any:
        """On a CPU the host stream (as every host backend); on a CUDA device, numbers drawn
        there by a torch generator seeded from ``generator`` (reproducible per seed, but a
        different stream from the host's)."""
        if like.device.type == "cpu":
            return super().uniform(generator, shape, like)
        import torch

        seed = int(generator.integers(0, 2**63 - 1))
        gen = torch.Generator(device=like.device).manual_seed(seed)
        return torch.rand(shape, generator=gen, device=like.device, dtype=torch.float32)


def empty_cache() -> dict[str, int]:
    """Return the free blocks of torch's CUDA caching allocator (current device) to the
    driver. ``{}`` where torch was never imported or never touched CUDA in this process
    (nothing to free, and nothing is initialised for it)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return {}
    before = int(torch.cuda.memory_reserved())
    torch.cuda.empty_cache()
    after = int(torch.cuda.memory_reserved())
    return {"freed_bytes": before - after, "held_bytes": after}


def facts() -> dict[str, Any]:
    import torch

    return {"threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}


BACKEND = Backend(
    name="torch",
    load_namespace=load_namespace,
    probe=probe,
    array_modules=("torch",),
    to_host=to_host,
    from_host=from_host,
    devices=devices,
    device=device,
    capabilities=Capabilities(float16=True, inplace=True, fast_float16_matmul=False),
    version=version,
    facts=facts,
    scatter_add=scatter_add,
    kernels=kernels,
    ops=TorchOps,
    empty_cache=empty_cache,
    on_host=lambda array: array.device.type == "cpu",
    install_hint="pip install 'nnbackend[torch]'",
    description="PyTorch tensors (CPU here; CUDA devices where present)",
)
