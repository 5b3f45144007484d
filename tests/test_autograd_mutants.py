"""What mutation testing of ``autograd/`` found unchecked (issue #21).

Each test checks a behaviour of the engine that a sampled mutant changed without any test
failing: gradients checked with random (not unit) weights and N-D inputs, the order and the
summation of a backward pass through shared subgraphs, what ``retain_grad`` and
``create_graph`` keep, the recording switch restored on errors, the messages of refusals, and
what makes a compiled step record again. numpy and array_api_strict only (torch float16
deadlocks in mutmut's forked children).
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend.autograd.tensor import Tensor
from nnbackend.namespace import backend_for
from nnbackend.nn import functional as NF

namespace_module = importlib.import_module("nnbackend.namespace")


def host(x: Any) -> np.ndarray:
    data = x.data if isinstance(x, Tensor) else x
    return np.asarray(backend_for(data)[1].to_host(data))


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


def rand(xp: Any, *shape: int, seed: int = 0, low: float = -1.0, high: float = 1.0) -> Any:
    values = np.random.default_rng(seed).uniform(low, high, size=shape)
    return xp.asarray(values.tolist(), dtype=xp.float64)


# -- second derivatives with a cold ops cache ---------------------------------------------------
def test_layer_norm_second_derivatives_with_a_cold_ops_cache(xp64: Any) -> None:
    """The graph backward of layer_norm looks its backend's ops up itself: it must pass an
    array, not the Tensor gradient (which only worked while the cache was warm)."""
    x = Tensor(rand(xp64, 2, 4, seed=1), requires_grad=True)
    w = Tensor(rand(xp64, 4, seed=2), requires_grad=True)
    b = Tensor(rand(xp64, 4, seed=3), requires_grad=True)
    y = (NF.layer_norm(x, w, b) ** 2).sum()
    namespace_module._ops.clear()  # as a registry change does
    (gx,) = nb.grad(y, x, create_graph=True)
    (ggx,) = nb.grad(gx.sum(), x)
    assert ggx.shape == (2, 4)
