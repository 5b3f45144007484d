"""Checkpoint edges that mutation testing of ``io/__init__.py``, ``io/_files.py`` and
``io/_npz.py`` found untested (issue #21): an optimizer of one's own (no ``params``, no step
count, extra state fields), a file whose optimizer metadata leaves out optional fields, the
temporary file's name, platforms without ``fchmod``, no free temporary name, the zip64 entries
of the ``.npz`` layout, and the entry named in the errors of a damaged ``.npz``."""

from __future__ import annotations

import errno
import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import io, nn, optim
from nnbackend.errors import CheckpointError
from nnbackend.io import _files


def _model(seed: int = 0) -> nn.Sequential:
    with nb.using(backend="numpy", dtype="float64"):
        nb.random.seed(seed)
        return nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))


class _OwnOptimizer:
    """An optimizer of one's own: a ``state_dict`` with no step count and a field of its own,
    and no ``params`` attribute."""

    def __init__(self) -> None:
        self.loaded: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"type": "Own", "state": {}, "warmup": 3}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loaded = state


@pytest.mark.parametrize("suffix", ["npz", "safetensors"])
def test_an_optimizer_of_ones_own_round_trips_with_defaults_and_extra_fields(
    tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"own.{suffix}"
    nb.save(_model(), path, optimizer=_OwnOptimizer())
    opt_meta = io.read_metadata(path)["optimizer"]
    assert opt_meta["steps"] == 0 and opt_meta["hyperparameters"] == {}
    assert opt_meta["parameters"] == [] and opt_meta["extra"] == {"warmup": 3}
    opt = _OwnOptimizer()
    nb.load(_model(1), path, optimizer=opt)
    assert opt.loaded == {
        "type": "Own", "hyperparameters": {}, "steps": 0, "state": {}, "warmup": 3
    }  # fmt: skip


class _Untyped(_OwnOptimizer):
    """A ``state_dict`` without a ``"type"``: the class name stands in for it."""

    def state_dict(self) -> dict[str, Any]:
        return {"state": {}}


def test_an_optimizer_state_without_a_type_is_saved_under_its_class_name(tmp_path: Path) -> None:
    nb.save(_model(), tmp_path / "m.npz", optimizer=_Untyped())
    assert io.read_metadata(tmp_path / "m.npz")["optimizer"]["type"] == "_Untyped"
    opt = _Untyped()
    nb.load(_model(1), tmp_path / "m.npz", optimizer=opt)
    assert opt.loaded is not None and opt.loaded["type"] == "_Untyped"


def _rewrite_metadata(src: Path, dst: Path, change: Any) -> None:
    """``src`` with its metadata entry replaced by ``change(metadata)``."""
    with zipfile.ZipFile(src) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    meta = io.read_metadata(src)
    change(meta)
    buf = json.dumps(meta).encode("utf-8")
    import io as stdio

    out = stdio.BytesIO()
    np.lib.format.write_array(out, np.frombuffer(buf, dtype=np.uint8), allow_pickle=False)
    members[io.METADATA_KEY + ".npy"] = out.getvalue()
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def test_optional_optimizer_fields_missing_from_the_file_load_as_their_defaults(
    tmp_path: Path,
) -> None:
    nb.save(_model(), tmp_path / "full.npz", optimizer=_OwnOptimizer())

    def drop(meta: dict[str, Any]) -> None:
        for key in ("hyperparameters", "steps", "extra", "state"):
            del meta["optimizer"][key]

    _rewrite_metadata(tmp_path / "full.npz", tmp_path / "lean.npz", drop)
    opt = _OwnOptimizer()
    nb.load(_model(1), tmp_path / "lean.npz", optimizer=opt)
    assert opt.loaded == {"type": "Own", "hyperparameters": {}, "steps": 0, "state": {}}


# -- temporary files -------------------------------------------------------------------------
def test_the_temporary_name_carries_this_machine_s_name_made_file_safe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_files.socket, "gethostname", lambda: "node 7.example_org")
    assert _files.tmp_prefix(Path("d/ckpt.npz")) == ".ckpt.npz.node-7-example-org."
    monkeypatch.setattr(_files.socket, "gethostname", lambda: "")
    assert _files.tmp_prefix(Path("ckpt.npz")) == ".ckpt.npz.host."


