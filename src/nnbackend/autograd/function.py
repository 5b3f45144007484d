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

Set ``grad_may_alias = False`` on the class when ``backward`` always returns new arrays: the
engine then skips a copy. An op whose outputs have another dtype than its floating inputs (a
cast) sets ``self.output_dtype`` to that dtype: the dtype guard (``using(check_dtypes=True)``)
holds every other op to its inputs' dtype. ``self.xp`` is the inputs' Array API namespace and
``self.needs_input_grad`` says which inputs need a gradient; both are set before ``forward``
runs. ``backward`` returns one array per input (a tuple when there are several), or ``None``
for an input that needs no gradient.

For higher-order derivatives (``backward(create_graph=True)``, ``nb.grad``), define
``graph_backward`` instead of, or besides, ``backward``: the same rule written with
differentiable Tensor operations, reading the inputs from ``self.inputs``. The docs' "Writing
a Function" guide shows both.
"""

from __future__ import annotations

import heapq
import itertools
import weakref
from typing import Any

from nnbackend import config
from nnbackend.autograd import anomaly, trace
from nnbackend.autograd.mode import is_grad_enabled, restore_grad_enabled, set_grad_enabled
from nnbackend.errors import DtypeError, GradientError, ShapeError
from nnbackend.namespace import backend_for, cached_backend_for_type, ops_for
from nnbackend.typing import Array, DType, Namespace

__all__ = ["Function", "run_backward"]

_SCALARS = (int, float, bool)
_new = object.__new__
_ref = weakref.ref
# Creation order of recorded nodes: the backward queue breaks ties between nodes of equal
# generation by it (never by memory address), so gradients are summed in the same order on
# every run and backward is bitwise reproducible. next() on a count is atomic under the GIL.
_next_seq = itertools.count().__next__
_by_type_get = cached_backend_for_type
# The engine's one per-op flag: true only while the dtype guard or anomaly detection may be on.
_switch = config.engine_switch
# Set by tensor.py once Tensor exists (tensor.py imports this module, not the reverse).
Tensor: Any = None


class Function:
    """Base class of differentiable operations; see the module docs for an example."""

    __slots__ = ("__dict__", "generation", "inputs", "needs_input_grad", "outputs", "seq", "xp")

    #: Whether ``backward`` may return views of, or the very arrays of, the gradients it gets
    #: (or one array for two inputs). The engine then copies a gradient before storing it on
    #: a leaf, so that leaves never share memory. Safe by default; the built-in ops that
    #: always return new arrays set it to False to skip the copy.
    grad_may_alias: bool = True
    #: The dtype of the outputs when it is not that of the floating inputs (casts, mixed
    #: precision nodes); ``None`` means "the inputs' dtype". Read by the dtype guard only.
    output_dtype: Any = None
    #: Set by built-in ops whose ``backward`` always returns gradients of their inputs' shape
    #: and dtype: the engine then skips its per-input check (user Functions keep it).
    trusted_grads: bool = False
    #: Optional method ``replay_forward(*xs)``, defined by ops whose ``forward`` first
    #: decides things from its inputs' backend, shapes and dtypes (the ops object, whether
    #: float16 computes wide) and then computes: the computing part alone, reading those
    #: decisions from ``self``. A compiled step (:func:`nnbackend.compile_step`) replays
    #: such a node with it, because a replay gives the node arrays of the recording's
    #: backend, shapes and dtypes; the results must equal ``forward``'s bit for bit, and
    #: checks on the arrays' values (labels in range) stay in it. A subclass that overrides
    #: ``forward`` alone is replayed with its ``forward``.
    replay_forward: Any = None
    #: Optional method ``replay_code(srcs, out, bind)``: the node's computation as Python
    #: source, which a compiled step's replay runs inline instead of calling the node's
    #: methods (in a small step, the calls and the attribute traffic around them cost a
    #: tenth of the replay). Called once the recorded ``forward`` has run, with ``srcs``
    #: the expressions of the inputs, ``out`` the variable the output goes to and
    #: ``bind(value)``, which puts a value in the replay's scope and returns its name. It
    #: returns ``None`` (replay through the methods) or ``(lines, backward)``: the lines
    #: that compute ``out`` from ``srcs``, and ``backward(gy, gxs, unit)``, the lines that
    #: compute input ``i``'s gradient into the variable ``gxs[i]`` (``None`` where none is
    #: needed) from the expression ``gy``; ``unit`` says that ``gy`` holds a 0-d one (the
    #: seed of ``loss.backward()``), so a product with it may be left out where that keeps
    #: the bits (``x * 1`` is ``x``). Variables the two share are named ``out + "_"`` and a
    #: suffix. The code must give the very arrays the methods give for the inputs' shapes
    #: and dtypes of the recorded run, bit for bit. A subclass that overrides ``forward``,
    #: ``backward`` or ``replay_forward`` without its own ``replay_code`` is replayed through
    #: its methods.
    replay_code: Any = None
    #: Whether ``forward`` also updates state outside its outputs (BatchNorm's running
    #: statistics): a compiled step replays such a node with its ``forward`` on every
    #: call, but never inside a whole-step tracing compiler (``jax.jit``), out of whose
    #: trace that state could not come.
    updates_state: bool = False

    xp: Namespace
    inputs: tuple[Any, ...]
    outputs: tuple[Any, ...]
    needs_input_grad: tuple[bool, ...]
    generation: int
    #: The node's creation order among recorded nodes (set when it joins the graph).
    seq: int

    def forward(self, *xs: Array) -> Any:
        """Compute the outputs (one array or a tuple of arrays) from raw arrays."""
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def backward(self, *gys: Array) -> Any:
        """Return the gradient of each input (a tuple when there are several inputs), from
        raw arrays to raw arrays.

        The default runs :meth:`graph_backward` on constant Tensors without recording (so a
        Function that defines only ``graph_backward`` works in both modes).
        """
        if type(self).graph_backward is Function.graph_backward:
            raise NotImplementedError(
                f"{type(self).__name__} defines neither backward() nor graph_backward()"
            )
        wrap = Tensor._wrap
        token = set_grad_enabled(False)
        try:
            gxs = self.graph_backward(*[None if g is None else wrap(g, False) for g in gys])
        finally:
            restore_grad_enabled(token)
        if type(gxs) is tuple:
            return tuple([g.data if isinstance(g, Tensor) else g for g in gxs])
        return gxs.data if isinstance(gxs, Tensor) else gxs

    def graph_backward(self, *gys: Any) -> Any:
        """The backward written with differentiable operations on Tensors: ``gys`` are
        Tensors, and the result (a Tensor per input, or ``None``) is itself recorded in the
        graph when ``create_graph=True``, so gradients of gradients work. ``self.inputs``
        holds the input Tensors (``None`` where an input was a plain array or scalar).

        Functions that leave it undefined still support ``create_graph=True`` for first
        derivatives; differentiating their gradient again raises
        :class:`~nnbackend.errors.GradientError`.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define graph_backward()")

    @classmethod
    def supports_double_backward(cls) -> bool:
        """Whether the class defines :meth:`graph_backward` (its gradients are differentiable)."""
        return cls.graph_backward is not Function.graph_backward

    def input(self, i: int, raw: Any) -> Any:
        """Input ``i`` as the Tensor recorded in the graph, or ``raw`` (the plain array or
        scalar ``forward`` saw) when it was not a Tensor: for :meth:`graph_backward`."""
        t = self.inputs[i]
        return raw if t is None else t

    def __call__(self, *inputs: Any) -> Any:
        tensor_type = Tensor
        xs = []
        needs = []
        tensors = []
        array = None
        record = False
        generation = 0
        for x in inputs:
            if isinstance(x, tensor_type):
                data = x.data
                xs.append(data)
                tensors.append(x)
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
                tensors.append(None)
                if array is None and x is not None and type(x) not in _SCALARS:
                    array = x
        if array is None:
            raise TypeError(
                f"{type(self).__name__} needs at least one Tensor or array input, got only "
                f"Python scalars {inputs!r}"
            )
        # backend_for without its call, where its cache knows the type (a non-empty tuple)
        self.xp = (_by_type_get(type(array)) or backend_for(array))[0]
        self.needs_input_grad = tuple(needs)
        if _switch.maybe:
            _before_forward(self, xs, tensors)
        ys = self.forward(*xs)
        if type(ys) is not type(array):  # a tuple, or a NumPy scalar from 0-d arithmetic
            ys = as_arrays(self.xp, ys)
        if _switch.maybe:
            _after_forward(self, xs, ys)
        if record and is_grad_enabled():
            self.inputs = tuple(tensors)
            self.generation = generation
            self.seq = _next_seq()
            generation += 1
            if type(ys) is tuple:
                # (Tensor, not a local, in comprehensions: a local they read would be a
                # closure cell, built on every call of this method)
                outputs = tuple([Tensor._wrap(y, True) for y in ys])
                for out in outputs:
                    out.creator = self
                    out.generation = generation
                self.outputs = tuple([weakref.ref(out) for out in outputs])
                return outputs
            # Tensor._wrap inlined: this is the engine's hottest line.
            out = _new(tensor_type)
            out.data = ys
            out.grad = None
            out.creator = self
            out.generation = generation
            out.requires_grad = True
            out.name = None
            out._retain = False
            self.outputs = (_ref(out),)
            return out
        if type(ys) is tuple:
            return tuple([Tensor._wrap(y, False) for y in ys])
        return tensor_type._wrap(ys, False)

    @property
    def name(self) -> str:
        """The op's display name (its class name)."""
        return type(self).__name__


