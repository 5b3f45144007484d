"""Callbacks for :meth:`nnbackend.Trainer.fit`: the :class:`Callback` base, how ``fit``
dispatches its hooks, early stopping and best-model checkpoints.

The public path is :mod:`nnbackend.callbacks` (``from nnbackend.callbacks import
EarlyStopping``), which re-exports this module's names.

The callback protocol is :class:`Callback`: ``fit`` calls ``on_fit_start``,
``on_step_end`` (after every optimizer step), ``on_report``, ``on_epoch_end`` (after each
completed epoch and its validation) and ``on_fit_end`` (also after an interruption), each as
``hook(trainer, history)``. A callback stops training by setting
``trainer.stop_training = True``. The learning-rate schedules of :mod:`nnbackend.schedules`
are callbacks too.

A callback monitors one of the per-epoch numbers of the :class:`~nnbackend.History`:
``"loss"`` and ``"accuracy"`` (the training epoch's), ``"val_loss"`` and ``"val_accuracy"``
(with ``validation_data`` or ``validation_split``), or the name of a metric given to ``fit``
(``"top5"``, ``"val_top5"``). These are read to the host once per epoch anyway, so
monitoring them costs no device synchronisation.

>>> import nnbackend as nb
>>> from nnbackend import nn, optim
>>> from nnbackend.callbacks import EarlyStopping
>>> nb.random.seed(0)
>>> x, t = nb.datasets.spiral()
>>> model = nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))
>>> trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=1.0))
>>> stop = EarlyStopping("val_loss", patience=2, restore_best=True)
>>> history = trainer.fit(x, t, epochs=5, validation_split=0.2, callbacks=[stop], progress=False)
>>> stop.best_epoch is not None
True
"""

from __future__ import annotations

import math
import os
import string
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nnbackend.errors import ArgumentError
from nnbackend.namespace import backend_for
from nnbackend.train.history import History

if TYPE_CHECKING:
    from nnbackend.train.trainer import Trainer

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "monitored_value"]


class Callback:
    """Hooks into :meth:`Trainer.fit`. Override the ones you need; each gets the trainer and
    the history so far. Set ``trainer.stop_training = True`` to stop after the current step.

    A plain function given in ``callbacks`` is called as ``fn(trainer, history)`` at the end
    of every epoch.
    """

    def on_fit_start(self, trainer: Trainer, history: History) -> None:
        """Before the first step."""

    def on_step_end(self, trainer: Trainer, history: History) -> None:
        """After every optimizer step (``trainer.step`` counts them). Keep it cheap."""

    def on_report(self, trainer: Trainer, history: History) -> None:
        """After a report was appended to ``history.loss``."""

    def on_epoch_end(self, trainer: Trainer, history: History) -> None:
        """After each completed epoch (and its validation)."""

    def on_fit_end(self, trainer: Trainer, history: History) -> None:
        """When ``fit`` returns, also after an interruption."""


_HOOKS = ("on_fit_start", "on_step_end", "on_report", "on_epoch_end", "on_fit_end")


def hooks_by_event(callbacks: Iterable[Any]) -> dict[str, list[Callable[[Trainer, History], Any]]]:
    """The hooks of ``callbacks`` by name (``fit`` calls each list in order): the methods a
    callback overrides (Callback's own no-ops are left out, so an unused ``on_step_end``
    costs nothing), or a plain function as an ``on_epoch_end`` hook. The order is that of
    ``callbacks``, except that a ``ModelCheckpoint(save_optimizer=True)`` runs after the
    schedules that follow it (it saves their state after the epoch's step)."""
    table: dict[str, list[Callable[[Trainer, History], Any]]] = {name: [] for name in _HOOKS}
    for cb in _in_epoch_end_order(list(callbacks)):
        if any(hasattr(cb, name) for name in _HOOKS):
            for name in _HOOKS:
                method = getattr(cb, name, None)
                # Skip Callback's no-op methods, so on_step_end costs nothing unless used.
                if method is not None and getattr(type(cb), name, None) is not getattr(
                    Callback, name, None
                ):
                    table[name].append(method)
        elif callable(cb):
            table["on_epoch_end"].append(cb)
        else:
            raise TypeError(
                f"a callback is a nnbackend.train.Callback or a function (trainer, history), "
                f"got {type(cb).__name__}"
            )
    return table


