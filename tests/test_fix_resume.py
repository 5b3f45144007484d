"""Fixes and an attacker's review of resuming training: schedules, checkpoints and the Trainer.

Covered: a learning-rate schedule's settings (``step_size``, ``gamma``, ``total``, ``warmup``,
``min_lr``, ``per``, ReduceLROnPlateau's ``monitor``/``mode``/``factor``/``patience``) in its
``state_dict()`` and checked on load (states of the previous version, without them, still
load); ``nb.save``/``nb.load`` given a schedule that drives another optimizer than the one
given; ``Trainer.fit(initial_epoch=)`` continuing the epoch count of a resumed run (Keras's
meaning), with ``ModelCheckpoint`` recording the count in the checkpoint and nothing of the
first run overwritten; ``Trainer`` given a non-callable model or loss, or a class where an
instance belongs. Attacks tried: Ctrl-C mid-epoch then resume, a checkpoint of another model, a
schedule stepped per batch resumed as one stepped per epoch, hostile ``epoch`` metadata.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim
from nnbackend.callbacks import Callback, ModelCheckpoint
from nnbackend.errors import ArgumentError, CheckpointError
from nnbackend.io import safetensors as st
from nnbackend.schedules import CosineAnnealing, ExponentialLR, ReduceLROnPlateau, StepLR


def _data() -> tuple[Any, Any]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 3))
    t = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return x, t


def _model() -> Any:
    nb.random.seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def _weights(model: Any) -> dict[str, Any]:
    return {k: np.array(v, copy=True) for k, v in model.state_dict().items()}


# -- 1. a schedule's settings in its state ------------------------------------------------------

# (saved schedule, resumed schedule of other settings, the setting the error names)
MISMATCHES: list[tuple[str, Callable[[Any], Any], Callable[[Any], Any], str]] = [
    ("step_size", lambda o: StepLR(o, 2, 0.5), lambda o: StepLR(o, 3, 0.5), "step_size"),
    ("gamma", lambda o: StepLR(o, 2, 0.5), lambda o: StepLR(o, 2, 0.1), "gamma"),
    ("per", lambda o: StepLR(o, 2, per="step"), lambda o: StepLR(o, 2), "per"),
    ("exp gamma", lambda o: ExponentialLR(o, 0.9), lambda o: ExponentialLR(o, 0.5), "gamma"),
    ("total", lambda o: CosineAnnealing(o, 10), lambda o: CosineAnnealing(o, 20), "total"),
    (
        "warmup",
        lambda o: CosineAnnealing(o, 10, warmup=2),
        lambda o: CosineAnnealing(o, 10),
        "warmup",
    ),
    (
        "min_lr",
        lambda o: CosineAnnealing(o, 10, min_lr=0.01),
        lambda o: CosineAnnealing(o, 10),
        "min_lr",
    ),
    (
        "patience",
        lambda o: ReduceLROnPlateau(o, "loss", patience=2),
        lambda o: ReduceLROnPlateau(o, "loss", patience=5),
        "patience",
    ),
    (
        "factor",
        lambda o: ReduceLROnPlateau(o, "loss", factor=0.5),
        lambda o: ReduceLROnPlateau(o, "loss"),
        "factor",
    ),
    (
        "monitor",
        lambda o: ReduceLROnPlateau(o, "val_loss"),
        lambda o: ReduceLROnPlateau(o, "val_accuracy"),
        "monitor",
    ),
]


def test_schedule_state_holds_its_settings() -> None:
    """A schedule's state_dict() held its base rate and count but none of its settings."""
    opt = optim.SGD(nn.Linear(2, 1).parameters(), lr=1.0)
    state = StepLR(opt, step_size=2, gamma=0.5).state_dict()
    assert state["settings"] == {"step_size": 2, "gamma": 0.5, "per": "epoch"}
    cosine = CosineAnnealing(opt, 10, warmup=2, min_lr=0.01, per="step").state_dict()
    assert cosine["settings"] == {"total": 10, "warmup": 2, "min_lr": 0.01, "per": "step"}
    plateau = ReduceLROnPlateau(opt, "val_accuracy", factor=0.5, patience=3).state_dict()
    assert plateau["settings"] == {
        "monitor": "val_accuracy",
        "mode": "max",
        "factor": 0.5,
        "patience": 3,
        "min_lr": 0.0,
    }
    json.dumps(plateau)  # plain values: it goes into the checkpoint's JSON metadata


