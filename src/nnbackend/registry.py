"""The backend registry: names -> :class:`~nnbackend.backends.base.Backend` records.

Built-in backends are registered at import (which imports none of their libraries); plugins
come from :func:`register_backend` or from the entry-point group ``nnbackend.backends``, read
the first time a name is looked up or listed. An entry point names either a ``Backend`` or a
callable that returns one.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from importlib.metadata import entry_points
from typing import Any

from nnbackend.backends import BUILTIN
from nnbackend.backends.base import Backend
from nnbackend.errors import BackendError, BackendLoadError, BackendUnavailableError

__all__ = [
    "ENTRY_POINT_GROUP",
    "available_backends",
    "backend_of",
    "backends",
    "device_object",
    "get",
    "probe",
    "register_backend",
    "unregister_backend",
]

ENTRY_POINT_GROUP = "nnbackend.backends"
#: Names no backend may take: device names that ``using(device=...)``, ``model.to(...)`` and
#: ``nb.to_device`` read as "backend:device" or as a backend when a backend has the name
#: (a plugin named "cuda" took ``using(device="cuda:0")`` away from torch).
RESERVED_NAMES = frozenset(
    {"cpu", "cuda", "gpu", "tpu", "mps", "xpu", "hip", "rocm", "meta", "xla", "device1", "device2"}
)


def _load_message(name: str, hint: str, exc: BaseException) -> str:
    fix = f"reinstall it ({hint})" if hint else "reinstall its library"
    return (
        f"backend {name!r} failed to load: its load_namespace raised {type(exc).__name__}: "
        f"{exc}. Its library is installed but broken (a partial or mismatched install, a "
        f"missing shared library such as CUDA's). Fix: {fix}, or choose another backend "
        "(nb.set_backend(...), NNBACKEND=...; nb.available_backends() lists the usable ones). "
        "The failure is kept: restart the process (or register the backend again) to retry"
    )


def _guard(record: Backend) -> Backend:
    """Give ``record`` a ``load_namespace`` that turns any failure but an ImportError (which
    :mod:`nnbackend.namespace` words with the install hint) into :class:`BackendLoadError`
    naming the backend, chained to the library's exception. The first failure is kept, and
    every later call raises it again without importing again (a second import of a library
    whose first import failed half-way fails differently, or seems to work), so that
    :func:`probe`, :func:`available_backends` and :func:`require` report the backend as
    unusable instead of half-loaded. Every caller of ``record.load_namespace()`` (namespaces,
    devices, datasets) gets it; the record stays the same object."""
    current = record.load_namespace
    if getattr(current, "_nnbackend_guard", None) is record:
        current._nnbackend_failed.clear()  # type: ignore[attr-defined]  # (registered again)
        return record
    # A guarded loader copied from another record (dataclasses.replace): guard its own.
    load = (
        getattr(current, "__wrapped__", current)
        if hasattr(current, "_nnbackend_guard")
        else current
    )
    name, hint = record.name, record.install_hint
    failed: list[BaseException] = []

    @functools.wraps(load)
    def load_namespace() -> Any:
        if failed:
            raise BackendLoadError(_load_message(name, hint, failed[0])) from failed[0]
        try:
            return load()
        except ImportError:
            raise
        # A library that calls sys.exit() at import is as broken as one that raises; a
        # KeyboardInterrupt is the user's Ctrl-C, neither wrapped nor kept.
        except (Exception, SystemExit) as exc:
            failed.append(exc)
            raise BackendLoadError(_load_message(name, hint, exc)) from exc

    load_namespace._nnbackend_guard = record  # type: ignore[attr-defined]
    load_namespace._nnbackend_failed = failed  # type: ignore[attr-defined]
    object.__setattr__(record, "load_namespace", load_namespace)
    return record


def device_object(record: Backend, device: str) -> Any:
    """``record.device(device)``, the backend's object for a device name (the part after
    ``"cupy:"``).

    Raises:
        ImportError: the library is not installed (callers defer that to the first use,
            whose error says how to install it).
        BackendError: ``device`` is malformed or names a device that is not there (the
            backend's ValueError).
        BackendLoadError: the library is installed but broken.
        BackendUnavailableError: the lookup failed otherwise (a driver or plugin error,
            chained): it came out as the library's bare exception.
    """
    try:
        return record.device(device)
    except (BackendLoadError, ImportError):
        raise  # (a BackendLoadError is a ValueError too: not a bad device)
    except ValueError as exc:
        raise BackendError(f"bad device {device!r} for backend {record.name!r}: {exc}") from None
    except Exception as exc:
        raise BackendUnavailableError(
            f"backend {record.name!r} failed while looking up device {device!r} "
            f"({type(exc).__name__}: {exc}); check its driver and installation with "
            "`nnbackend info`"
        ) from exc


def _load_failure(record: Backend) -> BaseException | None:
    """The exception ``record``'s ``load_namespace`` failed with (kept by :func:`_guard`)."""
    failed = getattr(record.load_namespace, "_nnbackend_failed", None)
    return failed[0] if failed else None


def _builtin_tables() -> tuple[dict[str, Backend], dict[str, str]]:
    """The built-in records by name, and their array modules' names -> backend name.
    Built in a function: Python 3.12 inlines a comprehension at module level into the
    module's frame, where a tracer that reads ``frame.f_locals`` (a debugger) resets its
    loop variables to None mid-loop (CPython gh-130809), and the import failed."""
    records: dict[str, Backend] = {}
    by_module: dict[str, str] = {}
    for record in BUILTIN:
        records[record.name] = _guard(record)
        for module in record.array_modules:
            by_module[module] = record.name
    return records, by_module


_lock = threading.RLock()
# name -> record; type(x).__module__'s first component -> backend name, for backend_of().
_records, _by_module = _builtin_tables()
_probes: dict[str, str | None] = {}
_entry_points_loaded = False  # set when loading has finished, not when it starts
# (thread id, finished event) of the load in progress, or None.
_entry_points_loading: tuple[int, threading.Event] | None = None
# How long a thread waits for another thread's loading of the plugins (a plugin that imports
# a large library takes seconds). Bounded: a thread that waits while holding a lock the
# plugin's import needs (config's, where the plugin reads the settings at import) then goes
# on without the plugins instead of hanging.
ENTRY_POINT_WAIT_S = 30.0
_entry_point_errors: dict[str, str] = {}
# Why the installed entry points could not be listed at all (malformed package metadata).
_entry_point_scan_error: str | None = None
# Names removed by unregister_backend(), for the message when one is still selected.
_unregistered: set[str] = set()
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
        BackendError: the name is taken and ``replace`` is false, the array modules
            overlap a backend that ``replace`` does not name (the message names it),
            ``replace`` is a name no backend is registered under, or the name is one of
            :data:`RESERVED_NAMES` (a device name such as ``"cuda"``).
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
    if backend.name in RESERVED_NAMES:
        raise BackendError(
            f"{backend.name!r} cannot be a backend name: it is a device name "
            f"(using(device='{backend.name}:0'), model.to({backend.name!r})), and a backend of "
            "that name would capture those devices; name the backend after its library, e.g. "
            f"'my{backend.name}'"
        )
    with _lock:
        if isinstance(replace, str) and replace not in _records:
            raise BackendError(
                f"replace={replace!r} names no registered backend; pass the name of the "
                f"backend whose arrays or name are taken over ({', '.join(map(repr, _records))}), "
                "or True"
            )
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
        _records[backend.name] = _guard(backend)
        _unregistered.discard(backend.name)
        for module in backend.array_modules:
            _by_module[module] = backend.name
        _probes.pop(backend.name, None)
        generation += 1
        _on_change()
    return backend


def unregister_backend(name: str) -> None:
    """Remove a backend added at run time. Built-in backends cannot be removed; a record
    registered over one (``replace=True``) is removed by putting the built-in back. Array
    modules it had taken over (``register_backend(..., replace=...)``) go back to the
    registered backend that declares them. A backend still selected (``set_backend``, a
    ``using`` block) raises :class:`~nnbackend.errors.BackendError` at its next use, saying
    that it was unregistered."""
    global generation
    builtin = next((record for record in BUILTIN if record.name == name), None)
    if builtin is not None:
        with _lock:
            if _records.get(name) is builtin:
                raise BackendError(f"{name!r} is a built-in backend and cannot be unregistered")
        # A record registered over the built-in (replace=True): put the built-in back, which
        # otherwise could not be had again in this process.
        register_backend(builtin, replace=True)
        return
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
        _unregistered.add(name)
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
    global _entry_points_loaded, _entry_points_loading
    if _entry_points_loaded:
        return
    me = threading.get_ident()
    with _lock:
        if _entry_points_loaded:  # set by another thread while this one waited
            return  # type: ignore[unreachable]  # mypy narrows the global across the lock
        loading = _entry_points_loading
        if loading is None:
            loading = _entry_points_loading = (me, threading.Event())
            mine = True
        else:
            mine = False
    if not mine:
        if loading[0] != me:
            # Another thread is importing the plugins: wait for it, instead of answering
            # without them ("unknown backend" for a plugin still being imported). The same
            # thread (a plugin whose import asks for the registry) sees those loaded so far.
            loading[1].wait(ENTRY_POINT_WAIT_S)
        return
    try:
        _load_entry_points_now()
    finally:
        with _lock:
            _entry_points_loaded = True
            _entry_points_loading = None
        loading[1].set()


def _load_entry_points_now() -> None:
    global _entry_point_scan_error
    try:
        found = list(entry_points(group=ENTRY_POINT_GROUP))
    # Malformed metadata of any installed package (an entry_points.txt line without "=")
    # made importlib.metadata raise TypeError: nnbackend then works with the built-ins.
    except Exception as exc:
        _entry_point_scan_error = (
            f"the installed packages' entry points could not be read ({type(exc).__name__}: "
            f"{exc}); a package with malformed metadata (entry_points.txt) is installed"
        )
        return
    for ep in found:
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
    if name in _unregistered:
        message += (
            f"; {name!r} was removed by unregister_backend(): register it again, or select "
            "another backend (nb.set_backend(...), nb.using(backend=...))"
        )
    if _entry_point_scan_error is not None:
        message += f"; plugins were not loaded: {_entry_point_scan_error}"
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
    failure = _load_failure(record)
    if failure is not None:  # (the probe said usable; loading it failed since)
        return f"its load_namespace failed ({type(failure).__name__}: {failure})"
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
    failure = _load_failure(record)
    if failure is not None:
        raise BackendLoadError(_load_message(name, record.install_hint, failure)) from failure
    reason = probe(name)
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {reason}")
    return record


def backend_of(array: object) -> str | None:
    """The name of the backend whose array type ``array`` is, or ``None`` (Python scalars,
    unknown types). Looks at the type's module only, so it imports nothing."""
    module = type(array).__module__.partition(".")[0]
    return _by_module.get(module)
