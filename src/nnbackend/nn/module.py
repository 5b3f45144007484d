"""``Parameter``, ``Module`` and ``Sequential``: the containers every layer is built from.

A :class:`Module` registers the :class:`Parameter` and sub-``Module`` objects assigned to its
attributes, in assignment order, so ``parameters()`` and ``named_parameters()`` always come out
in the same order (never through a set) and checkpoints written on one backend load on another.

>>> import nnbackend as nb
>>> from nnbackend import nn
>>> model = nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 1))
>>> [name for name, _ in model.named_parameters()]
['0.weight', '0.bias', '2.weight', '2.bias']
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from nnbackend.autograd.tensor import Tensor
from nnbackend.config import normalize_dtype
from nnbackend.device import map_arrays, once, to_device
from nnbackend.errors import ArgumentError, CheckpointError, DtypeError
from nnbackend.namespace import backend_for, ops_for
from nnbackend.typing import Array

__all__ = ["Module", "Parameter", "Sequential"]

# Module attributes that are its own bookkeeping, never arrays to move.
_NOT_STATE = frozenset({"_parameters", "_modules", "_buffers", "training", "_layers"})


class Parameter(Tensor):
    """A Tensor that a :class:`Module` registers as trainable: ``requires_grad`` is True.

    ``.data`` is the backend array and may be reassigned (optimizers rebind it on backends
    without in-place writes). After ``backward()``, ``.grad`` is an array of the same backend,
    shape and dtype as ``.data`` (the engine checks every gradient it stores).

    >>> import nnbackend as nb
    >>> p = nb.nn.Parameter([1.0, 2.0])
    >>> p.requires_grad
    True
    """

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True, name: str | None = None) -> None:
        super().__init__(data, requires_grad=requires_grad, name=name)
        xp = backend_for(self.data)[0]
        if not xp.isdtype(self.data.dtype, "real floating"):
            raise DtypeError(
                f"a Parameter holds floating-point values, got dtype {self.data.dtype}; cast "
                "it first (xp.astype(x, xp.float32))"
            )

    def __repr__(self) -> str:
        return f"Parameter({self.data!r})"


# A count of the changes to what settings_key reads of any module (train(), eval(), assigning
# a setting, adding, replacing or deleting a submodule, parameter or buffer): a compiled
# Trainer step keys its recordings on its model's modules and their settings (settings_key),
# and reads them again only when this count moved. next() on a count is atomic under the GIL.
_next_change = itertools.count(1).__next__
_changes = 0
_SETTING_TYPES = (bool, int, float, str, type(None))


def _changed() -> None:
    global _changes
    _changes = _next_change()


def changes() -> int:
    """A number that moves whenever what :func:`settings_key` reads of any module changes
    (``train()``/``eval()``, a setting assigned, a submodule, parameter or buffer added,
    replaced or deleted). Internal API (the compiled Trainer step's key)."""
    return _changes


def settings_key(root: Module) -> tuple[Any, ...]:
    """What a recording of ``root``'s forward depends on besides arrays: each module, its
    Python settings (``training``, ``p`` of Dropout, a momentum, a slope: attributes that
    are bools, numbers, strings or None) and which parameters and buffers it holds (by
    identity). Internal API: ``Trainer(compile=True)`` records its step again when this
    changes (read again only when :func:`changes` moved)."""
    key: list[Any] = []
    for m in root.modules():
        d = m.__dict__
        settings = tuple(
            (k, v if v == v else "nan")  # (NaN never equals itself)
            for k, v in d.items()
            if type(v) in _SETTING_TYPES
        )
        held = tuple(map(id, m._parameters.values())) + tuple(map(id, m._buffers.values()))
        key.append((m, settings, held))
    return tuple(key)


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    return f"shape {tuple(shape) if shape is not None else '?'}, dtype {dtype}"


class Module:
    """Base class of layers and models.

    Subclasses assign :class:`Parameter` and ``Module`` objects to attributes in ``__init__``
    and define ``forward``; calling the module runs ``forward``. Calling
    ``super().__init__()`` is optional (the registries are made in ``__new__``).

    >>> import nnbackend as nb
    >>> from nnbackend import nn
    >>> class Affine(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.scale = nn.Parameter([2.0])
    ...         self.shift = nn.Parameter([1.0])
    ...     def forward(self, x):
    ...         return x * self.scale + self.shift
    >>> Affine()(nb.Tensor([3.0])).tolist()
    [7.0]
    """

    training: bool
    _parameters: dict[str, Parameter | None]
    _modules: dict[str, Module | None]
    _buffers: dict[str, Tensor | None]

    def __new__(cls, *args: Any, **kwargs: Any) -> Module:
        self = super().__new__(cls)
        d = self.__dict__
        d["_parameters"] = {}
        d["_modules"] = {}
        d["_buffers"] = {}
        d["training"] = True
        return self

    def __init__(self) -> None:
        pass

    # -- attribute registration ---------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        params = self._parameters
        modules = self._modules
        if isinstance(value, Parameter):
            modules.pop(name, None)
            self._buffers.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            self._buffers.pop(name, None)
            modules[name] = value
        elif type(value) in (list, tuple, dict) and _holds_layers(value):
            kind = "ModuleDict" if type(value) is dict else "ModuleList"
            raise TypeError(
                f"{type(self).__name__}.{name} is a plain {type(value).__name__} of layers or "
                "parameters: their parameters would be missed by parameters(), the optimizer, "
                f"to() and checkpoints; wrap it: self.{name} = nn.{kind}(...)"
            )
        elif name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign a {type(value).__name__} to parameter {name!r} of "
                    f"{type(self).__name__}: assign an nn.Parameter (or None), or set "
                    f"`.{name}.data = array` to replace its values"
                )
            params[name] = None
        elif name in self._buffers:
            self._set_buffer(name, value)
            return
        elif name in modules:
            if value is not None:
                raise TypeError(
                    f"cannot assign a {type(value).__name__} to submodule {name!r} of "
                    f"{type(self).__name__}: assign an nn.Module (or None)"
                )
            modules[name] = None
        elif (
            type(value) not in _SETTING_TYPES
            and type(self.__dict__.get(name)) not in _SETTING_TYPES
        ):
            # A plain attribute that is no setting, before or after (an array a forward
            # keeps every step): settings_key does not read it, so the count stays.
            self.__dict__[name] = value
            return
        # Registered members also live in __dict__, so reading them costs a plain lookup.
        self.__dict__[name] = value
        _changed()

    def __delattr__(self, name: str) -> None:
        _changed()
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, array: Array | Tensor | None) -> None:
        """Register ``array`` (a backend array, a Tensor, or ``None``) as the state ``name``
        that is not trained but belongs to the model, such as BatchNorm's running mean.

        A buffer is held as a :class:`~nnbackend.Tensor` that requires no gradient (read
        ``module.name.data`` for the array); assigning an array to ``module.name`` later
        replaces its values. Buffers are listed by :meth:`named_buffers`, saved and loaded
        with the parameters (:meth:`state_dict`, ``nnbackend.save`` / ``load``) and moved by
        :meth:`to`, but never handed to an optimizer.

        Raises:
            ArgumentError: ``name`` is already a parameter or a submodule, or not an
                identifier without dots.
        """
        if not isinstance(name, str) or not name.isidentifier():
            raise ArgumentError(f"buffer name must be an identifier without dots, got {name!r}")
        if name in self._parameters or name in self._modules:
            raise ArgumentError(
                f"cannot register buffer {name!r} on {type(self).__name__}: it is already a "
                "parameter or a submodule; pick another name"
            )
        self._buffers[name] = None
        self._set_buffer(name, array)

    def _set_buffer(self, name: str, value: Any) -> None:
        if value is not None and not isinstance(value, Tensor):
            value = Tensor(value, requires_grad=False)
        elif isinstance(value, Parameter):
            raise TypeError(
                f"cannot assign a Parameter to buffer {name!r} of {type(self).__name__}: "
                "assign an array (buffers are not trained)"
            )
        self._buffers[name] = value
        self.__dict__[name] = value
        _changed()

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register ``param`` (or a ``None`` placeholder) under ``name``.

        Raises:
            ArgumentError: ``name`` is empty, holds a dot or is the module's own bookkeeping
                (``training``, ``_parameters``, ...).
        """
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter needs an nn.Parameter, got {type(param)}")
        _check_member_name(self, name, "parameter")
        self._modules.pop(name, None)
        self._parameters[name] = param
        self.__dict__[name] = param
        _changed()

    def add_module(self, name: str, module: Module | None) -> None:
        """Register ``module`` (or a ``None`` placeholder) under ``name``.

        Raises:
            ArgumentError: ``name`` is empty, holds a dot or is the module's own bookkeeping
                (``training``, ``_parameters``, ...).
        """
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module needs an nn.Module, got {type(module)}")
        _check_member_name(self, name, "submodule")
        self._parameters.pop(name, None)
        self._modules[name] = module
        self.__dict__[name] = module
        _changed()

    # -- calling ------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The computation; subclasses define it."""
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Calling a module runs its forward: make the class's __call__ that very function, so
        # a layer call costs one Python frame, not two (about 0.4 us a layer, a tenth of a
        # small layer's step). A __call__ a class defines itself is left alone.
        super().__init_subclass__(**kwargs)
        inherited = cls.__call__
        default = inherited is Module.__call__ or any(
            inherited is base.__dict__.get("forward") for base in cls.__mro__[1:]
        )
        if "__call__" not in cls.__dict__ and "forward" in cls.__dict__ and default:
            cls.__call__ = cls.__dict__["forward"]  # type: ignore[method-assign]

    # -- traversal -----------------------------------------------------------------------
    def named_parameters(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, parameter)`` pairs: this module's own parameters in registration
        order, then each child's, depth first in registration order. A parameter shared by
        several modules is listed once, under its first name."""
        seen: set[int] = set()
        modules = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for module_prefix, module in modules:
            for name, param in module._parameters.items():
                if param is None or id(param) in seen:
                    continue
                seen.add(id(param))
                yield (f"{module_prefix}.{name}" if module_prefix else name), param

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """The parameters, in the order of :meth:`named_parameters`."""
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Tensor]]:
        """``(dotted name, buffer)`` pairs (buffers are Tensors that need no gradient; see
        :meth:`register_buffer`), in the order of :meth:`named_parameters`: this module's
        own in registration order, then each child's, depth first. A buffer shared by several
        modules is listed once."""
        seen: set[int] = set()
        modules = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for module_prefix, module in modules:
            for name, buf in module._buffers.items():
                if buf is None or id(buf) in seen:
                    continue
                seen.add(id(buf))
                yield (f"{module_prefix}.{name}" if module_prefix else name), buf

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        """The buffers, in the order of :meth:`named_buffers`."""
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    def named_state(self) -> Iterator[tuple[str, Tensor]]:
        """Everything a checkpoint holds: :meth:`named_parameters`, then
        :meth:`named_buffers`."""
        yield from self.named_parameters()
        yield from self.named_buffers()

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """``(name, module)`` for the direct submodules, in registration order."""
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self) -> Iterator[Module]:
        """The direct submodules, in registration order."""
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """``(dotted name, module)`` for this module (name ``prefix``) and every descendant,
        depth first; a module reachable twice is listed once."""
        seen: set[int] = set()
        stack: list[tuple[str, Module]] = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            kids = [
                (f"{name}.{child_name}" if name else child_name, child)
                for child_name, child in module.named_children()
            ]
            stack.extend(reversed(kids))

    def modules(self) -> Iterator[Module]:
        """This module and every descendant, depth first."""
        for _, module in self.named_modules():
            yield module

    # -- modes and gradients -------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode (``mode=True``) or evaluation mode on this module and every
        descendant; returns ``self``."""
        mode = bool(mode)
        for module in self.modules():
            module.__dict__["training"] = mode
        _changed()
        return self

    def eval(self) -> Module:
        """Evaluation mode (``train(False)``): Dropout becomes the identity."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Forget every parameter's gradient (sets ``.grad`` to ``None``), keeping each
        array aside for the next ``backward`` to write into where nothing else refers to it
        (:meth:`nnbackend.Tensor.zero_grad`)."""
        for param in self.parameters():
            param.zero_grad()

    # -- devices -------------------------------------------------------------------------
    def _apply(self, fn: Callable[[Array], Array]) -> Module:
        """Rebind every array this module holds to ``fn`` of it, recursively through the
        children: parameters and their ``.grad`` (the same Parameter objects stay), buffers,
        and arrays or Tensors held in other attributes (also inside lists, dicts and tuples).
        ``fn`` maps one backend array to another and is called once per distinct array, so
        tied weights stay tied. Returns ``self``. :meth:`to` and ``nnbackend.to_device`` use
        it (moving everything first, then binding); a subclass caching something derived from
        its arrays overrides it and calls ``super()._apply(fn)``."""
        fn = once(fn)
        for child in self.children():
            child._apply(fn)
        for tensor in (*self._parameters.values(), *self._buffers.values()):
            if tensor is not None:
                tensor._apply(fn)
        skip = (_NOT_STATE, self._parameters, self._modules, self._buffers)
        for key, value in list(vars(self).items()):
            if not any(key in names for names in skip):
                new = map_arrays(value, fn)
                if new is not value:
                    self.__dict__[key] = new
        return self

    def to(self, target: Any = None, *, copy: bool | None = None) -> Module:
        """Move every parameter (with its gradient) and every array this module or a
        descendant holds to ``target``, in place, and return ``self``: ``model.to("cupy")``,
        ``model.to("cupy:1")``, ``model.to("numpy")``. See :func:`nnbackend.to_device`.
        Parameters keep their identity, so an optimizer built on them stays valid; move its
        state too with ``nnbackend.to_device(optimizer, target)``."""
        result: Module = to_device(self, target, copy=copy)
        return result

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self, *, layout: str = "nnbackend") -> dict[str, Any]:
        """``{dotted name: array}`` for every parameter, in :meth:`named_parameters` order,
        then every buffer (:meth:`named_buffers`).

        The arrays are the parameters' own ``.data`` (no copy), as in PyTorch: copy them if
        you keep training and need the old values.

        Args:
            layout: ``"nnbackend"`` (this package's layout) or ``"torch"``: names and array
                layouts of the equivalent PyTorch modules, so ``torch_model.load_state_dict(
                {k: torch.as_tensor(v) for k, v in model.state_dict(layout="torch").items()})``
                works (``Linear``'s weight is transposed to PyTorch's ``(out, in)``: a view,
                not a copy, where the backend makes views).
        """
        _check_layout(layout)
        state = {name: param.data for name, param in self.named_state()}
        if layout == "nnbackend":
            return state
        return _convert_layout(self, state, layout, export=True)

    def load_state_dict(
        self, state: Mapping[str, Any], strict: bool = True, *, layout: str = "nnbackend"
    ) -> None:
        """Copy the arrays of ``state`` into the parameters (and buffers) of the same names.

        Every entry is checked first (names, shapes, dtypes), and only then is any parameter
        touched, so a bad checkpoint leaves the model unchanged. Arrays of another backend
        (a ``torch.Tensor`` on the numpy backend, say) are moved to each parameter's backend
        and device through the host. A dtype that differs from the parameter's is an error
        (cast the checkpoint explicitly).

        Args:
            state: ``{name: array}`` as :meth:`state_dict` makes it.
            strict: when True, missing and unexpected names are errors; when False, only the
                names present in both are loaded.
            layout: the layout ``state`` is in: ``"nnbackend"`` or ``"torch"`` (a PyTorch
                ``state_dict()`` of the equivalent model; see :meth:`state_dict`).

        Raises:
            CheckpointError: naming every missing or unexpected key, or the first entry whose
                shape or dtype does not fit.
        """
        _check_layout(layout)
        if not isinstance(state, Mapping):
            # A model, a path or a list of pairs would otherwise be probed with ``in`` (a
            # bare TypeError, a path read as its characters) or, with strict=False, load
            # nothing without a word.
            raise CheckpointError(
                f"{type(self).__name__}.load_state_dict needs a mapping {{name: array}} such "
                f"as other_model.state_dict(), got {type(state).__name__}; to read a file, use "
                "nnbackend.load(model, path)"
            )
        if layout != "nnbackend":
            state = _convert_layout(self, dict(state), layout, export=False)
        own: dict[str, Tensor] = dict(self.named_state())
        if strict:
            missing = [name for name in own if name not in state]
            unexpected = [name for name in state if name not in own]
            if missing or unexpected:
                raise CheckpointError(
                    f"state dict does not fit {type(self).__name__}: missing keys {missing}, "
                    f"unexpected keys {unexpected}"
                )
        new: list[tuple[Tensor, Any]] = []
        for name, param in own.items():
            if name not in state:
                continue
            new.append((param, convert_like(state[name], param.data, f"entry {name!r}")))
        for param, value in new:
            param.data = value

    def _state_to_layout(self, state: dict[str, Any], layout: str) -> dict[str, Any]:
        """This module's own entries (local names, no submodules) converted from nnbackend's
        layout to ``layout``. The default keeps them as they are; a layer whose names or
        array layouts differ from the other library's overrides this and
        :meth:`_state_from_layout` (``Linear`` transposes its weight for ``"torch"``)."""
        return state

    def _state_from_layout(self, state: dict[str, Any], layout: str) -> dict[str, Any]:
        """The inverse of :meth:`_state_to_layout`: ``layout``'s local entries to
        nnbackend's."""
        return state

    # -- printing ------------------------------------------------------------------------
    def summary(self, x: Any = None, *, input_shape: tuple[int, ...] | None = None) -> str:
        """A table of the layers: name, type, output shape (when an input is given) and
        parameter count, then the totals and the bytes by dtype. Print it.

        Args:
            x: an example input (an array or Tensor of the model's backend); the model runs
                once on it, in evaluation mode and without gradients.
            input_shape: instead of ``x``, the shape of one sample; the model runs on a
                batch of one zero sample of its parameters' dtype.

        >>> from nnbackend import nn
        >>> print(nn.Sequential(nn.Linear(2, 3), nn.ReLU()).summary(input_shape=(2,)))
        layer    type        output shape  parameters
        -------  ----------  ------------  ----------
        (model)  Sequential  (1, 3)        9
        0        Linear      (1, 3)        9
        1        ReLU        (1, 3)        0
        parameters: 9 (trainable 9); float64: 72 bytes
        """
        from nnbackend.nn.summary import summary

        return summary(self, x, input_shape=input_shape)

    def extra_repr(self) -> str:
        """The text inside the parentheses of this module's repr."""
        return ""

    def __repr__(self) -> str:
        children = list(self.named_children())
        extra = self.extra_repr()
        if not children:
            return f"{type(self).__name__}({extra})"
        lines = [f"{type(self).__name__}({extra}" if extra else f"{type(self).__name__}("]
        for name, child in children:
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        lines.append(")")
        return "\n".join(lines)


