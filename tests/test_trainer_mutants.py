"""The Trainer's edges that mutation testing found untested (issue #21): the history's
dictionary, when the default accuracy applies, explicit monitor modes, a validation set whose
target dtypes differ from the training ones, shuffling on the data's own backend and device
(not the active one), the probe batch of a DataLoader, the smallest ``validation_split``,
``no_sync`` in a world, the compile warning of data-parallel training and the device of a
metric's all-reduce.

Everything here runs on numpy and array_api_strict only (torch deadlocks in mutmut's forked
children, see CONTRIBUTING)."""

from __future__ import annotations

import json
import os
import re
import threading
import warnings
from dataclasses import fields
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import distributed, nn, optim, registry
from nnbackend.callbacks import EarlyStopping
from nnbackend.data import DataLoader
from nnbackend.errors import (
    ArgumentError,
    BackendMismatchError,
    CompileWarning,
    DtypeError,
    ShapeError,
)
from nnbackend.metrics import Accuracy
from nnbackend.train.callbacks import Monitor, monitored_value
from nnbackend.train.metrics import MetricSums, TopKAccuracy, metric_result


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, nb.Tensor) else a
    return np.array(registry.get(registry.backend_of(a)).to_host(a), copy=True)


def _spiral(n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.standard_normal((n, 2)), rng.integers(0, 3, n)


def _trainer(classes: int = 3, lr: float = 0.1) -> nb.Trainer:
    with nb.using(backend="numpy", dtype="float64"):
        nb.random.seed(0)
        model = nn.Sequential(nn.Linear(2, classes))
    return nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=lr))


# -- History.to_dict ---------------------------------------------------------------------------
def test_history_to_dict_has_every_field_under_its_own_name() -> None:
    x, t = _spiral()
    history = _trainer().fit(
        x, t, epochs=2, batch_size=5, seed=0, progress=False, validation=(x, t),
        metrics=["top5"],
    )  # fmt: skip
    out = history.to_dict()
    names = {f.name for f in fields(nb.History)}
    assert set(out) == names | {"time_per_step"}
    for name in names - {"metrics"}:
        assert out[name] == getattr(history, name), name
    assert out["metrics"] == history.metrics and set(out["metrics"]) == {"top5", "val_top5"}
    assert out["batch_size"] == 5 and out["steps_per_epoch"] == 3 and out["steps"] == 6
    assert out["time_per_step"] == history.wall_time / 6
    assert json.loads(json.dumps(out)) == out  # plain JSON


# -- when the default accuracy applies ---------------------------------------------------------
def test_accuracy_applies_to_two_classes_and_labels_or_one_hot_rows() -> None:
    y2, y3 = np.zeros((4, 2)), np.zeros((4, 3))
    labels = np.array([0, 1, 1, 0])
    acc = Accuracy()
    assert acc.applies_to(y2, labels)  # two classes are enough
    assert acc.applies_to(y3, labels)
    assert acc.applies_to(y3, np.eye(3)[[0, 1, 2, 0]])  # one-hot rows
    assert not acc.applies_to(np.zeros((4, 1)), labels)  # one output: no argmax
    assert not acc.applies_to(np.zeros(4), labels)
    assert not acc.applies_to(y3, labels.astype(np.float64))  # float rows are no labels
    assert not acc.applies_to(y3, labels.reshape(4, 1))  # integer, but not one per row


def test_fit_reports_accuracy_for_a_two_class_softmax() -> None:
    x, t = _spiral()
    t = t % 2
    history = _trainer(classes=2).fit(x, t, epochs=1, batch_size=12, progress=False)
    with nb.using(backend="numpy", dtype="float64"):
        model = _trainer(classes=2).model
    y = _host(model(nb.to_backend(x, like=model)))
    assert history.epoch_accuracy == [float(np.mean(y.argmax(1) == t))]


# -- monitors ----------------------------------------------------------------------------------
def test_monitored_value_error_says_how_to_get_validation_numbers() -> None:
    with pytest.raises(ArgumentError, match=r"pass\s+validation_data or validation_split"):
        monitored_value(nb.History(), "val_top5")


