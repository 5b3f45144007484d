"""Review of the backends' ops classes: the same ops method, the same input, the same result on
every backend (and on every path inside one backend: small and large, float16 computed
natively or in float32)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim, registry
from nnbackend.namespace import backend_for, ops_for


def _ops(xp: Any, like: Any) -> Any:
    return ops_for(backend_for(like)[0], like)


def _need(backend: str, *dtypes: str) -> None:
    """Skip where ``backend`` cannot hold one of ``dtypes`` here (float16 on
    array_api_strict, float64 on jax without x64)."""
    record = registry.get(backend)
    for name in dtypes:
        if name == "float16" and not record.capabilities.float16:
            pytest.skip(f"backend {backend!r} has no float16")
        reason = None if record.dtype_reason is None else record.dtype_reason(name)
        if reason is not None:
            pytest.skip(f"backend {backend!r} has no {name} here: {reason}")


@pytest.mark.parametrize("size", [8, 4096], ids=["small", "large"])
def test_relu_backward_of_nonfinite_float16_gradients_is_mask_times_gy(
    backend: str, size: int
) -> None:
    """ReLU's backward is ``gy`` times the mask as 0/1 factors on every path: where the mask
    is off, an infinite or NaN ``gy`` gives NaN (0 * inf). NumPy's float16 path for 1024
    elements and more (computed wide, bit for bit) gave 0 there, so the result depended on
    the array's size and differed from torch, jax and CuPy's fused kernel."""
    _need(backend, "float16")
    pattern_x = np.array([-3.0, -0.0, 0.0, 2.0, -1.0, 5.0, -np.inf, np.nan], np.float16)
    pattern_g = np.array([np.inf, np.nan, -np.inf, 1.5, -2.0, np.inf, 3.0, -np.inf], np.float16)
    x = np.resize(pattern_x, (size // 8, 8))
    gy = np.resize(pattern_g, (size // 8, 8))
    with nb.using(backend=backend, dtype="float16"):
        xp = nb.namespace()
        xa, ga = xp.asarray(x), xp.asarray(gy)
        ops = _ops(xp, xa)
        got = np.asarray(ops.host_copy(ops.leaky_relu_backward(ga, ops.relu_mask(xa), 0.0)))
    with np.errstate(invalid="ignore"):
        want = (x > 0).astype(np.float16) * gy
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, want)  # (NaN where want is NaN)


@pytest.mark.parametrize(
    ("param", "grad"), [("float32", "float64"), ("float16", "float32"), ("float64", "float32")]
)
def test_sgd_with_a_gradient_of_another_dtype_keeps_the_parameters_dtype(
    backend: str, param: str, grad: str
) -> None:
    """SGD calls ``ops.sub_scaled_`` with the gradient as set (no ``apply_update``
    conversion). A gradient of another dtype set by hand is subtracted in the promoted dtype
    and stored in the parameter's, as NumPy's and torch's in-place updates do: jax
    (rebinding) made a float32 parameter float64 (and float16 float32), and
    array_api_strict raised a TypeError from its in-place subtraction."""
    _need(backend, param, grad)
    rng = np.random.default_rng(3)
    with nb.using(backend=backend, dtype=param):
        xp = nb.namespace()
        model = nn.Linear(3, 2)
        opt = optim.SGD(model.parameters(), lr=0.1)
        before, grads = [], []
        for p in model.parameters():
            g = rng.standard_normal(tuple(p.data.shape)).astype(grad)
            p.grad = xp.asarray(g)
            before.append(np.asarray(_ops(xp, p.data).host_copy(p.data)))
            grads.append(g)
        opt.step()
        for p, old, g in zip(model.parameters(), before, grads, strict=True):
            got = np.asarray(_ops(xp, p.data).host_copy(p.data))
            assert got.dtype == np.dtype(param), (backend, got.dtype)
            wide = np.promote_types(param, grad)
            step = g * g.dtype.type(0.1)  # (a Python float takes the gradient's dtype)
            want = (old.astype(wide) - step.astype(wide)).astype(param)
            np.testing.assert_array_equal(got, want)