@pytest.mark.parametrize(
    ("saved", "resumed", "setting"), [m[1:] for m in MISMATCHES], ids=[m[0] for m in MISMATCHES]
)
def test_schedule_of_other_settings_is_refused(
    saved: Callable[[Any], Any], resumed: Callable[[Any], Any], setting: str
) -> None:
    """A state saved from a schedule of other settings (StepLR(step_size=2) loaded into
    StepLR(step_size=3), a per-step schedule into a per-epoch one) loaded silently."""
    opt = optim.SGD(nn.Linear(2, 1).parameters(), lr=1.0)
    first = saved(opt)
    for _ in range(3):
        first.step(1.0) if isinstance(first, ReduceLROnPlateau) else first.step()
    state = first.state_dict()
    opt2 = optim.SGD(nn.Linear(2, 1).parameters(), lr=1.0)
    again = resumed(opt2)
    before, lr = again.state_dict(), opt2.lr
    for call in (again.check_state_dict, again.load_state_dict):
        with pytest.raises(CheckpointError, match=rf"{setting}=") as info:
            call(state)
        assert "make the schedule" in str(info.value)
    assert again.state_dict() == before and opt2.lr == lr


def test_state_of_previous_version_without_settings_still_loads() -> None:
    """(Compatibility kept by the settings fix.) A state without ``settings``, as the previous
    version saved it, loads as before."""
    opt = optim.SGD(nn.Linear(2, 1).parameters(), lr=1.0)
    sched = StepLR(opt, step_size=2, gamma=0.5)
    sched.load_state_dict({"type": "StepLR", "base_lr": 0.5, "n": 3})
    assert sched.n == 3 and opt.lr == 0.25
    plateau = ReduceLROnPlateau(opt, "loss")
    plateau.load_state_dict(
        {"type": "ReduceLROnPlateau", "base_lr": 1.0, "n": 2, "lr": 0.1, "best": 0.5, "wait": 1}
    )
    assert opt.lr == 0.1 and plateau.wait == 1


@pytest.mark.parametrize(
    "settings",
    [
        None,
        [],
        "step_size=2",
        {"step_size": 2},
        {"step_size": 2, "gamma": 0.5, "per": "epoch", "extra": 1},
        {"step_size": True, "gamma": 0.5, "per": "epoch"},
    ],
)
def test_malformed_settings_are_refused(settings: Any) -> None:
    """(Part of the settings fix.) A state whose ``settings`` is no mapping of the schedule's
    settings is a CheckpointError, and changes nothing."""
    opt = optim.SGD(nn.Linear(2, 1).parameters(), lr=1.0)
    sched = StepLR(opt, step_size=1, gamma=0.5)
    state = {"type": "StepLR", "base_lr": 1.0, "n": 2, "settings": settings}
    with pytest.raises(CheckpointError, match=r"settings|step_size"):
        sched.load_state_dict(state)
    assert sched.n == 0 and opt.lr == 1.0


@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_load_refuses_a_checkpoint_of_other_schedule_settings(tmp_path: Path, fmt: str) -> None:
    """nb.load(..., schedule=StepLR(opt, 3)) of a checkpoint saved with StepLR(opt, 2) loaded
    silently (the resumed rates followed another schedule); now it is refused before the
    model, the optimizer or the schedule changes."""
    path = tmp_path / f"run.{fmt}"
    model = _model()
    opt = optim.SGD(model.parameters(), lr=1.0)
    sched = StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(3):
        sched.step()
    nb.save(model, path, optimizer=opt, schedule=sched)
    other = _model()
    for p in other.parameters():
        p.data = p.data * 0.0
    opt2 = optim.SGD(other.parameters(), lr=1.0)
    again = StepLR(opt2, step_size=3, gamma=0.5)
    before = _weights(other)
    with pytest.raises(CheckpointError, match=r"step_size=2.*step_size=3|step_size=3.*step_size"):
        nb.load(other, path, optimizer=opt2, schedule=again)
    assert all(np.array_equal(before[k], v) for k, v in _weights(other).items())
    assert opt2.lr == 1.0 and again.n == 0
    same = StepLR(opt2, step_size=2, gamma=0.5)
    nb.load(other, path, optimizer=opt2, schedule=same)
    assert same.n == 3 and opt2.lr == 0.5


