"""The safetensors container: write one, and read one without trusting it.

The format (https://huggingface.co/docs/safetensors) is an 8-byte little-endian header length
``N``, ``N`` bytes of UTF-8 JSON, then one flat byte buffer. The JSON maps each tensor's name
to ``{"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}`` (offsets into the
buffer) and may hold ``"__metadata__"``, a map of strings to strings. There is no pickle and no
compression, so a reader can check every declared dtype, shape and byte range against the
file's real size before it reads a byte of data, and then read each tensor straight into its
array.

This module knows the container only; :mod:`nnbackend.io` decides what goes in it. Arrays are
host (NumPy) arrays: the format is a byte layout, and NumPy is the host array library.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from nnbackend.backends import host
from nnbackend.errors import CheckpointError
from nnbackend.io._files import open_regular
from nnbackend.io._metadata import (
    FLOAT_NAMES,
    FORMAT,
    check_entry,
    check_metadata,
    parse_metadata,
)

__all__ = [
    "MAGIC_PREFIX_LEN",
    "METADATA_FIELD",
    "Entry",
    "SafetensorsCheckpoint",
    "SafetensorsFile",
    "looks_like_safetensors",
    "open_safetensors",
    "write",
]

METADATA = "__metadata__"
# The key of nnbackend's checkpoint metadata (JSON) in the header's metadata map.
METADATA_FIELD = "nnbackend"
MAGIC_PREFIX_LEN = 8
# safetensors' own readers refuse headers above 100 MB; so do we, and never more than the file.
MAX_HEADER = 100_000_000
# The dtypes NumPy can hold, by their safetensors names (little-endian, C order).
DTYPES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "U16": "uint16",
    "I16": "int16",
    "U32": "uint32",
    "I32": "int32",
    "U64": "uint64",
    "I64": "int64",
    "F16": "float16",
    "F32": "float32",
    "F64": "float64",
}
NAMES = dict(zip(DTYPES.values(), DTYPES.keys(), strict=True))  # (see registry's tables)


@dataclass(frozen=True)
class Entry:
    """One tensor of a safetensors file, as its header declares it (checked against the file:
    ``end - begin`` is exactly ``prod(shape) * itemsize`` and inside the data buffer)."""

    name: str
    dtype: str  # NumPy's name: "float32"
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def _pad(header: bytes) -> bytes:
    # The writers of the format pad the header with spaces to a multiple of 8 bytes, so that
    # every tensor in the buffer starts 8-byte aligned when its offset is.
    return header + b" " * (-len(header) % 8)


def write(f: IO[bytes], tensors: Mapping[str, Any], metadata: Mapping[str, str]) -> None:
    """Write ``tensors`` (name -> host array) and ``metadata`` (str -> str) to the binary file
    ``f`` as a safetensors container. Names are stored as given: any string except
    ``"__metadata__"``. Tensors are laid out in the mapping's order."""
    np = host.numpy()
    header: dict[str, Any] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise CheckpointError("safetensors metadata must map strings to strings")
        header[METADATA] = dict(metadata)
    arrays: list[Any] = []
    offset = 0
    for name, value in tensors.items():
        if not isinstance(name, str) or name == METADATA:
            raise CheckpointError(
                f"tensor name {name!r} cannot be stored in a safetensors file (names are "
                f"strings other than {METADATA!r})"
            )
        array = np.asarray(value)  # not ascontiguousarray: it turns 0-d into 1-d
        if not array.flags.c_contiguous:
            array = array.copy(order="C")
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        array = array.astype(dtype, copy=False)
        st_name = NAMES.get(dtype.name)
        if st_name is None:
            raise CheckpointError(
                f"tensor {name!r} has dtype {array.dtype}, which safetensors cannot hold here; "
                f"supported: {sorted(NAMES)}"
            )
        header[name] = {
            "dtype": st_name,
            "shape": [int(n) for n in array.shape],
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
        arrays.append(array)
    blob = _pad(json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for array in arrays:
        if array.nbytes:
            # The array's own buffer: no second copy of a large tensor in memory.
            f.write(memoryview(array.reshape(-1)).cast("B"))


def looks_like_safetensors(prefix: bytes) -> bool:
    """Whether a file's first bytes (at least 9) could start a safetensors container: a
    plausible header length followed by ``{``. (An ``.npz`` file starts with ``PK``.)"""
    if len(prefix) < MAGIC_PREFIX_LEN + 1:
        return False
    (size,) = struct.unpack("<Q", prefix[:MAGIC_PREFIX_LEN])
    return 2 <= size <= MAX_HEADER and prefix[MAGIC_PREFIX_LEN : MAGIC_PREFIX_LEN + 1] == b"{"


def _int(value: Any) -> int | None:
    # JSON booleans are ints in Python; a shape or offset is never one.
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


class SafetensorsFile:
    """A safetensors file opened for reading: the header parsed and checked, the file kept open.

    Every check runs in the constructor, before any tensor data is touched: the header
    length, UTF-8 and JSON (with a nesting limit), each entry's dtype, shape and byte range,
    that the ranges tile the data buffer exactly (no overlap, no gap, nothing past the end),
    and the metadata map's types. Any failure raises :class:`~nnbackend.errors.CheckpointError`
    naming the file and the entry. :meth:`array` then reads one entry into a new read-only array
    (no memory map: a file truncated by another program while it is read is an error, never a
    SIGBUS).

    Use it as a context manager.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_header: int = MAX_HEADER) -> None:
        self.path = os.fspath(path)
        # Kept open and read entry by entry (never memory-mapped: another program truncating
        # the file while it is read would kill this process with SIGBUS).
        self._file: Any = open_regular(self.path)  # a buffered binary file, or None
        try:
            self._read_header(self._file, max_header)
        except BaseException:
            self.close()
            raise

    def _read_header(self, f: IO[bytes], max_header: int) -> None:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(MAGIC_PREFIX_LEN)
        if len(prefix) < MAGIC_PREFIX_LEN:
            raise self._error(f"{size} bytes is too short for a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        limit = min(max_header, MAX_HEADER)
        if length > min(limit, size - MAGIC_PREFIX_LEN):
            raise self._error(
                f"the header claims {length} bytes, but the file has "
                f"{size - MAGIC_PREFIX_LEN} after the length field (this reader takes at "
                f"most {limit}); the file is truncated or not a safetensors file"
            )
        raw = f.read(length)
        if len(raw) != length:
            raise self._error("the file ends inside its header")
        self.header_size = MAGIC_PREFIX_LEN + length
        self.data_size = size - self.header_size
        self.metadata, self.entries = self._parse(raw)

    def _error(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {what}")

    def _parse(self, raw: bytes) -> tuple[dict[str, str], dict[str, Entry]]:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self._error(f"the header is not UTF-8 ({exc})") from None
        if not text.startswith("{"):
            raise self._error("the header is not a JSON object")
        try:
            header = json.loads(text)
        except RecursionError:
            raise self._error("the header's JSON is nested too deeply") from None
        except ValueError as exc:
            raise self._error(f"the header is not valid JSON ({exc})") from None
        if not isinstance(header, dict):
            raise self._error("the header is not a JSON object")
        metadata = header.pop(METADATA, None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise self._error(f"{METADATA!r} must map strings to strings")
        np = host.numpy()
        entries: dict[str, Entry] = {}
        for name, spec in header.items():
            if not isinstance(spec, dict):
                raise self._error(f"entry {name!r} is not an object")
            raw_dtype = spec.get("dtype")
            dtype = DTYPES.get(raw_dtype) if isinstance(raw_dtype, str) else None
            if dtype is None:
                raise self._error(
                    f"entry {name!r} has dtype {spec.get('dtype')!r}; this reader takes "
                    f"{sorted(DTYPES)}"
                )
            shape_in, offsets = spec.get("shape"), spec.get("data_offsets")
            if not isinstance(shape_in, list) or not isinstance(offsets, list):
                raise self._error(f"entry {name!r} needs a 'shape' and 'data_offsets' list")
            shape = tuple(_int(n) for n in shape_in)
            if len(shape) > 64 or any(n is None or n < 0 for n in shape):
                raise self._error(f"entry {name!r} has an invalid shape {shape_in!r}")
            # An empty tensor has no bytes to hold its dimensions to, and NumPy makes no array
            # whose dimensions (zeros aside) span more bytes than it can index.
            extent = np.dtype(dtype).itemsize
            for n in shape:
                extent *= max(n or 0, 1)
            if extent > sys.maxsize:
                raise self._error(f"entry {name!r} has an invalid shape {shape_in!r:.200}")
            bounds = [_int(n) for n in offsets]
            if len(bounds) != 2 or any(n is None for n in bounds):
                raise self._error(f"entry {name!r} has invalid data_offsets {offsets!r}")
            begin, end = bounds[0] or 0, bounds[1] or 0
            count = 1
            for n in shape:
                count *= n or 0
            if not 0 <= begin <= end <= self.data_size:
                raise self._error(
                    f"entry {name!r} spans bytes [{begin}, {end}) of a {self.data_size}-byte "
                    "data buffer"
                )
            if end - begin != count * np.dtype(dtype).itemsize:
                raise self._error(
                    f"entry {name!r} declares shape {list(shape)} of {dtype} "
                    f"({count * np.dtype(dtype).itemsize} bytes) but spans {end - begin} bytes"
                )
            entries[name] = Entry(name, dtype, tuple(n or 0 for n in shape), begin, end)
        # The ranges must tile the buffer: sorted by start, each begins where the last ended.
        cursor = 0
        for entry in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
            if entry.begin != cursor:
                what = "overlaps another" if entry.begin < cursor else "leaves a gap before it"
                raise self._error(f"entry {entry.name!r} {what} in the data buffer")
            cursor = entry.end
        if cursor != self.data_size:
            raise self._error(
                f"the entries cover {cursor} of the {self.data_size} data bytes; the file has "
                "trailing data or is corrupted"
            )
        return dict(metadata), entries

    def array(self, name: str) -> Any:
        """Entry ``name`` read into a new read-only host array. A file that another program
        shortened since it was opened is a :class:`~nnbackend.errors.CheckpointError`."""
        np = host.numpy()
        entry = self.entries[name]
        dtype = np.dtype(entry.dtype).newbyteorder("<")
        out = np.zeros(entry.shape, dtype=dtype)
        if entry.nbytes:
            if self._file is None:
                raise self._error(f"cannot read entry {name!r}: the file is closed")
            buffer = memoryview(out.reshape(-1)).cast("B")
            done = 0
            try:
                self._file.seek(self.header_size + entry.begin)
                while done < entry.nbytes:
                    got = self._file.readinto(buffer[done:])
                    if not got:
                        break
                    done += got
            except OSError as exc:
                raise self._error(f"cannot read entry {name!r} ({exc.strerror or exc})") from None
            if done < entry.nbytes:
                raise self._error(
                    f"the file ends inside entry {name!r} ({done} of its {entry.nbytes} "
                    "bytes): it was truncated, or is being written by another program"
                )
        out.flags.writeable = False
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def close(self) -> None:
        """Close the file (the arrays read from it stay valid)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SafetensorsCheckpoint:
    """A safetensors file read as an nnbackend checkpoint: the same face as the ``.npz``
    reader (``where``, ``meta``, ``entries``, ``stray_names``, :meth:`array`), so one loader
    serves both formats.

    nnbackend's own files carry their metadata (the same JSON as an ``.npz`` checkpoint's) in
    the header's metadata map under ``"nnbackend"``. A file another program wrote (say
    ``safetensors.torch.save_file(model.state_dict())``) has none: its floating entries are
    then taken as the parameters, keyed by name.
    """

    def __init__(self, where: str, meta_cap: int) -> None:
        self.where = where
        # The header holds the metadata (JSON-escaped, so up to twice its size) and one
        # short record a tensor: bounded by what this model's metadata may need.
        self.file = SafetensorsFile(where, max_header=3 * meta_cap)
        self.entries = self.file.entries
        self.stray_names: list[str] = []
        blob = self.file.metadata.get(METADATA_FIELD)
        # Whether another program wrote it: its layout is then unknown (see nnbackend.load).
        self.foreign = blob is None
        if blob is None:
            self.meta = self._foreign_metadata()
        else:
            if len(blob) > meta_cap:
                raise CheckpointError(
                    f"{where}: the metadata holds {len(blob)} characters, more than the "
                    f"{meta_cap} this reader accepts; the file is corrupted"
                )
            self.meta = check_metadata(where, parse_metadata(where, blob.encode("utf-8")))

    def _foreign_metadata(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for name, entry in self.entries.items():
            if entry.dtype not in FLOAT_NAMES:
                raise CheckpointError(
                    f"{self.where}: entry {name!r} has dtype {entry.dtype}; a checkpoint holds "
                    f"floating arrays ({sorted(FLOAT_NAMES)})"
                )
            params[name] = {"shape": list(entry.shape), "dtype": entry.dtype}
        return {
            "format": FORMAT,
            "format_version": 1,
            "model_class": "(a safetensors file written by another program)",
            "backend": None,
            "parameters": params,
            "optimizer": None,
        }

    def array(self, key: str, shape: tuple[int, ...], dtype_name: str | None, what: str) -> Any:
        """Entry ``key`` read into a read-only host array, after checking that
        it is a floating array of ``shape`` (and of ``dtype_name`` when given)."""
        entry = self.entries[key]
        check_entry(self.where, key, entry.dtype, entry.shape, shape, dtype_name, what)
        return self.file.array(key)

    def close(self) -> None:
        self.file.close()


@contextlib.contextmanager
def open_safetensors(where: str, meta_cap: int) -> Iterator[SafetensorsCheckpoint]:
    """The safetensors checkpoint at ``where``, its header and metadata checked."""
    ckpt = SafetensorsCheckpoint(where, meta_cap)
    try:
        yield ckpt
    finally:
        ckpt.close()
