"""The PyTorch backend, through array-api-compat's torch namespace.

Selecting a dtype never touches ``torch.set_default_dtype``: nnbackend's namespace passes the
dtype explicitly, so other torch code in the process is unaffected.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

from nnbackend.backends.base import Backend, Capabilities


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
    empty_cache=empty_cache,
    on_host=lambda array: array.device.type == "cpu",
    install_hint="pip install 'nnbackend[torch]'",
    description="PyTorch tensors (CPU here; CUDA devices where present)",
)
