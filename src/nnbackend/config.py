"""Settings and where they come from.

Precedence, highest first: an explicit argument > the innermost :func:`using` block (a
``ContextVar``, so local to its thread or asyncio task) > the process default set by
:func:`set_backend` / :func:`set_default_dtype` > the environment (``NNBACKEND``,
``NNBACKEND_DTYPE``, read at first use; an empty value counts as unset) > the built-in default
(numpy, float64). New threads see the process default.

The dtype setting is a precision policy: one of the array dtypes ("float64", "float32",
"float16"), or "mixed16" (parameters and new arrays in float32, layers computing in float16; see
:mod:`nnbackend.precision`). :func:`get_default_dtype` gives the array dtype (float32 under
mixed16), :func:`get_policy` the policy's name.

The dtype guard (``using(check_dtypes=True)``, :func:`set_check_dtypes`, or the environment
variable ``NNBACKEND_CHECK_DTYPES=1``) makes every engine op check the dtype of its outputs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from nnbackend import registry
from nnbackend.errors import ArgumentError, BackendError, DtypeError

__all__ = [
    "BACKEND_ENV",
    "CHECK_DTYPES_ENV",
    "DTYPES",
    "DTYPE_ENV",
    "POLICIES",
    "builtin_dtype",
    "check_dtypes_enabled",
    "get_backend",
    "get_default_dtype",
    "get_device",
    "get_policy",
    "normalize_dtype",
    "normalize_policy",
    "pinned",
    "resolve",
    "set_backend",
    "set_check_dtypes",
    "set_default_dtype",
    "sources",
    "using",
]

BACKEND_ENV = "NNBACKEND"
DTYPE_ENV = "NNBACKEND_DTYPE"
CHECK_DTYPES_ENV = "NNBACKEND_CHECK_DTYPES"
BUILTIN_BACKEND = "numpy"
BUILTIN_DTYPE = "float64"
# The built-in default on a backend that cannot hold float64 now (see builtin_dtype()).
FALLBACK_DTYPE = "float32"
DTYPES: tuple[str, ...] = ("float64", "float32", "float16")
#: The precision policies the dtype setting accepts: the array dtypes and the mixed ones.
POLICIES: tuple[str, ...] = (*DTYPES, "mixed16")
# Mixed policy -> the dtype of new arrays and parameters under it, and the dtype layers compute in.
_ARRAY_DTYPE = {"mixed16": "float32"}
_COMPUTE_DTYPE = {"mixed16": "float16"}
_POLICY_ALIASES = {"mixed": "mixed16", "mixed_float16": "mixed16", "mixed-float16": "mixed16"}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")

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
    check_dtypes: bool | None = None
    # The overrides in force when the block was entered, restored when it ends (see _leave).
    outer: _Overrides | None = field(default=None, compare=False, repr=False)


_context: ContextVar[_Overrides | None] = ContextVar("nnbackend_settings", default=None)
# Blocks of this context that ended while another block was innermost (a generator's block
# closed after a later one was opened): when the innermost one ends, they are skipped. A
# tuple, searched by identity: two blocks with equal settings are still two blocks.
_ended: ContextVar[tuple[_Overrides, ...]] = ContextVar("nnbackend_ended", default=())
# Reentrant: reading NNBACKEND may import a plugin (its entry point), whose import may read
# the settings again in this thread (see _read_environment); a plain Lock hung there.
_lock = threading.RLock()


class _Process:
    """Process-wide defaults: set by a function, else read once from the environment."""

    backend: str | None = None
    dtype: str | None = None
    backend_source: str = SOURCE_BUILTIN
    dtype_source: str = SOURCE_BUILTIN
    environment_read = False
    environment_reading = False  # _read_environment() is validating (importing a plugin)
    version = 0  # bumped on every change, so cached namespaces can notice
    check_dtypes: bool | None = None  # set_check_dtypes()
    env_check_dtypes = False  # NNBACKEND_CHECK_DTYPES


class _EngineSwitch:
    """The one flag the engine reads per op: True when the dtype guard or anomaly detection
    may be on somewhere (the process default, the environment, an open ``using`` block or
    ``detect_anomaly`` block in any thread). Only then does an op look at the context.

    It starts True, so the first op reads the environment and settles it. One instance with
    slots: Python 3.11 specialises reading an instance's slot (about 2 ns), not a class
    attribute (about 20 ns), and the engine reads it twice an op."""

    __slots__ = ("anomaly_blocks", "check_blocks", "maybe", "trace_blocks")

    def __init__(self) -> None:
        self.maybe = True
        self.check_blocks = 0  # open using(check_dtypes=True) blocks, all threads together
        self.anomaly_blocks = 0  # open detect_anomaly() blocks, all threads together
        self.trace_blocks = 0  # compile_step recordings in progress, all threads together


# -- internal API for other nnbackend modules (not in __all__) -----------------------------

engine_switch = _EngineSwitch()
"""The engine's per-op flag holder: ``engine_switch.maybe`` (see :class:`_EngineSwitch`)."""

