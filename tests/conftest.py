"""Shared fixtures for the whole nnbackend test suite.

Fixtures every test file can use (pytest finds them through this conftest):

``backend``
    The name of a registered built-in backend: numpy, array_api_strict, torch, cupy (jax only
    where ``NNBACKEND_TEST_BACKENDS`` names it, see ``OPT_IN_BACKENDS``). A backend
    that cannot run here is reported as SKIPPED with the reason from
    ``nnbackend.registry.probe(name)``, never dropped. The cupy parameter carries the ``gpu``
    marker. ``NNBACKEND_TEST_BACKENDS=numpy,array_api_strict`` restricts the parameters (CI uses
    it to run subsets); the pytest header says which backends were selected.
``dtype``
    "float64", "float32", "float16"; float16 is skipped (with the reason) on backends whose
    capabilities lack it (array_api_strict).
``xp``
    ``nnbackend.namespace(backend, dtype)``, with ``nnbackend.using(backend=..., dtype=...)``
    active for the test, so code that calls ``nnbackend.namespace()`` itself sees the same
    backend and dtype.
``run_python``
    Runs Python code in a fresh interpreter with a clean nnbackend environment (``NNBACKEND``
    and ``NNBACKEND_DTYPE`` removed unless given).
``fresh_settings``
    Forgets the process defaults and the environment reading, so a test can set ``NNBACKEND``
    / ``NNBACKEND_DTYPE`` with ``monkeypatch`` and have them read at the next use.
``require_jax``
    Skips the test unless jax is selected in ``NNBACKEND_TEST_BACKENDS`` (it is opt-in, see
    ``OPT_IN_BACKENDS``) and usable here (the registry's reason otherwise), for tests that use
    jax directly instead of through the ``backend`` fixture.
``run_in_repo``
    ``run_in_repo(*args, env=..., timeout=60)`` runs ``python *args`` from the repository
    root, with every ``NNBACKEND*`` variable removed from the environment (``env`` entries
    added after): for tests that start the benchmarks.

Every test starts from the built-in defaults: ``NNBACKEND`` / ``NNBACKEND_DTYPE`` of the shell
that runs pytest are set aside for the session (the header says so), and ``_isolate_settings``
(autouse) restores the process defaults, the context (``using`` blocks left open), the
registry and the module-level random generator after every test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import hypothesis
import pytest

import nnbackend as nb
from nnbackend import config, distributed, registry
from nnbackend import random as nb_random

BUILTIN_BACKENDS = ("numpy", "array_api_strict", "torch", "cupy", "jax")
# Run only where NNBACKEND_TEST_BACKENDS names them: jax's immutable arrays meet an engine and
# optimizers that still write in place (issue 13, item 6, second wave), so a plain `pytest`
# with jax installed would fail by the hundreds. CI runs the jax step on its own.
OPT_IN_BACKENDS = frozenset({"jax"})
GPU_BACKENDS = frozenset({"cupy"})
DTYPES = ("float64", "float32", "float16")
TEST_BACKENDS_ENV = "NNBACKEND_TEST_BACKENDS"

hypothesis.settings.register_profile(
    "nnbackend",
    max_examples=25,
    deadline=None,  # the first call on a backend imports and builds its namespace
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
hypothesis.settings.register_profile(
    "thorough", parent=hypothesis.settings.get_profile("nnbackend"), max_examples=300
)
# jax dispatches every operation eagerly and compiles each new (operation, shape, dtype) on
# first use, so a hypothesis example costs it several times what it costs NumPy: a run on jax
# alone (CI's jax step) draws 5 examples where the others draw 25 (10 made the jax step 401 s
# of a 620 s CI run on two cores, and the whole run 1899 s on a slower machine; 5 takes the
# four most hypothesis-heavy files from 180 s to 132 s). The semantics are fuzzed on numpy and
# array_api_strict; the jax run checks that every property holds through the jax backend, on
# every dtype. The tests that scale their budget from the profile (``per_op``, ``few``) scale
# with it. HYPOTHESIS_PROFILE=nnbackend (or thorough) chooses explicitly.
hypothesis.settings.register_profile(
    "nnbackend-jax", parent=hypothesis.settings.get_profile("nnbackend"), max_examples=5
)


def _selected_backends() -> tuple[str, ...]:
    """The backends the ``backend`` fixture runs on: the built-ins but the opt-in ones, or
    those named in ``NNBACKEND_TEST_BACKENDS`` (comma separated)."""
    raw = os.environ.get(TEST_BACKENDS_ENV, "").strip()
    if not raw:
        return tuple(name for name in BUILTIN_BACKENDS if name not in OPT_IN_BACKENDS)
    return tuple(name.strip() for name in raw.split(",") if name.strip())


SELECTED_BACKENDS = _selected_backends()


def _hypothesis_profile(selected: tuple[str, ...]) -> str:
    """HYPOTHESIS_PROFILE where set; else "nnbackend-jax" for a run on jax alone, and
    "nnbackend" for any other selection."""
    chosen = os.environ.get("HYPOTHESIS_PROFILE", "").strip()
    if chosen:
        return chosen
    return "nnbackend-jax" if selected == ("jax",) else "nnbackend"


hypothesis.settings.load_profile(_hypothesis_profile(SELECTED_BACKENDS))


# NNBACKEND / NNBACKEND_DTYPE of the shell running pytest are set aside for the session, so
# every test starts from the built-in defaults; tests choose backends through the fixtures.
_AMBIENT: dict[str, str] = {}


def pytest_configure() -> None:
    unknown = [name for name in SELECTED_BACKENDS if name not in nb.backends()]
    if unknown:
        raise pytest.UsageError(
            f"{TEST_BACKENDS_ENV} names unknown backends {unknown}; "
            f"registered backends are {nb.backends()}"
        )
    for key in (config.BACKEND_ENV, config.DTYPE_ENV):
        if key in os.environ:
            _AMBIENT[key] = os.environ.pop(key)
    _reset_process_settings()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``@pytest.mark.jax_rotate("param")``: on jax, a test parametrised over dtypes and over
    ``param`` runs each value of ``param`` in one dtype, the dtypes in turn (value i in dtype
    (i + j) % 3 == 0 ...), and reports the other cases as skipped. jax compiles every new
    (operation, shape, dtype) on first use, about 50 ms each: the 21 optimizer-by-dtype cases
    of one training test took 130 s of CI's jax step. Every value and every dtype still runs
    on jax, and every combination on the other backends."""
    for item in items:
        marker = item.get_closest_marker("jax_rotate")
        callspec = getattr(item, "callspec", None)
        if marker is None or callspec is None or callspec.params.get("backend") != "jax":
            continue
        param = marker.args[0]
        dtype, value = callspec.params.get("dtype"), callspec.params.get(param)
        if dtype is None or value is None:
            continue
        index = _param_index(item, param, value)
        if (DTYPES.index(dtype) + index) % len(DTYPES):
            item.add_marker(
                pytest.mark.skip(
                    reason=f"jax_rotate: on jax each {param} runs in one dtype "
                    f"({param}={value!r} runs in {DTYPES[(-index) % len(DTYPES)]})"
                )
            )


