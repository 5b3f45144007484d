"""The backend registry: built-ins, availability with reasons, run-time registration, plugins
through a real entry point, and cupy's diagnosis."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import registry
from nnbackend.backends import cupy as cupy_backend
from nnbackend.errors import BackendError, BackendUnavailableError

BUILTINS = ["numpy", "cupy", "torch", "array_api_strict", "jax"]
MISSING_MODULE = "nnb_module_that_does_not_exist"


# ---------------------------------------------------------------------------------- listing
def test_builtins_listed_first() -> None:
    assert nb.backends()[: len(BUILTINS)] == BUILTINS


def test_available_is_subset_with_reasons() -> None:
    available = nb.available_backends()
    assert set(available) <= set(nb.backends())
    assert "numpy" in available
    for name in nb.backends():
        reason = registry.probe(name)
        assert (name in available) == (reason is None)
        if reason is not None:
            assert isinstance(reason, str) and reason


def test_array_api_strict_and_torch_probed_by_installation() -> None:
    for name, module in (("array_api_strict", "array_api_strict"), ("torch", "torch")):
        reason = registry.probe(name)
        if importlib.util.find_spec(module) is None:
            assert reason is not None and "not installed" in reason and "pip install" in reason
        elif reason is None:
            importlib.import_module(module)  # usable means importable
        else:
            assert "fails to import" in reason


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="cupy is installed here")
def test_cupy_unavailable_here_with_reason() -> None:
    reason = registry.probe("cupy")
    assert reason is not None
    assert "not installed" in reason and "pip install" in reason
    assert "cupy" in nb.backends() and "cupy" not in nb.available_backends()
    status = {b.name: b for b in nb.info().backends}["cupy"]
    assert status.available is False and status.reason == reason
    with pytest.raises(BackendUnavailableError, match="not installed"):
        nb.namespace("cupy")


def test_backend_of() -> None:
    assert registry.backend_of(np.zeros(2)) == "numpy"
    assert registry.backend_of(np.float32(1)) == "numpy"
    assert registry.backend_of(nb.namespace("array_api_strict").zeros(2)) == "array_api_strict"
    assert registry.backend_of(1.0) is None
    assert registry.backend_of([1.0]) is None
    if registry.probe("torch") is None:
        assert registry.backend_of(nb.namespace("torch").zeros(2)) == "torch"


# ---------------------------------------------------------------------------------- register
def _lazy_record(name: str = "lazyfake", calls: dict[str, int] | None = None) -> nb.Backend:
    """A backend whose library is a module that does not exist; counts calls."""
    calls = calls if calls is not None else {}

    def load() -> Any:
        calls["load"] = calls.get("load", 0) + 1
        return importlib.import_module(MISSING_MODULE)

    def probe() -> str | None:
        calls["probe"] = calls.get("probe", 0) + 1
        if importlib.util.find_spec(MISSING_MODULE) is None:
            return f"{MISSING_MODULE} is not installed: pip install nnb-missing"
        return None

    return nb.Backend(
        name=name,
        load_namespace=load,
        probe=probe,
        array_modules=(MISSING_MODULE,),
        to_host=lambda x: x,
        from_host=lambda a, device=None: a,
        description="a test backend that cannot load",
    )


def test_register_imports_nothing_and_probe_surfaces() -> None:
    calls: dict[str, int] = {}
    record = _lazy_record(calls=calls)
    assert nb.register_backend(record) is record
    assert calls == {}  # neither loaded nor probed
    assert MISSING_MODULE not in sys.modules
    assert "lazyfake" in nb.backends()
    assert registry.get("lazyfake") is record
    # The probe runs at first question, once; its reason is the error at first use.
    assert "lazyfake" not in nb.available_backends()
    assert "lazyfake" not in nb.available_backends()
    assert calls == {"probe": 1}
    nb.set_backend("lazyfake")  # a known name: accepted
    with pytest.raises(BackendUnavailableError) as excinfo:
        nb.namespace()
    assert "'lazyfake'" in str(excinfo.value)
    assert f"{MISSING_MODULE} is not installed: pip install nnb-missing" in str(excinfo.value)
    assert isinstance(excinfo.value, RuntimeError)
    assert "load" not in calls
    status = {b.name: b for b in nb.info().backends}["lazyfake"]
    assert not status.available and "pip install nnb-missing" in (status.reason or "")


def test_register_working_backend_at_run_time() -> None:
    import array_api_compat.numpy

    calls = {"load": 0}

    def load() -> Any:
        calls["load"] += 1
        return array_api_compat.numpy

    record = nb.Backend(
        name="runtime_numpy",
        load_namespace=load,
        probe=lambda: None,
        array_modules=(),
        to_host=np.asarray,
        from_host=lambda a, device=None: a,
        capabilities=nb.Capabilities(float16=False),
    )
    nb.register_backend(record)
    assert calls["load"] == 0
    assert "runtime_numpy" in nb.available_backends()
    xp = nb.namespace("runtime_numpy", "float32")
    assert xp.zeros(2).dtype == np.float32
    assert xp.__name__ == "nnbackend.namespace.runtime_numpy"
    assert calls["load"] == 1
    with pytest.raises(nb.errors.DtypeError, match="float16"):
        nb.namespace("runtime_numpy", "float16")  # its capabilities say no float16


def test_using_device_makes_it_current_for_the_block(
    numpy_like_backend: Callable[..., nb.Backend],
) -> None:
    """A backend with ``enter_device`` (CuPy: kernels launch on the current device) has the
    chosen device made current inside ``using(device=...)`` and released after it, also when
    the block raises; a backend that is not usable here is never entered."""
    events: list[str] = []

    @contextlib.contextmanager
    def enter(device: str) -> Iterator[None]:
        events.append(f"enter {device}")
        try:
            yield
        finally:
            events.append(f"exit {device}")

    def make(name: str, reason: str | None) -> nb.Backend:
        return numpy_like_backend(
            name, probe=lambda: reason, device=lambda text: f"dev{text}", enter_device=enter
        )

    nb.register_backend(make("current_dev", None))
    with nb.using(device="current_dev:1"):
        assert events == ["enter dev1"] and nb.get_device() == "1"
        with nb.using(dtype="float32"):  # inherits the device; enters nothing again
            pass
        assert events == ["enter dev1"]
    assert events == ["enter dev1", "exit dev1"]
    with pytest.raises(KeyError), nb.using(device="current_dev:2"):
        raise KeyError("the block fails")
    assert events[-2:] == ["enter dev2", "exit dev2"]

    nb.register_backend(make("absent_dev", "absent_dev is not installed"))
    events.clear()
    with nb.using(device="absent_dev:1"):  # accepted; refused at first use, not entered
        assert nb.get_device() == "1"
    assert events == []


def test_probe_that_raises_is_a_reason() -> None:
    def broken_probe() -> str | None:
        raise OSError("driver exploded")

    record = nb.Backend(
        name="explodes",
        load_namespace=lambda: None,
        probe=broken_probe,
        array_modules=(),
        to_host=lambda x: x,
        from_host=lambda a, d=None: a,
    )
    nb.register_backend(record)
    reason = registry.probe("explodes")
    assert reason is not None and "OSError: driver exploded" in reason
    with pytest.raises(BackendUnavailableError, match="driver exploded"):
        nb.namespace("explodes")


def test_duplicate_name_and_replace() -> None:
    first = nb.register_backend(_lazy_record("dup"))
    assert nb.register_backend(first) is first  # the same record again is fine
    second = _lazy_record("dup")
    with pytest.raises(BackendError, match=r"already registered.*replace=True"):
        nb.register_backend(second)
    assert registry.get("dup") is first
    nb.register_backend(second, replace=True)
    assert registry.get("dup") is second
    with pytest.raises(BackendError, match="already registered"):
        nb.register_backend(_lazy_record("numpy"))


def test_register_rejects_non_records() -> None:
    with pytest.raises(BackendError, match="Backend record"):
        nb.register_backend("numpy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="identifier"):
        _lazy_record("not-an-identifier")


def test_unregister() -> None:
    nb.register_backend(_lazy_record("gone"))
    assert registry.backend_of(type("T", (), {"__module__": MISSING_MODULE})()) == "gone"
    registry.unregister_backend("gone")
    assert "gone" not in nb.backends()
    assert registry.backend_of(type("T", (), {"__module__": MISSING_MODULE})()) is None
    with pytest.raises(BackendError, match="unknown backend 'gone'"):
        registry.unregister_backend("gone")
    with pytest.raises(BackendError, match="built-in"):
        registry.unregister_backend("numpy")
    with pytest.raises(BackendError, match="unknown backend 'gone'"):
        nb.namespace("gone")


def test_registering_invalidates_cached_namespace() -> None:
    import array_api_compat.numpy

    nb.register_backend(_lazy_record("swap"))
    with pytest.raises(BackendUnavailableError):
        nb.namespace("swap")
    working = nb.Backend(
        name="swap",
        load_namespace=lambda: array_api_compat.numpy,
        probe=lambda: None,
        array_modules=(),
        to_host=np.asarray,
        from_host=lambda a, d=None: a,
    )
    nb.register_backend(working, replace=True)
    assert nb.namespace("swap").ones(1).dtype == np.float64


# ---------------------------------------------------------------------------------- entry points
PLUGIN_MODULE = '''
import array_api_compat.numpy
import numpy

from nnbackend import Backend, Capabilities


def _load():
    return array_api_compat.numpy


BACKEND = Backend(
    name="fake",
    load_namespace=_load,
    probe=lambda: None,
    array_modules=("nnb_fake_plugin",),
    to_host=numpy.asarray,
    from_host=lambda a, device=None: a,
    capabilities=Capabilities(float16=True),
    description="a plugin found through its entry point",
)


def make_backend():
    """Entry points may also name a callable returning a record."""
    return Backend(
        name="fake_factory",
        load_namespace=_load,
        probe=lambda: None,
        array_modules=(),
        to_host=numpy.asarray,
        from_host=lambda a, device=None: a,
    )


WRONG_NAME = Backend(
    name="other_name", load_namespace=_load, probe=lambda: None, array_modules=(),
    to_host=numpy.asarray, from_host=lambda a, device=None: a,
)
'''

ENTRY_POINTS = """\
[nnbackend.backends]
fake = nnb_fake_plugin:BACKEND
fake_factory = nnb_fake_plugin:make_backend
broken = nnb_broken_plugin:BACKEND
mismatch = nnb_fake_plugin:WRONG_NAME
"""

PLUGIN_CHECK = """
import json, sys
import nnbackend as nb
from nnbackend import registry

