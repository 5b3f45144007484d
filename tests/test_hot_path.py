"""The engine's per-op functions build no closure cells: on Python 3.11 a function whose
local is read by a nested function, lambda or comprehension builds that cell on every call,
whether or not the nested code runs (four such functions cost the tiny step 3% of its
interpreter instructions). Cache misses build with ``functools.partial`` or in a method of
their own instead."""

from __future__ import annotations

from typing import Any

import pytest

from nnbackend import optim
from nnbackend.autograd import function, tensor
from nnbackend.backends import numpy as numpy_backend
from nnbackend.backends import ops
from nnbackend.nn import functional as F
from nnbackend.nn import layers, losses, module

HOT: list[Any] = [
    function.Function.__call__,
    function.run_backward,
    function.as_array,
    function.as_arrays,
    tensor.Tensor.backward,
    tensor.Tensor.zero_grad,
    F.linear,
    F.mixed_compute,
    F.Linear.forward,
    F.Linear.replay_forward,
    F.Linear.backward,
    F.Sigmoid.forward,
    F.Sigmoid.backward,
    F.SoftmaxCrossEntropy.forward,
    F.SoftmaxCrossEntropy.replay_forward,
    F.SoftmaxCrossEntropy.backward,
    F.softmax_cross_entropy,
    layers.Linear.forward,
    losses.SoftmaxCrossEntropy.forward,
    module.Sequential.forward,
    optim.SGD.step.__wrapped__,  # type: ignore[attr-defined]
    optim.Optimizer.zero_grad,
    ops.Ops.one,
    ops.Ops.class_range,
    ops.Ops.one_hot,
    ops.Ops.compute,
    ops.Ops.compute_product,
    ops.Ops._zero,
    numpy_backend.NumpyOps.sub_scaled_,
    numpy_backend.NumpyOps.row_max,
    numpy_backend.NumpyOps.row_sum,
    numpy_backend.NumpyOps.one_hot,
    numpy_backend.NumpyOps.sigmoid,
    numpy_backend.NumpyOps.column_sum,
]


@pytest.mark.parametrize("fn", HOT, ids=lambda f: f.__qualname__)
def test_hot_path_functions_build_no_closure_cells(fn: Any) -> None:
    assert fn.__code__.co_cellvars == (), (
        f"{fn.__qualname__} builds closure cells {fn.__code__.co_cellvars} on every call; "
        "move the nested function, lambda or comprehension that reads them out of it"
    )
