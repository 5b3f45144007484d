"""Every path of ``SGD.step`` gives ``p - lr * g`` exactly as NumPy computes it (issue #21:
mutation testing of optim.py found the float16 block loop and the scratch-buffer path, taken
only by large parameters, checked by nothing): float16 parameters updated in float32 and
rounded once, a block of rows at a time; large float32/float64 parameters through a scratch
buffer shared between parameters; a learning rate changed between steps."""

from __future__ import annotations

from typing import Any

import numpy as np

from nnbackend import nn, optim, registry
from nnbackend.backends.numpy import _CHUNK, _SCRATCH_MIN
from nnbackend.namespace import backend_for, ops_for


def _host(a: Any) -> np.ndarray:
    a = getattr(a, "data", a)
    return np.array(registry.get(registry.backend_of(a)).to_host(a), copy=True)


# Shapes that take every path: a 0-d and a small parameter, one above the scratch threshold,
# and one of several float16 row blocks (more rows than fit one _CHUNK).
SHAPES = [(), (3, 2), (_SCRATCH_MIN // 8 + 3, 8), (2 * _CHUNK // 300 + 7, 300)]


def test_every_sgd_path_matches_numpy(xp: Any, dtype: str) -> None:
    rng = np.random.default_rng(0)
    np_dtype = np.dtype(dtype)
    values = [rng.standard_normal(s).astype(np_dtype) for s in SHAPES]
    params = [nn.Parameter(xp.asarray(v.copy())) for v in values]  # updated in place
    opt = optim.SGD(params, lr=0.1)
    for lr in (0.1, 0.03, 0.25):  # changed between steps: never a stale lr * g
        opt.lr = lr
        grads = [rng.standard_normal(s).astype(np_dtype) for s in SHAPES]
        for p, g in zip(params, grads, strict=True):
            p.grad = xp.asarray(g)
        opt.step()
        for i, (v, g) in enumerate(zip(values, grads, strict=True)):
            data = params[i].data
            wide = ops_for(backend_for(data)[0], data).compute_dtype(data.dtype, data)
            if np_dtype == np.float16 and wide != data.dtype:  # in float32, rounded once
                want = v.astype(np.float32) - np.float32(lr) * g.astype(np.float32)
                want = want.astype(np.float16)
            else:  # in the dtype itself (float16 where the backend computes it natively)
                want = v - np_dtype.type(lr) * g
            got = _host(params[i])
            assert got.dtype == np_dtype and got.shape == v.shape
            eps = float(np.finfo(np_dtype).eps)
            # bitwise where the backend rounds as NumPy does; one ulp of slack for torch's FMA
            np.testing.assert_allclose(got, want, rtol=eps, atol=eps * 1e-3, err_msg=str(i))
            values[i] = got
    assert opt.steps == 3


def test_a_parameter_without_gradient_is_left_alone(xp: Any) -> None:
    a = nn.Parameter(xp.asarray(np.ones(_SCRATCH_MIN + 1)))
    b = nn.Parameter(xp.asarray(np.ones(_SCRATCH_MIN + 1)))
    opt = optim.SGD([a, b], lr=0.5)
    a.grad = xp.asarray(np.full(_SCRATCH_MIN + 1, 2.0))
    opt.step()
    assert np.all(_host(a) == 0.0) and np.all(_host(b) == 1.0)
    b.grad, a.grad = xp.asarray(np.full(_SCRATCH_MIN + 1, 4.0)), None
    opt.step()  # b now uses the scratch buffer a used: a's values must not leak into it
    assert np.all(_host(a) == 0.0) and np.all(_host(b) == -1.0)
