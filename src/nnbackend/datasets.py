"""Data sets to learn and test with: the book's spiral, XOR, scikit-learn's 8x8 digits (as
rows or as 1x8x8 images), and MNIST / Fashion-MNIST (downloaded once into a cache folder).

Every loader builds its data on the host and moves it to the active backend (or the one named
by ``nnbackend.using``): inputs in the active default float dtype (or ``dtype=``), labels as
the backend's int64. A loader returns a :class:`Dataset`, a named tuple ``(x, t)``, so
``x, t = nb.datasets.spiral()`` works.

>>> import nnbackend as nb
>>> x, t = nb.datasets.spiral()
>>> tuple(x.shape), str(x.dtype), tuple(t.shape), str(t.dtype)
((300, 2), 'float64', (300,), 'int64')
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import numbers
import operator
import os
import shlex
import shutil
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from nnbackend import config, registry
from nnbackend.autograd.tensor import Tensor
from nnbackend.backends import host
from nnbackend.errors import ArgumentError, DownloadError, DtypeError, ShapeError
from nnbackend.namespace import array_namespace, backend_for, namespace

__all__ = [
    "CACHE_ENV",
    "Dataset",
    "cache_dir",
    "digits",
    "fashion_mnist",
    "mnist",
    "spiral",
    "to_backend",
    "xor",
]


class Dataset(NamedTuple):
    """Inputs ``x`` (shape ``(N, features)``, float) and integer labels ``t`` (shape ``(N,)``),
    both on one backend."""

    x: Any
    t: Any

    @property
    def n_samples(self) -> int:
        """The number of samples (rows of ``x``)."""
        return int(self.x.shape[0])

    @property
    def n_classes(self) -> int:
        """One more than the largest label (reads the labels to the host)."""
        if math.prod(self.t.shape) == 0:
            # max() of no labels was NumPy's bare "zero-size array to reduction" ValueError.
            raise ShapeError("n_classes: the data set has no labels (t is empty)")
        return int(array_namespace(self.t).max(self.t)) + 1


def _like_array(like: Any) -> Any:
    """The array that ``like`` stands for: a Tensor's data, a module's first parameter (or
    ``None`` for a module without parameters), an array itself."""
    params = getattr(like, "parameters", None)
    if callable(params):
        for p in params():
            return p.data
        return None
    return getattr(like, "data", like) if isinstance(like, Tensor) else like


def to_backend(values: Any, dtype: Any = None, *, like: Any = None) -> Any:
    """Put user data (a NumPy array, a memory-mapped array, a list, a Tensor or an array of
    any registered backend) onto a backend, device and dtype, ready for a model.

    Floating values become ``dtype`` (default: ``like``'s dtype, else the active default
    float dtype); integer and boolean values become the backend's int64 (class labels).
    The target backend and device are ``like``'s (an :class:`nnbackend.nn.Module`, whose
    first parameter decides, or an array), else the active ones. An array already there,
    in that dtype, is returned as it is (no copy); anything else is copied once.

    >>> import numpy as np
    >>> import nnbackend as nb
    >>> with nb.using(dtype="float32"):
    ...     x = nb.to_backend(np.ones((4, 2)))  # float64 NumPy data -> float32
    >>> str(x.dtype)
    'float32'

    Raises:
        DtypeError: ``dtype`` is not a floating dtype, or the backend lacks it.
        BackendUnavailableError: the target backend cannot run here.
    """
    np = host.numpy()
    if isinstance(values, Tensor):
        values = values.data
    target_array = None if like is None else _like_array(like)
    if target_array is not None:
        xp, record = backend_for(target_array)
        device = getattr(target_array, "device", None)
        if dtype is not None:
            float_name = config.normalize_dtype(dtype)
        elif xp.isdtype(target_array.dtype, "real floating"):
            float_name = config.normalize_dtype(target_array.dtype)
        else:
            # like= labels (an integer array) decides the backend and device, not the float
            # dtype: reading its int64 as one failed with "unknown default dtype int64".
            float_name = config.get_default_dtype()
        if getattr(xp, float_name, None) is None:
            raise DtypeError(f"backend {record.name!r} has no {float_name}; choose another dtype")
    else:
        namespace(None, dtype)  # raises the backend's own error (unavailable, no float16)
        backend, float_name, device_name = config.resolve(None, dtype)
        record = registry.get(backend)
        xp = record.load_namespace()
        device = record.device(device_name) if device_name is not None else None
    source = registry.backend_of(values)
    if source is not None and registry.get(source) is record:
        # Already on the target backend: cast (and move between devices) only if needed.
        if xp.isdtype(values.dtype, "real floating"):
            wanted = getattr(xp, float_name)
        elif xp.isdtype(values.dtype, ("integral", "bool")):
            wanted = xp.int64
        else:
            raise DtypeError(
                f"to_backend: data of dtype {values.dtype} is neither floating nor integer"
            )
        if values.dtype != wanted:
            uint64 = getattr(xp, "uint64", None)
            if uint64 is not None and values.dtype == uint64:  # rare: checked on the host
                _check_fits_int64(np, np.asarray(record.to_host(values)))
            values = xp.astype(values, wanted)
        if device is not None and getattr(values, "device", device) != device:
            values = xp.asarray(values, device=device)
        return values
    if source is not None:
        values = registry.get(source).to_host(values)
    try:
        values = np.asarray(values)
    except ValueError as exc:  # NumPy's "inhomogeneous shape" for ragged lists of rows
        raise ShapeError(
            f"to_backend: the rows of the data have different lengths ({exc}); every row "
            "must have one shape (pad or crop them first)"
        ) from None
    if np.issubdtype(values.dtype, np.floating):
        target = float_name
    elif np.issubdtype(values.dtype, np.integer) or values.dtype == np.bool_:
        target = "int64"
        _check_fits_int64(np, values)
    else:
        raise DtypeError(
            f"to_backend: data of dtype {values.dtype} is neither floating nor integer; "
            "convert it to numbers first"
        )
    # A fresh, C-contiguous, writable copy: torch.from_numpy shares memory with its input.
    values = np.array(values, dtype=target, order="C", copy=True)
    return record.from_host(values, device)


def _check_fits_int64(np: Any, values: Any) -> None:
    """Unsigned 64-bit integers above int64's maximum (``[2**63]`` becomes a uint64 array)
    wrapped around to negative labels in the cast to int64; they are refused instead."""
    if values.dtype == np.uint64 and values.size and int(values.max()) > 2**63 - 1:
        raise DtypeError(
            f"to_backend: integer values up to {int(values.max())} do not fit the int64 that "
            "labels become (largest 2**63 - 1); renumber them (np.unique(t, "
            "return_inverse=True)) or convert them to floats"
        )


def _integer(value: Any) -> int | None:
    """``value`` as an int (a NumPy integer too), or None for a bool, a float or a text."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _count(value: Any, name: str, where: str) -> int:
    """``value`` as an int >= 1 (a NumPy integer too; not a bool or a float)."""
    n = _integer(value)
    if n is None:
        raise ArgumentError(f"{where} needs {name} to be an int >= 1, got {value!r}")
    if n < 1:
        raise ArgumentError(f"{where} needs {name} >= 1, got {n}")
    return n


