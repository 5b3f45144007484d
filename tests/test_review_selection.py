"""Review of backend selection and configuration: defects found by attacking the namespace,
the settings, the registry's plugins, the random module and ``from_dlpack``."""

from __future__ import annotations

import asyncio
import subprocess
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import config
from nnbackend.errors import ArgumentError, DtypeError

# -- the namespace takes dtype names in every creation function ---------------------------


@pytest.mark.parametrize("name", ["numpy", "torch", "array_api_strict"])
def test_dtype_names_accepted_by_every_creation_function(name: str) -> None:
    """``xp.zeros(3, dtype="float32")`` worked, but ``arange``, ``linspace``, ``eye`` and
    ``fft.fftfreq`` passed the name to torch / array_api_strict, which raised their own
    TypeError / ValueError (config.get_default_dtype() says the namespace takes names)."""
    if nb.registry.probe(name) is not None:
        pytest.skip(nb.registry.probe(name) or "")
    xp = nb.namespace(name, "float64")
    f32 = xp.float32
    assert xp.arange(3, dtype="float32").dtype == f32
    assert xp.arange(0.0, 1.0, 0.25, dtype="float32").dtype == f32
    assert xp.linspace(0, 1, 5, dtype="float32").dtype == f32
    assert xp.eye(3, dtype="float32").dtype == f32
    assert xp.eye(2, 3, k=1, dtype="int64").dtype == xp.int64
    assert xp.fft.fftfreq(4, dtype="float32").dtype == f32
    assert xp.fft.rfftfreq(4, dtype="float32").dtype == f32
    with pytest.raises(DtypeError, match="unknown dtype name 'float33'"):
        xp.eye(3, dtype="float33")


# -- using() blocks ended in any order or context ------------------------------------------


def _block(dtype: str) -> Iterator[str]:
    with nb.using(dtype=dtype):
        yield nb.get_default_dtype()
        yield nb.get_default_dtype()


def test_generator_blocks_closed_out_of_order_do_not_leave_settings_behind() -> None:
    """Two generators each holding a ``using`` block, closed in the order they were opened:
    the second one's exit restored the first one's (already ended) float16 for good."""
    first, second = _block("float16"), _block("float32")
    next(first)
    next(second)
    first.close()
    second.close()
    assert nb.get_default_dtype() == "float64"
    assert nb.namespace().zeros(1).dtype == np.float64


def test_nested_blocks_still_restore_in_order() -> None:
    with nb.using(dtype="float32"):
        with nb.using(backend="array_api_strict"):
            with nb.using(dtype="float16", backend="numpy"):
                assert nb.get_default_dtype() == "float16"
            assert (nb.get_backend(), nb.get_default_dtype()) == ("array_api_strict", "float32")
        with pytest.raises(KeyError), nb.using(dtype="float16"):
            raise KeyError
        assert (nb.get_backend(), nb.get_default_dtype()) == ("numpy", "float32")
    assert (nb.get_backend(), nb.get_default_dtype()) == ("numpy", "float64")


def test_generator_block_closed_by_another_thread_raises_nothing() -> None:
    """A generator holding a ``using`` block, closed (or collected) by another thread: the
    block's exit raised ValueError ("Token ... was created in a different Context")."""
    gen = _block("float16")
    next(gen)
    errors: list[BaseException] = []

    def close() -> None:
        try:
            gen.close()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=close)
    thread.start()
    thread.join()
    assert errors == []


def test_task_keeps_the_block_it_was_created_in_after_that_block_ended() -> None:
    """(A guard for the fix above.) A task copies its creator's settings; the creator's block
    ending first must not take them from the task."""

    async def work() -> tuple[str, str]:
        with nb.using(backend="array_api_strict"):
            pass
        return nb.get_backend(), nb.get_default_dtype()

    async def main() -> tuple[str, str]:
        with nb.using(dtype="float32"):
            task = asyncio.ensure_future(work())
        return await task

    assert asyncio.run(main()) == ("numpy", "float32")


