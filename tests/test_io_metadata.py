"""The checkpoint metadata checks (``nnbackend.io._metadata``) and the hand-parsed ``.npy``
headers of ``.npz`` entries, field by field: every wrong field is refused with a message
naming the file, the field, what it should be and what it was (issue #21: mutation testing
found most of these branches and messages unchecked)."""

from __future__ import annotations

import copy
import io
import struct
from typing import Any

import pytest

from nnbackend.errors import CheckpointError
from nnbackend.io import _metadata as M
from nnbackend.io import _npz

WHERE = "f.npz"
TAIL = "; the file is corrupted or was not written by nnbackend.save"


def _meta(**changes: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "format": M.FORMAT,
        "format_version": 2,
        "parameters": {"w": {"shape": [2, 3], "dtype": "float32"}, "b": {"shape": [3],
                       "dtype": "float64"}},
    }  # fmt: skip
    meta.update(changes)
    return meta


def _opt(**changes: Any) -> dict[str, Any]:
    opt: dict[str, Any] = {
        "type": "Adam",
        "hyperparameters": {"lr": 0.1},
        "extra": {},
        "parameters": ["w", None],
        "state": {"0": {"numbers": {"t": 1}, "arrays": ["m", "v"]}},
    }
    opt.update(changes)
    return opt


def _refused(meta: Any) -> str:
    with pytest.raises(CheckpointError) as info:
        M.check_metadata(WHERE, meta)
    return str(info.value)


def _bad(field: str, expected: str, got: str) -> str:
    return f"{WHERE}: metadata field {field} should be {expected}, got {got}{TAIL}"


def test_good_metadata_is_returned_as_it_is() -> None:
    for meta in (_meta(), _meta(optimizer=None), _meta(optimizer=_opt()), _meta(format_version=1),
                 _meta(parameters={}), _meta(optimizer=_opt(state={}, parameters=[]))):  # fmt: skip
        assert M.check_metadata(WHERE, meta) is meta
    scalar = _meta(parameters={"s": {"shape": [], "dtype": "float16"}, "e": {"shape": [0, 2],
                   "dtype": "float16"}})  # fmt: skip
    assert M.check_metadata(WHERE, scalar) is scalar


@pytest.mark.parametrize("meta", [[], "x", None, {"format": "other"}, {}])
def test_a_foreign_file_is_no_checkpoint(meta: Any) -> None:
    assert _refused(meta) == f"{WHERE}: not an nnbackend checkpoint (unknown metadata format)"


@pytest.mark.parametrize(
    ("version", "shown"),
    [(True, "True"), ("2", "'2'"), (0, "0"), (-1, "-1"), (None, "None"), (1.5, "1.5")],
)
def test_the_format_version_is_a_positive_int(version: Any, shown: str) -> None:
    assert _refused(_meta(format_version=version)) == _bad("format_version", "a positive int",
                                                            shown)  # fmt: skip


def test_a_newer_format_version_is_refused() -> None:
    assert _refused(_meta(format_version=M.FORMAT_VERSION + 1)) == (
        f"{WHERE}: checkpoint format version 3 is newer than this nnbackend reads (2); "
        "upgrade nnbackend"
    )


@pytest.mark.parametrize("params", [None, [], "w"])
def test_the_parameters_are_an_object(params: Any) -> None:
    meta = _meta(parameters=params)
    if params is None:
        del meta["parameters"]
    assert _refused(meta) == f"{WHERE}: the metadata lists no parameters"