LAYOUTS = ("nnbackend", "torch")


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ArgumentError(f"unknown state-dict layout {layout!r}; expected one of {LAYOUTS}")


def _convert_layout(
    model: Module, state: dict[str, Any], layout: str, *, export: bool
) -> dict[str, Any]:
    """``state`` with each module's own entries converted by that module's layout hooks
    (to ``layout`` when ``export``, from it otherwise). Keys that belong to no module are
    kept, so the strict key check still names them."""
    remaining = dict(state)
    out: dict[str, Any] = {}
    for prefix, module in model.named_modules():
        head = f"{prefix}." if prefix else ""
        local = {
            key[len(head) :]: value
            for key, value in remaining.items()
            if key.startswith(head) and "." not in key[len(head) :]
        }
        if not local:
            continue
        for key in local:
            del remaining[head + key]
        if export:
            converted = module._state_to_layout(local, layout)
        else:
            converted = module._state_from_layout(local, layout)
        out.update({head + key: value for key, value in converted.items()})
    out.update(remaining)
    return out


def transpose_2d(value: Any) -> Any:
    """The transpose of a 2-d array of any backend (a Tensor's data, a torch tensor); other
    values are returned unchanged, for the shape check that follows to name."""
    if isinstance(value, Tensor):
        value = value.data
    if len(getattr(value, "shape", ())) != 2:
        return value
    try:
        xp = backend_for(value)[0]
    except Exception:
        return value
    return xp.permute_dims(value, (1, 0))


