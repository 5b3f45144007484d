"""``nnbackend.datasets.mnist`` / ``fashion_mnist``: download once into the cache folder,
sha256 verification, and the offline error, with small generated IDX files served from
``file://`` URLs or a replaced opener (no network); and the 8x8 digits as images."""

from __future__ import annotations

import gzip
import hashlib
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import datasets, registry
from nnbackend.errors import DownloadError

FILES = datasets._IDX_FILES


def _idx(array: np.ndarray) -> bytes:
    header = (0x800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def _fake_set(folder: Path) -> tuple[dict[str, bytes], tuple[str, ...]]:
    """Four small IDX archives in ``folder``: 5 training and 3 test images of 4x3 pixels."""
    rng = np.random.default_rng(0)
    blobs = {
        FILES[0]: _idx(rng.integers(0, 256, (5, 4, 3))),
        FILES[1]: _idx(np.array([0, 1, 2, 3, 4])),
        FILES[2]: _idx(np.full((3, 4, 3), 255)),
        FILES[3]: _idx(np.array([9, 8, 7])),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in blobs.items():
        (folder / name).write_bytes(blob)
    return blobs, tuple(hashlib.sha256(blobs[name]).hexdigest() for name in FILES)


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A fake "mnist" whose mirror is a file:// folder, and an empty cache folder."""
    blobs, sums = _fake_set(tmp_path / "server")
    monkeypatch.setitem(datasets._IMAGE_SETS, "mnist", ((tmp_path.as_uri() + "/server/",), sums))
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "cache"))
    calls: list[str] = []
    real = datasets._urlopen

    def counting(url: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(url)
        return real(url, *args, **kwargs)

    monkeypatch.setattr(datasets, "_urlopen", counting)
    return {"blobs": blobs, "sums": sums, "calls": calls, "cache": tmp_path / "cache" / "mnist"}


def test_downloads_once_verifies_and_reads_idx(served: dict[str, Any]) -> None:
    (x, t), (x_test, t_test) = nb.datasets.mnist()
    assert len(served["calls"]) == 4
    assert sorted(p.name for p in served["cache"].iterdir()) == sorted(FILES)
    assert tuple(x.shape) == (5, 1, 4, 3) and str(x.dtype) == "float64"
    assert np.asarray(t).tolist() == [0, 1, 2, 3, 4]
    assert np.asarray(t_test).tolist() == [9, 8, 7]
    assert float(np.max(np.asarray(x_test))) == 1.0 and float(np.min(np.asarray(x))) >= 0.0
    # The second call reads the cache: no download.
    (x2, _), _ = nb.datasets.mnist(flatten=True, dtype="float32")
    assert len(served["calls"]) == 4
    assert tuple(x2.shape) == (5, 12) and str(x2.dtype) == "float32"
    np.testing.assert_allclose(np.asarray(x2), np.asarray(x).reshape(5, 12), rtol=1e-7)


def test_a_corrupted_cache_file_is_downloaded_again(served: dict[str, Any]) -> None:
    nb.datasets.mnist()
    (served["cache"] / FILES[1]).write_bytes(b"garbage")
    nb.datasets.mnist()
    assert served["calls"][4:] == [served["calls"][1]]  # only the bad file again
    assert (served["cache"] / FILES[1]).read_bytes() == served["blobs"][FILES[1]]


def test_a_download_with_the_wrong_checksum_is_refused(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    mirrors, sums = datasets._IMAGE_SETS["mnist"]
    monkeypatch.setitem(datasets._IMAGE_SETS, "mnist", (mirrors, ("0" * 64, *sums[1:])))
    with pytest.raises(DownloadError, match="checksum") as info:
        nb.datasets.mnist()
    assert "expected " + "0" * 64 in str(info.value)
    assert list(served["cache"].iterdir()) == []  # nothing half-written is left behind


def test_offline_error_gives_the_manual_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path))

    def offline(url: str, *args: Any, **kwargs: Any) -> Any:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(datasets, "_urlopen", offline)
    with pytest.raises(DownloadError) as info:
        nb.datasets.fashion_mnist()
    message = str(info.value)
    assert "name resolution" in message and "offline" in message
    assert f"mkdir -p '{tmp_path / 'fashion_mnist'}'" in message
    assert "curl -fLO" in message and all(name in message for name in FILES)
    assert isinstance(info.value, OSError)


def test_files_placed_by_hand_are_used_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The offline route the error describes: copy the files into the cache folder."""
    _, sums = _fake_set(tmp_path / "mnist")
    monkeypatch.setitem(datasets._IMAGE_SETS, "mnist", (("https://unreachable.invalid/",), sums))
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path))

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no download expected")

    monkeypatch.setattr(datasets, "_urlopen", no_network)
    (x, _), _ = nb.datasets.mnist()
    assert tuple(x.shape) == (5, 1, 4, 3)


def test_a_file_that_is_not_idx_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 8)  # 1 axis where 3 are expected
    path = tmp_path / "x.gz"
    path.write_bytes(blob)
    with pytest.raises(DownloadError, match="not an IDX file"):
        datasets._read_idx(path, 3)


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(datasets.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datasets.cache_dir() == tmp_path / "xdg" / "nnbackend"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert datasets.cache_dir() == Path.home() / ".cache" / "nnbackend"
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "mine"))
    assert datasets.cache_dir() == tmp_path / "mine"


def test_published_checksums_are_sha256() -> None:
    for mirrors, sums in datasets._IMAGE_SETS.values():
        assert all(m.endswith("/") for m in mirrors)
        assert len(sums) == 4 and all(len(s) == 64 and int(s, 16) >= 0 for s in sums)


def test_digits_as_images(xp: Any, dtype: str) -> None:
    pytest.importorskip("sklearn", reason="digits() needs scikit-learn")
    (x, _), (x_test, _) = nb.datasets.digits(images=True)
    (rows, _), _ = nb.datasets.digits()
    assert tuple(x.shape[1:]) == (1, 8, 8) and x.dtype == xp.asarray(0.0).dtype
    assert x.shape[0] + x_test.shape[0] == 1797
    host = np.asarray(registry.get(registry.backend_of(x)).to_host(x))
    flat = np.asarray(registry.get(registry.backend_of(rows)).to_host(rows))
    np.testing.assert_array_equal(host.reshape(-1, 64), flat)
