"""The dtype-defaulting Array API namespace.

``namespace()`` returns a module object holding the backend's own Array API namespace
(array-api-compat's wrappers for numpy, cupy and torch; array-api-strict as is), with one
change: the creation functions whose dtype the standard leaves to the library use nnbackend's
default floating dtype. Those, and ``zeros_like``, ``ones_like``, ``empty_like``, ``full_like``
and ``astype``, take dtype names ("float32") on every backend. Every other name is the
backend's own function object, so ``xp.exp`` costs exactly what ``array_api_compat.numpy.exp``
costs.

One namespace is built per (backend, dtype, device) and cached; with unchanged settings
``namespace()`` is a context-variable read and two comparisons.
"""

from __future__ import annotations

import math
import operator
import threading
from collections.abc import Callable
from numbers import Real
from types import ModuleType
from typing import TYPE_CHECKING, Any

from nnbackend import config, registry
from nnbackend.errors import (
    ArgumentError,
    BackendError,
    BackendMismatchError,
    BackendUnavailableError,
    DtypeError,
)
from nnbackend.typing import Array, DType, Namespace

if TYPE_CHECKING:
    from nnbackend.backends.base import Backend
    from nnbackend.backends.ops import Ops

__all__ = ["array_namespace", "backend_for", "namespace", "ops_for"]

# Names copied from the backend namespace besides its public ones.
_KEPT_DUNDERS = ("__array_api_version__", "__version__", "__all__", "__getattr__")

_cache: dict[tuple[str, str, str | None, int], ModuleType] = {}
_build_lock = threading.Lock()
# (overrides object, process version, registry generation, namespace) of the last call with
# no arguments. One tuple, swapped whole, so threads never see a torn entry.
_last: tuple[Any, int, int, ModuleType | None] = (None, -1, -1, None)
_get_overrides = config.current_overrides


def _has_python_float(obj: Any) -> bool:
    """True for a Python float or a (nested) list/tuple holding one, or an empty (nested)
    list/tuple, whose dtype the library would otherwise pick (numpy float64, torch its global
    default); False where the list holds a Python complex too (``[1j, 2.5]`` is complex, as
    in NumPy: the real default dtype would refuse the complex value). ``type() is float`` on
    purpose: numpy.float64 subclasses float but carries its own dtype."""
    if type(obj) is float:
        return True
    if type(obj) in (list, tuple):
        return _python_kind(obj) == _FLOAT
    return False


_NONE, _FLOAT, _COMPLEX = 0, 1, 2


def _python_kind(obj: Any) -> int:
    """_COMPLEX where a (nested) list/tuple holds a Python complex, else _FLOAT where it holds
    a Python float or is empty, else _NONE."""
    if not obj:
        return _FLOAT
    kind = _NONE
    for item in obj:
        t = type(item)
        if t is complex:
            return _COMPLEX
        if t is float:
            kind = _FLOAT
        elif t in (list, tuple):
            inner = _python_kind(item)
            if inner == _COMPLEX:
                return _COMPLEX
            kind = max(kind, inner)
    return kind


# Above this many bytes no array fits in a 64-bit address space: a size mistake, not a lack
# of memory.
_MAX_BYTES = 2**63 - 1


