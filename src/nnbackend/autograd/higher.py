"""Gradients as values, and gradients of gradients.

:func:`grad` returns the gradients of outputs with respect to chosen inputs without touching
any ``.grad``; with ``create_graph=True`` (here and in ``Tensor.backward``) the backward pass
runs each Function's :meth:`~nnbackend.autograd.function.Function.graph_backward` on Tensors,
so the gradients are themselves in the graph and can be differentiated again (Newton's method,
Hessian-vector products, gradient penalties).

>>> import nnbackend as nb
>>> x = nb.Tensor([2.0], requires_grad=True)
>>> y = (x**3).sum()
>>> (gx,) = nb.grad(y, x, create_graph=True)     # 3 x^2
>>> (ggx,) = nb.grad(gx.sum(), x)                 # 6 x
>>> gx.tolist(), ggx.tolist()
([12.0], [12.0])

The plain ``backward()`` (``create_graph=False``) keeps its own fast loop on raw arrays
(:func:`nnbackend.autograd.function.run_backward`); this module's loop is the general one.
"""

from __future__ import annotations

import heapq
import numbers
from collections.abc import Sequence
from typing import Any

from nnbackend.autograd import anomaly, ops
from nnbackend.autograd.function import Function, check_gradient
from nnbackend.autograd.mode import restore_grad_enabled, set_grad_enabled
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import BackendMismatchError, GradientError
from nnbackend.namespace import backend_for

__all__ = ["grad", "run_graph_backward"]


class _BackwardOf(Function):
    """The gradients of a Function that defines only a raw ``backward``, put in the graph:
    their values are right, and differentiating them again raises a clear error."""

    grad_may_alias = False

    def __init__(self, f: Function, grads: tuple[Any, ...]) -> None:
        self.f, self.grads = f, grads

    def forward(self, *xs: Any) -> Any:
        return self.grads if len(self.grads) > 1 else self.grads[0]

    def backward(self, *gys: Any) -> Any:
        raise GradientError(
            f"{self.f.name} defines backward() on arrays only, so its gradient cannot be "
            "differentiated again; define graph_backward() with differentiable Tensor "
            "operations (see the 'Writing a Function' guide)"
        )


def _once_differentiable(f: Function, gys: list[Any]) -> tuple[Any, ...]:
    token = set_grad_enabled(False)
    try:
        raw = f.backward(*[None if g is None else g.data for g in gys])
    finally:
        restore_grad_enabled(token)
    if type(raw) is not tuple:
        raw = (raw,)
    if anomaly.is_enabled():
        # Checked here, on f's own gradients: inside the _BackwardOf node below a NaN was
        # reported as "_BackwardOf forward produced ...", a class the user never wrote.
        anomaly.check_backward(f, raw)
    present = [i for i, g in enumerate(raw) if g is not None]
    if not present:
        return raw
    deps = [t for t in f.inputs if t is not None] + [g for g in gys if g is not None]
    outs = _BackwardOf(f, tuple(raw[i] for i in present))(*deps)
    if type(outs) is not tuple:
        outs = (outs,)
    result: list[Any] = [None] * len(raw)
    for i, out in zip(present, outs, strict=True):
        result[i] = out
    return tuple(result)


def run_graph_backward(
    roots: Sequence[Tensor], grads: Sequence[Any], create_graph: bool
) -> dict[int, tuple[Tensor, Any]]:
    """Propagate ``grads`` (one per root; Tensors when ``create_graph``, else arrays) through
    the graph. Returns ``{id(t): (t, gradient)}`` for every Tensor reached, leaves and
    intermediates, with the complete gradient of each."""
    found: dict[int, tuple[Tensor, Any]] = {}
    heap: list[tuple[int, int, Function]] = []
    seen: set[int] = set()
    order = 0

    def add(t: Tensor, g: Any) -> None:
        nonlocal order
        old = found.get(id(t))
        found[id(t)] = (t, g if old is None else old[1] + g)
        c = t.creator
        if c is not None and id(c) not in seen:
            seen.add(id(c))
            order += 1  # ties broken by discovery order: deterministic, never by address
            heapq.heappush(heap, (-c.generation, order, c))

    for root, g in zip(roots, grads, strict=True):
        add(root, g)
    token = set_grad_enabled(create_graph)
    try:
        while heap:
            f = heapq.heappop(heap)[2]
            outs = [r() for r in f.outputs]
            gys = [None if o is None or id(o) not in found else found[id(o)][1] for o in outs]
            if all(g is None for g in gys):
                continue
            if create_graph:
                if len(gys) > 1:
                    xp = f.xp
                    gys = [
                        Tensor._wrap(xp.zeros_like(o.data), False)
                        if g is None and o is not None
                        else g
                        for g, o in zip(gys, outs, strict=True)
                    ]
                if f.supports_double_backward():
                    gxs = f.graph_backward(*gys)
                else:
                    gxs = _once_differentiable(f, gys)
            else:
                gxs = f.backward(*gys)
            if type(gxs) is not tuple:
                gxs = (gxs,)
            if anomaly.is_enabled():
                anomaly.check_backward(
                    f, tuple(g.data if isinstance(g, Tensor) else g for g in gxs)
                )
            if len(gxs) != len(f.inputs):
                raise GradientError(
                    f"{f.name}.backward returned {len(gxs)} gradients for {len(f.inputs)} inputs"
                )
            for x, gx, need in zip(f.inputs, gxs, f.needs_input_grad, strict=True):
                if not need or gx is None:
                    continue
                if create_graph and not isinstance(gx, Tensor):
                    gx = Tensor._wrap(gx, False)
                check_gradient(f, x, gx.data if create_graph else gx)
                add(x, gx)
    finally:
        restore_grad_enabled(token)
    return found