out = {"imported_at_import": "nnb_fake_plugin" in sys.modules}
out["backends"] = nb.backends()
out["available"] = nb.available_backends()
out["fake_dtype"] = str(nb.namespace("fake", "float32").zeros(2).dtype)
out["factory_dtype"] = str(nb.namespace("fake_factory", "float16").ones(1).dtype)
out["reasons"] = {n: registry.probe(n) for n in ("broken", "mismatch")}
try:
    nb.namespace("broken")
except nb.errors.BackendUnavailableError as exc:
    out["broken_error"] = str(exc)
out["info"] = str(nb.info())
print(json.dumps(out))
"""


def _write_plugin(root: Path) -> None:
    (root / "nnb_fake_plugin.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    (root / "nnb_broken_plugin.py").write_text("raise ImportError('plugin is broken on purpose')\n")
    dist = root / "nnb_fake_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: nnb-fake-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    (dist / "top_level.txt").write_text("nnb_fake_plugin\nnnb_broken_plugin\n")


def test_plugin_through_real_entry_point(tmp_path: Path, run_python: Callable[..., Any]) -> None:
    _write_plugin(tmp_path)
    proc = run_python(PLUGIN_CHECK, env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["imported_at_import"] is False  # entry points are read lazily
    assert out["backends"][: len(BUILTINS)] == BUILTINS
    assert {"fake", "fake_factory", "broken", "mismatch"} <= set(out["backends"])
    assert "fake" in out["available"] and "fake_factory" in out["available"]
    assert "broken" not in out["available"] and "mismatch" not in out["available"]
    assert out["fake_dtype"] == "float32"
    assert out["factory_dtype"] == "float16"
    broken = out["reasons"]["broken"]
    assert "nnb_broken_plugin:BACKEND" in broken and "plugin is broken on purpose" in broken
    assert (
        "'mismatch'" in out["reasons"]["mismatch"] and "'other_name'" in out["reasons"]["mismatch"]
    )
    assert "plugin is broken on purpose" in out["broken_error"]
    assert "available no: plugin entry point 'nnb_broken_plugin:BACKEND' failed" in out["info"]
    assert "fake" in out["info"]


def test_nnbackend_env_selects_plugin(tmp_path: Path, run_python: Callable[..., Any]) -> None:
    _write_plugin(tmp_path)
    code = "import nnbackend as nb; print(nb.namespace().zeros(1).dtype, nb.get_backend())"
    proc = run_python(
        code, env={"PYTHONPATH": str(tmp_path), "NNBACKEND": "fake", "NNBACKEND_DTYPE": "float16"}
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["float16", "fake"]


# ---------------------------------------------------------------------------------- cupy
def _raises(exc: BaseException) -> Callable[[], int]:
    def call() -> int:
        raise exc

    return call


DIAGNOSES = [
    # (environ, installed, driver_version, device_count, expected fragments or None)
    ({}, False, lambda: 12000, lambda: 1, ["cupy is not installed", "pip install"]),
    (
        {"CUDA_VISIBLE_DEVICES": ""},
        True,
        lambda: 12000,
        lambda: 1,
        ["no device", "CUDA_VISIBLE_DEVICES=''"],
    ),
    (
        {"CUDA_VISIBLE_DEVICES": "-1"},
        True,
        lambda: 12000,
        lambda: 1,
        ["no device", "CUDA_VISIBLE_DEVICES='-1'"],
    ),
    (
        {},
        True,
        _raises(RuntimeError("libcuda.so: cannot open")),
        lambda: 1,
        ["no CUDA driver", "libcuda.so: cannot open", "RuntimeError"],
    ),
    ({}, True, lambda: 0, lambda: 1, ["no CUDA driver"]),
    ({}, True, lambda: 12000, lambda: 0, ["no device", "0 GPUs"]),
    (
        {},
        True,
        lambda: 12000,
        _raises(RuntimeError("cudaErrorNoDevice")),
        ["no device", "cudaErrorNoDevice"],
    ),
    ({}, True, lambda: 12000, lambda: 2, None),
    ({"CUDA_VISIBLE_DEVICES": "0"}, True, lambda: 12000, lambda: 1, None),
]


@pytest.mark.parametrize(
    ("environ", "installed", "driver", "count", "expected"),
    DIAGNOSES,
    ids=[
        "not-installed",
        "cvd-empty",
        "cvd-minus-one",
        "driver-raises",
        "driver-zero",
        "zero-devices",
        "count-raises",
        "ok",
        "ok-cvd-0",
    ],
)
def test_cupy_diagnose(
    environ: dict[str, str],
    installed: bool,
    driver: Callable[[], int],
    count: Callable[[], int],
    expected: list[str] | None,
) -> None:
    reason = cupy_backend.diagnose(environ, installed, driver, count)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None
        for fragment in expected:
            assert fragment in reason


def test_cupy_diagnose_checks_in_fixing_order() -> None:
    # Not installed wins over everything; a hidden device is reported before asking the driver.
    asked: list[str] = []

    def driver() -> int:
        asked.append("driver")
        return 12000

    assert "not installed" in (
        cupy_backend.diagnose({"CUDA_VISIBLE_DEVICES": ""}, False, driver, lambda: 0) or ""
    )
    assert "CUDA_VISIBLE_DEVICES" in (
        cupy_backend.diagnose({"CUDA_VISIBLE_DEVICES": ""}, True, driver, lambda: 0) or ""
    )
    assert asked == []


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="cupy is installed here")
def test_nnbackend_cupy_without_cupy(run_python: Callable[..., Any]) -> None:
    code = """
    import nnbackend as nb
    print(nb.get_backend())
    try:
        nb.namespace()
    except nb.errors.BackendUnavailableError as exc:
        print(exc)
    """
    proc = run_python(code, env={"NNBACKEND": "cupy"})
    assert proc.returncode == 0, proc.stderr
    name, message = proc.stdout.splitlines()
    assert name == "cupy"
    assert message.startswith("backend 'cupy' is unavailable: cupy is not installed")
    assert "pip install 'nnbackend[gpu]'" in message


@pytest.mark.parametrize(
    ("name", "index"), [("0", 0), ("7", 7), ("12", 12), ("cuda:0", 0), ("gpu:3", 3)]
)
def test_parse_device_index(name: str, index: int) -> None:
    assert cupy_backend.parse_device_index(name) == index


@pytest.mark.parametrize("name", ["", "x", "-1", "1.0", "cuda:", "cuda:x", "cuda:0:1", " 0"])
def test_parse_device_index_rejects(name: str) -> None:
    with pytest.raises(ValueError, match="cupy device"):
        cupy_backend.parse_device_index(name)


@pytest.mark.gpu
def test_cupy_on_a_gpu() -> None:
    xp = nb.namespace("cupy", "float16")
    x = xp.ones((4, 4))
    assert x.dtype == xp.float16
    host = registry.get("cupy").to_host(xp.matmul(x, x))
    np.testing.assert_array_equal(host, np.full((4, 4), 4.0, dtype=np.float16))
    assert registry.get("cupy").devices()[0] == "cupy:0"
    assert "gpus" in {b.name: b for b in nb.info().backends}["cupy"].facts


# -------------------------------------------------------------- array modules and takeovers
def _numpy_record(name: str, modules: tuple[str, ...] = ("numpy",)) -> nb.Backend:
    import array_api_compat.numpy

    return nb.Backend(
        name=name,
        load_namespace=lambda: array_api_compat.numpy,
        probe=lambda: None,
        array_modules=modules,
        to_host=np.asarray,
        from_host=lambda a, device=None: a,
    )


def test_overlapping_array_modules_are_refused() -> None:
    generation = registry.generation
    with pytest.raises(BackendError, match=r"'numpy'.*take 'numpy''s arrays over.*replace='numpy'"):
        nb.register_backend(_numpy_record("thief"))
    # Nothing changed: not listed, numpy's arrays still numpy's, no cache invalidated.
    assert "thief" not in nb.backends()
    assert registry.backend_of(np.zeros(2)) == "numpy"
    assert registry.generation == generation
    # replace=True replaces a record of the same name only; it does not name numpy.
    with pytest.raises(BackendError, match="replace='numpy'"):
        nb.register_backend(_numpy_record("thief"), replace=True)
    # Between plugins too: the second one declaring the first one's module is refused.
    nb.register_backend(_lazy_record("first"))
    with pytest.raises(BackendError, match=r"registered backend 'first'.*replace='first'"):
        nb.register_backend(_lazy_record("second"))
    assert registry.backend_of(type("T", (), {"__module__": MISSING_MODULE})()) == "first"


def test_takeover_named_by_replace_and_undone_by_unregister() -> None:
    record = nb.register_backend(_numpy_record("fastnp"), replace="numpy")
    assert registry.get("fastnp") is record
    assert registry.backend_of(np.zeros(2)) == "fastnp"
    assert registry.get("numpy").name == "numpy"  # numpy stays selectable by name
    registry.unregister_backend("fastnp")
    assert registry.backend_of(np.zeros(2)) == "numpy"


def test_replacing_by_name_drops_the_old_records_modules() -> None:
    nb.register_backend(_lazy_record("mod"))
    nb.register_backend(_numpy_record("mod", modules=("nnb_other_module",)), replace=True)
    assert registry.backend_of(type("T", (), {"__module__": MISSING_MODULE})()) is None
    assert registry.backend_of(type("T", (), {"__module__": "nnb_other_module"})()) == "mod"
    with pytest.raises(BackendError, match="replace must be"):
        nb.register_backend(_lazy_record("mod2"), replace=1)  # type: ignore[arg-type]


HOSTILE_PLUGINS = {
    "nnb_takeover_plugin": """
