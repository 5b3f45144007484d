"""The backend record: what nnbackend knows about one array library.

A :class:`Backend` is plain data plus a few callables. Building one imports nothing: every
callable imports its library only when it is called, so registering a backend is free and a
missing library shows up as a reason from :attr:`Backend.probe`, not as an ImportError at
``import nnbackend``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from nnbackend.errors import BackendError

__all__ = ["Backend", "Capabilities"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do, known without importing it.

    Attributes:
        float16: the library has a ``float16`` dtype.
        inplace: arrays support ``x[...] = y`` and in-place operators; where not, the engine and
            the optimizers rebind instead of mutating.
        fast_float16_matmul: a float16 matrix product runs at least as fast as float32 (true on
            GPUs with tensor cores, false for NumPy on a CPU). Informational: the engine asks
            the backend's ops object (:meth:`nnbackend.backends.ops.Ops.compute_dtype`), which
            decides how float16 computes (for torch, per device, from a measured probe).
    """

    float16: bool = True
    inplace: bool = True
    fast_float16_matmul: bool = False


def _cpu_only() -> list[str]:
    return ["cpu"]


def _no_facts() -> dict[str, Any]:
    return {}


def _no_device(name: str) -> Any:
    return None


def _always_on_host(array: Any) -> bool:
    return True


def _no_kernels() -> dict[str, Any]:
    return {}


def _base_ops(xp: Any, record: Backend) -> Any:
    from nnbackend.backends.ops import Ops

    return Ops(xp, record)


_REQUIRED_CALLABLES = (
    "load_namespace",
    "probe",
    "to_host",
    "from_host",
    "devices",
    "device",
    "version",
    "facts",
    "on_host",
    "kernels",
    "ops",
)
_OPTIONAL_CALLABLES = ("scatter_add", "enter_device", "empty_cache", "dtype_reason")


