"""Attacker's review of data loading, the data sets, the command line and the info report
(``nnbackend.data``, ``nnbackend.datasets``, ``nnbackend.cli``, ``nnbackend.info``).

Covered: ``DataLoader`` over odd batch sizes, lists, generators, empty and mismatched data
and other backends' arrays; the loaders' arguments (non-int counts, bools, negative seeds,
NaN noise, a test fraction near 1); ``to_backend`` with ragged lists, huge unsigned labels
and integer ``like`` arrays; the download cache (a file in the way of the folder, a folder
that cannot be written, a connection dropped mid-download, truncated or non-gzip files);
the CLI (bad ``--seed``, a closed stdout pipe); ``nnbackend info`` where the active backend
cannot run. Downloads use ``file://`` URLs or a replaced opener (no network).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import cli, datasets, registry
from nnbackend.data import DataLoader
from nnbackend.errors import ArgumentError, DownloadError, DtypeError, ShapeError

FILES = datasets._IDX_FILES


def _host(a: Any) -> np.ndarray:
    if registry.backend_of(a) not in (None, "numpy"):
        return np.asarray(registry.get(registry.backend_of(a)).to_host(a))
    return np.asarray(a)


def _idx(array: np.ndarray) -> bytes:
    header = (0x800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def _fake_mnist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: bytes | None = None
) -> Path:
    """A fake "mnist" served from a file:// folder (its first file replaced by ``first``)."""
    blobs = {
        FILES[0]: _idx(np.zeros((2, 2, 2))) if first is None else first,
        FILES[1]: _idx(np.array([0, 1])),
        FILES[2]: _idx(np.zeros((1, 2, 2))),
        FILES[3]: _idx(np.array([1])),
    }
    server = tmp_path / "server"
    server.mkdir()
    for name, blob in blobs.items():
        (server / name).write_bytes(blob)
    sums = tuple(hashlib.sha256(blobs[name]).hexdigest() for name in FILES)
    monkeypatch.setitem(datasets._IMAGE_SETS, "mnist", ((server.as_uri() + "/",), sums))
    return server


# -- DataLoader ----------------------------------------------------------------------------


def test_loader_reads_rows_of_another_backends_array(backend: str) -> None:
    """A DataLoader over an array_api_strict array failed with a bare IndexError from its
    one-axis row indexing (and a torch tensor was read one row at a time)."""
    xp = nb.namespace(backend, "float32")
    x_host = np.arange(20, dtype=np.float32).reshape(10, 2)
    t_host = np.arange(10) % 3
    x = xp.asarray(x_host)
    t = xp.asarray(t_host)
    with nb.using(backend="numpy", dtype="float32"):
        batches = list(DataLoader(x, t, batch_size=4, shuffle=False, prefetch=False))
        shuffled = list(DataLoader(x, t, batch_size=4, seed=3))
        reference = list(DataLoader(x_host, t_host, batch_size=4, seed=3))
    assert [tuple(xb.shape) for xb, _ in batches] == [(4, 2), (4, 2), (2, 2)]
    np.testing.assert_array_equal(np.concatenate([_host(xb) for xb, _ in batches]), x_host)
    np.testing.assert_array_equal(np.concatenate([_host(tb) for _, tb in batches]), t_host)
    for (xb, tb), (xr, tr) in zip(shuffled, reference, strict=True):
        np.testing.assert_array_equal(_host(xb), _host(xr))
        np.testing.assert_array_equal(_host(tb), _host(tr))


# -- to_backend ------------------------------------------------------------------------------


def test_to_backend_refuses_unsigned_labels_beyond_int64() -> None:
    """uint64 labels above int64's maximum (``[2**63]``, or a NumPy uint64 array) silently
    wrapped around to negative int64 labels."""
    with pytest.raises(DtypeError, match="int64"):
        nb.to_backend([2**63])
    with pytest.raises(DtypeError, match="int64"):
        nb.to_backend(np.array([1, 2**64 - 1], dtype=np.uint64))
    # Unsigned labels that fit are still taken.
    assert _host(nb.to_backend(np.array([3, 2**62], dtype=np.uint64))).tolist() == [3, 2**62]


def test_to_backend_ragged_list_is_a_shape_error() -> None:
    """A ragged list of rows (``[[1.0], [1.0, 2.0]]``) ended in NumPy's bare ValueError."""
    with pytest.raises(ShapeError, match="one shape"):
        nb.to_backend([[1.0], [1.0, 2.0]])


def test_to_backend_like_an_integer_array() -> None:
    """``to_backend(labels, like=other_labels)`` failed with "unknown default dtype int64"
    (the float dtype was read from an integer ``like``); floats now take the active one."""
    like = np.arange(3)
    labels = nb.to_backend([2, 0, 1], like=like)
    assert _host(labels).tolist() == [2, 0, 1] and str(labels.dtype) == "int64"
    with nb.using(dtype="float32"):
        values = nb.to_backend(np.ones(2), like=like)
    assert str(values.dtype) == "float32"