current_overrides = _context.get
"""The innermost ``using(...)`` block's overrides in this context, or ``None`` (a bound
``ContextVar.get``: callers on hot paths keep it as a local)."""


def settings_version() -> int:
    """A number bumped on every process-wide settings change: caches keyed by it notice.
    The environment is read first, so that its first reading (which bumps the number) does
    not come between two lookups of one cache (a compiled step recorded a third time)."""
    if not _Process.environment_read:
        _read_environment()
    return _Process.version


def _refresh_switch() -> None:
    engine_switch.maybe = bool(
        _Process.check_dtypes
        or (_Process.check_dtypes is None and _Process.env_check_dtypes)
        or engine_switch.check_blocks
        or engine_switch.anomaly_blocks
        or engine_switch.trace_blocks
        or not _Process.environment_read
    )


def count_blocks(kind: str, delta: int) -> None:
    """Open (+1) or close (-1) a block that turns the engine's checks on (``kind`` is
    ``"check"``, ``"anomaly"`` or ``"trace"``); internal API for ``using``,
    ``detect_anomaly`` and ``compile_step``."""
    with _lock:
        name = {"check": "check_blocks", "anomaly": "anomaly_blocks", "trace": "trace_blocks"}[kind]
        setattr(engine_switch, name, getattr(engine_switch, name) + delta)
        _refresh_switch()


def _leave(overrides: _Overrides) -> None:
    """End the block that set ``overrides``. Not ``ContextVar.reset``: blocks inside
    generators end in any order, and in any context (a generator closed by another thread or
    task). Restoring the value at entry then brought back a block that had already ended
    (its settings stayed for good), and a reset from another context raised ValueError."""
    current = _context.get()
    if current is not overrides:
        # Another block is innermost here: leave it in force, but never restore this one.
        if current is not None:
            _ended.set((*_ended.get(), overrides))
        return
    outer = overrides.outer
    ended = _ended.get()
    if ended:
        while outer is not None and any(outer is block for block in ended):
            outer = outer.outer
        if outer is None:
            _ended.set(())
    _context.set(outer)


