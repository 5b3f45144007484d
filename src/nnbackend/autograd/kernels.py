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
    """``sum(x, axis=, keepdims=)`` and ``max(x, axis=, keepdims=)`` for floating arrays.

    Always pass ``axis`` (``None`` for all axes): NumPy's ``ufunc.reduce`` defaults to axis 0.
    """

    __slots__ = ("max", "sum")

    def __init__(self, xp: Any, overrides: dict[str, Any]) -> None:
        self.sum = overrides.get("sum", xp.sum)
        self.max = overrides.get("max", xp.max)


_cache: dict[Any, Kernels] = {}


def kernels(xp: Any, array: Any) -> Kernels:
    """The kernels of the backend that owns ``array`` (whose namespace is ``xp``)."""
    found = _cache.get(xp)
    if found is None:
        found = _cache[xp] = Kernels(xp, backend_for(array)[1].kernels())
    return found