def _count(value: Any) -> int | None:
    """``value`` as an int (Python or NumPy integers; not bools, not floats), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _itemsize(base: Any, dtype: Any) -> int:
    """Bytes per element of ``dtype`` (1 where the namespace cannot say)."""
    for info in (base.finfo, base.iinfo):
        try:
            return max(int(info(dtype).bits) // 8, 1)
        except Exception:  # not a floating (integer) dtype, or no dtype at all
            continue
    return 1


def _shape_problem(shape: Any, itemsize: int = 1) -> str | None:
    """What is wrong with ``shape`` as the shape of a new array of ``itemsize``-byte
    elements, or None."""
    if _count(shape) is not None:
        dims: tuple[Any, ...] = (shape,)
    else:
        try:
            dims = tuple(shape)
        except TypeError:
            return f"a shape is an int or a tuple of ints, got {shape!r}"
    size = 1
    for dim in dims:
        n = _count(dim)
        if n is None:
            return f"a shape is an int or a tuple of ints, got {shape!r} (holding {dim!r})"
        if n < 0:
            return f"sizes must be >= 0, got shape {shape!r}"
        size *= n
    nbytes = size * itemsize
    if nbytes > _MAX_BYTES:
        return f"shape {shape!r} has {size} elements ({nbytes} bytes), more than any array can hold"
    return None


def _arange_problem(start: Any, stop: Any, step: Any) -> str | None:
    for name, value in (("start", start), ("stop", stop), ("step", step)):
        if isinstance(value, Real) and not math.isfinite(value):
            return f"{name} must be finite, got {value!r}"
    if isinstance(step, Real) and step == 0:
        return "step must be nonzero, got 0"
    return None


def _fill_problem(base: Any, fill_value: Any, dtype: Any) -> str | None:
    if not isinstance(fill_value, bool | int | float | complex):
        return (
            "fill_value must be a Python bool, int, float or complex, got "
            f"{type(fill_value).__module__}.{type(fill_value).__qualname__}"
        )
    if type(fill_value) is float and math.isfinite(fill_value) and dtype is not None:
        try:
            largest = float(base.finfo(dtype).max)
        except Exception:  # not a floating dtype
            return None
        if abs(fill_value) > largest:
            return (
                f"fill_value {fill_value!r} does not fit in {_dtype_label(dtype)} (largest "
                f"{largest:g}); pass a wider dtype or float('inf') if inf is what you want"
            )
    return None


def _dtype_label(dtype: Any) -> str:
    return str(dtype).rsplit(".", 1)[-1]


def _count_problem(name: str, value: Any, least: int = 0) -> str | None:
    n = _count(value)
    if n is None:
        return f"{name} must be an int, got {value!r}"
    if n < least:
        return f"{name} must be >= {least}, got {n}"
    return None


def _freq_problem(n: Any, d: Any) -> str | None:
    if isinstance(d, Real) and d == 0:
        return "the sample spacing d must be nonzero, got 0"
    return _count_problem("n", n, least=1)


def _first(*problems: str | None) -> str | None:
    return next((p for p in problems if p is not None), None)


def _beyond_int64(shape: tuple[Any, ...]) -> bool:
    """Whether the element count of a shape of ints overflows int64 (a library computing it
    in int64 may wrap it around instead of refusing)."""
    try:
        return abs(math.prod(shape)) > _MAX_BYTES
    except TypeError:  # not all ints: the library's own refusal is examined later
        return False


def _fail(where: str, exc: Exception, problem: str | None) -> None:
    """Raise ArgumentError with ``problem`` (a user mistake found in the arguments of a call
    that failed with ``exc``), chained from ``exc``; without a problem, return."""
    if problem is not None:
        raise ArgumentError(f"{where}: {problem}") from exc


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


def _named(base: Any, dtype: str) -> Any:
    """The dtype object of ``base`` for a name ("float32", "int64"), as
    ``nb.get_default_dtype()`` returns names: ``xp.asarray(x, dtype=nb.get_default_dtype())``
    works everywhere."""
    found = getattr(base, dtype, None) if dtype in _DTYPE_NAMES else None
    if found is None:
        raise DtypeError(
            f"unknown dtype name {dtype!r} for this backend; expected one of "
            f"{', '.join(n for n in _DTYPE_NAMES if hasattr(base, n))}, or a dtype object"
        )
    return found


def _creation_functions(
    base: Any, default: Any, device: Any, device_named: Any = None
) -> dict[str, Any]:
    """Wrappers of the creation functions that fill in ``dtype`` (and ``device`` when a
    ``using(device=...)`` block chose one) where the caller left them out. Each takes a dtype
    name too (torch and array_api_strict take only their dtype objects), and a device name
    where the library takes only its device objects (``"cpu"`` on jax and array_api_strict).

    A call the library refuses is looked at again, at no cost to calls that succeed: a user
    mistake in its arguments (a negative size, a zero step, a shape no memory can hold) raises
    :class:`~nnbackend.errors.ArgumentError` saying what was wrong, instead of whatever the
    library raises (ValueError, RuntimeError, ZeroDivisionError, TypeError)."""
    b_asarray, b_zeros, b_ones, b_empty = base.asarray, base.zeros, base.ones, base.empty
    b_from_dlpack = base.from_dlpack
    b_full, b_arange, b_linspace, b_eye = base.full, base.arange, base.linspace, base.eye

    def named(dtype: str) -> Any:
        return _named(base, dtype)

    def shape_problem(shape: Any, dtype: Any) -> str | None:
        return _shape_problem(shape, _itemsize(base, dtype))

    def recover(where: str, exc: Exception, problem: str | None, device: Any) -> Any:
        """After ``exc``: raise ArgumentError for ``problem``; else the library's device
        object for a device name it refused (the call is then made again with it); else
        re-raise ``exc``."""
        _fail(where, exc, problem)  # raises
        if type(device) is str and device_named is not None:
            try:
                found = device_named(device)
            except ValueError as bad:
                raise BackendError(f"{where}: bad device {device!r}: {bad}") from exc
            except Exception:
                raise exc from None
            if not (type(found) is str and found == device):
                return found
        raise exc

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

    def filled(b_make: Any, where: str) -> Any:
        """``zeros``, ``ones`` or ``empty``: ``b_make`` with the default dtype (and device)
        filled in, a refused call examined (recover)."""

        def make(shape: Any, *, dtype: Any = None, device: Any = device, **kwargs: Any) -> Any:
            if type(dtype) is str:
                dtype = named(dtype)
            dtype = default if dtype is None else dtype
            if type(shape) is tuple and len(shape) > 1 and _beyond_int64(shape):
                # (CuPy wraps the size of (2**40, 2**40) around to 0 and returns an array)
                _fail(where, OverflowError(where), shape_problem(shape, dtype))
            try:
                return b_make(shape, dtype=dtype, device=device, **kwargs)
            except Exception as exc:
                device = recover(where, exc, shape_problem(shape, dtype), device)
            return b_make(shape, dtype=dtype, device=device, **kwargs)

        make.__name__ = make.__qualname__ = where
        return make

    zeros, ones, empty = filled(b_zeros, "zeros"), filled(b_ones, "ones"), filled(b_empty, "empty")

    def full(
        shape: Any, fill_value: Any, *, dtype: Any = None, device: Any = device, **kwargs: Any
    ) -> Any:
        if dtype is None and type(fill_value) is float:
            dtype = default
        elif type(dtype) is str:
            dtype = named(dtype)
        try:
            return b_full(shape, fill_value, dtype=dtype, device=device, **kwargs)
        except Exception as exc:
            problem = _first(shape_problem(shape, dtype), _fill_problem(base, fill_value, dtype))
            device = recover("full", exc, problem, device)
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
        elif type(dtype) is str:
            dtype = named(dtype)
        try:
            return b_arange(start, stop, step, dtype=dtype, device=device, **kwargs)
        except Exception as exc:
            device = recover("arange", exc, _arange_problem(start, stop, step), device)
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
        elif type(dtype) is str:
            dtype = named(dtype)
        try:
            return b_linspace(
                start, stop, num, dtype=dtype, device=device, endpoint=endpoint, **kwargs
            )
        except Exception as exc:
            device = recover("linspace", exc, _count_problem("num", num), device)
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
        if type(dtype) is str:
            dtype = named(dtype)
        dtype = default if dtype is None else dtype
        try:
            return b_eye(n_rows, n_cols, k=k, dtype=dtype, device=device, **kwargs)
        except Exception as exc:
            problem = _first(
                _count_problem("n_rows", n_rows),
                None if n_cols is None else _count_problem("n_cols", n_cols),
                _count_problem("k", k, least=-(2**63)),
                shape_problem((n_rows, n_rows if n_cols is None else n_cols), dtype),
            )
            device = recover("eye", exc, problem, device)
        return b_eye(n_rows, n_cols, k=k, dtype=dtype, device=device, **kwargs)

    made: dict[str, Callable[..., Any]] = {
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


_LIKE_FUNCTIONS = ("zeros_like", "ones_like", "empty_like", "full_like")
_LIKE_NAMES = (*_LIKE_FUNCTIONS, "astype")


def _dtype_name_functions(base: Any) -> dict[str, Any]:
    """``zeros_like``, ``ones_like``, ``empty_like``, ``full_like`` and ``astype`` of ``base``
    taking a dtype name ("float32") too, as the creation functions do: torch and
    array_api_strict take only their dtype objects (a bare TypeError, ValueError or
    AttributeError), numpy took the names. A dtype object goes through untouched: the cost
    is one call frame and one type check. Where the dtype is left out, the result keeps
    ``x``'s dtype (and device), as the standard says."""

    def like(name: str) -> Callable[..., Any]:
        # One maker for the four: they differ only in the library function (full_like's
        # fill value comes positionally, through *args).
        original = getattr(base, name)

        def wrapper(x: Any, /, *args: Any, dtype: Any = None, **kwargs: Any) -> Any:
            if type(dtype) is str:
                dtype = _named(base, dtype)
            return original(x, *args, dtype=dtype, **kwargs)

        wrapper.__name__ = wrapper.__qualname__ = name
        return wrapper

    b_astype = base.astype

    def astype(x: Any, dtype: Any, /, **kwargs: Any) -> Any:
        if type(dtype) is str:
            dtype = _named(base, dtype)
        return b_astype(x, dtype, **kwargs)

    made: dict[str, Callable[..., Any]] = {}
    wrappers = (*(like(name) for name in _LIKE_FUNCTIONS), astype)
    for wrapper in wrappers:
        original = getattr(base, wrapper.__name__)
        wrapper.__doc__ = (
            f'{wrapper.__name__} of the backend namespace, taking a dtype name ("float32") '
            f"as well as a dtype object.\n\n{original.__doc__ or ''}"
        )
        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
        made[wrapper.__name__] = wrapper
    return made