def test_n_classes_of_an_empty_dataset_is_a_shape_error() -> None:
    """``Dataset(x, t).n_classes`` with no labels raised NumPy's bare "zero-size array"
    ValueError."""
    empty = datasets.Dataset(np.ones((0, 2)), np.zeros(0, dtype=np.int64))
    with pytest.raises(ShapeError, match="no labels"):
        _ = empty.n_classes


# -- the loaders' arguments ----------------------------------------------------------------


def test_digits_keeps_every_class_in_the_training_set() -> None:
    """``digits(test_fraction=0.999)`` silently returned an empty training set (every row
    went to the test set), though the docstring promises both sets hold every digit."""
    pytest.importorskip("sklearn")
    (x, t), (x_test, _) = datasets.digits(test_fraction=0.999)
    assert sorted(set(_host(t).tolist())) == list(range(10))
    assert x.shape[0] == 10 and x.shape[0] + x_test.shape[0] == 1797


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: datasets.spiral(1.5), "n_per_class"),
        (lambda: datasets.spiral("3"), "n_per_class"),
        (lambda: datasets.spiral(None), "n_per_class"),
        (lambda: datasets.spiral(True), "n_per_class"),
        (lambda: datasets.spiral(n_classes=2.0), "n_classes"),
        (lambda: datasets.spiral(seed=-1), "seed"),
        (lambda: datasets.spiral(seed=2**40), "seed"),
        (lambda: datasets.spiral(seed=1.5), "seed"),
        (lambda: datasets.spiral(noise=float("nan")), "noise"),
        (lambda: datasets.spiral(noise=-0.1), "noise"),
        (lambda: datasets.xor(1.5), "n_per_corner"),
        (lambda: datasets.xor(2, noise=-1.0), "noise"),
        (lambda: datasets.xor(2, noise=float("inf")), "noise"),
        (lambda: datasets.xor(2, noise="a"), "noise"),
        (lambda: datasets.xor(2, noise=0.1, seed=-1), "seed"),
        (lambda: datasets.digits("0.2"), "test_fraction"),
        (lambda: datasets.digits(seed=-1), "seed"),
    ],
)
def test_loader_arguments_are_typed_errors(call: Any, match: str) -> None:
    """Non-integer counts (``spiral(1.5)``, ``spiral("3")``) raised bare TypeErrors, bools
    and ``xor(1.5)`` were taken silently, negative seeds and noise raised NumPy's bare
    ValueErrors, and NaN or infinite noise gave all-NaN data without a word."""
    with pytest.raises(ArgumentError, match=match):
        call()


def test_loader_arguments_still_take_numpy_integers() -> None:
    """(Guard for the checks above: NumPy integers are ints.)"""
    assert datasets.spiral(np.int64(4), np.int32(2), seed=np.uint32(7)).x.shape == (8, 2)
    assert datasets.xor(np.int64(2), noise=np.float32(0.1), seed=np.int64(1)).x.shape == (8, 2)


# -- the download cache ----------------------------------------------------------------------


