"""Review of the third-party backend API and of nnbackend.random.

Covered: a plugin backend written as a third party would (array-api-compat's NumPy under a new
name, with an ``Ops`` subclass that overrides little), registered with ``register_backend``,
selected with ``using``, ``set_backend`` and ``NNBACKEND``, and used to train an MLP with the
Trainer and Adam; malformed records (bad names, fields of the wrong kind, an ``ops`` class not
derived from ``Ops``), names that are device names, ``replace=`` naming no backend,
unregistering a backend still selected or one registered over a built-in, entry points (a
malformed ``entry_points.txt``, a plugin still importing in another thread), threads
registering at once; and ``nnbackend.random``: NumPy integer seeds, the same seed on every
backend, and odd arguments (negative scales, reversed or infinite bounds, float bounds of
``integers``, bounds outside float16, sizes given as arrays, bad probabilities).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import config, nn, optim, registry
from nnbackend.backends.ops import Ops
from nnbackend.errors import ArgumentError, BackendError

PLUGIN = "plugnp"


def _load_namespace() -> Any:
    import array_api_compat.numpy as xp

    return xp


class PluginOps(Ops):
    """A third party's ops class: it overrides one class attribute and nothing else."""

    float16_compute = "float32"


def _record(name: str = PLUGIN, **fields: Any) -> nb.Backend:
    values: dict[str, Any] = {
        "load_namespace": _load_namespace,
        "probe": lambda: None,
        "array_modules": ("numpy",),
        "to_host": np.asarray,
        "from_host": lambda a, device=None: np.asarray(a),
        "ops": PluginOps,
        "description": "NumPy through array-api-compat, as a plugin",
    }
    values.update(fields)
    return nb.Backend(name=name, **values)


@pytest.fixture
def plugin() -> Iterator[nb.Backend]:
    """The plugin registered (it takes NumPy's arrays over, so ``replace="numpy"``)."""
    record = nb.register_backend(_record(), replace="numpy")
    yield record
    if registry.find(PLUGIN) is not None:
        registry.unregister_backend(PLUGIN)


def _train() -> tuple[float, float, type]:
    nb.random.seed(0)
    x, t = nb.datasets.spiral()
    model = nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))
    trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.Adam(model.parameters(), lr=0.05))
    trainer.fit(x, t, epochs=5, batch_size=30, seed=np.int64(0), progress=False)
    loss, accuracy = trainer.evaluate(x, t)
    return loss, accuracy, type(next(model.parameters()).data)


# -- the plugin, used as documented ----------------------------------------------------------


def test_plugin_trains_like_numpy_under_using_and_set_backend(plugin: nb.Backend) -> None:
    """Checked that a plugin backend trains an MLP with the Trainer and Adam to NumPy's
    numbers, selected by using() and by set_backend() (it held)."""
    with nb.using(backend="numpy"):
        expected = _train()
    with nb.using(backend=PLUGIN):
        assert nb.get_backend() == PLUGIN
        assert registry.backend_of(nb.namespace().zeros(1)) == PLUGIN
        got = _train()
    assert got == expected
    nb.set_backend(PLUGIN)
    assert _train() == expected
    with nb.using(backend=PLUGIN, dtype="float16"):
        loss, _, _ = _train()
    assert np.isfinite(loss)


def test_plugin_ops_subclass_is_used(plugin: nb.Backend) -> None:
    """Checked that the engine asks the plugin's own Ops subclass (it held)."""
    from nnbackend.namespace import ops_for

    with nb.using(backend=PLUGIN):
        xp = nb.namespace()
        x = xp.ones(3)
        found = ops_for(registry.get(PLUGIN).load_namespace(), x)
    assert type(found) is PluginOps


def test_plugin_selected_by_environment(plugin: nb.Backend, fresh_settings: Any) -> None:
    """Checked that NNBACKEND selects a registered plugin (it held)."""
    fresh_settings(NNBACKEND=PLUGIN)
    assert nb.get_backend() == PLUGIN
    assert config.sources()["backend"] == (PLUGIN, "from NNBACKEND")