def as_array(xp: Namespace, y: Any) -> Any:
    """``y`` as an array of ``xp``'s backend: NumPy returns scalars (``numpy.float64``), not
    0-d arrays, from arithmetic and reductions on 0-d arrays; the Array API (and in-place
    writes into a 0-d ``.grad``) needs arrays. Arrays, ``None`` and Python scalars pass."""
    if y is None or type(y) in _SCALARS or getattr(y, "shape", None) != ():
        return y
    return ops_for(xp, y).asarray(y)


def as_arrays(xp: Namespace, ys: Any) -> Any:
    """:func:`as_array` of one output or of each in a tuple."""
    if type(ys) is tuple:
        return tuple(map(as_array, (xp,) * len(ys), ys))  # (no closure cell for xp)
    return as_array(xp, ys)


def _describe(arrays: Any) -> str:
    parts = []
    for a in arrays:
        if a is None or type(a) in _SCALARS:
            parts.append(repr(a))
        else:
            parts.append(
                f"{tuple(getattr(a, 'shape', ()))} {getattr(a, 'dtype', type(a).__name__)}"
            )
    return "(" + ", ".join(parts) + ")"


def _dtype_name(dtype: Any) -> str:
    name = getattr(dtype, "name", None)
    if not isinstance(name, str):  # a scalar type (numpy.float16) or a torch dtype
        name = getattr(dtype, "__name__", None) or str(dtype)
    return str(name).rsplit(".", 1)[-1]


