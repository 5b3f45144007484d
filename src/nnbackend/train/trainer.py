"""The training loop: :class:`Trainer` fits a model with a progress bar and returns a
:class:`~nnbackend.train.History`.

``fit`` is a loop of epochs (:meth:`Trainer._run_epochs`), each a loop of batches calling
:meth:`Trainer.train_step` once per batch, the one place a step is defined: subclasses,
data-parallel training and gradient accumulation change a step there. The bookkeeping around
each step (device-side sums of the loss and the loss's default metric, reports, validation,
callbacks) lives in the small methods between.
"""

from __future__ import annotations

import copy
import functools
import math
import operator
import secrets
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nnbackend import config, registry
from nnbackend import precision as nb_precision
from nnbackend import random as nb_random
from nnbackend.autograd.mode import no_grad
from nnbackend.errors import (
    ArgumentError,
    BackendMismatchError,
    CompileWarning,
    DtypeError,
    ShapeError,
)
from nnbackend.namespace import backend_for
from nnbackend.train._arrays import data, predict, wide
from nnbackend.train.callbacks import hooks_by_event
from nnbackend.train.history import History
from nnbackend.train.interrupt import InterruptGuard, StepMark
from nnbackend.train.metrics import Metric, MetricSums, default_metric, metric_result
from nnbackend.train.metrics import get as get_metric
from nnbackend.train.progress import NoProgress, check_progress, make_progress, metrics_text

__all__ = ["Trainer"]


class _ArgumentTypeError(ArgumentError, TypeError):
    """An argument of :class:`Trainer` of the wrong kind (a number where the model belongs,
    the class ``nn.MSELoss`` where an instance belongs): an
    :class:`~nnbackend.errors.ArgumentError`, and the ``TypeError`` ``Trainer`` raised before
    (Python's error for calling a non-callable)."""


def _check_instance(name: str, value: Any, expected: str, refused: str) -> None:
    """``_ArgumentTypeError`` unless ``value`` is a callable instance (a class is callable, but
    calling ``nn.Linear(x)`` or ``nn.MSELoss(y, t)`` in fit builds a layer or a loss);
    ``refused`` is the message for a non-callable."""
    if isinstance(value, type):
        raise _ArgumentTypeError(
            f"{name} must be {expected}, got the class {value.__name__} itself: make one, "
            f"as in {value.__name__}(...)"
        )
    if not callable(value):
        raise _ArgumentTypeError(refused.format(type(value).__name__))


def _check_split(n: int, batch_size: int, steps: int, size: int, loader: Any) -> None:
    """Every global batch must give each of ``size`` ranks at least one row, and a shuffling
    DataLoader must draw the same order on every rank."""
    if loader is not None:
        if loader.shuffle and getattr(loader.generator, "seed", None) is None:
            raise ArgumentError(
                "data-parallel training with a shuffling DataLoader needs DataLoader(seed=...) "
                "so that every rank draws the same order"
            )
        smallest = min(loader.batch_size, n - (steps - 1) * loader.batch_size)
    else:
        smallest = min(batch_size, n - (steps - 1) * batch_size)
    if smallest < size:
        raise ArgumentError(
            f"data-parallel training on {size} ranks: a global batch of {smallest} rows "
            f"({n} rows in batches of {batch_size}) leaves a rank without rows; use a "
            f"batch_size and a data set size whose every batch has at least {size} rows"
        )


class _Scorer:
    """The loss's default metric (:func:`nnbackend.metrics.default_metric`) as ``fit`` and
    ``evaluate`` count it: asked of the loss and checked against the first batch's shapes
    (no accuracy where it does not apply), then ``(sum, count)`` per batch on the device."""

    __slots__ = ("decided", "loss_fn", "metric")

    def __init__(self, loss_fn: Any) -> None:
        self.loss_fn = loss_fn
        self.metric: Metric | None = None
        self.decided = False

    def batch(self, y: Any, t: Any) -> tuple[Any, int]:
        """``(device-side sum, count)`` of the metric on a batch; ``(None, 0)`` without one."""
        if not self.decided:
            metric = default_metric(self.loss_fn)
            self.metric = metric if metric is not None and metric.applies_to(y, t) else None
            self.decided = True
        if self.metric is None:
            return None, 0
        return self.metric.batch(y, t)

    def read(self, sums: MetricSums) -> tuple[float, float | None]:
        """``(mean loss, metric)`` of ``sums`` (the one device read), the metric finished."""
        loss, value = sums.read()
        if value is not None and self.metric is not None:
            value = float(self.metric.finish(value))
        return loss, value


@dataclass(eq=False)
class _Fit:
    """What one call of :meth:`Trainer.fit` works with, set up by ``Trainer._start_fit``."""

    xp: Any
    x: Any
    t: Any
    loader: Any
    n: int
    batch_size: int
    steps_per_epoch: int
    epochs: int
    seed: int | None
    generator: Any
    world: Any
    comm: Any
    rank: int
    size: int
    validation: Any
    eval_interval: int | None
    hooks: dict[str, list[Callable[..., Any]]]
    train_metrics: list[Any]
    val_metrics: list[Any]
    history: History
    bar: NoProgress
    scaler: nb_precision.LossScaler | None
    guard: InterruptGuard
    interval: MetricSums
    whole: MetricSums
    scorer: _Scorer
    initial_epoch: int = 0
    previous_mode: bool | None = None
    start: float = field(default=0.0)


def _positive_int(
    name: str, value: Any, *, allow_none: bool = False, allow_zero: bool = False
) -> int | None:
    """``value`` as a Python int: any integral number (``numpy.int64(8)``, a 0-d integer
    array), not a bool, a float or a string."""
    if value is None and allow_none:
        return None
    bound = ">= 0" if allow_zero else ">= 1"
    number: int | None = None
    if not isinstance(value, bool):
        try:
            number = operator.index(value)
        except TypeError:
            number = None
    if number is None or number < (0 if allow_zero else 1):
        raise ArgumentError(f"{name} must be an integer {bound}, got {value!r}")
    return number


