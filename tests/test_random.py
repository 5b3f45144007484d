"""nnbackend.random: the same seed gives bit-identical values on every backend and dtype."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend import registry
from nnbackend.errors import DtypeError


def host(backend: str, array: Any) -> np.ndarray:
    """A NumPy copy of a backend array, through the backend record's transfer."""
    return np.asarray(registry.get(backend).to_host(array))


def draws(backend: str, dtype: str, seed: int) -> dict[str, np.ndarray]:
    with nb.using(backend=backend, dtype=dtype):
        gen = nb.random.Generator(seed)
        return {
            "normal": host(backend, gen.normal((3, 4), loc=1.0, scale=2.0)),
            "uniform": host(backend, gen.uniform(7, low=-1.0, high=3.0)),
            "integers": host(backend, gen.integers(0, 10, (5,))),
            "permutation": host(backend, gen.permutation(9)),
        }


def test_same_seed_bit_identical_across_backends(backend: str, dtype: str) -> None:
    reference = draws("numpy", dtype, 1234)
    ours = draws(backend, dtype, 1234)
    for kind, values in ours.items():
        assert values.dtype == reference[kind].dtype, kind
        assert values.shape == reference[kind].shape, kind
        assert values.tobytes() == reference[kind].tobytes(), kind
    # And they are what the host generator gives, rounded once to the target dtype.
    expected = np.random.Generator(np.random.PCG64(1234)).normal(1.0, 2.0, (3, 4)).astype(dtype)
    assert ours["normal"].tobytes() == expected.tobytes()


def test_dtype_follows_active_default(xp: Any, backend: str, dtype: str) -> None:
    gen = nb.random.Generator(0)
    for array in (gen.normal((2, 3)), gen.uniform(4), nb.random.normal(2), nb.random.uniform()):
        assert array.dtype == getattr(xp, dtype)
        assert nb.array_namespace(array).__nnbackend__[0] == backend
    assert tuple(gen.normal((2, 3)).shape) == (2, 3)
    assert tuple(gen.normal().shape) == ()
    explicit = gen.normal(3, dtype="float32")
    assert explicit.dtype == xp.float32


def test_uniform_range_and_integers(xp: Any, backend: str) -> None:
    gen = nb.random.Generator(5)
    u = host(backend, gen.uniform(1000, low=2.0, high=3.0))
    assert ((u >= 2.0) & (u <= 3.0)).all()
    ints = gen.integers(3, 8, (200,))
    assert ints.dtype == xp.int64
    values = host(backend, ints)
    assert values.min() >= 3 and values.max() < 8
    assert set(values.tolist()) == set(range(3, 8))  # 200 draws hit all five
    below = host(backend, gen.integers(4, size=100))
    assert below.min() >= 0 and below.max() < 4


def test_permutation(xp: Any, backend: str) -> None:
    gen = nb.random.Generator(11)
    order = gen.permutation(20)
    assert order.dtype == xp.int64
    assert sorted(host(backend, order).tolist()) == list(range(20))
    rows = xp.reshape(xp.arange(0.0, 12.0), (6, 2))
    shuffled = gen.permutation(rows)
    assert shuffled.dtype == rows.dtype
    assert tuple(shuffled.shape) == (6, 2)
    moved = host(backend, shuffled)
    assert sorted(map(tuple, moved.tolist())) == sorted(map(tuple, host(backend, rows).tolist()))
    # Same seed, same order, whatever the backend.
    again = nb.random.Generator(11)
    again.permutation(20)
    assert host(backend, again.permutation(rows)).tobytes() == moved.tobytes()


def test_module_level_seed_is_global() -> None:
    nb.random.seed(42)
    a = nb.random.normal(5)
    b = nb.random.uniform(3)
    c = nb.random.integers(0, 100, 4)
    d = nb.random.permutation(6)
    nb.random.seed(42)
    assert np.array_equal(nb.random.normal(5), a)
    assert np.array_equal(nb.random.uniform(3), b)
    assert np.array_equal(nb.random.integers(0, 100, 4), c)
    assert np.array_equal(nb.random.permutation(6), d)
    gen = nb.random.Generator(42)
    assert np.array_equal(gen.normal(5), a)
    # One stream: every module-level draw advances it.
    nb.random.seed(42)
    nb.random.normal(5)
    assert np.array_equal(nb.random.uniform(3), b)


def test_different_seeds_differ() -> None:
    assert not np.array_equal(nb.random.Generator(1).normal(8), nb.random.Generator(2).normal(8))


@pytest.mark.parametrize("bad", [-1, 1.5, "7", [1]])
def test_bad_seed(bad: Any) -> None:
    with pytest.raises(ValueError, match="seed"):
        nb.random.Generator(bad)
    with pytest.raises(ValueError, match="seed"):
        nb.random.seed(bad)


def test_unseeded_generator_works() -> None:
    assert tuple(nb.random.Generator().normal((2, 2)).shape) == (2, 2)


def test_float16_on_array_api_strict() -> None:
    with nb.using(backend="array_api_strict", dtype="float16"), pytest.raises(DtypeError):
        nb.random.Generator(0).normal(3)
    with nb.using(backend="array_api_strict"), pytest.raises(DtypeError):
        nb.random.Generator(0).normal(3, dtype="float16")


@given(
    seed=st.integers(0, 2**63),
    shape=st.lists(st.integers(0, 4), max_size=3).map(tuple),
    dtype_name=st.sampled_from(["float64", "float32", "float16"]),
)
def test_same_seed_same_values_property(seed: int, shape: tuple[int, ...], dtype_name: str) -> None:
    with nb.using(dtype=dtype_name):
        a = nb.random.Generator(seed).normal(shape)
        b = nb.random.Generator(seed).normal(shape)
    assert a.dtype == np.dtype(dtype_name)
    assert a.shape == shape
    assert a.tobytes() == b.tobytes()
