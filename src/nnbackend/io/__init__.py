"""Checkpoints: :func:`save` and :func:`load` a model's parameters (and an optimizer's state)
as a NumPy ``.npz`` file that needs no pickle to read.

File layout (a zip of ``.npy`` arrays, read with ``numpy.load(path, allow_pickle=False)``):

- one array per parameter, keyed by its dotted path from ``model.named_parameters()``
  (``"0.weight"``), stored on the host in the saved dtype. A parameter may have any name: one
  that is not safe as a zip entry name (letters, digits, ``_ . -``, up to 200 characters) is
  stored as ``"parameter/<index>"``, and its metadata names that ``"entry"`` (format version
  2, written only when some name needs it; version 1 files have no mapping);
- ``"optimizer/<index>/<name>"`` for each optimizer state array, when an optimizer is saved;
- ``"__nnbackend__"``: the metadata as UTF-8 JSON bytes in a uint8 array: format version,
  nnbackend version, model class, backend, and each parameter's shape, stored dtype and model
  dtype (plus the optimizer's type, hyperparameters and step counts).

Saving is atomic: the file is written to a temporary file in the same directory (created with
an explicit mode, never by changing the process umask), flushed to disk, then renamed over
``path``, so an interrupted save leaves the previous checkpoint intact; the temporary files of
a killed save are removed by the next save to the same path.

Loading treats the file as untrusted input. The zip directory and each ``.npy`` header are
parsed here (never with pickle); the metadata is size-capped and checked field by field; the
zip must hold exactly the entries the metadata names; each array's shape and dtype are
checked against the model from its header before its data is inflated, so no more than the
model's own size is ever decompressed. Everything (names, shapes, dtypes, values that would
overflow the model's dtype, the optimizer's hyperparameters) is checked before a parameter or
the optimizer is touched; any problem raises :class:`~nnbackend.errors.CheckpointError`
naming the file and the entry, and leaves both unchanged.

>>> import nnbackend as nb, tempfile, os
>>> from nnbackend import nn
>>> model = nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))
>>> path = os.path.join(tempfile.mkdtemp(), "spiral.npz")
>>> nb.save(model, path, dtype="float16")
>>> nb.load(model, path)       # cast back to the model's dtype, onto its backend
"""

from __future__ import annotations

import ast
import contextlib
import errno
import json
import math
import os
import re
import secrets
import socket
import stat
import struct
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nnbackend import errors
from nnbackend._version import package_version
from nnbackend.autograd.tensor import Tensor
from nnbackend.backends import host
from nnbackend.config import normalize_dtype
from nnbackend.errors import CheckpointError
from nnbackend.io.book import load_book_params
from nnbackend.namespace import backend_for

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_METADATA_BYTES",
    "METADATA_KEY",
    "load",
    "load_book_params",
    "read_metadata",
    "save",
]

FORMAT = "nnbackend-checkpoint"
#: Version 1 keys each parameter's entry by its name; version 2 (written only when some name
#: cannot be a zip entry name) may map a parameter to the entry ``"parameter/<index>"``.
FORMAT_VERSION = 2
METADATA_KEY = "__nnbackend__"
OPTIMIZER_PREFIX = "optimizer/"
MAPPED_PREFIX = "parameter/"
# A name kept as its own zip entry name: short, portable, no path separators, nothing that a
# zip tool, a file system or numpy.load could alter. Every other name is mapped.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,200}")


def _dtype_name(dtype: Any) -> str:
    try:
        return normalize_dtype(dtype)
    except errors.DtypeError:
        return str(dtype).rsplit(".", 1)[-1]


def _named_parameters(model: Any) -> list[tuple[str, Any]]:
    named = getattr(model, "named_parameters", None)
    if not callable(named):
        raise TypeError(
            f"save/load need an nn.Module (something with named_parameters()), got "
            f"{type(model).__name__}"
        )
    return list(named())


def _to_host(array: Any) -> Any:
    if isinstance(array, Tensor):
        array = array.data
    np = host.numpy()
    return np.array(backend_for(array)[1].to_host(array), copy=True, order="C")


