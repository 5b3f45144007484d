"""The engine: a define-by-run graph with reverse-mode backward.

Public names: :class:`Tensor`, :class:`Function`, :func:`no_grad`, :func:`enable_grad`,
:func:`grad` (gradients as values, higher-order with ``create_graph=True``),
:func:`gradcheck`, :func:`gradgradcheck`, :func:`to_dot` and :func:`detect_anomaly`.
"""

from __future__ import annotations

from nnbackend.autograd.anomaly import AnomalyError, detect_anomaly
from nnbackend.autograd.function import Function
from nnbackend.autograd.gradcheck import gradcheck, gradgradcheck
from nnbackend.autograd.graph import to_dot
from nnbackend.autograd.higher import grad
from nnbackend.autograd.mode import enable_grad, is_grad_enabled, no_grad
from nnbackend.autograd.tensor import Tensor, as_tensor

__all__ = [
    "AnomalyError",
    "Function",
    "Tensor",
    "as_tensor",
    "detect_anomaly",
    "enable_grad",
    "grad",
    "gradcheck",
    "gradgradcheck",
    "is_grad_enabled",
    "no_grad",
    "to_dot",
]
