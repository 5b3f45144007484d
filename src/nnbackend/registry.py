"""The backend registry: names -> :class:`~nnbackend.backends.base.Backend` records.

Built-in backends are registered at import (which imports none of their libraries); plugins
come from :func:`register_backend` or from the entry-point group ``nnbackend.backends``, read
the first time a name is looked up or listed. An entry point names either a ``Backend`` or a
callable that returns one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
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


def register_backend(backend: Backend, *, replace: bool | str = False) -> Backend:
    """Add ``backend`` to the registry and return it.

    Registering imports nothing: the backend's library is loaded on first use.

    Args:
        backend: the record to register.
        replace: ``True`` replaces a record already registered under the same name. A record
            whose ``array_modules`` overlap another backend's would take that backend's arrays
            over (``backend_of`` would name it, and ``save``/``load`` would read them through
            it): that needs ``replace`` set to the other backend's name, e.g.
            ``replace="numpy"``, which also allows replacing a record of the same name.

    Raises:
        BackendError: the name is taken and ``replace`` is false, or the array modules
            overlap a backend that ``replace`` does not name (the message names it).
    """
    global generation
    if not isinstance(backend, Backend):
        raise BackendError(
            f"register_backend() takes an nnbackend.Backend record, got {type(backend).__name__}; "
            "build one with nnbackend.Backend(name=..., load_namespace=..., probe=..., ...)"
        )
    if not isinstance(replace, (bool, str)):
        raise BackendError(
            f"replace must be True, False or the name of the backend replaced, got {replace!r}"
        )
    with _lock:
        current = _records.get(backend.name)
        if current is not None and current is not backend and replace is False:
            raise BackendError(
                f"a backend named {backend.name!r} is already registered; "
                "pass replace=True to replace it"
            )
        taken = {
            module: owner
            for module in backend.array_modules
            if (owner := _by_module.get(module)) is not None and owner != backend.name
        }
        refused = sorted({owner for owner in taken.values() if owner != replace})
        if refused:
            modules = ", ".join(repr(m) for m in backend.array_modules if m in taken)
            raise BackendError(
                f"backend {backend.name!r} declares array_modules {modules}, whose arrays belong "
                f"to the registered backend {refused[0]!r}; registering it would take "
                f"{refused[0]!r}'s arrays over. Declare only your own library's modules, or "
                f"pass replace={refused[0]!r} to take them over on purpose"
            )
        if current is not None and current is not backend:
            for module in current.array_modules:
                if _by_module.get(module) == backend.name:
                    del _by_module[module]
        _records[backend.name] = backend
        for module in backend.array_modules:
            _by_module[module] = backend.name
        _probes.pop(backend.name, None)
        generation += 1
        _on_change()
    return backend


def unregister_backend(name: str) -> None:
    """Remove a backend added at run time. Built-in backends cannot be removed. Array modules
    it had taken over (``register_backend(..., replace=...)``) go back to the registered
    backend that declares them."""
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
                # Built-ins first, then plugins in registration order.
                for other in _records.values():
                    if module in other.array_modules:
                        _by_module[module] = other.name
                        break
        _probes.pop(name, None)
        generation += 1
        _on_change()


def _on_change() -> None:
    # Caches keyed by array type (namespace.backend_for) must forget replaced records.
    for callback in _change_callbacks:
        callback()


_change_callbacks: list[Any] = []


# -- internal API for other nnbackend modules (not in __all__) -----------------------------


def on_change(callback: Callable[[], object]) -> None:
    """Call ``callback()`` (under :func:`change_lock`) whenever a backend is registered,
    replaced or unregistered: caches built from the registry clear themselves with it."""
    _change_callbacks.append(callback)


def change_lock() -> AbstractContextManager[Any]:
    """The lock registry changes hold while they bump :data:`generation` and run the
    :func:`on_change` callbacks; a cache refilled under it never misses a change."""
    return _lock


def find(name: str) -> Backend | None:
    """The record registered as ``name``, or ``None``: no entry points loaded, no probe,
    no error (unlike :func:`get`)."""
    return _records.get(name)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    with _lock:
        if _entry_points_loaded:  # set by another thread while this one waited
            return  # type: ignore[unreachable]  # mypy narrows the global across the lock
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
            # A broken plugin must not break nnbackend: one that calls sys.exit() or raises
            # KeyboardInterrupt at import is as unusable as one that raises ImportError.
            except (Exception, SystemExit, KeyboardInterrupt) as exc:
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
    registered = backends()
    names = ", ".join(repr(n) for n in registered)
    message = f"unknown backend {name!r}; registered backends are {names}"
    if isinstance(name, str):
        # Dtype names are read in any case ("Float32"); backend names, which plugins choose,
        # are not: say which one was meant.
        alike = [n for n in registered if n.casefold() == name.strip().casefold()]
        if alike:
            message += f" (names are case-sensitive: did you mean {alike[0]!r}?)"
    return message


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
    # A probe imports the library: one that calls sys.exit() at import is unusable, not an
    # exit. (A KeyboardInterrupt here is the user's Ctrl-C, and is not cached as a reason.)
    except (Exception, SystemExit) as exc:
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
