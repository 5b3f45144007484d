"""Fix of a known gap: learning-rate schedules in checkpoints.

``nb.save`` / ``nb.load`` took an optimizer and a loss scaler but no schedule, and
``ModelCheckpoint(save_optimizer=True)`` saved the optimizer but not the schedule of the fit,
so a resumed run restarted its learning-rate schedule. Covered here: ``schedule=`` in both
formats (safetensors, npz), runs resumed from a checkpoint against uninterrupted ones (rates
and weights), ``ModelCheckpoint`` wherever it stands among the callbacks, validation before
anything changes (another kind of schedule, a file without one, hostile metadata: numbers
beyond a float, rates that overflow), and ``Schedule.check_state_dict``.
"""

from __future__ import annotations

import io as stdio
import json
import math
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim
from nnbackend.callbacks import ModelCheckpoint
from nnbackend.errors import ArgumentError, CheckpointError
from nnbackend.schedules import CosineAnnealing, ExponentialLR, ReduceLROnPlateau, StepLR

FORMATS = ["safetensors", "npz"]

SCHEDULES: dict[str, Callable[[Any], Any]] = {
    "StepLR": lambda o: StepLR(o, step_size=2, gamma=0.5),
    "CosineWarmup": lambda o: CosineAnnealing(o, 6, warmup=2, min_lr=0.01),
    "CosinePerStep": lambda o: CosineAnnealing(o, 20, per="step"),
    "Plateau": lambda o: ReduceLROnPlateau(o, "loss", factor=0.5, patience=0),
}


def _data() -> tuple[Any, Any]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 3))
    t = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return x, t


def _setup(make: Callable[[Any], Any]) -> tuple[Any, Any, Any]:
    nb.random.seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = optim.Momentum(model.parameters(), lr=0.5, momentum=0.9)
    return model, opt, make(opt)


def _fit(model: Any, opt: Any, callbacks: list[Any], epochs: int) -> list[float]:
    """Train ``epochs`` epochs without shuffling; the rate each epoch started with."""
    rates: list[float] = []

    class Record(nb.callbacks.Callback):
        def on_fit_start(self, trainer: Any, history: Any) -> None:
            rates.append(opt.lr)

        def on_epoch_end(self, trainer: Any, history: Any) -> None:
            rates.append(opt.lr)

    x, t = _data()
    trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), opt)
    trainer.fit(
        x, t, epochs=epochs, batch_size=16, shuffle=False, progress=False,
        callbacks=[*callbacks, Record()],
    )  # fmt: skip
    return rates


def _weights(model: Any) -> dict[str, Any]:
    return {k: np.array(v, copy=True) for k, v in model.state_dict().items()}