@pytest.mark.parametrize("missing", [AttributeError, NotImplementedError])
def test_saving_over_a_file_where_fchmod_is_unsupported_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: type[Exception]
) -> None:
    path = tmp_path / "m.npz"
    nb.save(_model(), path)

    def fchmod(fd: int, mode: int) -> None:
        raise missing("no fchmod here")

    monkeypatch.setattr(_files.os, "fchmod", fchmod, raising=False)
    nb.save(_model(2), path)  # replaces the file: its mode is kept by fchmod, here refused
    model = _model(1)
    nb.load(model, path)
    assert np.array_equal(model[0].weight.data, _model(2)[0].weight.data)


def test_no_free_temporary_name_is_an_eexist_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def taken(path: Any, flags: int, mode: int = 0o777) -> int:
        if str(path).endswith(".tmp"):
            raise FileExistsError(errno.EEXIST, "exists", path)
        return real_open(path, flags, mode)

    monkeypatch.setattr(_files.os, "open", taken)
    with pytest.raises(FileExistsError, match="no free temporary name") as info:
        nb.save(_model(), tmp_path / "m.npz")
    assert info.value.errno == errno.EEXIST
    assert "m.npz" in str(info.value)
    assert os.listdir(tmp_path) == []


# -- the .npz layout -------------------------------------------------------------------------
def test_npz_entries_are_zip64_stored_as_numpy_savez_writes_them(tmp_path: Path) -> None:
    """``force_zip64``: an entry is streamed without knowing its size, so its local header
    must leave room for sizes beyond 4 GiB (sizes 0xFFFFFFFF, a zip64 extra field)."""
    path = tmp_path / "m.npz"
    nb.save(_model(), path)
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    assert len(infos) == 5  # four parameters and the metadata
    for info in infos:
        assert info.compress_type == zipfile.ZIP_STORED
        head = raw[info.header_offset : info.header_offset + 30]
        assert head[:4] == b"PK\x03\x04"
        (name_len, extra_len) = struct.unpack("<HH", head[26:30])
        extra = raw[info.header_offset + 30 + name_len :][:extra_len]
        assert extra[:2] == b"\x01\x00", info.filename  # the zip64 extra field's id


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def _write(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


@pytest.mark.parametrize("cut", [1, -1])
def test_a_metadata_entry_of_the_wrong_length_is_named_in_the_error(
    tmp_path: Path, cut: int
) -> None:
    nb.save(_model(), tmp_path / "m.npz")
    members = _members(tmp_path / "m.npz")
    blob = members[io.METADATA_KEY + ".npy"]
    members[io.METADATA_KEY + ".npy"] = blob[:-1] if cut > 0 else blob + b" "
    _write(tmp_path / "bad.npz", members)
    with pytest.raises(CheckpointError, match=r"entry '__nnbackend__' (ends after|holds more)"):
        io.read_metadata(tmp_path / "bad.npz")


def test_a_parameter_entry_with_a_broken_npy_header_is_named_in_the_error(
    tmp_path: Path,
) -> None:
    nb.save(_model(), tmp_path / "m.npz")
    members = _members(tmp_path / "m.npz")
    members["0.weight.npy"] = b"NOTNUMPY" + members["0.weight.npy"][8:]
    _write(tmp_path / "bad.npz", members)
    model = _model(1)
    before = np.array(model[0].weight.data, copy=True)
    with pytest.raises(CheckpointError, match=r"entry '0\.weight' is not a valid \.npy array"):
        nb.load(model, tmp_path / "bad.npz")
    assert np.array_equal(model[0].weight.data, before)


# -- what a checkpoint holds -----------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["npz", "safetensors"])
def test_buffers_are_saved_and_loaded_with_the_parameters(tmp_path: Path, suffix: str) -> None:
    """BatchNorm's running statistics are buffers, not parameters: a checkpoint that left
    them out would load a model that predicts differently in evaluation mode."""
    with nb.using(backend="numpy", dtype="float64"):
        nb.random.seed(0)
        model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
        fresh = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
        x = np.random.default_rng(0).standard_normal((8, 2)) * 3.0 + 1.0
        model(x)  # training mode: the running statistics move
    path = tmp_path / f"bn.{suffix}"
    nb.save(model, path)
    assert set(io.read_metadata(path)["parameters"]) >= {"1.running_mean", "1.running_var"}
    nb.load(fresh, path)
    for name in ("running_mean", "running_var"):
        want = getattr(model[1], name).data
        assert not np.array_equal(want, getattr(nn.BatchNorm1d(3), name).data)
        assert np.array_equal(getattr(fresh[1], name).data, want), name


def test_a_safetensors_header_names_the_format(tmp_path: Path) -> None:
    safetensors = pytest.importorskip("safetensors")
    path = tmp_path / "m.safetensors"
    nb.save(_model(), path)
    with safetensors.safe_open(str(path), framework="numpy") as f:
        header = f.metadata()
    assert header["format"] == io.FORMAT
    assert json.loads(header["nnbackend"])["format"] == io.FORMAT


def test_a_device_file_is_refused_as_not_a_regular_file() -> None:
    if not os.path.exists(os.devnull) or os.name == "nt":
        pytest.skip("needs a character device")
    message = r"is a FIFO, device or socket, not a regular checkpoint file"
    with pytest.raises(CheckpointError, match=message):
        io.read_metadata(os.devnull)
    with pytest.raises(CheckpointError, match=message):
        nb.load(_model(), os.devnull)


# -- every refusal names the file, the entry and what is wrong ---------------------------------
class _BadStateNames:
    def __init__(self, params: list[Any]) -> None:
        self.params = params

    def state_dict(self) -> dict[str, Any]:
        return {"type": "Bad", "state": {0: {"m/v": np.zeros(3)}}}


def test_an_optimizer_state_name_unfit_for_a_zip_entry_is_refused_before_writing(
    tmp_path: Path,
) -> None:
    model = _model()
    with pytest.raises(
        CheckpointError,
        match=r"^cannot save _BadStateNames's state 'm/v': state names must be letters, "
        r"digits, '_', '\.' or '-'$",
    ):
        nb.save(model, tmp_path / "m.npz", optimizer=_BadStateNames(list(model.parameters())))
    assert os.listdir(tmp_path) == []


def test_a_zip_member_that_is_no_npy_array_is_refused(tmp_path: Path) -> None:
    nb.save(_model(), tmp_path / "m.npz")
    members = _members(tmp_path / "m.npz")
    members["notes.txt"] = b"hello"
    _write(tmp_path / "bad.npz", members)
    with pytest.raises(
        CheckpointError,
        match=r"bad\.npz: unexpected entries \['notes\.txt'\] \(a checkpoint holds \.npy "
        r"arrays only\)$",
    ):
        io.read_metadata(tmp_path / "bad.npz")


def test_an_entry_compressed_with_another_method_is_refused(tmp_path: Path) -> None:
    nb.save(_model(), tmp_path / "m.npz")
    members = _members(tmp_path / "m.npz")
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as zf:
        for name, data in members.items():
            method = zipfile.ZIP_BZIP2 if name == "0.weight.npy" else zipfile.ZIP_STORED
            zf.writestr(name, data, compress_type=method)
    with pytest.raises(
        CheckpointError,
        match=r"bad\.npz: entry '0\.weight' uses zip compression method 12; checkpoints are "
        r"stored or deflated$",
    ):
        nb.load(_model(1), tmp_path / "bad.npz")


def test_an_npy_header_longer_than_numpy_accepts_is_refused(tmp_path: Path) -> None:
    nb.save(_model(), tmp_path / "m.npz")
    members = _members(tmp_path / "m.npz")
    members["0.weight.npy"] = b"\x93NUMPY\x02\x00" + struct.pack("<I", 20000) + b" " * 20000
    _write(tmp_path / "bad.npz", members)
    with pytest.raises(
        CheckpointError,
        match=r"entry '0\.weight' is not a valid \.npy array \(a 20000-byte header, more than "
        r"10000\); the file is corrupted$",
    ):
        nb.load(_model(1), tmp_path / "bad.npz")


def test_a_truncated_zip_is_a_checkpoint_error_naming_the_file(tmp_path: Path) -> None:
    nb.save(_model(), tmp_path / "m.npz")
    raw = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(
        CheckpointError,
        match=r"cut\.npz: cannot read the checkpoint \(BadZipFile: .*\); the file is "
        r"truncated, corrupted or not an \.npz checkpoint$",
    ):
        io.read_metadata(tmp_path / "cut.npz")


def test_a_directory_is_refused_as_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(
        CheckpointError, match=r"is a directory, not a(?: regular)? checkpoint file$"
    ):
        io.read_metadata(tmp_path)


def test_loading_a_value_that_overflows_the_model_dtype_says_what_to_do(tmp_path: Path) -> None:
    big = _model()
    big[0].weight.data[0, 0] = 1e6
    nb.save(big, tmp_path / "big.npz")
    with nb.using(backend="numpy", dtype="float16"):
        nb.random.seed(0)
        half = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))
    with pytest.raises(
        CheckpointError,
        match=r"big\.npz: entry '0\.weight' holds values up to 1e\+06, beyond float16's "
        r"6\.55e\+04: loading it into a float16 parameter would make them infinite\. Load into "
        r"a model of a wider dtype$",
    ):
        nb.load(half, tmp_path / "big.npz")


