"""The array-api-strict backend: a minimal, standard-only namespace used to prove that the
engine relies on nothing outside the Array API standard. It has no float16."""

from __future__ import annotations

import importlib.util
from typing import Any

from nnbackend.backends.base import Backend, Capabilities


def load_namespace() -> Any:
    import array_api_strict as xp

    return xp


def probe() -> str | None:
    if importlib.util.find_spec("array_api_strict") is None:
        return "array-api-strict is not installed: pip install 'nnbackend[strict]'"
    return None


def to_host(x: Any) -> Any:
    import numpy as np

    return np.from_dlpack(x)


def from_host(a: Any, device: Any = None) -> Any:
    import array_api_strict as xp

    return xp.asarray(a, device=device)


def devices() -> list[str]:
    import array_api_strict as xp

    return [str(d).split("'")[1] for d in xp.__array_namespace_info__().devices()]


def device(name: str) -> Any:
    import array_api_strict as xp

    if name == "cpu":
        name = "CPU_DEVICE"
    for candidate in xp.__array_namespace_info__().devices():
        if str(candidate).split("'")[1] == name:
            return candidate
    raise ValueError(f"array_api_strict has no device {name!r}; it has {devices()}")


def version() -> str | None:
    import array_api_strict as xp

    return str(xp.__version__)


BACKEND = Backend(
    name="array_api_strict",
    load_namespace=load_namespace,
    probe=probe,
    array_modules=("array_api_strict",),
    to_host=to_host,
    from_host=from_host,
    devices=devices,
    device=device,
    # Strict arrays support __setitem__, but nothing else in-place beyond the standard.
    capabilities=Capabilities(float16=False, inplace=True, fast_float16_matmul=False),
    version=version,
    install_hint="pip install 'nnbackend[strict]'",
    description="array-api-strict: the standard and nothing more (conformance)",
)