def _fft_module(base: Any, base_fft: Any, default: Any, device: Any) -> ModuleType:
    """A copy of the backend's ``fft`` namespace whose ``fftfreq`` and ``rfftfreq`` return
    nnbackend's default floating dtype (and the ``using`` block's device) where the caller
    leaves them out: the standard says they return the default real floating dtype, which
    the backend would otherwise take as its own (float64 on NumPy)."""
    fft = ModuleType(getattr(base_fft, "__name__", "fft"))
    for name, value in vars(base_fft).items():
        if not name.startswith("__") or name in _KEPT_DUNDERS:
            fft.__dict__[name] = value
    b_fftfreq, b_rfftfreq = base_fft.fftfreq, base_fft.rfftfreq

    def fftfreq(
        n: int, /, *, d: float = 1.0, dtype: Any = None, device: Any = device, **kwargs: Any
    ) -> Any:
        dtype = default if dtype is None else _named(base, dtype) if type(dtype) is str else dtype
        try:
            return b_fftfreq(n, d=d, dtype=dtype, device=device, **kwargs)
        except Exception as exc:
            _fail("fft.fftfreq", exc, _freq_problem(n, d))
            raise

    def rfftfreq(
        n: int, /, *, d: float = 1.0, dtype: Any = None, device: Any = device, **kwargs: Any
    ) -> Any:
        dtype = default if dtype is None else _named(base, dtype) if type(dtype) is str else dtype
        try:
            return b_rfftfreq(n, d=d, dtype=dtype, device=device, **kwargs)
        except Exception as exc:
            _fail("fft.rfftfreq", exc, _freq_problem(n, d))
            raise

    for wrapper, original in ((fftfreq, b_fftfreq), (rfftfreq, b_rfftfreq)):
        wrapper.__doc__ = (
            f"{original.__name__} of the backend's fft namespace, returning nnbackend's default "
            f"float dtype unless ``dtype`` is given.\n\n{original.__doc__ or ''}"
        )
        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
        fft.__dict__[wrapper.__name__] = wrapper
    return fft