def _adam(model: Any) -> Any:
    opt = optim.Adam(model.parameters(), lr=0.01)
    for p in model.parameters():
        p.grad = p.data * 0.5
    opt.step()
    return opt


def test_an_optimizer_over_other_parameters_is_refused_by_count_and_by_name(
    tmp_path: Path,
) -> None:
    model = _model()
    nb.save(model, tmp_path / "m.npz", optimizer=_adam(model))
    fresh = _model(1)
    params = list(fresh.parameters())
    with pytest.raises(
        CheckpointError,
        match=r"m\.npz: the saved optimizer had 4 parameters, this one has 3$",
    ):
        nb.load(fresh, tmp_path / "m.npz", optimizer=optim.Adam(params[:3]))
    swapped = [params[1], params[0], *params[2:]]
    with pytest.raises(
        CheckpointError,
        match=r"m\.npz: optimizer parameter 0 was '0\.weight' when saved but is '0\.bias' now$",
    ):
        nb.load(fresh, tmp_path / "m.npz", optimizer=optim.Adam(swapped))


def test_optimizer_state_for_a_parameter_the_optimizer_lacks_is_refused(tmp_path: Path) -> None:
    nb.save(_model(), tmp_path / "m.npz", optimizer=_OwnOptimizer())

    def add_state(meta: dict[str, Any]) -> None:
        meta["optimizer"]["state"] = {"5": {"numbers": {"step": 1}, "arrays": []}}

    _rewrite_metadata(tmp_path / "m.npz", tmp_path / "bad.npz", add_state)
    with pytest.raises(
        CheckpointError,
        match=r"bad\.npz: optimizer state for parameter 5, but the optimizer has 0 parameters$",
    ):
        nb.load(_model(1), tmp_path / "bad.npz", optimizer=_OwnOptimizer())


