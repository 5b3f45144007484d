"""The dtype-defaulting Array API namespace.

``namespace()`` returns a module object holding the backend's own Array API namespace
(array-api-compat's wrappers for numpy, cupy and torch; array-api-strict as is), with one
change: the creation functions whose dtype the standard leaves to the library use nnbackend's
default floating dtype. Every other name is the backend's own function object, so ``xp.exp``
costs exactly what ``array_api_compat.numpy.exp`` costs.

One namespace is built per (backend, dtype, device) and cached; with unchanged settings
``namespace()`` is a context-variable read and two comparisons.
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any

from nnbackend import config, registry
from nnbackend.errors import BackendMismatchError, DtypeError

__all__ = ["array_namespace", "backend_for", "namespace"]

# Names copied from the backend namespace besides its public ones.
_KEPT_DUNDERS = ("__array_api_version__", "__version__", "__all__", "__getattr__")

_cache: dict[tuple[str, str, str | None, int], ModuleType] = {}
_build_lock = threading.Lock()
# (overrides object, process version, registry generation, namespace) of the last call with
# no arguments. One tuple, swapped whole, so threads never see a torn entry.
_last: tuple[Any, int, int, ModuleType | None] = (None, -1, -1, None)
_get_overrides = config._context.get


def _has_python_float(obj: Any) -> bool:
    """True for a Python float or a (nested) list/tuple holding one, or an empty (nested)
    list/tuple, whose dtype the library would otherwise pick (numpy float64, torch its global
    default). ``type() is float`` on purpose: numpy.float64 subclasses float but carries its
    own dtype."""
    if type(obj) is float:
        return True
    if type(obj) in (list, tuple):
        return not obj or any(_has_python_float(item) for item in obj)
    return False


_DTYPE_NAMES = (
    "float64",
    "float32",
    "float16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint64",
    "uint32",
    "uint16",
    "uint8",
    "bool",
    "complex64",
    "complex128",
)


def _creation_functions(base: Any, default: Any, device: Any) -> dict[str, Any]:
    """Wrappers of the creation functions that fill in ``dtype`` (and ``device`` when a
    ``using(device=...)`` block chose one) where the caller left them out."""
    b_asarray, b_zeros, b_ones, b_empty = base.asarray, base.zeros, base.ones, base.empty
    b_from_dlpack = base.from_dlpack
    b_full, b_arange, b_linspace, b_eye = base.full, base.arange, base.linspace, base.eye

    def named(dtype: str) -> Any:
        """The dtype object for a name ("float32", "int64"), as ``nb.get_default_dtype()``
        returns names: ``xp.asarray(x, dtype=nb.get_default_dtype())`` works everywhere."""
        found = getattr(base, dtype, None) if dtype in _DTYPE_NAMES else None
        if found is None:
            raise DtypeError(
                f"unknown dtype name {dtype!r} for this backend; expected one of "
                f"{', '.join(n for n in _DTYPE_NAMES if hasattr(base, n))}, or a dtype object"
            )
        return found

    def asarray(
        obj: Any, /, *, dtype: Any = None, device: Any = device, copy: Any = None, **kwargs: Any
    ) -> Any:
        if dtype is None:
            if _has_python_float(obj):
                dtype = default
        elif type(dtype) is str:
            dtype = named(dtype)
        try:
            return b_asarray(obj, dtype=dtype, device=device, copy=copy, **kwargs)
        except Exception as exc:
            # torch.asarray of a CuPy array falls through to the buffer protocol and fails:
            # where the library cannot read another library's array, DLPack (zero-copy) can.
            if not hasattr(obj, "__dlpack__"):
                raise
            try:
                imported = b_from_dlpack(obj)
            except Exception:
                raise exc from None
            return b_asarray(imported, dtype=dtype, device=device, copy=copy, **kwargs)

    def zeros(shape: Any, *, dtype: Any = None, device: Any = device, **kwargs: Any) -> Any:
        if type(dtype) is str:
            dtype = named(dtype)
        return b_zeros(shape, dtype=default if dtype is None else dtype, device=device, **kwargs)

    def ones(shape: Any, *, dtype: Any = None, device: Any = device, **kwargs: Any) -> Any:
        if type(dtype) is str:
            dtype = named(dtype)
        return b_ones(shape, dtype=default if dtype is None else dtype, device=device, **kwargs)

    def empty(shape: Any, *, dtype: Any = None, device: Any = device, **kwargs: Any) -> Any:
        if type(dtype) is str:
            dtype = named(dtype)
        return b_empty(shape, dtype=default if dtype is None else dtype, device=device, **kwargs)

    def full(
        shape: Any, fill_value: Any, *, dtype: Any = None, device: Any = device, **kwargs: Any
    ) -> Any:
        if dtype is None and type(fill_value) is float:
            dtype = default
        elif type(dtype) is str:
            dtype = named(dtype)
        return b_full(shape, fill_value, dtype=dtype, device=device, **kwargs)

    def arange(
        start: Any,
        /,
        stop: Any = None,
        step: Any = 1,
        *,
        dtype: Any = None,
        device: Any = device,
        **kwargs: Any,
    ) -> Any:
        if dtype is None and float in (type(start), type(stop), type(step)):
            dtype = default
        return b_arange(start, stop, step, dtype=dtype, device=device, **kwargs)

    def linspace(
        start: Any,
        stop: Any,
        /,
        num: int,
        *,
        dtype: Any = None,
        device: Any = device,
        endpoint: bool = True,
        **kwargs: Any,
    ) -> Any:
        if dtype is None and complex not in (type(start), type(stop)):
            dtype = default
        return b_linspace(start, stop, num, dtype=dtype, device=device, endpoint=endpoint, **kwargs)

    def eye(
        n_rows: int,
        n_cols: int | None = None,
        /,
        *,
        k: int = 0,
        dtype: Any = None,
        device: Any = device,
        **kwargs: Any,
    ) -> Any:
        return b_eye(
            n_rows, n_cols, k=k, dtype=default if dtype is None else dtype, device=device, **kwargs
        )

    made = {
        "asarray": asarray,
        "zeros": zeros,
        "ones": ones,
        "empty": empty,
        "full": full,
        "arange": arange,
        "linspace": linspace,
        "eye": eye,
    }
    for name, wrapper in made.items():
        original = getattr(base, name)
        wrapper.__doc__ = (
            f"{name} of the backend namespace, with nnbackend's default float dtype where the "
            f"standard leaves the dtype to the library.\n\n{original.__doc__ or ''}"
        )
        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    return made


class NamespaceInfo:
    """``__array_namespace_info__()`` of an nnbackend namespace: the backend's own inspection
    object, with ``default_dtypes()`` reporting nnbackend's default floating dtype."""

    def __init__(self, base_info: Any, default: Any) -> None:
        self._base_info = base_info
        self._default = default

    def default_dtypes(self, *, device: Any = None) -> dict[str, Any]:
        dtypes = dict(self._base_info.default_dtypes(device=device))
        dtypes["real floating"] = self._default
        return dtypes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base_info, name)