def _seed(value: Any, where: str, limit: int | None = None) -> int | None:
    """``value`` as a seed: an int >= 0 (and below ``limit`` where the stream has one), or
    ``None`` (a fresh one)."""
    if value is None:
        return None
    seed = _integer(value)
    if seed is None or seed < 0 or (limit is not None and seed >= limit):
        bound = "" if limit is None else " and below 2**32 (its legacy NumPy stream)"
        raise ArgumentError(f"{where} needs seed to be an int >= 0{bound}, got {value!r}")
    return seed


def _number_or_nan(value: Any) -> float:
    """``value`` as a float where it is a real number (not a bool), else NaN."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return float(value) if real else math.nan


def _noise(value: Any, where: str) -> float:
    """``value`` as a finite standard deviation >= 0."""
    noise = _number_or_nan(value)
    if not (math.isfinite(noise) and noise >= 0.0):
        raise ArgumentError(
            f"{where} needs noise to be a finite number >= 0 (a standard deviation), got {value!r}"
        )
    return noise


def spiral(
    n_per_class: int = 100,
    n_classes: int = 3,
    seed: int = 1984,
    *,
    noise: float = 0.2,
    dtype: Any = None,
) -> Dataset:
    """The book's spiral ("Deep Learning from Scratch 2", ``dataset/spiral.py``): ``n_classes``
    arms of ``n_per_class`` points in 2-D.

    For arm ``j`` and point ``i``: ``rate = i / n_per_class``, ``radius = rate``,
    ``theta = 4 j + 4 rate + 0.2 * normal()``, ``x = (radius sin(theta), radius cos(theta))``.
    With the defaults the points are exactly the book's (the same legacy NumPy stream seeded
    with 1984); labels are integers (the book's are one-hot).

    Returns:
        :class:`Dataset` with ``x`` of shape ``(n_per_class * n_classes, 2)`` and ``t`` of
        shape ``(n_per_class * n_classes,)``.
    """
    n_per_class = _count(n_per_class, "n_per_class", "spiral")
    n_classes = _count(n_classes, "n_classes", "spiral")
    seed_ = _seed(seed, "spiral", limit=2**32)
    noise = _noise(noise, "spiral")
    np = host.numpy()
    # The book calls np.random.seed(seed) and np.random.randn() once per point, arm by arm;
    # RandomState(seed).standard_normal(n) draws the same numbers in the same order.
    normal = np.random.RandomState(seed_).standard_normal(n_per_class * n_classes)
    rate = np.tile(np.arange(n_per_class) / n_per_class, n_classes)
    arm = np.repeat(np.arange(n_classes), n_per_class)
    radius = 1.0 * rate
    theta = arm * 4.0 + 4.0 * rate + normal * noise
    x = np.stack([radius * np.sin(theta), radius * np.cos(theta)], axis=1)
    return Dataset(to_backend(x, dtype), to_backend(arm))


def xor(n_per_corner: int = 1, noise: float = 0.0, seed: int = 0, *, dtype: Any = None) -> Dataset:
    """The XOR problem: points at the corners of the unit square, label 1 where exactly one
    coordinate is 1.

    With the defaults, the four points ``(0,0) (0,1) (1,0) (1,1)`` with labels ``0 1 1 0``.
    ``n_per_corner`` > 1 repeats each corner, and ``noise`` adds Gaussian jitter of that
    standard deviation (seeded by ``seed``), for a data set big enough to batch.
    """
    n_per_corner = _count(n_per_corner, "n_per_corner", "xor")
    noise = _noise(noise, "xor")
    seed_ = _seed(seed, "xor")
    np = host.numpy()
    corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    labels = np.array([0, 1, 1, 0])
    x = np.repeat(corners, n_per_corner, axis=0)
    t = np.repeat(labels, n_per_corner)
    if noise:
        x = x + host.generator(seed_).normal(0.0, float(noise), x.shape)
    return Dataset(to_backend(x, dtype), to_backend(t))


def digits(
    test_fraction: float = 0.25, seed: int = 0, *, dtype: Any = None, images: bool = False
) -> tuple[Dataset, Dataset]:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes; no download),
    split into a training and a test set.

    Pixels are scaled from 0..16 to [0, 1]; each image is a row of 64 features, or with
    ``images=True`` an NCHW image of shape ``(1, 8, 8)`` for convolutional networks. The
    split is a seeded shuffle, stratified by class, so both sets hold every digit in the same
    proportion.

    >>> import nnbackend as nb
    >>> (x_train, t_train), (x_test, t_test) = nb.datasets.digits()  # doctest: +SKIP

    Raises:
        ImportError: scikit-learn is not installed (the message says how to install it).
    """
    fraction = _number_or_nan(test_fraction)
    if not 0.0 < fraction < 1.0:
        raise ArgumentError(
            f"test_fraction must be a number between 0 and 1, got {test_fraction!r}"
        )
    test_fraction = fraction
    seed_ = _seed(seed, "digits")
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(
            "nnbackend.datasets.digits() needs scikit-learn, which ships the digits with it: "
            "pip install scikit-learn"
        ) from exc
    np = host.numpy()
    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float64) / 16.0
    if images:
        x = x.reshape(-1, 1, 8, 8)
    t = np.asarray(bunch.target, dtype=np.int64)
    rng = host.generator(seed_)
    train_idx: list[Any] = []
    test_idx: list[Any] = []
    for label in np.unique(t):
        members = rng.permutation(np.flatnonzero(t == label))
        # At least one of each class in each set: a fraction near 1 emptied the training set.
        n_test = min(len(members) - 1, max(1, math.floor(len(members) * test_fraction + 0.5)))
        test_idx.append(members[:n_test])
        train_idx.append(members[n_test:])
    train = rng.permutation(np.concatenate(train_idx))
    test = rng.permutation(np.concatenate(test_idx))
    return (
        Dataset(to_backend(x[train], dtype), to_backend(t[train])),
        Dataset(to_backend(x[test], dtype), to_backend(t[test])),
    )