def _param_index(item: pytest.Item, param: str, value: Any) -> int:
    """The position of ``value`` among the values ``item``'s test is parametrised with."""
    for mark in item.iter_markers("parametrize"):
        names = mark.args[0]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        if param in names:
            values = list(mark.args[1])
            if len(names) > 1:
                values = [v[names.index(param)] for v in values]
            return values.index(value)
    raise pytest.UsageError(f"jax_rotate({param!r}): {item.nodeid} is not parametrised by it")


def pytest_unconfigure() -> None:
    os.environ.update(_AMBIENT)


def pytest_report_header() -> list[str]:
    lines = [
        f"nnbackend test backends: {', '.join(SELECTED_BACKENDS)} "
        f"(hypothesis profile {_hypothesis_profile(SELECTED_BACKENDS)!r}, "
        f"max_examples={hypothesis.settings.default.max_examples})"
    ]
    if _AMBIENT:
        lines.append(
            f"  ignored for the tests: {_AMBIENT} (select backends with {TEST_BACKENDS_ENV})"
        )
    excluded = [name for name in BUILTIN_BACKENDS if name not in SELECTED_BACKENDS]
    if os.environ.get(TEST_BACKENDS_ENV, "").strip():
        lines.append(f"  (restricted by {TEST_BACKENDS_ENV}; not run: {', '.join(excluded)})")
    elif excluded:
        lines.append(f"  (opt-in, not run: {', '.join(excluded)}; select with {TEST_BACKENDS_ENV})")
    for name in SELECTED_BACKENDS:
        reason = registry.probe(name)
        lines.append(f"  {name}: {'available' if reason is None else 'SKIPPED: ' + reason}")
    return lines


