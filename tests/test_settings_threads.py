"""Settings under concurrency: the caches of ``namespace()``, of the mixed-precision policy
and of ``backend_for`` against a ``set_*`` or ``register_backend`` landing mid-call, and a
stress test of many threads and asyncio tasks switching ``using`` blocks while the process
defaults change (issue 12, item 14).

The stress test runs ``NNBACKEND_STRESS_RUNS`` times (default 2, for CI); to run it 1000
times in a row::

    NNBACKEND_STRESS_RUNS=1000 pytest -q -x -p no:cacheprovider \\
        tests/test_settings_threads.py -k stress
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import config, datasets, nn, optim, registry
from nnbackend.nn import functional as F

nb_namespace = sys.modules["nnbackend.namespace"]  # nb.namespace is the function
STRESS_RUNS = int(os.environ.get("NNBACKEND_STRESS_RUNS", "2"))


def _numpy_record(name: str) -> nb.Backend:
    import array_api_compat.numpy

    return nb.Backend(
        name=name,
        load_namespace=lambda: array_api_compat.numpy,
        probe=lambda: None,
        array_modules=("numpy",),
        to_host=np.asarray,
        from_host=lambda a, device=None: a,
    )


# ------------------------------------------------ a change landing between resolve and store
def test_namespace_cache_never_keeps_a_namespace_of_stale_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nb.set_default_dtype("float64")
    assert nb.namespace().zeros(1).dtype == np.float64
    resolve = config.resolve

    def resolve_then_another_thread_sets(*args: Any) -> Any:
        found = resolve(*args)
        config.set_default_dtype("float32")  # lands after the resolve, before the store
        return found

    nb.set_default_dtype("float16")  # so the next namespace() resolves
    monkeypatch.setattr(config, "resolve", resolve_then_another_thread_sets)
    assert nb.namespace().zeros(1).dtype == np.float16  # what was active when it was called
    monkeypatch.setattr(config, "resolve", resolve)
    assert config.get_default_dtype() == "float32"
    assert nb.namespace().zeros(1).dtype == np.float32


def test_namespace_cache_never_keeps_a_namespace_of_a_replaced_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import array_api_compat.numpy

    record = nb.Backend(
        name="swapping",
        load_namespace=lambda: array_api_compat.numpy,
        probe=lambda: None,
        array_modules=(),
        to_host=np.asarray,
        from_host=lambda a, device=None: a,
    )
    nb.register_backend(record)
    nb.set_backend("swapping")
    replacement = nb.Backend(
        name="swapping",
        load_namespace=lambda: array_api_compat.numpy,
        probe=lambda: None,
        array_modules=(),
        to_host=np.asarray,
        from_host=lambda a, device=None: a,
        capabilities=nb.Capabilities(float16=False),
    )
    build = nb_namespace._build

    def build_then_replace(*args: Any) -> Any:
        ns = build(*args)
        nb.register_backend(replacement, replace=True)
        return ns

    nb.set_default_dtype("float16")
    monkeypatch.setattr(nb_namespace, "_build", build_then_replace)
    nb.namespace()  # built from the old record, which has float16
    monkeypatch.setattr(nb_namespace, "_build", build)
    with pytest.raises(nb.errors.DtypeError, match="no float16"):
        nb.namespace()


def test_mixed_precision_cache_never_keeps_a_stale_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nb.set_default_dtype("float32")
    assert F.mixed_compute() is None
    get_policy = config.get_policy

    def policy_then_another_thread_sets() -> str:
        found = get_policy()
        config.set_default_dtype("mixed16")
        return found

    nb.set_default_dtype("float64")
    monkeypatch.setattr(config, "get_policy", policy_then_another_thread_sets)
    assert F.mixed_compute() is None  # float64 was active when it was called
    monkeypatch.setattr(config, "get_policy", get_policy)
    assert F.mixed_compute() == "float16"  # mixed16 now


def test_backend_for_cache_never_keeps_a_replaced_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Fresh(np.ndarray):  # a NumPy array type backend_for has not cached yet
        __module__ = "numpy"

    array = np.zeros(2).view(Fresh)
    require = registry.require
    takeover = _numpy_record("numpy_takeover")

    def require_then_register(name: str) -> Any:
        record = require(name)
        nb.register_backend(takeover, replace="numpy")
        return record

    monkeypatch.setattr(registry, "require", require_then_register)
    assert nb_namespace.backend_for(array)[1].name == "numpy"
    monkeypatch.setattr(registry, "require", require)
    assert nb_namespace.backend_for(array)[1] is takeover


# ------------------------------------------------------------------------------ stress test
# What each worker may select. The process default never says float16 (array_api_strict
# has none, and the default backend changes under the workers' feet).
_BACKENDS = ("numpy", "array_api_strict")
_PROCESS_DTYPES = ("float64", "float32", "mixed16")
_BLOCK_DTYPES = {"numpy": ("float64", "float32", "float16", "mixed16")}
_BLOCK_DTYPES["array_api_strict"] = ("float64", "float32", "mixed16")


def _check_block(backend: str, policy: str) -> None:
    """Everything a using(backend, policy) block promises, checked from inside it."""
    dtype = config.array_dtype(policy)
    assert config.get_backend() == backend
    assert config.get_policy() == policy
    ns = nb.namespace()
    assert ns.__nnbackend__[:2] == (backend, dtype), (ns.__nnbackend__, backend, policy)
    assert str(ns.zeros(1).dtype).rsplit(".", 1)[-1] == dtype
    compute = config.compute_dtype(policy)
    assert F.mixed_compute() == (compute if compute != dtype else None)
    assert nb.precision.policy().name == policy


def _check_process_default() -> None:
    """Outside any block, with no set_*() running: the caches agree with the settings."""
    backend, dtype, _ = config.resolve()
    assert nb.namespace().__nnbackend__[:2] == (backend, dtype)
    policy = config.get_policy()
    compute = config.compute_dtype(policy)
    assert F.mixed_compute() == (compute if compute != config.array_dtype(policy) else None)


def _hammer(rng: random.Random, iterations: int) -> None:
    for _ in range(iterations):
        roll = rng.random()
        if roll < 0.15:
            nb.set_default_dtype(rng.choice(_PROCESS_DTYPES))
        elif roll < 0.2:
            nb.set_backend(rng.choice(_BACKENDS))
        elif roll < 0.5:
            nb.namespace()  # the process default: only must not fail
            F.mixed_compute()
        else:
            backend = rng.choice(_BACKENDS)
            policy = rng.choice(_BLOCK_DTYPES[backend])
            with nb.using(backend=backend, dtype=policy):
                _check_block(backend, policy)
                if roll < 0.7:  # a nested block changing one setting
                    inner = rng.choice(_BLOCK_DTYPES[backend])
                    with nb.using(dtype=inner):
                        _check_block(backend, inner)
                    _check_block(backend, policy)
                with config.pinned():
                    nb.set_default_dtype(rng.choice(_PROCESS_DTYPES))
                    _check_block(backend, policy)


def _hammer_defaults(rng: random.Random, iterations: int) -> None:
    """Set and read the process defaults only: no block replaces a cached entry meanwhile,
    so one built from stale settings would stay for the check that follows."""
    for _ in range(iterations):
        if rng.random() < 0.3:
            nb.set_default_dtype(rng.choice(_PROCESS_DTYPES))
        else:
            nb.namespace()
            F.mixed_compute()


async def _task(rng: random.Random, iterations: int) -> None:
    for _ in range(iterations):
        backend = rng.choice(_BACKENDS)
        policy = rng.choice(_BLOCK_DTYPES[backend])
        with nb.using(backend=backend, dtype=policy):
            _check_block(backend, policy)
            await asyncio.sleep(0)  # the other tasks of this loop run their blocks here
            _check_block(backend, policy)
            if rng.random() < 0.3:
                nb.set_default_dtype(rng.choice(_PROCESS_DTYPES))
            await asyncio.sleep(0)
            _check_block(backend, policy)


async def _tasks(seed: int, iterations: int) -> None:
    await asyncio.gather(*(_task(random.Random(seed * 100 + i), iterations) for i in range(6)))


def _spiral_fit(started: threading.Event | None = None) -> np.ndarray:
    """A short fit of the spiral network under the active settings; its final weights.
    ``started`` is set once fit has begun (its settings are fixed then)."""
    nb.random.seed(0)
    x, t = datasets.spiral()
    model = nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))
    trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=1.0))
    callbacks = []
    if started is not None:

        class Started(nb.train.Callback):
            def on_fit_start(self, trainer: nb.Trainer, history: nb.History) -> None:
                started.set()

        callbacks.append(Started())
    trainer.fit(x, t, epochs=4, batch_size=30, seed=0, progress=False, callbacks=callbacks)
    return np.concatenate([np.asarray(p.data).ravel() for p in model.parameters()])


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads every few microseconds, so the interleavings that races need happen."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


@pytest.mark.parametrize("run", range(STRESS_RUNS))
def test_stress_threads_and_tasks_switching_settings(run: int, fast_switching: None) -> None:
    if registry.probe("array_api_strict") is not None:
        pytest.skip("needs array_api_strict")
    with nb.using(backend="numpy", dtype="float64"):
        reference = _spiral_fit()
    rounds, hammer_threads, loop_threads = 3, 4, 2
    barrier = threading.Barrier(hammer_threads + loop_threads + 1)
    errors: list[BaseException] = []
    fits: list[np.ndarray] = []

    def guarded(body: Any) -> Any:
        def target(*args: Any) -> None:
            try:
                body(*args)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)
                barrier.abort()

        return target

    started = threading.Event()

    def hammer_worker(index: int) -> None:
        rng = random.Random(run * 1000 + index)
        assert started.wait(60)
        for _ in range(rounds):
            _hammer(rng, 40)
            _hammer_defaults(rng, 20)
            barrier.wait()  # every worker is done changing settings...
            _check_process_default()  # ...so the caches must agree with them
            barrier.wait()

    def loop_worker(index: int) -> None:
        assert started.wait(60)
        for r in range(rounds):
            asyncio.run(_tasks(run * 1000 + index * 10 + r, 8))
            barrier.wait()
            _check_process_default()
            barrier.wait()

    def fit_worker() -> None:
        # A float64 fit on numpy under the process default, which the other workers start
        # changing as soon as it has begun.
        fits.append(_spiral_fit(started))

    nb.set_backend("numpy")
    nb.set_default_dtype("float64")
    threads = [
        threading.Thread(target=guarded(hammer_worker), args=(i,)) for i in range(hammer_threads)
    ]
    threads += [threading.Thread(target=guarded(loop_worker), args=(i,)) for i in range(2)]
    fitter = threading.Thread(target=guarded(fit_worker))
    for thread in threads:
        thread.start()
    fitter.start()
    try:
        for _ in range(rounds):
            barrier.wait()
            _check_process_default()
            barrier.wait()
    except threading.BrokenBarrierError:
        pass
    for thread in [*threads, fitter]:
        thread.join(timeout=120)
        assert not thread.is_alive(), "a worker hangs"
    if errors:
        raise errors[0]
    [weights] = fits
    assert weights.dtype == np.float64
    assert np.array_equal(weights, reference), "a float64 fit changed under other threads"


def _policy_trainer(precision: str | None) -> tuple[nb.Trainer, Any, Any]:
    """The spiral network built under ``precision`` (None: the process default). Built before
    any thread starts: the global random generator that draws the weights is process-wide."""
    with nb.using(dtype=precision):
        nb.random.seed(0)
        x, t = datasets.spiral()
        model = nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))
    trainer = nb.Trainer(
        model,
        nn.SoftmaxCrossEntropy(),
        optim.SGD(model.parameters(), lr=1.0),
        precision=precision,
    )
    return trainer, x, t


def _policy_fit(
    trainer: nb.Trainer, x: Any, t: Any, started: dict[Any, threading.Event] | None = None
) -> np.ndarray:
    """Train; with ``started``, set this run's event when fit has begun (its settings are
    fixed then) and wait until every run has begun, so that they all overlap."""

    class Started(nb.train.Callback):
        def on_fit_start(self, trainer: nb.Trainer, history: nb.History) -> None:
            if started is not None:
                started[trainer.precision].set()
                for event in started.values():
                    assert event.wait(60)

        def on_step_end(self, trainer: nb.Trainer, history: nb.History) -> None:
            time.sleep(0)  # let the thread that changes the default run

    trainer.fit(x, t, epochs=4, batch_size=30, seed=0, progress=False, callbacks=[Started()])
    return np.concatenate([np.asarray(p.data).ravel() for p in trainer.model.parameters()])


def test_concurrent_fits_in_four_precisions_while_the_default_changes(
    fast_switching: None,
) -> None:
    """The report's scenario: four training threads (one on the float64 process default,
    three with their own precision) while another thread sets the process default to
    mixed16 and back. Each ends bitwise where it ends alone."""
    nb.set_backend("numpy")
    nb.set_default_dtype("float64")
    precisions = [None, "float32", "mixed16", "float16"]
    reference = {p: _policy_fit(*_policy_trainer(p)) for p in precisions}
    runs = {p: _policy_trainer(p) for p in precisions}
    started = {p: threading.Event() for p in precisions}
    results: dict[str | None, np.ndarray] = {}
    errors: list[BaseException] = []
    done = threading.Event()

    def fitter(precision: str | None) -> None:
        try:
            results[precision] = _policy_fit(*runs[precision], started)
        except BaseException as exc:
            errors.append(exc)
            started[precision].set()

    def switcher() -> None:
        for event in started.values():
            event.wait(60)
        rng = random.Random(0)
        while not done.is_set():
            nb.set_default_dtype(rng.choice(("mixed16", "float32", "float16")))

    threads = [threading.Thread(target=fitter, args=(p,)) for p in precisions]
    switching = threading.Thread(target=switcher)
    switching.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    done.set()
    switching.join(timeout=60)
    if errors:
        raise errors[0]
    for precision in precisions:
        assert results[precision].dtype == reference[precision].dtype, precision
        assert np.array_equal(results[precision], reference[precision]), precision
