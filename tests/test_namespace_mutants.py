"""The creation functions of ``nb.namespace()`` (issue #21: mutation testing of namespace.py
left most of their arguments unchecked): an explicit dtype or device wins over the defaults,
the standard's defaults (``step=1``, ``endpoint=True``, ``k=0``) are kept, ``copy`` is passed
on, and integer fills stay integers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import registry


def _host(a: Any) -> np.ndarray:
    return np.array(registry.get(registry.backend_of(a)).to_host(a), copy=True)


def _other_float(xp: Any, dtype: str) -> Any:
    return xp.float32 if dtype == "float64" else xp.float64


def test_an_explicit_dtype_wins_over_the_default(xp: Any, dtype: str) -> None:
    other = _other_float(xp, dtype)
    made = {
        "zeros": xp.zeros((2,), dtype=other),
        "ones": xp.ones((2,), dtype=other),
        "empty": xp.empty((2,), dtype=other),
        "full": xp.full((2,), 1.5, dtype=other),
        "arange": xp.arange(0.0, 2.0, 0.5, dtype=other),
        "linspace": xp.linspace(0.0, 1.0, 3, dtype=other),
        "eye": xp.eye(2, dtype=other),
        "asarray": xp.asarray([1.5], dtype=other),
    }
    for name, array in made.items():
        assert array.dtype == other, name
    default = getattr(xp, dtype)
    for name, array in {
        "zeros": xp.zeros((2,)), "ones": xp.ones((2,)), "empty": xp.empty((2,)),
        "full": xp.full((2,), 1.5), "linspace": xp.linspace(0, 1, 3), "eye": xp.eye(2),
        "asarray": xp.asarray([1.5]),
    }.items():  # fmt: skip
        assert array.dtype == default, name
    assert xp.isdtype(xp.full((2,), 3).dtype, "integral")  # an int fill stays an int


def test_the_standards_defaults_are_kept(xp: Any) -> None:
    assert _host(xp.arange(0, 4)).tolist() == [0, 1, 2, 3]  # step 1
    assert _host(xp.linspace(0.0, 1.0, 3)).tolist() == [0.0, 0.5, 1.0]  # endpoint=True
    assert _host(xp.linspace(0.0, 1.0, 2, endpoint=False)).tolist() == [0.0, 0.5]
    assert _host(xp.eye(2)).tolist() == [[1.0, 0.0], [0.0, 1.0]]  # k=0
    assert _host(xp.eye(2, k=1)).tolist() == [[0.0, 1.0], [0.0, 0.0]]


def test_asarray_copy_is_passed_on(backend: str) -> None:
    if backend != "numpy":
        pytest.skip("a NumPy array shares memory with its asarray(copy=False) view")
    xp = nb.namespace("numpy", "float64")
    source = np.array([1.0, 2.0])
    copied = xp.asarray(source, copy=True)
    shared = xp.asarray(source, copy=False)
    source[0] = 9.0
    assert copied[0] == 1.0 and shared[0] == 9.0
    with pytest.raises(ValueError):
        xp.asarray([1.0, 2.0], copy=False)  # a list cannot be used without a copy


def test_an_explicit_device_wins(backend: str) -> None:
    if backend != "array_api_strict":
        pytest.skip("array_api_strict has several devices on any machine")
    import array_api_strict

    xp = nb.namespace("array_api_strict", "float64")
    dev = array_api_strict.Device("device1")
    for name, array in {
        "zeros": xp.zeros((2,), device=dev), "ones": xp.ones((2,), device=dev),
        "empty": xp.empty((2,), device=dev), "full": xp.full((2,), 1.0, device=dev),
        "arange": xp.arange(3, device=dev), "linspace": xp.linspace(0, 1, 3, device=dev),
        "eye": xp.eye(2, device=dev), "asarray": xp.asarray([1.0], device=dev),
    }.items():  # fmt: skip
        assert array.device == dev, name