def _as_list(x: Any, what: str) -> list[Any]:
    items = [x] if isinstance(x, Tensor) else list(x)
    for t in items:
        if not isinstance(t, Tensor):
            raise TypeError(f"grad(): {what} must be Tensors, got {type(t).__name__}")
    return items


def grad(
    outputs: Tensor | Sequence[Tensor],
    inputs: Tensor | Sequence[Tensor],
    grad_outputs: Any = None,
    *,
    create_graph: bool = False,
    retain_graph: bool | None = None,
    allow_unused: bool = False,
) -> tuple[Any, ...]:
    """The gradients of ``outputs`` with respect to ``inputs``, returned (one per input, in
    order) instead of added to ``.grad`` (no ``.grad`` changes).

    Args:
        outputs: a Tensor or a sequence of Tensors.
        inputs: the Tensors (leaves or intermediates) to differentiate with respect to.
        grad_outputs: the gradient of the final result with respect to each output (arrays or
            Tensors); may be omitted for one-element outputs (it is then 1).
        create_graph: record the backward pass, so the returned gradients are Tensors in the
            graph and can be differentiated again (higher-order derivatives).
        retain_graph: accepted for PyTorch compatibility; the graph is always kept for as long
            as the outputs are referenced, so it may be differentiated again either way.
        allow_unused: return ``None`` for an input the outputs do not depend on instead of
            raising :class:`~nnbackend.errors.GradientError`.

    Returns:
        A tuple: Tensors when ``create_graph`` is true, else Tensors outside the graph.
    """
    del retain_graph  # the graph lives as long as it is referenced
    outs = _as_list(outputs, "outputs")
    ins = _as_list(inputs, "inputs")
    if grad_outputs is None:
        grad_outputs = [None] * len(outs)
    elif isinstance(grad_outputs, (Tensor, numbers.Number)) or hasattr(
        grad_outputs, "shape"
    ):  # (a Python number for a 0-d output: list() of it was a bare TypeError)
        grad_outputs = [grad_outputs]
    else:
        try:
            grad_outputs = list(grad_outputs)
        except TypeError:
            raise GradientError(
                f"grad(): grad_outputs must be an array, a Tensor, a number or a sequence of "
                f"those (one per output), got {type(grad_outputs).__name__}"
            ) from None
    if len(grad_outputs) != len(outs):
        raise GradientError(
            f"grad(): {len(grad_outputs)} grad_outputs for {len(outs)} outputs; pass one each"
        )
    seeds = []
    for out, g in zip(outs, grad_outputs, strict=True):
        if not out.requires_grad:
            raise GradientError(
                "grad(): an output does not require a gradient: no input of its graph has "
                "requires_grad=True (or it was computed under no_grad())"
            )
        xp = backend_for(out.data)[0]
        if g is None:
            if out.size != 1:
                raise GradientError(
                    f"grad(): grad_outputs may be omitted only for one-element outputs, this one "
                    f"has shape {out.shape}; pass an array of that shape"
                )
            g = xp.ones_like(out.data)
        elif isinstance(g, Tensor):
            if type(g.data) is not type(out.data):
                g_name, o_name = backend_for(g.data)[1].name, backend_for(out.data)[1].name
                if g_name != o_name:  # (it failed later as a "wrong dtype" from a backward)
                    raise BackendMismatchError(
                        f"grad(): grad_outputs holds a Tensor of backend {g_name!r} for an "
                        f"output of backend {o_name!r}; move it with "
                        "nnbackend.to_backend(g, like=output)"
                    )
            if g.data.dtype != out.data.dtype:
                # Cast as an array grad_output is: a float32 Tensor for a float64 output
                # raised a DtypeError blaming the first node's backward.
                g = ops.cast(g, out.data.dtype)  # (differentiable)
            g = g if create_graph else g.data
        else:
            try:
                g = xp.asarray(g, dtype=out.data.dtype, copy=True)
            except (TypeError, ValueError):  # text, None in a list, ...: say which argument
                raise GradientError(
                    f"grad(): grad_outputs must hold numbers or arrays of the outputs' dtype "
                    f"({out.data.dtype}), got {g!r:.80}"
                ) from None
        gdata = g.data if isinstance(g, Tensor) else g
        if tuple(gdata.shape) != out.shape:
            raise GradientError(
                f"grad(): a gradient of shape {tuple(gdata.shape)} for an output of shape "
                f"{out.shape}"
            )
        if create_graph and not isinstance(g, Tensor):
            g = Tensor._wrap(g, False)
        seeds.append(g)
    found = run_graph_backward(outs, seeds, create_graph)
    result: list[Any] = []
    for i, t in enumerate(ins):
        entry = found.get(id(t))
        if entry is None:
            if not allow_unused:
                raise GradientError(
                    f"grad(): input {i} (shape {t.shape}) is not used by the outputs' graph (or "
                    "does not require a gradient); pass allow_unused=True to get None for it"
                )
            result.append(None)
            continue
        g = entry[1]
        result.append(g if isinstance(g, Tensor) else Tensor._wrap(g, False))
    return tuple(result)


def backward_create_graph(root: Tensor, grad: Any, retain_grad: bool) -> None:
    """``root.backward(grad, create_graph=True)``: every leaf's ``.grad`` becomes (or has
    added to it) a Tensor in the graph."""
    found = run_graph_backward([root], [Tensor._wrap(grad, False)], True)
    for t, g in found.values():
        if t.creator is None:
            if not t.requires_grad:
                continue
            old = t.grad
            if old is None:
                t.grad = g
            else:
                t.grad = (old if isinstance(old, Tensor) else Tensor._wrap(old, False)) + g
        elif retain_grad or t._retain or t is root:
            t.grad = g
