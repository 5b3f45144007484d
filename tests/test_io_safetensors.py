"""Checkpoints in safetensors, the default format: what nb.save writes, safetensors' own
readers read; what they write (with matching keys), nb.load loads; hostile files raise
CheckpointError and change nothing."""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend import io, nn, optim, registry
from nnbackend.errors import ArgumentError, CheckpointError

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, nb.Tensor) else a
    return np.array(registry.get(registry.backend_of(a)).to_host(a), copy=True)


class Named:
    """A model whose parameters have exactly the given names (see test_io_hostile.Named)."""

    def __init__(self, names: list[str], seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        xp = nb.namespace()
        self._params = {
            name: nn.Parameter(xp.asarray(rng.standard_normal((i % 3 + 1, 2))))
            for i, name in enumerate(names)
        }

    def named_parameters(self) -> Any:
        return iter(self._params.items())

    def parameters(self) -> Any:
        return iter(self._params.values())


def _model(seed: int = 0, dtype: str = "float64") -> nn.Sequential:
    with nb.using(dtype=dtype):
        nb.random.seed(seed)
        return nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 3))


def _adam_stepped(model: Any, lr: float = 0.01) -> optim.Adam:
    opt = optim.Adam(model.parameters(), lr=lr)
    for p in model.parameters():
        p.grad = p.data * 0.5 + 0.25
    opt.step()
    opt.zero_grad()
    return opt


def _values(model: Any) -> dict[str, np.ndarray]:
    return {name: _host(p) for name, p in model.named_parameters()}


def _same_values(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _opt_arrays(opt: optim.Optimizer) -> dict[str, np.ndarray]:
    sd = opt.state_dict()
    return {
        f"{i}/{k}": _host(v) for i, e in sd["state"].items() for k, v in e.items() if k != "step"
    }


def test_default_format_is_safetensors_and_npz_by_suffix(tmp_path: Path) -> None:
    model = _model()
    nb.save(model, tmp_path / "m.safetensors")
    nb.save(model, tmp_path / "m.ckpt")
    nb.save(model, tmp_path / "m.npz")
    nb.save(model, tmp_path / "forced.bin", format="npz")
    assert (tmp_path / "m.npz").read_bytes()[:2] == b"PK"
    assert (tmp_path / "forced.bin").read_bytes()[:2] == b"PK"
    for name in ("m.safetensors", "m.ckpt"):
        assert set(safetensors_numpy.load_file(str(tmp_path / name))) == set(_values(model))
    for name in ("m.safetensors", "m.ckpt", "m.npz", "forced.bin"):  # load tells by content
        other = _model(seed=3)
        nb.load(other, tmp_path / name)
        assert _same_values(_values(other), _values(model))
    with pytest.raises(ArgumentError, match="format"):
        nb.save(model, tmp_path / "x", format="pickle")


def test_metadata_and_optimizer_state_round_trip(tmp_path: Path) -> None:
    model = _model()
    opt = _adam_stepped(model)
    path = tmp_path / "m.safetensors"
    nb.save(model, path, optimizer=opt)
    theirs = safetensors_numpy.load_file(str(path))
    assert set(theirs) == set(_values(model)) | {f"optimizer/{k}" for k in _opt_arrays(opt)}
    meta = io.read_metadata(path)
    assert meta["model_class"].endswith("Sequential") and meta["optimizer"]["type"] == "Adam"
    victim = _model(seed=5)
    victim_opt = _adam_stepped(victim, lr=0.3)
    nb.load(victim, path, optimizer=victim_opt)
    assert _same_values(_values(victim), _values(model))
    assert _same_values(_opt_arrays(victim_opt), _opt_arrays(opt))
    assert victim_opt.state_dict()["hyperparameters"] == opt.state_dict()["hyperparameters"]


@pytest.mark.parametrize("store", [None, "float16", "float32"])
def test_every_dtype_and_backend_through_safetensors_readers(
    tmp_path: Path, backend: str, dtype: str, store: str | None
) -> None:
    with nb.using(backend=backend, dtype=dtype):
        model = _model(dtype=dtype)
        path = tmp_path / "m.safetensors"
        nb.save(model, path, dtype=store)
        theirs = safetensors_numpy.load_file(str(path))
        for name, value in _values(model).items():
            assert theirs[name].dtype == np.dtype(store or dtype)
            np.testing.assert_array_equal(theirs[name], value.astype(store or dtype))
        back = _model(seed=9, dtype=dtype)
        nb.load(back, path)
        for name, value in _values(back).items():
            assert value.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(value, theirs[name].astype(dtype))


def test_float16_halves_the_file(tmp_path: Path) -> None:
    with nb.using(dtype="float32"):
        model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64))
    nb.save(model, tmp_path / "f32.safetensors")
    nb.save(model, tmp_path / "f16.safetensors", dtype="float16")
    full = os.path.getsize(tmp_path / "f32.safetensors")
    half = os.path.getsize(tmp_path / "f16.safetensors")
    assert half < 0.55 * full


