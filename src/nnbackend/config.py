"""Settings and where they come from.

Precedence, highest first: an explicit argument > the innermost :func:`using` block (a
``ContextVar``, so local to its thread or asyncio task) > the process default set by
:func:`set_backend` / :func:`set_default_dtype` > the environment (``NNBACKEND``,
``NNBACKEND_DTYPE``, read at first use; an empty value counts as unset) > the built-in default
(numpy, float64). New threads see the process default.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from nnbackend import registry
from nnbackend.errors import BackendError, DtypeError

__all__ = [
    "BACKEND_ENV",
    "DTYPES",
    "DTYPE_ENV",
    "get_backend",
    "get_default_dtype",
    "get_device",
    "normalize_dtype",
    "resolve",
    "set_backend",
    "set_default_dtype",
    "sources",
    "using",
]

BACKEND_ENV = "NNBACKEND"
DTYPE_ENV = "NNBACKEND_DTYPE"
BUILTIN_BACKEND = "numpy"
BUILTIN_DTYPE = "float64"
DTYPES: tuple[str, ...] = ("float64", "float32", "float16")

# Human-readable sources, as info() prints them.
SOURCE_ARGUMENT = "argument"
SOURCE_USING = "using() block"
SOURCE_BUILTIN = "built-in default"


@dataclass(frozen=True, slots=True)
class _Overrides:
    """What the innermost using() block set; None means "inherit"."""

    backend: str | None
    dtype: str | None
    device: str | None


_context: ContextVar[_Overrides | None] = ContextVar("nnbackend_settings", default=None)
_lock = threading.Lock()


class _Process:
    """Process-wide defaults: set by a function, else read once from the environment."""

    backend: str | None = None
    dtype: str | None = None
    backend_source: str = SOURCE_BUILTIN
    dtype_source: str = SOURCE_BUILTIN
    environment_read = False
    version = 0  # bumped on every change, so cached namespaces can notice


def normalize_dtype(dtype: Any, *, variable: str | None = None) -> str:
    """The canonical name ("float64", "float32", "float16") of a floating dtype given as a
    name or as any library's dtype object; anything else raises
    :class:`~nnbackend.errors.DtypeError` listing the valid names."""
    if isinstance(dtype, str):
        name = dtype.strip().lower()
    else:
        # numpy dtypes and scalar types have .name or __name__; torch prints "torch.float32";
        # array_api_strict prints "array_api_strict.float32".
        name = getattr(dtype, "name", None) or getattr(dtype, "__name__", None) or str(dtype)
        name = str(name).rsplit(".", 1)[-1].lower()
    aliases = {
        "half": "float16",
        "single": "float32",
        "double": "float64",
        "f2": "float16",
        "f4": "float32",
        "f8": "float64",
    }
    name = aliases.get(name, name)
    if name in DTYPES:
        return name
    where = f" in {variable}" if variable else ""
    valid = ", ".join(repr(d) for d in DTYPES)
    raise DtypeError(f"unknown default dtype {dtype!r}{where}; expected one of {valid}")


def _check_backend(name: Any, *, variable: str | None = None) -> str:
    if not isinstance(name, str):
        raise BackendError(f"a backend is selected by name (a str), got {type(name).__name__}")
    name = name.strip()
    try:
        registry.get(name)
    except BackendError as exc:
        if variable:
            raise BackendError(f"{variable}={name!r}: {exc}") from None
        raise
    return name


def _read_environment() -> None:
    with _lock:
        if _Process.environment_read:
            return
        backend = os.environ.get(BACKEND_ENV, "").strip()
        dtype = os.environ.get(DTYPE_ENV, "").strip()
        # A variable already overridden by set_*() is not read. Validate both before recording
        # anything, so a bad value raises again on the next use instead of being half-applied.
        backend_name = dtype_name = None
        if _Process.backend is None and backend:
            backend_name = _check_backend(backend, variable=BACKEND_ENV)
        if _Process.dtype is None and dtype:
            dtype_name = normalize_dtype(dtype, variable=DTYPE_ENV)
        if backend_name:
            _Process.backend, _Process.backend_source = backend_name, f"from {BACKEND_ENV}"
        if dtype_name:
            _Process.dtype, _Process.dtype_source = dtype_name, f"from {DTYPE_ENV}"
        _Process.environment_read = True
        _Process.version += 1


def _process_backend() -> str:
    if not _Process.environment_read:
        _read_environment()
    return _Process.backend or BUILTIN_BACKEND


def _process_dtype() -> str:
    if not _Process.environment_read:
        _read_environment()
    return _Process.dtype or BUILTIN_DTYPE


def set_backend(name: str) -> None:
    """Set the process-wide default backend (overrides ``NNBACKEND``; ``using`` blocks still
    win). The name is checked now; the library is loaded and probed at first use."""
    name = _check_backend(name)
    with _lock:
        _Process.backend, _Process.backend_source = name, "set_backend()"
        _Process.version += 1


def set_default_dtype(dtype: Any) -> None:
    """Set the process-wide default floating dtype: "float64", "float32" or "float16" (or a
    dtype object of any backend). Overrides ``NNBACKEND_DTYPE``; ``using`` blocks still win."""
    name = normalize_dtype(dtype)
    with _lock:
        _Process.dtype, _Process.dtype_source = name, "set_default_dtype()"
        _Process.version += 1


def get_backend() -> str:
    """The name of the active backend."""
    overrides = _context.get()
    if overrides is not None and overrides.backend is not None:
        return overrides.backend
    return _process_backend()


def get_default_dtype() -> str:
    """The name of the active default floating dtype."""
    overrides = _context.get()
    if overrides is not None and overrides.dtype is not None:
        return overrides.dtype
    return _process_dtype()


def get_device() -> str | None:
    """The device set by the innermost ``using(device=...)`` block, or ``None`` (the backend's
    default device)."""
    overrides = _context.get()
    return None if overrides is None else overrides.device


def resolve(backend: str | None = None, dtype: Any = None) -> tuple[str, str, str | None]:
    """``(backend, dtype, device)`` after applying the precedence rules; explicit arguments
    win and are validated."""
    overrides = _context.get()
    device = None if overrides is None else overrides.device
    if backend is not None:
        backend = _check_backend(backend)
        if overrides is not None and overrides.backend != backend:
            device = None  # a device belongs to the backend it was chosen for
    elif overrides is not None and overrides.backend is not None:
        backend = overrides.backend
    else:
        backend = _process_backend()
    if dtype is not None:
        dtype = normalize_dtype(dtype)
    elif overrides is not None and overrides.dtype is not None:
        dtype = overrides.dtype
    else:
        dtype = _process_dtype()
    return backend, dtype, device


def _split_device(device: str, backend: str | None) -> tuple[str | None, str]:
    """``"cupy:1"`` -> ("cupy", "1"); ``"cuda:0"`` with backend torch -> ("torch", "cuda:0")."""
    if not isinstance(device, str):
        raise BackendError(f"a device is named by a str such as 'cpu' or 'cupy:0', got {device!r}")
    prefix, sep, rest = device.partition(":")
    if sep and prefix in registry.backends():
        if backend is not None and backend != prefix:
            raise BackendError(
                f"device {device!r} belongs to backend {prefix!r}, but backend={backend!r} was "
                "asked for; drop one of the two"
            )
        return prefix, rest
    return backend, device


@contextmanager
def using(
    backend: str | None = None, dtype: Any = None, device: str | None = None
) -> Iterator[None]:
    """Override settings inside a ``with`` block, for this thread or asyncio task only.

    Arguments left as ``None`` inherit from the enclosing block or the process default. A
    device such as ``"cupy:1"`` also selects its backend. Names are validated on entry.

    >>> import nnbackend as nb
    >>> with nb.using(dtype="float32"):
    ...     nb.namespace().zeros(2).dtype
    dtype('float32')
    """
    outer = _context.get()
    if device is not None:
        backend, device = _split_device(device, backend)
    if backend is not None:
        backend = _check_backend(backend)
    dtype_name = normalize_dtype(dtype) if dtype is not None else None
    if device is not None:
        target = backend or (outer.backend if outer and outer.backend else _process_backend())
        try:
            registry.get(target).device(device)
        except ValueError as exc:
            raise BackendError(f"bad device {device!r} for backend {target!r}: {exc}") from None
        except ImportError:
            pass  # the library is missing; the first use reports that with its fix
    if outer is not None:
        backend_changed = backend is not None and backend != outer.backend
        inherited_device = None if backend_changed else outer.device
        overrides = _Overrides(
            backend if backend is not None else outer.backend,
            dtype_name if dtype_name is not None else outer.dtype,
            device if device is not None else inherited_device,
        )
    else:
        overrides = _Overrides(backend, dtype_name, device)
    token = _context.set(overrides)
    try:
        yield
    finally:
        _context.reset(token)


def sources() -> dict[str, tuple[Any, str]]:
    """Each setting's value and where it came from, for :func:`nnbackend.info`."""
    overrides = _context.get()
    _read_environment()
    result: dict[str, tuple[Any, str]] = {}
    if overrides is not None and overrides.backend is not None:
        result["backend"] = (overrides.backend, SOURCE_USING)
    else:
        result["backend"] = (_process_backend(), _Process.backend_source)
    if overrides is not None and overrides.dtype is not None:
        result["dtype"] = (overrides.dtype, SOURCE_USING)
    else:
        result["dtype"] = (_process_dtype(), _Process.dtype_source)
    if overrides is not None and overrides.device is not None:
        result["device"] = (overrides.device, SOURCE_USING)
    else:
        result["device"] = ("default", SOURCE_BUILTIN)
    return result
