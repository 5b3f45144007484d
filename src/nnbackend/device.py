"""Moving arrays, Tensors, Modules and optimizer state between backends and devices.

>>> import nnbackend as nb
>>> from nnbackend import nn
>>> model = nn.Linear(2, 3)
>>> model.to("numpy") is model                     # in place, like torch's Module.to
True
>>> nb.to_device(model.weight, "numpy").backend   # a new Tensor; the input is unchanged
'numpy'

A *target* names a backend (``"cupy"``, ``"numpy"``), a backend and one of its devices
(``"cupy:1"``, ``"torch:cuda:0"``, ``"array_api_strict:device1"``), or only a device of the
object's own backend (``"cuda:0"`` for torch tensors). A bare backend name means that
backend's default device, or the device of an active ``nnbackend.using(device=...)`` block
for that backend. ``None`` means the active backend and device.

How an array travels, cheapest first:

1. Already there (same backend, same device, or no device asked for): returned as is.
2. Same backend, another device: the backend's ``asarray(x, device=...)``.
3. Another backend: DLPack (``xp.from_dlpack``), which shares memory where both libraries
   can see it (NumPy <-> torch CPU <-> array_api_strict; torch CUDA <-> CuPy), then a device
   change if one was asked for and DLPack put it elsewhere.
4. Otherwise through the host: the source record's ``to_host`` and the target's
   ``from_host`` (a copy; CuPy -> NumPy goes this way).

``copy=True`` always gives memory of its own; ``copy=False`` raises
:class:`~nnbackend.errors.ArgumentError` where a copy cannot be avoided; ``None`` (the
default) copies only where it must. Read-only arrays are never shared (DLPack cannot say
"read-only"), so a writable alias of them never appears.

Modules and optimizers are changed in place and returned; everything is moved first and only
then bound, so an error (a backend that cannot run here, float16 on array_api_strict) leaves
every object as it was. Arrays and Tensors are returned as new objects; the input is unchanged.

Objects move themselves: this module knows no model or optimizer. It hands each object a
function from one array to another and calls the object's ``_apply(fn)`` (the :class:`Movable`
protocol; :class:`~nnbackend.nn.Module`, the optimizers and :class:`~nnbackend.Tensor` have
one), which rebinds the arrays the object holds and renews whatever it caches about them. A
class of your own moves with ``to_device`` once it has an ``_apply``; :func:`map_arrays` walks
the arrays held in its attributes. ``_apply`` is called twice per move, first with a function
that returns its input (while every conversion is made and checked), then with the one that
returns the converted arrays, so it must visit the same arrays both times and bind only what
``fn`` returns.
"""

from __future__ import annotations

import contextlib
import copy as copy_module
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from nnbackend import config, registry
from nnbackend.backends.base import Backend
from nnbackend.errors import (
    ArgumentError,
    BackendError,
    BackendMismatchError,
    DtypeError,
    NNBackendError,
)
from nnbackend.typing import Array

__all__ = [
    "ArrayFn",
    "Movable",
    "Target",
    "empty_cache",
    "from_dlpack",
    "is_array",
    "map_arrays",
    "once",
    "parse_target",
    "to_device",
]

ArrayFn = Callable[[Array], Array]
"""A function from one backend array to another (onto another device, into another dtype)."""


class Movable(Protocol):
    """An object that :func:`to_device` moves in place: ``_apply(fn)`` rebinds every array it
    holds (parameters, their gradients, buffers, optimizer state) to ``fn`` of it, renews
    what it caches about them, and returns the object.

    :func:`to_device` calls it twice (see the module docstring), so it must visit the same
    arrays each time and change nothing but the bindings to what ``fn`` returns.
    """

    def _apply(self, fn: ArrayFn) -> object: ...


# Errors a library raises when DLPack cannot hand an array over (wrong device, read-only,
# unsupported dtype, a tensor that requires grad, an old library without __dlpack__).
_DLPACK_ERRORS = (BufferError, TypeError, ValueError, RuntimeError, NotImplementedError)


