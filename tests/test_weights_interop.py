"""Weights from elsewhere: PyTorch state dicts (layout="torch") and the book's pickled
parameter lists (nb.load_book_params)."""

from __future__ import annotations

import pickle
import warnings
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend import nn
from nnbackend.errors import ArgumentError, CheckpointError


def _mlp(sizes, act=nn.Sigmoid):
    layers = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        if i:
            layers.append(act())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


def _torch_mlp(torch, sizes):
    layers = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        if i:
            layers.append(torch.nn.Sigmoid())
        layers.append(torch.nn.Linear(a, b))
    return torch.nn.Sequential(*layers).double()


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=2, max_size=4), seed=st.integers(0, 2**16))
def test_torch_mlp_both_ways_same_outputs(sizes, seed):
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    theirs = _torch_mlp(torch, sizes)
    with nb.using(backend="numpy", dtype="float64"):
        ours = _mlp(sizes)
        ours.load_state_dict(theirs.state_dict(), layout="torch")
        x = np.random.default_rng(seed).standard_normal((5, sizes[0]))
        expected = theirs(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(ours(x).data, expected, rtol=0, atol=1e-12)
        # ...and back: a fresh torch model from our state dict computes the same.
        back = _torch_mlp(torch, sizes)
        back.load_state_dict(
            {k: torch.as_tensor(np.array(v)) for k, v in ours.state_dict(layout="torch").items()}
        )
        np.testing.assert_allclose(
            back(torch.from_numpy(x)).detach().numpy(), expected, rtol=0, atol=1e-12
        )


def test_torch_layout_transposes_linear_only_and_keeps_names():
    with nb.using(backend="numpy", dtype="float64"):
        model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.LayerNorm(3), nn.Linear(3, 4))
    mine = model.state_dict()
    theirs = model.state_dict(layout="torch")
    assert list(theirs) == list(mine)
    assert theirs["0.weight"].shape == (3, 2) and theirs["3.weight"].shape == (4, 3)
    np.testing.assert_array_equal(theirs["0.weight"], mine["0.weight"].T)
    np.testing.assert_array_equal(theirs["2.weight"], mine["2.weight"])  # LayerNorm: same


def test_torch_layout_errors_leave_model_unchanged():
    with nb.using(backend="numpy", dtype="float64"):
        model = _mlp([2, 3, 1])
    before = {k: np.array(v) for k, v in model.state_dict().items()}
    state = model.state_dict(layout="torch")
    # A PyTorch-layout dict loaded as if it were nnbackend's: shapes do not fit.
    with pytest.raises(CheckpointError, match="shape"):
        model.load_state_dict({k: np.array(v) for k, v in state.items()})
    with pytest.raises(CheckpointError, match="unexpected keys"):
        model.load_state_dict({**state, "9.weight": np.ones(1)}, layout="torch")
    with pytest.raises(ArgumentError, match="layout"):
        model.load_state_dict(state, layout="keras")
    with pytest.raises(ArgumentError, match="layout"):
        model.state_dict(layout="TORCH")
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_torch_tensors_load_onto_other_backends():
    torch = pytest.importorskip("torch")
    theirs = torch.nn.Linear(3, 2).float()
    with nb.using(backend="array_api_strict", dtype="float32"):
        ours = nn.Linear(3, 2)
        ours.load_state_dict(theirs.state_dict(), layout="torch")
        xp = nb.namespace()
        assert type(ours.weight.data).__module__.startswith("array_api_strict")
        w = np.asarray(nb.to_device(ours.weight.data, "numpy"))
    np.testing.assert_array_equal(w, theirs.weight.detach().numpy().T)
    assert xp is not None


# -- the book's parameter files ---------------------------------------------------------------


def _book_file(path, arrays):
    # What the book's BaseModel.save_params writes.
    with open(path, "wb") as f:
        pickle.dump([a.astype(np.float16) for a in arrays], f)
    return path


def test_book_two_layer_net_loads_by_position(tmp_path):
    rng = np.random.default_rng(1)
    W1, b1, W2, b2 = (rng.standard_normal(s) for s in [(2, 10), (10,), (10, 3), (3,)])
    path = _book_file(tmp_path / "two_layer_net.pkl", [W1, b1, W2, b2])
    with nb.using(backend="numpy", dtype="float32"):
        model = _mlp([2, 10, 3])
        nb.load_book_params(model, path, trust=True)
    got = [np.asarray(p.data) for p in model.parameters()]
    for g, want in zip(got, [W1, b1, W2, b2], strict=True):
        assert g.dtype == np.float32
        np.testing.assert_array_equal(g, want.astype(np.float16).astype(np.float32))


