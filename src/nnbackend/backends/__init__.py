"""Adapters: the only part of nnbackend that imports array libraries.

Each module describes one library as a :class:`~nnbackend.backends.base.Backend` record whose
callables import the library lazily. :data:`BUILTIN` lists the records nnbackend ships.
"""

from __future__ import annotations

from nnbackend.backends import cupy, jax, numpy, strict, torch
from nnbackend.backends.base import Backend, Capabilities

BUILTIN: tuple[Backend, ...] = (
    numpy.BACKEND,
    cupy.BACKEND,
    torch.BACKEND,
    strict.BACKEND,
    jax.BACKEND,
)

__all__ = ["BUILTIN", "Backend", "Capabilities"]
