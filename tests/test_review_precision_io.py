"""Defects found reviewing mixed precision, data-parallel reduction and weight files: each
test failed before its fix."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend import nn, optim
from nnbackend.errors import CheckpointError
from nnbackend.io import safetensors as _st
from nnbackend.namespace import backend_for
from nnbackend.precision import LossScaler


def host(x: Any) -> np.ndarray:
    data = x.data if isinstance(x, nb.Tensor) else x
    return np.asarray(backend_for(data)[1].to_host(data))


# -- LossScaler ------------------------------------------------------------------------------
@given(exponent=st.integers(0, 40), odd=st.sampled_from([1.0, 1000.0, 3.0]))
@settings(max_examples=30, deadline=None)
def test_device_mode_unscales_float16_gradients_like_host_mode(exponent: int, odd: float) -> None:
    """Device mode multiplied float16 gradients by 1/scale rounded to float16 first: from a
    scale of 2**25 that is 0 and every gradient became zero (a silent no-op step); below, a
    scale that is not a power of two was rounded twice."""
    scale = odd * 2.0**exponent
    results = {}
    for check in ("host", "device"):
        p = nn.Parameter(np.zeros(4, dtype=np.float16))
        p.grad = np.array([1.0, 3.0, 1000.0, 60000.0], dtype=np.float16)
        LossScaler(init_scale=scale, check=check).unscale([p])
        assert p.grad.dtype == np.float16
        results[check] = host(p.grad)
    np.testing.assert_array_equal(results["device"], results["host"])


def test_device_mode_float16_step_at_a_large_scale_is_not_a_no_op() -> None:
    p = nn.Parameter(np.zeros(1, dtype=np.float16))
    p.grad = np.array([1024.0], dtype=np.float16)
    scaler = LossScaler(init_scale=2.0**26, check="device")
    scaler.step(optim.SGD([p], lr=1.0))
    assert scaler.skipped == 0
    np.testing.assert_array_equal(host(p.data), [-(2.0**-16)])


@pytest.mark.parametrize(
    "scale", [None, "2.0", 10**400, [1.0], "x"], ids=["None", "str", "huge", "list", "x"]
)
def test_a_snapshot_with_a_scale_that_is_no_number_is_a_checkpoint_error(scale: Any) -> None:
    """float(scale) raised TypeError, ValueError or OverflowError, and took the string
    "2.0" as a number."""
    scaler = LossScaler(init_scale=8.0)
    state = {"scale": scale, "good_steps": 0, "skipped": 0, "growths": 0, "steps": 0}
    with pytest.raises(CheckpointError, match="LossScaler state has a bad scale"):
        scaler.load_state_dict(state)
    assert scaler.scale == 8.0


def test_a_snapshot_scale_may_be_an_int_or_a_numpy_float() -> None:
    scaler = LossScaler(init_scale=8.0)
    state = {"scale": 4, "good_steps": 1, "skipped": 0, "growths": 0, "steps": 1}
    scaler.load_state_dict(state)
    assert scaler.scale == 4.0
    scaler.load_state_dict({**state, "scale": np.float32(2.0)})
    assert scaler.scale == 2.0


@pytest.mark.parametrize("check", ["host", "device"])
def test_two_optimizers_unscaled_before_their_steps_are_unscaled_once(check: str) -> None:
    """unscale(o1), unscale(o2) (to clip both), step(o1), step(o2): each step unscaled its
    optimizer's gradients a second time, dividing them by the scale twice."""
    a, b = nn.Parameter(np.zeros(1)), nn.Parameter(np.zeros(1))
    a.grad, b.grad = np.array([8.0]), np.array([8.0])
    o1, o2 = optim.SGD([a], lr=1.0), optim.SGD([b], lr=1.0)
    scaler = LossScaler(init_scale=4.0, check=check)
    scaler.unscale(o1)
    scaler.unscale(o2)
    scaler.step(o1)
    scaler.step(o2)
    np.testing.assert_array_equal(host(a.data), [-2.0])
    np.testing.assert_array_equal(host(b.data), [-2.0])
    assert scaler.skipped == 0 and scaler.steps == 2


def test_one_optimizer_still_unscales_once_per_step() -> None:
    a = nn.Parameter(np.zeros(1))
    opt = optim.SGD([a], lr=1.0)
    scaler = LossScaler(init_scale=4.0)
    for _ in range(2):
        a.grad = np.array([8.0])
        scaler.unscale(opt)
        scaler.unscale(opt)
        scaler.step(opt)
    np.testing.assert_array_equal(host(a.data), [-4.0])