@dataclass(frozen=True)
class Target:
    """Where :func:`to_device` sends things.

    Attributes:
        backend: a registered backend name, or ``None`` for each object's own backend.
        device: a device name as that backend's record takes it (``"1"`` for ``cupy:1``,
            ``"cuda:0"`` for torch), or ``None`` for the backend's default device.
    """

    backend: str | None
    device: str | None

    def __str__(self) -> str:
        if self.backend is None:
            return str(self.device)
        return self.backend if self.device is None else f"{self.backend}:{self.device}"


def _check_device(backend: str, device: str) -> None:
    # (a missing library is left to the move, whose error says how to install it)
    with contextlib.suppress(ImportError):
        registry.device_object(registry.get(backend), device)


def parse_target(target: str | Target | None) -> Target:
    """Turn ``"cupy"``, ``"cupy:1"``, ``"torch:cuda:0"``, ``"cuda:0"`` or ``None`` into a
    :class:`Target`. Unknown backends and malformed devices of a named backend raise
    :class:`~nnbackend.errors.BackendError`; a backend that cannot run here is reported when
    something is moved there, except one whose device lookup fails with anything but an
    ImportError (a driver or plugin error): :class:`~nnbackend.errors.BackendUnavailableError`
    at once, its cause chained."""
    if isinstance(target, Target):
        return target
    if target is None:
        backend, _, device = config.resolve()
        return Target(backend, device)
    if not isinstance(target, str) or not target.strip():
        raise BackendError(
            f"a target is a backend name ({', '.join(registry.backends())}), 'backend:device' "
            f"such as 'cupy:1', or a device of the object's backend; got {target!r}"
        )
    text = target.strip()
    names = registry.backends()
    if text in names:
        device = config.get_device() if text == config.get_backend() else None
        return Target(text, device)
    prefix, sep, rest = text.partition(":")
    if sep and prefix in names:
        if not rest:
            raise BackendError(f"target {text!r} names backend {prefix!r} but no device")
        _check_device(prefix, rest)
        return Target(prefix, rest)
    return Target(None, text)  # a device of each object's own backend, checked per object


def _unknown_backend(name: object) -> str:
    return f"unknown backend {name!r}; registered backends are {', '.join(registry.backends())}"


def is_array(value: object) -> bool:
    """Whether ``value`` is an array of a registered backend (imports nothing)."""
    return (
        registry.backend_of(value) is not None
        and hasattr(value, "shape")
        and hasattr(value, "dtype")
    )


def _has_method(value: Any, name: str) -> bool:
    """Whether the instance ``value`` (not a class) has a callable ``name``."""
    return not isinstance(value, type) and callable(getattr(type(value), name, None))


class _Once:
    """``fn`` called once per distinct array; its results map to themselves."""

    __slots__ = ("fn", "seen")

    def __init__(self, fn: ArrayFn) -> None:
        self.fn = fn
        self.seen: dict[int, tuple[Any, Any]] = {}  # id -> (array, result); keeps both alive

    def __call__(self, x: Any) -> Any:
        found = self.seen.get(id(x))
        if found is not None and found[0] is x:
            return found[1]
        y = self.fn(x)
        self.seen[id(x)] = (x, y)
        self.seen.setdefault(id(y), (y, y))
        return y


def once(fn: ArrayFn) -> ArrayFn:
    """``fn`` memoised by array identity, for one ``_apply`` call: each distinct array is
    passed to ``fn`` once, an array held in two places becomes one array again, and an array
    ``fn`` returned is returned as it is when met again (a Parameter shared by two layers is
    not converted twice). Already-memoised functions are returned unchanged."""
    return fn if isinstance(fn, _Once) else _Once(fn)


def map_arrays(value: Any, fn: ArrayFn) -> Any:
    """``value`` with ``fn`` applied to every array it holds, for ``_apply`` methods walking
    their attributes: an array becomes ``fn(array)``; an object with ``_apply`` (a Tensor, a
    Module, an optimizer) is changed in place by ``value._apply(fn)``; lists and dicts are
    changed in place (other objects may hold them) and tuples rebuilt where something
    changed; anything else (numbers, strings, generators) is returned as it is."""
    return _map_arrays(value, fn, set())


