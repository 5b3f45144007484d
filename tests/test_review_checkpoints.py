"""Attacker's review of checkpoints: ``nb.save`` / ``nb.load`` and ``nnbackend.io``'s atomic
writes, metadata, ``.npz`` and safetensors readers.

Covered: round trips of model, optimizer and loss-scaler state across numpy, torch and
array_api_strict in float16/32/64 (both formats); narrowing stores and loads of huge, infinite
and NaN values; a file truncated by another writer while it is being loaded; disk full; saving
through a symlink, over a read-only file, into a folder, to an empty path or one ending in a
separator; arguments that are no path (file objects, None, numbers) or no optimizer."""

from __future__ import annotations

import errno
import io as pyio
import itertools
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import io, nn, optim, registry
from nnbackend.errors import ArgumentError, CheckpointError
from nnbackend.io import safetensors as _st

FORMATS = ("safetensors", "npz")


def _mlp(sizes: list[int], seed: int = 0) -> nn.Sequential:
    nb.random.seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        if i:
            layers.append(nn.Tanh())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, nb.Tensor) else a
    return np.array(registry.get(registry.backend_of(a)).to_host(a), copy=True)


# -- narrowing stores and loads --------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_float64_value_beyond_float32_is_refused_when_stored_as_float32(
    tmp_path: Path, fmt: str
) -> None:
    """save(dtype="float32") turned a float64 1e300 into inf silently (only float16 was
    checked), so the checkpoint held a corrupted weight."""
    model = _mlp([2, 3])
    model[0].weight.data[0, 0] = 1e300
    path = tmp_path / f"m.{fmt}"
    with pytest.raises(CheckpointError, match=r"float32.*1e\+300"):
        nb.save(model, path, dtype="float32")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("fmt", FORMATS)
def test_inf_and_nan_survive_a_narrowing_save_and_load(tmp_path: Path, fmt: str) -> None:
    """A parameter holding inf was refused by save(dtype="float16") ("values up to nan" when it
    held a NaN too), and a float64 file holding inf was refused by a float32 model, though
    float16 and float32 hold inf and NaN exactly."""
    model = _mlp([2, 3])
    w = model[0].weight.data
    w[0, 0], w[0, 1], w[1, 0] = np.inf, np.nan, -np.inf
    path = tmp_path / f"m.{fmt}"
    nb.save(model, path, dtype="float16")
    back = _mlp([2, 3], seed=1)
    nb.load(back, path)
    got = _host(back[0].weight)
    assert got[0, 0] == np.inf and np.isnan(got[0, 1]) and got[1, 0] == -np.inf
    nb.save(model, path)  # float64 as it is
    with nb.using(dtype="float32"):
        narrow = _mlp([2, 3], seed=1)
    nb.load(narrow, path)
    got = _host(narrow[0].weight)
    assert got.dtype == np.float32
    assert got[0, 0] == np.inf and np.isnan(got[0, 1]) and got[1, 0] == -np.inf
    np.testing.assert_allclose(got[1:, 1:], w[1:, 1:].astype(np.float32))


def test_a_finite_overflow_next_to_a_nan_is_named_by_its_value(tmp_path: Path) -> None:
    """The float16 refusal reported the largest |value| over the whole array, which is nan
    when the array holds a NaN, instead of the value that overflows."""
    model = _mlp([2, 3])
    w = model[0].weight.data
    w[0, 0], w[0, 1] = np.nan, 1e6
    with pytest.raises(CheckpointError, match=r"values up to 1e\+06"):
        nb.save(model, tmp_path / "m.safetensors", dtype="float16")


