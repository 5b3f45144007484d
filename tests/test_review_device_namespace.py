"""Attacker's review of moving arrays and models between backends (``nnbackend.to_device``,
``Module.to``, ``nnbackend.from_dlpack``) and of the dtype-defaulting namespace wrapper
(``nnbackend.namespace()``'s creation functions).

Covered: arrays of every dtype (float64/32/16, bfloat16, ints, bools, complex, strings),
0-d, empty, non-contiguous, reversed, read-only and broadcast arrays, torch views with their
negative or conjugate bit set, jax arrays with and without 64-bit types, memory sharing per
``copy=``, device strings ("cpu", "cuda:0", "gpu", "cuda:-1", "tpu", "", unicode), containers
(dict subclasses, named tuples, sets), modules with optimizers moved mid-training; and the
creation functions (asarray, zeros, ones, empty, full, arange, linspace, eye, fft.fftfreq)
against NumPy with each default dtype, with negative, non-integer, non-finite and impossible
sizes, zero steps and device names.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import registry
from nnbackend.errors import ArgumentError, BackendError, BackendMismatchError, DtypeError


def _require(*names: str) -> None:
    for name in names:
        reason = registry.probe(name)
        if reason is not None:
            pytest.skip(f"backend {name!r} is unavailable: {reason}")


# ------------------------------------------------------------------------------ to_device
def test_jax_without_64_bit_types_refuses_what_it_would_truncate(
    run_python: Callable[..., Any],
) -> None:
    """Moving float64 or int64 arrays (or a float64 model) to jax with 64-bit types off
    silently made float32/int32: 2**40 arrived as 0 and 1e300 as inf."""
    _require("jax")
    result = run_python(
        """
        import numpy as np
        import nnbackend as nb
        from nnbackend import nn
        from nnbackend.errors import DtypeError

        for array in (np.array([2.0**40, 1e300]), np.array([2**40, 3]), np.ones(2, complex)):
            try:
                moved = nb.to_device(array, "jax")
            except DtypeError as exc:
                assert "jax" in str(exc), exc
            else:
                raise AssertionError(f"{array.dtype} became {moved.dtype}: {moved}")
        model = nn.Linear(2, 3)
        weight = model.weight.data
        try:
            model.to("jax")
        except DtypeError:
            pass
        else:
            raise AssertionError("a float64 model moved to jax as float32")
        assert model.weight.data is weight  # the failed move changed nothing
        assert str(nb.to_device(np.ones(2, np.float32), "jax").dtype) == "float32"
        print("ok")
        """,
        env={"JAX_ENABLE_X64": "0"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


@pytest.mark.parametrize("target", ["numpy", "array_api_strict", "jax"])
def test_torch_views_with_negative_or_conjugate_bit_keep_their_values(target: str) -> None:
    """A torch view with its negative bit set (``z.conj().imag``) arrived with the wrong sign
    (DLPack drops the bit); one with its conjugate bit set could not be moved at all."""
    _require("torch", target)
    import torch

    z = torch.tensor([1 + 2j, 3 - 4j]).conj()
    imag = z.imag  # a negative-bit view: values [-2, 4]
    assert imag.is_neg()
    want = np.array([-2.0, 4.0], dtype=np.float32)
    host = registry.get(target).to_host
    assert np.array_equal(np.asarray(host(nb.to_device(imag, target))), want)
    moved = nb.to_device(z, target)
    assert np.array_equal(np.asarray(host(moved)), np.array([1 - 2j, 3 + 4j], np.complex64))
    with pytest.raises(ArgumentError, match="copy=False"):
        nb.to_device(imag, target, copy=False)


def test_jax_array_gets_no_writable_alias() -> None:
    """Moving a jax array to torch shared its buffer: a write into the torch tensor changed
    the (immutable) jax array."""
    _require("jax", "torch")
    import jax.numpy as jnp

    source = jnp.arange(4, dtype=jnp.float32)
    moved = nb.to_device(source, "torch")
    moved[1] = 77.0
    assert np.array_equal(np.asarray(source), np.arange(4, dtype=np.float32))
    with pytest.raises(ArgumentError, match="copy=False"):
        nb.to_device(source, "torch", copy=False)


def test_read_only_memory_behind_a_strict_array_is_not_aliased() -> None:
    """An array_api_strict array over read-only NumPy memory was handed to torch through
    DLPack as writable: a write into the tensor changed the read-only array."""
    _require("array_api_strict", "torch")
    frozen = np.arange(3.0)
    frozen.setflags(write=False)
    strict = nb.namespace("array_api_strict", "float64").asarray(frozen)
    moved = nb.to_device(strict, "torch")
    moved[0] = 42.0
    assert np.array_equal(frozen, np.arange(3.0))


def test_a_dtype_the_target_lacks_is_a_dtype_error() -> None:
    """A torch bfloat16 tensor moved to NumPy failed with a BackendError wrapping torch's
    'Got unsupported ScalarType BFloat16' instead of a DtypeError saying to cast first."""
    _require("torch")
    import torch

    with pytest.raises(DtypeError, match="bfloat16"):
        nb.to_device(torch.ones(2, dtype=torch.bfloat16), "numpy")
    with pytest.raises(DtypeError, match="cast it first"):
        nb.to_device(np.array(["a", "b"]), "torch")


def test_dict_subclasses_keep_their_kind_and_contents() -> None:
    """A Counter came back counting its (key, value) pairs (``Counter({('a', 1): 1})``), and a
    defaultdict failed with a bare TypeError from its constructor."""
    _require("array_api_strict")
    x = np.arange(2.0)
    counter = nb.to_device(collections.Counter(a=1, b=2), "array_api_strict")
    assert type(counter) is collections.Counter and counter == {"a": 1, "b": 2}
    factory = collections.defaultdict(list, {"x": x})
    moved = nb.to_device(factory, "array_api_strict")
    assert type(moved) is collections.defaultdict and moved.default_factory is list
    assert registry.backend_of(moved["x"]) == "array_api_strict"
    assert factory["x"] is x  # the input is unchanged


@pytest.mark.parametrize("value", [{1, 2}, frozenset(), (i for i in range(2)), b"cpu", np.ndarray])
def test_objects_that_cannot_move_raise_a_typed_error(value: Any) -> None:
    """A set, generator, bytes or class passed to to_device raised a bare TypeError."""
    with pytest.raises(BackendMismatchError, match="to_device moves arrays"):
        nb.to_device(value, "numpy")


# ------------------------------------------------------------------------------ namespace
def test_asarray_of_complex_and_float_python_values_is_complex(backend: str) -> None:
    """``xp.asarray([1 + 1j, 2.5])`` failed with a bare TypeError: the float in the list chose
    the real default dtype, which cannot hold the complex value (NumPy makes complex)."""
    xp = nb.namespace(backend, "float32")
    for obj, want in (([1 + 1j, 2.5], [1 + 1j, 2.5]), ([[2.5], [1j]], [[2.5], [1j]])):
        got = xp.asarray(obj)
        assert "complex" in str(got.dtype)
        assert np.array_equal(registry.get(backend).to_host(got), np.array(want))
    assert str(xp.asarray([1.5, 2]).dtype).endswith("float32")  # the default still applies


_SIZE_MISTAKES = [
    ("zeros", lambda xp: xp.zeros(-1), "sizes must be >= 0"),
    ("ones", lambda xp: xp.ones((2, -3)), "sizes must be >= 0"),
    ("empty", lambda xp: xp.empty(2.5), "a shape is an int"),
    ("zeros", lambda xp: xp.zeros(None), "a shape is an int"),
    ("zeros", lambda xp: xp.zeros(2**64), "more than any array can hold"),
    ("empty", lambda xp: xp.empty((2**40, 2**40)), "more than any array can hold"),
    ("full", lambda xp: xp.full(-1, 1.0), "sizes must be >= 0"),
    ("arange", lambda xp: xp.arange(0, 1, 0), "step must be nonzero"),
    ("arange", lambda xp: xp.arange(0.0, 1.0, 0.0), "step must be nonzero"),
    ("arange", lambda xp: xp.arange(float("nan")), "start must be finite"),
    ("arange", lambda xp: xp.arange(0, float("inf")), "stop must be finite"),
    ("linspace", lambda xp: xp.linspace(0, 1, -1), "num must be >= 0"),
    ("linspace", lambda xp: xp.linspace(0, 1, 2.5), "num must be an int"),
    ("eye", lambda xp: xp.eye(-1), "n_rows must be >= 0"),
    ("eye", lambda xp: xp.eye(3, -1), "n_cols must be >= 0"),
    ("eye", lambda xp: xp.eye(2.5), "n_rows must be an int"),
]


@pytest.mark.parametrize(
    ("name", "call", "fragment"),
    _SIZE_MISTAKES,
    ids=[f"{n}-{i}" for i, (n, *_) in enumerate(_SIZE_MISTAKES)],
)
def test_creation_function_mistakes_are_argument_errors(
    backend: str, name: str, call: Callable[[Any], Any], fragment: str
) -> None:
    """Negative, non-integer and impossible sizes, zero steps and non-finite bounds ended in
    the library's bare ValueError, TypeError, RuntimeError or ZeroDivisionError."""
    if backend == "jax" and call is _SIZE_MISTAKES[5][1]:
        # XLA aborts the whole process compiling a shape whose size overflows int64, before
        # the wrapper sees any error (reported; needs a check before the call).
        pytest.skip("jax aborts the process on a shape whose size overflows int64")
    xp = nb.namespace(backend, "float32")
    with pytest.raises(ArgumentError, match=fragment) as excinfo:
        call(xp)
    assert str(excinfo.value).startswith(name)


