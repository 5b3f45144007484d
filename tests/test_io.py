"""Checkpoints: ``nnbackend.save`` / ``nnbackend.load`` round trips across dtypes and backends,
a pickle-free format, atomic writes, and validation that leaves the model untouched."""

from __future__ import annotations

import itertools
import json
import os
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend import datasets, io, nn, optim, registry
from nnbackend.errors import CheckpointError

# Usable here and selected by NNBACKEND_TEST_BACKENDS when it is set (as the backend fixture
# does; the mutation runner keeps torch out of mutmut's forked children, where it deadlocks).
_SELECTED = {
    b.strip() for b in os.environ.get("NNBACKEND_TEST_BACKENDS", "").split(",") if b.strip()
}
# cupy and jax only where named (the GPU check names cupy alone: its files then go cupy to
# cupy; with none of these usable the round trip is skipped, not an empty strategy's error).
AVAILABLE = [
    b
    for b in ("numpy", "array_api_strict", "torch", "cupy", "jax")
    if registry.probe(b) is None
    and (b in _SELECTED or (not _SELECTED and b not in ("cupy", "jax")))
]


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, nb.Tensor) else a
    return np.array(registry.get(registry.backend_of(a)).to_host(a), copy=True)


def _snapshot(model: nn.Module) -> dict[str, tuple[np.ndarray, str, str]]:
    return {
        name: (_host(p.data), str(p.dtype), registry.backend_of(p.data))
        for name, p in model.named_parameters()
    }


def _assert_same(model: nn.Module, snapshot: dict[str, tuple[np.ndarray, str, str]]) -> None:
    now = _snapshot(model)
    assert list(now) == list(snapshot)
    for name, (value, dtype, backend) in snapshot.items():
        assert now[name][1:] == (dtype, backend), name
        assert np.array_equal(now[name][0], value), name


def _mlp(sizes: list[int], bias: bool = True, seed: int = 0) -> nn.Sequential:
    nb.random.seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        if i:
            layers.append(nn.Tanh())
        layers.append(nn.Linear(a, b, bias=bias))
    return nn.Sequential(*layers)


def _trained(tmp_dtype: str = "float64") -> tuple[nn.Sequential, optim.Adam, Any, Any]:
    with nb.using(dtype=tmp_dtype):
        model = _mlp([2, 10, 3])
        opt = optim.Adam(model.parameters(), lr=0.01)
        x, t = datasets.spiral()
        nb.Trainer(model, nn.SoftmaxCrossEntropy(), opt).fit(
            x, t, epochs=2, batch_size=30, seed=0, progress=False
        )
    return model, opt, x, t


# -- round trips ----------------------------------------------------------------------------
def test_round_trip_same_backend(tmp_path: Path) -> None:
    model, _, _, _ = _trained()
    path = tmp_path / "model.npz"
    assert nb.save(model, path) is None
    fresh = _mlp([2, 10, 3], seed=1)
    nb.load(fresh, path)
    for (name, p), (name2, q) in zip(
        model.named_parameters(), fresh.named_parameters(), strict=True
    ):
        assert name == name2 and np.array_equal(_host(p), _host(q))
        assert q.data is not p.data


def test_file_is_plain_npz_without_pickle(tmp_path: Path) -> None:
    model, _, _, _ = _trained()
    path = tmp_path / "model.npz"
    nb.save(model, path, optimizer=optim.SGD(model.parameters()))
    with np.load(path, allow_pickle=False) as npz:
        keys = set(npz.files)
        assert all(npz[k].dtype != object for k in keys)
        meta = json.loads(bytes(npz[io.METADATA_KEY]).decode())
    assert keys == {"0.weight", "0.bias", "2.weight", "2.bias", io.METADATA_KEY}
    assert meta["format"] == "nnbackend-checkpoint" and meta["format_version"] == 1
    assert meta["nnbackend_version"] == nb.__version__
    assert meta["model_class"] == "nnbackend.nn.module.Sequential"
    assert meta["parameters"]["0.weight"] == {
        "shape": [2, 10],
        "dtype": "float64",
        "model_dtype": "float64",
    }
    assert meta["optimizer"]["type"] == "SGD"
    assert io.read_metadata(path) == meta
    assert not path.with_suffix(".npz.npz").exists()