def test_files_written_by_safetensors_and_torch_load(tmp_path: Path) -> None:
    model = _model()
    path = tmp_path / "theirs.safetensors"
    safetensors_numpy.save_file(
        {k: np.ascontiguousarray(v) for k, v in _values(model).items()}, str(path)
    )
    victim = _model(seed=4)
    nb.load(victim, path)
    assert _same_values(_values(victim), _values(model))
    assert "another program" in io.read_metadata(path)["model_class"]
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    theirs = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    tpath = tmp_path / "torch.safetensors"
    st_torch.save_file(theirs.double().state_dict(), str(tpath))
    ours = _model()
    with pytest.raises(CheckpointError, match="shape"):
        nb.load(ours, tpath)
    ours.load_state_dict(safetensors_numpy.load_file(str(tpath)), layout="torch")
    x = np.random.default_rng(0).standard_normal((3, 2))
    np.testing.assert_allclose(
        ours(x).data, theirs(torch.from_numpy(x)).detach().numpy(), rtol=0, atol=1e-12
    )
    # ...and nb.save's file loads in safetensors.torch.
    nb.save(model, tmp_path / "ours.safetensors")
    loaded = st_torch.load_file(str(tmp_path / "ours.safetensors"))
    for name, value in _values(model).items():
        np.testing.assert_array_equal(loaded[name].numpy(), value)


def test_foreign_files_with_other_dtypes_or_keys_are_refused(tmp_path: Path) -> None:
    model = _model()
    values = _values(model)
    before = _values(model)
    cases = {
        "int64": {**values, "steps": np.arange(3)},
        "missing from the file": {k: v for k, v in values.items() if k != "0.weight"},
        "not in the model": {**values, "9.weight": np.ones(2)},
    }
    for match, tensors in cases.items():
        path = tmp_path / "f.safetensors"
        safetensors_numpy.save_file(
            {k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path)
        )
        with pytest.raises(CheckpointError, match=match):
            nb.load(model, path)
        assert _same_values(_values(model), before)


HOSTILE_NAMES = [
    "__metadata__", "__nnbackend__", "optimizer/0/m", "parameter/0", "../../etc/passwd",
    "a\x00b", "", "ü.weight", "x" * 300, "a b", "0.weight", "{", '"', "\n", "\ud800",
]  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(
    names=st.lists(st.text(max_size=12), min_size=1, max_size=6, unique=True)
    | st.just(HOSTILE_NAMES)
)
def test_round_trip_of_arbitrary_names(names: list[str]) -> None:
    model = Named(names)
    opt = _adam_stepped(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "c.safetensors")
        nb.save(model, path, optimizer=opt)
        theirs = safetensors_numpy.load_file(path)  # their reader takes it as it is
        assert len(theirs) == len(names) + 2 * len(names)
        back = Named(names, seed=1)
        back_opt = _adam_stepped(back, lr=0.5)
        nb.load(back, path, optimizer=back_opt)
        assert _same_values(_values(back), _values(model))
        assert _same_values(_opt_arrays(back_opt), _opt_arrays(opt))


# -- hostile files: CheckpointError, nothing changed -----------------------------------------
def _refused(path: Path, match: str | None = None) -> None:
    victim = _model(seed=5)
    opt = _adam_stepped(victim, lr=0.3)
    before, opt_before = _values(victim), _opt_arrays(opt)
    with pytest.raises(CheckpointError, match=match):
        nb.load(victim, path, optimizer=opt)
    assert _same_values(_values(victim), before)
    assert _same_values(_opt_arrays(opt), opt_before)


def _rewrite(src: Path, dst: Path, edit: Any) -> None:
    """``src`` with its header JSON replaced by ``edit(header)`` (the data kept)."""
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    blob = json.dumps(edit(header)).encode()
    dst.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n :])


@pytest.fixture
def good(tmp_path: Path) -> Path:
    model = _model()
    path = tmp_path / "good.safetensors"
    nb.save(model, path, optimizer=_adam_stepped(model))
    return path


def _set(header: dict[str, Any], key: str, field: str, value: Any) -> dict[str, Any]:
    header[key][field] = value
    return header


def _meta_edit(edit: Any) -> Any:
    def apply(header: dict[str, Any]) -> dict[str, Any]:
        meta = json.loads(header["__metadata__"]["nnbackend"])
        header["__metadata__"]["nnbackend"] = json.dumps(edit(meta))
        return header

    return apply