@pytest.mark.parametrize("value", ["no", "false", "0", "off"])
def test_check_dtypes_as_a_string_is_an_error(value: str) -> None:
    """``using(check_dtypes="false")`` turned the dtype guard ON (bool("false") is True)."""
    block = nb.using(check_dtypes=value)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match="check_dtypes"), block:
        pass
    with pytest.raises(ArgumentError):
        config.set_check_dtypes(value)  # type: ignore[arg-type]
    assert config.engine_switch.check_blocks == 0


# -- random -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [2.7, (2.7, 3), -1, (2, -3), True, "3"])
def test_random_size_must_be_non_negative_ints(size: Any) -> None:
    """``normal((2.7, 3))`` silently made a (2, 3) array (int() truncated); ``normal(-1)`` and
    ``normal(2.0)`` raised NumPy's ValueError / TypeError."""
    with pytest.raises(ArgumentError, match="size"):
        nb.random.Generator(0).normal(size)


def test_random_size_takes_numpy_ints() -> None:
    gen = nb.random.Generator(0)
    assert gen.normal(np.int64(2)).shape == (2,)
    assert gen.uniform((np.int64(2), 3)).shape == (2, 3)
    assert gen.permutation(np.int64(4)).shape == (4,)
    with pytest.raises(ArgumentError):
        gen.permutation(2.5)
    with pytest.raises(ArgumentError):
        gen.choice(2.5, 3)


def test_permutation_keeps_the_array_on_its_own_backend_and_device() -> None:
    """Shuffling an array of a backend other than the active one: array_api_strict rows came
    back as a numpy.ndarray, and rows on array_api_strict's device1 raised ValueError."""
    import array_api_strict as strict

    x = strict.reshape(strict.arange(6.0), (3, 2))
    out = nb.random.Generator(0).permutation(x)
    assert type(out) is type(x)
    on_device1 = strict.asarray([1.0, 2.0, 3.0], device=strict.Device("device1"))
    with nb.using(backend="array_api_strict"):
        out = nb.random.Generator(0).permutation(on_device1)
    assert out.device == on_device1.device
    assert sorted(float(v) for v in out) == [1.0, 2.0, 3.0]


# -- from_dlpack --------------------------------------------------------------------------


def test_from_dlpack_rejects_a_copy_that_is_not_a_bool() -> None:
    """``from_dlpack(a, "torch", copy="yes")`` shared a's memory (to_device refuses it)."""
    pytest.importorskip("torch")
    a = np.arange(3.0)
    with pytest.raises(ArgumentError, match="copy"):
        nb.from_dlpack(a, "torch", copy="yes")  # type: ignore[arg-type]


# -- a plugin named by NNBACKEND that reads the settings at import ---------------------------


def test_plugin_named_by_environment_reading_settings_at_import_does_not_hang(
    tmp_path: Path, run_python: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """NNBACKEND=plugin, whose module calls nb.get_default_dtype() at import: reading the
    environment held config's (non-reentrant) lock while importing the plugin, and the
    plugin's read took it again: the process hung."""
    info = tmp_path / "slowplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: slowplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[nnbackend.backends]\nslowplug = slowplug_mod:make\n")
    (tmp_path / "slowplug_mod.py").write_text(
        textwrap.dedent(
            """
            import dataclasses
            import nnbackend as nb
            from nnbackend.backends import numpy as numpy_backend
            DEFAULT = nb.get_default_dtype()
            def make():
                return dataclasses.replace(numpy_backend.BACKEND, name="slowplug", array_modules=())
            """
        )
    )
    code = """
        import nnbackend as nb
        from nnbackend.errors import NNBackendError
        try:
            nb.get_backend()
        except NNBackendError as exc:
            print(type(exc).__name__, exc)
    """
    try:
        done = run_python(
            code, env={"NNBACKEND": "slowplug", "PYTHONPATH": str(tmp_path)}, timeout=30
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the process hung reading NNBACKEND")
    assert done.returncode == 0, done.stderr
    assert "BackendUnavailableError" in done.stdout
    assert "while it was being imported" in done.stdout