def test_float16_halves_the_bytes(tmp_path: Path) -> None:
    with nb.using(dtype="float32"):
        model = _mlp([64, 128, 10])
    nb.save(model, tmp_path / "f32.npz")
    nb.save(model, tmp_path / "f16.npz", dtype="float16")
    ratio = (tmp_path / "f16.npz").stat().st_size / (tmp_path / "f32.npz").stat().st_size
    assert 0.45 < ratio < 0.55, ratio
    assert io.read_metadata(tmp_path / "f16.npz")["parameters"]["0.weight"] == {
        "shape": [64, 128],
        "dtype": "float16",
        "model_dtype": "float32",
    }
    nb.load(model, tmp_path / "f16.npz")  # cast back to float32 on load
    assert all(p.dtype == np.float32 for p in model.parameters())


def test_float16_overflow_is_refused(tmp_path: Path) -> None:
    model = _mlp([2, 3])
    model[0].weight.data[0, 0] = 1e6
    with pytest.raises(CheckpointError, match="float16"):
        nb.save(model, tmp_path / "big.npz", dtype="half")
    assert not list(tmp_path.iterdir())


def _dtypes(backend: str) -> list[str]:
    """The floating dtypes ``backend`` holds in this process (its record says: no float16 on
    array_api_strict, no float64 on jax without JAX_ENABLE_X64)."""
    record = registry.get(backend)
    return [
        name
        for name in ("float64", "float32", "float16")
        if (name != "float16" or record.capabilities.float16)
        and (record.dtype_reason is None or record.dtype_reason(name) is None)
    ]


@st.composite
def _cases(draw: Any) -> dict[str, Any]:
    sizes = draw(st.lists(st.integers(1, 6), min_size=2, max_size=4))
    src = draw(st.sampled_from(AVAILABLE))
    dst = draw(st.sampled_from(AVAILABLE))
    return {
        "sizes": sizes,
        "bias": draw(st.booleans()),
        "src": src,
        "dst": dst,
        "src_dtype": draw(st.sampled_from(_dtypes(src))),
        "dst_dtype": draw(st.sampled_from(_dtypes(dst))),
        "store": draw(st.sampled_from([None, "float64", "float32", "float16"])),
    }