@pytest.mark.parametrize(
    ("info", "field", "expected", "shown"),
    [([1], "", "an object", "[1]"),
     ({"shape": "23", "dtype": "float32"}, ".shape", "a list of non-negative ints", "'23'"),
     ({"shape": [2, -1], "dtype": "float32"}, ".shape", "a list of non-negative ints", "[2, -1]"),
     ({"shape": [True], "dtype": "float32"}, ".shape", "a list of non-negative ints", "[True]"),
     ({"shape": [2.0], "dtype": "float32"}, ".shape", "a list of non-negative ints", "[2.0]"),
     ({"dtype": "float32"}, ".shape", "a list of non-negative ints", "None"),
     ({"shape": [2], "dtype": "int8"}, ".dtype", "one of ['float16', 'float32', 'float64']",
      "'int8'"),
     ({"shape": [2]}, ".dtype", "one of ['float16', 'float32', 'float64']", "None"),
     ({"shape": [2], "dtype": 32}, ".dtype", "one of ['float16', 'float32', 'float64']", "32"),
     ({"shape": [2], "dtype": "float32", "entry": 3}, ".entry", "a distinct entry name", "3"),
     ({"shape": [2], "dtype": "float32", "entry": "__nnbackend__"}, ".entry",
      "a distinct entry name", "'__nnbackend__'"),
     ({"shape": [2], "dtype": "float32", "entry": "optimizer/0/m"}, ".entry",
      "a distinct entry name", "'optimizer/0/m'")],
)  # fmt: skip
def test_each_parameter_field_is_checked(info: Any, field: str, expected: str, shown: str) -> None:
    meta = _meta(parameters={"w": info})
    assert _refused(meta) == _bad(f"parameters['w']{field}", expected, shown)


def test_two_parameters_never_share_an_entry() -> None:
    meta = _meta(parameters={"a": {"shape": [1], "dtype": "float32", "entry": "x"},
                             "b": {"shape": [1], "dtype": "float32", "entry": "x"}})  # fmt: skip
    assert _refused(meta) == _bad("parameters['b'].entry", "a distinct entry name", "'x'")
    meta = _meta(parameters={"x": {"shape": [1], "dtype": "float32"},
                             "b": {"shape": [1], "dtype": "float32", "entry": "x"}})  # fmt: skip
    assert _refused(meta) == _bad("parameters['b'].entry", "a distinct entry name", "'x'")


def test_a_parameter_may_be_named_like_an_optimizer_entry_but_not_mapped_to_one() -> None:
    meta = _meta(parameters={"optimizer/a": {"shape": [1], "dtype": "float32"}})
    assert M.check_metadata(WHERE, meta) is meta


def test_version_1_ignores_entries() -> None:
    """Version 1 keys each parameter by its name: an ``entry`` field means nothing there."""
    meta = _meta(format_version=1, parameters={"w": {"shape": [1], "dtype": "float32",
                                                     "entry": 3}})  # fmt: skip
    assert M.check_metadata(WHERE, meta) is meta
    assert M.entry_of(meta, "w") == "w"
    meta = _meta(parameters={"w": {"shape": [1], "dtype": "float32", "entry": "parameter/0"},
                             "b": {"shape": [1], "dtype": "float32"}})  # fmt: skip
    assert (M.entry_of(meta, "w"), M.entry_of(meta, "b")) == ("parameter/0", "b")


def test_long_values_are_shortened_in_messages() -> None:
    exactly_80 = "x" * 78  # its repr has 80 characters
    message = _refused(_meta(format_version=exactly_80))
    assert message == _bad("format_version", "a positive int", repr(exactly_80))
    longer = "y" * 79
    message = _refused(_meta(format_version=longer))
    assert message == _bad("format_version", "a positive int", repr(longer)[:77] + "...")


@pytest.mark.parametrize(
    ("opt", "field", "expected", "shown"),
    [([], "optimizer", "an object or null", "[]"),
     (_opt(type=None), "optimizer.type", "a string", "None"),
     (_opt(type=3), "optimizer.type", "a string", "3"),
     (_opt(hyperparameters=[]), "optimizer.hyperparameters", "an object", "[]"),
     (_opt(extra=[1]), "optimizer.extra", "an object", "[1]"),
     (_opt(extra={"steps": 1}), "optimizer.extra", "an object of other keys", "['steps']"),
     (_opt(extra={"type": 1, "state": 2, "hyperparameters": 3, "ok": 4}), "optimizer.extra",
      "an object of other keys", "['hyperparameters', 'state', 'type']"),
     (_opt(parameters="w"), "optimizer.parameters", "a list of names", "'w'"),
     (_opt(parameters=["w", 1]), "optimizer.parameters", "a list of names", "['w', 1]"),
     (_opt(state=[]), "optimizer.state", "an object", "[]"),
     (_opt(state={"01": {}}), "optimizer.state key '01'", "a parameter index", "'01'"),
     (_opt(state={"1234567890": {}}), "optimizer.state key '1234567890'", "a parameter index",
      "'1234567890'"),
     (_opt(state={"0": []}), "optimizer.state['0']", "an object", "[]"),
     (_opt(state={"0": {"numbers": []}}), "optimizer.state['0'].numbers", "an object", "[]"),
     (_opt(state={"0": {"arrays": "m"}}), "optimizer.state['0'].arrays", "a list of state names",
      "'m'"),
     (_opt(state={"0": {"arrays": ["a/b"]}}), "optimizer.state['0'].arrays",
      "a list of state names", "['a/b']"),
     (_opt(state={"0": {"arrays": [1]}}), "optimizer.state['0'].arrays",
      "a list of state names", "[1]"),
     (_opt(state={"0": {"arrays": ["m", "m"]}}), "optimizer.state['0'].arrays",
      "names listed once", "['m', 'm']"),
     (_opt(state={"0": {"arrays": ["m"], "numbers": {"m": 1}}}), "optimizer.state['0'].arrays",
      "names listed once", "['m']")],
)  # fmt: skip
def test_each_optimizer_field_is_checked(opt: Any, field: str, expected: str, shown: str) -> None:
    assert _refused(_meta(optimizer=copy.deepcopy(opt))) == _bad(field, expected, shown)