def _check_flag(value: Any, name: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        # bool("false") is True: a string here is a mistake, never a flag.
        raise ArgumentError(f"{name} must be True, False or None, got the string {value!r}")
    return bool(value)


def _parse_flag(value: str, variable: str) -> bool:
    raw = value.strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ArgumentError(
        f"{variable}={value!r}: expected one of {', '.join(repr(v) for v in _TRUE + _FALSE[1:])}"
    )


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


def normalize_policy(policy: Any, *, variable: str | None = None) -> str:
    """The canonical name of a precision policy: a dtype name or dtype object (see
    :func:`normalize_dtype`), "mixed16", or an :class:`nnbackend.precision.Policy`."""
    name = policy if isinstance(policy, str) else getattr(policy, "policy_name", None)
    if isinstance(name, str):
        key = name.strip().lower()
        key = _POLICY_ALIASES.get(key, key)
        if key in POLICIES:
            return key
    try:
        return normalize_dtype(policy, variable=variable)
    except DtypeError:
        where = f" in {variable}" if variable else ""
        valid = ", ".join(repr(p) for p in POLICIES)
        raise DtypeError(
            f"unknown default dtype {policy!r}{where}; expected one of {valid} (a dtype or a "
            "precision policy)"
        ) from None


def array_dtype(policy: str) -> str:
    """The dtype of new arrays and parameters under ``policy`` (a canonical policy name)."""
    return _ARRAY_DTYPE.get(policy, policy)


def compute_dtype(policy: str) -> str:
    """The dtype layers compute in under ``policy`` (a canonical policy name)."""
    return _COMPUTE_DTYPE.get(policy, policy)


def check_backend(name: Any, *, variable: str | None = None) -> str:
    """``name`` stripped, if it names a registered backend; else a :class:`BackendError`
    listing the registered ones (naming ``variable`` when it came from the environment).
    Internal API (``info`` checks the environment with it)."""
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
        if _Process.environment_reading:
            # Only this thread holds the lock: the plugin NNBACKEND names is being imported
            # by the check below, and its import asked for the settings, which depend on it.
            raise BackendError(
                f"{BACKEND_ENV}={backend!r}: the plugin that registers this backend read "
                "nnbackend's settings (get_backend, get_default_dtype, namespace, ...) while "
                "it was being imported; the settings depend on that backend, so they cannot "
                "be known yet. Read them inside the backend's functions, not at import"
            )
        # A variable already overridden by set_*() is not read. Validate all before recording
        # anything, so a bad value raises again on the next use instead of being half-applied.
        backend_name = dtype_name = None
        if _Process.backend is None and backend:
            _Process.environment_reading = True
            try:
                backend_name = check_backend(backend, variable=BACKEND_ENV)
            finally:
                _Process.environment_reading = False
        if _Process.dtype is None and dtype:
            dtype_name = normalize_policy(dtype, variable=DTYPE_ENV)
        check = _parse_flag(os.environ.get(CHECK_DTYPES_ENV, ""), CHECK_DTYPES_ENV)
        if backend_name:
            _Process.backend, _Process.backend_source = backend_name, f"from {BACKEND_ENV}"
        if dtype_name:
            _Process.dtype, _Process.dtype_source = dtype_name, f"from {DTYPE_ENV}"
        _Process.env_check_dtypes = check
        _Process.environment_read = True
        _Process.version += 1
        _refresh_switch()


def _process_backend() -> str:
    if not _Process.environment_read:
        _read_environment()
    return _Process.backend or BUILTIN_BACKEND


def _process_dtype(backend: str | None = None) -> str:
    """The process-wide policy name (a dtype name or "mixed16") for ``backend`` (default: the
    active one), which only matters where nothing chose a dtype (see :func:`builtin_dtype`)."""
    if not _Process.environment_read:
        _read_environment()
    return _Process.dtype or builtin_dtype(get_backend() if backend is None else backend)


def builtin_dtype(backend: str) -> str:
    """The default floating dtype where no argument, ``using`` block, ``set_default_dtype``
    or ``NNBACKEND_DTYPE`` chose one: float64, or float32 on a backend that cannot hold
    float64 in this process now (jax without ``jax_enable_x64``; its
    :attr:`~nnbackend.Backend.dtype_reason` says so). A float64 chosen explicitly on such a
    backend is an error instead (raised by :func:`nnbackend.namespace`)."""
    try:
        reason_of = registry.get(backend).dtype_reason
    except BackendError:
        return BUILTIN_DTYPE
    if reason_of is not None and reason_of(BUILTIN_DTYPE) is not None:
        return FALLBACK_DTYPE
    return BUILTIN_DTYPE


def set_backend(name: str) -> None:
    """Set the process-wide default backend (overrides ``NNBACKEND``; ``using`` blocks still
    win). The name is checked now; the library is loaded and probed at first use."""
    name = check_backend(name)
    with _lock:
        _Process.backend, _Process.backend_source = name, "set_backend()"
        _Process.version += 1


def set_default_dtype(dtype: Any) -> None:
    """Set the process-wide default floating dtype: "float64", "float32" or "float16" (or a
    dtype object of any backend), or the mixed precision policy "mixed16". Overrides
    ``NNBACKEND_DTYPE``; ``using`` blocks still win."""
    name = normalize_policy(dtype)
    with _lock:
        _Process.dtype, _Process.dtype_source = name, "set_default_dtype()"
        _Process.version += 1


def set_check_dtypes(enabled: bool | None) -> None:
    """Turn the dtype guard on or off for the process (``None``: back to
    ``NNBACKEND_CHECK_DTYPES``). ``using(check_dtypes=...)`` blocks still win."""
    enabled = _check_flag(enabled, "set_check_dtypes()'s argument")
    with _lock:
        _Process.check_dtypes = enabled
        _refresh_switch()


def check_dtypes_enabled() -> bool:
    """Whether the dtype guard is on here: the innermost ``using(check_dtypes=...)`` block,
    else :func:`set_check_dtypes`, else ``NNBACKEND_CHECK_DTYPES``."""
    overrides = _context.get()
    if overrides is not None and overrides.check_dtypes is not None:
        return overrides.check_dtypes
    if not _Process.environment_read:
        _read_environment()
    if _Process.check_dtypes is not None:
        return _Process.check_dtypes
    return _Process.env_check_dtypes


def get_backend() -> str:
    """The name of the active backend."""
    overrides = _context.get()
    if overrides is not None and overrides.backend is not None:
        return overrides.backend
    return _process_backend()


def get_default_dtype() -> str:
    """The name of the active default floating dtype: the dtype of new arrays and parameters
    (float32 under the mixed16 policy). nnbackend's namespace takes the name as a dtype:
    ``nb.namespace().asarray(data, dtype=nb.get_default_dtype())``."""
    return array_dtype(get_policy())


def get_policy() -> str:
    """The name of the active precision policy: "float64", "float32", "float16" or
    "mixed16"."""
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
        backend = check_backend(backend)
        if overrides is not None and overrides.backend != backend:
            device = None  # a device belongs to the backend it was chosen for
    elif overrides is not None and overrides.backend is not None:
        backend = overrides.backend
    else:
        backend = _process_backend()
    if dtype is not None:
        dtype = normalize_policy(dtype)
    elif overrides is not None and overrides.dtype is not None:
        dtype = overrides.dtype
    else:
        dtype = _process_dtype(backend)
    return backend, _ARRAY_DTYPE.get(dtype, dtype), device


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
    backend: str | None = None,
    dtype: Any = None,
    device: str | None = None,
    *,
    check_dtypes: bool | None = None,
) -> Iterator[None]:
    """Override settings inside a ``with`` block, for this thread or asyncio task only.

    Arguments left as ``None`` inherit from the enclosing block or the process default. A
    device such as ``"cupy:1"`` also selects its backend. Names are validated on entry.
    ``dtype`` also takes a precision policy ("mixed16"); ``check_dtypes=True`` turns on the
    dtype guard (every engine op checks the dtype of its outputs).

    >>> import nnbackend as nb
    >>> with nb.using(dtype="float32"):
    ...     nb.namespace().zeros(2).dtype
    dtype('float32')
    """
    outer = _context.get()
    if device is not None:
        backend, device = _split_device(device, backend)
    if backend is not None:
        backend = check_backend(backend)
    dtype_name = normalize_policy(dtype) if dtype is not None else None
    check = _check_flag(check_dtypes, "check_dtypes")
    scope: AbstractContextManager[Any] = nullcontext()
    if device is not None:
        target = backend or (outer.backend if outer and outer.backend else _process_backend())
        record = registry.get(target)
        try:
            device_obj = registry.device_object(record, device)
        except ImportError:
            pass  # the library is missing; the first use reports that with its fix
        else:
            # CuPy launches kernels on its current device: make the chosen one current. Only
            # where the backend is usable, so an unusable one still fails at first use.
            if record.enter_device is not None and registry.probe(target) is None:
                scope = record.enter_device(device_obj)
    if outer is not None:
        backend_changed = backend is not None and backend != outer.backend
        inherited_device = None if backend_changed else outer.device
        overrides = _Overrides(
            backend if backend is not None else outer.backend,
            dtype_name if dtype_name is not None else outer.dtype,
            device if device is not None else inherited_device,
            check if check is not None else outer.check_dtypes,
            outer,
        )
    else:
        overrides = _Overrides(backend, dtype_name, device, check)
    if check:
        count_blocks("check", +1)
    _context.set(overrides)
    try:
        with scope:
            yield
    finally:
        _leave(overrides)
        if check:
            count_blocks("check", -1)