def _in_epoch_end_order(callbacks: list[Any]) -> list[Any]:
    """``callbacks`` in the order their hooks run: as given, except that a
    ``ModelCheckpoint(save_optimizer=True)`` moves to just after the last learning-rate
    schedule that follows it, so that the schedule it saves has taken this epoch's step (saved
    before it, a resumed run would train its next epoch at the rate of the last one)."""
    from nnbackend.schedules import Schedule

    last_schedule = max(
        (i for i, cb in enumerate(callbacks) if isinstance(cb, Schedule)), default=-1
    )
    keys = [
        last_schedule + 0.5
        if isinstance(cb, ModelCheckpoint) and cb.save_optimizer and i < last_schedule
        else float(i)
        for i, cb in enumerate(callbacks)
    ]
    return [cb for _, cb in sorted(zip(keys, callbacks, strict=True), key=lambda kv: kv[0])]


def _fit_schedule(trainer: Trainer) -> Any:
    """The learning-rate schedule (:mod:`nnbackend.schedules`) among the callbacks of the
    trainer's current ``fit`` that drives the trainer's optimizer, or ``None``.

    Raises:
        ArgumentError: several do (a checkpoint holds one schedule; two schedules of one
            optimizer would also overwrite each other's rate).
    """
    from nnbackend.schedules import Schedule

    found = [
        cb
        for cb in getattr(trainer, "callbacks", ())
        if isinstance(cb, Schedule) and cb.optimizer is trainer.optimizer
    ]
    if len(found) > 1:
        raise ArgumentError(
            "ModelCheckpoint(save_optimizer=True) saves one schedule with the optimizer, but "
            f"this fit has {len(found)} schedules of the trainer's optimizer "
            f"({', '.join(type(cb).__name__ for cb in found)}); give fit one"
        )
    return found[0] if found else None


_MAXIMISED = ("accuracy", "acc", "top")  # names that start so are maximised, and any
# name holding "accuracy" ("binary_accuracy" was minimised: restore_best kept the worst epoch)


def _per_epoch(history: History) -> dict[str, list[Any]]:
    """Every per-epoch list of ``history`` by the name a callback monitors it under."""
    table: dict[str, list[Any]] = {
        "loss": history.epoch_loss,
        "accuracy": history.epoch_accuracy,
        "val_loss": history.val_loss,
        "val_accuracy": history.val_accuracy,
    }
    table.update(history.metrics)
    return table


def monitored_value(history: History, monitor: str) -> float | None:
    """The latest per-epoch value of ``monitor`` in ``history`` (``None`` when there is none
    yet, e.g. ``val_loss`` without validation data).

    Raises:
        ArgumentError: ``monitor`` names nothing the history records (the message lists what
            it does record).
    """
    table = _per_epoch(history)
    if monitor not in table:
        raise ArgumentError(
            f"cannot monitor {monitor!r}: the history records {sorted(table)}; pass "
            "validation_data or validation_split for 'val_*', or add the metric to fit(metrics=)"
        )
    values = table[monitor]
    return None if not values or values[-1] is None else float(values[-1])


def watched_value(history: History, monitor: str, who: str) -> float | None:
    """:func:`monitored_value`, with a warning where ``monitor`` is never recorded in this
    ``fit`` (``val_loss`` without validation data): the callback would silently never act
    (no early stop, no best checkpoint). Python shows the warning once."""
    value = monitored_value(history, monitor)
    if value is None and history.epochs >= 1 and not _per_epoch(history)[monitor]:
        warnings.warn(
            f"{who} monitors {monitor!r}, which this fit does not record, so it does nothing; "
            "pass validation_data or validation_split to fit, or monitor 'loss'",
            UserWarning,
            stacklevel=3,
        )
    return value


def _mode(monitor: str, mode: str) -> str:
    if mode == "auto":
        name = monitor.removeprefix("val_")
        return "max" if name.startswith(_MAXIMISED) or "accuracy" in name else "min"
    if mode not in ("min", "max"):
        raise ArgumentError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    return mode


