"""Settings: precedence, the environment, threads, asyncio tasks, nested blocks, errors, info()."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend import config, registry
from nnbackend.errors import BackendError, BackendUnavailableError, DtypeError, NNBackendError
from nnbackend.info import BackendStatus, Info, Setting

# Backend names whose libraries resolve() never imports: resolution only checks the name.
BACKEND_VALUES = ("numpy", "array_api_strict", "torch", "cupy")


# ---------------------------------------------------------------------------------- precedence
def _apply_layers(
    fresh: Callable[..., None], layers: dict[str, str], setting: str
) -> tuple[str, str | None]:
    """Set the layers given (env, process, using, explicit) for ``setting`` ("backend" or
    "dtype"); return the value resolve() gives and the source sources() reports."""
    env_name = config.BACKEND_ENV if setting == "backend" else config.DTYPE_ENV
    fresh(**{env_name: layers.get("env")})
    if "process" in layers:
        (nb.set_backend if setting == "backend" else nb.set_default_dtype)(layers["process"])
    block = nb.using(**{setting: layers["using"]}) if "using" in layers else None
    if block is not None:
        block.__enter__()
    try:
        explicit = {setting: layers["explicit"]} if "explicit" in layers else {}
        backend, dtype, _ = config.resolve(**explicit)
        value = backend if setting == "backend" else dtype
        source = None if "explicit" in layers else config.sources()[setting][1]
        # The getters agree with resolve() when nothing is passed explicitly.
        if "explicit" not in layers:
            getter = nb.get_backend if setting == "backend" else nb.get_default_dtype
            assert getter() == value
        return value, source
    finally:
        if block is not None:
            block.__exit__(None, None, None)


# explicit argument > innermost using > set_* process default > environment > built-in
PRECEDENCE = [
    # (layers present, winner, reported source)
    ((), "builtin", "built-in default"),
    (("env",), "env", "from {env}"),
    (("process",), "process", "{setter}"),
    (("env", "process"), "process", "{setter}"),
    (("using",), "using", "using() block"),
    (("env", "using"), "using", "using() block"),
    (("process", "using"), "using", "using() block"),
    (("env", "process", "using"), "using", "using() block"),
    (("explicit",), "explicit", None),
    (("env", "explicit"), "explicit", None),
    (("process", "explicit"), "explicit", None),
    (("using", "explicit"), "explicit", None),
    (("env", "process", "using", "explicit"), "explicit", None),
]
BUILTIN = {"backend": "numpy", "dtype": "float64"}
WINNING = {"backend": "array_api_strict", "dtype": "float16"}  # differs from the losers
LOSING = {"backend": "torch", "dtype": "float32"}


@pytest.mark.parametrize("setting", ["backend", "dtype"])
@pytest.mark.parametrize(
    ("present", "winner", "source"),
    PRECEDENCE,
    ids=["+".join(row[0]) or "nothing" for row in PRECEDENCE],
)
def test_precedence_table(
    fresh_settings: Callable[..., None],
    setting: str,
    present: tuple[str, ...],
    winner: str,
    source: str | None,
) -> None:
    layers = {layer: WINNING[setting] if layer == winner else LOSING[setting] for layer in present}
    value, reported = _apply_layers(fresh_settings, layers, setting)
    assert value == (BUILTIN[setting] if winner == "builtin" else WINNING[setting])
    env_name = config.BACKEND_ENV if setting == "backend" else config.DTYPE_ENV
    setter = "set_backend()" if setting == "backend" else "set_default_dtype()"
    if source is not None:
        assert reported == source.format(env=env_name, setter=setter)


LAYERS = ("env", "process", "using", "explicit")


@given(
    choices=st.fixed_dictionaries(
        {},
        optional={layer: st.sampled_from(("float64", "float32", "float16")) for layer in LAYERS},
    )
)
def test_precedence_property_dtype(
    fresh_settings: Callable[..., None], choices: dict[str, str]
) -> None:
    value, _ = _apply_layers(fresh_settings, choices, "dtype")
    winner = next((choices[layer] for layer in reversed(LAYERS) if layer in choices), "float64")
    assert value == winner


@given(
    choices=st.fixed_dictionaries(
        {}, optional={layer: st.sampled_from(BACKEND_VALUES) for layer in LAYERS}
    )
)
def test_precedence_property_backend(
    fresh_settings: Callable[..., None], choices: dict[str, str]
) -> None:
    value, _ = _apply_layers(fresh_settings, choices, "backend")
    winner = next((choices[layer] for layer in reversed(LAYERS) if layer in choices), "numpy")
    assert value == winner


def test_set_overrides_environment_and_namespace_follows(
    fresh_settings: Callable[..., None],
) -> None:
    fresh_settings(NNBACKEND_DTYPE="float32")
    assert nb.namespace().zeros(1).dtype == np.float32
    nb.set_default_dtype("float16")
    assert nb.namespace().zeros(1).dtype == np.float16
    assert config.sources()["dtype"] == ("float16", "set_default_dtype()")


def test_bad_environment_is_ignored_when_set_first(fresh_settings: Callable[..., None]) -> None:
    fresh_settings(NNBACKEND="bogus", NNBACKEND_DTYPE="float128")
    nb.set_backend("numpy")
    nb.set_default_dtype("float32")
    assert nb.namespace().zeros(1).dtype == np.float32
    assert nb.get_backend() == "numpy"


def test_environment_is_read_lazily_in_process(fresh_settings: Callable[..., None]) -> None:
    fresh_settings()
    # Not read yet: a change before the first use counts.
    fresh_settings(NNBACKEND_DTYPE=" Float32 ")
    assert config._Process.environment_read is False
    assert nb.get_default_dtype() == "float32"  # case and spaces ignored
    assert config._Process.environment_read is True


# ---------------------------------------------------------------------------------- environment
ENV_SCRIPT = """
import nnbackend as nb
print(nb.get_backend(), nb.get_default_dtype(), nb.namespace().zeros(1).dtype)
print(nb.info())
"""


def test_environment_in_subprocess(run_python: Callable[..., Any]) -> None:
    proc = run_python(
        ENV_SCRIPT, env={"NNBACKEND": "array_api_strict", "NNBACKEND_DTYPE": "float32"}
    )
    assert proc.returncode == 0, proc.stderr
    first, *report = proc.stdout.splitlines()
    assert first == "array_api_strict float32 array_api_strict.float32"
    assert "  backend = array_api_strict (from NNBACKEND)" in report
    assert "  dtype   = float32 (from NNBACKEND_DTYPE)" in report
    assert "  device  = default (built-in default)" in report


def test_empty_environment_counts_as_unset(run_python: Callable[..., Any]) -> None:
    proc = run_python(ENV_SCRIPT, env={"NNBACKEND": "", "NNBACKEND_DTYPE": "  "})
    assert proc.returncode == 0, proc.stderr
    first, *report = proc.stdout.splitlines()
    assert first == "numpy float64 float64"
    assert "  backend = numpy (built-in default)" in report
    assert "  dtype   = float64 (built-in default)" in report


BAD_ENV_SCRIPT = """
import nnbackend as nb
print("imported")
for attempt in range(2):  # the error repeats at every use, it is not half-applied
    try:
        nb.namespace()
    except nb.errors.{error} as exc:
        assert isinstance(exc, ValueError)
        print("error:", exc)