def _is_floating(xp: Any, a: Any) -> bool:
    dtype = getattr(a, "dtype", None)
    if dtype is None or type(a) in _SCALARS:
        return False
    try:
        return bool(xp.isdtype(dtype, "real floating"))
    except Exception:  # a dtype the namespace does not know (a NumPy scalar's, say)
        return _dtype_name(dtype) in config.DTYPES


def expected_dtype(f: Function, xs: Any) -> DType:
    """The dtype the policy gives ``f``'s floating outputs: its ``output_dtype`` when it casts,
    else the dtype of its first floating input (ops never promote), else the active default
    float dtype."""
    if f.output_dtype is not None:
        return f.output_dtype
    xp = f.xp
    for x in xs:
        if x is not None and _is_floating(xp, x):
            return x.dtype
    return getattr(xp, config.get_default_dtype(), None)


def check_output_dtypes(f: Function, xs: Any, ys: Any) -> None:
    """The dtype guard: raise :class:`~nnbackend.errors.DtypeError` naming ``f`` when a
    floating output's dtype is not the one the policy gives it."""
    expected = expected_dtype(f, xs)
    if expected is None:
        return
    outputs = ys if type(ys) is tuple else (ys,)
    xp = f.xp
    for i, y in enumerate(outputs):
        if y is None or not _is_floating(xp, y):
            continue
        if y.dtype != expected and _dtype_name(y.dtype) != _dtype_name(expected):
            raise DtypeError(
                f"dtype guard: {f.name} produced output {i} of dtype {y.dtype} (shape "
                f"{tuple(y.shape)}) where the policy expects {_dtype_name(expected)}; inputs "
                f"{_describe(xs)}. An op must keep its inputs' dtype (cast explicitly, or set "
                "output_dtype on a Function that casts)"
            )


def _before_forward(f: Function, xs: Any, tensors: Any) -> None:
    # Reached only while some context may have a check on or a step being recorded.
    rec = trace.current()
    if rec is not None:
        rec.before_forward(f, xs, tensors)


def _after_forward(f: Function, xs: Any, ys: Any) -> None:
    # Reached only while some context may have the guard or anomaly detection on, or a step
    # being recorded (compile_step).
    if config.check_dtypes_enabled():
        check_output_dtypes(f, xs, ys)
    if anomaly.is_enabled():
        anomaly.check_forward(f, xs, ys)
    rec = trace.current()
    if rec is not None:
        rec.after_forward(f, xs, ys)


