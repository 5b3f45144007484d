"""The safetensors container (nnbackend.io.safetensors): what it writes is what safetensors'
own readers read, and what it reads it checks against the file before touching any data."""

from __future__ import annotations

import json
import os
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnbackend.errors import CheckpointError
from nnbackend.io.safetensors import SafetensorsFile, looks_like_safetensors, write

safetensors_numpy = pytest.importorskip("safetensors.numpy")

DTYPES = ["float16", "float32", "float64", "int64", "uint8", "bool"]


def _write(path, tensors, metadata=None):
    with open(path, "wb") as f:
        write(f, tensors, metadata or {})
    return path


def _raw(path, header: dict | bytes | str, data: bytes = b"", length: int | None = None):
    blob = (
        header
        if isinstance(header, bytes)
        else (header if isinstance(header, str) else json.dumps(header))
    )
    if isinstance(blob, str):
        blob = blob.encode("utf-8")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob) if length is None else length))
        f.write(blob)
        f.write(data)
    return path


names = st.text(min_size=1, max_size=20).filter(lambda s: s != "__metadata__")
shapes = st.lists(st.integers(0, 4), max_size=3).map(tuple)


@settings(max_examples=40, deadline=None)
@given(
    entries=st.dictionaries(names, st.tuples(shapes, st.sampled_from(DTYPES)), max_size=5),
    metadata=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
)
def test_round_trip_through_safetensors_own_reader(tmp_path_factory, entries, metadata):
    rng = np.random.default_rng(0)
    tensors = {
        name: (rng.standard_normal(shape) * 10).astype(dtype)
        for name, (shape, dtype) in entries.items()
    }
    path = _write(tmp_path_factory.mktemp("st") / "a.safetensors", tensors, metadata)
    theirs = safetensors_numpy.load_file(str(path))
    assert set(theirs) == set(tensors)
    for name, value in tensors.items():
        assert theirs[name].dtype == value.dtype and theirs[name].shape == value.shape
        assert np.array_equal(theirs[name], value)
    with SafetensorsFile(path) as ours:
        assert ours.metadata == metadata
        for name, value in tensors.items():
            view = ours.array(name)
            assert view.dtype == value.dtype and np.array_equal(view, value)
            del view


def test_reads_what_safetensors_writes(tmp_path):
    tensors = {"0.weight": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(2)}
    path = tmp_path / "theirs.safetensors"
    safetensors_numpy.save_file(tensors, str(path), metadata={"who": "them"})
    with SafetensorsFile(path) as f:
        assert f.metadata == {"who": "them"}
        assert np.array_equal(f.array("0.weight"), tensors["0.weight"])
        assert not f.array("b").flags.writeable  # a view into the read-only map


def test_zero_d_and_non_contiguous_and_big_endian(tmp_path):
    tensors = {
        "scalar": np.asarray(np.float64(3.5)),
        "t": np.arange(6.0).reshape(2, 3).T,
        "be": np.arange(3, dtype=">i4"),
    }
    path = _write(tmp_path / "x.safetensors", tensors)
    with SafetensorsFile(path) as f:
        assert f.array("scalar").shape == () and float(f.array("scalar")) == 3.5
        assert np.array_equal(f.array("t"), tensors["t"])
        assert np.array_equal(f.array("be"), [0, 1, 2])


def test_writer_refuses_reserved_name_and_unknown_dtype(tmp_path):
    with pytest.raises(CheckpointError, match="__metadata__"), open(tmp_path / "a", "wb") as f:
        write(f, {"__metadata__": np.ones(1)}, {})
    with pytest.raises(CheckpointError, match="complex128"), open(tmp_path / "b", "wb") as f:
        write(f, {"c": np.ones(1, dtype=complex)}, {})


HOSTILE = {
    "lying offsets": ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 12]}}, 8),
    "past the end": ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, 8),
    "overlap": (
        {
            "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
        },
        12,
    ),
    "gap": ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, 8),
    "trailing data": ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 8),
    "huge shape": (
        {"a": {"dtype": "F64", "shape": [2**40, 2**40], "data_offsets": [0, 8]}},
        8,
    ),
    "negative dim": ({"a": {"dtype": "F64", "shape": [-1], "data_offsets": [0, 8]}}, 8),
    "bool dim": ({"a": {"dtype": "F64", "shape": [True], "data_offsets": [0, 8]}}, 8),
    "float offsets": ({"a": {"dtype": "F64", "shape": [1], "data_offsets": [0.0, 8.0]}}, 8),
    "unknown dtype": ({"a": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}, 2),
    "entry not an object": ({"a": [1, 2]}, 0),
    "metadata not strings": ({"__metadata__": {"k": 1}}, 0),
    "header a list": ([1, 2, 3], 0),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_headers_raise_checkpoint_error(tmp_path, case):
    header, nbytes = HOSTILE[case]
    path = _raw(tmp_path / "h.safetensors", header, b"\0" * nbytes)
    with pytest.raises(CheckpointError, match=str(path)):
        SafetensorsFile(path)


