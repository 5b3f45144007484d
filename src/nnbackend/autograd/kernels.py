"""Per-backend fast paths for the engine's hottest array calls.

The engine's fused nodes reduce small arrays several times a step; on NumPy, the namespace's
``sum`` and ``max`` go through two Python layers (array-api-compat's and NumPy's) that cost more
than the reduction itself. A backend may offer equivalents through
:attr:`nnbackend.Backend.kernels`; everything else uses the namespace.
"""

from __future__ import annotations

from typing import Any

from nnbackend.namespace import backend_for

__all__ = ["Kernels", "kernels"]


class Kernels:
    """``sum(x, axis=, keepdims=)`` and ``max(x, axis=, keepdims=)`` for floating arrays,
    ``astype(x, dtype)``, and the backend's ``on_host(x)``.

    Always pass ``axis`` (``None`` for all axes): NumPy's ``ufunc.reduce`` defaults to axis 0.
    """

    __slots__ = ("astype", "max", "on_host", "sum")

    def __init__(self, xp: Any, record: Any, overrides: dict[str, Any]) -> None:
        self.sum = overrides.get("sum", xp.sum)
        self.max = overrides.get("max", xp.max)
        self.astype = overrides.get("astype", xp.astype)
        self.on_host = record.on_host


_cache: dict[Any, Kernels] = {}


def kernels(xp: Any, array: Any) -> Kernels:
    """The kernels of the backend that owns ``array`` (whose namespace is ``xp``)."""
    found = _cache.get(xp)
    if found is None:
        record = backend_for(array)[1]
        found = _cache[xp] = Kernels(xp, record, record.kernels())
    return found
