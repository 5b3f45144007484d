"""Learning-rate schedules: :class:`StepLR`, :class:`ExponentialLR`, :class:`CosineAnnealing`
(with linear warm-up) and :class:`ReduceLROnPlateau`.

A schedule sets ``optimizer.lr`` (a Python float, so changing it never touches the device).
Give it to :meth:`nnbackend.Trainer.fit` in ``callbacks``, where it steps after every epoch
(or every optimizer step with ``per="step"``), or call :meth:`Schedule.step` yourself in a
hand-written loop. The closed forms are PyTorch's (``torch.optim.lr_scheduler``), so
``StepLR(opt, 30, 0.1)`` gives the same learning rates as there.

>>> from nnbackend import nn, optim
>>> from nnbackend.schedules import StepLR
>>> opt = optim.SGD(nn.Linear(2, 1).parameters(), lr=1.0)
>>> schedule = StepLR(opt, step_size=2, gamma=0.5)
>>> rates = []
>>> for epoch in range(5):
...     rates.append(opt.lr)  # ... train one epoch ...
...     _ = schedule.step()
>>> rates
[1.0, 1.0, 0.5, 0.5, 0.25]

To resume a run, save the schedule in the checkpoint with the optimizer,
``nnbackend.save(model, path, optimizer=opt, schedule=schedule)`` (``ModelCheckpoint(...,
save_optimizer=True)`` saves the schedule of the fit), and in the resumed run make the
optimizer and the schedule as before and call ``nnbackend.load(model, path, optimizer=opt,
schedule=schedule)``: a schedule made alone after the optimizer's state was loaded would take
the decayed rate as its base. By hand, ``schedule.state_dict()`` and
``schedule.load_state_dict(...)`` do the same.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

from nnbackend.errors import ArgumentError, CheckpointError
from nnbackend.train import Callback, History, Trainer

__all__ = ["CosineAnnealing", "ExponentialLR", "ReduceLROnPlateau", "Schedule", "StepLR"]


def _check_optimizer(optimizer: Any) -> Any:
    lr = getattr(optimizer, "lr", None)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise ArgumentError(
            f"a schedule needs an optimizer with a numeric .lr (an nnbackend.optim optimizer), "
            f"got {type(optimizer).__name__}"
        )
    return optimizer


class Schedule(Callback):
    """Base class: ``optimizer.lr = lr_at(n)`` after the ``n``-th call of :meth:`step`.

    Subclasses define :meth:`lr_at`. ``base_lr`` is the optimizer's ``lr`` when the schedule
    was made; ``n`` counts the calls of :meth:`step` (epochs, or steps with
    ``per="step"``). Making a schedule sets ``optimizer.lr = lr_at(0)``.
    """

    def __init__(self, optimizer: Any, *, per: str = "epoch") -> None:
        if per not in ("epoch", "step"):
            raise ArgumentError(f"per must be 'epoch' or 'step', got {per!r}")
        self.optimizer = _check_optimizer(optimizer)
        self.base_lr = float(optimizer.lr)
        self.per = per
        self.n = 0
        self.optimizer.lr = self.lr_at(0)

    def lr_at(self, n: int) -> float:
        """The learning rate after ``n`` calls of :meth:`step`."""
        raise NotImplementedError(f"{type(self).__name__} must define lr_at()")

    def step(self) -> float:
        """Advance by one epoch (or step) and set the optimizer's ``lr``; returns it."""
        self.n += 1
        lr = self.optimizer.lr = float(self.lr_at(self.n))
        return lr

    def settings(self) -> dict[str, Any]:
        """The constructor's settings (``step_size``, ``gamma``, ``per``, ...) as plain Python
        values: saved in :meth:`state_dict` and compared by :meth:`load_state_dict`, which
        refuses a state saved from a schedule of other settings. A subclass with settings of
        its own adds them to ``super().settings()``."""
        return {"per": self.per}

    def state_dict(self) -> dict[str, Any]:
        """What :meth:`load_state_dict` needs to resume the schedule where it is:
        ``{"type", "base_lr", "n", "settings"}`` (plain Python values; ``settings`` is
        :meth:`settings`). Save it with the model and the optimizer,
        ``nnbackend.save(model, path, optimizer=opt, schedule=schedule)``."""
        return {
            "type": type(self).__name__,
            "base_lr": self.base_lr,
            "n": self.n,
            "settings": self.settings(),
        }

    def load_state_dict(self, state: Any) -> None:
        """Resume from a :meth:`state_dict`: the base rate and the count of steps come back,
        and the optimizer's ``lr`` is set to the rate there (making a schedule again after
        ``optimizer.load_state_dict`` took the decayed rate as its base: it decayed twice).
        Everything is checked first (:meth:`check_state_dict`): a state of another schedule,
        of one with other settings (``StepLR(opt, 2)``'s state for a ``StepLR(opt, 3)``), or a
        malformed one, raises :class:`~nnbackend.errors.CheckpointError` and changes nothing.
        A state saved by nnbackend versions before the settings were saved (no
        ``"settings"``) loads without that check."""
        values, lr = self._checked_state(state)
        for key, value in values.items():
            setattr(self, key, value)
        self.optimizer.lr = lr

    def check_state_dict(self, state: Any) -> None:
        """Check ``state`` as :meth:`load_state_dict` would, and change nothing (neither the
        schedule nor the optimizer's ``lr``): :class:`~nnbackend.errors.CheckpointError` for
        a state of another kind of schedule or of other settings, a malformed one, or one
        whose rate is no finite number. :func:`nnbackend.load` checks a checkpoint's schedule
        so before it touches the model, the optimizer or the schedule."""
        self._checked_state(state)

    def _state_keys(self) -> set[str]:
        return {"type", "base_lr", "n"}

    def _checked_state(self, state: Any) -> tuple[dict[str, Any], float]:
        """The attributes a valid ``state`` sets and the optimizer's ``lr`` it gives, or
        CheckpointError; changes nothing."""
        values = self._checked_values(state)
        return values, self._resumed_rate(values)

    def _checked_values(self, state: Any) -> dict[str, Any]:
        """The base rate and count a valid ``state`` sets, after its kind and keys are
        checked, or CheckpointError."""
        name = type(self).__name__
        if not isinstance(state, Mapping):
            raise CheckpointError(
                f"{name}.load_state_dict needs a mapping such as schedule.state_dict(), got "
                f"{type(state).__name__}"
            )
        # The kind first: a ReduceLROnPlateau state offered to a StepLR is of another
        # schedule, which says more than its other keys.
        if "type" in state and state["type"] != name:
            raise CheckpointError(
                f"the schedule state is of a {state['type']!r:.80} schedule, not a {name}: "
                "make the schedule the state was saved from"
            )
        keys = self._state_keys()
        # (without "settings": a state of the versions that did not save them)
        if set(state) != keys and set(state) != keys | {"settings"}:
            raise CheckpointError(
                f"{name} state needs the keys {sorted(keys | {'settings'})}, got "
                f"{sorted(map(str, state))}"
            )
        if "settings" in state:
            self._check_settings(state["settings"])
        return {"base_lr": _state_rate(state, "base_lr"), "n": _state_count(state, "n")}

    def _check_settings(self, saved: Any) -> None:
        """CheckpointError unless ``saved`` (a state's ``"settings"``) are this schedule's:
        resuming a ``StepLR(opt, step_size=2)`` run with ``step_size=3`` would silently
        follow another schedule from the saved count on."""
        name = type(self).__name__
        own = self.settings()
        if not isinstance(saved, Mapping) or set(saved) != set(own):
            shown = str(sorted(map(str, saved)) if isinstance(saved, Mapping) else repr(saved))
            raise CheckpointError(
                f"{name} state's settings must be a mapping of {sorted(own)}, got {shown:.200}"
            )
        differ = [key for key in own if not _same_setting(saved[key], own[key])]
        if differ:
            was = ", ".join(f"{key}={saved[key]!r:.80}" for key in differ)
            now = ", ".join(f"{key}={own[key]!r}" for key in differ)
            raise CheckpointError(
                f"the schedule state was saved from a {name} with {was}, but this {name} has "
                f"{now}: make the schedule with the saved run's settings ({was}) to resume "
                "it, or leave its state out to start the schedule afresh"
            )

    def _resumed_rate(self, values: dict[str, Any]) -> float:
        """``lr_at(n)`` with the attributes ``values`` (on a copy: nothing changes), which
        must be a finite float (``gamma ** 10**400`` overflowed, a base rate of 1e308 became
        an infinite cosine rate)."""
        trial = copy.copy(self)
        vars(trial).update(values)
        try:
            lr = float(trial.lr_at(trial.n))
        except OverflowError:
            lr = math.inf
        if not 0.0 <= lr < math.inf:
            raise CheckpointError(
                f"schedule state {values} gives {type(self).__name__} the rate {lr}, not a "
                "finite number >= 0"
            )
        return lr

    def on_epoch_end(self, trainer: Trainer, history: History) -> None:
        if self.per == "epoch":
            self.step()

    def on_step_end(self, trainer: Trainer, history: History) -> None:
        if self.per == "step":
            self.step()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_lr={self.base_lr}, n={self.n}, lr={self.optimizer.lr})"