def test_book_params_need_trust(tmp_path):
    path = _book_file(tmp_path / "p.pkl", [np.ones((2, 3)), np.ones(3)])
    model = nn.Linear(2, 3)
    with pytest.raises(CheckpointError, match="trust=True"):
        nb.load_book_params(model, path)
    with pytest.raises(CheckpointError, match="trust=True"):
        nb.load_book_params(model, path, trust="yes")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_book_params_build_nothing_but_arrays(tmp_path, capsys):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump([np.ones((2, 3)), _Evil()], f)
    model = nn.Linear(2, 3)
    before = np.array(model.weight.data)
    with pytest.raises(CheckpointError, match=r"builtins\.print"):
        nb.load_book_params(model, path, trust=True)
    assert "pwned" not in capsys.readouterr().out
    np.testing.assert_array_equal(model.weight.data, before)


def test_book_params_mismatch_and_garbage(tmp_path):
    model = _mlp([2, 4, 3])
    before = [np.array(p.data) for p in model.parameters()]
    cases = {
        "holds 1 arrays": _book_file(tmp_path / "a.pkl", [np.ones((2, 4))]),
        "shape": _book_file(
            tmp_path / "b.pkl", [np.ones((4, 2)), np.ones(4), np.ones((4, 3)), np.ones(3)]
        ),
        "cannot read": tmp_path / "c.pkl",
        "list of floating": tmp_path / "d.pkl",
        "no such": tmp_path / "missing.pkl",
    }
    (tmp_path / "c.pkl").write_bytes(b"\x80\x04garbage")
    with open(tmp_path / "d.pkl", "wb") as f:
        pickle.dump({"W": np.ones(2)}, f)
    for match, path in cases.items():
        with pytest.raises(CheckpointError, match=match):
            nb.load_book_params(model, path, trust=True)
    for p, b in zip(model.parameters(), before, strict=True):
        np.testing.assert_array_equal(p.data, b)


def test_book_params_beyond_float16_are_refused(tmp_path):
    path = tmp_path / "big.pkl"
    with open(path, "wb") as f:
        pickle.dump([np.full((2, 3), 1e6, dtype=np.float32), np.ones(3, dtype=np.float32)], f)
    with nb.using(backend="numpy", dtype="float16"):
        model = nn.Linear(2, 3)
    with pytest.raises(CheckpointError, match="range"):
        nb.load_book_params(model, path, trust=True)


# -- recurrent layers: PyTorch's nn.RNN / nn.LSTM layouts through state_dict(layout="torch") ---
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "RNNCell", "LSTMCell"])
def test_torch_recurrent_layers_both_ways_same_outputs(kind: str) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cell = kind.endswith("Cell")
    theirs = getattr(torch.nn, kind)(3, 5, **({} if cell else {"batch_first": True})).double()
    with nb.using(backend="numpy", dtype="float64"):
        ours = nn.Sequential(getattr(nn, kind)(3, 5))
    torch_model = torch.nn.Sequential(theirs)
    ours.load_state_dict(torch_model.state_dict(), layout="torch")
    rng = np.random.default_rng(1)
    if cell:
        x = rng.standard_normal((4, 3))
        out = ours[0](x)
        ours_h = out[0] if isinstance(out, tuple) else out
        t_out = theirs(torch.from_numpy(x))
        t_h = t_out[0] if isinstance(t_out, tuple) else t_out
    else:
        x = rng.standard_normal((4, 6, 3))
        ours_h = ours[0](x)[0]
        t_h = theirs(torch.from_numpy(x))[0]
    np.testing.assert_allclose(ours_h.data, t_h.detach().numpy(), rtol=0, atol=1e-12)
    # ...and back into a fresh torch layer.
    back = torch.nn.Sequential(getattr(torch.nn, kind)(3, 5).double())
    back.load_state_dict(
        {k: torch.as_tensor(np.array(v)) for k, v in ours.state_dict(layout="torch").items()}
    )
    for name, value in back.state_dict().items():
        if name.startswith("0.bias"):
            continue  # the book has one bias: torch's two are folded into bias_ih
        np.testing.assert_allclose(value.numpy(), torch_model.state_dict()[name].numpy())