def _check_member_name(module: Module, name: Any, kind: str) -> None:
    """Raise :class:`ArgumentError` unless ``name`` may name a parameter or submodule of
    ``module``: a non-empty string without a dot (dotted names are the state dict's paths:
    a child ``"b.c"`` of ``"a"`` and a child ``"c"`` of ``"a.b"`` would both be ``"a.b.c"``,
    and one array would load into both) that is not the module's own bookkeeping (it would
    replace ``training`` or a registry in ``__dict__``)."""
    if not isinstance(name, str) or not name or "." in name or name in _NOT_STATE:
        raise ArgumentError(
            f"{kind} name must be a non-empty string without '.' other than "
            f"{sorted(_NOT_STATE)}, got {name!r} (on {type(module).__name__}); pick another name"
        )


def _holds_layers(value: Any) -> bool:
    items = value.values() if type(value) is dict else value
    return any(isinstance(item, (Module, Parameter)) for item in items)


def convert_like(value: Any, like: Array, where: str) -> Array:
    """A copy of ``value`` on ``like``'s backend and device, after checking shape and dtype;
    ``where`` names the entry in the :class:`~nnbackend.errors.CheckpointError` otherwise.
    Shared by ``Module.load_state_dict`` and the optimizers' ``load_state_dict``."""
    if isinstance(value, Tensor):
        value = value.data
    shape = getattr(value, "shape", None)
    if shape is None or tuple(shape) != tuple(like.shape):
        raise CheckpointError(
            f"{where} has {_describe(value)}; the parameter has shape {tuple(like.shape)}"
        )
    try:
        record_v = backend_for(value)[1]
    except Exception as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    xp, record = backend_for(like)
    if _dtype_name(value.dtype) != _dtype_name(like.dtype):
        raise CheckpointError(
            f"{where} has dtype {value.dtype}; the parameter has dtype {like.dtype} "
            "(cast the checkpoint first: nnbackend never converts silently)"
        )
    if record_v is not record:
        # Through the host: a copy, so the checkpoint and the model never share memory.
        host_value = ops_for(backend_for(value)[0], value).host_copy(value)
        moved = record.from_host(host_value, getattr(like, "device", None))
        return moved if moved.dtype == like.dtype else xp.astype(moved, like.dtype)
    return xp.asarray(value, copy=True)