def _same_setting(saved: Any, own: Any) -> bool:
    """Whether a saved setting equals this schedule's: equal values, a bool only to a bool
    (``True == 1`` would pass a hand-written ``step_size: true``)."""
    return isinstance(saved, bool) == isinstance(own, bool) and bool(saved == own)


def _monitored(value: Any) -> float:
    """The monitored value given to :meth:`ReduceLROnPlateau.step` as a float: a number or a
    0-d array, not a string or several values (``float()``'s bare errors named nothing)."""
    shape = getattr(value, "shape", ())
    if isinstance(value, (str, bytes, bytearray)) or (shape and math.prod(shape) != 1):
        raise ArgumentError(
            f"ReduceLROnPlateau.step needs the monitored value as one number (a float, or a "
            f"0-d array), got {value!r}"
        )
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ArgumentError(
            f"ReduceLROnPlateau.step needs the monitored value as one number (a float, or a "
            f"0-d array), got {value!r}"
        ) from None


def _state_count(state: Any, key: str) -> int:
    value = state[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckpointError(f"schedule state {key!r} must be an int >= 0, got {value!r:.80}")
    return value


def _state_rate(state: Any, key: str) -> float:
    value = state[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        rate = math.nan
    else:
        try:
            rate = float(value)
        except OverflowError:  # an int beyond a float (10**400): float() raised bare
            rate = math.inf
    if not 0.0 <= rate < math.inf:
        raise CheckpointError(
            f"schedule state {key!r} must be a finite number >= 0, got {value!r:.80}"
        )
    return rate


def _positive_int(name: str, value: Any, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise ArgumentError(f"{name} must be an int >= {0 if allow_zero else 1}, got {value!r}")
    return value


def _number(name: str, value: Any, expected: str) -> float:
    """``value`` as a float, refusing what ``float()`` would take but no caller means: a bool
    (``gamma=True`` was a schedule that never decays) or a string."""
    if isinstance(value, (bool, str, bytes, bytearray)):
        raise ArgumentError(f"{name} must be a number {expected}, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):  # float()'s own error named no argument
        raise ArgumentError(f"{name} must be a number {expected}, got {value!r}") from None


def _factor(name: str, value: Any) -> float:
    number = _number(name, value, "in (0, 1]")
    if not 0.0 < number <= 1.0:
        raise ArgumentError(f"{name} must be in (0, 1], got {number}")
    return number


def _min_lr(value: Any) -> float:
    """A floor for the learning rate: finite and >= 0 (``inf`` made the rate NaN or inf)."""
    number = _number("min_lr", value, ">= 0")
    if not 0.0 <= number < math.inf:
        raise ArgumentError(f"min_lr must be a finite number >= 0, got {value!r}")
    return number


class StepLR(Schedule):
    """``lr = base_lr * gamma ** (n // step_size)`` (PyTorch's ``StepLR``)."""

    def __init__(
        self, optimizer: Any, step_size: int, gamma: float = 0.1, *, per: str = "epoch"
    ) -> None:
        self.step_size = _positive_int("step_size", step_size)
        self.gamma = _factor("gamma", gamma)
        super().__init__(optimizer, per=per)

    def settings(self) -> dict[str, Any]:
        return {"step_size": self.step_size, "gamma": self.gamma, **super().settings()}

    def lr_at(self, n: int) -> float:
        return self.base_lr * self.gamma ** (n // self.step_size)


class ExponentialLR(Schedule):
    """``lr = base_lr * gamma ** n`` (PyTorch's ``ExponentialLR``)."""

    def __init__(self, optimizer: Any, gamma: float, *, per: str = "epoch") -> None:
        self.gamma = _factor("gamma", gamma)
        super().__init__(optimizer, per=per)

    def settings(self) -> dict[str, Any]:
        return {"gamma": self.gamma, **super().settings()}

    def lr_at(self, n: int) -> float:
        return self.base_lr * self.gamma**n


class CosineAnnealing(Schedule):
    """A linear warm-up over ``warmup`` epochs, then a half cosine from ``base_lr`` down to
    ``min_lr`` at epoch ``total`` (and ``min_lr`` after it).

    During warm-up, ``lr = base_lr * (n + 1) / (warmup + 1)``; after it, with
    ``k = n - warmup`` and ``K = total - warmup``,
    ``lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * k / K)) / 2``. With ``warmup=0`` this is
    PyTorch's ``CosineAnnealingLR(T_max=total, eta_min=min_lr)`` (its closed form).
    """

    def __init__(
        self,
        optimizer: Any,
        total: int,
        *,
        warmup: int = 0,
        min_lr: float = 0.0,
        per: str = "epoch",
    ) -> None:
        self.total = _positive_int("total", total)
        self.warmup = _positive_int("warmup", warmup, allow_zero=True)
        if self.warmup >= self.total:
            raise ArgumentError(f"warmup ({warmup}) must be shorter than total ({total})")
        self.min_lr = _min_lr(min_lr)
        super().__init__(optimizer, per=per)

    def settings(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "warmup": self.warmup,
            "min_lr": self.min_lr,
            **super().settings(),
        }

    def lr_at(self, n: int) -> float:
        if n < self.warmup:
            return self.base_lr * (n + 1) / (self.warmup + 1)
        k = min(n, self.total) - self.warmup
        span = self.total - self.warmup
        return self.min_lr + (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * k / span)) / 2


class ReduceLROnPlateau(Schedule):
    """Multiply ``lr`` by ``factor`` when ``monitor`` has not improved for ``patience``
    epochs (PyTorch's ``ReduceLROnPlateau``, relative threshold 0, no cooldown), never
    below ``min_lr``.

    In ``fit`` it reads ``monitor`` from the history after each epoch; by hand, call
    ``step(value)``.
    """

    def __init__(
        self,
        optimizer: Any,
        monitor: str = "val_loss",
        *,
        factor: float = 0.1,
        patience: int = 10,
        min_lr: float = 0.0,
        mode: str = "auto",
    ) -> None:
        from nnbackend.train.callbacks import Monitor

        self.factor = _factor("factor", factor)
        if self.factor == 1.0:
            raise ArgumentError("factor must be below 1 (1 would never reduce the rate)")
        self.patience = _positive_int("patience", patience, allow_zero=True)
        self.min_lr = _min_lr(min_lr)
        self.monitor = monitor
        self._watch = Monitor(monitor, mode, 0.0)
        self.wait = 0
        super().__init__(optimizer)

    def settings(self) -> dict[str, Any]:
        # (no ``per``: it steps once an epoch, with the epoch's monitored value)
        return {
            "monitor": self.monitor,
            "mode": self._watch.mode,
            "factor": self.factor,
            "patience": self.patience,
            "min_lr": self.min_lr,
        }

    def lr_at(self, n: int) -> float:
        return float(self.optimizer.lr) if n else self.base_lr

    def step(self, value: float | None = None) -> float:
        """Record the monitored ``value`` of one epoch; reduce ``lr`` after ``patience``
        epochs without improvement. Returns the learning rate now."""
        if value is None:
            raise ArgumentError(f"{type(self).__name__}.step needs the monitored value")
        value = _monitored(value)
        self.n += 1
        if self._watch.improved(value):
            self._watch.best = value
            self.wait = 0
        else:
            self.wait += 1
            if self.wait > self.patience:
                lr = float(self.optimizer.lr)
                # Only ever lower it, as PyTorch: a min_lr above the rate is no reason to
                # raise it (0.01 became a min_lr of 0.5).
                if self.min_lr < lr:
                    self.optimizer.lr = max(lr * self.factor, self.min_lr)
                self.wait = 0
        return float(self.optimizer.lr)

    def state_dict(self) -> dict[str, Any]:
        """As :meth:`Schedule.state_dict`, with the rate now (``lr``), the best monitored
        value (``best``, ``None`` before any) and the epochs without improvement (``wait``)."""
        best = self._watch.best
        return {
            **super().state_dict(),
            "lr": float(self.optimizer.lr),
            "best": None if best is None else float(best),
            "wait": self.wait,
        }

    def _state_keys(self) -> set[str]:
        return {*super()._state_keys(), "lr", "best", "wait"}

    def _checked_state(self, state: Any) -> tuple[dict[str, Any], float]:
        # (its rate is the state's own "lr", not one computed from the count)
        values = self._checked_values(state)
        best = state["best"]
        if best is not None and (isinstance(best, bool) or not isinstance(best, (int, float))):
            raise CheckpointError(f"schedule state 'best' must be a number or None, got {best!r}")
        try:
            best = None if best is None else float(best)
        except OverflowError:  # an int beyond a float: a corrupted or hostile file
            raise CheckpointError(
                f"schedule state 'best' must be a number a float can hold, got {best!r:.80}"
            ) from None
        values.update(best=best, wait=_state_count(state, "wait"))
        return values, _state_rate(state, "lr")

    def load_state_dict(self, state: Any) -> None:
        values, lr = self._checked_state(state)
        self.base_lr, self.n, self.wait = values["base_lr"], values["n"], values["wait"]
        self._watch.best = values["best"]
        self.optimizer.lr = lr

    def on_epoch_end(self, trainer: Trainer, history: History) -> None:
        from nnbackend.train.callbacks import watched_value

        value = watched_value(history, self.monitor, "ReduceLROnPlateau")
        if value is not None:
            self.step(value)