def _map_arrays(value: Any, fn: ArrayFn, active: set[int]) -> Any:
    if _has_method(value, "_apply"):
        value._apply(fn)
        return value
    if is_array(value):
        return fn(value)
    if type(value) not in (list, dict, tuple) or not value or id(value) in active:
        return value
    active.add(id(value))
    try:
        if isinstance(value, list):
            for i, item in enumerate(value):
                new = _map_arrays(item, fn, active)
                if new is not item:
                    value[i] = new
            return value
        if isinstance(value, dict):
            for key, item in list(value.items()):
                new = _map_arrays(item, fn, active)
                if new is not item:
                    value[key] = new
            return value
        items = tuple(_map_arrays(item, fn, active) for item in value)
        changed = any(new is not old for new, old in zip(items, value, strict=True))
        return items if changed else value
    finally:
        active.discard(id(value))


def _dtype_name(dtype: Any) -> str:
    return str(dtype).rsplit(".", 1)[-1]


def _same_device(array: Any, device: Any) -> bool:
    here = getattr(array, "device", "cpu")
    try:
        if here == device:
            return True
    except Exception:  # device objects of different kinds may refuse to compare
        pass
    return str(here) == str(device)


def _dlpack_safe(array: Any, source: Backend) -> bool:
    """Whether handing ``array`` over through DLPack is safe: it has ``__dlpack__``, it is
    writable (DLPack cannot say read-only, so the receiver could write into it), and no stride
    is negative (torch 2.x aborts the whole process on a reversed NumPy view).

    An array without NumPy's ``flags`` (an array_api_strict array, which may wrap a read-only
    NumPy array) is asked through its host view where it lives on the host. Arrays of an
    immutable backend (jax) are always read-only there; the caller checks what they become."""
    if not hasattr(array, "__dlpack__"):
        return False
    flags = getattr(array, "flags", None)
    if flags is None and source.capabilities.inplace and source.on_host(array):
        try:
            flags = getattr(source.to_host(array), "flags", None)
        except Exception:  # no host view to ask: do not share
            return False
    if not getattr(flags, "writeable", True):
        return False
    strides = getattr(array, "strides", None)
    return not (isinstance(strides, tuple) and any(s < 0 for s in strides))


def _writable(array: Any) -> bool:
    """Whether the library of ``array`` lets its users write into it (NumPy says so in
    ``flags``; torch tensors and array_api_strict arrays are taken as writable)."""
    return bool(getattr(getattr(array, "flags", None), "writeable", True))


def _lazy_bits(array: Any) -> bool:
    """Whether ``array`` is a torch view with its negative or conjugate bit set (``z.conj()``,
    ``z.conj().imag``): DLPack hands over the memory without the bit, so the values would
    arrive negated or unconjugated, and torch's ``numpy()`` refuses such a tensor."""
    for name in ("is_neg", "is_conj"):
        method = getattr(array, name, None)
        if callable(method):
            try:
                if method():
                    return True
            except Exception:  # some other library's method of that name
                continue
    return False


def _import_dlpack(xp: Any, x: Any, copy: bool | None) -> Any:
    """``xp.from_dlpack(x)``, or ``None`` where DLPack cannot hand ``x`` over. With
    ``copy=False`` the library is told so (where it takes the argument), so it never copies
    silently (CuPy may copy host arrays to the GPU)."""
    try:
        if copy is False:
            try:
                return xp.from_dlpack(x, copy=False)
            except TypeError:  # a library without the 2023.12 ``copy`` argument
                pass
        return xp.from_dlpack(x)
    except _DLPACK_ERRORS:
        return None


def _dlpack_copy(xp: Any, x: Any) -> Any:
    """``xp.from_dlpack(x, copy=True)`` (memory of its own), or ``None`` where the library
    cannot do that."""
    try:
        return xp.from_dlpack(x, copy=True)
    except _DLPACK_ERRORS:
        return None


