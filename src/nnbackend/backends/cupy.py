"""The CuPy backend (NVIDIA GPUs), through array-api-compat's CuPy namespace.

Availability is probed for real: importing cupy succeeds on machines without a GPU, so the
probe asks the CUDA runtime for its driver and device count and says which of "cupy not
installed", "no CUDA driver" or "no device" holds.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping
from typing import Any

from nnbackend.backends.base import Backend, Capabilities

INSTALL_HINT = "pip install 'nnbackend[gpu]' (or the cupy-cudaXXx wheel matching your CUDA)"


def load_namespace() -> Any:
    import array_api_compat.cupy as xp

    return xp


def diagnose(
    environ: Mapping[str, str],
    cupy_installed: bool,
    driver_version: Callable[[], int],
    device_count: Callable[[], int],
) -> str | None:
    """Say why cupy cannot run here, or return ``None`` when it can.

    The checks run in the order a user fixes them: the package, then the driver, then a
    device. ``driver_version`` and ``device_count`` are the CUDA runtime's calls; any exception
    they raise is reported, never swallowed.
    """
    if not cupy_installed:
        return f"cupy is not installed: {INSTALL_HINT}"
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return (
            f"no device: CUDA_VISIBLE_DEVICES={visible!r} hides every GPU; "
            "unset it or list a device index (CUDA_VISIBLE_DEVICES=0)"
        )
    try:
        driver = driver_version()
    except Exception as exc:
        return (
            f"no CUDA driver: the CUDA runtime could not load it ({type(exc).__name__}: {exc}); "
            "install the NVIDIA driver, or use NNBACKEND=numpy"
        )
    if not driver:
        return "no CUDA driver: the CUDA runtime reports driver version 0; install the driver"
    try:
        count = device_count()
    except Exception as exc:
        return (
            f"no device: the CUDA runtime found none ({type(exc).__name__}: {exc}); "
            "check nvidia-smi and CUDA_VISIBLE_DEVICES"
        )
    if count < 1:
        return "no device: the CUDA driver is present but reports 0 GPUs; check nvidia-smi"
    return None


def probe() -> str | None:
    installed = importlib.util.find_spec("cupy") is not None

    def driver_version() -> int:
        import cupy

        return int(cupy.cuda.runtime.driverGetVersion())

    def device_count() -> int:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())

    try:
        return diagnose(os.environ, installed, driver_version, device_count)
    except ImportError as exc:  # cupy present but its CUDA libraries are not
        return f"cupy is installed but fails to import ({exc}); {INSTALL_HINT}"


def to_host(x: Any) -> Any:
    return x.get()


def from_host(a: Any, device: Any = None) -> Any:
    import cupy

    if device is None:
        return cupy.asarray(a)
    with device:
        return cupy.asarray(a)


def devices() -> list[str]:
    import cupy

    return [f"cupy:{i}" for i in range(cupy.cuda.runtime.getDeviceCount())]


def parse_device_index(name: str) -> int:
    """``"0"``, ``"cuda:0"`` or ``"gpu:0"`` -> 0; anything else raises ``ValueError``."""
    text = name.split(":", 1)[1] if ":" in name else name
    if not text.isdigit():
        raise ValueError(f"a cupy device is an index such as 'cupy:0', got {name!r}")
    return int(text)


def device(name: str) -> Any:
    index = parse_device_index(name)  # a bad name is reported even where cupy is missing
    import cupy

    return cupy.cuda.Device(index)


def version() -> str | None:
    import cupy

    return str(cupy.__version__)


def scatter_add(target: Any, indices: Any, values: Any) -> Any:
    # cupyx.scatter_add, never cupy.scatter_add: CuPy removed the latter in v8.
    import cupyx

    cupyx.scatter_add(target, indices, values)
    return target


def facts() -> dict[str, Any]:
    import cupy

    runtime = cupy.cuda.runtime
    gpus = []
    for index in range(runtime.getDeviceCount()):
        props = runtime.getDeviceProperties(index)
        name = props["name"]
        gpus.append(
            {
                "index": index,
                "name": name.decode() if isinstance(name, bytes) else str(name),
                "memory_bytes": int(props["totalGlobalMem"]),
                "compute_capability": f"{props['major']}.{props['minor']}",
            }
        )
    pool = cupy.get_default_memory_pool()
    return {
        "cuda_runtime": runtime.runtimeGetVersion(),
        "cuda_driver": runtime.driverGetVersion(),
        "gpus": gpus,
        "memory_pool_used_bytes": int(pool.used_bytes()),
        "memory_pool_total_bytes": int(pool.total_bytes()),
    }


BACKEND = Backend(
    name="cupy",
    load_namespace=load_namespace,
    probe=probe,
    array_modules=("cupy",),
    to_host=to_host,
    from_host=from_host,
    devices=devices,
    device=device,
    capabilities=Capabilities(float16=True, inplace=True, fast_float16_matmul=True),
    version=version,
    facts=facts,
    scatter_add=scatter_add,
    on_host=lambda array: False,
    install_hint=INSTALL_HINT,
    description="CuPy on an NVIDIA GPU",
)