# -- MNIST and Fashion-MNIST ----------------------------------------------------------------
#: The environment variable that overrides the cache folder of downloaded data sets.
CACHE_ENV = "NNBACKEND_CACHE"

_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# name -> (mirrors, sha256 of each file in _IDX_FILES order): the published archives.
_IMAGE_SETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mnist": (
        (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
    ),
    "fashion_mnist": (
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        ),
    ),
}

# The function that opens a URL (tests replace it: this machine may have no internet).
_urlopen: Callable[..., Any] = urllib.request.urlopen


def cache_dir() -> Path:
    """The folder downloaded data sets are kept in: ``$NNBACKEND_CACHE`` when set, else
    ``$XDG_CACHE_HOME/nnbackend``, else ``~/.cache/nnbackend``."""
    found = os.environ.get(CACHE_ENV, "").strip()
    if found:
        return Path(found).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "nnbackend"


def sha256_file(path: Path) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manual_download_command(folder: Path, mirror: str, names: Iterable[str]) -> str:
    """The shell command that downloads ``names`` from ``mirror`` into ``folder`` (for the
    messages of a failed download; nnbackend.text's corpora use it too)."""
    # Always single-quoted, a quote inside closed, escaped and reopened: a folder such as
    # /home/o'brien broke the bare single quotes.
    urls = " ".join(shlex.quote(mirror + name) for name in names)
    where = "'" + str(folder).replace("'", "'\"'\"'") + "'"
    return f"mkdir -p {where} && cd {where} && curl -fLO --remote-name-all {urls}"


