"""Defects the earlier reviews found and left: the loss scaler's state in checkpoints, a
float16 loss scale that grew past float16, max pooling's NaN and padded -inf windows, batch
normalisation of an empty batch, optimizer state keys read with ``int()``, and a backend
name in the wrong case."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim, precision
from nnbackend.errors import BackendError, CheckpointError
from nnbackend.nn import pooling

# -- the loss scaler's state in checkpoints ------------------------------------------------


def _mixed_run(scaler: precision.LossScaler, steps: int) -> tuple[Any, Any]:
    with nb.using(dtype="mixed16"):
        nb.random.seed(0)
        model = nn.Sequential(nn.Linear(4, 3))
        opt = optim.Adam(model.parameters(), lr=1e-3)
        x = nb.namespace().ones((5, 4))
        for _ in range(steps):
            opt.zero_grad()
            loss = nn.SoftmaxCrossEntropy()(model(x), np.arange(5) % 3)
            scaler.scale_loss(loss).backward()
            scaler.step(opt)
    return model, opt


def test_a_checkpoint_keeps_the_loss_scalers_state(tmp_path: Path) -> None:
    """nb.save had no place for a LossScaler's scale and counters, so a resumed float16
    run started again at 2**15 with its counters at zero."""
    scaler = precision.LossScaler(init_scale=2.0**10, growth_interval=2)
    model, opt = _mixed_run(scaler, 5)
    assert scaler.scale == 2.0**12 and scaler.growths == 2
    path = tmp_path / "run.safetensors"
    nb.save(model, path, optimizer=opt, loss_scaler=scaler)
    assert nb.io.read_metadata(path)["loss_scaler"] == scaler.state_dict()
    resumed = precision.LossScaler()
    nb.load(model, path, optimizer=opt, loss_scaler=resumed)
    assert resumed.state_dict() == scaler.state_dict()
    npz = tmp_path / "run.npz"
    nb.save(model, npz, loss_scaler=scaler)
    other = precision.LossScaler()
    nb.load(model, npz, loss_scaler=other)
    assert other.scale == 2.0**12 and other.steps == 5


def test_loading_a_scaler_from_a_file_without_one_changes_nothing(tmp_path: Path) -> None:
    """Asking for the scaler's state from a checkpoint that holds none is a CheckpointError
    that names the remedy, raised before the model or the optimizer changed."""
    scaler = precision.LossScaler()
    model, opt = _mixed_run(scaler, 2)
    path = tmp_path / "plain.safetensors"
    nb.save(model, path, optimizer=opt)
    before = {k: np.array(v, copy=True) for k, v in model.state_dict().items()}
    for p in model.parameters():
        p.data = p.data + 1.0
    changed = {k: np.array(v, copy=True) for k, v in model.state_dict().items()}
    steps = opt.steps
    with pytest.raises(CheckpointError, match="holds no loss scaler state"):
        nb.load(model, path, optimizer=opt, loss_scaler=scaler)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, changed[name])
        assert not np.array_equal(value, before[name])
    assert opt.steps == steps and scaler.steps == 2


class _BadScaler:
    def state_dict(self) -> dict[str, Any]:
        return {"scale": -1.0, "good_steps": 0, "skipped": 0, "growths": 0, "steps": 0}


def test_a_malformed_scaler_state_changes_nothing(tmp_path: Path) -> None:
    """A scaler state that LossScaler refuses fails the whole load before anything changed
    (the optimizer is loaded first, so it is checked on a copy first)."""
    scaler = precision.LossScaler(init_scale=64.0)
    model, opt = _mixed_run(scaler, 2)
    path = tmp_path / "bad.safetensors"
    nb.save(model, path, optimizer=opt, loss_scaler=_BadScaler())
    fresh = optim.Adam(model.parameters(), lr=1e-3)
    with pytest.raises(CheckpointError, match="bad scale"):
        nb.load(model, path, optimizer=fresh, loss_scaler=scaler)
    assert fresh.steps == 0 and scaler.scale == 64.0 and scaler.steps == 2
    with pytest.raises(nb.errors.ArgumentError, match="loss_scaler must be"):
        nb.load(model, path, loss_scaler=object())
    with pytest.raises(nb.errors.ArgumentError, match="loss_scaler must be"):
        nb.save(model, tmp_path / "x.safetensors", loss_scaler=3)
    assert not (tmp_path / "x.safetensors").exists()


def test_model_checkpoint_saves_the_trainers_loss_scaler(tmp_path: Path) -> None:
    """ModelCheckpoint(save_optimizer=True) saved the optimizer of a mixed float16 run but
    not its loss scaler."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    t = (x[:, 0] > 0).astype(np.int64)
    with nb.using(dtype="mixed16"):
        nb.random.seed(0)
        model = nn.Sequential(nn.Linear(4, 2))
        opt = optim.SGD(model.parameters(), lr=0.1)
        ckpt = nb.callbacks.ModelCheckpoint(tmp_path / "m.safetensors", "loss", save_optimizer=True)
        trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), opt)
        trainer.fit(x, t, epochs=2, batch_size=16, progress=False, callbacks=[ckpt])
    assert trainer.loss_scaler is not None and trainer.loss_scaler.steps == 8
    saved = nb.io.read_metadata(tmp_path / "m.safetensors")["loss_scaler"]
    assert saved == trainer.loss_scaler.state_dict()