def _check_device_dtype(backend: str, dtype: str, device: str, info: Any, device_obj: Any) -> None:
    """Raise DtypeError when the ``using(device=...)`` device cannot hold the default float
    dtype (array_api_strict's ``no_float64`` device and float64), instead of the library's
    ValueError at the first array."""
    try:
        held = info.dtypes(device=device_obj, kind="real floating")
    except Exception:  # a namespace without per-device dtype facts: nothing to check
        return
    if dtype in held:
        return
    names = [name for name in config.DTYPES if name in held]
    raise DtypeError(
        f"device {device!r} of backend {backend!r} cannot hold {dtype}, the active default "
        f"float dtype; it holds {', '.join(names) or 'no floating dtype nnbackend uses'}. "
        f"Choose one of those, e.g. nnbackend.using(device={device!r}, dtype="
        f"{(names or ['float32'])[0]!r}) or nnbackend.set_default_dtype(...)"
    )


class NamespaceInfo:
    """``__array_namespace_info__()`` of an nnbackend namespace: the backend's own inspection
    object, with ``default_dtypes()`` reporting nnbackend's default floating dtype and
    ``default_device()`` the device the namespace's creation functions place arrays on."""

    def __init__(self, base_info: Any, default: Any, device: Any = None, base: Any = None) -> None:
        self._base_info = base_info
        self._default = default
        self._device = device
        self._base = base

    def default_device(self) -> Any:
        """The device arrays made without ``device=`` land on: the ``using(device=...)``
        block's device, else the library's default. jax's own answer is ``None`` ("whatever
        the current default is") while its arrays report a concrete device, so where the
        library answers ``None`` the device of a fresh empty array is returned instead: then
        ``xp.zeros(3, device=info.default_device()).device == info.default_device()`` holds
        on every backend, as the standard's inspection API promises."""
        if self._device is not None:
            return self._device
        found = self._base_info.default_device()
        if found is None and self._base is not None:
            found = self._base.empty((0,)).device
        return found

    def default_dtypes(self, *, device: Any = None) -> dict[str, Any]:
        dtypes = dict(self._base_info.default_dtypes(device=device))
        dtypes["real floating"] = self._default
        return dtypes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base_info, name)