HOSTILE_EDITS = {
    "lying offsets": lambda h: _set(h, "0.weight", "data_offsets", [0, 4]),
    "overlapping ranges": lambda h: _set(
        h, "0.bias", "data_offsets", h["0.weight"]["data_offsets"]
    ),
    "huge shape": lambda h: _set(h, "0.weight", "shape", [2**40, 2**40]),
    "other dtype": lambda h: _set(h, "0.weight", "dtype", "I64"),
    "metadata says other shape": _meta_edit(
        lambda m: {
            **m,
            "parameters": {
                **m["parameters"],
                "0.weight": {**m["parameters"]["0.weight"], "shape": [4, 2]},
            },
        }
    ),
    "metadata not json": lambda h: {**h, "__metadata__": {"nnbackend": "{nope"}},
    "metadata wrong types": _meta_edit(lambda m: {**m, "parameters": [1, 2]}),
    "stray optimizer entry": lambda h: {
        **{k: v for k, v in h.items() if k != "optimizer/0/m"},
        "optimizer/9/m": h["optimizer/0/m"],
    },
    "optimizer lr nan": _meta_edit(
        lambda m: {
            **m,
            "optimizer": {
                **m["optimizer"],
                "hyperparameters": {**m["optimizer"]["hyperparameters"], "lr": float("nan")},
            },
        }
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_EDITS))
def test_hostile_headers_change_nothing(good: Path, tmp_path: Path, case: str) -> None:
    bad = tmp_path / "bad.safetensors"
    _rewrite(good, bad, HOSTILE_EDITS[case])
    _refused(bad)


def test_deep_and_non_utf8_headers(tmp_path: Path) -> None:
    for name, blob in {
        "deep": b"{" + b'"a":[' * 50_000 + b"]" * 50_000 + b"}",
        "utf8": b'{"\xff\xfe": 1}',
    }.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(struct.pack("<Q", len(blob)) + blob)
        _refused(path)


def test_a_header_larger_than_the_model_needs_is_refused_unread(tmp_path: Path) -> None:
    # 50 MB of header padding: refused from the length field, never read or parsed.
    path = tmp_path / "padded.safetensors"
    blob = b"{}" + b" " * 50_000_000
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)
    _refused(path, "at most")


# -- fuzzing ------------------------------------------------------------------------------------
_BASE: dict[str, Any] = {}


def _base() -> dict[str, Any]:
    if not _BASE:
        model = _model()
        opt = _adam_stepped(model)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "base.safetensors"
            nb.save(model, path, optimizer=opt)
            _BASE.update(data=path.read_bytes(), values=_values(model), opt=_opt_arrays(opt))
    return _BASE


def _load_fuzzed(data: bytes, *, exact_optimizer: bool = True) -> None:
    base = _base()
    victim = _model(seed=5)
    opt = _adam_stepped(victim, lr=0.3)
    before, opt_before = _values(victim), _opt_arrays(opt)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzzed.safetensors"
        path.write_bytes(data)
        try:
            nb.load(victim, path, optimizer=opt)
        except CheckpointError:
            assert _same_values(_values(victim), before)
            assert _same_values(_opt_arrays(opt), opt_before)
        else:
            # A flip in bytes nothing depends on (header padding, a JSON space): the load
            # must then give exactly the saved values.
            assert _same_values(_values(victim), base["values"])
            if exact_optimizer:
                assert _same_values(_opt_arrays(opt), base["opt"])
            hyper = opt.state_dict()["hyperparameters"]
            assert all(math.isfinite(v) for v in hyper.values() if isinstance(v, float))
        with contextlib.suppress(CheckpointError):
            io.read_metadata(path)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fuzz_byte_flips_and_truncations(data: st.DataObject) -> None:
    raw = bytearray(_base()["data"])
    (n,) = struct.unpack("<Q", raw[:8])
    # Most flips land in the header (where the parsing is), some in the data.
    spot = st.one_of(st.integers(0, 8 + n - 1), st.integers(0, len(raw) - 1))
    for at, mask in data.draw(st.lists(st.tuples(spot, st.integers(1, 255)), max_size=4)):
        if at >= 8 + n:
            continue  # a flipped data byte is a different but valid value: not a hostile file
        raw[at] ^= mask
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(raw))))
    _load_fuzzed(bytes(raw if cut is None else raw[:cut]))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fuzz_random_metadata_json(data: st.DataObject) -> None:
    raw = _base()["data"]
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    if data.draw(st.booleans()):
        header["__metadata__"]["nnbackend"] = json.dumps(data.draw(_json))
    else:
        meta = json.loads(header["__metadata__"]["nnbackend"])
        key = data.draw(st.sampled_from(sorted(meta)))
        if data.draw(st.booleans()):
            del meta[key]
        else:
            meta[key] = data.draw(_json)
        header["__metadata__"]["nnbackend"] = json.dumps(meta)
    blob = json.dumps(header).encode()
    _load_fuzzed(struct.pack("<Q", len(blob)) + blob + raw[8 + n :], exact_optimizer=False)