# -- malformed records -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", " ", "my-lib", "a b", "1st", None, 3])
def test_bad_backend_name_raises_backend_error(name: Any) -> None:
    """Backend(name=...) with a name that is not an identifier raised a bare ValueError
    (not nnbackend's BackendError)."""
    with pytest.raises(BackendError, match="Python identifier"):
        _record(name)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("probe", None, "probe must be a function"),
        ("ops", 3, "ops must be a function"),
        ("to_host", "numpy.asarray", "to_host must be a function"),
        ("scatter_add", 1, "scatter_add must be a function or None"),
        ("capabilities", {"float16": False}, "capabilities must be"),
        ("array_modules", ("numpy.core",), "top-level module names"),
        ("array_modules", [3], "top-level module names"),
        ("install_hint", 3, "install_hint must be a str"),
    ],
)
def test_malformed_record_fields_raise_backend_error(field: str, value: Any, fragment: str) -> None:
    """A record with a field of the wrong kind was accepted and failed at first use with a
    bare TypeError or AttributeError deep inside (capabilities={...}: 'dict' object has no
    attribute 'float16'); a dotted array module silently never matched any array."""
    with pytest.raises(BackendError, match=fragment):
        _record("odd", **{field: value})


def test_array_modules_list_is_frozen_to_a_tuple() -> None:
    """A list of array modules stayed a mutable list inside the frozen record."""
    assert _record("listy", array_modules=["listy_mod"]).array_modules == ("listy_mod",)


def test_ops_class_not_derived_from_ops_is_refused() -> None:
    """An ops class that does not derive from Ops was accepted, and training then failed with
    "AttributeError: 'Duck' object has no attribute 'read_only'" from inside the engine."""

    class Duck:
        def __init__(self, xp: Any, record: Any) -> None:
            self.xp = xp

    with pytest.raises(BackendError, match="does not derive from"):
        _record("duck", ops=Duck)


# -- registering -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cuda", "cpu", "gpu", "mps"])
def test_device_names_cannot_be_backend_names(name: str) -> None:
    """A plugin named "cuda" (or "cpu") registered, and then captured the devices of that
    name: using(device="cuda:0") selected the plugin instead of torch's GPU, and
    using(backend="torch", device="cuda:0") was refused as "belongs to backend 'cuda'"."""
    with pytest.raises(BackendError, match="device name"):
        nb.register_backend(_record(name, array_modules=()))
    assert name not in nb.backends()


@pytest.mark.parametrize("replace", ["", "nmupy"])
def test_replace_naming_no_backend_is_refused(replace: str) -> None:
    """register_backend(record, replace="") (or a misspelt name) silently replaced the
    built-in numpy record of the same name, as replace=True does."""
    builtin = registry.get("numpy")
    with pytest.raises(BackendError, match="names no registered backend"):
        nb.register_backend(_record("numpy", array_modules=()), replace=replace)
    assert registry.get("numpy") is builtin
    assert registry.backend_of(np.zeros(1)) == "numpy"


def test_registering_twice() -> None:
    """Checked: the same record twice is a no-op, another record of a taken name is refused
    (it held)."""
    record = _record("twice", array_modules=())
    assert nb.register_backend(record) is nb.register_backend(record)
    with pytest.raises(BackendError, match="already registered"):
        nb.register_backend(_record("twice", array_modules=()))


def test_unregistered_backend_still_selected_says_so(plugin: nb.Backend) -> None:
    """Unregistering the backend set_backend() had selected left every later call failing
    with "unknown backend 'plugnp'", not saying that it had been unregistered nor how to
    choose another."""
    nb.set_backend(PLUGIN)
    registry.unregister_backend(PLUGIN)
    with pytest.raises(BackendError, match=r"removed by unregister_backend\(\).*set_backend"):
        nb.namespace()
    nb.set_backend("numpy")
    assert registry.backend_of(nb.namespace().zeros(1)) == "numpy"
    nb.register_backend(_record(), replace="numpy")  # registered again: usable again
    with nb.using(backend=PLUGIN):
        assert nb.namespace().zeros(1).shape == (1,)


def test_unregistering_a_record_that_replaced_a_builtin_restores_it() -> None:
    """A record registered over the built-in numpy (replace=True) could never be removed:
    unregister_backend("numpy") said built-ins cannot be unregistered, and the original
    numpy backend was lost for the rest of the process."""
    builtin = registry.get("numpy")
    nb.register_backend(_record("numpy"), replace=True)
    assert registry.get("numpy") is not builtin
    registry.unregister_backend("numpy")
    assert registry.get("numpy") is builtin
    assert registry.backend_of(np.zeros(1)) == "numpy"
    with pytest.raises(BackendError, match="built-in"):
        registry.unregister_backend("numpy")


