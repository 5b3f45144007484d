"""Gradient recording on or off: :func:`no_grad` and :func:`enable_grad` (per thread and
asyncio task, like ``using`` blocks)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

__all__ = ["enable_grad", "is_grad_enabled", "no_grad"]

_enabled: ContextVar[bool] = ContextVar("nnbackend_grad_enabled", default=True)
is_grad_enabled = _enabled.get


def set_grad_enabled(mode: bool) -> Token[bool]:
    """Turn recording on (``True``) or off in this context until
    :func:`restore_grad_enabled` is given the returned token (internal API for the engine,
    which cannot afford a ``with`` block per backward node)."""
    return _enabled.set(mode)


def restore_grad_enabled(token: Token[bool]) -> None:
    """Undo the :func:`set_grad_enabled` call that returned ``token``."""
    _enabled.reset(token)


@contextmanager
def no_grad() -> Iterator[None]:
    """Run operations without recording a graph: faster and lighter, for evaluation.

    >>> import nnbackend as nb
    >>> w = nb.Tensor([1.0, 2.0], requires_grad=True)
    >>> with nb.no_grad():
    ...     y = (w * 2.0).sum()
    >>> y.requires_grad
    False
    """
    token = _enabled.set(False)
    try:
        yield
    finally:
        _enabled.reset(token)


@contextmanager
def enable_grad() -> Iterator[None]:
    """Record a graph again inside a :func:`no_grad` block."""
    token = _enabled.set(True)
    try:
        yield
    finally:
        _enabled.reset(token)