class _Mover:
    """Moves arrays to one target, memoised by identity, in two passes over the same objects.

    The plan pass (``planning`` True) converts every array it is shown and hands the source
    back, so the objects' ``_apply`` rebinds nothing; any error (an unknown device, float16
    where the target has none, an optimizer with unknown caches) is raised then, before
    anything changed. The commit pass hands out the converted arrays, which cannot fail. An
    array referenced twice (tied weights, a gradient shared by two parameters) becomes one array
    on the target too, and an array already moved is handed back as it is.
    """

    def __init__(self, target: Target, copy: bool | None) -> None:
        self.target = target
        self.copy = copy
        self.planning = True
        self._arrays: dict[int, tuple[Any, Any]] = {}  # id(source) -> (source, moved)
        self._moved: dict[int, Any] = {}  # id(moved) -> moved
        self._places: dict[str, tuple[Backend, Any, Any]] = {}

    # -- arrays --------------------------------------------------------------------------
    def _place(self, backend: str, source: str) -> tuple[Backend, Any, Any]:
        """(record, namespace, device object or None) of the target for arrays of
        ``source``."""
        key = f"{backend}\0{source}"
        found = self._places.get(key)
        if found is not None:
            return found
        record = registry.require(backend)
        device_obj = None
        device = self.target.device
        if device is not None:
            try:
                device_obj = record.device(device)
            except ValueError as exc:
                if self.target.backend is None:
                    raise BackendError(
                        f"target {device!r} is neither a backend ({', '.join(registry.backends())})"
                        f" nor a device of backend {backend!r}: {exc}"
                    ) from None
                raise BackendError(
                    f"bad device {device!r} for backend {backend!r}: {exc}"
                ) from None
        found = self._places[key] = (record, record.load_namespace(), device_obj)
        return found

    def array(self, x: Any) -> Any:
        """``x`` on the target (converted once)."""
        found = self._arrays.get(id(x))
        if found is not None and found[0] is x:
            return found[1]
        if self._moved.get(id(x)) is x:
            return x
        moved = self._move(x)
        self._arrays[id(x)] = (x, moved)
        self._moved[id(moved)] = moved
        return moved

    def fn(self, x: Any) -> Any:
        """The function handed to the objects' ``_apply``: ``x`` itself while planning (its
        conversion made and kept), its converted array when committing."""
        moved = self.array(x)
        return x if self.planning else moved

    def _move(self, x: Any) -> Any:
        source_name = registry.backend_of(x)
        if source_name is None or not is_array(x):
            raise BackendMismatchError(
                f"cannot move a {type(x).__module__}.{type(x).__qualname__}: not an array of a "
                f"registered backend ({', '.join(registry.backends())})"
            )
        source = registry.get(source_name)
        name = self.target.backend or source_name
        record, xp, device = self._place(name, source_name)
        dest = name if self.target.device is None else f"{name}:{self.target.device}"
        where = f"from {source_name!r} to {dest!r}"
        dtype = _dtype_name(x.dtype)
        if record is not source:
            self._check_dtype(dtype, name, record, xp)
        try:
            y = self._transfer(x, source, record, xp, device, where)
        except NNBackendError:
            raise
        except Exception as exc:  # the library's own error (no CUDA in torch, no data on meta)
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise BackendError(
                f"cannot move an array {where}: {type(exc).__name__}: {first}"
            ) from exc
        got = _dtype_name(y.dtype)
        if got != dtype:
            # jax without 64-bit types turns float64 into float32 and int64 into int32
            # (2**40 becomes 0): never hand back other values than the ones asked to move.
            raise DtypeError(
                f"moving a {dtype} array {where} would make it {got}: backend {name!r} cannot "
                f"hold {dtype} here"
                + (" (jax has 64-bit types switched off)" if name == "jax" else "")
                + f"; cast it first (xp.astype(x, xp.{got})) if {got} is what you want"
            )
        return y

    @staticmethod
    def _check_dtype(dtype: str, name: str, record: Backend, xp: Any) -> None:
        """DtypeError where backend ``name`` cannot hold ``dtype`` (float16 on
        array_api_strict, float64 on jax without 64-bit types, bfloat16 on NumPy), before
        anything is converted."""
        if dtype == "float16" and not record.capabilities.float16:
            raise DtypeError(
                f"cannot move a float16 array to backend {name!r}: it has no float16; cast it "
                "first (xp.astype(x, xp.float32)) or pick a backend with float16"
            )
        if dtype in config.DTYPES:
            reason = None if record.dtype_reason is None else record.dtype_reason(dtype)
        else:
            reason = None if hasattr(xp, dtype) else f"it has no dtype {dtype!r}"
        if reason is not None:
            raise DtypeError(
                f"cannot move a {dtype} array to backend {name!r}: {reason}; cast it first "
                "(xp.astype(x, ...)) to a dtype both backends have"
            )

    def _transfer(
        self, x: Any, source: Backend, record: Backend, xp: Any, device: Any, where: str
    ) -> Any:
        if record is source:
            if device is None or _same_device(x, device):
                return xp.asarray(x, copy=True) if self.copy else x
            if self.copy is False:
                raise ArgumentError(f"copy=False, but moving {where} changes the device")
            return xp.asarray(x, device=device)
        if _lazy_bits(x):
            if self.copy is False:
                raise ArgumentError(
                    f"copy=False, but moving {where} needs a copy (a view with its negative or "
                    "conjugate bit set has to be resolved first)"
                )
            x = source.load_namespace().asarray(x, copy=True)  # resolves the bits
            copied = True
        else:
            copied = False
        if (copied or self.copy is not True) and _dlpack_safe(x, source):
            y = _import_dlpack(xp, x, self.copy)
            if y is not None and not source.capabilities.inplace and _writable(y):
                # An immutable array (jax) must not get a writable alias: a write through it
                # would change an array every other holder takes as constant.
                y = None if self.copy is False else _dlpack_copy(xp, x)
            if y is not None:
                if device is None or _same_device(y, device):
                    return y
                if self.copy is False:
                    raise ArgumentError(
                        f"copy=False, but moving {where} needs a copy to device {device}"
                    )
                return xp.asarray(y, device=device)
        if self.copy is False:
            raise ArgumentError(
                f"copy=False, but moving {where} needs a copy (DLPack cannot share this array)"
            )
        on_host = source.to_host(x)
        if source.on_host(x):  # a host array: never alias it (it may be read-only)
            on_host = on_host.copy()
        return record.from_host(on_host, device)

    # -- objects -------------------------------------------------------------------------
    def value(self, value: Any) -> Any:
        """The moved counterpart of a top-level value: new arrays, Tensors and containers;
        objects with ``_apply`` (modules, optimizers) moved in place and returned as they
        are."""
        if _has_method(value, "_applied"):
            return value._applied(self.fn)
        if _has_method(value, "_apply"):
            value._apply(self.fn)
            return value
        if is_array(value):
            return self.fn(value)
        if isinstance(value, dict):
            if type(value) is dict:
                return {k: self.value(v) for k, v in value.items()}
            # A subclass keeps its own state (a defaultdict's factory; a Counter built from
            # pairs would count them): a shallow copy with its values replaced.
            moved = copy_module.copy(value)
            for k, v in value.items():
                dict.__setitem__(moved, k, self.value(v))
            return moved
        if isinstance(value, list | tuple):
            items = [self.value(v) for v in value]
            return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
        if value is None or isinstance(value, bool | int | float | complex | str):
            return value
        raise BackendMismatchError(
            f"to_device moves arrays, Tensors, nn.Modules, optimizers (any object with an "
            f"_apply(fn) method) and lists, tuples or dicts of them; got "
            f"{type(value).__module__}.{type(value).__qualname__}"
        )

    def move(self, value: Any) -> Any:
        """Plan the move of ``value`` (everything converted, nothing bound), then commit it."""
        self.planning = True
        self.value(value)
        self.planning = False
        return self.value(value)


