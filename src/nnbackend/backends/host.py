"""Host-side NumPy helpers for the parts of nnbackend that work on host copies (random
numbers, gradient checks, checkpoints). NumPy is a run-time dependency, so this is always
importable; it is still imported lazily so that ``import nnbackend`` stays cheap."""

from __future__ import annotations

from typing import Any


def numpy() -> Any:
    """The NumPy module (the host array library)."""
    import numpy as np

    return np


def generator(seed: int | None) -> Any:
    """A NumPy ``Generator`` on PCG64: the same stream on every platform for one seed."""
    import numpy as np

    return np.random.Generator(np.random.PCG64(seed))
