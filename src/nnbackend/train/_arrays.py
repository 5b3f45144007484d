"""Small array helpers shared by the training modules: a Tensor's array, a float16 value
widened for summing, and a model's outputs computed in batches without gradients."""

from __future__ import annotations

from typing import Any

from nnbackend.autograd.mode import no_grad
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import ShapeError
from nnbackend.namespace import backend_for


def data(x: Any) -> Any:
    """The backend array of ``x`` (a Tensor's ``.data``, anything else as it is)."""
    return x.data if isinstance(x, Tensor) else x


def wide(xp: Any, a: Any) -> Any:
    """``a`` in a dtype wide enough to sum thousands of values (float16 -> float32)."""
    half = getattr(xp, "float16", None)
    return xp.astype(a, xp.float32) if half is not None and a.dtype == half else a


def predict(model: Any, x: Any, batch_size: int) -> Any:
    """``model``'s outputs for ``x`` in batches of ``batch_size`` rows, without gradients,
    concatenated on ``x``'s backend (the model's mode is the caller's business)."""
    x = data(x)
    xp = backend_for(x)[0]
    n = int(x.shape[0])
    if n == 0:
        raise ShapeError("predict: no inputs (x has 0 rows)")
    with no_grad():
        outputs = [
            data(model(x[lo : min(lo + batch_size, n), ...])) for lo in range(0, n, batch_size)
        ]
    return outputs[0] if len(outputs) == 1 else xp.concat(outputs, axis=0)