def _dtype_name(dtype: Any) -> str:
    try:
        return normalize_dtype(dtype)
    except DtypeError:
        return str(dtype).rsplit(".", 1)[-1]


class Sequential(Module):
    """Modules applied one after the other; indexable, sliceable, iterable and appendable.

    >>> from nnbackend import nn
    >>> model = nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))
    >>> len(model), type(model[1]).__name__, len(model[:2])
    (3, 'Sigmoid', 2)
    """

    def __init__(self, *layers: Module | Mapping[str, Module]) -> None:
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], Mapping):
            for name, named in layers[0].items():
                self.add_module(str(name), _check_module(named))
        else:
            for layer in layers:
                self.append(_check_module(layer))
        self._refresh()

    _layers: tuple[Module, ...]

    def _refresh(self) -> None:
        self.__dict__["_layers"] = tuple(m for m in self._modules.values() if m is not None)

    def append(self, layer: Module) -> Sequential:
        """Add ``layer`` at the end; returns ``self``."""
        n = len(self._modules)
        while str(n) in self._modules:
            n += 1
        self.add_module(str(n), _check_module(layer))
        self._refresh()
        return self

    def extend(self, layers: Iterable[Module]) -> Sequential:
        """Append each of ``layers``; returns ``self``."""
        for layer in layers:
            self.append(layer)
        return self

    def forward(self, x: Any) -> Any:
        for layer in self._layers:
            x = layer(x)
        return x

    def __len__(self) -> int:
        return len(self._layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._layers)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return Sequential(OrderedDict(list(self.named_children())[index]))
        return self._layers[index]

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if isinstance(value, Module) or name in self._modules:
            self._refresh()

    def __delattr__(self, name: str) -> None:
        super().__delattr__(name)
        self._refresh()

    def add_module(self, name: str, module: Module | None) -> None:
        # The layers forward() runs are cached: a layer added by name ran nowhere (the repr
        # and parameters() showed it).
        super().add_module(name, module)
        self._refresh()


def _check_module(layer: Any) -> Module:
    if not isinstance(layer, Module):
        raise TypeError(
            f"Sequential holds nn.Module objects, got {type(layer).__name__}; wrap functions "
            "in a Module"
        )
    return layer