_gpu_reason: list[str | None] = []


def gpu_unavailable_reason() -> str | None:
    """``None`` when a CUDA GPU is usable (through cupy, or torch with CUDA), else why not."""
    if not _gpu_reason:
        reason = registry.probe("cupy")
        if reason is not None and registry.probe("torch") is None:
            import torch

            if torch.cuda.is_available():
                reason = None
        _gpu_reason.append(None if reason is None else f"needs a usable CUDA GPU: {reason}")
    return _gpu_reason[0]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") is not None:
        reason = gpu_unavailable_reason()
        if reason is not None:
            pytest.skip(reason)


# Skip reasons raised by the ``backend`` and ``dtype`` fixtures. pytest reports a fixture's skip
# at the test's own line, so ``-ra`` printed one "has no float16" line per test function (over
# a hundred); these are reported at the fixture instead, one line per reason with its count.
_FIXTURE_SKIPS: dict[str, int] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        reason = report.longrepr[2].removeprefix("Skipped: ")
        line = _FIXTURE_SKIPS.get(reason)
        if line is not None:
            report.longrepr = (str(Path(__file__)), line, report.longrepr[2])


def _lineno(fixture: Any) -> int:
    """The line of a fixture's definition (1-based), where its skips are reported."""
    function = getattr(fixture, "__wrapped__", fixture)
    code = getattr(function, "__code__", None)
    return code.co_firstlineno if code is not None else 0


def _fixture_skip(reason: str, line: int) -> None:
    _FIXTURE_SKIPS[reason] = line
    pytest.skip(reason)


