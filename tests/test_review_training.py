"""Review of the training loop and the data path: defects found by attacking ``Trainer.fit``,
its callbacks and ``DataLoader`` as a user coming from Keras and PyTorch would."""

from __future__ import annotations

import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim
from nnbackend.callbacks import EarlyStopping, ModelCheckpoint
from nnbackend.data import DataLoader
from nnbackend.errors import ArgumentError, NNBackendError, ShapeError
from nnbackend.metrics import BinaryAccuracy, TopKAccuracy
from nnbackend.schedules import ReduceLROnPlateau, StepLR
from nnbackend.train import History

RNG = np.random.default_rng(1)
X = RNG.normal(size=(12, 3))
T = RNG.integers(0, 4, 12)


def _setup(lr: float = 0.1) -> tuple[nn.Module, nb.Trainer]:
    nb.random.seed(0)
    model = nn.Sequential(nn.Linear(3, 4))
    return model, nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=lr))


# -- callbacks: which way is better ----------------------------------------------------------
@pytest.mark.parametrize("monitor", ["binary_accuracy", "val_binary_accuracy"])
def test_early_stopping_maximises_binary_accuracy(monitor: str) -> None:
    """BinaryAccuracy's name is "binary_accuracy": "auto" read it as a loss to minimise, so a
    rising accuracy stopped training and restore_best kept the worst epoch's weights."""
    stop = EarlyStopping(monitor, patience=0)
    history = History()
    history.metrics[monitor] = []
    trainer = SimpleNamespace(epoch=0, stop_training=False, model=None)
    stop.on_fit_start(trainer, history)  # type: ignore[arg-type]
    for epoch, value in enumerate([0.5, 0.75, 0.9]):
        trainer.epoch = epoch
        history.metrics[monitor].append(value)
        stop.on_epoch_end(trainer, history)  # type: ignore[arg-type]
    assert not trainer.stop_training
    assert stop.best == 0.9 and stop.best_epoch == 2


def test_checkpoint_and_plateau_maximise_binary_accuracy(tmp_path: Path) -> None:
    ckpt = ModelCheckpoint(tmp_path / "m.npz", "val_binary_accuracy", save_best_only=True)
    assert ckpt._watch.mode == "max"
    opt = optim.SGD(nn.Linear(2, 1).parameters(), lr=1.0)
    plateau = ReduceLROnPlateau(opt, "val_binary_accuracy", patience=0)
    plateau.step(0.5)
    plateau.step(0.9)  # better: the rate stays
    assert opt.lr == 1.0


# -- Ctrl-C twice: the history agrees with what was trained ----------------------------------
def test_second_ctrl_c_during_validation_keeps_the_history_consistent() -> None:
    """Two Ctrl-Cs in the second epoch's validation: that epoch is not completed, so it is not
    in the per-epoch lists, and its steps are in the last report (they were lost: six steps
    taken, one report of three, and epoch_loss longer than ``epochs``)."""

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 4)
            self.evals = 0

        def forward(self, x: Any) -> Any:
            if not self.training:
                self.evals += 1
                if self.evals == 2:
                    signal.raise_signal(signal.SIGINT)
                    signal.raise_signal(signal.SIGINT)
            return self.lin(x)

    nb.random.seed(0)
    model = Model()
    trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1))
    before = signal.getsignal(signal.SIGINT)
    history = trainer.fit(X, T, epochs=4, batch_size=4, seed=0, progress=False, validation=(X, T))
    assert signal.getsignal(signal.SIGINT) is before
    assert history.interrupted and history.steps == 6
    assert history.epochs == 1
    assert len(history.epoch_loss) == len(history.epoch_accuracy) == 1
    assert len(history.val_loss) == len(history.epoch_time) == 1
    assert history.report_steps == [3, 6]  # every step taken is in a report
    assert len(history.loss) == 2