def test_threads_registering_at_once() -> None:
    """Checked: 16 threads registering distinct names all land, and 8 threads registering
    one name with different records leave exactly one winner (it held)."""
    barrier = threading.Barrier(24)
    errors: list[BaseException] = []
    wins: list[nb.Backend] = []

    def distinct(i: int) -> None:
        barrier.wait()
        nb.register_backend(_record(f"thread_{i}", array_modules=(f"thread_mod_{i}",)))

    def same() -> None:
        record = _record("contended", array_modules=())
        barrier.wait()
        try:
            wins.append(nb.register_backend(record))
        except BackendError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=distinct, args=(i,)) for i in range(16)]
    threads += [threading.Thread(target=same) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {f"thread_{i}" for i in range(16)} <= set(nb.backends())
    assert len(wins) == 1 and len(errors) == 7
    assert registry.get("contended") is wins[0]


# -- entry points ----------------------------------------------------------------------------

SLOW_PLUGIN = """
import time
import array_api_compat.numpy, numpy
from nnbackend import Backend

time.sleep(1.0)  # a plugin importing a large library
BACKEND = Backend(
    name="slow", load_namespace=lambda: array_api_compat.numpy, probe=lambda: None,
    array_modules=(), to_host=numpy.asarray, from_host=lambda a, device=None: a,
)
"""

RACE_CHECK = """
import json, threading, time
import nnbackend as nb
from nnbackend import registry

out = {}
def lister():
    out["listed"] = nb.backends()
def getter():
    time.sleep(0.3)  # while the lister's thread imports the plugin
    try:
        out["got"] = registry.get("slow").name
    except Exception as exc:
        out["got"] = f"{type(exc).__name__}: {exc}"
threads = [threading.Thread(target=lister), threading.Thread(target=getter)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(out))
"""


def _dist(root: Path, name: str, entry_points: str) -> None:
    dist = root / f"{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(entry_points)


def test_plugin_being_imported_by_another_thread_is_waited_for(
    tmp_path: Path, run_python: Callable[..., Any]
) -> None:
    """A thread that asked for a plugin backend while another thread was still importing the
    entry points got "unknown backend 'slow'": the loaded flag was set before loading."""
    (tmp_path / "nnb_slow_plugin.py").write_text(SLOW_PLUGIN)
    _dist(tmp_path, "nnb_slow", "[nnbackend.backends]\nslow = nnb_slow_plugin:BACKEND\n")
    proc = run_python(RACE_CHECK, env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["got"] == "slow"
    assert "slow" in out["listed"]


MALFORMED_CHECK = """
import json
import nnbackend as nb

out = {}
try:
    out["first"] = nb.backends()
except Exception as exc:
    out["first"] = f"{type(exc).__name__}: {exc}"
out["second"] = nb.backends()
out["namespace"] = str(nb.namespace().zeros(1).dtype)
try:
    nb.namespace("nosuch")
except nb.errors.BackendError as exc:
    out["unknown"] = str(exc)
print(json.dumps(out))
"""


def test_malformed_entry_point_metadata_does_not_break_nnbackend(
    tmp_path: Path, run_python: Callable[..., Any]
) -> None:
    """An installed package whose entry_points.txt had a line without "=" made the first
    nb.backends() (or NNBACKEND, or an unknown name) raise a bare TypeError from
    importlib.metadata ("Pair.__new__() missing 1 required positional argument"), and later
    calls silently listed no plugins."""
    _dist(tmp_path, "nnb_malformed", "[nnbackend.backends]\nthis line has no equals sign\n")
    proc = run_python(MALFORMED_CHECK, env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert isinstance(out["first"], list) and out["first"][0] == "numpy"
    assert out["second"] == out["first"]
    assert out["namespace"] == "float64"
    assert "entry points could not be read" in out["unknown"]


# -- nnbackend.random ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [np.int64(3), np.uint32(3), np.int8(3), np.array(3)])
def test_numpy_integer_seeds_are_accepted(seed: Any) -> None:
    """Generator(np.int64(3)) and nb.random.seed(np.int64(3)) raised ArgumentError ("seed
    must be a non-negative int"), where NumPy and torch take NumPy integers; so did
    Trainer.fit(seed=np.int64(0))."""
    expected = nb.random.Generator(3).normal(4)
    np.testing.assert_array_equal(nb.random.Generator(seed).normal(4), expected)
    nb.random.seed(seed)
    np.testing.assert_array_equal(nb.random.normal(4), expected)


@pytest.mark.parametrize("seed", [True, np.True_, -1, np.int64(-1), 3.0, "3", [3]])
def test_bad_seeds_still_refused(seed: Any) -> None:
    """Checked that bools, negatives, floats and strings stay refused (it held)."""
    with pytest.raises(ArgumentError, match="seed must be"):
        nb.random.Generator(seed)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda g: g.normal(3, scale=-1.0), "scale < 0"),
        (lambda g: g.normal(3, loc="a"), "could not convert"),
        (lambda g: g.normal((10**10, 10**10)), "too big"),
        (lambda g: g.uniform(3, 1.0, 0.0), "high - low < 0"),
        (lambda g: g.uniform(3, 0.0, float("inf")), "outside the range of float64"),
        (lambda g: g.uniform(3, float("nan"), 1.0), "low is NaN"),
        (lambda g: g.uniform(3, -1e308, 1e308), "range exceeds"),
        (lambda g: g.integers(0), "high <= 0"),
        (lambda g: g.integers(5, 2), "low >= high"),
        (lambda g: g.integers(2**70), "out of bounds for int64"),
        (lambda g: g.choice(0), "positive integer"),
        (lambda g: g.choice(3, p=[0.5, 0.6, 0.1]), "do not sum to 1"),
        (lambda g: g.choice(3, p=[0.5, 0.5]), "same size"),
        (lambda g: g.choice(3, size=5, replace=False), "larger sample"),
    ],
)
def test_bad_draw_arguments_raise_argument_error(call: Callable[[Any], Any], fragment: str) -> None:
    """normal(scale=-1), uniform(low > high), uniform(high=inf), integers(0), choice with bad
    probabilities ... raised NumPy's bare ValueError or OverflowError."""
    with pytest.raises(ArgumentError, match=fragment):
        call(nb.random.Generator(0))