def _flatten_optimizer(
    optimizer: Any, model_params: list[tuple[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(arrays, metadata)`` of an optimizer's ``state_dict()``: the state arrays become
    file entries, everything else JSON."""
    state_dict = optimizer.state_dict()
    names = {id(p): name for name, p in model_params}
    opt_params = list(getattr(optimizer, "params", []))
    arrays: dict[str, Any] = {}
    state_meta: dict[str, dict[str, Any]] = {}
    for index, entry in state_dict.get("state", {}).items():
        numbers: dict[str, Any] = {}
        stored: list[str] = []
        for key, value in entry.items():
            if isinstance(value, bool | int | float):
                numbers[key] = value
            else:
                if not isinstance(key, str) or not _SAFE_NAME.fullmatch(key):
                    raise CheckpointError(
                        f"cannot save {type(optimizer).__name__}'s state {key!r}: state names "
                        "must be letters, digits, '_', '.' or '-'"
                    )
                arrays[f"{OPTIMIZER_PREFIX}{int(index)}/{key}"] = _to_host(value)
                stored.append(key)
        state_meta[str(int(index))] = {"numbers": numbers, "arrays": stored}
    meta = {
        "type": state_dict.get("type", type(optimizer).__name__),
        "hyperparameters": state_dict.get("hyperparameters", {}),
        "steps": state_dict.get("steps", 0),
        "state": state_meta,
        "parameters": [names.get(id(p)) for p in opt_params],
        "extra": {
            k: v
            for k, v in state_dict.items()
            if k not in ("type", "hyperparameters", "steps", "state")
        },
    }
    json.dumps(meta)  # fail now, before writing anything, if something is not JSON
    return arrays, meta


def _entry_name(name: str, index: int) -> str:
    """The zip key for parameter ``name``: the name itself when it is safe as one, else
    ``"parameter/<index>"`` (never equal to a safe name, which has no ``/``)."""
    if _SAFE_NAME.fullmatch(name) and not name.startswith("__nnbackend"):
        return name
    return f"{MAPPED_PREFIX}{index}"


def save(
    model: Any, path: str | os.PathLike[str], *, dtype: Any = None, optimizer: Any = None
) -> None:
    """Write ``model``'s parameters (and ``optimizer``'s state) to ``path`` atomically.

    Parameters may have any names (any string): a name that is not safe as a zip entry name
    is stored under ``"parameter/<index>"`` and the metadata maps it back.

    The temporary file is created next to ``path`` with the mode a plain ``open()`` would give
    (the replaced file's mode when there is one), without touching the process umask.
    Temporary files that a killed save left for ``path`` are removed first.

    Args:
        model: an :class:`nnbackend.nn.Module`.
        path: the file to write (used as given; ``.npz`` is the customary suffix).
        dtype: store the parameters in this dtype (``"float16"`` halves float32's bytes);
            ``None`` keeps each parameter's dtype. Optimizer state keeps its own dtype.
        optimizer: an :mod:`nnbackend.optim` optimizer whose state to save with the model.

    Raises:
        CheckpointError: a value beyond the range of ``dtype``; two parameters with one name.
        OSError: the file cannot be written (the message names ``path``); the previous file
            at ``path``, if any, is left as it was.
    """
    np = host.numpy()
    params = _named_parameters(model)
    store_dtype = None if dtype is None else normalize_dtype(dtype)
    entries: list[tuple[str, Any]] = []
    meta_params: dict[str, Any] = {}
    backend = None
    mapped = False
    for index, (name, param) in enumerate(params):
        if not isinstance(name, str):
            raise CheckpointError(f"parameter names must be strings, got {name!r}")
        if name in meta_params:
            raise CheckpointError(f"two parameters are named {name!r}; names must be distinct")
        data = param.data if isinstance(param, Tensor) else param
        backend = backend or backend_for(data)[1].name
        value = _to_host(data)
        model_dtype = _dtype_name(data.dtype)
        if store_dtype is not None and value.dtype != np.dtype(store_dtype):
            if store_dtype == "float16":
                finfo = np.finfo(np.float16)
                big = np.abs(value) > finfo.max
                if np.any(big):
                    raise CheckpointError(
                        f"cannot store parameter {name!r} in float16: it holds values up to "
                        f"{float(np.max(np.abs(value))):.4g}, beyond float16's {finfo.max}"
                    )
            value = value.astype(store_dtype)
        entry = _entry_name(name, index)
        entries.append((entry, value))
        meta_params[name] = {
            "shape": list(value.shape),
            "dtype": str(value.dtype),
            "model_dtype": model_dtype,
        }
        if entry != name:
            meta_params[name]["entry"] = entry
            mapped = True
    meta: dict[str, Any] = {
        "format": FORMAT,
        # Files that need no mapping stay readable by nnbackend versions that read version 1.
        "format_version": 2 if mapped else 1,
        "nnbackend_version": package_version(),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "backend": backend,
        "parameters": meta_params,
        "optimizer": None,
    }
    if optimizer is not None:
        opt_arrays, meta["optimizer"] = _flatten_optimizer(optimizer, params)
        entries.extend(opt_arrays.items())
    blob = json.dumps(meta, sort_keys=False).encode("utf-8")
    entries.append((METADATA_KEY, np.frombuffer(blob, dtype=np.uint8)))
    _atomic_write(Path(path), lambda f: _write_npz(f, entries))


def _write_npz(f: Any, entries: list[tuple[str, Any]]) -> None:
    """The ``.npz`` layout of ``numpy.savez`` (stored, zip64 entries ``<key>.npy``), written
    here so that no name is ever passed as a keyword argument."""
    np = host.numpy()
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in entries:
            with zf.open(key + ".npy", "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asanyarray(value), allow_pickle=False)


# -- atomic writes ----------------------------------------------------------------------------
_TMP_SUFFIX = ".tmp"
# The temporary files this process is writing now, never taken for stale ones.
_in_flight: set[str] = set()
_in_flight_lock = threading.Lock()


def _host_tag() -> str:
    """This machine's name, reduced to characters safe in a file name (a shared file system
    may hold temporary files of another machine's processes, whose ids mean nothing here)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{_host_tag()}."


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":
        return True  # os.kill(pid, 0) would send CTRL_C_EVENT there: never probe
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True  # exists (another user's), or cannot tell: keep its file
    return True


def _remove_stale_temporaries(directory: Path, path: Path) -> None:
    """Remove ``.<name>.<host>.<pid>.<token>.tmp`` files of ``path`` that a save killed
    before it could clean up left behind: those of this machine whose process is gone, or
    of this process but not being written now (a forked child's leftovers)."""
    prefix = _tmp_prefix(path)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(_TMP_SUFFIX)):
            continue
        fields = name[len(prefix) : -len(_TMP_SUFFIX)].split(".")
        if len(fields) != 2 or not fields[0].isdigit():
            continue
        pid = int(fields[0])
        full = os.path.join(directory, name)
        if pid != os.getpid() and _pid_alive(pid):
            continue
        # Under the lock: a thread of this process creates and registers its temporary
        # under it too, so one being written now is never taken for a leftover.
        with _in_flight_lock, contextlib.suppress(OSError):
            if full not in _in_flight:
                os.unlink(full)


def _create_temporary(directory: Path, path: Path) -> tuple[int, str]:
    """A new temporary file next to ``path``, created with an explicit mode: the kernel
    applies the umask to 0o666 as for a plain ``open()``, and the process umask is never
    changed (doing that for a moment made other threads' files world-writable)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = None
    for _ in range(100):
        name = f"{_tmp_prefix(path)}{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}"
        tmp = os.path.join(directory, name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        try:
            with _in_flight_lock:
                fd = os.open(tmp, flags, 0o666 if mode is None else mode)
                _in_flight.add(tmp)
        except FileExistsError:
            continue
        except OSError as exc:
            what = (
                f"the folder {os.fspath(directory)!r} does not exist"
                if isinstance(exc, FileNotFoundError)
                else exc.strerror
            )
            raise type(exc)(
                exc.errno,
                f"cannot save the checkpoint {os.fspath(path)!r}: {what}",
                os.fspath(path),
            ) from None
        if mode is not None:
            # Keep the replaced file's mode exactly (the umask may have cleared bits of it).
            with contextlib.suppress(OSError, AttributeError, NotImplementedError):
                os.fchmod(fd, mode)
        return fd, tmp
    raise FileExistsError(
        errno.EEXIST, f"cannot save the checkpoint {os.fspath(path)!r}: no free temporary name"
    )


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """Run ``write(file)`` on a temporary file next to ``path``, then rename it over
    ``path``; on any failure the temporary file is removed and ``path`` left as it was."""
    directory = path.parent if str(path.parent) else Path(".")
    _remove_stale_temporaries(directory, path)
    fd, tmp = _create_temporary(directory, path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        with _in_flight_lock:
            _in_flight.discard(tmp)
    # Make the rename itself durable where the platform allows it.
    with contextlib.suppress(OSError, AttributeError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# -- reading: the zip and the .npy headers parsed here, every size checked before inflating ---
_NPY_MAGIC = b"\x93NUMPY"
# NumPy's own reader refuses longer headers (numpy.lib.format: max_header_size=10000).
_MAX_NPY_HEADER = 10000
# The .npy dtypes a checkpoint holds: floating arrays and the uint8 metadata blob.
_FLOAT_DESCRS = frozenset({"<f2", "<f4", "<f8", ">f2", ">f4", ">f8"})
_METADATA_DESCRS = frozenset({"|u1", "<u1", ">u1"})
_FLOAT_NAMES = frozenset({"float16", "float32", "float64"})
#: The largest metadata entry :func:`read_metadata` inflates (bytes). :func:`load` allows the
#: larger of this and what the model's parameter names can need.
MAX_METADATA_BYTES = 4 << 20
_STATE_KEY = re.compile(r"0|[1-9][0-9]{0,8}")


class _Entry:
    """One ``.npy`` member of the zip: its key (the name less ``.npy``) and zip record."""

    __slots__ = ("info", "key")

    def __init__(self, key: str, info: zipfile.ZipInfo) -> None:
        self.key = key
        self.info = info


class _Checkpoint:
    """An open checkpoint: its zip directory indexed by key, and the validated metadata.
    Nothing but the metadata has been inflated."""

    def __init__(self, where: str, zf: zipfile.ZipFile, meta_cap: int) -> None:
        self.where = where
        self.zf = zf
        self.entries: dict[str, _Entry] = {}
        self.stray_names: list[str] = []
        for info in zf.infolist():
            name = info.filename
            if not name.endswith(".npy") or info.is_dir():
                self.stray_names.append(name)
                continue
            key = name[: -len(".npy")]
            if key in self.entries:
                raise CheckpointError(
                    f"{where}: entry {key!r} appears twice; the file is corrupted"
                )
            self.entries[key] = _Entry(key, info)
        if METADATA_KEY not in self.entries:
            raise CheckpointError(
                f"{where}: not an nnbackend checkpoint (no {METADATA_KEY!r} metadata entry)"
            )
        self.meta = _check_metadata(where, _parse_metadata(where, self._metadata_bytes(meta_cap)))

    def _metadata_bytes(self, cap: int) -> bytes:
        stream, dtype, shape, _ = self._open(METADATA_KEY)
        with stream:
            if dtype.str not in _METADATA_DESCRS or len(shape) != 1:
                raise CheckpointError(
                    f"{self.where}: the metadata entry is a {dtype} array of shape {shape}, not "
                    "1-d uint8 bytes; the file is corrupted"
                )
            if shape[0] > cap:
                raise CheckpointError(
                    f"{self.where}: the metadata entry declares {shape[0]} bytes, more than the "
                    f"{cap} this reader accepts; the file is corrupted or not a checkpoint"
                )
            return self._body(stream, METADATA_KEY, shape[0])

    def _open(self, key: str) -> tuple[Any, Any, tuple[int, ...], bool]:
        """``(stream, dtype, shape, fortran_order)`` of entry ``key``: its .npy header read,
        parsed and checked, the stream left at the first data byte."""
        info = self.entries[key].info
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(
                f"{self.where}: entry {key!r} uses zip compression method "
                f"{info.compress_type}; checkpoints are stored or deflated"
            )
        stream = self.zf.open(info)
        try:
            dtype, shape, fortran = _npy_header(self.where, key, stream)
        except BaseException:
            stream.close()
            raise
        return stream, dtype, shape, fortran

    def _body(self, stream: Any, key: str, nbytes: int) -> bytes:
        """Exactly ``nbytes`` of data, and then the end of the entry (which checks its CRC)."""
        data = stream.read(nbytes)
        if len(data) != nbytes:
            raise CheckpointError(
                f"{self.where}: entry {key!r} ends after {len(data)} of its {nbytes} data "
                "bytes; the file is truncated or corrupted"
            )
        if stream.read(1):
            raise CheckpointError(
                f"{self.where}: entry {key!r} holds more bytes than its header declares; the "
                "file is corrupted"
            )
        return data

    def array(self, key: str, shape: tuple[int, ...], dtype_name: str | None, what: str) -> Any:
        """Entry ``key`` as a host array, after checking from its header alone that it is a
        floating array of ``shape`` (and of ``dtype_name`` when given): no more than that
        array's bytes are ever inflated."""
        np = host.numpy()
        with _unreadable(self.where):
            data, dtype, fortran = self._array_bytes(key, shape, dtype_name, what)
        count = math.prod(shape)
        flat = np.frombuffer(data, dtype=dtype, count=count)
        value = flat.reshape(shape, order="F" if fortran else "C")
        return np.array(value, dtype=dtype.newbyteorder("="), order="C", copy=True)

    def _array_bytes(
        self, key: str, shape: tuple[int, ...], dtype_name: str | None, what: str
    ) -> tuple[bytes, Any, bool]:
        stream, dtype, got, fortran = self._open(key)
        with stream:
            if dtype.kind != "f":
                raise CheckpointError(
                    f"{self.where}: entry {key!r} has dtype {dtype}, not a floating dtype"
                )
            if dtype_name is not None and dtype.name != dtype_name:
                raise CheckpointError(
                    f"{self.where}: entry {key!r} has dtype {dtype.name}, but the metadata says "
                    f"{dtype_name}; the file is corrupted"
                )
            if got != shape:
                raise CheckpointError(f"{self.where}: entry {key!r} has shape {got}, but {what}")
            return self._body(stream, key, math.prod(shape) * dtype.itemsize), dtype, fortran


def _read_exact(stream: Any, n: int, where: str, key: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise CheckpointError(
            f"{where}: entry {key!r} ends inside its .npy header; the file is truncated"
        )
    return data


def _npy_header(where: str, key: str, stream: Any) -> tuple[Any, tuple[int, ...], bool]:
    """Parse a .npy header (magic, version, length, a dict literal) without NumPy's reader:
    ``(dtype, shape, fortran_order)``, every field checked, no pickle ever."""
    np = host.numpy()
    bad = f"{where}: entry {key!r} is not a valid .npy array"
    lead = _read_exact(stream, 8, where, key)
    if lead[:6] != _NPY_MAGIC:
        raise CheckpointError(f"{bad} (no .npy magic bytes); the file is corrupted")
    major = lead[6]
    if major == 1:
        (length,) = struct.unpack("<H", _read_exact(stream, 2, where, key))
    elif major in (2, 3):
        (length,) = struct.unpack("<I", _read_exact(stream, 4, where, key))
    else:
        raise CheckpointError(f"{bad} (unknown .npy format version {major})")
    if length > _MAX_NPY_HEADER:
        raise CheckpointError(
            f"{bad} (a {length}-byte header, more than {_MAX_NPY_HEADER}); the file is corrupted"
        )
    raw = _read_exact(stream, length, where, key)
    try:
        text = raw.decode("utf-8" if major == 3 else "latin1")
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise CheckpointError(f"{bad} (its header is not a dict literal)") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise CheckpointError(f"{bad} (its header needs exactly descr, fortran_order, shape)")
    descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    if not isinstance(descr, str) or descr not in _FLOAT_DESCRS | _METADATA_DESCRS:
        raise CheckpointError(
            f"{bad} (dtype {descr!r}; a checkpoint holds float16/32/64 arrays and uint8 "
            "metadata only)"
        )
    if not isinstance(fortran, bool):
        raise CheckpointError(f"{bad} (fortran_order is {fortran!r}, not a bool)")
    if (
        not isinstance(shape, tuple)
        or len(shape) > 64
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise CheckpointError(f"{bad} (shape {shape!r} is not a tuple of non-negative ints)")
    return np.dtype(descr), shape, fortran


def _open_regular(where: str) -> Any:
    """``where`` opened for binary reading, refused at once unless it is a regular file (a
    FIFO would block, a directory or device is no checkpoint)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(where, flags)
    except FileNotFoundError:
        raise CheckpointError(f"{where}: no such checkpoint file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{where}: is a directory, not a checkpoint file") from None
    except OSError as exc:
        raise CheckpointError(f"{where}: cannot open the checkpoint ({exc.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO, device or socket"
            raise CheckpointError(f"{where}: is {kind}, not a regular checkpoint file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def _unreadable(where: str) -> Iterator[None]:
    """Turn what the zip and zlib modules raise for a damaged file into a
    :class:`CheckpointError` naming the file (used around reading only, so an error of the
    model's backend is never reported as a damaged file)."""
    try:
        yield
    except CheckpointError:
        raise
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        ValueError,
        RuntimeError,  # an encrypted entry
        NotImplementedError,  # an unknown compression method
        struct.error,
        OverflowError,
    ) as exc:
        raise CheckpointError(
            f"{where}: cannot read the checkpoint ({type(exc).__name__}: {exc}); the file "
            "is truncated, corrupted or not an .npz checkpoint"
        ) from None


@contextlib.contextmanager
def _opened(path: str | os.PathLike[str], meta_cap: int) -> Iterator[_Checkpoint]:
    """The checkpoint at ``path``, open, its metadata read and validated; any failure to read
    it is a :class:`CheckpointError` naming the file."""
    where = os.fspath(path)
    with _open_regular(where) as f:
        with _unreadable(where):
            zf = zipfile.ZipFile(f)
        with zf:
            with _unreadable(where):
                ckpt = _Checkpoint(where, zf, meta_cap)
            yield ckpt


def _parse_metadata(where: str, blob: bytes) -> Any:
    try:
        return json.loads(blob.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{where}: the metadata entry is corrupted ({exc})") from None


def _check_metadata(where: str, meta: Any) -> dict[str, Any]:
    """The metadata, after checking every field's JSON type (so later code never meets a
    list where a dict belongs): a :class:`CheckpointError` otherwise."""

    def bad(field: str, expected: str, got: Any) -> CheckpointError:
        shown = repr(got)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return CheckpointError(
            f"{where}: metadata field {field} should be {expected}, got {shown}; the file is "
            "corrupted or was not written by nnbackend.save"
        )

    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not an nnbackend checkpoint (unknown metadata format)")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise bad("format_version", "a positive int", version)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: checkpoint format version {version} is newer than this nnbackend reads "
            f"({FORMAT_VERSION}); upgrade nnbackend"
        )
    params = meta.get("parameters")
    if not isinstance(params, dict):
        raise CheckpointError(f"{where}: the metadata lists no parameters")
    entries: set[str] = set()
    for name, info in params.items():
        field = f"parameters[{name!r}]"
        if not isinstance(info, dict):
            raise bad(field, "an object", info)
        shape = info.get("shape")
        if not isinstance(shape, list) or not all(_is_size(n) for n in shape):
            raise bad(f"{field}.shape", "a list of non-negative ints", shape)
        if not isinstance(info.get("dtype"), str) or info["dtype"] not in _FLOAT_NAMES:
            raise bad(f"{field}.dtype", f"one of {sorted(_FLOAT_NAMES)}", info.get("dtype"))
        entry = info.get("entry", name) if version >= 2 else name
        if (
            not isinstance(entry, str)
            or entry in entries
            or entry == METADATA_KEY
            or (entry != name and entry.startswith(OPTIMIZER_PREFIX))
        ):
            raise bad(f"{field}.entry", "a distinct entry name", entry)
        entries.add(entry)
    opt = meta.get("optimizer")
    if opt is None:
        return meta
    if not isinstance(opt, dict):
        raise bad("optimizer", "an object or null", opt)
    if not isinstance(opt.get("type"), str):
        raise bad("optimizer.type", "a string", opt.get("type"))
    for key in ("hyperparameters", "extra"):
        if not isinstance(opt.get(key, {}), dict):
            raise bad(f"optimizer.{key}", "an object", opt.get(key))
    clash = sorted(set(opt.get("extra", {})) & {"type", "hyperparameters", "steps", "state"})
    if clash:
        raise bad("optimizer.extra", "an object of other keys", clash)
    names = opt.get("parameters", [])
    if not isinstance(names, list) or not all(n is None or isinstance(n, str) for n in names):
        raise bad("optimizer.parameters", "a list of names", names)
    state = opt.get("state", {})
    if not isinstance(state, dict):
        raise bad("optimizer.state", "an object", state)
    for key, entry in state.items():
        field = f"optimizer.state[{key!r}]"
        if not _STATE_KEY.fullmatch(key):
            raise bad(f"optimizer.state key {key!r}", "a parameter index", key)
        if not isinstance(entry, dict):
            raise bad(field, "an object", entry)
        if not isinstance(entry.get("numbers", {}), dict):
            raise bad(f"{field}.numbers", "an object", entry.get("numbers"))
        arrays = entry.get("arrays", [])
        if not isinstance(arrays, list) or not all(
            isinstance(a, str) and _SAFE_NAME.fullmatch(a) for a in arrays
        ):
            raise bad(f"{field}.arrays", "a list of state names", arrays)
        if len(set(arrays)) != len(arrays) or set(arrays) & set(entry.get("numbers", {})):
            raise bad(f"{field}.arrays", "names listed once", arrays)
    return meta


def _is_size(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def _entry_of(meta: dict[str, Any], name: str) -> str:
    """The zip key that holds parameter ``name`` (its own name, unless it was mapped)."""
    if meta["format_version"] >= 2:
        return meta["parameters"][name].get("entry", name)
    return name


def _optimizer_keys(meta: dict[str, Any]) -> set[str]:
    opt = meta.get("optimizer")
    if opt is None:
        return set()
    return {
        f"{OPTIMIZER_PREFIX}{index}/{name}"
        for index, entry in opt.get("state", {}).items()
        for name in entry.get("arrays", [])
    }


def _check_entries(ckpt: _Checkpoint) -> dict[str, str]:
    """``{parameter name: entry key}``, after checking that the zip holds exactly the
    entries the metadata names: anything else is refused before a byte of it is inflated."""
    where, meta = ckpt.where, ckpt.meta
    by_name = {name: _entry_of(meta, name) for name in meta["parameters"]}
    opt_keys = _optimizer_keys(meta)
    present = set(ckpt.entries) - {METADATA_KEY}
    file_params = {k for k in present if not k.startswith(OPTIMIZER_PREFIX)}
    listed = set(by_name.values())
    unlisted = sorted(file_params ^ listed)
    if unlisted:
        raise CheckpointError(
            f"{where}: the metadata and the arrays disagree about entries {unlisted}; the file "
            "is corrupted"
        )
    stray = sorted(k for k in present - file_params if k not in opt_keys)
    if stray:
        raise CheckpointError(f"{where}: unexpected optimizer entries {stray}")
    missing = sorted(opt_keys - present)
    if missing:
        raise CheckpointError(f"{where}: optimizer entries {missing} are missing")
    if ckpt.stray_names:
        raise CheckpointError(
            f"{where}: unexpected entries {sorted(ckpt.stray_names)} (a checkpoint holds .npy "
            "arrays only)"
        )
    return by_name


def _metadata_cap(params: list[tuple[str, Any]]) -> int:
    """How many metadata bytes a checkpoint of these parameters can need: a fixed allowance
    plus, per parameter, room for its name JSON-escaped (up to 12 characters each) in the
    parameter table and the optimizer's list."""
    need = 1 << 20
    for name, _ in params:
        need += 1024 + 24 * len(name)
    return max(need, MAX_METADATA_BYTES)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a checkpoint (version, model class, parameter shapes and dtypes).

    Only the metadata entry is inflated (at most :data:`MAX_METADATA_BYTES`); the zip
    directory is checked to hold exactly the entries the metadata names, but no array is read.

    Raises:
        CheckpointError: the file is missing, not a regular file, not a checkpoint, or its
            metadata is malformed.
    """
    with _opened(path, MAX_METADATA_BYTES) as ckpt:
        _check_entries(ckpt)
        return ckpt.meta


def _convert(where: str, key: str, value: Any, like: Any) -> Any:
    """Host array ``value`` cast to ``like``'s dtype and moved to its backend and device; a
    value that the cast would turn into infinity (float64 1e6 into float16) is refused, as
    :func:`save` refuses to store one."""
    np = host.numpy()
    record = backend_for(like)[1]
    target = np.dtype(_dtype_name(like.dtype))
    if target != value.dtype and target.kind == "f" and target.itemsize < value.dtype.itemsize:
        limit = float(np.finfo(target).max)
        with np.errstate(invalid="ignore"):
            big = np.abs(value) > limit
        if np.any(big):
            raise CheckpointError(
                f"{where}: entry {key!r} holds values up to "
                f"{float(np.max(np.abs(value[big]))):.4g}, beyond {target.name}'s {limit:.4g}: "
                f"loading it into a {target.name} parameter would make them infinite. Load "
                "into a model of a wider dtype"
            )
    host_value = np.array(value, dtype=target, order="C", copy=True)
    moved = record.from_host(host_value, getattr(like, "device", None))
    if moved.dtype != like.dtype:
        moved = backend_for(moved)[0].astype(moved, like.dtype)
    return moved


def load(
    model: Any, path: str | os.PathLike[str], *, optimizer: Any = None, strict: bool = True
) -> None:
    """Load a checkpoint written by :func:`save` into ``model`` (and ``optimizer``).

    Each array is cast to the dtype the model's parameter has now and moved to its backend and
    device: save on a GPU, load on a CPU, or the other way round.

    The file is read defensively: the metadata is checked field by field, the zip must hold
    exactly the entries it names, and each array's shape and dtype are checked from its
    ``.npy`` header against the model before its data is inflated, so no more than the
    model's own size is ever decompressed, whatever the file declares.

    Args:
        model: the model to fill; its architecture must match the checkpoint.
        path: the checkpoint file (a regular file: a directory or a FIFO is refused at once).
        optimizer: also restore this optimizer's state (the checkpoint must hold one); its
            hyperparameters and step counts are held to the bounds its constructor enforces.
        strict: when True, a parameter missing from the file, or an entry the model lacks,
            is an error; when False, only the names present in both are loaded.

    Raises:
        CheckpointError: the file is missing, truncated or corrupted; a key is missing or
            extra; a shape differs; a value would overflow the model's dtype; the optimizer
            state does not fit or holds values its constructor refuses. Raised before anything
            is changed: the model and the optimizer are left exactly as they were.
    """
    where = os.fspath(path)
    params = _named_parameters(model)
    with _opened(path, _metadata_cap(params)) as ckpt:
        meta = ckpt.meta
        by_name = _check_entries(ckpt)
        listed = meta["parameters"]
        own = dict(params)
        missing = [name for name in own if name not in listed]
        extra = [name for name in listed if name not in own]
        if strict and (missing or extra):
            parts = []
            if missing:
                parts.append(f"missing from the file: {missing}")
            if extra:
                parts.append(f"not in the model: {extra}")
            raise CheckpointError(
                f"{where}: the checkpoint does not fit {type(model).__name__} ("
                + "; ".join(parts)
                + f"); it was saved from {meta.get('model_class')!s:.200}. Pass "
                "strict=False to load only the common entries"
            )
        # Shapes from the metadata first, so nothing is inflated for a model that cannot fit.
        for name, param in params:
            if name not in listed:
                continue
            data = param.data if isinstance(param, Tensor) else param
            shape = tuple(listed[name]["shape"])
            if shape != tuple(data.shape):
                raise CheckpointError(
                    f"{where}: entry {name!r} has shape {shape}, but the model's parameter "
                    f"{name!r} has shape {tuple(data.shape)}"
                )
        updates: list[tuple[Any, Any]] = []
        for name, param in params:
            if name not in listed:
                continue
            data = param.data if isinstance(param, Tensor) else param
            shape = tuple(listed[name]["shape"])
            value = ckpt.array(
                by_name[name], shape, listed[name]["dtype"], f"the metadata says {shape}"
            )
            updates.append((param, _convert(where, name, value, data)))
        opt_update = None
        if optimizer is not None:
            opt_update = _optimizer_state(ckpt, optimizer, params)
    if optimizer is not None:
        # The optimizer validates everything before it changes anything, and raises
        # CheckpointError otherwise; the model is still untouched at this point.
        try:
            optimizer.load_state_dict(opt_update)
        except CheckpointError as exc:
            raise CheckpointError(f"{where}: optimizer state does not fit: {exc}") from None
    for param, value in updates:
        param.data = value
        if isinstance(param, Tensor):
            param.grad = None


def _optimizer_state(
    ckpt: _Checkpoint, optimizer: Any, params: list[tuple[str, Any]]
) -> dict[str, Any]:
    """The optimizer's ``state_dict`` rebuilt from the file, its arrays converted to the
    dtype, backend and device of the parameters they belong to."""
    where, meta = ckpt.where, ckpt.meta
    opt_meta = meta.get("optimizer")
    if opt_meta is None:
        raise CheckpointError(
            f"{where}: the checkpoint holds no optimizer state (save it with "
            "nnbackend.save(model, path, optimizer=opt))"
        )
    opt_params = list(getattr(optimizer, "params", []))
    saved_names = opt_meta.get("parameters", [])
    names = {id(p): name for name, p in params}
    current_names = [names.get(id(p)) for p in opt_params]
    if len(saved_names) != len(current_names):
        raise CheckpointError(
            f"{where}: the saved optimizer had {len(saved_names)} parameters, this one has "
            f"{len(current_names)}"
        )
    for i, (saved, current) in enumerate(zip(saved_names, current_names, strict=True)):
        if saved is not None and current is not None and saved != current:
            raise CheckpointError(
                f"{where}: optimizer parameter {i} was {saved!r} when saved but is {current!r} now"
            )
    state: dict[int, dict[str, Any]] = {}
    for key, entry in opt_meta.get("state", {}).items():
        i = int(key)
        if not 0 <= i < len(opt_params):
            raise CheckpointError(
                f"{where}: optimizer state for parameter {i}, but the optimizer has "
                f"{len(opt_params)} parameters"
            )
        like = opt_params[i].data
        new: dict[str, Any] = dict(entry.get("numbers", {}))
        for name in entry.get("arrays", []):
            array_key = f"{OPTIMIZER_PREFIX}{i}/{name}"
            shape = tuple(like.shape)
            value = ckpt.array(array_key, shape, None, f"its parameter has shape {shape}")
            new[name] = _convert(where, array_key, value, like)
        state[i] = new
    return {
        "type": opt_meta["type"],
        "hyperparameters": opt_meta.get("hyperparameters", {}),
        "steps": opt_meta.get("steps", 0),
        "state": state,
        **opt_meta.get("extra", {}),
    }