def test_explicit_min_and_max_modes_are_accepted_and_others_refused() -> None:
    assert Monitor("val_loss", "min", 0.0).mode == "min"
    assert Monitor("val_accuracy", "max", 0.0).mode == "max"
    assert Monitor("loss", "max", 0.0).monitor == "loss"
    with pytest.raises(
        ArgumentError, match=r"^mode must be 'auto', 'min' or 'max', got 'minimum'$"
    ):
        Monitor("loss", "minimum", 0.0)
    # mode="max" on a falling loss: no epoch after the first improves it.
    x, t = _spiral()
    stop = EarlyStopping("loss", patience=1, mode="max")
    history = _trainer(lr=0.5).fit(x, t, epochs=5, batch_size=12, progress=False, callbacks=[stop])
    assert history.epoch_loss[1] < history.epoch_loss[0]
    assert history.stopped_early and history.epochs == 2 and stop.best_epoch == 0


# -- the validation set's target dtype ---------------------------------------------------------
class _Scale:
    """A model without parameters (so the data keep their own dtypes): ``x @ w``."""

    def __init__(self, w: np.ndarray) -> None:
        self.w = w

    def __call__(self, x: Any) -> Any:
        xp = nb.array_namespace(x)
        return nb.Tensor(x) @ nb.Tensor(xp.asarray(self.w, dtype=x.dtype))


class _NoOptimizer:
    def step(self) -> None:
        pass

    def zero_grad(self) -> None:
        pass


@pytest.mark.parametrize(
    ("train_t", "val_t"),
    [
        (np.zeros((4, 2)), np.zeros((4, 2), np.int64)),  # labels against float targets
        (np.zeros((4, 2), np.int64), np.zeros((4, 2))),
    ],
)
def test_validation_targets_of_another_dtype_are_refused_before_training(
    train_t: np.ndarray, val_t: np.ndarray
) -> None:
    """Floats are cast to the model's dtype and labels become int64, so only integer against
    float targets can differ here."""
    x = np.ones((4, 3))
    model = _Scale(np.ones((3, 2)))
    trainer = nb.Trainer(model, nn.MSELoss(), _NoOptimizer())
    with pytest.raises(DtypeError, match=r"validation targets are .*convert them"):
        trainer.fit(x, train_t, epochs=1, progress=False, validation=(x, val_t))
    assert trainer.step == 0


# -- shuffling on the data's backend and device ------------------------------------------------
def test_shuffled_fit_draws_its_order_on_the_data_backend_not_the_active_one() -> None:
    """The model and data are NumPy's; the active backend (cupy, not usable here, or
    array_api_strict) never runs a thing: the order is drawn for the data's backend."""
    x, t = _spiral()
    want = _trainer().fit(x, t, epochs=2, batch_size=5, seed=4, progress=False)
    for active in ("cupy", "array_api_strict"):
        with nb.using(backend=active, dtype="float32"):
            got = _trainer().fit(x, t, epochs=2, batch_size=5, seed=4, progress=False)
        assert got.epoch_loss == want.epoch_loss


class _RowRecorder(nb.Trainer):
    """A step of its own (no backward): records the row ids (column 0) of every batch."""

    def __init__(self) -> None:
        super().__init__(lambda x: x, lambda y, t: nb.array_namespace(y).mean(y), _NoOptimizer())
        self.rows: list[list[int]] = []

    def train_step(self, x: Any, t: Any) -> tuple[Any, Any]:
        self.rows.append([int(v) for v in _host(x)[:, 0]])
        self.step += 1
        xp = nb.array_namespace(x)
        return x, xp.mean(x)


def test_shuffled_fit_keeps_the_batches_on_the_data_device() -> None:
    """array_api_strict's second device: the permutation is moved there before it picks rows
    (taking with indices from another device is refused)."""
    strict = pytest.importorskip("array_api_strict")
    device = strict.Device("device1")
    ids = np.arange(10.0).reshape(10, 1) * np.ones((1, 2))
    x = strict.asarray(ids, device=device)
    t = strict.asarray(np.arange(10), device=device)
    trainer = _RowRecorder()
    history = trainer.fit(x, t, epochs=2, batch_size=4, seed=1, progress=False)
    assert history.steps == 6
    for epoch in (trainer.rows[:3], trainer.rows[3:]):
        assert sorted(row for batch in epoch for row in batch) == list(range(10))
    assert trainer.rows[:3] != trainer.rows[3:]