def _assert_same_weights(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _uninterrupted(make: Callable[[Any], Any], epochs: int) -> tuple[list[float], dict[str, Any]]:
    model, opt, sched = _setup(make)
    rates = _fit(model, opt, [sched], epochs)
    return rates, _weights(model)


@pytest.mark.parametrize("kind", list(SCHEDULES))
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_resumed_run_continues_the_schedule(kind: str, fmt: str, tmp_path: Path) -> None:
    """nb.save/nb.load had no schedule=: a run resumed from a checkpoint restarted its
    learning-rate schedule (StepLR back at its first rate), unlike an uninterrupted run."""
    make = SCHEDULES[kind]
    n, m = 3, 3
    want_rates, want_weights = _uninterrupted(make, n + m)

    model, opt, sched = _setup(make)
    first = _fit(model, opt, [sched], n)
    path = tmp_path / f"run.{fmt}"
    nb.save(model, path, optimizer=opt, schedule=sched)
    assert nb.io.read_metadata(path)["schedule"] == sched.state_dict()

    model2, opt2, sched2 = _setup(make)  # everything anew: a fresh schedule at its first rate
    nb.load(model2, path, optimizer=opt2, schedule=sched2)
    assert sched2.state_dict() == sched.state_dict() and opt2.lr == opt.lr
    second = _fit(model2, opt2, [sched2], m)
    assert first + second[1:] == want_rates
    _assert_same_weights(_weights(model2), want_weights)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("checkpoint_first", [True, False])
def test_model_checkpoint_saves_the_fits_schedule(
    fmt: str, checkpoint_first: bool, tmp_path: Path
) -> None:
    """ModelCheckpoint(save_optimizer=True) saved the optimizer but not the schedule of the
    fit; resuming from its file (wherever it stood among the callbacks: before the schedule,
    it would have saved the state before the epoch's step) now gives the uninterrupted run."""
    make = SCHEDULES["StepLR"]
    want_rates, want_weights = _uninterrupted(make, 5)

    model, opt, sched = _setup(make)
    ckpt = ModelCheckpoint(tmp_path / f"ckpt-{{epoch}}.{fmt}", "loss", save_optimizer=True)
    first = _fit(model, opt, [ckpt, sched] if checkpoint_first else [sched, ckpt], 2)
    assert len(ckpt.saved) == 2
    assert nb.io.read_metadata(ckpt.saved[-1])["schedule"] == {
        "type": "StepLR",
        "base_lr": 0.5,
        "n": 2,
        "settings": {"step_size": 2, "gamma": 0.5, "per": "epoch"},
    }

    model2, opt2, sched2 = _setup(make)
    nb.load(model2, ckpt.saved[-1], optimizer=opt2, schedule=sched2)
    second = _fit(model2, opt2, [sched2], 3)
    assert first + second[1:] == want_rates
    _assert_same_weights(_weights(model2), want_weights)


def test_model_checkpoint_without_save_optimizer_or_schedule_saves_none(tmp_path: Path) -> None:
    """(With the fix above: the schedule goes only with save_optimizer=True, and a fit without
    a schedule saves none; a schedule of another optimizer is not the trainer's.)"""
    model, opt, sched = _setup(SCHEDULES["StepLR"])
    plain = ModelCheckpoint(tmp_path / "plain.safetensors", "loss")
    other = StepLR(optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0), 1)
    full = ModelCheckpoint(tmp_path / "full.safetensors", "loss", save_optimizer=True)
    _fit(model, opt, [plain, other, full], 1)
    assert nb.io.read_metadata(tmp_path / "plain.safetensors").get("schedule") is None
    assert nb.io.read_metadata(tmp_path / "full.safetensors").get("schedule") is None
    del sched


def test_model_checkpoint_refuses_two_schedules_of_one_optimizer(tmp_path: Path) -> None:
    """(With the fix above: a checkpoint holds one schedule; two schedules of the trainer's
    optimizer are refused when fit starts, before any epoch, not saved half.)"""
    model, opt, sched = _setup(SCHEDULES["StepLR"])
    ckpt = ModelCheckpoint(tmp_path / "m.safetensors", "loss", save_optimizer=True)
    with pytest.raises(ArgumentError, match="one schedule"):
        _fit(model, opt, [sched, ckpt, ExponentialLR(opt, 0.5)], 2)
    assert not (tmp_path / "m.safetensors").exists()


def _saved(tmp_path: Path, fmt: str, **kwargs: Any) -> tuple[Any, Any, Any, Path]:
    model, opt, sched = _setup(SCHEDULES["StepLR"])
    _fit(model, opt, [sched], 3)
    path = tmp_path / f"m.{fmt}"
    nb.save(model, path, optimizer=opt, **kwargs)
    return model, opt, sched, path


def _fresh_state() -> tuple[Any, Any, Any, dict[str, Any], Callable[[], None]]:
    """A fresh model, optimizer and StepLR, and a check that none of them changed."""
    model, opt, sched = _setup(SCHEDULES["StepLR"])
    opt.lr = 0.125
    weights, opt_state, sched_state = _weights(model), opt.state_dict(), sched.state_dict()

    def unchanged() -> None:
        _assert_same_weights(_weights(model), weights)
        assert opt.steps == opt_state["steps"] and opt.lr == 0.125
        assert opt.state_dict()["state"].keys() == opt_state["state"].keys()
        assert sched.state_dict() == sched_state

    return model, opt, sched, weights, unchanged