# -- sample B's survivors --------------------------------------------------------------------
def test_a_value_at_float16_s_largest_finite_loads_into_float16(tmp_path: Path) -> None:
    edge = _model()
    edge[0].weight.data[0, 0] = 65504.0  # float16's largest finite value: not an overflow
    nb.save(edge, tmp_path / "edge.npz")
    with nb.using(backend="numpy", dtype="float16"):
        nb.random.seed(0)
        half = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))
    nb.load(half, tmp_path / "edge.npz")
    assert float(half[0].weight.data[0, 0]) == 65504.0


def _dead_pid() -> int:
    pid = 2**22 - 7
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except OSError:
            pass
        pid -= 1


def test_only_files_shaped_like_a_dead_save_s_temporary_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``.<name>.<host>.<pid>.<token>.tmp`` of a dead process goes; names of another shape
    (one field, a non-numeric pid) and other files stay, whatever order the folder lists."""
    path = tmp_path / "m.npz"
    prefix = _files.tmp_prefix(path)
    dead = _dead_pid()
    keep = [
        "notes.txt",
        f"{prefix}{dead}.tmp",  # one field
        f"{prefix}abc.1234.tmp",  # no pid
        f"{prefix}{dead}.ab.cd.tmp",  # three fields
    ]
    stale = f"{prefix}{dead}.0badc0de.tmp"
    for name in [*keep, stale]:
        (tmp_path / name).write_bytes(b"x")
    real_listdir = os.listdir
    monkeypatch.setattr(
        _files.os, "listdir", lambda d: sorted(real_listdir(d), key=lambda n: n == stale)
    )  # the stale one last, after every name to skip
    nb.save(_model(), path)
    assert sorted(real_listdir(tmp_path)) == sorted([*keep, "m.npz"])


def test_a_name_near_the_file_system_limit_still_saves(tmp_path: Path) -> None:
    """The temporary name adds the host, the pid and 8 hex digits to the checkpoint's name:
    a name 20 bytes short of the limit leaves room for them."""
    limit = os.pathconf(tmp_path, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    overhead = len(_files.tmp_prefix(Path("x"))) - 1 + len(str(os.getpid())) + 1 + 8 + 4
    name = "c" * (limit - overhead - 20) + ".npz"
    assert len(name) + 64 > limit - overhead  # a 64-digit token would not fit
    nb.save(_model(), tmp_path / name)
    model = _model(1)
    nb.load(model, tmp_path / name)
    assert np.array_equal(model[0].weight.data, _model()[0].weight.data)


def test_corrupted_metadata_json_is_named_with_its_file(tmp_path: Path) -> None:
    nb.save(_model(), tmp_path / "m.npz")
    members = _members(tmp_path / "m.npz")
    import io as stdio

    out = stdio.BytesIO()
    np.lib.format.write_array(out, np.frombuffer(b"{not json", dtype=np.uint8))
    members[io.METADATA_KEY + ".npy"] = out.getvalue()
    _write(tmp_path / "bad.npz", members)
    where = str(tmp_path / "bad.npz")
    with pytest.raises(CheckpointError) as info:
        io.read_metadata(where)
    assert str(info.value).startswith(f"{where}: the metadata entry is corrupted (")


class _Pair(nn.Module):
    """``a`` (optional) then ``b``: parameter names ``a.*`` come before ``b.*``."""

    def __init__(self, a: int | None, b: int) -> None:
        super().__init__()
        with nb.using(backend="numpy", dtype="float64"):
            if a is not None:
                self.a = nn.Linear(2, a)
            self.b = nn.Linear(2, b)

    def forward(self, x: Any) -> Any:
        return self.b(x)


def test_strict_false_checks_the_shape_of_every_common_entry(tmp_path: Path) -> None:
    """A parameter the file lacks, first in the model, does not stop the shape check of the
    entries after it: a common entry of another shape is refused, the model left as it was."""
    nb.save(_Pair(None, 3), tmp_path / "b.npz")
    model = _Pair(2, 4)  # a.* not in the file; b.* there, with 3 outputs instead of 4
    before = [np.array(p.data, copy=True) for p in model.parameters()]
    with pytest.raises(CheckpointError, match=r"entry 'b\.weight' has shape"):
        nb.load(model, tmp_path / "b.npz", strict=False)
    for p, b in zip(model.parameters(), before, strict=True):
        assert np.array_equal(p.data, b)


@pytest.mark.parametrize("suffix", ["npz", "safetensors"])
def test_an_integer_buffer_is_refused_before_anything_is_written(
    tmp_path: Path, suffix: str
) -> None:
    """``load`` accepts only floating entries (a hostile file's dtype is checked), so a model
    with an integer buffer would save a checkpoint nobody can read: ``save`` refuses it,
    naming the buffer and its dtype, and leaves an existing file as it was."""
    model = _model()
    model.register_buffer("count", np.zeros(3, dtype=np.int64))
    path = tmp_path / f"m.{suffix}"
    path.write_bytes(b"an earlier checkpoint")
    with pytest.raises(CheckpointError, match=r"cannot save 'count': its dtype is int64"):
        nb.save(model, path)
    assert path.read_bytes() == b"an earlier checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"m.{suffix}"]