class Monitor:
    """The best value of one monitored number so far, and whether the latest improved it."""

    def __init__(self, monitor: str, mode: str, min_delta: float) -> None:
        if not isinstance(monitor, str):
            raise ArgumentError(f"monitor must be a name such as 'val_loss', got {monitor!r}")
        try:
            delta = float(min_delta)
        except (TypeError, ValueError):  # a bare error from float() named no argument
            delta = math.nan
        if not delta >= 0.0:
            raise ArgumentError(f"min_delta must be >= 0, got {min_delta!r}")
        self.monitor = monitor
        self.mode = _mode(monitor, mode)
        self.min_delta = delta
        self.best: float | None = None

    def improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(Callback):
    """Stop ``fit`` when ``monitor`` has not improved for ``patience`` epochs.

    Args:
        monitor: the per-epoch number to watch ("val_loss", "val_accuracy", "loss", a
            metric's name).
        patience: stop after this many epochs in a row without improvement (Keras's
            meaning; 0 stops at the first).
        min_delta: an improvement smaller than this does not count.
        mode: "min", "max", or "auto" (max for accuracies and top-k, min otherwise).
        restore_best: when training ends (stopped or not), put back the weights of the best
            epoch. The snapshot is a copy on the model's own device, taken at each
            improvement; nothing goes through the host.
        baseline: the value to beat before an epoch counts as an improvement (Keras's
            name): training stops after ``patience`` epochs that do not beat it, e.g. the
            best value of the run a resumed ``fit`` continues.

    Attributes:
        best: the best value seen (``baseline`` until an epoch beats it); ``best_epoch``: its
            epoch (0-based); ``stopped_epoch``: the epoch after which training stopped, or
            ``None``.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        *,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best: bool = False,
        baseline: float | None = None,
    ) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ArgumentError(f"patience must be an int >= 0, got {patience!r}")
        self._watch = Monitor(monitor, mode, min_delta)
        self.monitor = monitor
        self.patience = patience
        self.restore_best = bool(restore_best)
        self.baseline = _threshold(baseline, "baseline")
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.wait = 0
        self._snapshot: dict[str, Any] | None = None

    def on_fit_start(self, trainer: Trainer, history: History) -> None:
        self._watch.best = self.best = self.baseline
        self.best_epoch = self.stopped_epoch = None
        self.wait = 0
        self._snapshot = None

    def on_epoch_end(self, trainer: Trainer, history: History) -> None:
        value = watched_value(history, self.monitor, "EarlyStopping")
        if value is None:
            return
        if self._watch.improved(value):
            self._watch.best = self.best = value
            self.best_epoch = trainer.epoch
            self.wait = 0
            if self.restore_best:
                self._snapshot = _copy_weights(trainer.model)
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = trainer.epoch
            trainer.stop_training = True

    def on_fit_end(self, trainer: Trainer, history: History) -> None:
        if self.restore_best and self._snapshot is not None:
            trainer.model.load_state_dict(self._snapshot)


def _copy_weights(model: Any) -> dict[str, Any]:
    """A copy of every parameter, on its own backend and device."""
    out = {}
    for name, value in model.state_dict().items():
        xp = backend_for(value)[0]
        out[name] = xp.asarray(value, copy=True)
    return out


def _threshold(value: Any, name: str = "initial_value_threshold") -> float | None:
    """``ModelCheckpoint``'s ``initial_value_threshold`` or ``EarlyStopping``'s ``baseline``:
    ``None`` or a real number, not NaN (nothing improves on NaN, so no checkpoint would ever
    be written)."""
    if value is None:
        return None
    try:
        number = math.nan if isinstance(value, (bool, str)) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if math.isnan(number):
        raise ArgumentError(f"{name} must be a number (not NaN) or None, got {value!r:.80}")
    return number


class ModelCheckpoint(Callback):
    """Save the model with :func:`nnbackend.save` (atomically) after epochs.

    Args:
        path: the file; may hold ``{epoch}`` (1-based, continuing from ``fit``'s
            ``initial_epoch`` in a resumed run) and any per-epoch number of the history by
            its monitored name (``nan`` where there is none), e.g.
            ``"ckpt-{epoch:03d}-{val_loss:.3f}.npz"``. The checkpoint's metadata records the
            epochs completed (``nnbackend.io.read_metadata(path)["epoch"]``), the
            ``initial_epoch`` of a run resumed from it.
        monitor: the per-epoch number that decides what "best" means.
        save_best_only: save only when ``monitor`` improved (otherwise after every epoch).
        mode: "min", "max" or "auto" as in :class:`EarlyStopping`.
        initial_value_threshold: with ``save_best_only``, the value to beat before the first
            save (Keras's name), e.g. the best ``val_loss`` of the run a resumed ``fit``
            continues: without it, a resumed run's first epoch counts as an improvement and
            overwrites a better checkpoint at a path without ``{epoch}``. A resumed ``fit``
            (``initial_epoch > 0``) with ``save_best_only`` and no threshold warns so when it
            saves that first epoch.
        dtype: store the parameters in this dtype (see :func:`nnbackend.save`).
        save_optimizer: also store the optimizer's state, the trainer's loss scaler's (its
            scale and counters, under a mixed float16 policy) and the state of the
            learning-rate schedule among ``fit``'s callbacks (of the trainer's optimizer; at
            most one), so that ``nnbackend.load(model, path, optimizer=opt,
            loss_scaler=scaler, schedule=schedule)`` resumes them all. The checkpoint is
            written after the epoch's step of the schedule, wherever it stands in
            ``callbacks``, so a resumed run starts at the rate the next epoch would have had.

    Attributes:
        best: the best value seen (``initial_value_threshold`` until an epoch beats it);
            ``best_epoch``: its epoch (0-based; ``None`` while the threshold stands);
            ``saved``: the paths written, in order.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        monitor: str = "val_loss",
        *,
        save_best_only: bool = False,
        mode: str = "auto",
        dtype: Any = None,
        save_optimizer: bool = False,
        initial_value_threshold: float | None = None,
    ) -> None:
        self.path = os.fspath(path)
        try:  # a malformed template fails now, not after the first epoch has trained
            list(string.Formatter().parse(self.path))
        except ValueError as exc:
            raise ArgumentError(
                f"ModelCheckpoint: bad path template {self.path!r}: {exc}"
            ) from None
        self.monitor = monitor
        self._watch = Monitor(monitor, mode, 0.0)
        self.save_best_only = bool(save_best_only)
        self.dtype = dtype
        self.save_optimizer = bool(save_optimizer)
        self.initial_value_threshold = _threshold(initial_value_threshold)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.saved: list[Path] = []
        self._schedule: Any = None

    def on_fit_start(self, trainer: Trainer, history: History) -> None:
        self._watch.best = self.best = self.initial_value_threshold
        self.best_epoch = None
        # Found now (several are refused before the first epoch), saved after each epoch.
        self._schedule = _fit_schedule(trainer) if self.save_optimizer else None

    def on_epoch_end(self, trainer: Trainer, history: History) -> None:
        from nnbackend.io import save

        if self.save_best_only:
            value = watched_value(history, self.monitor, "ModelCheckpoint(save_best_only=True)")
        else:
            value = monitored_value(history, self.monitor)
        if self.save_best_only:
            if value is None or not self._watch.improved(value):
                return
            if self._watch.best is None and history.initial_epoch > 0:
                warnings.warn(
                    f"ModelCheckpoint(save_best_only=True) in a fit resumed at epoch "
                    f"{history.initial_epoch}: its first epoch is saved whatever its "
                    f"{self.monitor!r}, even when the run it resumes did better; pass "
                    "initial_value_threshold=<that run's best>",
                    UserWarning,
                    stacklevel=3,
                )
            self._watch.best = self.best = value
            self.best_epoch = trainer.epoch
        # Every per-epoch number may name the file (Keras's "{epoch:02d}-{loss:.2f}" with
        # monitor="val_loss"); one not recorded (yet) formats as nan.
        fields: dict[str, Any] = {
            name: math.nan if not values or values[-1] is None else values[-1]
            for name, values in _per_epoch(history).items()
        }
        fields[self.monitor] = math.nan if value is None else value
        fields["epoch"] = trainer.epoch + 1
        try:
            path = Path(self.path.format(**fields))
        except (KeyError, IndexError, ValueError) as exc:  # not a bare KeyError mid-training
            raise ArgumentError(
                f"ModelCheckpoint: cannot fill in the path template {self.path!r} ({exc!r}); "
                f"it may name {sorted(fields)}"
            ) from None
        save(
            trainer.model,
            path,
            dtype=self.dtype,
            optimizer=trainer.optimizer if self.save_optimizer else None,
            loss_scaler=trainer.loss_scaler if self.save_optimizer else None,
            schedule=self._schedule,
            epoch=trainer.epoch + 1,
        )
        self.saved.append(path)