# -- weight files ----------------------------------------------------------------------------
def _raw_safetensors(path: Path, header: dict[str, Any], data: bytes = b"") -> Path:
    blob = json.dumps(header).encode("utf-8")
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def test_a_foreign_file_in_pytorchs_layout_is_not_loaded_transposed(tmp_path: Path) -> None:
    """A file another program wrote (the docstring's example: safetensors.torch.save_file(
    torch_model.state_dict())) holds Linear's weight as (out, in). For a square layer the
    shapes fit nnbackend's (in, out) too, and nb.load loaded the weight transposed, silently."""
    with nb.using(backend="numpy", dtype="float64"):
        model = nn.Linear(3, 3)
    theirs = {
        "weight": np.arange(9.0).reshape(3, 3),  # (out, in), as PyTorch keeps it
        "bias": np.array([0.5, -0.5, 1.0]),
    }
    path = tmp_path / "torch.safetensors"
    with open(path, "wb") as f:
        _st.write(f, theirs, {})
    before = {k: host(v).copy() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="layout='torch'"):
        nb.load(model, path)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(host(v), before[k])
    # The remedy the message names works.
    model.load_state_dict(theirs, layout="torch")
    np.testing.assert_array_equal(host(model.weight), theirs["weight"].T)


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)),
        lambda: nn.Sequential(nn.GRU(3, 4)),
    ],
    ids=["non_square_layers", "no_pytorch_layout"],
)
def test_a_foreign_file_that_fits_one_layout_only_still_loads(make: Any, tmp_path: Path) -> None:
    """Only a name whose layout differs between the two libraries with one shape is
    ambiguous: non-square layers, and models with no PyTorch layout (a GRU), still load."""
    with nb.using(backend="numpy", dtype="float64"):
        model = make()
    values = {k: host(v).copy() + 1.0 for k, v in model.state_dict().items()}
    path = tmp_path / "foreign.safetensors"
    with open(path, "wb") as f:
        _st.write(f, values, {})
    nb.load(model, path)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(host(v), values[k])


def test_nnbackends_own_file_of_a_square_layer_loads(tmp_path: Path) -> None:
    with nb.using(backend="numpy", dtype="float64"):
        model, other = nn.Linear(3, 3), nn.Linear(3, 3)
    nb.save(model, tmp_path / "own.safetensors")
    nb.load(other, tmp_path / "own.safetensors")
    np.testing.assert_array_equal(host(other.weight), host(model.weight))


@pytest.mark.parametrize("shape", [[0, 2**63], [0, 2**62, 4], [2**40, 2**40, 0]])
def test_an_empty_tensor_with_huge_dimensions_is_a_checkpoint_error(
    tmp_path: Path, shape: list[int]
) -> None:
    """Zero elements, so no bytes to check: the reader accepted the entry and array() then
    raised numpy's bare ValueError ("Maximum allowed dimension exceeded")."""
    path = _raw_safetensors(
        tmp_path / "h.safetensors", {"a": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}}
    )
    with pytest.raises(CheckpointError, match="invalid shape"), _st.SafetensorsFile(path) as f:
        f.array("a")


def test_a_large_empty_tensor_that_fits_is_still_read(tmp_path: Path) -> None:
    path = _raw_safetensors(
        tmp_path / "e.safetensors",
        {"a": {"dtype": "F64", "shape": [0, 2**40], "data_offsets": [0, 0]}},
    )
    with _st.SafetensorsFile(path) as f:
        assert f.array("a").shape == (0, 2**40)


def test_an_optimizer_hyperparameter_beyond_floats_is_a_checkpoint_error(tmp_path: Path) -> None:
    """A JSON integer too large for a float (10**400) made the optimizer's check raise a bare
    OverflowError."""
    with nb.using(backend="numpy", dtype="float64"):
        model = nn.Linear(2, 3)
    opt = optim.Adam(model.parameters(), lr=0.01)
    for p in model.parameters():
        p.grad = p.data * 0.5
    opt.step()
    path = tmp_path / "o.safetensors"
    nb.save(model, path, optimizer=opt)
    with _st.SafetensorsFile(path) as f:
        meta = json.loads(f.metadata["nnbackend"])
        tensors = {k: np.array(f.array(k)) for k in f.entries}
    meta["optimizer"]["hyperparameters"]["lr"] = 10**400
    hostile = tmp_path / "hostile.safetensors"
    with open(hostile, "wb") as f:
        _st.write(f, tensors, {"nnbackend": json.dumps(meta)})
    fresh = optim.Adam(model.parameters(), lr=0.5)
    with pytest.raises(CheckpointError, match="lr"):
        nb.load(model, hostile, optimizer=fresh)
    assert os.path.exists(hostile)


def test_a_stray_file_with_a_non_ascii_digit_pid_does_not_break_saving(tmp_path: Path) -> None:
    """The stale-temporary sweep took str.isdigit() for "int() can read it": a file named
    like a temporary with a superscript digit for its pid made every save to that path raise
    a bare ValueError."""
    from nnbackend.io._files import tmp_prefix

    path = tmp_path / "m.safetensors"
    stray = tmp_path / f"{tmp_prefix(path)}\u00b2.abcd1234.tmp"
    stray.write_bytes(b"")
    with nb.using(backend="numpy", dtype="float64"):
        model = nn.Linear(2, 3)
    nb.save(model, path)
    assert path.exists() and stray.exists()  # not ours: left alone


def test_a_state_dict_hyperparameter_beyond_floats_is_a_checkpoint_error() -> None:
    """``optimizer.load_state_dict`` given a state dict (no file, so no metadata check) with
    an integer rate beyond float's range raised float()'s bare OverflowError."""
    opt = optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    state = opt.state_dict()
    state["hyperparameters"] = {**state["hyperparameters"], "lr": 10**400}
    with pytest.raises(CheckpointError, match="'lr' must be finite"):
        opt.load_state_dict(state)
    assert opt.lr == 0.1
