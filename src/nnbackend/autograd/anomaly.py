"""Anomaly detection: find the first op that produced a NaN or an infinity.

Inside ``with nnbackend.autograd.detect_anomaly():`` every op checks its outputs after its
forward, and every node checks the gradients its backward returns; the first one that holds a
NaN or an infinity raises :class:`AnomalyError` naming the op, the pass (forward or backward),
and the shapes and dtypes involved. A backward error also shows where the op was called in the
forward pass.

>>> import nnbackend as nb
>>> w = nb.Tensor([1.0, 2.0], requires_grad=True)
>>> big = nb.Tensor([1.0, float("inf")])  # say, a bad input row
>>> with nb.autograd.detect_anomaly():
...     ((w * big) * 2.0).sum()  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
nnbackend.autograd.anomaly.AnomalyError: Mul forward produced inf ... (already holds inf)

Every check reads one flag back from the arrays, so on a GPU each op waits for the device:
use it to debug, not to train. Outside the block the engine pays one flag check per op.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from nnbackend import config
from nnbackend.errors import NNBackendError
from nnbackend.namespace import backend_for

__all__ = ["AnomalyError", "detect_anomaly", "is_enabled"]

_SCALARS = (int, float, bool)
_active: ContextVar[bool] = ContextVar("nnbackend_detect_anomaly", default=False)
is_enabled = _active.get


class AnomalyError(NNBackendError, FloatingPointError):
    """An op produced a NaN or an infinity inside :func:`detect_anomaly`."""


@contextmanager
def detect_anomaly(record_stack: bool = True) -> Iterator[None]:
    """Check every op's outputs and every gradient for NaN and infinity inside the block
    (this thread or asyncio task only), and raise :class:`AnomalyError` at the first.

    Args:
        record_stack: remember where each op was called in the forward pass, so an anomaly
            in its backward names the line that created it (costs a stack walk per op).
    """
    token = _active.set(True)
    stack_token = _record_stack.set(bool(record_stack))
    config.count_blocks("anomaly", +1)
    try:
        yield
    finally:
        config.count_blocks("anomaly", -1)
        _record_stack.reset(stack_token)
        _active.reset(token)


_record_stack: ContextVar[bool] = ContextVar("nnbackend_anomaly_stack", default=True)


def _float_arrays(values: Any) -> list[tuple[int, Any, Any]]:
    """``(index, xp, array)`` for the floating arrays among ``values``."""
    found = []
    for i, a in enumerate(values):
        if a is None or type(a) in _SCALARS or not hasattr(a, "dtype"):
            continue
        xp = backend_for(a)[0]
        if xp.isdtype(a.dtype, "real floating"):
            found.append((i, xp, a))
    return found


def _bad(xp: Any, a: Any) -> str | None:
    """ "NaN", "inf", "-inf" or "NaN and inf" when ``a`` holds such values, else None."""
    if bool(xp.all(xp.isfinite(a))):
        return None
    kinds = []
    if bool(xp.any(xp.isnan(a))):
        kinds.append("NaN")
    if bool(xp.any(a == float("inf"))):
        kinds.append("inf")
    if bool(xp.any(a == -float("inf"))):
        kinds.append("-inf")
    return " and ".join(kinds)


def _describe(a: Any) -> str:
    if a is None:
        return "None"
    if type(a) in _SCALARS:
        return repr(a)
    return f"shape {tuple(a.shape)} {a.dtype}"


def _inputs_text(xs: Any) -> str:
    parts = []
    for i, x in enumerate(xs):
        text = _describe(x)
        if x is not None and type(x) not in _SCALARS and hasattr(x, "dtype"):
            xp = backend_for(x)[0]
            if xp.isdtype(x.dtype, "real floating"):
                kind = _bad(xp, x)
                if kind:
                    text += f" (already holds {kind})"
        parts.append(f"input {i}: {text}")
    return "; ".join(parts) or "no inputs"


def check_forward(f: Any, xs: Any, ys: Any) -> None:
    """Raise :class:`AnomalyError` when an output of ``f``'s forward is not finite."""
    outputs = ys if type(ys) is tuple else (ys,)
    for i, xp, y in _float_arrays(outputs):
        kind = _bad(xp, y)
        if kind:
            owner = _running_backward()
            if owner is not None:
                # f is a step of owner's gradient formula (a Function whose backward is
                # written with Tensor ops): "Div forward produced inf" named an op the
                # user's forward pass never held.
                raise AnomalyError(
                    f"{owner.name} backward produced {kind} (in the {f.name} step of its "
                    f"gradient formula, output {i}: {_describe(y)}; {_inputs_text(xs)}); "
                    f"{_node_text(owner)}"
                )
            raise AnomalyError(
                f"{f.name} forward produced {kind} in output {i} ({_describe(y)}); "
                f"{_inputs_text(xs)}"
            )
    if _record_stack.get():
        # Drop the engine's own frames (this function, _after_forward, Function.__call__).
        f.__dict__["_anomaly_stack"] = traceback.format_stack(limit=14)[:-3]


def _running_backward() -> Any:
    """The Function whose ``backward`` or ``graph_backward`` is running below the caller
    (innermost first), or None: read only once an anomaly was found."""
    from nnbackend.autograd.function import Function

    frame: Any = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name in ("backward", "graph_backward"):
            owner = frame.f_locals.get("self")
            if isinstance(owner, Function):
                return owner
        frame = frame.f_back
    return None


def _node_text(f: Any) -> str:
    """The inputs, output gradients and forward call site of the node ``f``."""
    inputs = getattr(f, "inputs", ())
    shapes = "; ".join(
        f"input {j}: {_describe(getattr(t, 'data', t))}" for j, t in enumerate(inputs)
    )
    outs = []
    for j, ref in enumerate(getattr(f, "outputs", ())):
        out = ref()
        if out is not None and out.grad is not None:
            outs.append(f"output {j} gradient: {_describe(out.grad)}")
    where = ""
    stack = f.__dict__.get("_anomaly_stack")
    if stack:
        where = "\nThe op was called in the forward pass at:\n" + "".join(stack[-4:])
    return shapes + (f"; {'; '.join(outs)}" if outs else "") + where


def check_backward(f: Any, gxs: Any) -> None:
    """Raise :class:`AnomalyError` when a gradient ``f``'s backward returned is not finite."""
    for i, xp, g in _float_arrays(gxs):
        kind = _bad(xp, g)
        if kind:
            raise AnomalyError(
                f"{f.name} backward produced {kind} in the gradient of input {i} "
                f"({_describe(g)}); {_node_text(f)}"
            )
