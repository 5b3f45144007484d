"""Name normalisation and error messages of config.py (issue #21: mutation testing left the
dtype aliases, dtype objects of each library, policy aliases and the messages unchecked)."""

from __future__ import annotations

from collections.abc import Callable

import array_api_strict
import numpy as np
import pytest

import nnbackend as nb
from nnbackend import config
from nnbackend.errors import ArgumentError, BackendError, DtypeError
from nnbackend.precision import Policy


@pytest.mark.parametrize(
    ("given", "name"),
    [("half", "float16"), ("SINGLE", "float32"), (" Double ", "float64"), ("f2", "float16"),
     ("F4", "float32"), ("f8", "float64"), ("Float32", "float32"),
     (np.float16, "float16"), (np.dtype("float32"), "float32"), (np.float64, "float64"),
     ("torch.float32", "float32"), ("torch.float16", "float16"),
     (array_api_strict.float32, "float32"), (array_api_strict.float64, "float64")],
)  # fmt: skip
def test_dtype_names_aliases_and_objects(given: object, name: str) -> None:
    if isinstance(given, str) and given.startswith("torch."):
        torch = pytest.importorskip("torch")
        given = getattr(torch, given.partition(".")[2])
    assert config.normalize_dtype(given) == name
    assert config.normalize_policy(given) == name


@pytest.mark.parametrize("given", ["mixed16", "MIXED", " Mixed_Float16 ", "mixed-float16"])
def test_policy_aliases(given: str) -> None:
    assert config.normalize_policy(given) == "mixed16"
    assert config.normalize_policy(Policy.named(given)) == "mixed16"  # a Policy object


def test_dtype_errors_name_the_variable_and_every_valid_choice() -> None:
    with pytest.raises(DtypeError) as info:
        config.normalize_dtype("int8", variable="NNBACKEND_DTYPE")
    assert str(info.value) == (
        "unknown default dtype 'int8' in NNBACKEND_DTYPE; expected one of "
        "'float64', 'float32', 'float16'"
    )
    with pytest.raises(DtypeError) as info:
        config.normalize_dtype("int8")
    assert str(info.value).startswith("unknown default dtype 'int8'; expected")
    with pytest.raises(DtypeError) as info:
        config.normalize_policy("bf16", variable="NNBACKEND_DTYPE")
    assert str(info.value) == (
        "unknown default dtype 'bf16' in NNBACKEND_DTYPE; expected one of 'float64', "
        "'float32', 'float16', 'mixed16' (a dtype or a precision policy)"
    )
    with pytest.raises(DtypeError) as info:
        config.normalize_policy("bf16")
    assert "'bf16'; expected" in str(info.value)


def test_flag_errors_list_the_accepted_values() -> None:
    with pytest.raises(ArgumentError) as info:
        config._parse_flag("maybe", "NNBACKEND_CHECK_DTYPES")
    assert str(info.value) == (
        "NNBACKEND_CHECK_DTYPES='maybe': expected one of '1', 'true', 'yes', 'on', '0', "
        "'false', 'no', 'off'"
    )
    assert config._parse_flag("", "X") is False


def test_bad_environment_names_the_variable(fresh_settings: Callable[..., None]) -> None:
    """The environment's errors say which variable to fix."""
    fresh_settings(NNBACKEND="bogus")
    with pytest.raises(BackendError, match="NNBACKEND"):
        nb.get_backend()
    fresh_settings(NNBACKEND=None, NNBACKEND_DTYPE="float128")
    with pytest.raises(DtypeError, match="in NNBACKEND_DTYPE"):
        nb.get_default_dtype()
    fresh_settings(NNBACKEND_DTYPE=None, NNBACKEND_CHECK_DTYPES="maybe")
    with pytest.raises(ArgumentError, match=r"^NNBACKEND_CHECK_DTYPES='maybe'"):
        nb.get_default_dtype()


def test_the_device_source_is_reported() -> None:
    assert config.sources()["device"] == ("default", config.SOURCE_BUILTIN)
    with nb.using(backend="numpy", device="cpu"):
        assert config.sources()["device"] == ("cpu", config.SOURCE_USING)