@dataclass(frozen=True, eq=False)
class Backend:
    """One registered array library.

    Attributes:
        name: the name users select it by (``NNBACKEND=name``).
        load_namespace: returns the library's Array API namespace (imports the library).
        probe: returns ``None`` when the backend is usable here, else a one-line reason that
            says how to fix it. It is called once per process and its answer cached.
        array_modules: top-level module names of the library's array types (``("numpy",)``);
            they let nnbackend tell which backend an array belongs to without importing anything.
        to_host: converts one of its arrays to a NumPy array (a copy when on a device).
        from_host: converts a NumPy array to one of its arrays; the second argument is a device
            object or ``None`` for the default device.
        devices: the device names usable now (``["cpu"]``, ``["cupy:0", "cupy:1"]``).
        device: turns a device name (without the ``backend:`` prefix) into the library's device
            object, or raises ``ValueError``.
        capabilities: see :class:`Capabilities`.
        version: returns the library's version string.
        facts: returns extra facts for :func:`nnbackend.info` (BLAS, CUDA, threads).
        scatter_add: ``scatter_add(target, indices, values)`` adds ``values`` into the rows
            ``indices`` of ``target``, accumulating repeated indices; ``None`` means the engine
            uses a standard-only fallback.
        ops: ``ops(xp, record)`` builds the backend's operations object
            (:class:`nnbackend.backends.ops.Ops` or a subclass): every way the backend
            behaves differently (fast kernels, the float16 policy, in-place versus rebinding
            updates, device-side random bits, caching). The default builds the base ``Ops``,
            which takes the record's ``kernels()`` overrides.
        kernels: returns faster equivalents of namespace functions for the engine's hot loops,
            by name (``"sum"``, ``"max"``), with the namespace's signature restricted to
            ``(x, axis=..., keepdims=...)`` on floating arrays; missing names fall back to
            the namespace's own. NumPy's ufunc ``reduce`` methods skip two Python layers.
        on_host: whether an array lives in host memory, so reading a value from it never
            waits for a device (the engine validates inputs eagerly only then).
        enter_device: makes a device object (from ``device``) the library's current device
            for the body of a ``with nnbackend.using(device=...)`` block, as a context
            manager; ``None`` where arrays carry their device and nothing is current. CuPy
            needs it: its kernels launch on the current device, whatever device the arrays
            were made on.
        empty_cache: returns the memory the library caches (CuPy's pool, torch's CUDA
            caching allocator) to the driver and says ``{"freed_bytes": ..., "held_bytes":
            ...}``; ``{}`` when the library was never imported or holds nothing (it must not
            import the library). ``None`` for libraries with no cache of their own.
        dtype_reason: ``dtype_reason(name)`` returns ``None`` when the library can hold the
            floating dtype ``name`` ("float64", "float32", "float16") in this process now, else
            a one-line reason that says how to fix it (jax without ``jax_enable_x64`` has no
            float64). Choosing such a dtype raises :class:`~nnbackend.errors.DtypeError` with
            the reason; where the user chose no dtype, the built-in default falls back from
            float64 to float32. ``None`` (the default) means every dtype the capabilities
            allow. It must not import the library.
        install_hint: the command that installs the library.
        description: one line for listings.

    Raises:
        BackendError: a malformed record (a name that is not a Python identifier, an array
            module that is not a top-level module name, a field that should be a function and
            is not, ``capabilities`` that are not a :class:`Capabilities`, an ``ops`` class
            that does not derive from :class:`nnbackend.backends.ops.Ops`); the message names
            the field.
    """

    name: str
    load_namespace: Callable[[], Any]
    probe: Callable[[], str | None]
    array_modules: Sequence[str]
    to_host: Callable[[Any], Any]
    from_host: Callable[[Any, Any], Any]
    devices: Callable[[], list[str]] = _cpu_only
    device: Callable[[str], Any] = _no_device
    capabilities: Capabilities = field(default_factory=Capabilities)
    version: Callable[[], str | None] = lambda: None
    facts: Callable[[], dict[str, Any]] = _no_facts
    scatter_add: Callable[[Any, Any, Any], Any] | None = None
    on_host: Callable[[Any], bool] = _always_on_host
    kernels: Callable[[], dict[str, Any]] = _no_kernels
    ops: Callable[[Any, Backend], Any] = _base_ops
    enter_device: Callable[[Any], AbstractContextManager[Any]] | None = None
    empty_cache: Callable[[], dict[str, int]] | None = None
    dtype_reason: Callable[[str], str | None] | None = None
    install_hint: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        # A malformed record fails here, naming the field, rather than as a bare TypeError or
        # AttributeError at its first use deep inside the engine.
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise BackendError(
                f"backend name must be a Python identifier such as 'mylib', got {self.name!r}"
            )
        modules: Any = self.array_modules
        if isinstance(modules, str):
            modules = (modules,)
        try:
            modules = tuple(modules)
        except TypeError:
            modules = (modules,)
        for module in modules:
            if not isinstance(module, str) or not module.isidentifier():
                raise BackendError(
                    f"backend {self.name!r}: array_modules holds top-level module names such as "
                    f"'numpy' (type(array).__module__ up to its first dot), got {module!r}"
                )
        object.__setattr__(self, "array_modules", modules)
        for name in _REQUIRED_CALLABLES:
            if not callable(getattr(self, name)):
                raise BackendError(
                    f"backend {self.name!r}: {name} must be a function, got {getattr(self, name)!r}"
                )
        for name in _OPTIONAL_CALLABLES:
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise BackendError(
                    f"backend {self.name!r}: {name} must be a function or None, got {value!r}"
                )
        if not isinstance(self.capabilities, Capabilities):
            raise BackendError(
                f"backend {self.name!r}: capabilities must be an nnbackend.Capabilities(...), "
                f"got {self.capabilities!r}"
            )
        if isinstance(self.ops, type):
            from nnbackend.backends.ops import Ops

            if not issubclass(self.ops, Ops):
                raise BackendError(
                    f"backend {self.name!r}: ops={self.ops.__qualname__} does not derive from "
                    "nnbackend.backends.ops.Ops; subclass it and override only what differs "
                    "(the engine calls many of its methods)"
                )
        for name in ("install_hint", "description"):
            if not isinstance(getattr(self, name), str):
                raise BackendError(
                    f"backend {self.name!r}: {name} must be a str, got {getattr(self, name)!r}"
                )

    def __repr__(self) -> str:
        return f"<nnbackend.Backend {self.name!r}>"