def test_hostile_framing(tmp_path):
    cases = {
        "non-utf8": _raw(tmp_path / "a", b'{"\xff": 1}'),
        "deep json": _raw(tmp_path / "b", "[" * 100_000 + "]" * 100_000),
        "deep json object": _raw(tmp_path / "c", '{"a":' * 100_000 + "1" + "}" * 100_000),
        "length past end": _raw(tmp_path / "d", {"a": 1}, length=10**9),
        "not json": _raw(tmp_path / "e", b"{not json"),
        "too short": tmp_path / "f",
    }
    (tmp_path / "f").write_bytes(b"\x01\x02")
    for name, path in cases.items():
        with pytest.raises(CheckpointError):
            SafetensorsFile(path)
        assert name  # every case raised


def test_a_huge_declared_tensor_allocates_nothing(tmp_path):
    # A header that declares a 64 GiB tensor over an 8-byte buffer: refused from the header
    # alone, with no allocation near the declared size.
    path = _raw(
        tmp_path / "bomb.safetensors",
        {"a": {"dtype": "F64", "shape": [2**33], "data_offsets": [0, 2**36]}},
        b"\0" * 8,
    )
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError):
            SafetensorsFile(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_directories_and_fifos_fail_fast(tmp_path):
    import os

    with pytest.raises(CheckpointError, match="directory"):
        SafetensorsFile(tmp_path)
    with pytest.raises(CheckpointError, match="no such"):
        SafetensorsFile(tmp_path / "missing")
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        with pytest.raises(CheckpointError, match="FIFO"):
            SafetensorsFile(fifo)  # would block forever on a plain open()


def test_format_detection():
    assert looks_like_safetensors(struct.pack("<Q", 40) + b'{"a":')
    assert not looks_like_safetensors(b"PK\x03\x04" + b"\0" * 10)
    assert not looks_like_safetensors(b"")


# -- the exact bytes written, each refusal's whole message (issue #21: mutation testing) ------
def test_the_header_is_compact_utf8_json_padded_with_spaces_to_8_bytes(tmp_path):
    tensors = {"wé": np.arange(3, dtype=np.float32), "b": np.ones((2, 2), dtype=np.float64)}
    for meta in ({"ü": "ö"}, {"k": "vv"}, {}):
        path = _write(tmp_path / "t.safetensors", tensors, meta)
        header = ({"__metadata__": meta} if meta else {}) | {
            "wé": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
            "b": {"dtype": "F64", "shape": [2, 2], "data_offsets": [12, 44]},
        }
        blob = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        blob += b" " * (-len(blob) % 8)
        data = tensors["wé"].tobytes() + tensors["b"].tobytes()
        assert path.read_bytes() == struct.pack("<Q", len(blob)) + blob + data


def test_metadata_must_map_strings_to_strings(tmp_path):
    for meta in ({"a": 1}, {1: "a"}):
        with pytest.raises(CheckpointError) as info:
            _write(tmp_path / "m.safetensors", {}, meta)
        assert str(info.value) == "safetensors metadata must map strings to strings"


W = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    ("header", "message"),
    [("[1]", "the header is not a JSON object"),
     ('{"a":' + "[" * 100_000 + "]" * 100_000 + "}", "the header's JSON is nested too deeply"),
     ({"__metadata__": {"a": 1}, "w": W}, "'__metadata__' must map strings to strings"),
     ({"__metadata__": ["a"], "w": W}, "'__metadata__' must map strings to strings"),
     ({"w": [1]}, "entry 'w' is not an object"),
     ({"w": {**W, "dtype": [1]}}, "entry 'w' has dtype [1]; this reader takes ['BOOL', 'F16', "
      "'F32', 'F64', 'I16', 'I32', 'I64', 'I8', 'U16', 'U32', 'U64', 'U8']"),
     ({"w": {**W, "dtype": "F8"}}, "entry 'w' has dtype 'F8'; this reader takes ['BOOL', "
      "'F16', 'F32', 'F64', 'I16', 'I32', 'I64', 'I8', 'U16', 'U32', 'U64', 'U8']"),
     ({"w": {"dtype": "F32", "shape": [2]}}, "entry 'w' needs a 'shape' and 'data_offsets' list"),
     ({"w": {"dtype": "F32", "data_offsets": [0, 8]}},
      "entry 'w' needs a 'shape' and 'data_offsets' list"),
     ({"w": {**W, "shape": [-1]}}, "entry 'w' has an invalid shape [-1]"),
     ({"w": {**W, "data_offsets": [0, 8, 8]}}, "entry 'w' has invalid data_offsets [0, 8, 8]"),
     ({"w": {**W, "data_offsets": [0, "8"]}}, "entry 'w' has invalid data_offsets [0, '8']"),
     ({"w": {**W, "data_offsets": [0, 16]}}, "entry 'w' spans bytes [0, 16) of a 8-byte data "
      "buffer"),
     ({"w": {**W, "shape": [3]}}, "entry 'w' declares shape [3] of float32 (12 bytes) but "
      "spans 8 bytes"),
     ({"w": {**W, "data_offsets": [4, 8]}}, "entry 'w' declares shape [2] of float32 (8 bytes) "
      "but spans 4 bytes"),
     ({"w": {**W, "shape": [1] * 65}}, f"entry 'w' has an invalid shape {[1] * 65}")],
)  # fmt: skip
def test_each_header_refusal_has_its_whole_message(tmp_path, header, message):
    path = _raw(tmp_path / "h.safetensors", header, b"\0" * 8)
    with pytest.raises(CheckpointError) as info:
        SafetensorsFile(path)
    assert str(info.value) == f"{path}: {message}"