def _fetch(name: str, filename: str, sha256: str, mirrors: tuple[str, ...]) -> Path:
    """``cache_dir()/name/filename``, downloaded first (from the first mirror that answers)
    unless a copy with the right checksum is there; a copy with another checksum is replaced.
    Raises :class:`~nnbackend.errors.DownloadError` with the manual command otherwise."""
    folder = cache_dir() / name
    path = folder / filename
    if path.is_file() and sha256_file(path) == sha256:
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way of the folder, or a parent that is read-only
        raise DownloadError(
            f"cannot create the cache folder {folder} for {name} ({exc.strerror or exc}); "
            f"remove what is in the way, or set {CACHE_ENV} to a folder you can write to"
        ) from None
    failures = []
    for mirror in mirrors:
        url = mirror + filename
        try:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{filename}.", suffix=".part")
        except OSError as exc:
            raise DownloadError(
                f"cannot write into the cache folder {folder} for {name} "
                f"({exc.strerror or exc}); set {CACHE_ENV} to a folder you can write to"
            ) from None
        try:
            with os.fdopen(fd, "wb") as out, _urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, out)
            got = sha256_file(Path(tmp))
            if got != sha256:
                failures.append(f"{url}: checksum {got}, expected {sha256}")
                continue
            os.replace(tmp, path)
            return path
        # URLError, HTTPError, timeouts and full disks are OSErrors; a connection closed
        # mid-file is http.client's IncompleteRead, which is not.
        except (OSError, http.client.HTTPException) as exc:
            failures.append(f"{url}: {type(exc).__name__}: {exc}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise DownloadError(
        f"could not download {name} file {filename} ({'; '.join(failures)}). If this machine "
        f"is offline, download the files elsewhere and copy them into {folder} (or set "
        f"{CACHE_ENV} to a folder holding a '{name}' folder with them):\n  "
        + manual_download_command(folder, mirrors[0], _IDX_FILES)
    )