@contextmanager
def pinned(dtype: Any = None) -> Iterator[None]:
    """Fix the backend, the precision policy and the device at their values now for the body
    of a ``with`` block, in this thread or asyncio task: a :func:`set_backend` or
    :func:`set_default_dtype` made meanwhile (by another thread) does not reach the block.
    ``dtype`` (a dtype or policy) replaces the active policy. :meth:`nnbackend.Trainer.fit`
    runs in one, so a training run keeps the settings it started with. An example is in the
    training guide (docs/training.md).
    """
    outer = _context.get()
    overrides = _Overrides(
        get_backend(),
        get_policy() if dtype is None else normalize_policy(dtype),
        get_device(),
        # Inherited from the enclosing block, which stays open (and counted) around this one.
        None if outer is None else outer.check_dtypes,
        outer,
    )
    _context.set(overrides)
    try:
        yield
    finally:
        _leave(overrides)


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
        backend = result["backend"][0]
        dtype = _process_dtype(backend)
        source = _Process.dtype_source
        if _Process.dtype is None and dtype != BUILTIN_DTYPE:
            source = f"{SOURCE_BUILTIN}: {backend} cannot hold {BUILTIN_DTYPE} here"
        result["dtype"] = (dtype, source)
    if overrides is not None and overrides.device is not None:
        result["device"] = (overrides.device, SOURCE_USING)
    else:
        result["device"] = ("default", SOURCE_BUILTIN)
    return result