def _load_namespace(name: str, record: Backend) -> Any:
    """``record.load_namespace()``; an ImportError (the probe said the backend was usable, the
    import then failed) becomes :class:`~nnbackend.errors.BackendUnavailableError` naming the
    backend, the import and how to fix it."""
    try:
        return record.load_namespace()
    except ImportError as exc:
        missing = f"module {exc.name!r}" if exc.name else "a module"
        fix = f"install it ({record.install_hint})" if record.install_hint else f"install {missing}"
        raise BackendUnavailableError(
            f"backend {name!r} is unavailable: its probe said it was usable, but its "
            f"load_namespace failed to import {missing}: {exc}. Fix: {fix}, or choose another "
            f"backend; a plugin's probe should report a missing import instead of None"
        ) from exc


# What nnbackend calls on every backend namespace: _build's creation wrappers and the
# inspection object, and what the base Ops reads at construction (besides the dtype).
_NEEDED_NAMES = (
    "__array_namespace_info__",
    "asarray",
    "zeros",
    "ones",
    "empty",
    "full",
    "arange",
    "linspace",
    "eye",
    "from_dlpack",
    "astype",
    "sum",
    "max",
    "where",
    "all",
    "isnan",
    "isfinite",
    "float32",
    "int64",
)


def _check_needed_names(backend: str, base: Any, dtype: str) -> None:
    """Raise BackendError listing every name nnbackend needs that ``base`` lacks (a plugin's
    ``load_namespace`` returning the library itself rather than an Array API namespace),
    instead of a bare AttributeError naming only the first."""
    needed = _NEEDED_NAMES if dtype in _NEEDED_NAMES else (*_NEEDED_NAMES, dtype)
    missing = [name for name in needed if not hasattr(base, name)]
    if missing:
        raise BackendError(
            f"backend {backend!r}: the namespace its load_namespace returned "
            f"({getattr(base, '__name__', type(base).__qualname__)}) lacks "
            f"{', '.join(missing)}, which nnbackend needs; load_namespace must return an "
            "Array API namespace, e.g. wrap the library with array-api-compat "
            "(array_api_compat.array_namespace(an_array_of_it))"
        )