def test_optional_optimizer_fields_may_be_left_out() -> None:
    opt = {"type": "SGD", "state": {"0": {}, "12": {"numbers": {"t": 2}}}}
    meta = _meta(optimizer=opt)
    assert M.check_metadata(WHERE, meta) is meta
    assert M.optimizer_keys(meta) == set()


def test_optimizer_keys_name_every_state_array() -> None:
    meta = _meta(optimizer=_opt(state={"0": {"arrays": ["m", "v"]}, "3": {"arrays": ["m"]},
                                       "4": {}}))  # fmt: skip
    assert M.optimizer_keys(meta) == {"optimizer/0/m", "optimizer/0/v", "optimizer/3/m"}
    assert M.optimizer_keys(_meta()) == set()
    assert M.optimizer_keys(_meta(optimizer={"type": "SGD"})) == set()  # no state at all


@pytest.mark.parametrize("blob", [b"\xff\xfe", b"{", b"[" * 100_000 + b"]" * 100_000])
def test_corrupted_metadata_bytes_are_refused(blob: bytes) -> None:
    with pytest.raises(CheckpointError, match=r"^f\.npz: the metadata entry is corrupted \(.+\)$"):
        M.parse_metadata(WHERE, blob)
    assert M.parse_metadata(WHERE, b'{"a": [1]}') == {"a": [1]}


def test_sizes_are_non_negative_ints() -> None:
    assert [M.is_size(n) for n in (0, 1, 10**12)] == [True, True, True]
    assert [M.is_size(n) for n in (-1, True, False, 1.0, "1", None)] == [False] * 6


def test_the_metadata_cap_grows_with_the_parameter_names() -> None:
    assert M.metadata_cap([]) == M.MAX_METADATA_BYTES
    names = [("n" * 1000, None)] * 200
    assert M.metadata_cap(names) == (1 << 20) + 200 * (1024 + 24 * 1000)


def test_an_entrys_dtype_and_shape_are_checked_with_whole_messages() -> None:
    M.check_entry(WHERE, "w", "float32", (2, 3), (2, 3), "float32", "the model wants it")
    M.check_entry(WHERE, "w", "float16", (2,), (2,), None, "the model wants it")
    with pytest.raises(CheckpointError) as info:
        M.check_entry(WHERE, "w", "int8", (2,), (2,), None, "x")
    assert str(info.value) == f"{WHERE}: entry 'w' has dtype int8, not a floating dtype"
    with pytest.raises(CheckpointError) as info:
        M.check_entry(WHERE, "w", "float16", (2,), (2,), "float32", "x")
    assert str(info.value) == (
        f"{WHERE}: entry 'w' has dtype float16, but the metadata says float32; the file is "
        "corrupted"
    )
    with pytest.raises(CheckpointError) as info:
        M.check_entry(WHERE, "w", "float32", [2, 3], (3, 2), "float32", "the model has (3, 2)")
    assert str(info.value) == f"{WHERE}: entry 'w' has shape (2, 3), but the model has (3, 2)"


