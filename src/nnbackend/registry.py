"""The backend registry: names -> :class:`~nnbackend.backends.base.Backend` records.

Built-in backends are registered at import (which imports none of their libraries); plugins
come from :func:`register_backend` or from the entry-point group ``nnbackend.backends``, read
the first time a name is looked up or listed. An entry point names either a ``Backend`` or a
callable that returns one.
"""

from __future__ import annotations

import threading
from importlib.metadata import entry_points
from typing import Any

from nnbackend.backends import BUILTIN
from nnbackend.backends.base import Backend
from nnbackend.errors import BackendError, BackendUnavailableError

__all__ = [
    "ENTRY_POINT_GROUP",
    "available_backends",
    "backend_of",
    "backends",
    "get",
    "probe",
    "register_backend",
    "unregister_backend",
]

ENTRY_POINT_GROUP = "nnbackend.backends"

_lock = threading.RLock()
_records: dict[str, Backend] = {record.name: record for record in BUILTIN}
# type(x).__module__'s first component -> backend name, for backend_of().
_by_module: dict[str, str] = {m: r.name for r in BUILTIN for m in r.array_modules}
_probes: dict[str, str | None] = {}
_entry_points_loaded = False
_entry_point_errors: dict[str, str] = {}
# Bumped on every change, so caches built from the registry (namespaces) can notice.
generation = 0


def register_backend(backend: Backend, *, replace: bool = False) -> Backend:
    """Add ``backend`` to the registry and return it.

    Registering imports nothing: the backend's library is loaded on first use. A name that is
    already registered raises :class:`~nnbackend.errors.BackendError` unless ``replace=True``.
    """
    global generation
    if not isinstance(backend, Backend):
        raise BackendError(
            f"register_backend() takes an nnbackend.Backend record, got {type(backend).__name__}; "
            "build one with nnbackend.Backend(name=..., load_namespace=..., probe=..., ...)"
        )
    with _lock:
        if backend.name in _records and not replace and _records[backend.name] is not backend:
            raise BackendError(
                f"a backend named {backend.name!r} is already registered; "
                "pass replace=True to replace it"
            )
        _records[backend.name] = backend
        for module in backend.array_modules:
            _by_module[module] = backend.name
        _probes.pop(backend.name, None)
        generation += 1
        _on_change()
    return backend


def unregister_backend(name: str) -> None:
    """Remove a backend added at run time. Built-in backends cannot be removed."""
    global generation
    if any(record.name == name for record in BUILTIN):
        raise BackendError(f"{name!r} is a built-in backend and cannot be unregistered")
    with _lock:
        record = _records.pop(name, None)
        if record is None:
            raise BackendError(_unknown_message(name))
        for module in record.array_modules:
            if _by_module.get(module) == name:
                del _by_module[module]
        _probes.pop(name, None)
        generation += 1
        _on_change()


def _on_change() -> None:
    # Caches keyed by array type (namespace.backend_for) must forget replaced records.
    for callback in _change_callbacks:
        callback()


_change_callbacks: list[Any] = []


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    with _lock:
        if _entry_points_loaded:
            return
        _entry_points_loaded = True
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in _records:
                continue
            try:
                loaded: Any = ep.load()
                record = loaded if isinstance(loaded, Backend) else loaded()
                if not isinstance(record, Backend):
                    raise TypeError(f"it gave {type(record).__name__}, not an nnbackend.Backend")
                if record.name != ep.name:
                    raise ValueError(
                        f"the entry point is named {ep.name!r} but its record is {record.name!r}"
                    )
                register_backend(record)
            except Exception as exc:  # a broken plugin must not break nnbackend
                _entry_point_errors[ep.name] = (
                    f"plugin entry point {ep.value!r} failed to load ({type(exc).__name__}: {exc})"
                )


def backends() -> list[str]:
    """The names of all registered backends, built-ins first, then plugins in registration
    order. Plugins that failed to load are listed too; :func:`available_backends` says why
    they cannot be used."""
    _load_entry_points()
    return list(_records) + [name for name in _entry_point_errors if name not in _records]


def _unknown_message(name: object) -> str:
    names = ", ".join(repr(n) for n in backends())
    return f"unknown backend {name!r}; registered backends are {names}"


def get(name: str) -> Backend:
    """The record registered as ``name``; an unknown name raises
    :class:`~nnbackend.errors.BackendError` listing the registered names."""
    record = _records.get(name)
    if record is None:
        _load_entry_points()
        record = _records.get(name)
        if record is None:
            if name in _entry_point_errors:
                raise BackendUnavailableError(f"backend {name!r}: {_entry_point_errors[name]}")
            raise BackendError(_unknown_message(name))
    return record


def probe(name: str) -> str | None:
    """``None`` when backend ``name`` is usable here, else the reason it is not (cached)."""
    if name in _entry_point_errors and name not in _records:
        return _entry_point_errors[name]
    record = get(name)
    try:
        return _probes[name]
    except KeyError:
        pass
    try:
        reason = record.probe()
    except Exception as exc:
        reason = f"its availability probe failed ({type(exc).__name__}: {exc})"
    _probes[name] = reason
    return reason


def available_backends() -> list[str]:
    """The registered backends that are usable on this machine now."""
    return [name for name in backends() if probe(name) is None]


def require(name: str) -> Backend:
    """The record for ``name``, or :class:`~nnbackend.errors.BackendUnavailableError` with the
    reason it cannot be used."""
    record = get(name)
    reason = probe(name)
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {reason}")
    return record


def backend_of(array: object) -> str | None:
    """The name of the backend whose array type ``array`` is, or ``None`` (Python scalars,
    unknown types). Looks at the type's module only, so it imports nothing."""
    module = type(array).__module__.partition(".")[0]
    return _by_module.get(module)