# -- DataLoader: the probe batch ---------------------------------------------------------------
class _Rows:
    """A lazy data set recording every row read."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.reads: list[int] = []
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        with self.lock:
            self.reads.append(int(i))
        return np.array([float(i), 1.0]), int(i) % 3


def test_fit_on_a_shuffling_loader_probes_the_first_rows_in_order() -> None:
    """The batch that fixes the backend is the first ``batch_size`` rows, read in order (one
    sequential read of a memory-mapped file), whatever order the loader shuffles."""
    rows = _Rows(40)
    loader = DataLoader(rows, batch_size=8, seed=3, prefetch=False)
    _trainer(lr=0.0).fit(loader, epochs=1, progress=False)
    assert rows.reads[:8] == list(range(8))
    assert sorted(rows.reads[8:]) == list(range(40))


# -- validation_split ------------------------------------------------------------------------
def test_validation_split_may_leave_a_single_training_row() -> None:
    x, t = _spiral(2)
    history = _trainer().fit(x, t, epochs=1, batch_size=4, validation_split=0.5, progress=False)
    assert history.steps == 1 and history.steps_per_epoch == 1 and len(history.val_loss) == 1
    with pytest.raises(ArgumentError, match="leaves an empty training or validation set"):
        _trainer().fit(x, t, epochs=1, validation_split=0.6, progress=False)


# -- data-parallel corners -------------------------------------------------------------------
def _world(comm: Any) -> distributed.World:
    return distributed.World("threads", comm.rank, comm.size, comm=comm)


def test_no_sync_in_a_single_process_is_a_no_op_and_in_a_world_holds_the_reduce() -> None:
    trainer = _trainer()
    with trainer.no_sync():
        pass
    assert trainer._reducer is None
    comms = distributed.thread_group(2, timeout=20.0)
    with nb.using(backend="numpy", dtype="float64"):
        model = nn.Linear(2, 2)
    trainer = nb.Trainer(model, nn.MSELoss(), optim.SGD(model.parameters()), world=_world(comms[0]))
    with trainer.no_sync():  # before join_world: the reducer is made here
        assert trainer._reducer is not None and not trainer._reducer.synchronizing
    assert trainer._reducer.synchronizing


def test_compile_in_data_parallel_training_warns_and_runs_eagerly(on_ranks: Any) -> None:
    x, t = _spiral(8)

    def run(comm: Any) -> None:
        nb.random.seed(0)
        model = nn.Linear(2, 3)
        trainer = nb.Trainer(
            model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters()),
            world=_world(comm), compile=True,
        )  # fmt: skip
        trainer.fit(x, t, epochs=1, batch_size=4, seed=0, progress=False)
        assert trainer._compiled is None and trainer.step == 2

    # The warnings module's state is global: record in this thread what both ranks warn.
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        on_ranks(2, run, backend="numpy", dtype="float64")
    messages = [str(w.message) for w in got if w.category is CompileWarning]
    assert len(messages) == 2  # once per rank's trainer
    for message in messages:
        assert "data-parallel training all-reduces gradients outside the recorded" in message


class _DeviceComm:
    """A one-rank communicator recording the device of every array it all-reduces."""

    def __init__(self) -> None:
        self.devices: list[Any] = []

    def allreduce_sum(self, a: Any) -> Any:
        self.devices.append(a.device)
        return a


def test_metric_sums_are_all_reduced_on_their_own_device() -> None:
    strict = pytest.importorskip("array_api_strict")
    device = strict.Device("device1")
    y = strict.asarray([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], device=device)
    t = strict.asarray([1, 2], device=device)
    top1 = TopKAccuracy(1)
    top1.update(y, t)
    comm = _DeviceComm()
    assert metric_result(top1, comm) == 0.5
    sums = MetricSums(comm)
    sums.add(strict.asarray(0.25, device=device), 2, strict.asarray(1, device=device), 2)
    assert sums.read() == (0.25, 0.5)
    assert comm.devices == [device, device]


# -- every refusal says what was wrong and how to fix it ------------------------------------------
def _bad_fit(**kwargs: Any) -> Any:
    x, t = _spiral()
    args = {"x": x, "t": t, "epochs": 1, "batch_size": 4, "progress": False, **kwargs}
    return lambda: _trainer().fit(**args)


def _model_and_opt() -> tuple[Any, Any]:
    with nb.using(backend="numpy", dtype="float64"):
        model = nn.Linear(2, 3)
    return model, optim.SGD(model.parameters())


class _Nothing:
    pass


class _OnlyStep:
    def step(self) -> None:
        pass


def _strict_labels() -> Any:
    strict = pytest.importorskip("array_api_strict")
    return strict.asarray(np.arange(12) % 3)


X12, T12 = _spiral()
REFUSALS: list[tuple[str, Any, type[Exception], str]] = [
    ("model", lambda: nb.Trainer(3, nn.MSELoss(), _model_and_opt()[1]), TypeError,
     r"model must be callable \(an nn\.Module\), got int"),
    ("loss", lambda: nb.Trainer(_model_and_opt()[0], "mse", _model_and_opt()[1]), TypeError,
     r"loss_fn must be callable, got str"),
    ("optimizer", lambda: nb.Trainer(_model_and_opt()[0], nn.MSELoss(), _Nothing()), TypeError,
     r"optimizer must have a step\(\) method \(an nnbackend\.optim optimizer\), got _Nothing"),
    ("zero_grad", lambda: nb.Trainer(_model_and_opt()[0], nn.MSELoss(), _OnlyStep()),
     TypeError, r"optimizer must have a zero_grad\(\) method \(an nnbackend\.optim optimizer\), "
     r"got _OnlyStep"),
    ("scaler", lambda: nb.Trainer(*_model_and_opt()[:1], nn.MSELoss(), _model_and_opt()[1],
                                  loss_scaler="dynamic"), TypeError,
     r"loss_scaler must be 'auto', None or a nnbackend\.precision\.LossScaler, got 'dynamic'"),
    ("epochs", _bad_fit(epochs=1.5), ArgumentError, r"epochs must be an integer >= 0, got 1\.5"),
    ("batch_size", _bad_fit(batch_size=0), ArgumentError,
     r"batch_size must be an integer >= 1, got 0"),
    ("bool", _bad_fit(batch_size=True), ArgumentError,
     r"batch_size must be an integer >= 1, got True"),
    ("eval_interval", _bad_fit(eval_interval="2"), ArgumentError,
     r"eval_interval must be an integer >= 1, got '2'"),
    ("max_grad", _bad_fit(max_grad=0.0), ValueError, r"max_grad must be > 0, got 0\.0"),
    ("both validations", _bad_fit(validation=(X12, T12), validation_data=(X12, T12)),
     ArgumentError, r"give validation or validation_data, not both"),
    ("split and data", _bad_fit(validation_data=(X12, T12), validation_split=0.5),
     ArgumentError, r"give validation_data or validation_split, not both"),
    ("split type", _bad_fit(validation_split="half"), ArgumentError,
     r"validation_split must be a number, got 'half'"),
    ("split range", _bad_fit(validation_split=1.0), ArgumentError,
     r"validation_split must be between 0 and 1, got 1\.0"),
    ("no targets", _bad_fit(t=None), ArgumentError,
     r"fit needs targets t \(or a nnbackend\.data\.DataLoader as x\)"),
    ("rows", _bad_fit(t=T12[:5]), ShapeError,
     r"fit: 12 inputs \(shape \(12, 2\)\) but 5 targets \(shape \(5,\)\)"),
    ("scalar", _bad_fit(t=np.float64(1.0)), ShapeError,
     r"fit: inputs and targets need a leading sample axis"),
    ("empty", _bad_fit(x=np.zeros((0, 2)), t=np.zeros(0, np.int64)), ShapeError,
     r"fit: the data set is empty"),
    ("pair", _bad_fit(validation=(X12,)), ArgumentError,
     r"fit\(validation=\.\.\.\): validation must be a pair \(x_val, t_val\), got tuple of "
     r"length 1"),
    ("not a pair", _bad_fit(validation=X12), ArgumentError,
     r"fit\(validation=\.\.\.\): validation must be a pair \(x_val, t_val\), got ndarray"),
    ("row shape", _bad_fit(validation=(np.zeros((3, 4)), np.zeros(3, np.int64))), ShapeError,
     r"fit\(validation=\.\.\.\): validation inputs have shape \(3, 4\), but the training "
     r"inputs \(12, 2\); each row must have shape \(2,\)"),
    ("loader split", lambda: _trainer().fit(DataLoader(X12, T12), validation_split=0.5),
     ArgumentError, r"validation_split needs the data in memory; with a DataLoader, pass "
     r"validation_data=\(x_val, t_val\)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "error", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_fit_refusals_say_what_was_wrong(call: Any, error: type[Exception], message: str) -> None:
    """The whole message (``re.fullmatch``), so a changed word anywhere in it is caught."""
    with pytest.raises(error) as info:
        call()
    assert re.fullmatch(message, str(info.value)), str(info.value)


def test_arrays_from_two_backends_are_named() -> None:
    """``fit`` moves inputs and targets together (a model without parameters keeps the first
    array's backend), so only the validation set of such a model can be on another backend;
    the pair check itself names both backends."""
    with pytest.raises(
        BackendMismatchError,
        match=r"fit: inputs and targets are arrays from two backends, 'numpy' and "
        r"'array_api_strict'; move one to the other's backend first",
    ):
        nb.Trainer._check_pair(X12, _strict_labels(), "fit")
    strict = pytest.importorskip("array_api_strict")
    trainer = nb.Trainer(_Scale(np.ones((2, 3))), nn.MSELoss(), _NoOptimizer())
    y = np.zeros((12, 3))
    with pytest.raises(
        BackendMismatchError,
        match=r"fit\(validation=\.\.\.\): the validation set is on backend 'array_api_strict', "
        r"the training data on 'numpy'; move it to 'numpy' first",
    ):
        trainer.fit(X12, y, progress=False, validation=(strict.asarray(X12), strict.asarray(y)))


def test_callback_monitor_and_metric_refusals_say_what_was_wrong() -> None:
    with pytest.raises(ArgumentError, match=r"^patience must be an int >= 0, got -1$"):
        EarlyStopping("loss", patience=-1)
    with pytest.raises(ArgumentError, match=r"^patience must be an int >= 0, got True$"):
        EarlyStopping("loss", patience=True)
    with pytest.raises(ArgumentError, match=r"^min_delta must be >= 0, got -0\.1$"):
        EarlyStopping("loss", min_delta=-0.1)
    with pytest.raises(ArgumentError, match=r"^monitor must be a name such as 'val_loss', got 3$"):
        EarlyStopping(3)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match=r"^k must be an int >= 1, got 0$"):
        TopKAccuracy(0)
    with pytest.raises(ArgumentError, match=r"^fn must be callable \(y, t\) -> 0-d array, got 2$"):
        nb.metrics.Mean("m", 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^a callback is a nnbackend\.train\.Callback or a "
                       r"function \(trainer, history\), got int$"):  # fmt: skip
        _trainer().fit(X12, T12, progress=False, callbacks=[3])


# -- sample B's survivors: metrics, monitors, the data-parallel split, compile, the log --------
def test_targets_neither_labels_nor_one_hot_are_refused_with_both_shapes() -> None:
    with pytest.raises(
        ShapeError,
        match=r"^targets of shape \(4,\) and dtype float64 are neither integer labels nor "
        r"one-hot rows of the outputs' shape \(4, 3\)$",
    ):
        Accuracy().update(np.zeros((4, 3)), np.zeros(4))


def test_binary_accuracy_reads_a_target_of_one_half_as_zero() -> None:
    """A target means 1 *above* 0.5, as a logit means 1 above 0."""
    acc = nb.metrics.BinaryAccuracy()
    acc.update(np.array([[1.0, -1.0, 0.0]]), np.array([[0.5, 0.5, 0.5]]))
    assert acc.result() == pytest.approx(2 / 3)  # -1 and 0 agree with 0.5 read as 0


def test_mean_metric_of_float16_values_is_weighted_in_float32() -> None:
    """``value * rows`` in float16 would round 0.1 * 1001 to 100.0625."""
    value16 = np.float16(0.1)
    mean = nb.metrics.Mean("m", lambda y, t: np.asarray(value16))
    mean.update(np.zeros((1001, 1), np.float16), np.zeros(1001, np.int64))
    assert mean.result() == pytest.approx(float(value16), rel=1e-6)


def test_monitored_value_reads_each_name_and_none_when_missing() -> None:
    history = nb.History(epoch_loss=[0.5, 0.25], epoch_accuracy=[0.5, None])
    assert monitored_value(history, "loss") == 0.25
    assert monitored_value(history, "accuracy") is None  # the loss had no accuracy
    history.epoch_accuracy[-1] = 0.75
    assert monitored_value(history, "accuracy") == 0.75
    assert monitored_value(nb.History(), "val_loss") is None  # nothing yet
    assert monitored_value(nb.History(), "accuracy") is None


def test_early_stopping_defaults_to_a_patience_of_five_on_val_loss() -> None:
    stop = EarlyStopping()
    assert (stop.monitor, stop.patience, stop.restore_best) == ("val_loss", 5, False)


def test_a_loader_whose_last_global_batch_starves_a_rank_is_refused() -> None:
    """10 rows in batches of 4 end with 2 rows: too few for 3 ranks."""
    from nnbackend.train import trainer as trainer_module

    loader = DataLoader(np.zeros((10, 2)), np.zeros(10, np.int64), batch_size=4, shuffle=False)
    with pytest.raises(
        ArgumentError,
        match=r"^data-parallel training on 3 ranks: a global batch of 2 rows \(10 rows in "
        r"batches of 4\) leaves a rank without rows; ",
    ):
        trainer_module._check_split(10, 4, 3, 3, loader)
    trainer_module._check_split(10, 4, 3, 2, loader)  # 2 rows for 2 ranks is enough


class _PlainSGD:
    """An optimizer whose ``step`` is not a recorded call."""

    def __init__(self, params: list[Any]) -> None:
        self.params = params

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        for p in self.params:
            p.data = p.data - 0.1 * p.grad


def test_compile_with_an_unrecorded_optimizer_step_warns_and_runs_eagerly() -> None:
    with nb.using(backend="numpy", dtype="float64"):
        model = nn.Linear(2, 3)
    trainer = nb.Trainer(
        model, nn.SoftmaxCrossEntropy(), _PlainSGD(list(model.parameters())), compile=True
    )
    with pytest.warns(CompileWarning, match=r"_PlainSGD\.step is not a recorded call") as got:
        trainer.train_step(nb.to_backend(X12, like=model), nb.to_backend(T12, like=model))
    assert trainer._compiled is None and trainer.step == 1
    if "MUTANT_UNDER_TEST" not in os.environ:  # mutmut's trampolines add stack frames
        assert got[0].filename == __file__  # stacklevel: the line that called train_step


def _dropout_net() -> tuple[Any, nb.Trainer]:
    with nb.using(backend="numpy", dtype="float64"):
        nb.random.seed(0)
        model = nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    return model, nb.Trainer(
        model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1), compile=True
    )


def test_a_compiled_step_records_again_when_the_mode_or_clipping_changes() -> None:
    """The compiled step depends on the model's mode (dropout) and on ``max_grad``: each
    change records a new step, so it equals the eager trainer on the same sequence."""
    weights = []
    for compiled in (True, False):
        model, trainer = _dropout_net()
        trainer.compile = compiled
        nb.random.seed(1)
        trainer.fit(X12, T12, epochs=2, batch_size=4, seed=0, progress=False)
        model.eval()
        xb, tb = nb.to_backend(X12[:4], like=model), nb.to_backend(T12[:4], like=model)
        for _ in range(2):
            trainer.train_step(xb, tb)  # eval mode: no dropout
        model.train()
        trainer.fit(X12, T12, epochs=2, batch_size=4, seed=0, progress=False, max_grad=0.05)
        weights.append([_host(p) for p in model.parameters()])
    for got, want in zip(*weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_the_log_shows_training_and_validation_accuracy_at_each_epoch(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _trainer().fit(
        X12, T12, epochs=1, batch_size=4, seed=0, progress="log", eval_interval=2,
        validation=(X12, T12),
    )  # fmt: skip
    lines = capsys.readouterr().err.splitlines()
    epoch = [line for line in lines if " epoch loss=" in line]
    assert len(epoch) == 1
    assert re.search(
        r"\] epoch loss=\d\.\d{4} acc=\d+\.\d% val_loss=\d\.\d{4} val_acc=\d+\.\d%$", epoch[0]
    ), epoch[0]