def _number(value: Any) -> float:
    """``value`` as a float, nan where it is no number (a check then fails with its message,
    not with float()'s bare ``ValueError``/``TypeError``)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _metrics(metrics: Any, *, convert: bool = True) -> list[Any]:
    """``fit``'s or ``evaluate``'s ``metrics`` as a list: ``None`` for none (Keras's default),
    one metric or name alone (``"top2"`` was read as the names "t", "o", "p", "2"), or an
    iterable of them; with ``convert`` (``fit``), made :class:`Metric` objects, two of one
    name being an error: both would append to ``history.metrics[name]``, two values an
    epoch."""
    if metrics is None:
        return []
    if isinstance(metrics, (str, Metric)):
        metrics = [metrics]
    if not convert:
        return list(metrics)
    found = [get_metric(m) for m in metrics]
    names = [m.name for m in found]
    for name in names:
        if names.count(name) > 1:
            raise ArgumentError(
                f"two metrics are named {name!r}; their values would share "
                f"history.metrics[{name!r}]: give one of them another name"
            )
    return found


def _under_policy(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a Trainer method with the backend, the precision policy (``self.precision`` when
    one was given, else the active one) and the device fixed at their values when it starts
    (:func:`nnbackend.config.pinned`): another thread's ``set_default_dtype`` or
    ``set_backend`` during a ``fit`` does not reach it."""

    @functools.wraps(method)
    def run(self: Trainer, *args: Any, **kwargs: Any) -> Any:
        with config.pinned(self.precision):
            return method(self, *args, **kwargs)

    return run


class Trainer:
    """Fits ``model`` by minimising ``loss_fn(model(x), t)`` with ``optimizer``.

    Args:
        model: an :class:`nnbackend.nn.Module` (or any callable returning a Tensor; then
            train/eval modes are not switched).
        loss_fn: ``loss_fn(outputs, targets)`` returning a 0-d Tensor (e.g.
            :class:`nnbackend.nn.SoftmaxCrossEntropy`).
        optimizer: an :mod:`nnbackend.optim` optimizer over the model's parameters.
        precision: a precision policy ("float32", "mixed16", a
            :class:`~nnbackend.precision.Policy`) that ``fit``, ``evaluate`` and ``predict``
            run under, as in ``nnbackend.using(dtype=precision)``; ``None`` keeps the active
            one. Build the model under the same policy: it decides the parameters' dtype.
        loss_scaler: a :class:`~nnbackend.precision.LossScaler`; ``"auto"`` makes a dynamic
            one when the policy in effect at ``fit`` is a mixed one (mixed16); ``None``
            never scales.
        compile: run :meth:`train_step` as a compiled step (:func:`nnbackend.compile_step`):
            the first steps of each batch shape are recorded, the later ones replayed on raw
            arrays (``max_grad`` clipping included). Steps that cannot be recorded run
            eagerly, with a :class:`~nnbackend.errors.CompileWarning` saying why: a loss
            scaler (it skips steps depending on the gradients' values), data-parallel
            training (the all-reduce is not a recorded call), an optimizer whose ``step`` is
            not a recorded one. A subclass overriding :meth:`train_step` gets the compiled
            step where it calls ``super().train_step(x, t)``; the rest of its override runs
            as written (it may compile parts of it with :func:`nnbackend.compile_step`).
            The step is recorded again when the model, loss or optimizer is replaced, or
            when a module of the model or loss changes a Python setting (``eval()`` on a
            submodule, a Dropout ``p``, a momentum) or the parameters and buffers it holds;
            values the step reads from elsewhere (a closure's or a global's number) are
            frozen as recorded (docs/compile.md). A second Ctrl-C waits for the whole
            compiled step, which is then counted in the history.
        world: the data-parallel world to train in (a
            :class:`~nnbackend.distributed.World`); ``"auto"`` takes the one
            :func:`nnbackend.distributed.init` set up, if any; ``None`` trains in this process
            alone. On several ranks each takes its share of every global batch, the gradients
            are all-reduced, and the ranks stop together (docs/distributed.md).

    The accuracy that ``fit`` and ``evaluate`` report is the metric the loss declares in its
    ``default_metric`` attribute (:func:`nnbackend.metrics.default_metric`): accuracy for
    softmax cross-entropy, binary accuracy for sigmoid cross-entropy, none for MSE; a loss of
    your own may declare any :class:`~nnbackend.metrics.Metric`.

    **Customising a step.** ``fit`` calls :meth:`train_step` once per batch, on every path
    (in-memory data shuffled or in order, a DataLoader, data-parallel ranks): override it in a
    subclass to change what one step does (gradient accumulation, two optimizers, an extra
    loss term). It gets the batch ``(x, t)``, must take one optimizer step, add 1 to
    ``self.step``, and return ``(outputs, loss)`` for the whole batch; ``fit`` does the rest
    (reports, metrics, callbacks). Clipping (``max_grad``), loss scaling and the gradient
    all-reduce are the base method's: call ``super().train_step(x, t)`` to keep them.

    Attributes:
        step: optimizer steps taken in the current ``fit``.
        epoch: the current epoch (0-based; from ``fit``'s ``initial_epoch`` on).
        stop_training: set it to True (from a callback) to stop after the current step (on
            every rank, in data-parallel training).
        loss_scaler: the :class:`~nnbackend.precision.LossScaler` in use (its counters say how
            many steps were skipped), or ``None``.
        history: the :class:`History` of the latest ``fit``, filled in as it runs (``None``
            before the first): what was measured until an error stopped ``fit``, which then
            returns nothing.
        callbacks: the callbacks of the latest ``fit`` (a tuple), where a callback finds
            the others (``ModelCheckpoint(save_optimizer=True)`` finds the schedule to save).
    """

    def __init__(
        self,
        model: Any,
        loss_fn: Callable[[Any, Any], Any],
        optimizer: Any,
        *,
        precision: Any = None,
        loss_scaler: Any = "auto",
        world: Any = "auto",
        compile: bool = False,
    ) -> None:
        _check_instance(
            "model", model, "an nn.Module", "model must be callable (an nn.Module), got {}"
        )
        _check_instance(
            "loss_fn",
            loss_fn,
            "a loss such as nn.SoftmaxCrossEntropy()",
            "loss_fn must be callable, got {}",
        )
        if isinstance(optimizer, type):
            raise _ArgumentTypeError(
                f"optimizer must be an nnbackend.optim optimizer, got the class "
                f"{optimizer.__name__} itself: make one, as in "
                f"{optimizer.__name__}(model.parameters(), lr=...)"
            )
        for method in ("step", "zero_grad"):
            if not callable(getattr(optimizer, method, None)):
                raise _ArgumentTypeError(
                    f"optimizer must have a {method}() method (an nnbackend.optim optimizer), "
                    f"got {type(optimizer).__name__}"
                )
        if not (
            loss_scaler is None
            or loss_scaler == "auto"
            or isinstance(loss_scaler, nb_precision.LossScaler)
        ):
            raise _ArgumentTypeError(
                f"loss_scaler must be 'auto', None or a nnbackend.precision.LossScaler, got "
                f"{loss_scaler!r}"
            )
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.precision = None if precision is None else config.normalize_policy(precision)
        self._scaler_choice = loss_scaler
        self.loss_scaler: nb_precision.LossScaler | None = (
            loss_scaler if isinstance(loss_scaler, nb_precision.LossScaler) else None
        )
        self.step = 0
        self.epoch = 0
        self.stop_training = False
        self.history: History | None = None
        self.callbacks: tuple[Any, ...] = ()
        self._world_choice = world
        # What train_step uses; fit sets them for its run.
        self._step_scaler: nb_precision.LossScaler | None = self.loss_scaler
        self._clip: Callable[[], Any] | None = None
        self._guard: Any = StepMark()
        self._reducer: Any = None
        self._share = 1.0
        self.compile = bool(compile)
        self._compiled: Any = None
        self._compiled_for: tuple[Any, ...] = ()  # (model, loss_fn, optimizer) it records
        self._settings: tuple[Any, ...] = ()  # settings_key() of the model and loss
        self._settings_seen = -1  # nn.module.changes() when _settings was read
        self._clip_key: float | None = None
        self._compile_warned = False

    @property
    def world(self) -> Any:
        """The :class:`nnbackend.distributed.World` this trainer trains in, or ``None`` in a
        single process. ``world="auto"`` (the default) takes the one
        :func:`nnbackend.distributed.init` joined when it has more than one rank."""
        choice = self._world_choice
        if choice == "auto":
            from nnbackend import distributed

            w = distributed.world()
            return w if w.size > 1 else None
        return choice

    def join_world(self) -> Any:
        """Get ready for data-parallel steps: broadcast the model's parameters from rank 0
        and set up the gradient all-reduce of :meth:`train_step`, each rank's share being
        ``1 / size`` (equal batches; ``fit`` sets the exact share of every step). ``fit``
        calls it when it starts; call it yourself (on every rank) before a loop of your own
        around :meth:`train_step`. Returns the :class:`~nnbackend.distributed.World`, or
        ``None`` in a single process."""
        w = self.world
        if w is None or w.size == 1:
            self._reducer = None
            return None
        from nnbackend.distributed import GradientReducer

        params = self._parameters()
        for p in params:
            p.data = w.comm.broadcast(p.data, 0)
        for b in self._float_buffers():
            b.data = w.comm.broadcast(b.data, 0)
        if self._reducer is None or self._reducer.comm is not w.comm:
            self._reducer = GradientReducer(params, w.comm)
        self._share = 1.0 / w.size
        return w

    def _float_buffers(self) -> list[Any]:
        """The model's floating buffers (BatchNorm's running statistics), which data-parallel
        ranks keep equal."""
        buffers = getattr(self.model, "buffers", None)
        if not callable(buffers):
            return []
        out = []
        for b in buffers():
            data = getattr(b, "data", None)
            if data is not None and backend_for(data)[0].isdtype(data.dtype, "real floating"):
                out.append(b)
        return out

    def _sync_buffers(self, run: _Fit) -> None:
        """Average the floating buffers over the ranks (one all-reduce each, once an epoch):
        each rank's running statistics come from its own rows, so ranks evaluated, and rank 0
        saved, different models. (PyTorch's DDP copies rank 0's instead; the average uses
        every rank's rows.)"""
        if run.world is None or run.size == 1:
            return
        for b in self._float_buffers():
            data = b.data
            xp = backend_for(data)[0]
            total = run.comm.allreduce_sum(xp.reshape(data, (-1,)))
            b.data = xp.reshape(total / run.size, tuple(data.shape))

    def _rank_rows(self, lo: int, hi: int, rank: int, size: int) -> tuple[int, int]:
        """This rank's rows of the global batch ``[lo, hi)``, and its share of it noted for
        the gradient all-reduce: rank ``r`` takes rows ``B*r//size`` to ``B*(r+1)//size``."""
        rows = hi - lo
        a, b = lo + rows * rank // size, lo + rows * (rank + 1) // size
        self._share = (b - a) / rows
        return a, b

    def no_sync(self) -> Any:
        """A context manager in which :meth:`train_step` does not all-reduce the gradients
        (gradient accumulation in data-parallel training); a no-op in a single process."""
        import contextlib

        if self._reducer is None:
            w = self.world
            if w is None:
                return contextlib.nullcontext()
            from nnbackend.distributed import GradientReducer

            self._reducer = GradientReducer(self._parameters(), w.comm)
        return self._reducer.no_sync()

    def _resolve_loss_scaler(self) -> nb_precision.LossScaler | None:
        """The scaler for this ``fit`` ("auto": one, kept across fits, under a mixed policy)."""
        auto = self._scaler_choice == "auto" and self.loss_scaler is None
        if auto and nb_precision.policy().loss_scaling:
            self.loss_scaler = nb_precision.LossScaler()
        return self.loss_scaler

    # -- helpers -----------------------------------------------------------------------------
    def _set_mode(self, training: bool) -> bool | None:
        """Switch train/eval mode; returns the previous mode (None for plain callables)."""
        previous = getattr(self.model, "training", None)
        train = getattr(self.model, "train", None)
        if previous is not None and callable(train):
            train(training)
            return bool(previous)
        return None

    def _restore_mode(self, previous: bool | None) -> None:
        if previous is not None:
            self.model.train(previous)

    def _parameters(self) -> list[Any]:
        params = getattr(self.model, "parameters", None)
        if callable(params):
            return list(params())
        return list(getattr(self.optimizer, "params", []))

    def _like(self) -> Any:
        """What data is converted like: the model where it is a Module with parameters,
        else the first parameter the optimizer trains (a model that is a function or a
        wrapper), else ``None``."""
        params = self._parameters()
        if not params:
            return None
        from nnbackend.nn.module import Module

        return self.model if isinstance(self.model, Module) else params[0]

    def _on_model(self, *arrays: Any) -> tuple[Any, ...]:
        """``arrays`` on the model's backend, device and dtype (labels as its int64), each
        converted once: NumPy arrays, lists, Tensors and other backends' arrays alike.
        A model without parameters takes the backend of the first backend array given, or
        the active one."""
        from nnbackend.datasets import to_backend

        like: Any = self._like()
        if like is None:
            for a in arrays:
                if registry.backend_of(data(a)) is not None:
                    like = data(a)
                    break
        return tuple(to_backend(a, like=like) for a in arrays)

    @staticmethod
    def _check_pair(x: Any, t: Any, what: str) -> tuple[Any, Any, Any]:
        x, t = data(x), data(t)
        # The backend's own namespace (no dtype defaulting: the loop passes dtypes itself),
        # so data on a backend other than the active one works whatever the active dtype.
        xp, record = backend_for(x)
        other = backend_for(t)[1]
        if other is not record:
            raise BackendMismatchError(
                f"{what}: inputs and targets are arrays from two backends, {record.name!r} and "
                f"{other.name!r}; move one to the other's backend first"
            )
        if x.ndim == 0 or t.ndim == 0:
            raise ShapeError(f"{what}: inputs and targets need a leading sample axis")
        if x.shape[0] != t.shape[0]:
            raise ShapeError(
                f"{what}: {x.shape[0]} inputs (shape {tuple(x.shape)}) but {t.shape[0]} "
                f"targets (shape {tuple(t.shape)})"
            )
        if x.shape[0] == 0:
            raise ShapeError(f"{what}: the data set is empty")
        return xp, x, t

    def _check_validation(self, validation: Any, x: Any, t: Any) -> tuple[Any, Any]:
        """``(x_val, t_val)`` checked against the training data, before any epoch runs."""
        what = "fit(validation=...)"
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise ArgumentError(
                f"{what}: validation must be a pair (x_val, t_val), got "
                f"{type(validation).__name__}"
                + (f" of length {len(validation)}" if isinstance(validation, (tuple, list)) else "")
            )
        _, xv, tv = self._check_pair(validation[0], validation[1], what)
        (xp, record), other = backend_for(x), backend_for(xv)[1]
        if other is not record:
            raise BackendMismatchError(
                f"{what}: the validation set is on backend {other.name!r}, the training data on "
                f"{record.name!r}; move it to {record.name!r} first"
            )
        for name, val, train in (("inputs", xv, x), ("targets", tv, t)):
            if tuple(val.shape[1:]) != tuple(train.shape[1:]):
                raise ShapeError(
                    f"{what}: validation {name} have shape {tuple(val.shape)}, but the training "
                    f"{name} {tuple(train.shape)}; each row must have shape "
                    f"{tuple(train.shape[1:])}"
                )
            # Integer labels may differ in width (int32 against int64); floats may not.
            if val.dtype != train.dtype and not (
                name == "targets"
                and xp.isdtype(val.dtype, "integral")
                and xp.isdtype(train.dtype, "integral")
            ):
                raise DtypeError(
                    f"{what}: validation {name} are {val.dtype}, the training {name} "
                    f"{train.dtype}; convert them with xp.astype(..., {train.dtype})"
                )
        return xv, tv

    @staticmethod
    def _permutation(generator: Any, n: int, x: Any, xp: Any) -> Any:
        """A permutation of ``range(n)`` from ``generator``, on ``x``'s backend and device."""
        record = backend_for(x)[1]
        # Drawn by nnbackend.random on the host (the same order on every backend), moved to
        # x's backend; float32 only keeps the namespace check happy on backends without the
        # active default dtype (strict has no float16).
        with config.using(backend=record.name, dtype="float32"):
            perm = generator.permutation(n)
        device = getattr(x, "device", None)
        if device is not None and getattr(perm, "device", None) != device:
            perm = xp.asarray(perm, device=device)
        return perm

    # -- training ----------------------------------------------------------------------------
    def train_step(self, x: Any, t: Any) -> tuple[Any, Any]:
        """One optimizer step on the batch ``(x, t)``: forward, loss, backward, the gradient
        all-reduce (data-parallel training), clipping, loss scaling and the optimizer step.
        :meth:`fit` calls it once per batch, whatever way the batches come: override it in a
        subclass to change what a step does (see the class's "Customising a step"). An
        override takes one optimizer step, adds 1 to ``self.step`` and returns
        ``(outputs, loss)`` for the whole batch.

        In data-parallel training the gradients are all-reduced right after ``backward``,
        weighted by this rank's share of the global batch, before clipping, unscaling and
        the optimizer: so clipping sees the global norm and a loss scaler skips a step on
        every rank when any rank overflowed. Called outside ``fit``, after
        :meth:`join_world`, each rank's share is ``1 / size`` (give every rank a batch of the
        same size) and nothing is clipped.

        Returns:
            ``(outputs, loss)``: the model's output and the (unscaled) loss Tensor.
        """
        if self.compile and self._can_compile():
            guard = self._guard
            guard.in_step = True  # a second Ctrl-C waits for the whole replayed step
            try:
                y, loss = self._compiled(x, t)
            finally:
                guard.in_step = False
            self.step += 1
            return y, loss
        opt = self.optimizer
        opt.zero_grad()
        y = self.model(x)
        loss = self.loss_fn(y, t)
        scaler, guard, clip, reducer = self._step_scaler, self._guard, self._clip, self._reducer
        if scaler is None:
            loss.backward()
            if reducer is not None:
                reducer.reduce(self._share)
            if clip is not None:
                clip()
            guard.in_step = True  # a second Ctrl-C waits for the update
            opt.step()
            self.step += 1
            guard.in_step = False
        else:
            scaler.scale_loss(loss).backward()
            if reducer is not None:
                reducer.reduce(self._share)
            if clip is not None:
                scaler.unscale(opt)
                clip()
            guard.in_step = True
            scaler.step(opt)
            self.step += 1
            guard.in_step = False
        return y, loss

    def _can_compile(self) -> bool:
        """Whether this step can run compiled (making the compiled step on first use); warns
        once, with the reason, where it cannot."""
        why = None
        if self._step_scaler is not None:
            why = "a loss scaler decides from the gradients' values whether to skip a step"
        elif self._reducer is not None:
            why = "data-parallel training all-reduces gradients outside the recorded calls"
        elif getattr(type(self.optimizer).step, "__wrapped__", None) is None:
            why = (
                f"{type(self.optimizer).__name__}.step is not a recorded call (decorate it "
                "with nnbackend.autograd.trace.recorded)"
            )
        if why is not None:
            if not self._compile_warned:
                self._compile_warned = True
                warnings.warn(
                    f"Trainer(compile=True) runs this step eagerly: {why}",
                    CompileWarning,
                    stacklevel=3,
                )
            return False
        parts = (self.model, self.loss_fn, self.optimizer)
        if self._compiled is None or any(map(operator.is_not, parts, self._compiled_for)):
            # (again when a callback or the user swapped the model, loss or optimizer: the
            # recordings hold the old ones)
            from nnbackend.autograd.compile import compile_step
            from nnbackend.nn.module import changes  # (nn is imported on first use)

            self._module_changes = changes
            self._compiled_for = parts
            self._settings_seen = -1
            self._compiled = compile_step(
                self._step_body, key=lambda: (self._module_settings(), self._clip_key)
            )
        return True

    def _module_settings(self) -> tuple[Any, ...]:
        """The model's and the loss's modules with their settings and the parameters and
        buffers they hold (:func:`nnbackend.nn.module.settings_key`): part of the compiled
        step's key, so that a submodule put in eval mode (a frozen BatchNorm or Dropout), a
        changed Dropout ``p`` or momentum, a layer or parameter added, replaced or removed,
        or a buffer reassigned records the step again. Read again only after some module's
        attributes changed (:func:`nnbackend.nn.module.changes`). A model that is not a
        Module (a wrapper around one) keys on that count itself: any module change records
        again."""
        seen = self._module_changes()
        if seen != self._settings_seen:
            from nnbackend.nn.module import Module, settings_key

            parts: list[Any] = []
            for part in (self.model, self.loss_fn):
                if isinstance(part, Module):
                    parts.append(settings_key(part))
                elif part is self.model:
                    parts.append(seen)
            self._settings = tuple(parts)
            self._settings_seen = seen
        return self._settings

    def _step_body(self, x: Any, t: Any) -> tuple[Any, Any]:
        """What the compiled step records: forward, loss, backward, clipping, the update."""
        opt = self.optimizer
        opt.zero_grad()
        y = self.model(x)
        loss = self.loss_fn(y, t)
        loss.backward()
        if self._clip is not None:
            self._clip()
        opt.step()
        return y, loss

    @_under_policy
    def fit(
        self,
        x: Any,
        t: Any = None,
        epochs: int = 1,
        batch_size: int = 32,
        *,
        validation: Sequence[Any] | None = None,
        eval_interval: int | None = None,
        max_grad: float | None = None,
        shuffle: bool = True,
        seed: int | None = None,
        progress: Any = "auto",
        callbacks: Iterable[Any] = (),
        validation_data: Sequence[Any] | None = None,
        validation_split: float | None = None,
        metrics: Iterable[Any] = (),
        initial_epoch: int = 0,
    ) -> History:
        """Train for ``epochs`` passes over ``(x, t)`` in mini-batches of ``batch_size``.

        Args:
            x: inputs with one row per sample: an array of any registered backend, a Tensor,
                a NumPy array or a list. They are moved to the model's backend, device and
                dtype once, before the first step (see :func:`nnbackend.to_backend`).
                Or a :class:`nnbackend.data.DataLoader` (then ``t``, ``batch_size``,
                ``shuffle``, ``seed`` and ``validation_split`` are the loader's business):
                batches stream from host memory to the model's device.
            t: targets with as many rows (integer labels become the backend's int64).
            epochs: passes over the data.
            batch_size: rows per step; the last batch of an epoch may be smaller.
            validation: ``(x_val, t_val)`` evaluated after every epoch.
            validation_data: the same as ``validation`` (the Keras name).
            validation_split: hold out this fraction (between 0 and 1) of the rows, the last
                ones, before any shuffling, and evaluate on them after every epoch.
            metrics: :class:`nnbackend.metrics.Metric` objects or names ("top5", "mse", ...),
                one alone, or ``None``; each epoch's value is in ``history.metrics[name]``
                (and ``"val_" + name``), so two metrics may not share a name.
            eval_interval: report every this many steps; ``None`` reports once per epoch.
            max_grad: clip the global gradient norm to this (on the device) before each step.
            shuffle: draw a new order every epoch (from ``nnbackend.random``, seeded by
                ``seed``); False keeps the data order.
            seed: seed of the shuffling; ``None`` draws a fresh one.
            progress: ``"auto"`` (a bar on a terminal, nothing otherwise), True (a bar:
                tqdm when installed, else a built-in one), False, or ``"log"`` (one line per
                report).
            callbacks: ``None`` or :class:`Callback` objects (:mod:`nnbackend.callbacks`,
                :mod:`nnbackend.schedules`), or functions ``(trainer, history)`` called after
                every epoch.
            initial_epoch: the epochs a resumed run has already completed (Keras's meaning):
                training runs epochs ``initial_epoch`` to ``epochs - 1`` (0-based), so
                ``epochs`` is the epoch to stop at, not a number of epochs more, and
                :attr:`epoch`, the progress bar and ``ModelCheckpoint``'s ``{epoch}`` continue
                the count (a resumed run's checkpoints do not overwrite the first run's). A
                checkpoint of ``ModelCheckpoint`` records the count:
                ``initial_epoch=nnbackend.io.read_metadata(path)["epoch"]``. One at or past
                ``epochs`` trains nothing. ``history.epochs`` counts this run's epochs.

        Returns:
            The :class:`History`. Ctrl-C (or a ``KeyboardInterrupt`` raised by a callback)
            stops training cleanly: the history so far comes back with
            ``interrupted=True``, and the model holds the weights of the last finished step.
            The first Ctrl-C stops after the current step; a second one stops at once, but
            never inside an optimizer step (it is held until the update is complete).

        The backend, the precision policy and the device are read once, when ``fit`` starts,
        and kept for the whole run (:func:`nnbackend.config.pinned`): another thread's
        ``set_default_dtype`` or ``set_backend`` does not change a running ``fit``.
        ``validation`` is checked before the first epoch: a pair of arrays of the training
        data's backend, with the training data's dtypes and shapes past the first axis.
        """
        run = self._start_fit(
            x,
            t,
            epochs,
            batch_size,
            validation=validation,
            eval_interval=eval_interval,
            max_grad=max_grad,
            shuffle=shuffle,
            seed=seed,
            progress=progress,
            callbacks=callbacks,
            validation_data=validation_data,
            validation_split=validation_split,
            metrics=metrics,
            initial_epoch=initial_epoch,
        )
        finished = False  # True unless an error other than Ctrl-C propagates
        self.history = run.history
        try:
            with run.guard:
                self._run_epochs(run)
            finished = True
        except KeyboardInterrupt:
            run.history.interrupted = finished = True
        except Exception as exc:
            # fit returns nothing then: say where what it measured is kept.
            exc.add_note(
                f"nnbackend: fit stopped after {run.history.epochs} epochs and {self.step} "
                "steps; trainer.history holds what it measured"
            )
            raise
        finally:
            self._end_fit(run, finished)
        for hook in run.hooks["on_fit_end"]:
            hook(self, run.history)
        return run.history

    # -- the parts of fit ------------------------------------------------------------------------
    def _start_fit(
        self,
        x: Any,
        t: Any,
        epochs: Any,
        batch_size: Any,
        *,
        validation: Any,
        eval_interval: Any,
        max_grad: Any,
        shuffle: bool,
        seed: int | None,
        progress: Any,
        callbacks: Iterable[Any],
        validation_data: Any,
        validation_split: Any,
        metrics: Iterable[Any],
        initial_epoch: Any = 0,
    ) -> _Fit:
        """Check ``fit``'s arguments, put the data on the model's backend, join the world of a
        data-parallel job, and set the trainer up for the run (step counters, progress bar,
        loss scaler, clipping, Ctrl-C guard, training mode). Nothing changes before the
        arguments are checked."""
        epochs = _positive_int("epochs", epochs, allow_zero=True)
        initial_epoch = _positive_int("initial_epoch", initial_epoch, allow_zero=True)
        batch_size = _positive_int("batch_size", batch_size)
        eval_interval = _positive_int("eval_interval", eval_interval, allow_none=True)
        if max_grad is not None and not _number(max_grad) > 0.0:
            raise ArgumentError(f"max_grad must be > 0, got {max_grad!r}")
        check_progress(progress)  # before anything changes (the step count, the world)
        train_metrics = _metrics(metrics)
        val_metrics = [copy.deepcopy(m) for m in train_metrics]
        if validation_data is not None:
            if validation is not None:
                raise ArgumentError("give validation or validation_data, not both")
            validation = validation_data
        xp, x, t, loader, batch_size, validation = self._fit_data(
            x, t, batch_size, validation, validation_split
        )
        n = int(x.shape[0]) if loader is None else loader.n
        steps_per_epoch = -(-n // batch_size) if loader is None else len(loader)
        callbacks = () if callbacks is None else tuple(callbacks)  # Keras's None
        hooks = hooks_by_event(callbacks)
        clip: Callable[[], Any] | None = None
        if max_grad is not None:
            from nnbackend.optim import clip_grad_norm

            params = self._parameters()
            max_norm = float(max_grad)
            clip = lambda: clip_grad_norm(params, max_norm)
        self._clip_key = None if max_grad is None else float(max_grad)
        world = self.join_world()
        comm = None
        rank, size = 0, 1
        if world is not None:
            comm, rank, size = world.comm, world.rank, world.size
            _check_split(n, batch_size, steps_per_epoch, size, loader)
            if shuffle and loader is None and seed is None:  # one order on every rank
                seed = comm.bcast_obj(secrets.randbits(31) if rank == 0 else None, 0)
            if not world.is_main:
                progress = False
        generator = nb_random.Generator(seed) if shuffle and loader is None else None

        history = History(
            batch_size=batch_size, steps_per_epoch=steps_per_epoch, initial_epoch=initial_epoch
        )
        self.step = 0
        self.epoch = initial_epoch
        self.stop_training = False
        self.callbacks = callbacks
        bar = make_progress(progress, max(epochs - initial_epoch, 0) * steps_per_epoch)
        scaler = self._resolve_loss_scaler()
        guard = InterruptGuard()
        self._step_scaler, self._clip, self._guard = scaler, clip, guard
        run = _Fit(
            xp=xp,
            x=x,
            t=t,
            loader=loader,
            n=n,
            batch_size=batch_size,
            steps_per_epoch=steps_per_epoch,
            epochs=epochs,
            seed=seed,
            generator=generator,
            world=world,
            comm=comm,
            rank=rank,
            size=size,
            validation=validation,
            eval_interval=eval_interval,
            hooks=hooks,
            train_metrics=train_metrics,
            val_metrics=val_metrics,
            history=history,
            bar=bar,
            scaler=scaler,
            guard=guard,
            interval=MetricSums(comm),
            whole=MetricSums(comm),
            scorer=_Scorer(self.loss_fn),
            initial_epoch=initial_epoch,
        )
        run.previous_mode = self._set_mode(True)
        run.start = time.perf_counter()
        return run

    def _fit_data(
        self, x: Any, t: Any, batch_size: int, validation: Any, validation_split: Any
    ) -> tuple[Any, Any, Any, Any, int, Any]:
        """``(xp, x, t, loader, batch_size, validation)`` for ``fit``: the training data on
        the model's backend (for a DataLoader, its first batch, which fixes the backend), the
        held-out rows of ``validation_split``, and the validation set checked against the
        training data."""
        loader = _as_loader(x, t, validation_split)
        if loader is not None:
            if loader.like is None:
                # This fit's batches go to this model: a shallow copy of the loader (sharing
                # its shuffling generator) says so; setting the user's loader.like for good
                # sent a later model (another dtype or backend) this model's batches.
                loader = copy.copy(loader)
                loader.like = self._like()
            batch_size = loader.batch_size
            # A first batch tells the backend; the loop draws its own batches per epoch.
            x, t = _first_batch(loader)
        else:
            x, t = self._on_model(x, t)
        if validation_split is not None:
            if validation is not None:
                raise ArgumentError("give validation_data or validation_split, not both")
            x, t, validation = _split(x, t, validation_split)
        xp, x, t = self._check_pair(x, t, "fit")
        if validation is not None:
            if isinstance(validation, (tuple, list)) and len(validation) == 2:
                validation = self._on_model(validation[0], validation[1])
            validation = self._check_validation(validation, x, t)
        return xp, x, t, loader, batch_size, validation

    def _run_epochs(self, run: _Fit) -> None:
        """The epochs of ``fit``, until the last one or a stop (a callback, Ctrl-C)."""
        history = run.history
        for hook in run.hooks["on_fit_start"]:
            hook(self, history)
        for epoch in range(run.initial_epoch, run.epochs):
            self.epoch = epoch
            if not self._run_epoch(run, epoch):
                self._sync_buffers(run)  # (every rank stops after the same step)
                break  # stopped inside the epoch: it does not count as completed
            self._end_epoch(run, epoch)
            if self._stopping(run):
                break  # stopped by an epoch-end hook
        if run.guard.requested:
            history.interrupted = True
        elif self.stop_training:
            history.stopped_early = True

    def _run_epoch(self, run: _Fit, epoch: int) -> bool:
        """One pass over the data, one :meth:`train_step` per batch. False when training
        stopped inside it (after any of its steps, the last one too)."""
        run.bar.describe(f"epoch {epoch + 1}/{run.epochs}")
        perm = self._permutation(run.generator, run.n, run.x, run.xp) if run.generator else None
        batches = iter(run.loader) if run.loader is not None else None
        run.whole.reset()
        for m in run.train_metrics:
            m.reset()
        for i in range(run.steps_per_epoch):
            xb, tb, rows = self._batch(run, i, perm, batches)
            self._step(run, xb, tb, rows)
            if self._stopping(run):
                return False
        return True

    def _stopping(self, run: _Fit) -> bool:
        """Whether training stops here: a callback set :attr:`stop_training`, or Ctrl-C. In
        data-parallel training every rank decides together (one one-element all-reduce after
        each step and epoch): a rank that stopped alone left the others waiting in the next
        step's collective, forever on MPI. A rank stopped by another notes it as an early
        stop."""
        stop = run.guard.requested or self.stop_training
        if run.world is None or run.size == 1:
            return stop
        xp = run.xp
        total = run.comm.allreduce_sum(xp.asarray([1.0 if stop else 0.0], dtype=xp.float32))
        if float(total[0]) > 0.0 and not stop:
            self.stop_training = True  # another rank stopped (its callback, its Ctrl-C)
            return True
        return stop

    def _batch(self, run: _Fit, i: int, perm: Any, batches: Any) -> tuple[Any, Any, int]:
        """``(x, t, rows)`` of the ``i``-th batch of the epoch: the loader's next batch, the
        rows ``perm`` picks, or the next rows in order; in data-parallel training only this
        rank's rows of the global batch (:meth:`_rank_rows` notes its share)."""
        lo = i * run.batch_size
        hi = min(lo + run.batch_size, run.n)
        if batches is not None:
            xb, tb = next(batches)
            lo, hi = 0, int(xb.shape[0])
            if run.world is not None:
                lo, hi = self._rank_rows(lo, hi, run.rank, run.size)
                xb, tb = xb[lo:hi, ...], tb[lo:hi, ...]
            return xb, tb, hi - lo
        if run.world is not None:  # this rank's rows of the global batch
            lo, hi = self._rank_rows(lo, hi, run.rank, run.size)
        if perm is not None:
            idx = perm[lo:hi]
            take = run.xp.take
            return take(run.x, idx, axis=0), take(run.t, idx, axis=0), hi - lo
        return run.x[lo:hi, ...], run.t[lo:hi, ...], hi - lo

    def _step(self, run: _Fit, xb: Any, tb: Any, rows: int) -> None:
        """:meth:`train_step` on one batch of ``rows`` rows, and its bookkeeping: the loss and
        the loss's default metric summed on the device, the metrics fed, the bar moved, the
        ``on_step_end`` hooks, and a report every ``eval_interval`` steps."""
        y, loss = self.train_step(xb, tb)
        # The step is applied: a second Ctrl-C waits until it is in the sums too (raised in
        # a training metric's update, it left the applied step out of the reported loss).
        guard = run.guard
        guard.in_step = True
        yd = data(y)
        correct, count = run.scorer.batch(yd, tb)
        lv = wide(run.xp, data(loss))
        for m in run.train_metrics:
            m.update(yd, tb)
        run.whole.add(lv, rows, correct, count)
        if run.eval_interval is not None:
            run.interval.add(lv, rows, correct, count)
        guard.in_step = False
        # A Ctrl-C held while the update ran (the whole step, when compiled) is raised once
        # the step it let finish is in the sums: the history then has every applied step.
        if guard.pending or guard.held is not None:
            guard.release()
        run.bar.update()
        for hook in run.hooks["on_step_end"]:
            hook(self, run.history)
        if run.eval_interval is not None and self.step % run.eval_interval == 0:
            self._report(run)

    def _report(
        self, run: _Fit, extra: str = "", read: tuple[float, float | None] | None = None
    ) -> None:
        """Append a report to the history: the numbers since the last one (or ``read``), shown
        on the bar with ``extra``, then the ``on_report`` hooks. The loss scaler's scale is
        checked here, not every step (it may live on the device)."""
        if run.scaler is not None:
            run.scaler.check_scale()
        loss, acc = run.scorer.read(run.interval) if read is None else read
        history = run.history
        history.loss.append(loss)
        history.accuracy.append(acc)
        history.report_steps.append(self.step)
        run.interval.reset()
        run.bar.report(metrics_text(loss, acc) + extra)
        for hook in run.hooks["on_report"]:
            hook(self, history)

    def _end_epoch(self, run: _Fit, epoch: int) -> None:
        """A completed epoch: its loss, accuracy and metrics, the validation, the report (the
        epoch's own without ``eval_interval``), then the ``on_epoch_end`` hooks."""
        history = run.history
        self._sync_buffers(run)  # before validation, the callbacks and any checkpoint
        e_loss, e_acc = run.scorer.read(run.whole)
        results = [(m.name, metric_result(m, run.comm)) for m in run.train_metrics]
        validation = None if run.validation is None else self._validate(run)
        # The epoch goes into the history whole, after its validation: a second Ctrl-C in the
        # validation leaves the epoch out (its steps go into fit's last report; they were
        # lost, and epoch_loss outgrew ``epochs``), one from here on waits until it is in.
        guard = run.guard
        guard.in_step = True
        try:
            run.whole.reset()
            history.epoch_loss.append(e_loss)
            history.epoch_accuracy.append(e_acc)
            for name, value in results:
                history.metrics.setdefault(name, []).append(value)
            extra = ""
            if validation is not None:
                v_loss, v_acc, v_results = validation
                for name, value in v_results:
                    history.metrics.setdefault(name, []).append(value)
                history.val_loss.append(v_loss)
                history.val_accuracy.append(v_acc)
                extra = " val_" + metrics_text(v_loss, v_acc).replace(" acc=", " val_acc=")
            history.epochs = epoch + 1 - run.initial_epoch
            history.epoch_time.append(time.perf_counter() - run.start)
            if run.eval_interval is None:
                self._report(run, extra, (e_loss, e_acc))
            elif extra:
                run.bar.report("epoch " + metrics_text(e_loss, e_acc) + extra)
        finally:
            guard.in_step = False
        if guard.pending or guard.held is not None:
            guard.release()
        for hook in run.hooks["on_epoch_end"]:
            hook(self, history)

    def _validate(self, run: _Fit) -> tuple[float, float | None, list[tuple[str, float]]]:
        """Evaluate on the validation set: ``(loss, accuracy, [(val_ + metric name,
        value)])``, recorded in the history by ``_end_epoch``."""
        v_loss, v_acc = self.evaluate(run.validation[0], run.validation[1], metrics=run.val_metrics)
        return v_loss, v_acc, [("val_" + m.name, m.result()) for m in run.val_metrics]

    def _end_fit(self, run: _Fit, finished: bool) -> None:
        """Whatever way ``fit`` ends: a last report for the steps since the previous one
        (unless an error other than Ctrl-C is on its way), the timings, the bar closed, the
        model's mode and the trainer's step settings put back."""
        history = run.history
        history.steps = self.step
        pending = run.interval if run.eval_interval is not None else run.whole
        if finished and pending:  # steps since the last report: a last, partial interval
            try:
                self._report(run, read=run.scorer.read(pending))
            except KeyboardInterrupt:
                history.interrupted = True
        history.wall_time = time.perf_counter() - run.start
        run.bar.close()
        self._restore_mode(run.previous_mode)
        self._clip, self._guard = None, StepMark()
        self._share = 1.0 / run.size

    # -- evaluation --------------------------------------------------------------------------
    @_under_policy
    def evaluate(
        self, x: Any, t: Any, batch_size: int = 1024, *, metrics: Iterable[Any] = ()
    ) -> tuple[float, float | None]:
        """Mean loss and accuracy of the model on ``(x, t)`` in evaluation mode, without
        gradients, in batches of ``batch_size``. The accuracy is the loss's default metric
        (:func:`nnbackend.metrics.default_metric`), ``None`` where it has none (regression
        losses). Reads two numbers from the device, once.

        ``x`` and ``t`` may be NumPy arrays, lists or arrays of any backend: they are moved
        to the model's backend, device and dtype first. Each of ``metrics``
        (:class:`nnbackend.metrics.Metric` objects) is reset and fed every batch; read it
        with ``metric.result()``.
        """
        batch_size = _positive_int("batch_size", batch_size)  # type: ignore[assignment]
        metrics = _metrics(metrics, convert=False)
        for m in metrics:
            m.reset()
        x, t = self._on_model(x, t)
        xp, x, t = self._check_pair(x, t, "evaluate")
        n = int(x.shape[0])
        sums = MetricSums()
        scorer = _Scorer(self.loss_fn)
        previous = self._set_mode(False)
        try:
            with no_grad():
                for lo in range(0, n, batch_size):
                    hi = min(lo + batch_size, n)
                    xb, tb = x[lo:hi, ...], t[lo:hi, ...]
                    y = data(self.model(xb))
                    loss = data(self.loss_fn(y, tb))
                    correct, count = scorer.batch(y, tb)
                    for m in metrics:
                        m.update(y, tb)
                    sums.add(wide(xp, loss), hi - lo, correct, count)
        finally:
            self._restore_mode(previous)
        return scorer.read(sums)

    @_under_policy
    def predict(self, x: Any, batch_size: int = 1024) -> Any:
        """The model's outputs for ``x`` (a backend array, not a Tensor), computed in
        evaluation mode without gradients, in batches of ``batch_size``. ``x`` may be a
        NumPy array, a list or an array of any backend: it is moved to the model's backend,
        device and dtype first."""
        batch_size = _positive_int("batch_size", batch_size)  # type: ignore[assignment]
        x = self._on_model(x)[0]
        previous = self._set_mode(False)
        try:
            return predict(self.model, x, batch_size)
        finally:
            self._restore_mode(previous)


def _as_loader(x: Any, t: Any, validation_split: Any) -> Any:
    """``x`` when it is a :class:`nnbackend.data.DataLoader` (checked for the arguments it
    excludes), else ``None``; a missing ``t`` without a loader is an error."""
    from nnbackend.data import DataLoader

    if not isinstance(x, DataLoader):
        if t is None:
            raise ArgumentError("fit needs targets t (or a nnbackend.data.DataLoader as x)")
        return None
    if t is not None:
        raise ArgumentError("fit(loader, t): the DataLoader holds the targets; leave t out")
    if validation_split is not None:
        raise ArgumentError(
            "validation_split needs the data in memory; with a DataLoader, pass "
            "validation_data=(x_val, t_val)"
        )
    return x


def _first_batch(loader: Any) -> tuple[Any, Any]:
    """One batch of ``loader`` without shuffling or prefetching (it fixes the backend)."""
    from nnbackend.data import DataLoader

    probe = DataLoader(
        loader.x,
        loader.t,
        batch_size=min(loader.batch_size, loader.n),
        shuffle=False,
        prefetch=False,
        like=loader.like,
    )
    first: tuple[Any, Any] = next(iter(probe))
    return first


def _split(x: Any, t: Any, fraction: Any) -> tuple[Any, Any, tuple[Any, Any]]:
    """``(x_train, t_train, (x_val, t_val))``: the last ``fraction`` of the rows held out."""
    try:
        fraction = float(fraction)
    except (TypeError, ValueError):
        raise ArgumentError(f"validation_split must be a number, got {fraction!r}") from None
    if not 0.0 < fraction < 1.0:
        raise ArgumentError(f"validation_split must be between 0 and 1, got {fraction}")
    n = int(x.shape[0])
    cut = int(n * (1.0 - fraction))
    if cut < 1 or cut >= n:
        raise ArgumentError(
            f"validation_split={fraction} of {n} rows leaves an empty training or validation "
            "set; choose a fraction that keeps at least one row in each"
        )
    return x[:cut, ...], t[:cut, ...], (x[cut:, ...], t[cut:, ...])