def to_device(obj: Any, target: str | Target | None, *, copy: bool | None = None) -> Any:
    """``obj`` on another backend or device.

    Args:
        obj: a backend array, a :class:`~nnbackend.Tensor` (a new leaf Tensor is returned, with
            ``requires_grad``, name and ``.grad`` carried over), an :class:`nnbackend.nn.Module`
            (its parameters, their gradients and any arrays or Tensors held as attributes are
            rebound in place; the module is returned), an optimizer (its parameters and state
            rebound in place; returned), or a list, tuple or dict of these.
        target: ``"cupy"``, ``"numpy"``, ``"torch"``, ``"array_api_strict"``, a backend with a
            device (``"cupy:1"``, ``"torch:cuda:0"``), a device of the object's own backend, or
            ``None`` for the active backend and device.
        copy: ``None`` shares memory where DLPack allows, ``True`` always copies, ``False``
            raises :class:`~nnbackend.errors.ArgumentError` where a copy is needed.

    Raises:
        BackendError: unknown backend or bad device (the message lists what exists).
        BackendUnavailableError: the target backend cannot run here (the message says why).
        DtypeError: float16 to a backend without float16 (array_api_strict).

    Moving an optimizer moves its parameters too (they are the model's own Parameter
    objects); to move a model with its optimizer, ``to_device((model, opt), "cupy")``.
    """
    if copy is not None and not isinstance(copy, bool):
        raise ArgumentError(f"copy must be True, False or None, got {copy!r}")
    return _Mover(parse_target(target), copy).move(obj)