def test_hostile_scaler_metadata_is_a_checkpoint_error(tmp_path: Path) -> None:
    """The metadata check takes a loss_scaler field that is not an object as corruption."""
    from nnbackend.io._metadata import check_metadata

    model = nn.Sequential(nn.Linear(2, 2))
    path = tmp_path / "m.safetensors"
    nb.save(model, path)
    meta = dict(nb.io.read_metadata(path))
    meta["loss_scaler"] = [1, 2]
    with pytest.raises(CheckpointError, match="loss_scaler should be an object"):
        check_metadata("f", meta)


# -- a float16 loss never gets a scale float16 cannot hold ------------------------------


@pytest.mark.parametrize("check", ["host", "device"])
def test_a_float16_losss_scale_stays_within_float16(check: str) -> None:
    """With a float16 loss (a float16, not mixed, policy), the dynamic scale grew from 2**15
    to 2**16, past float16's largest value: the scaled loss and the gradient backward starts
    from were infinite, so the next step was skipped and the scale halved, every time the
    scale grew."""
    scaler = precision.LossScaler(init_scale=2.0**14, growth_interval=1, check=check)
    with nb.using(dtype="float16"):
        nb.random.seed(0)
        model = nn.Sequential(nn.Linear(4, 3))
        opt = optim.SGD(model.parameters(), lr=0.01)
        x = nb.namespace().ones((5, 4)) * 0.01
        for _ in range(4):
            opt.zero_grad()
            loss = nn.SoftmaxCrossEntropy()(model(x), np.arange(5) % 3)
            assert loss.data.dtype == np.float16
            scaler.scale_loss(loss).backward()
            scaler.step(opt)
    assert scaler.skipped == 0
    assert scaler.scale == 2.0**15 and scaler.growths == 1


def test_a_float32_loss_still_grows_its_scale_past_float16() -> None:
    """The bound follows the loss's dtype: a mixed16 run (float32 loss) grows as before."""
    scaler = precision.LossScaler(init_scale=2.0**15, growth_interval=1)
    _mixed_run(scaler, 3)
    assert scaler.scale == 2.0**18 and scaler.skipped == 0


# -- max pooling: NaN windows and padded -inf windows --------------------------------------

_X = np.array(
    [
        [
            [
                [np.nan, 1, 2, 3],
                [4, np.nan, 6, 7],
                [-np.inf, -np.inf, 1, 2],
                [-np.inf, -np.inf, 3, 4],
            ]
        ]
    ]
)


@pytest.mark.parametrize("by_offsets", [True, False])
def test_max_pool_gives_a_nan_window_its_gradient(
    by_offsets: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window whose maximum is NaN matched none of its elements (NaN != NaN), so its
    gradient went nowhere; it goes to the window's first NaN now (torch gives it to one of
    its NaNs too)."""
    monkeypatch.setattr(pooling, "USE_OFFSETS", by_offsets)
    t = nb.Tensor(_X.copy(), requires_grad=True)
    y = pooling.max_pool2d(t, 2, 2)
    assert np.isnan(y.data[0, 0, 0, 0])
    y.backward(np.full(tuple(y.shape), 5.0))
    g = np.asarray(t.grad)[0, 0]
    assert g.sum() == 20.0  # every window's gradient arrived somewhere
    assert g[0, 0] == 5.0 and g[1, 1] == 0.0  # the first NaN of the window


@pytest.mark.parametrize("by_offsets", [True, False])
def test_max_pool_never_gives_a_gradient_to_the_padding(
    by_offsets: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window of -inf that touched the padding (also -inf) gave its gradient to the
    padding, where it was cropped away; as in torch it goes to the window's first element
    inside the image."""
    monkeypatch.setattr(pooling, "USE_OFFSETS", by_offsets)
    x = np.full((1, 1, 3, 3), -np.inf)
    x[0, 0, 2, 2] = 1.0
    t = nb.Tensor(x, requires_grad=True)
    y = pooling.max_pool2d(t, 2, 2, 1)  # windows: (pad, pad, pad, x00), ...
    y.backward(np.ones(tuple(y.shape)))
    expected = np.zeros((3, 3))
    expected[0, 0] = expected[0, 1] = expected[1, 0] = expected[2, 2] = 1.0
    np.testing.assert_array_equal(np.asarray(t.grad)[0, 0], expected)


def test_max_pool_nan_and_padding_agree_with_torch_on_values_and_totals() -> None:
    """Against torch: the same outputs, the same -inf routing, and every window's gradient
    delivered (torch picks a NaN window's last NaN, nnbackend its first)."""
    torch = pytest.importorskip("torch")
    for args in ((2, 2, 0), (3, 2, 1), (2, 2, 1)):
        t = nb.Tensor(_X.copy(), requires_grad=True)
        y = pooling.max_pool2d(t, *args)
        y.backward(np.ones(tuple(y.shape)))
        r = torch.tensor(_X.copy(), requires_grad=True)
        ry = torch.nn.functional.max_pool2d(r, *args)
        ry.backward(torch.ones_like(ry))
        np.testing.assert_array_equal(y.data, ry.detach().numpy())
        g, rg = np.asarray(t.grad), r.grad.numpy()
        assert g.sum() == rg.sum()
        finite = np.isfinite(_X) | np.isneginf(_X)
        np.testing.assert_array_equal(g[finite], rg[finite])