def test_second_ctrl_c_in_a_metric_keeps_the_applied_step_in_the_sums() -> None:
    """Two Ctrl-Cs while a training metric is fed, after the optimizer step: the step was
    applied, so its loss belongs in the last report (it was left out of the mean)."""
    from nnbackend.metrics import Mean

    calls = [0]

    def fn(y: Any, t: Any) -> Any:
        calls[0] += 1
        if calls[0] == 2:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        return nb.array_namespace(y).mean(y)

    _, trainer = _setup(lr=0.0)  # lr 0: every step has the same loss per row
    history = trainer.fit(
        X, T, epochs=1, batch_size=6, shuffle=False, progress=False, metrics=[Mean("m", fn)]
    )
    assert history.interrupted and history.steps == 2
    assert history.report_steps == [2]
    assert history.loss[0] == pytest.approx(trainer.evaluate(X, T)[0], rel=1e-12)


# -- ModelCheckpoint's file name -------------------------------------------------------------
def test_checkpoint_path_may_name_every_per_epoch_value(tmp_path: Path) -> None:
    """Keras's "ckpt-{epoch:02d}-{loss:.2f}" with monitor val_loss raised a bare KeyError after
    the first epoch had trained."""
    _, trainer = _setup()
    ckpt = ModelCheckpoint(tmp_path / "m-{epoch:02d}-{loss:.2f}-{val_accuracy:.2f}.npz")
    trainer.fit(X, T, epochs=2, batch_size=4, progress=False, validation=(X, T), callbacks=[ckpt])
    assert [p.name.split("-")[1] for p in ckpt.saved] == ["01", "02"]
    assert all(p.is_file() for p in ckpt.saved)


def test_checkpoint_path_with_an_unknown_field_is_a_clear_error(tmp_path: Path) -> None:
    _, trainer = _setup()
    ckpt = ModelCheckpoint(tmp_path / "m-{epch}.npz")
    with pytest.raises(ArgumentError, match="epch"):
        trainer.fit(X, T, epochs=1, batch_size=4, progress=False, callbacks=[ckpt])
    with pytest.raises(ArgumentError, match="path"):
        ModelCheckpoint(tmp_path / "m-{epoch.npz")


# -- fit's arguments, as Keras users write them ----------------------------------------------
def test_fit_takes_none_for_callbacks_and_metrics() -> None:
    _, trainer = _setup()
    history = trainer.fit(
        X, T, epochs=1, batch_size=4, progress=False, callbacks=None, metrics=None
    )
    assert history.steps == 3
    assert trainer.evaluate(X, T, metrics=None)[1] is not None


def test_fit_takes_one_metric_alone() -> None:
    """metrics="top2" was read as the metrics "t", "o", "p", "2": "unknown metric 't'"."""
    _, trainer = _setup()
    history = trainer.fit(X, T, epochs=1, batch_size=4, progress=False, metrics="top2")
    assert list(history.metrics) == ["top2"]
    history = trainer.fit(X, T, epochs=1, batch_size=4, progress=False, metrics=TopKAccuracy(3))
    assert list(history.metrics) == ["top3"]
    top = TopKAccuracy(2)
    trainer.evaluate(X, T, metrics=top)
    assert 0.0 <= top.result() <= 1.0


def test_two_metrics_of_one_name_are_an_error() -> None:
    """Both appended to history.metrics["top2"]: two values per epoch, interleaved."""
    _, trainer = _setup()
    with pytest.raises(ArgumentError, match="top2"):
        trainer.fit(X, T, epochs=2, progress=False, metrics=["top2", TopKAccuracy(2)])
    assert trainer.step == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"max_grad": "a"}, {"max_grad": -1.0}, {"max_grad": float("nan")}, {"progress": "yes"}],
)
def test_bad_fit_arguments_raise_typed_errors(kwargs: dict[str, Any]) -> None:
    _, trainer = _setup()
    trainer.step = 7
    with pytest.raises(ArgumentError):
        trainer.fit(X, T, epochs=1, **kwargs)
    assert trainer.step == 7  # nothing changed before the arguments were checked


@pytest.mark.parametrize("min_delta", ["a", None, -1.0])
def test_bad_min_delta_raises_argument_error(min_delta: Any, tmp_path: Path) -> None:
    with pytest.raises(ArgumentError, match="min_delta"):
        EarlyStopping("loss", min_delta=min_delta)


