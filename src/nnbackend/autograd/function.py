"""Differentiable functions and the reverse-mode pass.

A :class:`Function` computes ``forward`` on raw backend arrays and ``backward`` from the
gradients of its outputs to the gradients of its inputs. Calling one on Tensors records a node
in the graph (when gradients are enabled and an input requires them). The graph is
define-by-run: the node holds its inputs strongly and its outputs weakly, so a graph nobody
refers to any more is freed at once.

Writing a new op::

    class Cube(nb.autograd.Function):
        def forward(self, x):
            self.x = x                   # save what backward needs
            return x ** 3

        def backward(self, gy):
            return 3.0 * self.x ** 2 * gy

    y = Cube()(t)                        # t a Tensor; y a Tensor in the graph

``self.xp`` is the inputs' Array API namespace and ``self.needs_input_grad`` says which inputs
need a gradient; both are set before ``forward`` runs. ``backward`` may return ``None`` for
inputs that need none. ``backward`` returns one array per input (a tuple when there are several).
"""

from __future__ import annotations

import heapq
import weakref
from typing import Any

from nnbackend.autograd.mode import _enabled
from nnbackend.errors import DtypeError, GradientError, ShapeError
from nnbackend.namespace import backend_for

__all__ = ["Function", "run_backward"]

_SCALARS = (int, float, bool)
_tensor_class: list[type] = []


def _tensor_type() -> Any:
    # Tensor is defined in tensor.py, which imports this module; fetch it once, then reuse.
    try:
        return _tensor_class[0]
    except IndexError:
        from nnbackend.autograd.tensor import Tensor

        _tensor_class.append(Tensor)
        return Tensor


class Function:
    """Base class of differentiable operations; see the module docs for an example."""

    __slots__ = ("__dict__", "generation", "inputs", "needs_input_grad", "outputs", "xp")

    xp: Any
    inputs: tuple[Any, ...]
    outputs: tuple[Any, ...]
    needs_input_grad: tuple[bool, ...]
    generation: int

    def forward(self, *xs: Any) -> Any:
        """Compute the outputs (one array or a tuple of arrays) from raw arrays."""
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def backward(self, *gys: Any) -> Any:
        """Return the gradient of each input (a tuple when there are several inputs)."""
        raise NotImplementedError(f"{type(self).__name__} does not define backward()")

    def __call__(self, *inputs: Any) -> Any:
        tensor_type = _tensor_type()
        xs = []
        needs = []
        array = None
        record = False
        generation = 0
        for x in inputs:
            if isinstance(x, tensor_type):
                data = x.data
                xs.append(data)
                if x.requires_grad:
                    needs.append(True)
                    record = True
                    if x.generation > generation:
                        generation = x.generation
                else:
                    needs.append(False)
                if array is None:
                    array = data
            else:
                xs.append(x)
                needs.append(False)
                if array is None and x is not None and type(x) not in _SCALARS:
                    array = x
        if array is None:
            raise TypeError(
                f"{type(self).__name__} needs at least one Tensor or array input, got only "
                f"Python scalars {inputs!r}"
            )
        self.xp = backend_for(array)[0]
        self.needs_input_grad = tuple(needs)
        ys = self.forward(*xs)
        record = record and _enabled.get()
        wrap = tensor_type._wrap
        if type(ys) is tuple:
            outputs = tuple(wrap(y, record) for y in ys)
        else:
            outputs = (wrap(ys, record),)
        if record:
            self.inputs = tuple(x if isinstance(x, tensor_type) else None for x in inputs)
            self.generation = generation
            generation += 1
            for out in outputs:
                out.creator = self
                out.generation = generation
            self.outputs = tuple([weakref.ref(out) for out in outputs])
        return outputs if type(ys) is tuple else outputs[0]

    @property
    def name(self) -> str:
        """The op's display name (its class name)."""
        return type(self).__name__


def _check_grad(f: Function, x: Any, gx: Any) -> None:
    if gx.shape != x.data.shape:
        raise ShapeError(
            f"{f.name}.backward returned a gradient of shape {tuple(gx.shape)} for an input of "
            f"shape {tuple(x.data.shape)}; gradients must have their input's shape"
        )
    if gx.dtype != x.data.dtype:
        raise DtypeError(
            f"{f.name}.backward returned a {gx.dtype} gradient for a {x.data.dtype} input; "
            "cast it back (xp.astype) so the model keeps its dtype"
        )


def run_backward(root: Any, grad: Any, retain_grad: bool) -> None:
    """Propagate ``grad`` from ``root`` to every Tensor that requires a gradient, in reverse
    topological order (highest generation first)."""
    root.grad = grad
    creator = root.creator
    if creator is None:
        return
    heap: list[tuple[int, int, Function]] = [(-creator.generation, id(creator), creator)]
    seen = {id(creator)}
    while heap:
        f = heapq.heappop(heap)[2]
        gys = []
        for ref in f.outputs:
            out = ref()
            gys.append(None if out is None else out.grad)
        gxs = f.backward(*gys)
        if type(gxs) is not tuple:
            gxs = (gxs,)
        if len(gxs) != len(f.inputs):
            raise GradientError(
                f"{f.name}.backward returned {len(gxs)} gradients for {len(f.inputs)} inputs"
            )
        for x, gx, need in zip(f.inputs, gxs, f.needs_input_grad, strict=True):
            if not need or gx is None:
                continue
            if _check_grads:
                _check_grad(f, x, gx)
            x.grad = gx if x.grad is None else x.grad + gx
            c = x.creator
            if c is not None and id(c) not in seen:
                seen.add(id(c))
                heapq.heappush(heap, (-c.generation, id(c), c))
        if not retain_grad:
            for ref in f.outputs:
                out = ref()
                if out is not None and not out._retain and out is not root:
                    out.grad = None


# Shape and dtype checks on every gradient; cheap, and they name the op that broke the rule.
_check_grads = True