# -- 2. a schedule of another optimizer -------------------------------------------------------


def test_load_refuses_a_schedule_of_another_optimizer(tmp_path: Path) -> None:
    """nb.load(model, path, optimizer=opt, schedule=sched) with sched driving another optimizer
    loaded silently: opt kept the saved (decayed) rate, the other optimizer got the schedule's.
    Now an ArgumentError before anything changes."""
    path = tmp_path / "run.safetensors"
    model = _model()
    opt = optim.SGD(model.parameters(), lr=1.0)
    sched = StepLR(opt, step_size=1, gamma=0.5)
    sched.step()
    nb.save(model, path, optimizer=opt, schedule=sched)
    fresh = _model()
    for p in fresh.parameters():
        p.data = p.data + 1.0
    before = _weights(fresh)
    opt2 = optim.SGD(fresh.parameters(), lr=1.0)
    stray = optim.SGD(nn.Linear(2, 1).parameters(), lr=1.0)
    wrong = StepLR(stray, step_size=1, gamma=0.5)
    with pytest.raises(ArgumentError, match="schedule drives another optimizer"):
        nb.load(fresh, path, optimizer=opt2, schedule=wrong)
    assert all(np.array_equal(before[k], v) for k, v in _weights(fresh).items())
    assert opt2.lr == 1.0 and stray.lr == 1.0 and wrong.n == 0


def test_save_refuses_a_schedule_of_another_optimizer(tmp_path: Path) -> None:
    """nb.save(model, path, optimizer=opt, schedule=sched) with sched driving another optimizer
    wrote a checkpoint whose optimizer and schedule did not belong together; now an
    ArgumentError, and no file."""
    model = _model()
    opt = optim.SGD(model.parameters(), lr=1.0)
    other = StepLR(optim.SGD(nn.Linear(2, 1).parameters(), lr=1.0), step_size=1)
    with pytest.raises(ArgumentError, match="schedule drives another optimizer"):
        nb.save(model, tmp_path / "x.safetensors", optimizer=opt, schedule=other)
    assert not (tmp_path / "x.safetensors").exists()


# -- 3. the epoch count of a resumed run ------------------------------------------------------


class _Epochs(Callback):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_epoch_end(self, trainer: Any, history: Any) -> None:
        self.seen.append(trainer.epoch)


def test_resumed_fit_continues_the_epoch_count(tmp_path: Path, capsys: Any) -> None:
    """A resumed fit numbered its epochs from 1 again, so ModelCheckpoint("ckpt-{epoch}")
    overwrote the first run's files; fit(initial_epoch=) now continues the count (Keras's
    meaning: ``epochs`` is the epoch to stop at), from the count the checkpoint records."""
    x, t = _data()
    template = str(tmp_path / "ckpt-{epoch}.safetensors")
    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.5)
    sched = StepLR(opt, step_size=1, gamma=0.5)
    first = ModelCheckpoint(template, "loss", save_optimizer=True)
    nb.Trainer(model, nn.SoftmaxCrossEntropy(), opt).fit(
        x, t, epochs=2, callbacks=[sched, first], progress=False, seed=0
    )
    assert [p.name for p in first.saved] == ["ckpt-1.safetensors", "ckpt-2.safetensors"]
    kept = {p: p.read_bytes() for p in first.saved}
    last = first.saved[-1]
    done = nb.io.read_metadata(last)["epoch"]
    assert done == 2

    model2 = _model()
    opt2 = optim.SGD(model2.parameters(), lr=0.5)
    sched2 = StepLR(opt2, step_size=1, gamma=0.5)
    nb.load(model2, last, optimizer=opt2, schedule=sched2)
    second, epochs = ModelCheckpoint(template, "loss", save_optimizer=True), _Epochs()
    trainer = nb.Trainer(model2, nn.SoftmaxCrossEntropy(), opt2)
    history = trainer.fit(
        x,
        t,
        epochs=4,
        initial_epoch=done,
        callbacks=[sched2, second, epochs],
        progress="log",
        seed=0,
    )
    assert [p.name for p in second.saved] == ["ckpt-3.safetensors", "ckpt-4.safetensors"]
    assert all(p.read_bytes() == blob for p, blob in kept.items())  # nothing overwritten
    assert epochs.seen == [2, 3] and history.epochs == 2 and len(history.epoch_loss) == 2
    assert nb.io.read_metadata(second.saved[-1])["epoch"] == 4
    assert sched2.n == 4
    err = capsys.readouterr().err
    assert "epoch 3/4" in err and "epoch 4/4" in err and "epoch 1/" not in err