@pytest.mark.parametrize("fmt", FORMATS)
def test_loading_a_schedule_from_a_file_without_one_is_refused(fmt: str, tmp_path: Path) -> None:
    """(With the fix above: schedule= with a file saved without one is a CheckpointError
    naming the fix, raised before the model, the optimizer or the schedule changed.)"""
    _, _, _, path = _saved(tmp_path, fmt)
    model, opt, sched, _, unchanged = _fresh_state()
    with pytest.raises(CheckpointError, match=r"holds no schedule.*schedule=") as info:
        nb.load(model, path, optimizer=opt, schedule=sched)
    assert str(path) in str(info.value)
    unchanged()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_file_with_a_schedule_loads_without_one(fmt: str, tmp_path: Path) -> None:
    """(With the fix above: as with optimizer state, a file holding a schedule loads the
    model and optimizer without schedule=.)"""
    saved_model, saved_opt, sched, path = _saved(tmp_path, fmt)
    nb.save(saved_model, path, optimizer=saved_opt, schedule=sched)
    model, opt, _, _, _ = _fresh_state()
    nb.load(model, path, optimizer=opt)
    _assert_same_weights(_weights(model), _weights(saved_model))
    assert opt.lr == saved_opt.lr == 0.25 and opt.steps == saved_opt.steps
    nb.load(model, path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_schedule_of_another_kind_is_refused(fmt: str, tmp_path: Path) -> None:
    """(With the fix above: StepLR's state loaded into a CosineAnnealing is a CheckpointError
    naming both, before anything changed.)"""
    saved_model, saved_opt, sched, path = _saved(tmp_path, fmt)
    nb.save(saved_model, path, optimizer=saved_opt, schedule=sched)
    model, opt, _, _, unchanged = _fresh_state()
    cosine = CosineAnnealing(opt, 10)
    opt.lr = 0.125
    before = cosine.state_dict()
    with pytest.raises(CheckpointError, match=r"'StepLR'.*CosineAnnealing"):
        nb.load(model, path, optimizer=opt, schedule=cosine)
    unchanged()
    assert cosine.state_dict() == before


_GOOD = {"type": "StepLR", "base_lr": 0.5, "n": 3}


class _Fake:
    """A schedule-like object that saves whatever state it is given."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def state_dict(self) -> Any:
        return self.state


def _with_schedule_metadata(path: Path, state: Any) -> None:
    """Rewrite the checkpoint at ``path`` with ``state`` as its schedule metadata (what a
    corrupted or hostile file may hold; nb.save refuses to write some of these)."""
    blob = path.read_bytes()
    if blob.startswith(b"PK"):
        with zipfile.ZipFile(path) as zf:
            members = {info.filename: zf.read(info) for info in zf.infolist()}
        key = nb.io.METADATA_KEY + ".npy"
        meta = json.loads(bytes(np.load(stdio.BytesIO(members[key]))).decode("utf-8"))
        meta["schedule"] = state
        buf = stdio.BytesIO()
        text = json.dumps(meta).encode("utf-8")
        np.lib.format.write_array(buf, np.frombuffer(text, dtype=np.uint8), allow_pickle=False)
        members[key] = buf.getvalue()
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        return
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    meta = json.loads(header["__metadata__"]["nnbackend"])
    meta["schedule"] = state
    header["__metadata__"]["nnbackend"] = json.dumps(meta)
    raw = json.dumps(header).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + blob[8 + size :])


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({**_GOOD, "n": -1}, "'n' must be an int"),
        ({**_GOOD, "n": 2.0}, "'n' must be an int"),
        ({**_GOOD, "n": 10**400}, "schedule state .* rate"),
        ({**_GOOD, "type": "CosineAnnealing"}, "'CosineAnnealing' schedule, not a StepLR"),
        ({**_GOOD, "base_lr": 10**400}, "'base_lr' must be a finite number"),
        ({**_GOOD, "base_lr": -1.0}, "'base_lr' must be a finite number"),
        ({**_GOOD, "base_lr": "0.5"}, "'base_lr' must be a finite number"),
        ({"type": "StepLR", "n": 3}, "needs the keys"),
        ({**_GOOD, "extra": 1}, "needs the keys"),
        ([1, 2], "schedule should be an object"),
        ("StepLR", "schedule should be an object"),
    ],
    ids=["negative-n", "float-n", "huge-n", "other-type", "huge-int-rate", "negative-rate",
         "string-rate", "missing-key", "extra-key", "list", "string"],
)  # fmt: skip
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_malformed_schedule_state_changes_nothing(
    state: Any, match: str, fmt: str, tmp_path: Path
) -> None:
    """(With the fix above: a hostile or corrupted schedule state in the file is a
    CheckpointError naming the file, raised before the model, the optimizer or the schedule
    changed; 10**400 as a rate was a bare OverflowError from float().)"""
    saved_model, saved_opt, saved_sched = _setup(SCHEDULES["StepLR"])
    path = tmp_path / f"m.{fmt}"
    nb.save(saved_model, path, optimizer=saved_opt, schedule=saved_sched)
    _with_schedule_metadata(path, state)
    model, opt, sched, _, unchanged = _fresh_state()
    with pytest.raises(CheckpointError, match=match) as info:
        nb.load(model, path, optimizer=opt, schedule=sched)
    assert str(path) in str(info.value)
    unchanged()


@pytest.mark.parametrize(
    ("make", "state"),
    [
        (lambda o: ExponentialLR(o, 0.5), {"type": "ExponentialLR", "base_lr": 1.0, "n": 10**400}),
        (
            lambda o: CosineAnnealing(o, 10, warmup=3),
            {"type": "CosineAnnealing", "base_lr": 1e308, "n": 1},
        ),
        (lambda o: CosineAnnealing(o, 10), {"type": "CosineAnnealing", "base_lr": 1e308, "n": 0}),
        (
            lambda o: ReduceLROnPlateau(o),
            {"type": "ReduceLROnPlateau", "base_lr": 1.0, "n": 1, "lr": 0.1, "best": 10**400,
             "wait": 0},
        ),
    ],
    ids=["huge-n", "warmup-overflow", "cosine-overflow", "huge-best"],
)  # fmt: skip
def test_a_state_whose_rate_overflows_is_refused(make: Any, state: Any) -> None:
    """load_state_dict took states whose rate is not a float: n=10**400 raised a bare
    OverflowError after the schedule had changed (half-loaded), and a base rate of 1e308 in
    CosineAnnealing set the optimizer's rate to inf. Both are CheckpointErrors now, and
    check_state_dict finds them without changing anything."""
    opt = optim.SGD(nn.Linear(2, 1).parameters(), lr=1.0)
    sched = make(opt)
    before, lr = sched.state_dict(), opt.lr
    with pytest.raises(CheckpointError, match="schedule state"):
        sched.check_state_dict(state)
    with pytest.raises(CheckpointError, match="schedule state"):
        sched.load_state_dict(state)
    assert sched.state_dict() == before and opt.lr == lr


def test_check_state_dict_validates_without_applying() -> None:
    """Only the private _checked_state validated a state, and load_state_dict changed
    optimizer.lr: there was no way to check a state without applying it."""
    opt = optim.SGD(nn.Linear(2, 1).parameters(), lr=1.0)
    sched = StepLR(opt, 2, 0.5)
    assert sched.check_state_dict({"type": "StepLR", "base_lr": 2.0, "n": 4}) is None
    assert sched.n == 0 and sched.base_lr == 1.0 and opt.lr == 1.0
    plateau = ReduceLROnPlateau(opt, factor=0.5)
    good = {**plateau.state_dict(), "n": 3, "lr": 0.25, "best": 0.5, "wait": 2}
    plateau.check_state_dict(good)
    assert plateau.wait == 0 and plateau._watch.best is None and opt.lr == 1.0
    with pytest.raises(CheckpointError, match="'wait'"):
        plateau.check_state_dict({**good, "wait": -1})
    with pytest.raises(CheckpointError, match=r"'ReduceLROnPlateau' schedule, not a StepLR"):
        sched.check_state_dict(good)


def test_save_and_load_refuse_a_schedule_that_is_no_schedule(tmp_path: Path) -> None:
    """(With the fix above: schedule= without state_dict()/load_state_dict() is an
    ArgumentError, and nothing is written.)"""
    model, opt, sched = _setup(SCHEDULES["StepLR"])
    path = tmp_path / "x.safetensors"
    with pytest.raises(ArgumentError, match="schedule must be"):
        nb.save(model, path, schedule=3)
    assert not path.exists()
    nb.save(model, path, optimizer=opt, schedule=sched)
    with pytest.raises(ArgumentError, match="schedule must be"):
        nb.load(model, path, schedule=object())


def test_save_refuses_a_schedule_state_that_could_not_be_loaded(tmp_path: Path) -> None:
    """(With the fix above: save checks the schedule's state as load will, so it never writes
    a checkpoint whose schedule load refuses: a rate set to inf or NaN by hand, or a state
    that is not JSON.)"""
    model, opt, sched = _setup(SCHEDULES["StepLR"])
    path = tmp_path / "x.npz"
    sched.base_lr = math.inf
    with pytest.raises(CheckpointError, match="'base_lr'"):
        nb.save(model, path, optimizer=opt, schedule=sched)
    with pytest.raises(CheckpointError, match="schedule state"):
        nb.save(model, path, schedule=_Fake({"type": "X", "n": object()}))
    with pytest.raises(CheckpointError, match="schedule state"):
        nb.save(model, path, schedule=_Fake([1]))
    assert not path.exists()