def test_bad_utf8_and_bad_json_name_the_cause(tmp_path):
    path = _raw(tmp_path / "u.safetensors", b'{"\xff": 1}')
    with pytest.raises(
        CheckpointError, match=r"^.*u\.safetensors: the header is not UTF-8 \(.+\)$"
    ):
        SafetensorsFile(path)
    path = _raw(tmp_path / "j.safetensors", b'{"a": }')
    with pytest.raises(
        CheckpointError, match=r"j\.safetensors: the header is not valid JSON \(.+\)$"
    ):
        SafetensorsFile(path)


def test_a_tensor_may_have_64_dimensions(tmp_path):
    path = _raw(tmp_path / "d.safetensors", {"w": {**W, "shape": [1] * 63 + [2]}}, b"\0" * 8)
    with SafetensorsFile(path) as f:
        assert f.array("w").shape == (1,) * 63 + (2,)


def test_iterating_a_file_gives_its_entry_names_and_closing_twice_is_harmless(tmp_path):
    path = _write(tmp_path / "i.safetensors", {"b": np.ones(2), "a": np.zeros(1)})
    f = SafetensorsFile(path)
    assert list(f) == ["b", "a"]
    f.close()
    f.close()


def test_a_foreign_files_floating_entries_are_its_parameters(tmp_path):
    from nnbackend.io.safetensors import SafetensorsCheckpoint

    path = _write(tmp_path / "f.safetensors", {"w": np.ones((2, 3), np.float32),
                                              "b": np.ones(3, np.float64)})  # fmt: skip
    ckpt = SafetensorsCheckpoint(str(path), 1000)
    assert ckpt.meta == {
        "format": "nnbackend-checkpoint",
        "format_version": 1,
        "model_class": "(a safetensors file written by another program)",
        "backend": None,
        "parameters": {"w": {"shape": [2, 3], "dtype": "float32"},
                       "b": {"shape": [3], "dtype": "float64"}},
        "optimizer": None,
    }  # fmt: skip
    assert ckpt.stray_names == [] and ckpt.where == str(path)
    with pytest.raises(CheckpointError) as info:
        ckpt.array("w", (3, 2), "float32", "the model's w has shape (3, 2)")
    assert str(info.value) == (
        f"{path}: entry 'w' has shape (2, 3), but the model's w has shape (3, 2)"
    )
    with pytest.raises(CheckpointError) as info:
        ckpt.array("w", (2, 3), "float64", "x")
    assert str(info.value) == (
        f"{path}: entry 'w' has dtype float32, but the metadata says float64; the file is corrupted"
    )
    ckpt.close()