def test_initial_epoch_is_checked() -> None:
    """(Part of the initial_epoch fix.) initial_epoch must be an int >= 0; one at or past
    ``epochs`` trains nothing, as in Keras."""
    x, t = _data()
    model = _model()
    trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1))
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ArgumentError, match="initial_epoch"):
            trainer.fit(x, t, epochs=3, initial_epoch=bad, progress=False)
    before = _weights(model)
    history = trainer.fit(x, t, epochs=3, initial_epoch=3, progress=False)
    assert history.epochs == 0 and history.steps == 0
    assert all(np.array_equal(before[k], v) for k, v in _weights(model).items())


def test_save_checks_epoch_and_load_refuses_hostile_epoch(tmp_path: Path) -> None:
    """(Part of the initial_epoch fix.) save(epoch=) takes an int >= 0; a checkpoint whose
    ``epoch`` metadata is no such int is a CheckpointError on load and read_metadata."""
    model = _model()
    for bad in (-1, 2.0, True, "3"):
        with pytest.raises(ArgumentError, match="epoch"):
            nb.save(model, tmp_path / "a.safetensors", epoch=bad)
    path = tmp_path / "ok.safetensors"
    nb.save(model, path, epoch=5)
    assert nb.io.read_metadata(path)["epoch"] == 5
    meta = nb.io.read_metadata(path)
    arrays = {k: np.asarray(v) for k, v in model.state_dict().items()}
    for hostile in ("5", -1, 1.5, True, 10**30):
        meta["epoch"] = hostile
        bad_path = tmp_path / "hostile.safetensors"
        with open(bad_path, "wb") as f:
            st.write(f, arrays, {"format": nb.io.FORMAT, st.METADATA_FIELD: json.dumps(meta)})
        with pytest.raises(CheckpointError, match="epoch"):
            nb.io.read_metadata(bad_path)
        with pytest.raises(CheckpointError, match="epoch"):
            nb.load(_model(), bad_path)


# -- 4. a model or loss that is no callable instance ------------------------------------------


@pytest.mark.parametrize(
    ("which", "make"),
    [
        ("model", lambda m, o: (3, nn.MSELoss(), o)),
        ("model", lambda m, o: (nn.Linear, nn.MSELoss(), o)),
        ("loss_fn", lambda m, o: (m, "mse", o)),
        ("loss_fn", lambda m, o: (m, nn.MSELoss, o)),
        ("optimizer", lambda m, o: (m, nn.MSELoss(), optim.SGD)),
    ],
    ids=["model int", "model class", "loss str", "loss class", "optimizer class"],
)
def test_trainer_refuses_what_is_no_model_or_loss(which: str, make: Any) -> None:
    """Trainer(model, loss, opt) with a non-callable model or loss raised a bare TypeError,
    and with a class where an instance belongs (nn.Linear, nn.MSELoss, optim.SGD) it raised a
    bare TypeError from deep inside fit; now an ArgumentError (still a TypeError) at once."""
    model = nn.Linear(3, 1)
    opt = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ArgumentError, match=rf"^{which} must be") as info:
        nb.Trainer(*make(model, opt))
    assert isinstance(info.value, TypeError)