def test_a_file_in_the_way_of_the_cache_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file where the cache folder should be raised a bare FileExistsError or
    NotADirectoryError from mkdir, with no hint about NNBACKEND_CACHE."""
    _fake_mnist(tmp_path, monkeypatch)
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(DownloadError, match=datasets.CACHE_ENV):
        datasets.mnist()
    (tmp_path / "cache2").mkdir()
    (tmp_path / "cache2" / "mnist").write_text("not a folder")
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "cache2"))
    with pytest.raises(DownloadError, match="cache folder"):
        datasets.mnist()


def test_a_cache_folder_that_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only cache folder raised a bare PermissionError from the temporary file."""
    _fake_mnist(tmp_path, monkeypatch)
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "cache"))

    def refuse(*args: Any, dir: Any = None, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # as root, chmod cannot refuse
    with pytest.raises(DownloadError, match="cannot write") as info:
        datasets.mnist()
    assert datasets.CACHE_ENV in str(info.value)


class _Dropped:
    """A response whose connection closes mid-file."""

    def __enter__(self) -> _Dropped:
        return self

    def __exit__(self, *args: Any) -> None:
        return None

    def read(self, *args: Any) -> bytes:
        raise http.client.IncompleteRead(b"abc", 100)


def test_a_connection_dropped_mid_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection that closed mid-file raised http.client.IncompleteRead (not an OSError),
    bare, instead of the DownloadError with the manual command; nothing is left behind."""
    _fake_mnist(tmp_path, monkeypatch)
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "cache"))

    monkeypatch.setattr(datasets, "_urlopen", lambda *args, **kwargs: _Dropped())
    with pytest.raises(DownloadError, match="IncompleteRead"):
        datasets.mnist()
    assert list((tmp_path / "cache" / "mnist").iterdir()) == []


@pytest.mark.parametrize("kind", ["truncated", "not gzip"])
def test_a_truncated_or_non_gzip_file_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A truncated gzip file raised a bare EOFError, a non-gzip one gzip's BadGzipFile."""
    blob = _idx(np.zeros((2, 2, 2)))[:15] if kind == "truncated" else b"not gzip at all"
    _fake_mnist(tmp_path, monkeypatch, first=blob)
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(DownloadError, match="delete it"):
        datasets.mnist()


# -- the command line and the info report ------------------------------------------------


def test_negative_seed_is_an_option_error_before_anything_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``nnbackend demo --seed -1`` created the --out folder first and then failed with
    "seed must be a non-negative int", not naming --seed."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--seed", "-1", "--out", str(out), "--epochs", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--seed" in err and "non-negative" in err and "Traceback" not in err
    assert not out.exists()


def test_info_into_a_closed_pipe_exits_without_traceback() -> None:
    """``nnbackend info | head -1`` ended in a BrokenPipeError traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNBACKEND")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nnbackend", "info"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the report is written
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_info_flags_an_active_backend_that_cannot_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``nnbackend info`` exited 0 with no problem line when the active backend was not
    usable here (NNBACKEND=cupy without a GPU) or lacked the active dtype (float16 on
    array_api_strict), though every use of it would fail."""
    strict_reason = registry.probe("array_api_strict")
    if strict_reason is not None:
        pytest.skip(f"array_api_strict is unavailable: {strict_reason}")
    nb.set_backend("array_api_strict")
    nb.set_default_dtype("float16")
    report = nb.info()
    assert any("array_api_strict" in p and "float16" in p for p in report.problems)
    assert cli.main(["info"]) == 2
    captured = capsys.readouterr()
    assert "problem: " in captured.out and "nnbackend: error:" in captured.err
    nb.set_default_dtype("float32")
    assert nb.info().problems == ()
    unusable = [name for name in nb.backends() if registry.probe(name) is not None]
    if unusable:
        nb.set_backend(unusable[0])
        problems = nb.info().problems
        assert len(problems) == 1 and registry.probe(unusable[0]) in problems[0]


def test_info_reports_a_launcher_environment_it_cannot_read(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``WORLD_SIZE=abc`` (or ``RANK=5`` of 2) the report printed "engine none, rank 0
    of 1 (from the environment, not joined)" and exited 0: the reason, kept in the JSON's
    world, was in neither the text nor the problems."""
    from nnbackend.distributed import _world

    monkeypatch.setattr(_world, "_current", None)
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "abc")
    monkeypatch.setenv("RANK", "0")
    report = nb.info()
    assert any("WORLD_SIZE='abc'" in p for p in report.problems)
    text = str(report)
    assert "rank 0 of 1" not in text and "WORLD_SIZE='abc'" in text.split("data-parallel")[-1]
    assert cli.main(["info"]) == 2
    assert "WORLD_SIZE='abc'" in capsys.readouterr().err


def test_manual_download_command_quotes_odd_folder_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The offline error's shell command put the cache folder in bare single quotes, so a
    folder named like ``/home/o'brien`` gave a command the shell could not run."""
    import shlex

    cache = tmp_path / "o'brien $HOME"
    monkeypatch.setenv(datasets.CACHE_ENV, str(cache))

    def offline(*args: Any, **kwargs: Any) -> Any:
        raise OSError("offline")

    monkeypatch.setattr(datasets, "_urlopen", offline)
    with pytest.raises(DownloadError) as info:
        datasets.mnist()
    command = str(info.value).splitlines()[-1].strip()
    words = shlex.split(command)
    assert words[:3] == ["mkdir", "-p", str(cache / "mnist")]
    assert words[words.index("cd") + 1] == str(cache / "mnist")


# -- the PTB download (text.corpora), the same weaknesses ----------------------------------


def test_ptb_download_dropped_mid_file_is_a_download_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """text.corpora's download let http.client.IncompleteRead escape bare, and its manual
    command used bare single quotes, which a folder such as o'brien breaks."""
    from nnbackend.text import corpora

    monkeypatch.setenv(corpora.CACHE_ENV, str(tmp_path / "o'brien"))

    monkeypatch.setattr(corpora, "_urlopen", lambda *args, **kwargs: _Dropped())
    with pytest.raises(DownloadError, match="IncompleteRead") as caught:
        corpora.ptb("train")
    command = str(caught.value).split("\n  ", 1)[1]
    folder = str(corpora.text_cache_dir() / "ptb")
    assert shlex.split(command)[2] == folder  # mkdir -p <folder>, quoted as the shell reads it
    assert [p.name for p in (tmp_path / "o'brien" / "ptb").iterdir()] == []


def test_ptb_cache_folder_in_the_way_is_a_download_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file where the PTB cache folder belongs raised a bare FileExistsError."""
    from nnbackend.text import corpora

    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "ptb").write_text("in the way")
    monkeypatch.setenv(corpora.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(DownloadError, match="cannot write into the cache folder"):
        corpora.ptb("train")
