"""The hooks :func:`nnbackend.compile_step` records a training step through.

While a step is being recorded (and only then) a recorder is active in the current context:
the engine reports each :class:`~nnbackend.autograd.Function` call and each ``backward()`` to
it, and the functions marked :func:`recorded` (an optimizer's ``step``, ``clip_grad_norm``)
report themselves instead of running unseen. Outside a recording every hook is one check of
the engine's per-op flag (``config.engine_switch.maybe``), which the recorder turns on.
Internal API: the engine, ``optim`` and ``precision`` call it; users call ``compile_step``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from nnbackend import config
from nnbackend.errors import CompileError

__all__ = ["current", "recorded", "refuse", "start", "stop"]

_recorder: ContextVar[Any] = ContextVar("nnbackend_step_recorder", default=None)

current = _recorder.get
"""The recorder active in this context, or ``None`` (a bound ``ContextVar.get``)."""


def start(recorder: Any) -> Any:
    """Make ``recorder`` the active one in this context; returns the token for :func:`stop`."""
    return _recorder.set(recorder)


def stop(token: Any) -> None:
    """End the recording :func:`start` began (the previous recorder, if any, is active again)."""
    _recorder.reset(token)


F = TypeVar("F", bound=Callable[..., Any])


def recorded(method: F) -> F:
    """Mark ``method`` (a function or method whose effect is on parameters, gradients or
    optimizer state, not on Tensors) as a step of its own in a recording: a replay calls it
    again with the same arguments, so it reads hyperparameters and state afresh each time."""

    switch = config.engine_switch  # on while any recording may be active

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        rec = _recorder.get() if switch.maybe else None
        if rec is None:
            return method(*args, **kwargs)
        return rec.call(method, args, kwargs)

    return wrapper  # type: ignore[return-value]


def refuse(what: str) -> None:
    """Raise :class:`~nnbackend.errors.CompileError` when a step is being recorded: ``what``
    (a sentence) says which call decides something from array values and why a recording
    cannot replay it."""
    if _recorder.get() is not None:
        raise CompileError(f"compile_step cannot record this step: {what}")