def _read_idx(path: Path, ndim: int) -> Any:
    """An IDX file (gzipped) as a NumPy uint8 array of ``ndim`` axes."""
    np = host.numpy()
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # not gzip, truncated, corrupt
        raise DownloadError(
            f"{path} is not a readable gzip file ({type(exc).__name__}: {exc}); delete it and "
            "load again"
        ) from None
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x800 + ndim or len(raw) < 4 + 4 * ndim:
        raise DownloadError(
            f"{path} is not an IDX file of {ndim} axes of unsigned bytes (magic {magic:#x}); "
            "delete it and load again"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(shape):
        raise DownloadError(f"{path} holds {data.size} values, its header says {shape}; delete it")
    return data.reshape(shape)


def _image_set(name: str, dtype: Any, flatten: bool) -> tuple[Dataset, Dataset]:
    mirrors, sums = _IMAGE_SETS[name]
    paths = [_fetch(name, f, s, mirrors) for f, s in zip(_IDX_FILES, sums, strict=True)]
    sets = []
    for images, labels in ((paths[0], paths[1]), (paths[2], paths[3])):
        x = _read_idx(images, 3)
        t = _read_idx(labels, 1)
        if x.shape[0] != t.shape[0]:
            raise DownloadError(f"{images} holds {x.shape[0]} images, {labels} {t.shape[0]} labels")
        x = x.reshape(x.shape[0], -1) if flatten else x.reshape(x.shape[0], 1, *x.shape[1:])
        pixels = x.astype(config.resolve(None, dtype)[1])  # scaled in the target dtype
        pixels /= 255.0
        sets.append(Dataset(to_backend(pixels, dtype), to_backend(t)))
    return sets[0], sets[1]


def mnist(*, dtype: Any = None, flatten: bool = False) -> tuple[Dataset, Dataset]:
    """The MNIST handwritten digits: 60000 training and 10000 test images of 28x28 pixels,
    10 classes, as ``(train, test)``.

    Downloaded once into ``cache_dir()/mnist`` (about 11 MB) and checked against the
    published SHA-256 sums; later calls read the cache. Pixels are scaled to [0, 1]; images
    have shape ``(1, 28, 28)`` (NCHW), or rows of 784 with ``flatten=True``.

    Raises:
        DownloadError: offline or a bad download; the message gives the command to fetch the
            files by hand and where to put them.
    """
    return _image_set("mnist", dtype, flatten)


def fashion_mnist(*, dtype: Any = None, flatten: bool = False) -> tuple[Dataset, Dataset]:
    """Zalando's Fashion-MNIST: 28x28 images of 10 kinds of clothing (60000 training, 10000
    test), a drop-in replacement for :func:`mnist` that is harder to classify. Cached in
    ``cache_dir()/fashion_mnist``; otherwise as :func:`mnist`."""
    return _image_set("fashion_mnist", dtype, flatten)


def host_rows(source: Any, index: Any) -> Any:
    """Rows ``index`` (a host array of ints) of ``source`` as host NumPy arrays: by fancy
    indexing for a NumPy array (a memory-mapped one reads only those rows), else one
    ``source[i]`` per row, stacked; where a row is a tuple ``(x_i, t_i)``, a tuple of stacked
    arrays. Used by :class:`nnbackend.data.DataLoader`.

    An array of another registered backend (a torch tensor, an array_api_strict array)
    gives its rows there, by ``take``, and then moves them to the host: one row at a time
    failed on array_api_strict (its ``a[i]`` of a 2-D array is an IndexError) and read a
    torch tensor row by row."""
    np = host.numpy()
    if isinstance(source, np.ndarray):
        return source[index]
    name = registry.backend_of(source)
    if name is not None:
        xp, record = backend_for(source)
        rows = np.asarray(index, dtype=np.int64)
        device = getattr(source, "device", None)
        taken = xp.take(source, record.from_host(rows, device), axis=0)
        return np.asarray(record.to_host(taken))
    rows = [source[int(i)] for i in index]
    if rows and isinstance(rows[0], tuple):
        return tuple(_stack(np, [r[k] for r in rows], index) for k in range(len(rows[0])))
    return _stack(np, rows, index)


def _stack(np: Any, rows: list[Any], index: Any) -> Any:
    """``rows`` stacked into one host array; rows of different shapes are a
    :class:`~nnbackend.errors.ShapeError` naming them (np.stack's bare ValueError did not)."""
    arrays = [np.asarray(r) for r in rows]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        first = arrays[0].shape
        k = next(k for k, a in enumerate(arrays) if a.shape != first)
        raise ShapeError(
            f"rows {int(index[0])} and {int(index[k])} of the data set have shapes {first} and "
            f"{arrays[k].shape}: every row must have one shape (pad or crop them first)"
        )
    return np.stack(arrays)


def host_permutation(generator: Any, n: int) -> Any:
    """A host permutation of ``range(n)`` from a :class:`nnbackend.random.Generator`'s stream
    (the same draws it gives for ``permutation(n)`` on a device)."""
    return generator._host.permutation(n)


# Text data sets (the book's chapters 2-8) live in their own module; here for nb.datasets.ptb.
from nnbackend.text.corpora import (  # noqa: E402
    SequenceData,
    TextCorpus,
    addition,
    date_format,
    ptb,
    text_cache_dir,
    tiny_corpus,
)

__all__ += [
    "SequenceData",
    "TextCorpus",
    "addition",
    "date_format",
    "ptb",
    "text_cache_dir",
    "tiny_corpus",
]