def test_book_gru_has_no_torch_layout() -> None:
    model = nn.Sequential(nn.GRU(3, 4))
    with pytest.raises(ArgumentError, match="GRU"):
        model.state_dict(layout="torch")
    torch = pytest.importorskip("torch")
    with pytest.raises(ArgumentError, match="GRU"):
        model.load_state_dict(torch.nn.Sequential(torch.nn.GRU(3, 4)).state_dict(), layout="torch")


# -- the book's parameter files: each refusal's whole message, and what a load leaves behind ---
def test_book_params_refusals_say_what_and_how_to_fix(tmp_path, monkeypatch):
    from nnbackend.io import book

    path = _book_file(tmp_path / "p.pkl", [np.ones((2, 3)), np.ones(3)])
    model = nn.Linear(2, 3)
    with pytest.raises(CheckpointError) as info:
        nb.load_book_params(model, path)
    assert str(info.value) == (
        f"{path}: the book's parameter files are pickles, and reading a pickle can run code "
        "hidden in it. Pass trust=True only for a file whose origin you trust; nnbackend then "
        "reads it with an unpickler that builds nothing but NumPy arrays. To share weights "
        "safely, save them with nnbackend.save(model, 'model.safetensors')"
    )
    size = path.stat().st_size
    monkeypatch.setattr(book, "MAX_BYTES", size)
    nb.load_book_params(model, path, trust=True)  # exactly the cap is fine
    monkeypatch.setattr(book, "MAX_BYTES", size - 1)
    with pytest.raises(CheckpointError) as info:
        nb.load_book_params(model, path, trust=True)
    assert str(info.value) == f"{path}: {size} bytes is more than a parameter file holds"
    monkeypatch.undo()
    (tmp_path / "bad.pkl").write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError, match=r"parameter file \(UnpicklingError: "):
        nb.load_book_params(model, tmp_path / "bad.pkl", trust=True)
    with pytest.raises(CheckpointError) as info:
        nb.load_book_params(model, _book_file(tmp_path / "one.pkl", [np.ones((2, 3))]), trust=True)
    assert str(info.value) == (
        f"{tmp_path / 'one.pkl'}: the file holds 1 arrays, the model has 2 parameters; build "
        "the model with the book's layers in the book's order"
    )


@pytest.mark.parametrize(
    "content",
    [np.ones((2, 3), dtype=np.float32),  # one array, not a list of them
     [np.ones((2, 3), dtype=np.int64), np.ones(3, dtype=np.int64)]],  # integers
)  # fmt: skip
def test_book_params_hold_a_list_of_floating_arrays(tmp_path, content):
    path = tmp_path / "p.pkl"
    with open(path, "wb") as f:
        pickle.dump(content, f)
    model = nn.Linear(3, 3) if isinstance(content, np.ndarray) else nn.Linear(2, 3)
    with pytest.raises(CheckpointError) as info:
        nb.load_book_params(model, path, trust=True)
    assert str(info.value) == f"{path}: expected a list of floating-point arrays"


def test_book_params_beyond_float16_are_refused_without_a_warning(tmp_path):
    path = tmp_path / "big.pkl"
    with open(path, "wb") as f:
        pickle.dump([np.full((2, 3), 1e6, dtype=np.float32), np.ones(3, dtype=np.float32)], f)
    with nb.using(backend="numpy", dtype="float16"):
        model = nn.Linear(2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the overflow is reported by the error, not by NumPy
        with pytest.raises(CheckpointError) as info:
            nb.load_book_params(model, path, trust=True)
    assert str(info.value) == (
        f"{path}: array 0 holds values beyond float16's range; build the model in a wider dtype"
    )


def test_book_params_land_c_ordered_on_the_models_backend_and_device_with_no_gradient(tmp_path):
    weight = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    path = tmp_path / "p.pkl"
    with open(path, "wb") as f:
        pickle.dump([weight, np.ones(3)], f)
    with nb.using(backend="array_api_strict", dtype="float32", device="device1"):
        model = nn.Linear(2, 3)
        model.weight.grad = nb.namespace().ones((2, 3))
        nb.load_book_params(model, path, trust=True)
    data = model.weight.data
    assert type(data).__module__.startswith("array_api_strict") and "device1" in str(data.device)
    assert model.weight.grad is None
    host = np.asarray(nb.to_device(data, "numpy"))
    np.testing.assert_array_equal(host, weight.astype(np.float32))
    with nb.using(backend="numpy"):
        model = nn.Linear(2, 3)
        nb.load_book_params(model, path, trust=True)
    assert model.weight.data.flags.c_contiguous