# -- the .npy header of each .npz entry, parsed by hand --------------------------------------
def _npy(text: str, major: int = 1, magic: bytes = b"\x93NUMPY", length: int | None = None,
         tail: bytes = b"") -> io.BytesIO:  # fmt: skip
    body = text.encode("latin1")
    size = len(body) if length is None else length
    width = "<H" if major == 1 else "<I"
    return io.BytesIO(magic + bytes([major, 0]) + struct.pack(width, size) + body + tail)


GOOD = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"


def _npy_refused(stream: io.BytesIO) -> str:
    with pytest.raises(CheckpointError) as info:
        _npz._npy_header(WHERE, "k", stream)
    return str(info.value)


@pytest.mark.parametrize("major", [1, 2, 3])
def test_a_good_npy_header_of_each_version_is_parsed(major: int) -> None:
    np = pytest.importorskip("numpy")
    stream = _npy(GOOD, major, tail=b"DATA")
    assert _npz._npy_header(WHERE, "k", stream) == (np.dtype("<f4"), (2, 3), False)
    assert stream.read() == b"DATA"  # left at the first data byte
    text = f"{{'descr': '>f8', 'fortran_order': True, 'shape': {(0,) + (1,) * 63}}}"
    assert _npz._npy_header(WHERE, "k", _npy(text, major)) == (np.dtype(">f8"), (0,) + (1,) * 63,
                                                                True)  # fmt: skip
    text = "{'descr': '|u1', 'fortran_order': False, 'shape': ()}"
    assert _npz._npy_header(WHERE, "k", _npy(text, major))[1] == ()


BAD = f"{WHERE}: entry 'k' is not a valid .npy array"


@pytest.mark.parametrize(
    ("stream", "message"),
    [(io.BytesIO(b"\x93NUM"), f"{WHERE}: entry 'k' ends inside its .npy header; the file is "
      "truncated"),
     (_npy(GOOD, length=len(GOOD) + 1), f"{WHERE}: entry 'k' ends inside its .npy header; the "
      "file is truncated"),
     (_npy(GOOD, major=2, length=10_000), f"{WHERE}: entry 'k' ends inside its .npy header; "
      "the file is truncated"),
     (_npy(GOOD, magic=b"\x93NUMPZ"), f"{BAD} (no .npy magic bytes); the file is corrupted"),
     (_npy(GOOD, major=4), f"{BAD} (unknown .npy format version 4)"),
     (_npy(GOOD, major=0), f"{BAD} (unknown .npy format version 0)"),
     (_npy(GOOD, major=2, length=10_001), f"{BAD} (a 10001-byte header, more than 10000); the "
      "file is corrupted"),
     (_npy("{'descr': "), f"{BAD} (its header is not a dict literal)"),
     (_npy("{'descr': '<f4', 'shape': (2,)}"), f"{BAD} (its header needs exactly descr, "
      "fortran_order, shape)"),
     (_npy("[1, 2, 3]"), f"{BAD} (its header needs exactly descr, fortran_order, shape)"),
     (_npy("{'descr': '<i4', 'fortran_order': False, 'shape': (2,)}"), f"{BAD} (dtype '<i4'; a "
      "checkpoint holds float16/32/64 arrays and uint8 metadata only)"),
     (_npy("{'descr': 4, 'fortran_order': False, 'shape': (2,)}"), f"{BAD} (dtype 4; a "
      "checkpoint holds float16/32/64 arrays and uint8 metadata only)"),
     (_npy("{'descr': '<f4', 'fortran_order': 1, 'shape': (2,)}"), f"{BAD} (fortran_order is 1, "
      "not a bool)"),
     (_npy("{'descr': '<f4', 'fortran_order': False, 'shape': [2]}"), f"{BAD} (shape [2] is not "
      "a tuple of non-negative ints)"),
     (_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -1)}"), f"{BAD} (shape (2, -1) "
      "is not a tuple of non-negative ints)"),
     (_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (True,)}"), f"{BAD} (shape (True,) "
      "is not a tuple of non-negative ints)"),
     (_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,)}"), f"{BAD} (shape (2.0,) "
      "is not a tuple of non-negative ints)"),
     (_npy(f"{{'descr': '<f4', 'fortran_order': False, 'shape': {(1,) * 65}}}"), f"{BAD} (shape "
      f"{(1,) * 65!r} is not a tuple of non-negative ints)")],
)  # fmt: skip
def test_each_npy_header_refusal_has_its_whole_message(stream: io.BytesIO, message: str) -> None:
    assert _npy_refused(stream) == message