@pytest.mark.parametrize("gamma", ["a", None, 0.0, 2.0])
def test_bad_schedule_factor_raises_argument_error(gamma: Any) -> None:
    opt = optim.SGD(nn.Linear(2, 1).parameters(), lr=1.0)
    with pytest.raises(ArgumentError, match="gamma"):
        StepLR(opt, 2, gamma)


# -- DataLoader ------------------------------------------------------------------------------
def test_one_loader_trains_two_models_of_different_dtypes() -> None:
    """fit set loader.like to its model for good: a second model (float32 after float64, or
    on another backend) then got the first model's batches and failed."""
    loader = DataLoader(X, T, batch_size=4, seed=0)
    for dtype in ("float64", "float32"):
        with nb.using(backend="numpy", dtype=dtype):
            _, trainer = _setup()
            history = trainer.fit(loader, epochs=1, progress=False)
        assert history.steps == 3
    assert loader.like is None


def test_one_loader_trains_models_on_two_backends() -> None:
    loader = DataLoader(X, T, batch_size=4, seed=0)
    for backend in ("numpy", "array_api_strict"):
        with nb.using(backend=backend, dtype="float32"):
            _, trainer = _setup()
            assert trainer.fit(loader, epochs=1, progress=False).steps == 3


def test_loader_given_a_dataset_pair_says_what_to_do() -> None:
    """DataLoader(nb.datasets.spiral()) took the pair (x, t) as a data set of two rows and
    failed in np.stack with a bare ValueError."""
    data = nb.datasets.spiral(n_per_class=4)
    with pytest.raises(ArgumentError, match=r"DataLoader\(x, t"):
        DataLoader(data, batch_size=4)


def test_loader_with_rows_of_different_shapes_raises_shape_error() -> None:
    loader = DataLoader([[1.0, 2.0], [1.0]], [0, 1], batch_size=2, shuffle=False)
    with pytest.raises(ShapeError, match="shape"):
        next(iter(loader))
    with pytest.raises(NNBackendError):
        next(iter(DataLoader([(np.ones(2), 0), (np.ones(3), 1)], batch_size=2)))


def test_binary_accuracy_name_is_the_metric_name() -> None:
    assert BinaryAccuracy().name == "binary_accuracy"


# -- nothing measured is lost, no callback silently idle -------------------------------------
def test_an_error_in_fit_leaves_what_it_measured_in_trainer_history() -> None:
    """fit returns its History only when it ends normally: an error in the third epoch (a
    callback's, a NaN check's) took the first two epochs' measurements with it."""
    _, trainer = _setup()
    assert trainer.history is None

    def fail_third(tr: Any, history: History) -> None:
        if history.epochs == 3:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full") as info:
        trainer.fit(X, T, epochs=5, batch_size=4, callbacks=[fail_third], progress=False)
    history = trainer.history
    assert history is not None and history.epochs == 3 and len(history.epoch_loss) == 3
    assert all(np.isfinite(history.epoch_loss))
    assert any("trainer.history" in note for note in info.value.__notes__)
    done = trainer.fit(X, T, epochs=1, batch_size=4, progress=False)
    assert trainer.history is done


@pytest.mark.parametrize(
    "make",
    [
        lambda opt, path: EarlyStopping("val_loss", patience=0),
        lambda opt, path: ModelCheckpoint(path, "val_loss", save_best_only=True),
        lambda opt, path: ReduceLROnPlateau(opt, "val_loss", patience=0),
    ],
    ids=["early_stopping", "checkpoint", "plateau"],
)
def test_a_callback_monitoring_validation_without_any_warns(make: Any, tmp_path: Path) -> None:
    """Without validation data a callback monitoring ``val_loss`` never acts: no early stop,
    no best checkpoint, no lower rate, and it said nothing (Keras warns)."""
    _, trainer = _setup()
    callback = make(trainer.optimizer, tmp_path / "best.npz")
    with pytest.warns(UserWarning, match="monitors 'val_loss', which this fit does not record"):
        trainer.fit(X, T, epochs=2, batch_size=4, callbacks=[callback], progress=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with validation data: no warning
        trainer.fit(
            X, T, epochs=2, batch_size=4, callbacks=[callback], validation=(X, T), progress=False
        )