def _build(backend: str, dtype: str, device: str | None) -> ModuleType:
    record = registry.require(backend)
    if not record.capabilities.float16 and dtype == "float16":
        raise DtypeError(
            f"backend {backend!r} has no float16; use float32 or float64 with it, or pick a "
            f"backend that has float16 ({', '.join(_float16_backends())})"
        )
    base = record.load_namespace()
    default = getattr(base, dtype)
    device_object = record.device(device) if device is not None else None
    ns = ModuleType(f"nnbackend.namespace.{backend}")
    ns.__doc__ = (
        f"The Array API namespace of backend {backend!r} with default float dtype {dtype}"
        + (f" on device {device!r}" if device else "")
        + ", made by nnbackend.namespace()."
    )
    for name, value in vars(base).items():
        if not name.startswith("__") or name in _KEPT_DUNDERS:
            ns.__dict__[name] = value
    ns.__dict__.update(_creation_functions(base, default, device_object))
    info = NamespaceInfo(base.__array_namespace_info__(), default)
    ns.__array_namespace_info__ = lambda: info  # type: ignore[attr-defined]
    ns.__nnbackend__ = (backend, dtype, device)  # type: ignore[attr-defined]
    ns.__wrapped__ = base  # type: ignore[attr-defined]
    return ns


def _float16_backends() -> list[str]:
    return [
        name
        for name in registry.backends()
        if name in registry._records and registry._records[name].capabilities.float16
    ]