def _build(backend: str, dtype: str, device: str | None) -> ModuleType:
    record = registry.require(backend)
    if not record.capabilities.float16 and dtype == "float16":
        raise DtypeError(
            f"backend {backend!r} has no float16; use float32 or float64 with it, or pick a "
            f"backend that has float16 ({', '.join(_float16_backends())})"
        )
    reason = None if record.dtype_reason is None else record.dtype_reason(dtype)
    if reason is not None:
        raise DtypeError(f"backend {backend!r} cannot make {dtype} arrays here: {reason}")
    base = _load_namespace(backend, record)
    _check_needed_names(backend, base, dtype)
    default = getattr(base, dtype)
    device_object = None
    base_info = base.__array_namespace_info__()
    if device is not None:
        device_object = registry.device_object(record, device)
        _check_device_dtype(backend, dtype, device, base_info, device_object)
    ns = ModuleType(f"nnbackend.namespace.{backend}")
    ns.__doc__ = (
        f"The Array API namespace of backend {backend!r} with default float dtype {dtype}"
        + (f" on device {device!r}" if device else "")
        + ", made by nnbackend.namespace()."
    )
    for name, value in vars(base).items():
        if not name.startswith("__") or name in _KEPT_DUNDERS:
            ns.__dict__[name] = value
    ns.__dict__.update(_creation_functions(base, default, device_object, record.device))
    if all(hasattr(base, name) for name in _LIKE_NAMES):
        ns.__dict__.update(_dtype_name_functions(base))
    if hasattr(base, "fft"):
        ns.fft = _fft_module(base, base.fft, default, device_object)  # type: ignore[attr-defined]
    info = NamespaceInfo(base_info, default, device_object, base)
    ns.__array_namespace_info__ = lambda: info  # type: ignore[attr-defined]
    ns.__nnbackend__ = (backend, dtype, device)  # type: ignore[attr-defined]
    ns.__wrapped__ = base  # type: ignore[attr-defined]
    return ns


def _float16_backends() -> list[str]:
    return [
        name
        for name in registry.backends()
        if (record := registry.find(name)) is not None and record.capabilities.float16
    ]


def namespace(backend: str | None = None, dtype: DType | str | None = None) -> Namespace:
    """The Array API namespace of the active backend, whose creation functions default to the
    active floating dtype.

    Args:
        backend: a registered backend name; ``None`` means the active one.
        dtype: "float64", "float32", "float16" or a dtype object; ``None`` means the active one.

    Raises:
        BackendError: unknown backend (the message lists the registered ones).
        BackendUnavailableError: the backend cannot run here (the message says why and how to
            fix it).
        DtypeError: unknown dtype, float16 on a backend without it, or a dtype the backend
            cannot hold in this process (float64 on jax without ``jax_enable_x64``; the
            message says how to switch it on).

    >>> import nnbackend as nb
    >>> xp = nb.namespace(dtype="float32")
    >>> xp.asarray([1.0, 2.0]).dtype
    dtype('float32')
    """
    global _last
    # The version and generation are read before the settings they stand for: a set_*() or
    # register_backend() landing between this read and the cache store below then leaves a
    # version that no longer matches, so the next call resolves again, instead of an entry
    # that pairs the new version with a namespace built from the old settings.
    version, generation = config.settings_version(), registry.generation
    if backend is None and dtype is None:
        overrides = _get_overrides()
        last = _last
        if last[0] is overrides and last[1] == version and last[2] == generation:
            return last[3]
        ns = _lookup(*config.resolve(), generation)
        _last = (overrides, version, generation, ns)
        return ns
    return _lookup(*config.resolve(backend, dtype), generation)