# -- batch normalisation of an empty batch -------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 4, 4), (2, 3, 0, 4)])
def test_batch_norm_of_an_empty_batch_is_empty(shape: tuple[int, ...]) -> None:
    """Training on an empty batch raised 'more than one value per channel'; torch returns an
    empty result and leaves the running statistics alone, and so does nnbackend now."""
    layer = nn.BatchNorm1d(3) if len(shape) == 2 else nn.BatchNorm2d(3)
    mean = np.array(layer.running_mean.data, copy=True)
    x = nb.Tensor(np.zeros(shape), requires_grad=True)
    y = layer(x)
    assert tuple(y.shape) == shape
    y.sum().backward()
    assert tuple(x.grad.shape) == shape
    np.testing.assert_array_equal(layer.weight.grad, np.zeros(3))
    np.testing.assert_array_equal(layer.bias.grad, np.zeros(3))
    np.testing.assert_array_equal(layer.running_mean.data, mean)
    with pytest.raises(nb.errors.ArgumentError, match="more than one value"):
        layer(np.zeros((1, 3)) if len(shape) == 2 else np.zeros((1, 3, 1, 1)))


# -- optimizer state keys ------------------------------------------------------------------


def test_optimizer_state_keys_must_be_indices() -> None:
    """load_state_dict read keys with int(): 0.5 loaded as parameter 0, True as 1, and '0'
    beside 0 loaded one over the other."""
    model = nn.Linear(2, 2)
    opt = optim.Adam(model.parameters())
    model(np.ones((1, 2))).sum().backward()
    opt.step()
    entry = opt.state_dict()["state"][0]
    for key in (0.5, True, "x", " 0", "0.0"):
        sd = opt.state_dict()
        sd["state"] = {key: entry}
        with pytest.raises(CheckpointError, match="not a parameter index"):
            opt.load_state_dict(sd)
    sd = opt.state_dict()
    sd["state"] = {"0": entry, 0: entry}
    with pytest.raises(CheckpointError, match="given twice"):
        opt.load_state_dict(sd)
    for key in ("0", 0, np.int64(0)):
        sd = opt.state_dict()
        sd["state"] = {key: entry}
        opt.load_state_dict(sd)


# -- backend names -------------------------------------------------------------------------


def test_a_backend_name_in_the_wrong_case_names_the_right_one(
    fresh_settings: Any,
) -> None:
    """NNBACKEND_DTYPE=Float32 worked but NNBACKEND=Torch said only 'unknown backend'."""
    fresh_settings(NNBACKEND="NumPy")
    with pytest.raises(BackendError, match="did you mean 'numpy'"):
        nb.namespace()
    with pytest.raises(BackendError) as caught:
        nb.set_backend("nosuch")
    assert "did you mean" not in str(caught.value)


def test_operands_of_two_libraries_are_a_backend_mismatch() -> None:
    """A NumPy and a torch operand of the same dtype raised DtypeError 'operands have dtypes
    float64 and torch.float64', which is no dtype problem (from the attention review)."""
    torch = pytest.importorskip("torch")
    a = nb.Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(nb.errors.BackendMismatchError, match="two libraries"):
        a * torch.ones(3, dtype=torch.float64)
    with pytest.raises(nb.errors.DtypeError, match="never promotes"):
        a * np.ones(3, np.float32)
    with pytest.raises(nb.errors.DtypeError, match="never promotes"):
        a * np.float32(2.0)


# -- from the containers review: Sequential.add_module; float16 uniform draws ------------


def test_sequential_runs_a_layer_added_by_name() -> None:
    """Sequential.add_module registered the layer (repr, parameters) but forward ran the
    cached list of layers from before: the new layer never ran."""
    seq = nn.Sequential(nn.Linear(2, 2))
    seq.add_module("1", nn.Tanh())
    seq.add_module("2", nn.Linear(2, 1))
    assert len(seq) == 3
    y = seq(np.ones((4, 2)))
    assert tuple(y.shape) == (4, 1)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_uniform_never_returns_high_in_a_narrow_dtype(dtype: str) -> None:
    """A float64 draw just below high rounds up to high in float16 (126 in a million for
    [-0.3, 0.3)): the half-open interval was broken, a hazard for log(1 - u)."""
    g = nb.random.Generator(0)
    u = np.asarray(g.uniform((1_000_000,), -0.3, 0.3, dtype=dtype))
    assert u.dtype == np.dtype(dtype)
    assert (u < np.asarray(0.3, dtype=dtype)).all() and (u >= np.asarray(-0.3, dtype)).all()
    u = np.asarray(g.uniform((200_000,), dtype=dtype))  # [0, 1)
    assert u.max() < 1.0