"""


@pytest.mark.parametrize(
    ("variable", "value", "error", "valid"),
    [
        (
            "NNBACKEND",
            "bogus",
            "BackendError",
            ["'numpy'", "'cupy'", "'torch'", "'array_api_strict'"],
        ),
        ("NNBACKEND_DTYPE", "float128", "DtypeError", ["'float64'", "'float32'", "'float16'"]),
    ],
)
def test_bad_environment_raises_at_first_use(
    run_python: Callable[..., Any], variable: str, value: str, error: str, valid: list[str]
) -> None:
    proc = run_python(BAD_ENV_SCRIPT.format(error=error), env={variable: value})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "imported"  # import itself does not read the environment
    assert len(lines) == 3
    for line in lines[1:]:
        assert variable in line and repr(value) in line
        for name in valid:
            assert name in line


# ---------------------------------------------------------------------------------- threads
def test_new_threads_see_process_default_not_using_block() -> None:
    nb.set_default_dtype("float32")
    seen: dict[str, Any] = {}

    def worker() -> None:
        seen["dtype"] = nb.get_default_dtype()
        seen["backend"] = nb.get_backend()
        seen["array"] = nb.namespace().zeros(1).dtype

    with nb.using(backend="array_api_strict", dtype="float64"):
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert nb.get_default_dtype() == "float64"
    assert seen == {"dtype": "float32", "backend": "numpy", "array": np.float32}


def test_using_in_a_thread_stays_in_that_thread() -> None:
    entered, checked = threading.Event(), threading.Event()
    inside: list[str] = []

    def worker() -> None:
        with nb.using(backend="array_api_strict", dtype="float32"):
            inside.append(nb.get_backend())
            inside.append(str(nb.namespace().zeros(1).dtype))
            entered.set()
            checked.wait(10)
        inside.append(nb.get_backend())

    thread = threading.Thread(target=worker)
    thread.start()
    assert entered.wait(10)
    # While the thread is inside its block, this thread sees the process default.
    assert nb.get_backend() == "numpy"
    assert nb.namespace().zeros(1).dtype == np.float64
    checked.set()
    thread.join()
    assert inside == ["array_api_strict", "array_api_strict.float32", "numpy"]


def test_process_default_set_in_a_thread_is_seen_everywhere() -> None:
    thread = threading.Thread(target=nb.set_default_dtype, args=("float16",))
    thread.start()
    thread.join()
    assert nb.get_default_dtype() == "float16"
    assert nb.namespace().ones(1).dtype == np.float16


def test_asyncio_tasks_keep_their_own_using_blocks() -> None:
    async def task(dtype: str, log: list[tuple[str, str]]) -> None:
        with nb.using(dtype=dtype):
            for _ in range(5):
                await asyncio.sleep(0)  # let the other task run inside its own block
                log.append((nb.get_default_dtype(), str(nb.namespace().zeros(1).dtype)))

    async def main() -> tuple[list, list, str]:
        a: list[tuple[str, str]] = []
        b: list[tuple[str, str]] = []
        await asyncio.gather(task("float32", a), task("float16", b))
        return a, b, nb.get_default_dtype()

    a, b, after = asyncio.run(main())
    assert a == [("float32", "float32")] * 5
    assert b == [("float16", "float16")] * 5
    assert after == "float64"
    assert nb.get_default_dtype() == "float64"


def test_asyncio_task_inherits_block_it_was_created_in() -> None:
    async def child() -> str:
        return nb.get_default_dtype()

    async def main() -> str:
        with nb.using(dtype="float16"):
            pending = asyncio.ensure_future(child())
        return await pending

    assert asyncio.run(main()) == "float16"


# ---------------------------------------------------------------------------------- nesting
def test_nested_using_inherits_and_restores() -> None:
    assert (nb.get_backend(), nb.get_default_dtype()) == ("numpy", "float64")
    with nb.using(backend="array_api_strict", dtype="float32"):
        with nb.using(dtype="float64"):
            assert (nb.get_backend(), nb.get_default_dtype()) == ("array_api_strict", "float64")
            with nb.using(backend="numpy"):
                assert (nb.get_backend(), nb.get_default_dtype()) == ("numpy", "float64")
            assert nb.get_backend() == "array_api_strict"
        assert (nb.get_backend(), nb.get_default_dtype()) == ("array_api_strict", "float32")
        assert nb.namespace().zeros(1).dtype == nb.namespace().float32
    assert (nb.get_backend(), nb.get_default_dtype()) == ("numpy", "float64")


def test_using_restores_after_exception() -> None:
    with pytest.raises(KeyError), nb.using(dtype="float16"):
        raise KeyError("boom")
    assert nb.get_default_dtype() == "float64"


def test_set_inside_using_changes_process_default_only() -> None:
    with nb.using(dtype="float32"):
        nb.set_default_dtype("float16")
        assert nb.get_default_dtype() == "float32"
    assert nb.get_default_dtype() == "float16"


def test_device_is_inherited_and_dropped_on_backend_change() -> None:
    with nb.using(backend="numpy", device="cpu"):
        assert nb.get_device() == "cpu"
        with nb.using(dtype="float32"):
            assert nb.get_device() == "cpu"
        with nb.using(backend="array_api_strict"):
            assert nb.get_device() is None  # a device belongs to the backend it was chosen for
    assert nb.get_device() is None


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "call",
    [
        lambda: nb.set_backend("nope"),
        lambda: nb.using(backend="nope").__enter__(),
        lambda: nb.namespace("nope"),
        lambda: config.resolve("nope"),
    ],
    ids=["set_backend", "using", "namespace", "resolve"],
)
def test_unknown_backend_lists_valid_names(call: Callable[[], Any]) -> None:
    with pytest.raises(BackendError) as excinfo:
        call()
    message = str(excinfo.value)
    assert "'nope'" in message
    for name in nb.backends():
        assert repr(name) in message
    assert isinstance(excinfo.value, ValueError) and isinstance(excinfo.value, NNBackendError)
    assert nb.get_backend() == "numpy"  # nothing changed


@pytest.mark.parametrize("bad", ["float128", "int32", "bfloat16", "", np.int64, 3])
@pytest.mark.parametrize(
    "setter",
    [
        nb.set_default_dtype,
        lambda d: nb.using(dtype=d).__enter__(),
        lambda d: nb.namespace(dtype=d),
    ],
    ids=["set_default_dtype", "using", "namespace"],
)
def test_unknown_dtype_lists_valid_names(setter: Callable[[Any], Any], bad: Any) -> None:
    with pytest.raises(DtypeError) as excinfo:
        setter(bad)
    message = str(excinfo.value)
    for name in ("'float64'", "'float32'", "'float16'"):
        assert name in message
    assert isinstance(excinfo.value, ValueError) and isinstance(excinfo.value, TypeError)
    assert nb.get_default_dtype() == "float64"


def test_set_backend_needs_a_str() -> None:
    with pytest.raises(BackendError, match="str"):
        nb.set_backend(np)  # type: ignore[arg-type]


def test_dtype_objects_and_aliases_are_accepted() -> None:
    import array_api_strict

    accepted = {
        np.float32: "float32",
        np.dtype("float16"): "float16",
        array_api_strict.float32: "float32",
        "half": "float16",
        "double": "float64",
        "f4": "float32",
        " FLOAT16 ": "float16",
    }
    if registry.probe("torch") is None:
        import torch

        accepted[torch.float16] = "float16"
        accepted[torch.float64] = "float64"
    for given_dtype, name in accepted.items():
        nb.set_default_dtype(given_dtype)
        assert nb.get_default_dtype() == name, given_dtype


def test_set_backend_does_not_load_the_library(fresh_settings: Callable[..., None]) -> None:
    nb.set_backend("cupy")  # known name: accepted now, probed at first use
    assert nb.get_backend() == "cupy"
    if registry.probe("cupy") is not None:
        with pytest.raises(BackendUnavailableError):
            nb.namespace()


# ---------------------------------------------------------------------------------- devices
def test_using_device_validation() -> None:
    with pytest.raises(BackendError, match="bad device 'gpu' for backend 'numpy'"):
        nb.using(device="gpu").__enter__()
    with pytest.raises(BackendError, match="belongs to backend 'cupy'"):
        nb.using(backend="numpy", device="cupy:0").__enter__()
    with pytest.raises(BackendError, match="str"):
        nb.using(device=0).__enter__()  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="bad device 'x' for backend 'cupy'"):
        nb.using(device="cupy:x").__enter__()  # checked even where cupy is missing
    assert nb.get_device() is None and nb.get_backend() == "numpy"


def test_using_device_selects_backend_and_places_arrays() -> None:
    with nb.using(device="cupy:0"):
        assert (nb.get_backend(), nb.get_device()) == ("cupy", "0")
    with nb.using(backend="array_api_strict", device="device1"):
        xp = nb.namespace()
        device = registry.get("array_api_strict").device("device1")
        assert xp.zeros(2).device == device
        assert xp.asarray([1.0]).device == device
        assert xp.zeros(2, device=None).dtype == xp.float64


def test_torch_bad_device_is_backend_error() -> None:
    if registry.probe("torch") is not None:
        pytest.skip(f"torch unavailable: {registry.probe('torch')}")
    with pytest.raises(BackendError, match="bad device 'bogus' for backend 'torch'"):
        nb.using(backend="torch", device="bogus").__enter__()
    with nb.using(backend="torch", device="cpu"):
        assert str(nb.namespace().zeros(1).device) == "cpu"


# ---------------------------------------------------------------------------------- info()
def test_info_structure() -> None:
    nb.set_default_dtype("float32")
    report = nb.info()
    assert isinstance(report, Info)
    assert [s.name for s in report.settings] == ["backend", "dtype", "device"]
    assert all(isinstance(s, Setting) for s in report.settings)
    assert report.setting("dtype") == Setting("dtype", "float32", "set_default_dtype()")
    assert report.setting("backend") == Setting("backend", "numpy", "built-in default")
    with pytest.raises(KeyError):
        report.setting("nope")
    assert [b.name for b in report.backends] == nb.backends()
    assert all(isinstance(b, BackendStatus) for b in report.backends)
    by_name = {b.name: b for b in report.backends}
    numpy_status = by_name["numpy"]
    assert numpy_status.available and numpy_status.reason is None
    assert numpy_status.version == np.__version__
    assert numpy_status.capabilities == {
        "float16": True,
        "inplace": True,
        "fast_float16_matmul": False,
    }
    assert numpy_status.facts["blas"]  # the BLAS in use
    assert by_name["array_api_strict"].capabilities["float16"] is False
    for status in report.backends:
        assert status.available == (registry.probe(status.name) is None)
        assert status.reason == registry.probe(status.name)
    assert report.versions["numpy"] == np.__version__
    assert report.versions["nnbackend"] == nb.__version__
    data = json.loads(json.dumps(report.to_dict(), default=str))
    assert data["settings"][1] == {
        "name": "dtype",
        "value": "float32",
        "source": "set_default_dtype()",
    }


def test_info_str_shows_values_and_sources() -> None:
    nb.set_default_dtype("float32")
    text = str(nb.info())
    lines = text.splitlines()
    assert "  dtype   = float32 (set_default_dtype())" in lines
    assert "  backend = numpy (built-in default)" in lines
    for name in nb.backends():
        assert any(line.strip().startswith(name) and "available" in line for line in lines)
    reason = registry.probe("cupy")
    if reason is not None:
        assert f"available no: {reason}" in text
    assert "BLAS:" in text
    with nb.using(backend="array_api_strict", dtype="float64"):
        lines = str(nb.info()).splitlines()
        assert "  backend = array_api_strict (using() block)" in lines
        assert "  dtype   = float64 (using() block)" in lines
