"""The engine: a define-by-run graph with reverse-mode backward.

Public names: :class:`Tensor`, :class:`Function`, :func:`no_grad`, :func:`enable_grad`,
:func:`gradcheck` and :func:`to_dot`.
"""

from __future__ import annotations

from nnbackend.autograd.function import Function
from nnbackend.autograd.gradcheck import gradcheck
from nnbackend.autograd.graph import to_dot
from nnbackend.autograd.mode import enable_grad, is_grad_enabled, no_grad
from nnbackend.autograd.tensor import Tensor, as_tensor

__all__ = [
    "Function",
    "Tensor",
    "as_tensor",
    "enable_grad",
    "gradcheck",
    "is_grad_enabled",
    "no_grad",
    "to_dot",
]