@pytest.mark.parametrize("bound", [2.9, np.float64(2.9), "3", True])
def test_integers_refuses_non_integer_bounds(bound: Any) -> None:
    """integers(2.9) silently truncated the bound (values 0 and 1 only; torch.randint
    raises), and integers("a") raised a bare ValueError from int()."""
    with pytest.raises(ArgumentError, match="low must be an int"):
        nb.random.Generator(0).integers(bound, size=3)
    with pytest.raises(ArgumentError, match="high must be an int"):
        nb.random.Generator(0).integers(0, bound, size=3)


def test_uniform_bounds_outside_float16_are_refused() -> None:
    """uniform(0, 1e6, dtype="float16") returned values piled up at 65504 (every draw above
    float16's largest value became inf, then was pulled below high), with only a NumPy
    overflow warning; torch raises."""
    with pytest.raises(ArgumentError, match="outside the range of float16"):
        nb.random.Generator(0).uniform(1000, 0.0, 1e6, dtype="float16")
    top = nb.random.Generator(0).uniform(1000, 64992.0, 65504.0, dtype="float16")
    assert float(top.max()) < 65504.0 and float(top.min()) >= 64992.0


def test_size_may_be_an_integer_array() -> None:
    """size=np.array([2, 3]) (which NumPy takes) was refused with "size must be a
    non-negative int", although a tuple is allowed too."""
    got = nb.random.Generator(0).normal(np.array([2, 3]))
    np.testing.assert_array_equal(got, nb.random.Generator(0).normal((2, 3)))
    with pytest.raises(ArgumentError, match="size must be"):
        nb.random.Generator(0).normal(np.array([[2, 3]]))
    with pytest.raises(ArgumentError, match="size must be"):
        nb.random.Generator(0).normal("23")


@pytest.mark.parametrize("size", [(), 0, (0,), (2, 0), (1, 1, 1)])
def test_odd_sizes(size: Any) -> None:
    """Checked that empty and scalar sizes give NumPy's shapes (it held)."""
    got = nb.random.Generator(0).uniform(size, dtype="float32")
    assert got.shape == np.random.default_rng(0).uniform(size=size).shape
    assert got.dtype == np.float32


@pytest.mark.parametrize("other", ["torch", "array_api_strict", PLUGIN])
def test_same_seed_same_values_on_every_backend(other: str, plugin: nb.Backend) -> None:
    """Checked that one seed gives bit-identical draws on numpy, torch, array_api_strict and
    a plugin backend (it held)."""
    reason = registry.probe(other)
    if reason is not None:
        pytest.skip(reason)

    def draws(backend: str) -> list[np.ndarray]:
        with nb.using(backend=backend, dtype="float32"):
            gen = nb.random.Generator(np.int64(7))
            record = registry.get(backend)
            return [
                np.asarray(record.to_host(a))
                for a in (gen.normal((3, 2)), gen.uniform(5), gen.integers(0, 9, 4))
            ]

    for ours, theirs in zip(draws("numpy"), draws(other), strict=True):
        np.testing.assert_array_equal(ours, theirs)
        assert ours.dtype == theirs.dtype
