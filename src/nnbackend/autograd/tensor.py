"""The :class:`Tensor`: a backend array plus its place in the graph."""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from nnbackend import config
from nnbackend.autograd import function as _function
from nnbackend.autograd import trace as _trace
from nnbackend.autograd.mode import is_grad_enabled
from nnbackend.errors import (
    ArgumentError,
    BackendMismatchError,
    DtypeError,
    GradientError,
    ShapeError,
)
from nnbackend.namespace import backend_for, namespace, ops_for
from nnbackend.typing import Array, Device, DType, Namespace

__all__ = ["Tensor", "as_tensor"]

_new = object.__new__
_switch = config.engine_switch


#: How many times :meth:`Tensor._apply` rebound a Tensor's arrays in place (a model moved to
#: another backend or device keeps its Parameter objects): an optimizer looks its parameters'
#: backends up again only when this moved since its last step (one comparison a step, where a
#: look at every parameter cost a small MLP step 2%).
rebinds = [0]


class Tensor:
    """A backend array (``.data``) that records the operations applied to it.

    Create one from a backend array, or from Python numbers (which take the active backend and
    default float dtype). ``requires_grad=True`` makes it a leaf whose ``.grad`` fills in on
    ``backward()``.

    >>> import nnbackend as nb
    >>> w = nb.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> loss = (w * w).sum()
    >>> loss.backward()
    >>> w.grad.tolist()
    [2.0, 4.0, 6.0]
    """

    __slots__ = (
        "__weakref__",
        "_retain",
        "_spare",
        "creator",
        "data",
        "generation",
        "grad",
        "name",
        "requires_grad",
    )
    # numpy's operators defer to ours (ndarray + Tensor -> Tensor.__radd__).
    __array_ufunc__ = None
    __array_priority__ = 1000

    data: Array
    grad: Array  # or None before a backward pass (callers filter; Array is Any)
    creator: Any
    generation: int
    requires_grad: bool
    name: str | None
    _retain: bool

    def __init__(self, data: Any, requires_grad: bool = False, name: str | None = None) -> None:
        if isinstance(data, Tensor):
            data = data.data
        elif type(data) in (float, int, bool, list, tuple):
            data = namespace().asarray(data)
        else:
            # Reject objects that belong to no backend, with a clear error; a NumPy scalar
            # (numpy.float64) becomes the 0-d array the Array API calls for.
            xp = backend_for(data)[0]
            if getattr(data, "shape", None) == ():
                data = _function.as_array(xp, data)
        requires_grad = bool(requires_grad)
        if requires_grad and not _is_real_floating(data):
            raise DtypeError(
                f"only floating-point tensors can require a gradient, got dtype {data.dtype}; "
                "a gradient of integers would be truncated to 0. Cast first, e.g. "
                "Tensor(xp.astype(x, xp.float32), requires_grad=True)"
            )
        self.data = data
        self.grad = None
        self.creator = None
        self.generation = 0
        self.requires_grad = requires_grad
        self.name = name
        self._retain = False
        self._spare = None

    @classmethod
    def _wrap(cls, data: Any, requires_grad: bool) -> Tensor:
        # The engine's constructor: no checks, a few slot writes.
        t = _new(cls)
        t.data = data
        t.grad = None
        t.creator = None
        t.generation = 0
        t.requires_grad = requires_grad
        t.name = None
        t._retain = False
        return t

    # -- array facts ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """The shape, as a tuple of ints."""
        return tuple(self.data.shape)

    @property
    def dtype(self) -> DType:
        """The backend dtype of ``.data``."""
        return self.data.dtype

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return int(self.data.ndim)

    @property
    def size(self) -> int:
        """The number of elements."""
        n = 1
        for d in self.data.shape:
            n *= int(d)
        return n

    @property
    def device(self) -> Device:
        """The device ``.data`` lives on (the backend's device object)."""
        return getattr(self.data, "device", "cpu")

    @property
    def backend(self) -> str:
        """The name of the backend ``.data`` belongs to."""
        return str(backend_for(self.data)[1].name)

    @property
    def xp(self) -> Namespace:
        """The Array API namespace of ``.data``."""
        return backend_for(self.data)[0]

    def item(self) -> float | int | bool:
        """The value of a one-element tensor as a Python number (reads it to the host)."""
        if self.size != 1:
            raise ShapeError(
                f"item() needs a tensor with one element, this one has shape {self.shape}"
            )
        x = self.data if self.ndim == 0 else self.xp.reshape(self.data, ())
        kind = self.xp.isdtype(x.dtype, "bool")
        if kind:
            return bool(x)
        if self.xp.isdtype(x.dtype, "integral"):
            return int(x)
        return float(x)

    def numpy(self) -> Array:
        """A host NumPy copy of ``.data``."""
        return ops_for(backend_for(self.data)[0], self.data).host_copy(self.data)

    def tolist(self) -> Any:
        """``.data`` as nested Python lists."""
        return self.numpy().tolist()

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return int(self.data.shape[0])

    def __iter__(self) -> Iterator[Tensor]:
        """The sub-tensors along the first axis, ``t[0]``, ``t[1]``, ... (in the graph, as
        indexing is). Python's fallback indexed until an IndexError, and an index past the
        end is a ShapeError here, so ``list(t)`` and ``for row in t`` failed at the end."""
        if self.ndim == 0:  # (checked at iter(t), as NumPy does, not at the first next())
            raise TypeError("iteration over a 0-d tensor")
        return map(self.__getitem__, range(int(self.data.shape[0])))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> Any:
        """``numpy.asarray(t)``: ``.data`` as its library converts it (NumPy's arrays as
        they are, torch's and JAX's on the CPU; CuPy refuses an implicit copy from the
        GPU: call :meth:`numpy`). It was an object array holding the Tensor."""
        convert = getattr(self.data, "__array__", None)
        if convert is None:
            raise TypeError(
                f"{type(self.data).__module__}.{type(self.data).__qualname__} cannot be "
                "converted to a NumPy array implicitly; call t.numpy() for a host copy"
            )
        array = convert()
        if dtype is not None and array.dtype != dtype:
            return array.astype(dtype)
        return array.copy() if copy else array

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        by = f", creator={self.creator.name}" if self.creator is not None else ""
        return f"Tensor({self.data!r}{grad}{by})"

    def __bool__(self) -> bool:
        if self.size != 1:  # (each library raised its own error, or answered)
            raise ShapeError(
                f"the truth value of a tensor of shape {self.shape} is ambiguous; reduce "
                "it to one element first, e.g. bool((t > 0).sum() > 0) for 'any'"
            )
        return bool(self.item())  # (array-api-strict takes bool() of 0-d arrays only)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        """``int(t)`` of a one-element tensor (truncated toward zero, as Python's ``int``)."""
        return int(self.item())

    def __index__(self) -> int:
        """A one-element integer tensor as an index (``range(t)``, ``lst[t]``), as NumPy's
        integer scalars index."""
        if not self.xp.isdtype(self.dtype, "integral"):
            raise TypeError(
                f"only integer tensors can be used as an index, this one is {self.dtype}"
            )
        return int(self.item())

    def __format__(self, spec: str) -> str:
        """``f"{loss:.4f}"`` formats a one-element tensor's value; others as their repr."""
        if self.size == 1:
            return format(self.item(), spec)
        return format(repr(self), spec)

    __hash__ = object.__hash__

    # -- graph -------------------------------------------------------------------------
    def backward(
        self, grad: Any = None, *, retain_grad: bool = False, create_graph: bool = False
    ) -> None:
        """Compute the gradient of this tensor with respect to every tensor in its graph that
        requires one, and add it to their ``.grad``.

        Args:
            grad: the gradient of the final result with respect to this tensor; may be
                omitted only for a one-element tensor (it is then 1).
            retain_grad: keep the gradients of intermediate tensors too (otherwise only leaves
                and tensors marked with :meth:`retain_grad` keep theirs).
            create_graph: record the backward pass itself, so each leaf's ``.grad`` is a
                Tensor in the graph that can be differentiated again (higher-order
                derivatives; see :func:`nnbackend.autograd.higher.grad`). Slower: the default
                runs the backward on raw arrays. Optimizers expect array gradients: for a
                gradient penalty, take the inner gradients with ``nb.grad(...,
                create_graph=True)`` and call a plain ``backward()`` on the total loss.

        Calling ``backward`` twice adds the second gradients to the first, on the leaves (as
        PyTorch does with ``retain_graph=True``): the graph is kept as long as this tensor
        lives. Call ``zero_grad()`` on the model or optimizer between steps. A retained
        intermediate's ``.grad`` holds the gradient of the latest pass only. Leaf gradients
        are always arrays of their own: writing into one never changes another array.
        """
        if not self.requires_grad:
            raise GradientError(
                "backward() on a tensor that does not require a gradient: no input of its graph "
                "has requires_grad=True (or it was computed under no_grad())"
            )
        if _switch.maybe:
            rec = _trace.current()
            if rec is not None:  # compile_step is recording: it runs and records this pass
                rec.backward(self, grad, retain_grad, create_graph)
                return
        data = self.data
        xp = backend_for(data)[0]
        if grad is None:
            if data.ndim == 0:  # the usual case, a loss: a copy of a cached one, on its device
                grad = ops_for(xp, data).one(data.dtype, getattr(data, "device", None))
            elif self.size != 1:
                raise GradientError(
                    f"backward() without a gradient needs a one-element tensor, this one has "
                    f"shape {self.shape}; pass grad= an array of that shape (or reduce it "
                    "first, e.g. loss.sum())"
                )
            else:
                grad = xp.ones_like(data)
        else:
            if isinstance(grad, Tensor):
                grad = grad.data
            elif not hasattr(grad, "shape"):  # a (nested) list or a number: as an array
                try:
                    grad = xp.asarray(grad, dtype=data.dtype)
                except (TypeError, ValueError) as e:
                    raise GradientError(
                        f"backward() got a gradient of type {type(grad).__name__}; pass an "
                        f"array, Tensor or nested list of shape {self.shape}"
                    ) from e
            if tuple(grad.shape) != self.shape:
                raise GradientError(
                    f"backward() got a gradient of shape {tuple(grad.shape)} for a tensor of "
                    f"shape {self.shape}"
                )
            if _foreign(grad, data):
                raise BackendMismatchError(
                    f"backward() got a gradient of type {type(grad).__module__}."
                    f"{type(grad).__qualname__} for a tensor of "
                    f"{type(data).__module__}.{type(data).__qualname__}; move it with "
                    "nb.to_device(grad, backend) first"
                )
            if not xp.isdtype(grad.dtype, ("bool", "integral", "real floating")):
                raise GradientError(
                    f"backward() got a gradient of dtype {grad.dtype}; gradients are real "
                    "(a complex one would lose its imaginary part)"
                )
            # A copy (also when a cast is needed): the caller's array never becomes a .grad
            # that later in-place updates would write through.
            grad = xp.astype(grad, self.data.dtype, copy=True)
        if create_graph:
            from nnbackend.autograd.higher import backward_create_graph

            backward_create_graph(self, grad, retain_grad)
            return
        if type(grad) is not type(data):  # NumPy: a 0-d array, not a numpy.float64
            grad = _function.as_array(xp, grad)
        if self.creator is None:  # a leaf: accumulate like any other gradient
            self.grad = grad if self.grad is None else _function.add_arrays(xp, self.grad, grad)
            return
        _function.run_backward(self, grad, retain_grad)

    def retain_grad(self) -> Tensor:
        """Keep this intermediate tensor's gradient after ``backward``; returns ``self``."""
        self._retain = True
        return self

    def detach(self) -> Tensor:
        """The same data, outside the graph."""
        return Tensor._wrap(self.data, False)

    def zero_grad(self) -> None:
        """Forget the gradient (``.grad`` becomes ``None``).

        The array is kept aside as a spare: where the backend can prove that nothing else
        refers to it any more (NumPy: its reference count), the next ``backward`` writes
        this tensor's new gradient into it instead of allocating one, so a training step
        allocates no new gradient arrays (and glibc does not page-fault megabytes in again
        every step). A gradient you kept (``g = p.grad``) is never written into: it is
        simply not reused. ``p.grad = None`` instead frees the array at once.
        """
        g = self.grad
        if g is not None:
            self._spare = g
            self.grad = None
        if _switch.maybe:  # a compiled step being recorded notes the reset
            rec = _trace.current()
            if rec is not None:
                rec.zero_grad(self)

    # -- moving (nnbackend.to_device calls these; see nnbackend.device.Movable) ------------
    def _apply(self, fn: Callable[[Array], Array]) -> Tensor:
        """Rebind ``.data`` and ``.grad`` to ``fn`` of them (``fn`` maps one backend array to
        another, e.g. onto another device); both are computed before either is bound.
        Returns ``self``."""
        rebinds[0] += 1  # (first: a move that fails half way has rebound something too)
        data = fn(self.data)
        grad = None if self.grad is None else fn(self.grad)
        self.data = data
        self.grad = grad
        self._spare = None  # a spare of the old device or dtype would never fit
        return self

    def _applied(self, fn: Callable[[Array], Array]) -> Tensor:
        """A new leaf Tensor of the same class holding ``fn(self.data)``, with
        ``requires_grad``, ``name`` and ``fn(self.grad)`` carried over; ``self`` is unchanged."""
        new = type(self)._wrap(fn(self.data), self.requires_grad)
        new.name = self.name
        if self.grad is not None:
            new.grad = fn(self.grad)
        return new

    # -- operators (defined in ops.py, bound below) ---------------------------------------
    def __neg__(self) -> Tensor:
        return _ops.neg(self)

    def __pos__(self) -> Tensor:
        """``+t`` is ``t`` (as ``torch.positive``)."""
        return self

    def __abs__(self) -> Tensor:
        """``abs(t)``: elementwise absolute value, as :meth:`abs` (NumPy arrays and torch
        tensors support the builtin too)."""
        return _F.abs(self)

    def __add__(self, other: Any) -> Tensor:
        return _ops.add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return _ops.add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return _ops.sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return _ops.sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return _ops.mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return _ops.mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return _ops.div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return _ops.div(other, self)

    def __pow__(self, other: Any) -> Tensor:
        return _ops.power(self, other)

    def __rpow__(self, other: Any) -> Tensor:
        return _ops.power(other, self)

    def __matmul__(self, other: Any) -> Tensor:
        return _ops.matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return _ops.matmul(other, self)

    # In-place operators. Without them Python rebound the name to a new Tensor, so the
    # hand-written SGD step ``p -= lr * p.grad`` under no_grad() left the parameter as it was.
    def __iadd__(self, other: Any) -> Tensor:
        return _in_place(self, other, _ops.add, "+=")

    def __isub__(self, other: Any) -> Tensor:
        return _in_place(self, other, _ops.sub, "-=")

    def __imul__(self, other: Any) -> Tensor:
        return _in_place(self, other, _ops.mul, "*=")

    def __itruediv__(self, other: Any) -> Tensor:
        return _in_place(self, other, _ops.div, "/=")

    def __ipow__(self, other: Any) -> Tensor:
        return _in_place(self, other, _ops.power, "**=")

    def __imatmul__(self, other: Any) -> Tensor:
        return _in_place(self, other, _ops.matmul, "@=")

    def __getitem__(self, key: Any) -> Tensor:
        return _F.getitem(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        """``t[key] = value`` outside the graph: ``t.data`` becomes an updated copy (graphs
        recorded before keep the values they saw). Where a gradient would flow through the
        write (``t`` requires one, or was computed from tensors that do, and gradients are
        enabled) it is a :class:`~nnbackend.errors.GradientError`: write under
        ``nb.no_grad()``, or build the value out of place with
        ``nnbackend.functional.where``. See :mod:`nnbackend.autograd.assign`."""
        _assign.setitem(self, key, value)

    # Comparisons carry no gradient: they return a boolean Tensor outside the graph.
    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _compare(self, other, operator.eq, "==")

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _compare(self, other, operator.ne, "!=")

    def __lt__(self, other: Any) -> Tensor:
        return _compare(self, other, operator.lt, "<")

    def __le__(self, other: Any) -> Tensor:
        return _compare(self, other, operator.le, "<=")

    def __gt__(self, other: Any) -> Tensor:
        return _compare(self, other, operator.gt, ">")

    def __ge__(self, other: Any) -> Tensor:
        return _compare(self, other, operator.ge, ">=")

    # -- shape and reductions -------------------------------------------------------------
    def reshape(self, *shape: Any) -> Tensor:
        """Same data, new shape (one ``-1`` allowed)."""
        if len(shape) == 1 and isinstance(shape[0], tuple | list):
            shape = tuple(shape[0])
        return _ops.reshape(self, shape)

    def transpose(self, *axes: Any) -> Tensor:
        """Permute the axes (reverse them when none are given)."""
        if len(axes) == 1 and isinstance(axes[0], tuple | list):
            axes = tuple(axes[0])
        return _ops.transpose(self, axes or None)

    @property
    def T(self) -> Tensor:
        """The axes reversed."""
        return _ops.transpose(self, None)

    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Sum over ``axis`` (all axes when ``None``)."""
        return _ops.sum(self, axis, keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Mean over ``axis`` (all axes when ``None``)."""
        return _ops.mean(self, axis, keepdims)

    def max(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Maximum over ``axis``; the gradient is shared equally among tied maxima."""
        return _ops.max(self, axis, keepdims)

    def exp(self) -> Tensor:
        """Elementwise exponential."""
        return _ops.exp(self)

    def log(self) -> Tensor:
        """Elementwise natural logarithm."""
        return _ops.log(self)

    def min(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Minimum over ``axis``; the gradient is shared equally among tied minima."""
        return _F.min(self, axis, keepdims)

    def prod(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Product over ``axis`` (exact gradients also at zeros)."""
        return _F.prod(self, axis, keepdims)

    def var(self, axis: Any = None, keepdims: bool = False, correction: float = 0.0) -> Tensor:
        """Variance over ``axis``, divided by ``N - correction``."""
        return _F.var(self, axis, keepdims, correction)

    def std(self, axis: Any = None, keepdims: bool = False, correction: float = 0.0) -> Tensor:
        """Standard deviation over ``axis``, from the variance divided by ``N - correction``."""
        return _F.std(self, axis, keepdims, correction)

    def logsumexp(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """``log(sum(exp(self)))`` over ``axis``, computed without overflow."""
        return _F.logsumexp(self, axis, keepdims)

    def argmax(self, axis: int | None = None, keepdims: bool = False) -> Tensor:
        """Index of the maximum along ``axis`` (flattened when None); no gradient."""
        return _F.argmax(self, axis, keepdims)

    def argmin(self, axis: int | None = None, keepdims: bool = False) -> Tensor:
        """Index of the minimum along ``axis`` (flattened when None); no gradient."""
        return _F.argmin(self, axis, keepdims)

    def abs(self) -> Tensor:
        """Elementwise absolute value."""
        return _F.abs(self)

    def sqrt(self) -> Tensor:
        """Elementwise square root."""
        return _F.sqrt(self)

    def log1p(self) -> Tensor:
        """Elementwise ``log(1 + x)``."""
        return _F.log1p(self)

    def expm1(self) -> Tensor:
        """Elementwise ``exp(x) - 1``."""
        return _F.expm1(self)

    def sin(self) -> Tensor:
        """Elementwise sine."""
        return _F.sin(self)

    def cos(self) -> Tensor:
        """Elementwise cosine."""
        return _F.cos(self)

    def tan(self) -> Tensor:
        """Elementwise tangent."""
        return _F.tan(self)

    def tanh(self) -> Tensor:
        """Elementwise hyperbolic tangent."""
        return _F.tanh(self)

    def sigmoid(self) -> Tensor:
        """Elementwise logistic function, without overflow."""
        return _F.sigmoid(self)

    def softplus(self) -> Tensor:
        """Elementwise ``log(1 + exp(x))``, without overflow."""
        return _F.softplus(self)

    def clip(self, min: float | None = None, max: float | None = None) -> Tensor:
        """Limited to ``[min, max]``."""
        return _F.clip(self, min, max)

    def maximum(self, other: Any) -> Tensor:
        """Elementwise maximum with ``other`` (broadcasting)."""
        return _F.maximum(self, other)

    def minimum(self, other: Any) -> Tensor:
        """Elementwise minimum with ``other`` (broadcasting)."""
        return _F.minimum(self, other)

    def permute(self, *axes: Any) -> Tensor:
        """The axes in the order ``axes``."""
        if len(axes) == 1 and isinstance(axes[0], tuple | list):
            axes = tuple(axes[0])
        return _F.permute(self, axes)

    def flatten(self, start: int = 0, end: int = -1) -> Tensor:
        """Axes ``start`` to ``end`` (included) merged into one."""
        return _F.flatten(self, start, end)

    def squeeze(self, axis: Any = None) -> Tensor:
        """Without the given length-1 axes (all of them when None)."""
        return _F.squeeze(self, axis)

    def expand_dims(self, axis: int) -> Tensor:
        """With a new length-1 axis at ``axis``."""
        return _F.expand_dims(self, axis)

    unsqueeze = expand_dims

    def broadcast_to(self, shape: Any) -> Tensor:
        """Broadcast to ``shape`` (the gradient sums back)."""
        return _F.broadcast_to(self, shape)

    def sum_to(self, shape: Any) -> Tensor:
        """Summed down to ``shape`` (the gradient of a broadcast)."""
        return _F.sum_to(self, shape)

    def flip(self, axis: Any = None) -> Tensor:
        """Elements reversed along ``axis`` (all axes when None)."""
        return _F.flip(self, axis)

    def take(self, indices: Any, axis: int = 0) -> Tensor:
        """The elements at integer ``indices`` along ``axis`` (a gather)."""
        return _F.take(self, indices, axis)

    def split(self, sections: Any, axis: int = 0) -> tuple[Tensor, ...]:
        """Split along ``axis`` into equal parts or parts of the given lengths."""
        return _F.split(self, sections, axis)

    def astype(self, dtype: DType | str) -> Tensor:
        """This tensor converted to the floating ``dtype`` ("float16", "float32", ... or a
        dtype object), in the graph: the gradient is converted back to this tensor's dtype.
        Always a new array."""
        return _ops.cast(self, dtype)


def _is_real_floating(data: Any) -> bool:
    return bool(backend_for(data)[0].isdtype(data.dtype, "real floating"))


def _raw(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def _library(a: Any) -> str:
    return type(a).__module__.partition(".")[0]


def _foreign(a: Any, data: Any) -> bool:
    """Whether ``a`` is an array of another library than ``data``'s that the arithmetic
    operators would refuse: one whose dtype differs (JAX takes NumPy arrays of its dtypes;
    torch's dtypes never equal NumPy's)."""
    if _library(a) == _library(data):
        return False
    try:
        with warnings.catch_warnings():  # (array-api-strict warns that they always differ)
            warnings.simplefilter("ignore")
            return bool(a.dtype != data.dtype)
    except (TypeError, ValueError):
        return True


def _compare(t: Tensor, other: Any, compare: Callable[[Any, Any], Any], symbol: str) -> Any:
    """``t symbol other`` elementwise, as NumPy compares, as a boolean Tensor outside the
    graph. A list is compared as an array (torch answered ``t == [1.0, 2.0]`` with one
    False); an array of another library is a :class:`BackendMismatchError` where the
    arithmetic operators refuse it too (torch answered ``t != ndarray`` with one True);
    ``None`` and other objects get Python's answer (``==`` is identity, ``<`` a
    TypeError)."""
    data = t.data
    value = _raw(other)
    if isinstance(value, list | tuple):
        xp = backend_for(data)[0]
        floating = _is_real_floating(data)  # (torch makes float lists float32)
        try:
            value = xp.asarray(
                value, dtype=data.dtype if floating else None, device=getattr(data, "device", None)
            )
        except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
            raise ArgumentError(
                f"t {symbol} value: the list {value!r:.60} is no rectangular nesting of "
                f"numbers ({exc})"
            ) from exc
    elif type(value) is bool and not backend_for(data)[0].isdtype(data.dtype, "bool"):
        value = int(value)  # (True is 1, as NumPy compares it; the standard has no bool here)
    elif type(value) not in (int, float) and not hasattr(value, "dtype"):
        return NotImplemented
    elif hasattr(value, "dtype") and _foreign(value, data):
        raise BackendMismatchError(
            f"t {symbol} value: value is a {type(value).__module__}.{type(value).__qualname__} "
            f"and t holds a {type(data).__module__}.{type(data).__qualname__}; compare with "
            "a Python number, or move the value with nb.to_device(value, backend) first"
        )
    try:
        result = compare(data, value)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        shape = getattr(value, "shape", None)
        if shape is not None:
            _ops.check_broadcast(symbol, tuple(data.shape), tuple(shape), exc)
        raise DtypeError(
            f"t {symbol} value: {_library(data)} cannot compare a {data.dtype} tensor with "
            f"{value!r:.60} ({type(exc).__name__}: {exc}); cast one of them first"
        ) from exc
    if type(result) is not type(data):  # NumPy gives a numpy.bool_ for 0-d operands
        result = _function.as_array(backend_for(data)[0], result)
    return Tensor._wrap(result, False)


def _in_place(t: Tensor, other: Any, op: Callable[[Any, Any], Tensor], symbol: str) -> Any:
    """``t op= other``, as :meth:`Tensor.__setitem__` writes: outside the graph, ``t.data``
    bound to the result (graphs recorded before keep the values they saw), ``t`` itself
    returned, its shape and dtype kept. Where a gradient flows (gradients enabled and ``t``
    or ``other`` requires one, or ``t`` was computed in the graph), a tensor of the graph
    gets Python's fallback, ``t = t op other``: a new node the gradient flows through; a
    leaf that requires a gradient is refused, as PyTorch refuses it."""
    if is_grad_enabled() and (
        t.requires_grad or t.creator is not None or getattr(other, "requires_grad", False)
    ):
        if t.creator is None and t.requires_grad:
            raise GradientError(
                f"t {symbol} value on a tensor that requires a gradient (a parameter, or a "
                "leaf made with requires_grad=True): the gradient would not see the update. "
                "Update parameters under `with nb.no_grad():` (the hand-written SGD step), or "
                f"write t = t {symbol[:-1]} value for a new tensor in the graph"
            )
        return NotImplemented
    _trace.refuse(
        f"t {symbol} value writes a tensor outside the engine's operations, which a replay "
        "would not repeat; update parameters with an optimizer (nnbackend.optim) in a "
        "compiled step"
    )
    value = _raw(other)
    data = t.data
    if not _is_real_floating(data) and (
        type(value) is float or (hasattr(value, "dtype") and _is_real_floating(value))
    ):
        result = None  # a float into an integer or boolean tensor: refused below, unasked
    else:
        result = op(t, other).data
    if result is None or result.dtype != data.dtype:
        raise DtypeError(
            f"t {symbol} value: t has dtype {data.dtype} and the result would not; an "
            "in-place update keeps t's dtype (NumPy refuses the cast too); write "
            f"t = t {symbol[:-1]} value for a new tensor, or cast the value first"
        )
    shape = tuple(result.shape)
    if shape != t.shape:
        raise ShapeError(
            f"t {symbol} value: the result has shape {shape} where t has {t.shape}; an "
            f"in-place update keeps t's shape (write t = t {symbol[:-1]} value for a new one)"
        )
    t.data = result
    return t


def as_tensor(x: Any) -> Tensor:
    """``x`` itself when it is a Tensor, else a constant Tensor around the array."""
    return x if isinstance(x, Tensor) else Tensor(x)


_function.Tensor = Tensor

from nnbackend.autograd import assign as _assign  # noqa: E402  (assign needs Tensor defined)
from nnbackend.autograd import functions as _F  # noqa: E402
from nnbackend.autograd import ops as _ops  # noqa: E402  (ops needs Tensor defined)
