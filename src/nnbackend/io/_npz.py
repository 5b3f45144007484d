"""The ``.npz`` checkpoint format: written entry by entry (never ``numpy.savez(**names)``),
and read without trusting it: the zip directory and each ``.npy`` header are parsed here,
never with pickle, and each array's shape and dtype are checked before its bytes are inflated.
NumPy is the host array library and ``.npz`` is its format, so this module works on NumPy
arrays."""

from __future__ import annotations

import ast
import contextlib
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

from nnbackend.backends import host
from nnbackend.errors import CheckpointError
from nnbackend.io._files import open_regular
from nnbackend.io._metadata import METADATA_KEY, check_entry, check_metadata, parse_metadata

__all__ = ["NpzCheckpoint", "open_npz", "unreadable", "write_npz"]


def write_npz(f: Any, entries: list[tuple[str, Any]]) -> None:
    """The ``.npz`` layout of ``numpy.savez`` (stored, zip64 entries ``<key>.npy``), written
    here so that no name is ever passed as a keyword argument."""
    np = host.numpy()
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in entries:
            with zf.open(key + ".npy", "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asanyarray(value), allow_pickle=False)


_NPY_MAGIC = b"\x93NUMPY"
# NumPy's own reader refuses longer headers (numpy.lib.format: max_header_size=10000).
_MAX_NPY_HEADER = 10000
# The .npy dtypes a checkpoint holds: floating arrays and the uint8 metadata blob.
_FLOAT_DESCRS = frozenset({"<f2", "<f4", "<f8", ">f2", ">f4", ">f8"})
_METADATA_DESCRS = frozenset({"|u1", "<u1", ">u1"})


class _Entry:
    """One ``.npy`` member of the zip: its key (the name less ``.npy``) and zip record."""

    __slots__ = ("info", "key")

    def __init__(self, key: str, info: zipfile.ZipInfo) -> None:
        self.key = key
        self.info = info


class NpzCheckpoint:
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
        self.meta = check_metadata(where, parse_metadata(where, self._metadata_bytes(meta_cap)))

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
        with unreadable(self.where):
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
            check_entry(self.where, key, dtype.name, got, shape, dtype_name, what)
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


@contextlib.contextmanager
def unreadable(where: str) -> Iterator[None]:
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
def open_npz(path: str | os.PathLike[str], meta_cap: int) -> Iterator[NpzCheckpoint]:
    """The checkpoint at ``path``, open, its metadata read and validated; any failure to read
    it is a :class:`CheckpointError` naming the file."""
    where = os.fspath(path)
    with open_regular(where) as f:
        with unreadable(where):
            zf = zipfile.ZipFile(f)
        with zf:
            with unreadable(where):
                ckpt = NpzCheckpoint(where, zf, meta_cap)
            yield ckpt