@pytest.fixture(
    params=[
        pytest.param(name, marks=[pytest.mark.gpu] if name in GPU_BACKENDS else [], id=name)
        for name in SELECTED_BACKENDS
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    """A backend name; skipped, with the registry's reason, where it cannot run here."""
    name: str = request.param
    reason = registry.probe(name)
    if reason is not None:
        _fixture_skip(f"backend {name!r} is unavailable: {reason}", _lineno(backend))
    return name


@pytest.fixture(params=DTYPES)
def dtype(request: pytest.FixtureRequest, backend: str) -> str:
    """A floating dtype name the backend has; float16 is skipped where the backend lacks it,
    and a dtype the backend cannot hold in this process (float64 on jax without
    ``JAX_ENABLE_X64=1``) with the backend's reason."""
    name: str = request.param
    record = registry.get(backend)
    if name == "float16" and not record.capabilities.float16:
        _fixture_skip(f"backend {backend!r} has no float16", _lineno(dtype))
    reason = None if record.dtype_reason is None else record.dtype_reason(name)
    if reason is not None:
        _fixture_skip(f"backend {backend!r} has no {name} here: {reason}", _lineno(dtype))
    return name


@pytest.fixture
def xp(backend: str, dtype: str) -> Iterator[Any]:
    """``nnbackend.namespace(backend, dtype)``, with those settings active for the test."""
    with nb.using(backend=backend, dtype=dtype):
        yield nb.namespace(backend, dtype)


@pytest.fixture
def xp64(backend: str) -> Iterator[Any]:
    """The backend's namespace in float64, active for the test (for tests where the dtype
    does not matter)."""
    with nb.using(backend=backend, dtype="float64"):
        yield nb.namespace()


def _reset_process_settings() -> None:
    """Back to a fresh process: no set_*() defaults, environment not read yet."""
    with config._lock:
        config._Process.backend = None
        config._Process.dtype = None
        config._Process.backend_source = config.SOURCE_BUILTIN
        config._Process.dtype_source = config.SOURCE_BUILTIN
        config._Process.environment_read = False
        config._Process.version += 1


@pytest.fixture
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Clear ``NNBACKEND`` / ``NNBACKEND_DTYPE`` and the process defaults. Returns a function
    ``fresh(**environ)`` that sets the given environment variables (None deletes) and forgets
    the settings again, so the next use reads the environment."""

    def fresh(**environ: str | None) -> None:
        for key, value in environ.items():
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)
        _reset_process_settings()

    fresh(NNBACKEND=None, NNBACKEND_DTYPE=None)
    return fresh


_PROCESS_FIELDS = ("backend", "dtype", "backend_source", "dtype_source", "environment_read")
_REGISTRY_DICTS = ("_records", "_by_module", "_probes", "_entry_point_errors")


@pytest.fixture(autouse=True)
def _isolate_settings() -> Iterator[None]:
    """Restore process defaults, context, registry and the global RNG after every test."""
    saved_process = {name: getattr(config._Process, name) for name in _PROCESS_FIELDS}
    saved_version = config._Process.version
    saved_registry = {name: dict(getattr(registry, name)) for name in _REGISTRY_DICTS}
    saved_loaded = registry._entry_points_loaded
    saved_unregistered = set(registry._unregistered)
    saved_generation = registry.generation
    saved_random = nb_random._global
    token = config._context.set(None)
    try:
        yield
    finally:
        config._context.reset(token)
        with config._lock:
            if config._Process.version != saved_version or any(
                getattr(config._Process, name) != value for name, value in saved_process.items()
            ):
                for name, value in saved_process.items():
                    setattr(config._Process, name, value)
                # Never go back to an old version: a namespace cached under it would match.
                config._Process.version += 1
        with registry._lock:
            # New entries in the probe cache alone are no change (probes are cached per name).
            if registry.generation != saved_generation or any(
                getattr(registry, name) != value
                for name, value in saved_registry.items()
                if name != "_probes"
            ):
                for name, value in saved_registry.items():
                    current = getattr(registry, name)
                    current.clear()
                    current.update(value)
                registry.generation += 1
                # As a registry change does: the caches built from the test's records
                # (namespace.backend_for's by array type, ops_for's) forget them. Without
                # this, a test that left a numpy record without in-place writes to be
                # restored here made the next test's optimizer rebind (CI, 2026-12-02).
                registry._on_change()
            registry._entry_points_loaded = saved_loaded
            # Names unregistered by the test (a later use says "was unregistered").
            if registry._unregistered != saved_unregistered:
                registry._unregistered.clear()
                registry._unregistered.update(saved_unregistered)
        nb_random._global = saved_random


@pytest.fixture(autouse=True)
def _fresh_caches_under_mutmut(_isolate_settings: None) -> None:
    """Under mutation testing (mutmut sets ``MUTANT_UNDER_TEST``), forget the namespaces and
    kernels built by earlier tests, as a registry change does: code that runs once per
    backend (the namespace wrappers, the kernels) then runs inside every test, so its mutants
    can be caught. A no-op in normal runs."""
    if "MUTANT_UNDER_TEST" in os.environ:
        with registry._lock:
            registry.generation += 1
            registry._on_change()


@pytest.fixture(autouse=True)
def _dtype_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test runs with the dtype guard on (``NNBACKEND_CHECK_DTYPES=1``, also for the
    Python processes tests start): each engine op checks that its outputs have the dtype the
    precision policy gives them, and raises naming the op otherwise."""
    monkeypatch.setenv(config.CHECK_DTYPES_ENV, "1")
    saved = config._Process.check_dtypes
    config.set_check_dtypes(True)
    try:
        yield
    finally:
        config.set_check_dtypes(saved)


def _clean_environ(extra: Mapping[str, str | None] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NNBACKEND", "NNBACKEND_DTYPE")}
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        elif key == "PYTHONPATH" and env.get(key):
            # Ahead of the current path, not instead of it: a checkout that is not
            # pip-installed (the GPU check) finds nnbackend through PYTHONPATH.
            env[key] = value + os.pathsep + env[key]
        else:
            env[key] = value
    return env


@pytest.fixture
def require_jax() -> None:
    """Skip unless jax is selected (opt-in, as the ``backend`` fixture has it: named in
    ``NNBACKEND_TEST_BACKENDS``) and usable; the skips are reported here, one line each."""
    selected = os.environ.get(TEST_BACKENDS_ENV, "").replace(" ", "").split(",")
    if "jax" not in selected:
        _fixture_skip(
            f"jax is opt-in: {TEST_BACKENDS_ENV}=jax (see tests/conftest.py)",
            _lineno(require_jax),
        )
    reason = registry.probe("jax")
    if reason is not None:
        _fixture_skip(f"jax: {reason}", _lineno(require_jax))


REPO_ROOT = Path(__file__).resolve().parent.parent


def _run_in_repo(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NNBACKEND")}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def run_in_repo() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_in_repo(*args, env={...}, timeout=60)``: ``python *args`` run from the repository
    root (where ``python -m benchmarks`` finds the benchmarks), its environment this one's
    without any ``NNBACKEND*`` variable, plus ``env``; never raises on a failing exit status."""
    return _run_in_repo


@pytest.fixture
def run_python() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_python(code, env={...}, args=[...])`` runs ``python -c code`` (dedented) in a
    fresh interpreter; ``env`` entries are added to a copy of the environment without
    ``NNBACKEND*`` (a None value removes a variable; ``PYTHONPATH`` goes ahead of the current
    one). ``args`` replaces ``-c code`` with other
    interpreter arguments (``["-m", "nnbackend", "info"]``); ``argv`` runs another program
    (a console script) in the same clean environment."""

    def run(
        code: str | None = None,
        *,
        env: Mapping[str, str | None] | None = None,
        args: list[str] | None = None,
        argv: list[str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        if argv is None:
            tail = args if args is not None else ["-c", textwrap.dedent(code or "")]
            argv = [sys.executable, *tail]
        return subprocess.run(
            argv, env=_clean_environ(env), capture_output=True, text=True, timeout=timeout
        )

    return run


@contextlib.contextmanager
def _no_host_reads() -> Iterator[None]:
    """Make every way of reading an array_api_strict array back to Python raise."""
    array_type = type(registry.get("array_api_strict").load_namespace().asarray(0.0))

    def refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an array was read back to the host")

    names = (
        "__bool__",
        "__float__",
        "__int__",
        "__index__",
        "__complex__",
        "__array__",
        "__dlpack__",
        "__iter__",
    )
    saved = {name: array_type.__dict__[name] for name in names if name in array_type.__dict__}
    try:
        for name in names:
            setattr(array_type, name, refuse)
        yield
    finally:
        for name in names:
            if name in saved:
                setattr(array_type, name, saved[name])
            else:
                delattr(array_type, name)


@pytest.fixture
def no_host_reads() -> Callable[[], contextlib.AbstractContextManager[None]]:
    """A context manager factory: inside ``with no_host_reads():`` any read of an
    array_api_strict array back to the host (bool, float, int, __array__, DLPack, iteration)
    raises, which proves a code path never synchronises with the device."""
    return _no_host_reads


class DLPackProducer:
    """An array of no registered backend that speaks only DLPack (like a JAX array, or a
    CuPy array as torch.asarray sees it): wraps a NumPy array."""

    def __init__(self, array: Any) -> None:
        self.array = array

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> Any:
        return self.array.__dlpack_device__()


@pytest.fixture
def numpy_without_inplace_writes() -> Callable[[], None]:
    """``forbid()`` registers the numpy record with in-place writes forbidden (its ops then
    rebind every result); the registry is restored after the test."""

    def forbid() -> None:
        record = registry.get("numpy")
        caps = dataclasses.replace(record.capabilities, inplace=False)
        registry.register_backend(dataclasses.replace(record, capabilities=caps), replace=True)

    return forbid


@pytest.fixture
def ufunc_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    """NumPy's optimizer updates through its ufuncs only, never its BLAS's axpy (whose one
    rounding may differ from ``p - lr * g`` in the last bit): for tests of the exact values
    of the ufunc paths. tests/test_blas_axpy.py tests the axpy path."""
    from nnbackend.backends import blas

    monkeypatch.setattr(blas, "usable", lambda *args: None)


@pytest.fixture
def dlpack_producer() -> type[DLPackProducer]:
    """The :class:`DLPackProducer` class."""
    return DLPackProducer


@pytest.fixture
def numpy_like_backend() -> Callable[..., nb.Backend]:
    """``make(name, **fields)``: an (unregistered) backend record over array-api-compat's
    NumPy namespace, always usable, with ``fields`` (hooks such as ``empty_cache``) set."""
    import array_api_compat.numpy
    import numpy as np

    def make(name: str, **fields: Any) -> nb.Backend:
        defaults: dict[str, Any] = {
            "load_namespace": lambda: array_api_compat.numpy,
            "probe": lambda: None,
            "array_modules": (),
            "to_host": np.asarray,
            "from_host": lambda a, device=None: a,
        }
        return nb.Backend(name=name, **{**defaults, **fields})

    return make


def _run_on_ranks(size: int, fn: Callable[[Any], Any], *, backend: str, dtype: str) -> list[Any]:
    """``fn(comm)`` on ``size`` threads joined by a thread group; their results by rank.
    An exception on any rank is raised here (after the others were released)."""
    comms = distributed.thread_group(size, timeout=20.0)
    results: list[Any] = [None] * size
    errors: list[BaseException] = []

    def run(comm: Any) -> None:
        try:
            with nb.using(backend=backend, dtype=dtype):  # contexts do not cross threads
                results[comm.rank] = fn(comm)
        except BaseException as exc:
            errors.append(exc)
            comm.abort()

    threads = [threading.Thread(target=run, args=(c,)) for c in comms]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    if errors:
        raise errors[0]
    return results


@pytest.fixture(scope="session")
def on_ranks() -> Callable[..., list[Any]]:
    """``on_ranks(size, fn, backend=..., dtype=...)``: ``fn(comm)`` on ``size`` threads
    joined by a thread group, under those settings (contexts do not cross threads); their
    results by rank, and an exception on any rank raised in the test (after the others were
    released). Session-scoped: hypothesis tests take it too."""
    return _run_on_ranks


@pytest.fixture
def gathers_nan(backend: str) -> bool:
    """Whether an index out of range gives NaN on this backend instead of an error: a
    backend whose ``take`` does not check its indices (``Ops.take_checks_range``), with
    arrays on a device, where checking would synchronise (CuPy on a GPU, jax on one)."""
    from nnbackend.namespace import ops_for

    with nb.using(backend=backend):
        xp = nb.namespace()
        a = xp.asarray([0])
        ops = ops_for(xp, a)
        return not ops.take_checks_range and not ops.on_host(a)


@pytest.fixture
def mse_step() -> Callable[[Any, Any], Callable[[Any, Any], Any]]:
    """``make(model, opt)``: a training step of ``model`` on the mean squared error that
    zeroes the gradients, steps ``opt`` and returns the loss (the step the compile tests
    record and compare with eager)."""
    from nnbackend import nn

    def make(model: Any, opt: Any) -> Callable[[Any, Any], Any]:
        def train(x: Any, t: Any) -> Any:
            opt.zero_grad()
            loss = nn.MSELoss()(model(x), t)
            loss.backward()
            opt.step()
            return loss

        return train

    return make
