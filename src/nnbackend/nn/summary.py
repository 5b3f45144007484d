"""``Module.summary()``: layers, output shapes, parameter counts and bytes by dtype."""

from __future__ import annotations

import math
import operator
import threading
from typing import Any

from nnbackend.autograd.mode import no_grad
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import ArgumentError
from nnbackend.namespace import backend_for, namespace
from nnbackend.nn.module import Module

__all__ = ["summary"]


def _shape_of(out: Any) -> str:
    data = out.data if isinstance(out, Tensor) else out
    shape = getattr(data, "shape", None)
    if shape is not None:
        return str(tuple(int(d) for d in shape))
    if isinstance(out, (tuple, list)):
        return ", ".join(_shape_of(o) for o in out)
    return type(out).__name__


# summary() patches classes, which every thread shares: two summaries at once each saved the
# other's recorder as "the original" and one stayed installed for good. One at a time (an
# RLock: a forward that prints a summary of a part nests its patches inside, restored first).
_PATCHING = threading.RLock()


def _run(model: Module, x: Any) -> dict[int, str]:
    """Run ``model(x)`` once, recording each module's output shape (by ``id``): the classes'
    ``__call__`` are wrapped for the duration of the call and restored after."""
    with _PATCHING:
        return _run_patched(model, x)


def _run_patched(model: Module, x: Any) -> dict[int, str]:
    shapes: dict[int, str] = {}
    patched: dict[type, Any] = {}
    for module in model.modules():
        cls = type(module)
        if cls in patched:
            continue
        original = cls.__dict__.get("__call__")
        patched[cls] = original
        call = cls.__call__

        def recording(self: Module, *args: Any, _call: Any = call, **kwargs: Any) -> Any:
            out = _call(self, *args, **kwargs)
            shapes.setdefault(id(self), _shape_of(out))
            return out

        cls.__call__ = recording  # type: ignore[method-assign]
    # Each module's own mode is restored: model.train(previous) alone would also switch a
    # part the user keeps in eval mode (a frozen Dropout or BatchNorm) back to training.
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with no_grad():
            model(x)
    finally:
        model.train(modes[0][1])  # (moves the settings count, as any mode change must)
        for module, mode in modes:
            module.__dict__["training"] = mode  # as Module.train writes it; no recursion
        for cls, original in patched.items():
            if original is None:
                del cls.__call__
            else:
                cls.__call__ = original  # type: ignore[method-assign]
    return shapes


def _sample_shape(input_shape: Any) -> tuple[int, ...]:
    # operator.index, not int(): (2.7,) ran the model on a (1, 2) batch and "2" on (1, 2).
    try:
        if isinstance(input_shape, str | bytes):
            raise TypeError
        dims = tuple(operator.index(d) if type(d) is not bool else -1 for d in input_shape)
    except TypeError:
        dims = (-1,)
    if any(d < 0 for d in dims):
        raise ArgumentError(
            f"input_shape is the shape of one sample, a tuple of ints, got {input_shape!r}"
        )
    return dims


def summary(model: Module, x: Any = None, *, input_shape: tuple[int, ...] | None = None) -> str:
    """The text of :meth:`nnbackend.nn.Module.summary`."""
    params = list(model.named_parameters())
    if x is None and input_shape is not None:
        shape = (1, *_sample_shape(input_shape))
        if params:
            xp = backend_for(params[0][1].data)[0]
            like = params[0][1].data
            x = xp.zeros(shape, dtype=like.dtype, device=getattr(like, "device", None))
        else:
            x = namespace().zeros(shape)
    elif x is not None and input_shape is not None:
        raise ArgumentError("give x or input_shape, not both")
    shapes = _run(model, x) if x is not None else {}
    rows: list[tuple[str, ...]] = [("layer", "type", "output shape", "parameters")]
    for name, module in model.named_modules():
        count = sum(math.prod(p.data.shape) for p in module.parameters())
        rows.append(
            (name or "(model)", type(module).__name__, shapes.get(id(module), "-"), str(count))
        )
    if x is None:
        rows = [r[:2] + r[3:] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    total = trainable = 0
    by_dtype: dict[str, int] = {}
    for _, p in params:
        n = math.prod(p.data.shape)
        total += n
        trainable += n if p.requires_grad else 0
        dtype = str(p.data.dtype).rsplit(".", 1)[-1]
        xp = backend_for(p.data)[0]
        itemsize = (
            xp.finfo(p.data.dtype).bits // 8
            if xp.isdtype(p.data.dtype, "real floating")
            else xp.iinfo(p.data.dtype).bits // 8
        )
        by_dtype[dtype] = by_dtype.get(dtype, 0) + n * itemsize
    sizes = ", ".join(f"{d}: {b} bytes" for d, b in by_dtype.items()) or "no arrays"
    lines.append(f"parameters: {total} (trainable {trainable}); {sizes}")
    return "\n".join(lines)