def test_fftfreq_mistakes_are_argument_errors() -> None:
    """``xp.fft.fftfreq(0)`` and ``fftfreq(4, d=0.0)`` on NumPy raised a bare
    ZeroDivisionError."""
    xp = nb.namespace("numpy", "float32")
    with pytest.raises(ArgumentError, match="n must be >= 1"):
        xp.fft.fftfreq(0)
    with pytest.raises(ArgumentError, match="d must be nonzero"):
        xp.fft.rfftfreq(4, d=0.0)


def test_device_names_in_creation_functions() -> None:
    """A device name where the library takes only device objects failed deep inside (jax:
    AttributeError "'str' object has no attribute '_is_concrete'"; array_api_strict: a bare
    ValueError): now the name is looked up, and a bad one is a BackendError."""
    _require("array_api_strict")
    xp = nb.namespace("array_api_strict", "float64")
    assert "device1" in str(xp.zeros(2, device="device1").device)
    assert "CPU_DEVICE" in str(xp.full(2, 1.5, device="cpu").device)
    with pytest.raises(BackendError, match="bad device 'cuda'"):
        xp.ones(2, device="cuda")
    with pytest.raises(BackendError, match="bad device 'gpu'"):
        nb.namespace("numpy", "float64").eye(2, device="gpu")
    if registry.probe("jax") is None:
        jx = nb.namespace("jax", "float32")
        assert "cpu" in str(jx.zeros(2, device="cpu").device).lower()
        with pytest.raises(BackendError, match="bad device 'tpu'"):
            jx.arange(3, device="tpu")


def test_full_with_a_fill_value_too_large_for_the_dtype() -> None:
    """``xp.full(3, 1e10)`` with float16 as default on torch raised torch's bare
    RuntimeError 'value cannot be converted to type c10::Half without overflow'."""
    _require("torch")
    xp = nb.namespace("torch", "float16")
    with pytest.raises(ArgumentError, match="does not fit in float16"):
        xp.full((3,), 1e10)
    assert bool(xp.all(xp.full((3,), float("inf")) == float("inf")))
