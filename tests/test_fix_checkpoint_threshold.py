"""``ModelCheckpoint(save_best_only=True)`` in a resumed run: ``initial_value_threshold``.

Before it, a resumed ``fit`` started its checkpoint's "best" from nothing, so its first epoch
always counted as an improvement: at a path without ``{epoch}`` it overwrote the better model
the first run had saved. Now the value to beat can be given (Keras's name), and a resumed fit
with ``save_best_only`` but no threshold warns.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim
from nnbackend.callbacks import ModelCheckpoint
from nnbackend.errors import ArgumentError


def _data() -> tuple[Any, Any]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 3))
    t = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return x, t


def _trainer() -> nb.Trainer:
    nb.random.seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    return nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1))


def _fit(trainer: nb.Trainer, ckpt: ModelCheckpoint, **kw: Any) -> nb.History:
    x, t = _data()
    return trainer.fit(x, t, batch_size=8, seed=0, progress=False, callbacks=[ckpt], **kw)


def test_a_threshold_no_epoch_beats_keeps_the_first_runs_file(tmp_path: Path) -> None:
    path = tmp_path / "best.npz"
    first = ModelCheckpoint(path, "loss", save_best_only=True)
    _fit(_trainer(), first, epochs=2)
    assert first.saved and first.best is not None
    before = path.read_bytes()

    # The resumed run's loss cannot go below 0: nothing it does beats the threshold.
    resumed = ModelCheckpoint(path, "loss", save_best_only=True, initial_value_threshold=-1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a threshold was given: no warning
        history = _fit(_trainer(), resumed, epochs=4, initial_epoch=2)
    assert history.epochs == 2
    assert resumed.saved == []
    assert resumed.best == -1.0 and resumed.best_epoch is None
    assert path.read_bytes() == before


def test_an_epoch_that_beats_the_threshold_is_saved(tmp_path: Path) -> None:
    path = tmp_path / "best.npz"
    ckpt = ModelCheckpoint(path, "loss", save_best_only=True, initial_value_threshold=1e9)
    history = _fit(_trainer(), ckpt, epochs=2)
    assert ckpt.saved == [path, path]
    assert ckpt.best == history.epoch_loss[-1] and ckpt.best_epoch == 1


def test_a_maximised_monitor_compares_the_other_way(tmp_path: Path) -> None:
    ckpt = ModelCheckpoint(
        tmp_path / "a.npz", "accuracy", save_best_only=True, initial_value_threshold=1.01
    )
    _fit(_trainer(), ckpt, epochs=2)
    assert ckpt.saved == []  # no accuracy beats 1.01
    low = ModelCheckpoint(
        tmp_path / "b.npz", "accuracy", save_best_only=True, initial_value_threshold=-0.01
    )
    _fit(_trainer(), low, epochs=1)
    assert low.saved == [tmp_path / "b.npz"]


def test_each_fit_starts_again_from_the_threshold(tmp_path: Path) -> None:
    ckpt = ModelCheckpoint(
        tmp_path / "c.npz", "loss", save_best_only=True, initial_value_threshold=-1.0
    )
    trainer = _trainer()
    _fit(trainer, ckpt, epochs=1)
    ckpt.best = 123.0  # whatever a previous fit left behind
    _fit(trainer, ckpt, epochs=1)
    assert ckpt.best == -1.0 and ckpt.saved == []


def test_a_resumed_fit_without_a_threshold_warns(tmp_path: Path) -> None:
    ckpt = ModelCheckpoint(tmp_path / "best.npz", "loss", save_best_only=True)
    with pytest.warns(UserWarning, match="initial_value_threshold"):
        _fit(_trainer(), ckpt, epochs=3, initial_epoch=2)
    assert len(ckpt.saved) == 1  # as before: the first epoch of the resumed run is saved


@pytest.mark.parametrize(
    "kw",
    [
        {"initial_epoch": 0, "save_best_only": True},  # not resumed
        {"initial_epoch": 2, "save_best_only": False},  # every epoch is saved anyway
    ],
)
def test_no_warning_where_nothing_can_be_lost(tmp_path: Path, kw: dict[str, Any]) -> None:
    ckpt = ModelCheckpoint(tmp_path / "x.npz", "loss", save_best_only=kw["save_best_only"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fit(_trainer(), ckpt, epochs=3, initial_epoch=kw["initial_epoch"])


@pytest.mark.parametrize("bad", [math.nan, "0.5", True, [0.5], object()])
def test_a_threshold_that_is_no_number_is_refused(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ArgumentError, match="initial_value_threshold"):
        ModelCheckpoint(tmp_path / "x.npz", "loss", initial_value_threshold=bad)


def test_numpy_scalars_and_infinities_are_numbers(tmp_path: Path) -> None:
    a = ModelCheckpoint(tmp_path / "x.npz", "loss", initial_value_threshold=np.float32(0.25))
    assert a.initial_value_threshold == 0.25 and type(a.initial_value_threshold) is float
    b = ModelCheckpoint(tmp_path / "x.npz", "loss", initial_value_threshold=math.inf)
    assert b.initial_value_threshold == math.inf


# -- History.initial_epoch: which epochs a resumed fit's history holds ----------------------------
def test_a_resumed_fits_history_records_where_it_started(tmp_path: Path) -> None:
    first = _fit(_trainer(), ModelCheckpoint(tmp_path / "a.npz", "loss"), epochs=2)
    assert first.initial_epoch == 0 and first.to_dict()["initial_epoch"] == 0
    ckpt = ModelCheckpoint(tmp_path / "run-{epoch}.npz", "loss")
    resumed = _fit(_trainer(), ckpt, epochs=5, initial_epoch=2)
    assert resumed.initial_epoch == 2 and resumed.epochs == 3
    assert resumed.to_dict()["initial_epoch"] == 2
    # the epochs it names, 1-based, are those ModelCheckpoint wrote
    numbers = range(resumed.initial_epoch + 1, resumed.initial_epoch + resumed.epochs + 1)
    assert [p.name for p in ckpt.saved] == [f"run-{n}.npz" for n in numbers]


# -- EarlyStopping(baseline=): the value a resumed run must beat ----------------------------------
def test_early_stopping_stops_when_no_epoch_beats_the_baseline() -> None:
    from nnbackend.callbacks import EarlyStopping

    stop = EarlyStopping("loss", patience=2, baseline=-1.0, restore_best=True)
    x, t = _data()
    history = _trainer().fit(x, t, epochs=10, batch_size=8, progress=False, callbacks=[stop])
    assert history.epochs == 2 and history.stopped_early  # no loss goes below -1
    assert stop.best == -1.0 and stop.best_epoch is None and stop.stopped_epoch == 1
    free = EarlyStopping("loss", patience=2)  # without one, the first epoch is the best
    history = _trainer().fit(x, t, epochs=3, batch_size=8, progress=False, callbacks=[free])
    assert free.best_epoch is not None


def test_a_baseline_that_is_beaten_counts_as_usual() -> None:
    from nnbackend.callbacks import EarlyStopping

    stop = EarlyStopping("loss", patience=1, baseline=1e9)
    x, t = _data()
    _trainer().fit(x, t, epochs=2, batch_size=8, progress=False, callbacks=[stop])
    assert stop.best_epoch is not None and stop.best is not None and stop.best < 1e9


@pytest.mark.parametrize("bad", [math.nan, "1", True])
def test_a_baseline_that_is_no_number_is_refused(bad: Any) -> None:
    from nnbackend.callbacks import EarlyStopping

    with pytest.raises(ArgumentError, match="baseline must be a number"):
        EarlyStopping("loss", baseline=bad)


def test_a_resumed_fit_with_no_epoch_left_does_not_warn(tmp_path: Path) -> None:
    """(The warning comes with the save it warns about, not at the start of a fit that
    trains nothing: initial_epoch == epochs.)"""
    ckpt = ModelCheckpoint(tmp_path / "best.npz", "loss", save_best_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = _fit(_trainer(), ckpt, epochs=3, initial_epoch=3)
    assert history.epochs == 0 and ckpt.saved == []