def check_gradient(f: Function, x: Any, gx: Any) -> None:
    """A backward's gradient ``gx`` for input ``x`` of ``f`` must have the input's shape and
    dtype: a :class:`ShapeError` or :class:`DtypeError` naming ``f`` otherwise."""
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


def spare_grad(t: Any, ops: Any) -> Any:
    """An array that a node's ``backward`` may write the gradient of input ``t`` into
    (``out=``) instead of allocating a new one, or ``None``: the array ``t.zero_grad()`` kept
    aside, taken (once) and handed to ``ops.reuse``, which accepts it only where nothing else
    refers to it. The gradient then becomes ``t.grad`` as it is (the node has
    ``grad_may_alias = False``), or is added to a ``t.grad`` set earlier in the pass (a new
    array; the spare goes). A node calls this with the input Tensor from ``self.inputs``
    (``None`` in a compiled replay, which allocates)."""
    spare = getattr(t, "_spare", None)  # unset on Tensors made by Tensor._wrap; t may be None
    if spare is None:
        return None
    t._spare = None
    return ops.reuse(spare, t.data.shape, t.data.dtype)


def add_arrays(xp: Namespace, a: Array, b: Array) -> Array:
    """``a + b``, an array also for 0-d operands on NumPy."""
    out = a + b
    return out if type(out) is type(a) else as_array(xp, out)


def run_backward(root: Any, grad: Any, retain_grad: bool) -> None:
    """Propagate ``grad`` from ``root`` to every Tensor that requires a gradient, in reverse
    topological order (highest generation first)."""
    root.grad = grad
    creator = root.creator
    if creator is None:
        return
    fresh = {root}  # intermediates whose .grad was set during this pass
    # Highest generation first; among equals, the node created last first (as a stack would),
    # by creation order: the summation order of gradients never depends on memory addresses.
    # A node that finds one new creator while the queue is empty (a chain of layers, the
    # usual case) hands it on directly: the queue would have given it back at once.
    heap: list[tuple[int, int, Function]] = []
    seen = {creator}
    pop, push = heapq.heappop, heapq.heappush
    f = creator
    while True:
        nxt = None  # the first creator this node finds, not yet in the queue
        outputs = f.outputs
        single = len(outputs) == 1
        if single:
            out = outputs[0]()
            gxs = f.backward(None if out is None else out.grad)
        else:
            gxs = f.backward(*[None if o is None else o.grad for o in (r() for r in outputs)])
        if type(gxs) is not tuple:
            gxs = (gxs,)
        if _switch.maybe and anomaly.is_enabled():
            anomaly.check_backward(f, gxs)
        inputs = f.inputs
        if len(gxs) != len(inputs):
            raise GradientError(
                f"{f.name}.backward returned {len(gxs)} gradients for {len(inputs)} inputs"
            )
        check = not f.trusted_grads
        needs = f.needs_input_grad
        i = -1
        # By index rather than zip(): the zip and its two extra iterators were a fifth of
        # this loop's cost on a small step's nodes.
        for x in inputs:
            i += 1
            gx = gxs[i]
            if gx is None or not needs[i]:
                continue
            data = x.data
            if type(gx) is not type(data):  # a NumPy scalar: the gradient of a 0-d input
                gx = as_array(f.xp, gx)
            if check and (gx.shape != data.shape or gx.dtype != data.dtype):
                check_gradient(f, x, gx)
            c = x.creator
            if c is not None:  # intermediate: sum this pass's gradients only
                if x in fresh:
                    x.grad = add_arrays(f.xp, x.grad, gx)
                else:
                    x.grad = gx
                    fresh.add(x)
                if c not in seen:
                    seen.add(c)
                    if nxt is None:
                        nxt = c
                    else:
                        push(heap, (-c.generation, -c.seq, c))
            elif x.grad is not None:  # leaf: accumulate across passes
                x.grad = add_arrays(f.xp, x.grad, gx)
            elif f.grad_may_alias:
                # A view or a pass-through of another gradient: give the leaf its own array,
                # so writing into one leaf's .grad never changes another array.
                g = gx * 1.0
                x.grad = g if type(g) is type(data) else as_array(f.xp, g)
            else:
                x.grad = gx
        if not retain_grad:
            if single:  # the output read above: no second dereference
                if out is not None and not out._retain and out is not root:
                    out.grad = None
            else:
                for ref in outputs:
                    out = ref()
                    if out is not None and not out._retain and out is not root:
                        out.grad = None
        if nxt is not None:
            if not heap:
                f = nxt
                continue
            push(heap, (-nxt.generation, -nxt.seq, nxt))
        elif not heap:
            return
        f = pop(heap)[2]