def test_the_checkpoint_metadata_and_header_are_capped(tmp_path):
    from nnbackend.io.safetensors import SafetensorsCheckpoint

    meta = json.dumps({"format": "nnbackend-checkpoint", "format_version": 1,
                       "parameters": {}})  # fmt: skip
    path = _write(tmp_path / "c.safetensors", {}, {"nnbackend": meta})
    SafetensorsCheckpoint(str(path), len(meta)).close()  # exactly the cap is fine
    with pytest.raises(CheckpointError) as info:
        SafetensorsCheckpoint(str(path), len(meta) - 1)
    assert str(info.value) == (
        f"{path}: the metadata holds {len(meta)} characters, more than the {len(meta) - 1} "
        "this reader accepts; the file is corrupted"
    )
    # A long tensor name makes the header long without making the metadata long.
    path = _write(tmp_path / "c.safetensors", {"n" * 400: np.ones(1)}, {"nnbackend": meta})
    header_length = struct.unpack("<Q", path.read_bytes()[:8])[0]
    cap = -(-header_length // 3) - 1  # 3 * cap is just under the header's length
    assert len(meta) <= cap
    with pytest.raises(CheckpointError, match=f"this reader takes at most {3 * cap}"):
        SafetensorsCheckpoint(str(path), cap)
    path = _write(tmp_path / "bad.safetensors", {}, {"nnbackend": "{"})
    with pytest.raises(CheckpointError, match=rf"^{path}: the metadata entry is corrupted"):
        SafetensorsCheckpoint(str(path), 1000)
    path = _write(tmp_path / "v.safetensors", {}, {"nnbackend": "[]"})
    with pytest.raises(CheckpointError, match=rf"^{path}: not an nnbackend checkpoint"):
        SafetensorsCheckpoint(str(path), 1000)


def test_whether_a_process_is_alive(monkeypatch):
    from nnbackend.io import _files

    assert _files._pid_alive(os.getpid()) is True
    assert _files._pid_alive(1) is True  # init: alive, whether or not we may signal it
    assert _files._pid_alive(0) is False  # 0 and below name process groups, not a process
    assert _files._pid_alive(-5) is False
    assert _files._pid_alive(2**70) is True  # cannot tell: the temporary file is kept
    monkeypatch.setattr(os, "name", "nt")  # never probed there: kill() would signal it
    assert _files._pid_alive(2**30) is True


F2 = {"dtype": "F32", "shape": [2]}


@pytest.mark.parametrize(
    ("header", "size", "message"),
    [({"a": {**F2, "data_offsets": [0, 8]}, "b": {**F2, "data_offsets": [4, 12]}}, 12,
      "entry 'b' overlaps another in the data buffer"),
     ({"a": {**F2, "data_offsets": [0, 8]}, "b": {**F2, "data_offsets": [12, 20]}}, 20,
      "entry 'b' leaves a gap before it in the data buffer"),
     ({"a": {**F2, "data_offsets": [4, 12]}}, 12, "entry 'a' leaves a gap before it in the data "
      "buffer"),
     ({"a": {**F2, "data_offsets": [0, 8]}}, 12, "the entries cover 8 of the 12 data bytes; the "
      "file has trailing data or is corrupted")],
)  # fmt: skip
def test_the_entries_must_tile_the_data_buffer(tmp_path, header, size, message):
    path = _raw(tmp_path / "t.safetensors", header, b"\0" * size)
    with pytest.raises(CheckpointError) as info:
        SafetensorsFile(path)
    assert str(info.value) == f"{path}: {message}"


def test_the_length_field_is_checked_against_the_file(tmp_path):
    path = tmp_path / "s.safetensors"
    path.write_bytes(b"\x02\x00")
    with pytest.raises(CheckpointError) as info:
        SafetensorsFile(path)
    assert str(info.value) == f"{path}: 2 bytes is too short for a safetensors header"
    for length in (12, 2**64 - 1):
        path.write_bytes(struct.pack("<Q", length) + b"{}" + b" " * 8)
        with pytest.raises(CheckpointError) as info:
            SafetensorsFile(path)
        assert str(info.value) == (
            f"{path}: the header claims {length} bytes, but the file has 10 after the length "
            "field (this reader takes at most 100000000); the file is truncated or not a "
            "safetensors file"
        )


def test_a_prefix_too_short_to_hold_a_length_is_no_safetensors():
    assert looks_like_safetensors(b"\x02" + b"\0" * 6) is False


def test_the_plausible_header_lengths_are_2_to_the_cap():
    from nnbackend.io.safetensors import MAX_HEADER

    def prefix(n: int) -> bytes:
        return struct.pack("<Q", n) + b"{"

    assert [looks_like_safetensors(prefix(n)) for n in (1, 2, MAX_HEADER, MAX_HEADER + 1)] == [
        False, True, True, False
    ]  # fmt: skip
