"""Differentiable functions on Tensors (and backend arrays): the public home of the engine's
operation set, ``import nnbackend.functional as F``.

Every function keeps its input's dtype, uses only the Array API standard (so it runs on every
backend) and supports higher-order derivatives (``create_graph=True``). Python scalars mix
freely with arrays; two arrays must share a dtype (nothing is promoted silently).

>>> import nnbackend as nb
>>> import nnbackend.functional as F
>>> h = [nb.Tensor([1.0, 2.0]), nb.Tensor([3.0, 4.0])]
>>> F.flip(F.stack(h, axis=0), axis=0).tolist()
[[3.0, 4.0], [1.0, 2.0]]

Elementwise: :func:`exp`, :func:`log`, :func:`log1p`, :func:`expm1`, :func:`sqrt`,
:func:`abs`, :func:`sin`, :func:`cos`, :func:`tan`, :func:`tanh`, :func:`sigmoid`,
:func:`softplus`, :func:`clip`, :func:`maximum`, :func:`minimum`, :func:`where`,
:func:`power` (tensor exponents too), :func:`add`, :func:`sub`, :func:`mul`, :func:`div`,
:func:`neg`. Reductions (``axis``, ``keepdims``): :func:`sum`, :func:`mean`, :func:`max`,
:func:`min`, :func:`var`, :func:`std`, :func:`logsumexp`, :func:`prod`; :func:`argmax` and
:func:`argmin` (no gradient). Shape: :func:`reshape`, :func:`transpose`, :func:`permute`,
:func:`flatten`, :func:`squeeze`, :func:`expand_dims`, :func:`broadcast_to`, :func:`sum_to`,
:func:`concat`, :func:`stack`, :func:`split`, :func:`flip`, :func:`pad`, :func:`take`,
:func:`getitem` (negative steps too: ``x[:, ::-1]``); products: :func:`matmul` (batched),
:func:`einsum`; :func:`cast`.
"""

from __future__ import annotations

from nnbackend.autograd.functions import (
    abs,
    argmax,
    argmin,
    broadcast_to,
    clip,
    concat,
    cos,
    einsum,
    expand_dims,
    expm1,
    flatten,
    flip,
    getitem,
    log1p,
    logsumexp,
    maximum,
    min,
    minimum,
    pad,
    permute,
    prod,
    sigmoid,
    sin,
    softplus,
    split,
    sqrt,
    squeeze,
    stack,
    std,
    sum_to,
    take,
    tan,
    tanh,
    var,
    where,
)
from nnbackend.autograd.higher import grad
from nnbackend.autograd.ops import (
    add,
    cast,
    div,
    exp,
    log,
    matmul,
    max,
    mean,
    mul,
    neg,
    power,
    reshape,
    sub,
    sum,
    transpose,
)

__all__ = [
    "abs",
    "add",
    "argmax",
    "argmin",
    "broadcast_to",
    "cast",
    "clip",
    "concat",
    "cos",
    "div",
    "einsum",
    "exp",
    "expand_dims",
    "expm1",
    "flatten",
    "flip",
    "getitem",
    "grad",
    "log",
    "log1p",
    "logsumexp",
    "matmul",
    "max",
    "maximum",
    "mean",
    "min",
    "minimum",
    "mul",
    "neg",
    "pad",
    "permute",
    "power",
    "prod",
    "reshape",
    "sigmoid",
    "sin",
    "softplus",
    "split",
    "sqrt",
    "squeeze",
    "stack",
    "std",
    "sub",
    "sum",
    "sum_to",
    "take",
    "tan",
    "tanh",
    "transpose",
    "var",
    "where",
]