def _lookup(backend: str, dtype: str, device: str | None, generation: int) -> ModuleType:
    key = (backend, dtype, device, generation)
    ns = _cache.get(key)
    if ns is None:
        with _build_lock:
            ns = _cache.get(key)
            if ns is None:
                ns = _cache[key] = _build(backend, dtype, device)
    return ns


def array_namespace(*arrays: Any, dtype: DType | str | None = None) -> Namespace:
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


def backend_for(array: Array) -> tuple[Namespace, Backend]:
    """``(xp, record)`` for an array: the backend's own Array API namespace (no dtype
    defaulting: callers pass dtypes explicitly) and its :class:`~nnbackend.Backend` record.

    Cached by the array's type, so the engine pays one dictionary lookup per operation.
    """
    try:
        return _by_type[type(array)]
    except KeyError:
        pass
    generation = registry.generation  # before the lookups, as in namespace()
    name = registry.backend_of(array)
    if name is None:
        raise BackendMismatchError(
            f"expected an array of a registered backend ({', '.join(registry.backends())}), got "
            f"{type(array).__module__}.{type(array).__qualname__}"
        )
    record = registry.require(name)
    found = (_load_namespace(name, record), record)
    with registry.change_lock():  # held by registry changes while they bump and clear
        # A registry change since the lookups cleared the cache: do not refill it with them.
        if registry.generation == generation:
            _by_type[type(array)] = found
    return found


registry.on_change(_by_type.clear)

cached_backend_for_type = _by_type.get
"""``cached_backend_for_type(type(x))``: what :func:`backend_for` cached for arrays of that
type, or ``None``; the engine's per-op lookup without a call frame (internal API)."""

# backend namespace -> its operations object (nnbackend.backends.ops.Ops), built once.
_ops: dict[Any, Any] = {}


# What Ops.__init__ sets on every ops object (the engine reads them without a fallback).
_OPS_FIELDS = (
    "xp",
    "record",
    "inplace",
    "to_host",
    "from_host",
    "on_host",
    "_extra",
    "sum",
    "max",
    "astype",
    "asarray",
    "count_nonzero",
    "lstm_cell",
    "lstm_cell_backward",
    "_positive",
    "_keep",
    "_nan",
    "_finite",
    "_cache",
    "float16",
    "float32",
    "_slow",
    "_decided",
    "_wide",
    "_weights",
)


def _check_ops(found: Any, record: Backend) -> None:
    """Raise BackendError where the record's ``ops`` factory built no usable ops object: not
    an :class:`~nnbackend.backends.ops.Ops`, or an Ops subclass whose ``__init__`` skipped
    ``super().__init__()``. Run once per new ops object, never on the cached path."""
    from nnbackend.backends.ops import Ops

    factory = getattr(record.ops, "__qualname__", repr(record.ops))
    kind = f"{type(found).__module__}.{type(found).__qualname__}"
    if not isinstance(found, Ops):
        raise BackendError(
            f"backend {record.name!r}: its ops factory {factory} returned {kind}, not an "
            "nnbackend.backends.ops.Ops; return an instance of Ops or of a subclass of it "
            "(the engine calls many of its methods)"
        )
    missing = [name for name in _OPS_FIELDS if not hasattr(found, name)]
    if missing:
        raise BackendError(
            f"backend {record.name!r}: its ops object {kind} lacks {', '.join(missing)}, "
            f"which Ops.__init__ sets; call super().__init__(xp, record) in "
            f"{type(found).__qualname__}.__init__"
        )


def ops_for(xp: Namespace, array: Array) -> Ops:
    """The operations object (:class:`nnbackend.backends.ops.Ops`) of ``array``'s backend,
    whose namespace is ``xp``: one dictionary lookup after the first call. Built by the
    backend record's ``ops`` factory; dropped when the registry changes."""
    found = _ops.get(xp)
    if found is None:
        generation = registry.generation
        xp_, record = backend_for(array)
        found = record.ops(xp_, record)
        _check_ops(found, record)
        with registry.change_lock():
            if registry.generation == generation:
                _ops[xp] = found
    return found


registry.on_change(_ops.clear)
# Namespaces built from a replaced record are stale; drop them all (rebuilt on next use).
registry.on_change(_cache.clear)
