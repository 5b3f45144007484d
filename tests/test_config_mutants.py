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


# ------------------------------------------------------------------------------- the dtype guard
@pytest.mark.parametrize(
    ("value", "on"),
    [("1", True), ("True", True), (" YES ", True), ("On", True), ("0", False), ("FALSE", False),
     ("No", False), (" off", False), ("", False), (None, False)],
)  # fmt: skip
def test_the_check_dtypes_variable_is_read_case_blind(
    fresh_settings: Callable[..., None], value: str | None, on: bool
) -> None:
    """``NNBACKEND_CHECK_DTYPES`` (unset = off) decides the guard while no process setting
    or ``using`` block does; it is read at the first use, like the other variables."""
    config.set_check_dtypes(None)
    fresh_settings(NNBACKEND_CHECK_DTYPES=value)
    assert config.check_dtypes_enabled() is on
    assert config.engine_switch.maybe is on


def test_the_check_dtypes_precedence(fresh_settings: Callable[..., None]) -> None:
    """using(check_dtypes=...) > set_check_dtypes() > NNBACKEND_CHECK_DTYPES."""
    for env, process in (("1", False), ("0", True)):
        fresh_settings(NNBACKEND_CHECK_DTYPES=env)
        config.set_check_dtypes(process)
        assert config.check_dtypes_enabled() is process
        with nb.using(backend="numpy"):  # a block that says nothing about the guard
            assert config.check_dtypes_enabled() is process
        with nb.using(check_dtypes=not process):
            assert config.check_dtypes_enabled() is (not process)
            with nb.using(dtype="float32"):  # inherited from the outer block
                assert config.check_dtypes_enabled() is (not process)
        config.set_check_dtypes(None)
        assert config.check_dtypes_enabled() is (env == "1")
    config.set_check_dtypes(0)  # any false value
    assert config.check_dtypes_enabled() is False
    config.set_check_dtypes(1)
    assert config.check_dtypes_enabled() is True


def test_the_engine_switch_is_off_only_when_no_check_can_be_on(
    fresh_settings: Callable[..., None],
) -> None:
    """``engine_switch.maybe`` is the one flag each op reads: it must be on whenever the guard or
    anomaly detection is on anywhere, and off otherwise (so ops skip the context read)."""
    from nnbackend.autograd.anomaly import detect_anomaly

    fresh_settings(NNBACKEND_CHECK_DTYPES="0")
    config.set_check_dtypes(None)
    assert config.engine_switch.maybe is True  # the environment is not read yet
    config.check_dtypes_enabled()
    assert config.engine_switch.maybe is False
    with nb.using(check_dtypes=True):
        assert config.engine_switch.maybe is True
    assert config.engine_switch.maybe is False
    with detect_anomaly():
        assert config.engine_switch.maybe is True
    assert config.engine_switch.maybe is False
    config.set_check_dtypes(True)
    assert config.engine_switch.maybe is True
    config.set_check_dtypes(False)
    assert config.engine_switch.maybe is False
    fresh_settings(NNBACKEND_CHECK_DTYPES="1")
    config.check_dtypes_enabled()
    assert config.engine_switch.maybe is False  # set_check_dtypes(False) wins over the variable
    config.set_check_dtypes(None)
    assert config.engine_switch.maybe is True


# ------------------------------------------------------------------------------- names, versions
def test_dtype_objects_are_named_by_their_name_attribute_first() -> None:
    """A byte-swapped NumPy dtype prints as '>f4' but is named float32; a dtype printed with
    a module path ("some.library.float32") is named by its last part."""
    assert config.normalize_dtype(np.dtype(">f4")) == "float32"

    class Printed:
        def __str__(self) -> str:
            return "some.library.float16"

    assert config.normalize_dtype(Printed()) == "float16"


def test_compute_dtype_of_each_policy() -> None:
    assert [config.compute_dtype(p) for p in config.POLICIES] == [
        "float64", "float32", "float16", "float16"
    ]  # fmt: skip
    assert [config.array_dtype(p) for p in config.POLICIES] == [
        "float64", "float32", "float16", "float32"
    ]  # fmt: skip


def test_a_backend_that_is_not_a_name_is_refused_with_its_type() -> None:
    with pytest.raises(BackendError, match=r"\(a str\), got int$"):
        nb.set_backend(3)  # type: ignore[arg-type]


def test_every_settings_change_gives_a_new_version(fresh_settings: Callable[..., None]) -> None:
    """``namespace()`` trusts its cached namespace while the version is unchanged: a change
    that repeated an old version would hand back a namespace of old settings."""
    seen = [config._Process.version]
    fresh_settings(NNBACKEND="array_api_strict")
    seen.append(config._Process.version)
    assert nb.get_backend() == "array_api_strict"  # reads the environment
    seen.append(config._Process.version)
    nb.set_default_dtype("float32")
    seen.append(config._Process.version)
    nb.set_backend("numpy")
    seen.append(config._Process.version)
    assert seen == sorted(set(seen)), seen
    xp = nb.namespace()
    nb.set_default_dtype("float64")
    nb.set_backend("array_api_strict")
    assert nb.namespace() is not xp
    assert nb.namespace().__nnbackend__[:2] == ("array_api_strict", "float64")


def test_resolve_with_another_backend_drops_the_blocks_device() -> None:
    with nb.using(backend="array_api_strict", device="device1"):
        assert config.resolve() == ("array_api_strict", "float64", "device1")
        assert config.resolve("array_api_strict") == ("array_api_strict", "float64", "device1")
        assert config.resolve("numpy")[2] is None


def test_a_device_is_read_as_backend_colon_name_only_with_a_colon() -> None:
    """``numpy`` alone is a device name (of the active backend), not a backend; the first
    colon splits ``torch:cuda:0`` into backend torch and device ``cuda:0``."""
    with (
        pytest.raises(BackendError, match=r"bad device 'numpy' for backend 'numpy'"),
        nb.using(device="numpy"),
    ):
        pass
    assert config._split_device("torch:cuda:0", None) == ("torch", "cuda:0")
    assert config._split_device("cuda:0", "torch") == ("torch", "cuda:0")
    with pytest.raises(BackendError) as info:
        config._split_device("numpy:cpu", "torch")
    assert str(info.value) == (
        "device 'numpy:cpu' belongs to backend 'numpy', but backend='torch' was asked for; "
        "drop one of the two"
    )