import array_api_compat.numpy
import numpy
from nnbackend import Backend

BACKEND = Backend(
    name="takeover", load_namespace=lambda: array_api_compat.numpy, probe=lambda: None,
    array_modules=("numpy",), to_host=lambda a: numpy.zeros_like(numpy.asarray(a)),
    from_host=lambda a, device=None: a,
)
""",
    "nnb_exit_plugin": "raise SystemExit(3)\n",
    "nnb_interrupt_plugin": "raise KeyboardInterrupt\n",
}

HOSTILE_ENTRY_POINTS = """\
[nnbackend.backends]
takeover = nnb_takeover_plugin:BACKEND
exits = nnb_exit_plugin:BACKEND
interrupts = nnb_interrupt_plugin:BACKEND
"""

HOSTILE_CHECK = """
import json, os, sys
import numpy as np
import nnbackend as nb
from nnbackend import nn, registry

out = {"backends": nb.backends(), "available": nb.available_backends()}
out["reasons"] = {n: registry.probe(n) for n in ("takeover", "exits", "interrupts")}
out["owner"] = registry.backend_of(np.zeros(2))
nb.random.seed(0)
model = nn.Linear(2, 3)
path = os.path.join(sys.argv[1], "model.npz")
nb.save(model, path)
with np.load(path) as data:
    out["saved_nonzero"] = bool(np.any(data[sorted(data.files)[-1]] != 0))
print(json.dumps(out))
"""


def test_hostile_plugins_are_unusable_not_fatal(
    tmp_path: Path, run_python: Callable[..., Any]
) -> None:
    for module, source in HOSTILE_PLUGINS.items():
        (tmp_path / f"{module}.py").write_text(source)
    dist = tmp_path / "nnb_hostile-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: nnb-hostile\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(HOSTILE_ENTRY_POINTS)
    proc = run_python(args=["-c", HOSTILE_CHECK, str(tmp_path)], env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {"takeover", "exits", "interrupts"} <= set(out["backends"])
    assert not {"takeover", "exits", "interrupts"} & set(out["available"])
    assert "take 'numpy''s arrays over" in out["reasons"]["takeover"]
    assert "SystemExit: 3" in out["reasons"]["exits"]
    assert "KeyboardInterrupt" in out["reasons"]["interrupts"]
    assert out["owner"] == "numpy"
    assert out["saved_nonzero"] is True
