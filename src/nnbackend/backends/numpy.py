"""The NumPy backend (the default), through array-api-compat's NumPy namespace."""

from __future__ import annotations

import importlib.util
from typing import Any

from nnbackend.backends.base import Backend, Capabilities


def load_namespace() -> Any:
    import array_api_compat.numpy as xp

    return xp


def probe() -> str | None:
    for module, package in (("numpy", "numpy"), ("array_api_compat", "array-api-compat")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: pip install {package}"
    return None


def to_host(x: Any) -> Any:
    import numpy as np

    return np.asarray(x)


def from_host(a: Any, device: Any = None) -> Any:
    return a


def device(name: str) -> Any:
    if name != "cpu":
        raise ValueError(f"numpy has one device, 'cpu'; got {name!r}")
    return "cpu"


def version() -> str | None:
    import numpy as np

    return np.__version__


def scatter_add(target: Any, indices: Any, values: Any) -> Any:
    import numpy as np

    np.add.at(target, indices, values)
    return target


def kernels() -> dict[str, Any]:
    import numpy as np

    return {"sum": np.add.reduce, "max": np.maximum.reduce, "astype": np.ndarray.astype}


def blas_facts() -> list[dict[str, Any]]:
    """The BLAS libraries NumPy runs on: threadpoolctl's view, or NumPy's build record."""
    import numpy as np

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        found = [
            {
                "library": entry.get("internal_api"),
                "version": entry.get("version"),
                "threads": entry.get("num_threads"),
                "kernel": entry.get("architecture"),
                "source": "threadpoolctl",
            }
            for entry in threadpool_info()
            if entry.get("user_api") == "blas"
        ]
        if found:
            return found
    config = np.show_config(mode="dicts")
    blas = config.get("Build Dependencies", {}).get("blas", {})
    return [
        {
            "library": blas.get("name"),
            "version": blas.get("version"),
            "threads": None,
            "kernel": None,
            "source": "numpy build config (install threadpoolctl for run-time facts)",
        }
    ]


def facts() -> dict[str, Any]:
    return {"blas": blas_facts()}


BACKEND = Backend(
    name="numpy",
    load_namespace=load_namespace,
    probe=probe,
    array_modules=("numpy",),
    to_host=to_host,
    from_host=from_host,
    device=device,
    capabilities=Capabilities(float16=True, inplace=True, fast_float16_matmul=False),
    version=version,
    facts=facts,
    scatter_add=scatter_add,
    kernels=kernels,
    install_hint="pip install numpy array-api-compat",
    description="NumPy on the CPU (default)",
)