def namespace(backend: str | None = None, dtype: Any = None) -> Any:
    """The Array API namespace of the active backend, whose creation functions default to the
    active floating dtype.

    Args:
        backend: a registered backend name; ``None`` means the active one.
        dtype: "float64", "float32", "float16" or a dtype object; ``None`` means the active one.

    Raises:
        BackendError: unknown backend (the message lists the registered ones).
        BackendUnavailableError: the backend cannot run here (the message says why and how to
            fix it).
        DtypeError: unknown dtype, or float16 on a backend without it.

    >>> import nnbackend as nb
    >>> xp = nb.namespace(dtype="float32")
    >>> xp.asarray([1.0, 2.0]).dtype
    dtype('float32')
    """
    global _last
    if backend is None and dtype is None:
        overrides = _get_overrides()
        last = _last
        if (
            last[0] is overrides
            and last[1] == config._Process.version
            and last[2] == registry.generation
        ):
            return last[3]
        ns = _lookup(*config.resolve())
        _last = (overrides, config._Process.version, registry.generation, ns)
        return ns
    return _lookup(*config.resolve(backend, dtype))


def _lookup(backend: str, dtype: str, device: str | None) -> ModuleType:
    key = (backend, dtype, device, registry.generation)
    ns = _cache.get(key)
    if ns is None:
        with _build_lock:
            ns = _cache.get(key)
            if ns is None:
                ns = _cache[key] = _build(backend, dtype, device)
    return ns


def array_namespace(*arrays: Any, dtype: Any = None) -> Any:
    """The nnbackend namespace of the backend that owns ``arrays``.

    Python scalars and ``None`` are skipped; with no arrays at all the active namespace is
    returned. For arrays of a backend other than the active one, the namespace's default float
    dtype is the arrays' own floating dtype. Arrays of two backends raise
    :class:`~nnbackend.errors.BackendMismatchError` naming both.
    """
    found: str | None = None
    first: Any = None
    for array in arrays:
        if array is None or type(array) in (int, float, bool, complex):
            continue
        name = registry.backend_of(array)
        if name is None:
            raise BackendMismatchError(
                f"cannot tell which backend an object of type {type(array).__module__}."
                f"{type(array).__qualname__} belongs to; registered backends are "
                f"{registry.backends()}"
            )
        if found is None:
            found, first = name, array
        elif name != found:
            raise BackendMismatchError(
                f"arrays from two backends in one call: {found!r} "
                f"({type(first).__module__}.{type(first).__qualname__}) and {name!r} "
                f"({type(array).__module__}.{type(array).__qualname__}); move one to the other's "
                "backend first"
            )
    if found is None:
        return namespace(None, dtype)
    if dtype is None:
        if found == config.get_backend():
            return namespace()
        # Another backend's arrays: default to their own floating dtype, which that backend
        # surely has, rather than the active one, which it may lack (float16 on strict).
        dtype = _floating_dtype(arrays)
    return namespace(found, dtype)


def _floating_dtype(arrays: tuple[Any, ...]) -> str | None:
    for array in arrays:
        name = str(getattr(array, "dtype", "")).rsplit(".", 1)[-1]
        if name in config.DTYPES:
            return name
    return None


# type(array) -> (backend namespace, backend record), for the engine's per-op lookups.
_by_type: dict[type, tuple[Any, Any]] = {}


def backend_for(array: Any) -> tuple[Any, Any]:
    """``(xp, record)`` for an array: the backend's own Array API namespace (no dtype
    defaulting: callers pass dtypes explicitly) and its :class:`~nnbackend.Backend` record.

    Cached by the array's type, so the engine pays one dictionary lookup per operation.
    """
    try:
        return _by_type[type(array)]
    except KeyError:
        pass
    name = registry.backend_of(array)
    if name is None:
        raise BackendMismatchError(
            f"expected an array of a registered backend ({', '.join(registry.backends())}), got "
            f"{type(array).__module__}.{type(array).__qualname__}"
        )
    record = registry.require(name)
    found = _by_type[type(array)] = (record.load_namespace(), record)
    return found


registry._change_callbacks.append(_by_type.clear)
# Namespaces built from a replaced record are stale; drop them all (rebuilt on next use).
registry._change_callbacks.append(_cache.clear)
