"""Fixes to how nnbackend.namespace treats a third-party backend (plugin) record.

Covered: a plugin whose ``load_namespace`` raises ImportError although its probe said it was
usable (``nb.namespace(name)`` and ``backend_for``), a plugin namespace that lacks functions
nnbackend needs (``__array_namespace_info__``, ``from_dlpack``, ``full``, a dtype), and an
``ops`` factory that builds a broken operations object (an ``Ops`` subclass whose
``__init__`` skips ``super().__init__()``, a factory returning something that is no ``Ops``).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import registry
from nnbackend.backends.ops import Ops
from nnbackend.errors import BackendError, BackendUnavailableError
from nnbackend.namespace import backend_for, ops_for

PLUGIN = "fixplug"


def _compat_numpy() -> Any:
    import array_api_compat.numpy as xp

    return xp


def _record(**fields: Any) -> nb.Backend:
    values: dict[str, Any] = {
        "load_namespace": _compat_numpy,
        "probe": lambda: None,
        "array_modules": ("numpy",),
        "to_host": np.asarray,
        "from_host": lambda a, device=None: np.asarray(a),
        "description": "NumPy through array-api-compat, as a plugin",
    }
    values.update(fields)
    return nb.Backend(name=PLUGIN, **values)


@pytest.fixture
def register() -> Iterator[Any]:
    """``register(**fields)`` registers the plugin (over NumPy's arrays); unregistered after."""

    def register(**fields: Any) -> nb.Backend:
        return nb.register_backend(_record(**fields), replace="numpy")

    yield register
    if registry.find(PLUGIN) is not None:
        registry.unregister_backend(PLUGIN)


@pytest.fixture(autouse=True)
def _forget_unregistered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_unregistered", set(), raising=False)


# -- 1. load_namespace raising ImportError -----------------------------------------------------


def _missing_module() -> Any:
    import nnbackend_fix_no_such_module  # type: ignore[import-not-found]  # noqa: F401

    raise AssertionError("unreachable")


def test_namespace_wraps_import_error_of_load_namespace(register: Any) -> None:
    """A plugin whose load_namespace raised ImportError (its probe having said it was usable)
    made nb.namespace(name) raise a bare ModuleNotFoundError."""
    register(load_namespace=_missing_module, install_hint="pip install fixplug")
    with pytest.raises(BackendUnavailableError) as caught:
        nb.namespace(PLUGIN)
    message = str(caught.value)
    assert repr(PLUGIN) in message
    assert "nnbackend_fix_no_such_module" in message
    assert "pip install fixplug" in message
    assert isinstance(caught.value.__cause__, ImportError)


def test_backend_for_wraps_import_error_of_load_namespace(register: Any) -> None:
    """backend_for() of an array of a plugin whose load_namespace raised ImportError raised
    the bare ImportError."""

    def broken() -> Any:
        raise ImportError("cannot import name 'linalg' from 'fixplug_lib'")

    register(load_namespace=broken)
    with pytest.raises(BackendUnavailableError) as caught:
        backend_for(np.ones(3))
    message = str(caught.value)
    assert repr(PLUGIN) in message
    assert "cannot import name 'linalg'" in message
    assert "load_namespace" in message


# -- 2. a namespace lacking names nnbackend needs ------------------------------------------------


_KEPT = ("__array_namespace_info__", "__array_api_version__")


def _lacking(*missing: str) -> ModuleType:
    base = _compat_numpy()
    module = ModuleType("fixplug_namespace")
    for name, value in vars(base).items():
        if name not in missing and (not name.startswith("__") or name in _KEPT):
            module.__dict__[name] = value
    return module


def test_namespace_lacking_needed_functions_raises_backend_error(register: Any) -> None:
    """A plugin namespace without __array_namespace_info__, from_dlpack and full made
    nb.namespace(name) fail with a bare AttributeError naming only the first of them."""
    lacking = _lacking("__array_namespace_info__", "from_dlpack", "full")
    register(load_namespace=lambda: lacking)
    with pytest.raises(BackendError) as caught:
        nb.namespace(PLUGIN, "float32")
    message = str(caught.value)
    assert repr(PLUGIN) in message
    for name in ("__array_namespace_info__", "from_dlpack", "full"):
        assert name in message
    assert "Array API" in message
    assert "array-api-compat" in message


def test_namespace_lacking_the_dtype_raises_backend_error(register: Any) -> None:
    """A plugin namespace without a float32 attribute failed with a bare AttributeError."""
    lacking = _lacking("float32")
    register(load_namespace=lambda: lacking)
    with pytest.raises(BackendError, match="float32"):
        nb.namespace(PLUGIN, "float32")


def test_complete_plugin_namespace_still_builds(register: Any) -> None:
    """Checked that the name check accepts array-api-compat's NumPy (it held)."""
    register()
    xp = nb.namespace(PLUGIN, "float32")
    assert xp.zeros(2).dtype == np.float32


# -- 3. broken ops objects -----------------------------------------------------------------------


def test_ops_subclass_skipping_super_init_raises_backend_error(register: Any) -> None:
    """An Ops subclass whose __init__ skipped super().__init__() was used, and the engine then
    failed with "AttributeError: ... has no attribute '_decided'"."""

    class LazyOps(Ops):
        def __init__(self, xp: Any, record: Any) -> None:
            self.xp = xp

    register(ops=LazyOps)
    with pytest.raises(BackendError) as caught:
        ops_for(_compat_numpy(), np.ones(3))
    message = str(caught.value)
    assert repr(PLUGIN) in message
    assert "LazyOps" in message
    assert "super().__init__" in message


def test_ops_factory_returning_no_ops_raises_backend_error(register: Any) -> None:
    """An ops factory (a function) that returned something other than an Ops was used, and
    the engine then failed with a bare AttributeError."""
    register(ops=lambda xp, record: {"xp": xp})
    with pytest.raises(BackendError) as caught:
        ops_for(_compat_numpy(), np.ones(3))
    message = str(caught.value)
    assert repr(PLUGIN) in message
    assert "dict" in message
    assert "nnbackend.backends.ops.Ops" in message


def test_good_ops_subclass_is_accepted(register: Any) -> None:
    """Checked that an Ops subclass calling super().__init__() passes the check (it held)."""

    class GoodOps(Ops):
        def __init__(self, xp: Any, record: Any) -> None:
            super().__init__(xp, record)
            self.extra = 1

    register(ops=GoodOps)
    assert type(ops_for(_compat_numpy(), np.ones(3))) is GoodOps


def test_ops_field_list_matches_ops_init() -> None:
    """Checked that the names the ops check looks for are exactly those Ops.__init__ always
    sets (besides the two it sets only where the kernels offer them), so the check follows
    Ops as it changes (it held)."""
    from nnbackend.namespace import _OPS_FIELDS

    record = registry.get("numpy")
    made = set(vars(Ops(record.load_namespace(), record))) - {"_to_wide", "_to_narrow"}
    assert made == set(_OPS_FIELDS)
