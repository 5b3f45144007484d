"""The jax backend record: lazy registration, float64 only where jax's x64 is on (never switched
on by nnbackend), device names, immutable scatter-add, host transfers.

x64 is process-global in jax, so each state is checked in its own fresh interpreter; the tests
that need jax itself are skipped, with the registry's reason, where jax is not installed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import pytest

import nnbackend as nb
from nnbackend import config, registry
from nnbackend.backends import jax as jax_backend
from nnbackend.errors import BackendError, DtypeError

JAX_MISSING = registry.probe("jax")
needs_jax = pytest.mark.skipif(JAX_MISSING is not None, reason=f"jax: {JAX_MISSING}")


def _run_json(run_python: Callable[..., Any], code: str, **env: str | None) -> Any:
    proc = run_python(code, env={"JAX_ENABLE_X64": None, **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------- registration
def test_registering_and_resolving_jax_imports_nothing(run_python: Callable[..., Any]) -> None:
    out = _run_json(
        run_python,
        """
        import json, sys
        import nnbackend as nb
        from nnbackend import config
        names = nb.backends()
        with nb.using(backend="jax"):
            dtype = nb.get_default_dtype()
        print(json.dumps({"names": names, "dtype": dtype, "resolved": config.resolve("jax"),
                          "imported": "jax" in sys.modules}))
        """,
    )
    assert "jax" in out["names"]
    assert out["imported"] is False
    # x64 off (JAX_ENABLE_X64 unset): the built-in default falls back to float32.
    assert out["dtype"] == "float32"
    assert out["resolved"] == ["jax", "float32", None]


def test_x64_read_from_the_environment_before_jax_is_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "jax", raising=False)
    for value, on in (("1", True), ("true", True), ("Yes", True), ("0", False), ("", False)):
        assert jax_backend.x64_enabled({"JAX_ENABLE_X64": value}) is on, value
    assert jax_backend.x64_enabled({}) is False
    assert jax_backend.dtype_reason("float32") is None
    monkeypatch.setenv("JAX_ENABLE_X64", "0")
    reason = jax_backend.dtype_reason("float64")
    assert reason is not None and "JAX_ENABLE_X64=1" in reason
    monkeypatch.setenv("JAX_ENABLE_X64", "1")
    assert jax_backend.dtype_reason("float64") is None


def test_builtin_dtype_falls_back_only_where_float64_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "jax", raising=False)
    monkeypatch.setenv("JAX_ENABLE_X64", "0")
    assert config.builtin_dtype("jax") == "float32"
    assert config.builtin_dtype("numpy") == "float64"
    assert config.builtin_dtype("no_such_backend") == "float64"
    monkeypatch.setenv("JAX_ENABLE_X64", "1")
    assert config.builtin_dtype("jax") == "float64"


def test_a_chosen_dtype_wins_over_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "jax", raising=False)
    monkeypatch.setenv("JAX_ENABLE_X64", "0")
    nb.set_default_dtype("float16")
    with nb.using(backend="jax"):
        assert nb.get_default_dtype() == "float16"
    assert config.resolve("jax") == ("jax", "float16", None)


# ------------------------------------------------------------------------------- float64
@needs_jax
def test_float64_without_x64_is_a_dtype_error_naming_the_fix(
    run_python: Callable[..., Any],
) -> None:
    out = _run_json(
        run_python,
        """
        import json
        import nnbackend as nb
        from nnbackend.errors import DtypeError
        xp = nb.namespace("jax")
        made = str(xp.asarray([1.0, 2.0]).dtype)
        def in_a_block():
            with nb.using(dtype="float64"):
                return nb.namespace()
        errors = []
        for attempt in (lambda: nb.namespace("jax", "float64"), in_a_block):
            try:
                attempt()
                errors.append(None)
            except DtypeError as exc:
                errors.append(str(exc))
        import jax
        print(json.dumps({"made": made, "errors": errors,
                          "x64_after": bool(jax.config.read("jax_enable_x64")),
                          "info": nb.info().setting("dtype").source}))
        """,
        NNBACKEND="jax",
    )
    assert out["made"] == "float32"
    assert len(out["errors"]) == 2, out
    for message in out["errors"]:
        assert message is not None, out
        assert "JAX_ENABLE_X64=1" in message
        assert 'jax.config.update("jax_enable_x64", True)' in message
    assert out["x64_after"] is False  # never switched on behind the user's back
    assert "jax cannot hold float64" in out["info"]


@needs_jax
@pytest.mark.parametrize("how", ["environment", "config"])
def test_float64_with_x64_on_is_the_default(run_python: Callable[..., Any], how: str) -> None:
    enable = 'import jax; jax.config.update("jax_enable_x64", True)' if how == "config" else ""
    out = _run_json(
        run_python,
        f"""
        import json
        {enable}
        import nnbackend as nb
        xp = nb.namespace("jax")
        a = xp.asarray([1.0, 2.0])
        print(json.dumps({{"dtype": str(a.dtype), "zeros": str(xp.zeros(2).dtype),
                          "explicit": str(nb.namespace("jax", "float64").ones(1).dtype)}}))
        """,
        JAX_ENABLE_X64="1" if how == "environment" else None,
    )
    assert out == {"dtype": "float64", "zeros": "float64", "explicit": "float64"}


# ------------------------------------------------------------------------------- devices
def test_device_names_parse_without_jax() -> None:
    assert jax_backend.parse_device("cpu") == ("cpu", 0)
    assert jax_backend.parse_device("cpu:1") == ("cpu", 1)
    assert jax_backend.parse_device("cuda:2") == ("gpu", 2)
    assert jax_backend.parse_device("gpu:0") == ("gpu", 0)
    for bad in ("cuda", "tpu:0", "cpu:x", "cupy:0", ""):
        with pytest.raises(ValueError, match="'cpu', 'cpu:N' or 'cuda:N'"):
            jax_backend.parse_device(bad)


@needs_jax
def test_devices_and_a_missing_one() -> None:
    record = registry.get("jax")
    names = record.devices()
    assert names[0] == "cpu"
    assert record.device("cpu").platform == "cpu"
    missing = f"cuda:{sum(n.startswith('cuda:') for n in names)}"
    with pytest.raises(ValueError, match=f"jax has no device '{missing}'; it has cpu"):
        record.device(missing)
    with pytest.raises(BackendError, match="bad device"), nb.using(device=f"jax:{missing}"):
        pass


@needs_jax
def test_using_a_device_places_new_arrays_there() -> None:
    with nb.using(device="jax:cpu", dtype="float32"):
        a = nb.namespace().zeros(3)
    assert {d.platform for d in a.devices()} == {"cpu"}
    assert registry.backend_of(a) == "jax"


# --------------------------------------------------------------------------- arrays
@needs_jax
def test_scatter_add_accumulates_and_leaves_the_target_alone() -> None:
    xp = nb.namespace("jax", "float32")
    target = xp.zeros((3, 2))
    out = jax_backend.scatter_add(
        target, xp.asarray([0, 2, 0]), xp.asarray([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    )
    assert registry.get("jax").to_host(out).tolist() == [[6.0, 8.0], [0.0, 0.0], [3.0, 4.0]]
    assert registry.get("jax").to_host(target).tolist() == [[0.0] * 2] * 3


@needs_jax
def test_host_round_trip_and_namespace_of_its_arrays() -> None:
    import numpy as np

    record = registry.get("jax")
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    a = record.from_host(host, record.device("cpu"))
    assert registry.backend_of(a) == "jax"
    back = record.to_host(a)
    assert type(back) is np.ndarray and back.dtype == np.float32
    np.testing.assert_array_equal(back, host)
    xp = nb.array_namespace(a)
    assert xp.__nnbackend__[0] == "jax"
    assert record.on_host(a) is True


@needs_jax
def test_a_traced_array_is_never_read_as_on_the_host() -> None:
    import jax

    record = registry.get("jax")
    seen = []

    @jax.jit
    def f(x: Any) -> Any:
        seen.append(record.on_host(x))
        return x * 2

    f(nb.namespace("jax", "float32").ones(2))
    assert seen == [False]


@needs_jax
def test_info_reports_platform_and_x64() -> None:
    status = next(b for b in nb.info().backends if b.name == "jax")
    assert status.available
    assert status.capabilities["inplace"] is False
    import jax

    assert status.facts["platform"] == jax.default_backend()  # "cpu" unless jax has a GPU
    assert status.facts["x64"] is jax_backend.x64_enabled()
    assert "64-bit types" in str(nb.info())


def test_the_record_says_its_arrays_are_immutable() -> None:
    record = registry.get("jax")
    assert record.capabilities.inplace is False
    assert record.install_hint == "pip install 'nnbackend[jax]'"
    assert set(record.array_modules) == {"jaxlib", "jax"}


def test_missing_jax_is_reported_with_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a)
    )
    assert jax_backend.probe() == "jax is not installed: pip install 'nnbackend[jax]'"


def test_float64_dtype_error_is_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where jax is importable, the error comes from namespace(); checked here in-process only
    when x64 is off in this process (the subprocess tests cover both states)."""
    if JAX_MISSING is not None or jax_backend.x64_enabled():
        pytest.skip("needs jax with x64 off in this process")
    with pytest.raises(DtypeError, match="JAX_ENABLE_X64=1"):
        nb.namespace("jax", "float64")