def from_dlpack(
    x: Any, backend: str | None = None, *, device: str | None = None, copy: bool | None = None
) -> Any:
    """An array of ``backend`` (default: the active one) holding the data of ``x``, sharing its
    memory through DLPack where possible.

    ``x`` may be an array of any registered backend (or a Tensor: its ``.data``), or any
    object with ``__dlpack__`` (JAX arrays, for instance), which then must be importable by
    the target library. Where the target cannot see ``x``'s memory (a CuPy array to NumPy), the
    data is copied through the host unless ``copy=False``.

    >>> import nnbackend as nb
    >>> import numpy as np                                      # doctest: +SKIP
    >>> t = nb.from_dlpack(np.arange(3.0), "torch")             # doctest: +SKIP
    """
    if copy is not None and not isinstance(copy, bool):
        # As in to_device: a truthy non-bool ("yes", 1) would share memory, not copy.
        raise ArgumentError(f"copy must be True, False or None, got {copy!r}")
    if not is_array(x) and not hasattr(x, "__dlpack__") and is_array(getattr(x, "data", None)):
        x = x.data  # a Tensor
    if backend is None:
        backend = config.get_backend()
    target = parse_target(backend if device is None else f"{backend}:{device}")
    if target.backend is None:
        raise BackendError(_unknown_backend(backend))
    mover = _Mover(target, copy)
    if is_array(x):
        return mover.array(x)
    if not hasattr(x, "__dlpack__"):
        raise BackendMismatchError(
            f"from_dlpack needs an object with __dlpack__ or an array of a registered backend; "
            f"got {type(x).__module__}.{type(x).__qualname__}"
        )
    _record, xp, device_obj = mover._place(target.backend, "")
    kwargs = {} if copy is None else {"copy": copy}
    try:
        y = xp.from_dlpack(x, **kwargs)
    except _DLPACK_ERRORS as exc:
        raise BackendMismatchError(
            f"backend {target.backend!r} cannot import a {type(x).__module__}."
            f"{type(x).__qualname__} through DLPack ({type(exc).__name__}: {exc})"
        ) from None
    if device_obj is not None and not _same_device(y, device_obj):
        y = xp.asarray(y, device=device_obj)
    return y


def empty_cache() -> dict[str, dict[str, int]]:
    """Return the memory that array libraries keep cached (CuPy's memory pool, torch's CUDA
    caching allocator) to the driver, and let go of NumPy's recycled intermediates (the
    calling thread's), and say how much, per backend: ``{"cupy": {"freed_bytes": ...,
    "held_bytes": ...}}``. A library not imported in this process (or, for torch, that never
    used CUDA) is skipped and not imported; a backend with nothing to free is left out, so on
    a machine without a GPU that never trained on NumPy this is ``{}``."""
    released = {}
    for name in registry.backends():
        release = registry.get(name).empty_cache
        freed = release() if release is not None else None
        if freed:
            released[name] = freed
    return released