@pytest.mark.skipif(not AVAILABLE, reason="no backend usable here is selected")
@given(case=_cases())
def test_round_trip_across_backends_and_dtypes(case: dict[str, Any]) -> None:
    with nb.using(backend=case["src"], dtype=case["src_dtype"]):
        model = _mlp(case["sizes"], case["bias"], seed=0)
    with nb.using(backend=case["dst"], dtype=case["dst_dtype"]):
        target = _mlp(case["sizes"], case["bias"], seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ckpt.npz")
        nb.save(model, path, dtype=case["store"])
        nb.load(target, path)
    stored = case["store"] or case["src_dtype"]
    for (name, p), (_, q) in zip(model.named_parameters(), target.named_parameters(), strict=True):
        assert registry.backend_of(q.data) == case["dst"]
        assert str(q.dtype).rsplit(".", 1)[-1] == case["dst_dtype"]
        expected = _host(p).astype(stored).astype(case["dst_dtype"])
        assert np.array_equal(_host(q), expected), name


@pytest.mark.parametrize("backend", ["array_api_strict", "torch"])
def test_optimizer_round_trip_resumes_exactly(tmp_path: Path, backend: str) -> None:
    """Save model and Adam state on numpy, resume on another backend in float64: the next
    epoch gives the weights an uninterrupted run gives."""
    if backend not in AVAILABLE:
        pytest.skip(f"{backend} is unavailable or not selected")
    model, opt, x, t = _trained()
    path = tmp_path / "resume.npz"
    nb.save(model, path, optimizer=opt)
    nb.Trainer(model, nn.SoftmaxCrossEntropy(), opt).fit(
        x, t, epochs=1, batch_size=30, seed=9, progress=False
    )
    with nb.using(backend=backend, dtype="float64"):
        model2 = _mlp([2, 10, 3], seed=3)
        opt2 = optim.Adam(model2.parameters(), lr=0.5)
        nb.load(model2, path, optimizer=opt2)
        assert opt2.lr == 0.01 and opt2.steps == 20
        x2, t2 = datasets.spiral()
        nb.Trainer(model2, nn.SoftmaxCrossEntropy(), opt2).fit(
            x2, t2, epochs=1, batch_size=30, seed=9, progress=False
        )
    for (name, p), (_, q) in zip(model.named_parameters(), model2.named_parameters(), strict=True):
        np.testing.assert_allclose(_host(q), _host(p), rtol=1e-10, atol=1e-12, err_msg=name)


def test_strict_false_loads_the_common_entries(tmp_path: Path) -> None:
    small = _mlp([2, 10, 3])
    nb.save(small, tmp_path / "small.npz")
    big = nn.Sequential(*_mlp([2, 10, 3], seed=5), nn.Tanh(), nn.Linear(3, 4))
    last = _host(big[4].weight)
    nb.load(big, tmp_path / "small.npz", strict=False)
    assert np.array_equal(_host(big[0].weight), _host(small[0].weight))
    assert np.array_equal(_host(big[4].weight), last)


# -- atomic save ----------------------------------------------------------------------------
def test_interrupted_save_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _mlp([2, 10, 3])
    path = tmp_path / "model.npz"
    nb.save(model, path)
    good = path.read_bytes()
    real_write = io._npz.write_npz

    def write_then_die(file: Any, entries: Any) -> None:
        real_write(file, entries)
        file.truncate(100)  # half-written ...
        raise KeyboardInterrupt  # ... and then Ctrl-C

    monkeypatch.setattr(io._npz, "write_npz", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        nb.save(_mlp([2, 10, 3], seed=7), path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary left over
    nb.load(model, path)


def test_failed_rename_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.npz"
    nb.save(_mlp([2, 3]), path)
    good = path.read_bytes()

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        nb.save(_mlp([2, 3], seed=4), path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_saved_file_has_ordinary_permissions(tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    nb.save(_mlp([2, 3]), path)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


# -- bad files leave everything unchanged ---------------------------------------------------
@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, nn.Sequential, optim.Adam]:
    model, opt, _, _ = _trained()
    path = tmp_path / "good.npz"
    nb.save(model, path, optimizer=opt)
    return path, model, opt


def _victim() -> tuple[nn.Sequential, optim.Adam, dict[str, Any], dict[str, Any]]:
    model, opt, _, _ = _trained()
    # Another state, so a partial load would show.
    for p in model.parameters():
        p.data = p.data * 0.5
    state = opt.state_dict()
    return model, opt, _snapshot(model), state


def _assert_opt_same(opt: optim.Adam, state: dict[str, Any]) -> None:
    now = opt.state_dict()
    assert now["hyperparameters"] == state["hyperparameters"] and now["steps"] == state["steps"]
    for i, entry in state["state"].items():
        for key, value in entry.items():
            if key == "step":
                assert now["state"][i][key] == value
            else:
                assert np.array_equal(_host(now["state"][i][key]), _host(value))


def _expect_unchanged(
    path: Path, match: str, *, optimizer: bool = True, model: nn.Module | None = None
) -> None:
    victim, opt, snap, state = _victim()
    if model is not None:
        victim, snap = model, _snapshot(model)
    with pytest.raises(CheckpointError, match=match):
        nb.load(victim, path, optimizer=opt if optimizer else None)
    _assert_same(victim, snap)
    _assert_opt_same(opt, state)


def test_truncated_file(saved: tuple[Path, Any, Any], tmp_path: Path) -> None:
    path = saved[0]
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 10, 0):
        broken = tmp_path / f"cut{cut}.npz"
        broken.write_bytes(data[:cut])
        _expect_unchanged(broken, f"cut{cut}.npz: cannot read the checkpoint")


def test_corrupted_bytes(saved: tuple[Path, Any, Any], tmp_path: Path) -> None:
    data = bytearray(saved[0].read_bytes())
    with zipfile.ZipFile(saved[0]) as zf:
        info = zf.getinfo("2.weight.npy")
    middle = info.header_offset + 30 + len(info.filename) + info.file_size // 2
    data[middle] ^= 0xFF
    broken = tmp_path / "flipped.npz"
    broken.write_bytes(bytes(data))
    _expect_unchanged(broken, "flipped.npz: cannot read")


def test_missing_file(tmp_path: Path) -> None:
    _expect_unchanged(tmp_path / "nope.npz", "nope.npz: no such checkpoint file")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "plain.npz"
    np.savez(path, **{"0.weight": np.zeros((2, 10))})
    _expect_unchanged(path, "not an nnbackend checkpoint")
    (tmp_path / "text.npz").write_text("hello")
    _expect_unchanged(tmp_path / "text.npz", "cannot read")


def test_missing_key(saved: tuple[Path, Any, Any]) -> None:
    model = nn.Sequential(*_mlp([2, 10, 3], seed=5), nn.Tanh(), nn.Linear(3, 4))
    _expect_unchanged(
        saved[0], r"missing from the file: \['4.weight', '4.bias'\]", optimizer=False, model=model
    )


def test_extra_key(saved: tuple[Path, Any, Any]) -> None:
    model = _mlp([2, 10], seed=5)
    _expect_unchanged(
        saved[0], r"not in the model: \['2.weight', '2.bias'\]", optimizer=False, model=model
    )


def test_shape_mismatch(saved: tuple[Path, Any, Any]) -> None:
    model = _mlp([2, 11, 3], seed=5)
    _expect_unchanged(
        saved[0],
        r"entry '0.weight' has shape \(2, 10\), but the model's "
        r"parameter '0.weight' has shape \(2, 11\)",
        optimizer=False,
        model=model,
    )


def test_metadata_disagrees_with_arrays(saved: tuple[Path, Any, Any], tmp_path: Path) -> None:
    with np.load(saved[0], allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    bias = arrays.pop("0.bias")
    path = tmp_path / "edited.npz"
    np.savez(path, **arrays)
    _expect_unchanged(path, r"disagree about entries \['0.bias'\]")
    arrays["0.bias"] = bias.astype(np.float32)
    np.savez(path, **arrays)
    _expect_unchanged(path, r"entry '0.bias' has dtype float32, but the metadata says float64")


def test_optimizer_state_that_does_not_fit(saved: tuple[Path, Any, Any]) -> None:
    path = saved[0]
    victim, opt, snap, state = _victim()
    sgd = optim.SGD(victim.parameters(), lr=0.3)
    with pytest.raises(CheckpointError, match=r"optimizer state does not fit.*Adam"):
        nb.load(victim, path, optimizer=sgd)
    _assert_same(victim, snap)
    assert sgd.lr == 0.3 and sgd.steps == 0
    # An optimizer over other parameters (in another order) is refused by name.
    swapped = optim.Adam(list(victim.parameters())[::-1], lr=0.01)
    with pytest.raises(CheckpointError, match=r"optimizer parameter 0 was '0\.weight'"):
        nb.load(victim, path, optimizer=swapped)
    _assert_same(victim, snap)
    # A checkpoint without optimizer state.
    plain = path.with_name("plain.npz")
    nb.save(victim, plain)
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        nb.load(victim, plain, optimizer=opt)
    _assert_same(victim, snap)
    _assert_opt_same(opt, state)


def test_not_a_module_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="named_parameters"):
        nb.save(object(), tmp_path / "odd.npz")
    assert not list(tmp_path.iterdir())


# -- whole messages and the metadata written (issue #21: mutation testing of io) -------------
class _Named:
    """A stand-in module whose named_parameters() is given."""

    def __init__(self, named: list[tuple[Any, Any]]) -> None:
        self._named = named

    def named_parameters(self) -> list[tuple[Any, Any]]:
        return self._named


def test_save_refusals_say_what_was_wrong(tmp_path: Path) -> None:
    with pytest.raises(TypeError) as info:
        nb.save(object(), tmp_path / "a.npz")
    assert str(info.value) == (
        "save/load need an nn.Module (something with named_parameters()), got object"
    )
    model = _mlp([2, 3])
    with pytest.raises(nb.errors.ArgumentError) as info:
        nb.save(model, tmp_path / "a.npz", format="zip")
    assert str(info.value) == (
        "unknown checkpoint format 'zip'; expected one of ('safetensors', 'npz')"
    )
    t = nb.Tensor(nb.namespace("numpy", "float64").ones(2))
    with pytest.raises(CheckpointError) as info:
        nb.save(_Named([("a", t), ("a", t)]), tmp_path / "a.npz")
    assert str(info.value) == "two parameters are named 'a'; names must be distinct"
    with pytest.raises(CheckpointError) as info:
        nb.save(_Named([(1, t)]), tmp_path / "a.npz")
    assert str(info.value) == "parameter names must be strings, got 1"
    assert not list(tmp_path.iterdir())


def test_float16_storage_refuses_only_values_beyond_its_range(tmp_path: Path) -> None:
    xp = nb.namespace("numpy", "float64")
    edge = _Named([("w", nb.Tensor(xp.asarray([65504.0, -65504.0])))])
    nb.save(edge, tmp_path / "edge.npz", dtype="float16")  # float16's largest value fits
    big = _Named([("w", nb.Tensor(xp.asarray([1.0, -1.5e6])))])
    with pytest.raises(CheckpointError) as info:
        nb.save(big, tmp_path / "big.npz", dtype="float16")
    assert str(info.value) == (
        "cannot store parameter 'w' in float16: it holds values up to 1.5e+06, beyond "
        "float16's 65504.0"
    )


def test_the_format_follows_the_suffix_case_blind(tmp_path: Path) -> None:
    model = _mlp([2, 3])
    for name, magic in (("a.NPZ", b"PK"), ("a.npz", b"PK"), ("a.bin", b"{")):
        nb.save(model, tmp_path / name)
        assert (tmp_path / name).read_bytes()[:9].endswith(magic) or (
            tmp_path / name
        ).read_bytes().startswith(magic), name


def test_the_metadata_written(tmp_path: Path) -> None:
    with nb.using(backend="numpy", dtype="float32"):
        model = _mlp([2, 3])
    opt = optim.Adam(model.parameters(), lr=0.01)
    for path in (tmp_path / "m.npz", tmp_path / "m.safetensors"):
        nb.save(model, path, dtype="float16", optimizer=opt)
        meta = io.read_metadata(path)
        assert {k: v for k, v in meta.items() if k != "optimizer"} == {
            "format": "nnbackend-checkpoint",
            "format_version": 1,
            "nnbackend_version": nb.__version__,
            "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
            "backend": "numpy",
            "parameters": {
                "0.weight": {"shape": [2, 3], "dtype": "float16", "model_dtype": "float32"},
                "0.bias": {"shape": [3], "dtype": "float16", "model_dtype": "float32"},
            },
        }
        saved = meta["optimizer"]
        assert saved["type"] == "Adam" and saved["parameters"] == ["0.weight", "0.bias"]
        assert saved["steps"] == 0 and saved["state"] == {} and saved["extra"] == {}
        assert saved["hyperparameters"]["lr"] == 0.01


def test_a_file_of_neither_format_is_named_by_its_first_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"hello world, no checkpoint")
    with pytest.raises(CheckpointError) as info:
        nb.load(_mlp([2, 3]), path)
    assert str(info.value) == (
        f"{path}: cannot read the checkpoint: it is neither a safetensors nor an .npz file (it "
        "starts with b'hello wo'); the file is truncated, corrupted or of another kind"
    )


def test_a_model_that_does_not_fit_is_named_with_where_the_file_came_from(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    nb.save(_mlp([2, 3]), path)
    other = _mlp([2, 3, 4])
    with pytest.raises(CheckpointError) as info:
        nb.load(other, path)
    assert str(info.value) == (
        f"{path}: the checkpoint does not fit Sequential (missing from the file: ['2.weight', "
        "'2.bias']); it was saved from nnbackend.nn.module.Sequential. Pass strict=False to "
        "load only the common entries"
    )