# -- a file changed under the reader ---------------------------------------------------------
def test_a_file_truncated_while_it_is_loaded_is_a_checkpoint_error(run_python: Any) -> None:
    """The safetensors reader memory-mapped the file: another program truncating it (safetensors'
    save_file opens it with "wb") while nb.load read it killed the process with SIGBUS."""
    result = run_python(
        """
        import os, tempfile
        import nnbackend as nb
        from nnbackend import nn
        from nnbackend.errors import CheckpointError
        from nnbackend.io import safetensors as st

        path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
        model = nn.Sequential(nn.Linear(200, 300))
        nb.save(model, path)
        real = st.SafetensorsCheckpoint.array

        def truncated_meanwhile(self, *args, **kwargs):
            with open(path, "r+b") as f:
                f.truncate(200)
            return real(self, *args, **kwargs)

        st.SafetensorsCheckpoint.array = truncated_meanwhile
        try:
            nb.load(model, path)
        except CheckpointError as exc:
            print("refused:", exc)
        """,
        timeout=120,
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert "refused:" in result.stdout and "m.safetensors" in result.stdout


def test_entries_read_from_a_safetensors_file_stay_read_only_copies(tmp_path: Path) -> None:
    """(Companion of the SIGBUS fix.) The arrays handed out are read-only and stay valid after
    the file is closed and removed."""
    path = tmp_path / "t.safetensors"
    with path.open("wb") as f:
        _st.write(f, {"a": np.arange(6.0).reshape(2, 3), "b": np.ones(0)}, {})
    with _st.SafetensorsFile(path) as sf:
        a, b = sf.array("a"), sf.array("b")
    path.unlink()
    assert not a.flags.writeable and np.array_equal(a, np.arange(6.0).reshape(2, 3))
    assert b.shape == (0,)


# -- writing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_disk_full_names_the_file_and_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """A write that failed with ENOSPC raised "[Errno 28] No space left on device" without
    naming the checkpoint, though save's docstring promises that the message names it."""
    path = tmp_path / f"model.{fmt}"
    nb.save(_mlp([2, 3]), path)
    good = path.read_bytes()

    def full(f: Any, *args: Any) -> None:
        f.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    target = (_st, "write") if fmt == "safetensors" else (io._npz, "write_npz")
    monkeypatch.setattr(*target, full)
    with pytest.raises(OSError) as info:
        nb.save(_mlp([2, 3], seed=5), path)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert str(path) in str(info.value) and "No space left" in str(info.value)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_saving_through_a_symlink_writes_its_target(tmp_path: Path) -> None:
    """Saving to a symlink ("latest.safetensors" -> a run's file) replaced the link with a
    regular file, where open() and torch.save write through it to the target."""
    target = tmp_path / "run1.safetensors"
    link = tmp_path / "latest.safetensors"
    nb.save(_mlp([2, 3]), target)
    link.symlink_to(target.name)
    model = _mlp([2, 3], seed=9)
    nb.save(model, link)
    assert link.is_symlink() and os.readlink(link) == target.name
    back = _mlp([2, 3], seed=1)
    nb.load(back, target)
    assert np.array_equal(_host(back[0].weight), _host(model[0].weight))


def test_a_read_only_checkpoint_is_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint made read-only (chmod a-w, to keep the best model) was replaced by the next
    save, since renaming over a file needs no write permission on it; open() and torch.save
    raise PermissionError. (os.access is faked for root, who may write any file.)"""
    path = tmp_path / "best.safetensors"
    nb.save(_mlp([2, 3]), path)
    path.chmod(0o444)
    good = path.read_bytes()
    real_access = os.access

    def access(p: Any, mode: int, **kwargs: Any) -> bool:
        if os.fspath(p) == str(path) and mode & os.W_OK:
            return False
        return real_access(p, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    with pytest.raises(PermissionError, match=r"best\.safetensors.*read-only"):
        nb.save(_mlp([2, 3], seed=3), path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_folder_as_the_path_is_named_in_the_error(tmp_path: Path) -> None:
    """Saving to an existing folder raised IsADirectoryError naming a hidden temporary file
    ('.tmpxyz.host.123.ab12.tmp' -> folder), not the folder given."""
    folder = tmp_path / "runs"
    folder.mkdir()
    with pytest.raises(IsADirectoryError) as info:
        nb.save(_mlp([2, 3]), folder)
    assert ".tmp" not in str(info.value) and str(folder) in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["runs"] and not list(folder.iterdir())


def test_an_empty_path_or_one_ending_in_a_separator_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """save(model, "") raised OSError EBUSY about renaming a temporary onto "."; and
    save(model, "ckpt/") wrote a file named "ckpt" (pathlib drops the slash), where open()
    refuses a path naming a folder."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ArgumentError, match="empty"):
        nb.save(_mlp([2, 3]), "")
    with pytest.raises(IsADirectoryError, match="ckpt/"):
        nb.save(_mlp([2, 3]), "ckpt" + os.sep)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("bad", [pyio.BytesIO(), None, 3, 2.5])
def test_something_that_is_no_path_is_an_argument_error(tmp_path: Path, bad: Any) -> None:
    """A file object, None or a number as the path raised a bare TypeError from os.fspath
    ("expected str, bytes or os.PathLike object") deep inside save/load/read_metadata."""
    model = _mlp([2, 3])
    for call in (
        lambda: nb.save(model, bad),
        lambda: nb.load(model, bad),
        lambda: io.read_metadata(bad),
    ):
        with pytest.raises(ArgumentError, match="path"):
            call()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_bytes_path_saves_and_loads(tmp_path: Path, fmt: str) -> None:
    """save(model, b"model.npz") raised TypeError ("endswith first arg must be bytes"), though
    os.open, numpy.save and torch.save take bytes paths."""
    model = _mlp([2, 3])
    path = os.fsencode(tmp_path / f"model.{fmt}")
    nb.save(model, path)
    assert (tmp_path / f"model.{fmt}").exists()
    back = _mlp([2, 3], seed=2)
    nb.load(back, path)
    assert np.array_equal(_host(back[0].weight), _host(model[0].weight))
    assert io.read_metadata(path)["parameters"]["0.weight"]["shape"] == [2, 3]


def test_an_optimizer_argument_without_state_dict_is_an_argument_error(tmp_path: Path) -> None:
    """save(model, path, optimizer=3) raised AttributeError ('int' object has no attribute
    'state_dict'); load(..., optimizer=3) complained about the file instead of the argument."""
    model = _mlp([2, 3])
    path = tmp_path / "m.safetensors"
    with pytest.raises(ArgumentError, match="optimizer"):
        nb.save(model, path, optimizer=3)
    assert not path.exists()
    nb.save(model, path, optimizer=optim.SGD(model.parameters()))
    with pytest.raises(ArgumentError, match="optimizer"):
        nb.load(model, path, optimizer=3)


@pytest.mark.parametrize("fmt", FORMATS)
def test_loaded_parameters_are_writable_and_train(tmp_path: Path, fmt: str) -> None:
    """The reader's arrays are adopted by the load without a second copy (a 4 MB load took
    14 ms instead of 3): the parameters they become must still be writable and their own, so
    an optimizer step updates them and not the file's data."""
    model = _mlp([3, 4])
    path = tmp_path / f"m.{fmt}"
    nb.save(model, path)
    back = _mlp([3, 4], seed=5)
    nb.load(back, path)
    weight = back[0].weight
    before = _host(weight).copy()
    if isinstance(weight.data, np.ndarray):
        assert weight.data.flags.writeable
    opt = optim.SGD(back.parameters(), lr=0.5)
    loss = (back(nb.namespace().ones((2, 3))) ** 2).sum()
    loss.backward()
    opt.step()
    assert not np.array_equal(_host(back[0].weight), before)
    again = _mlp([3, 4], seed=6)
    nb.load(again, path)  # the file is unchanged by the step
    assert np.array_equal(_host(again[0].weight), before)
