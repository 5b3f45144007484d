"""Training loops: :class:`Trainer` fits a model with a progress bar and returns a
:class:`History` of the losses and accuracies.

The loop keeps everything on the device. Each epoch draws one permutation from
:mod:`nnbackend.random` and gathers the batches with ``xp.take``; the loss and the number of
correct predictions are summed as device arrays, and read back to the host only when they are
reported (once per epoch, or every ``eval_interval`` steps), never once per step. So on a GPU
the host never waits for the device between reports.

>>> import nnbackend as nb
>>> from nnbackend import nn, optim
>>> nb.random.seed(0)
>>> x, t = nb.datasets.spiral()
>>> model = nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))
>>> trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=1.0))
>>> history = trainer.fit(x, t, epochs=3, batch_size=30, seed=0, progress=False)
>>> len(history.loss), history.epochs, history.steps
(3, 3, 30)
"""

from __future__ import annotations

import copy
import functools
import math
import operator
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from nnbackend import config, registry
from nnbackend import precision as nb_precision
from nnbackend import random as nb_random
from nnbackend.autograd.mode import no_grad
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import ArgumentError, BackendMismatchError, DtypeError, ShapeError
from nnbackend.namespace import backend_for

__all__ = ["Callback", "History", "Trainer", "plot_decision_boundary"]

PLOT_HINT = "pip install 'nnbackend[plot]'"


def _data(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def _writes_files() -> bool:
    """False on the ranks other than 0 of a data-parallel job: they leave files alone."""
    from nnbackend.distributed import is_main

    return is_main()


def _require_matplotlib(what: str) -> Any:
    """``matplotlib.figure.Figure``, or an ImportError that says how to install it."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"{what} needs matplotlib, which is not installed: {PLOT_HINT}") from exc
    return Figure


# ---------------------------------------------------------------------------------------------
# History
# ---------------------------------------------------------------------------------------------
@dataclass
class History:
    """What :meth:`Trainer.fit` measured. All values are Python numbers.

    Per report (once per epoch, or every ``eval_interval`` steps; plus one for the steps
    after the last report, when training ends between reports or stops early):

    Attributes:
        loss: mean training loss over the interval.
        accuracy: training accuracy over the interval (``None`` for losses without classes).
        report_steps: the global step count at each report.

    Per completed epoch:

    Attributes:
        epoch_loss: mean training loss over the epoch.
        epoch_accuracy: training accuracy over the epoch (``None`` for losses without classes).
        val_loss: loss on the ``validation`` set, when one was given.
        val_accuracy: accuracy on the ``validation`` set, when one was given.
        epoch_time: seconds since the start of ``fit`` at the end of each epoch.

    Overall:

    Attributes:
        epochs: completed epochs.
        steps: optimizer steps taken.
        wall_time: seconds ``fit`` took.
        interrupted: True when Ctrl-C (``KeyboardInterrupt``) stopped training.
        stopped_early: True when a callback set ``trainer.stop_training``.
        metrics: per completed epoch, the value of each metric given to ``fit(metrics=)``
            under its name, and on the validation set under ``"val_" + name``.
    """

    loss: list[float] = field(default_factory=list)
    accuracy: list[float | None] = field(default_factory=list)
    report_steps: list[int] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    epoch_accuracy: list[float | None] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float | None] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    epochs: int = 0
    steps: int = 0
    wall_time: float = 0.0
    interrupted: bool = False
    stopped_early: bool = False
    batch_size: int = 0
    steps_per_epoch: int = 0
    metrics: dict[str, list[float]] = field(default_factory=dict)

    @property
    def time_per_step(self) -> float:
        """Mean wall time of one step in seconds (including reports and validation)."""
        return self.wall_time / self.steps if self.steps else math.nan

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain Python lists and numbers (JSON-serialisable)."""
        return {
            "loss": list(self.loss),
            "accuracy": list(self.accuracy),
            "report_steps": list(self.report_steps),
            "epoch_loss": list(self.epoch_loss),
            "epoch_accuracy": list(self.epoch_accuracy),
            "val_loss": list(self.val_loss),
            "val_accuracy": list(self.val_accuracy),
            "epoch_time": list(self.epoch_time),
            "epochs": self.epochs,
            "steps": self.steps,
            "wall_time": self.wall_time,
            "time_per_step": None if not self.steps else self.time_per_step,
            "interrupted": self.interrupted,
            "stopped_early": self.stopped_early,
            "batch_size": self.batch_size,
            "steps_per_epoch": self.steps_per_epoch,
            "metrics": {name: list(values) for name, values in self.metrics.items()},
        }

    def plot(self, path: str | Path, *, title: str | None = None) -> Path:
        """Write the loss curve (and the accuracy, where there is one) as a PNG.

        Needs matplotlib (``pip install 'nnbackend[plot]'``); without it, raises ImportError
        saying so. Uses matplotlib's object API only, so the user's pyplot state and GUI
        backend are left alone. Returns the path written. In data-parallel training only
        rank 0 writes the file.
        """
        Figure = _require_matplotlib("History.plot()")
        path = Path(path)
        if not _writes_files():
            return path
        has_acc = any(a is not None for a in self.accuracy + self.val_accuracy)
        fig = Figure(figsize=(10 if has_acc else 6, 4), layout="constrained")
        axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
        epoch_steps = [self.steps_per_epoch * (i + 1) for i in range(len(self.val_loss))]
        ax = axes[0]
        ax.plot(self.report_steps, self.loss, label="train")
        if self.val_loss:
            ax.plot(epoch_steps, self.val_loss, label="validation")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("loss")
        ax.grid(True, alpha=0.3)
        ax.legend()
        if has_acc:
            ax = axes[1]
            steps = [
                s for s, a in zip(self.report_steps, self.accuracy, strict=True) if a is not None
            ]
            ax.plot(steps, [a for a in self.accuracy if a is not None], label="train")
            if any(a is not None for a in self.val_accuracy):
                ax.plot(
                    [
                        s
                        for s, a in zip(epoch_steps, self.val_accuracy, strict=True)
                        if a is not None
                    ],
                    [a for a in self.val_accuracy if a is not None],
                    label="validation",
                )
            ax.set_xlabel("step")
            ax.set_ylabel("accuracy")
            ax.set_title("accuracy")
            ax.set_ylim(-0.02, 1.02)  # a curve at exactly 0 or 1 stays visible
            ax.grid(True, alpha=0.3)
            ax.legend()
        if title:
            fig.suptitle(title)
        fig.savefig(path, format="png", dpi=100)
        return path


# ---------------------------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------------------------
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


def _hooks(callbacks: Iterable[Any]) -> dict[str, list[Callable[[Trainer, History], Any]]]:
    table: dict[str, list[Callable[[Trainer, History], Any]]] = {name: [] for name in _HOOKS}
    for cb in callbacks:
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


# ---------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------
class _NoProgress:
    def update(self) -> None:
        pass

    def describe(self, text: str) -> None:
        pass

    def report(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class _TqdmProgress(_NoProgress):
    def __init__(self, tqdm: Any, total: int, stream: TextIO) -> None:
        self.bar = tqdm(
            total=total, unit="step", dynamic_ncols=True, file=stream, leave=True, mininterval=0.1
        )

    def update(self) -> None:
        self.bar.update()

    def describe(self, text: str) -> None:
        self.bar.set_description_str(text, refresh=False)

    def report(self, text: str) -> None:
        self.bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        self.bar.close()


class _TextProgress(_NoProgress):
    """A one-line bar redrawn in place at most ten times a second (used without tqdm)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream = max(total, 1), stream
        self.n = 0
        self.start = self.last = time.perf_counter()
        self.desc = self.postfix = ""
        self.width = 0
        self.drawn: tuple[int, str] | None = None

    def update(self) -> None:
        self.n += 1
        now = time.perf_counter()
        if now - self.last >= 0.1:
            self.last = now
            self._draw(now)

    def describe(self, text: str) -> None:
        self.desc = text

    def report(self, text: str) -> None:
        self.postfix = text

    def _draw(self, now: float) -> None:
        self.drawn = (self.n, self.postfix)
        frac = min(self.n / self.total, 1.0)
        filled = int(frac * 20)
        elapsed = now - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        line = (
            f"{self.desc} |{'#' * filled}{'.' * (20 - filled)}| {frac:4.0%} "
            f"{self.n}/{self.total} [{elapsed:.1f}s, {rate:.0f} steps/s]"
            + (f" {self.postfix}" if self.postfix else "")
        )
        pad = " " * max(self.width - len(line), 0)
        self.width = len(line)
        self.stream.write("\r" + line + pad)
        self.stream.flush()

    def close(self) -> None:
        if self.drawn != (self.n, self.postfix):
            self._draw(time.perf_counter())
        self.stream.write("\n")
        self.stream.flush()


class _LogProgress(_NoProgress):
    """One line per report, for logs and pipes (``progress="log"``)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.desc = ""
        self.n = 0
        self.start = time.perf_counter()

    def update(self) -> None:
        self.n += 1

    def describe(self, text: str) -> None:
        self.desc = text

    def report(self, text: str) -> None:
        elapsed = time.perf_counter() - self.start
        self.stream.write(f"{self.desc} step {self.n} [{elapsed:.1f}s] {text}\n")
        self.stream.flush()


def _make_progress(progress: Any, total: int, stream: TextIO | None = None) -> _NoProgress:
    stream = sys.stderr if stream is None else stream
    if progress == "auto":
        isatty = getattr(stream, "isatty", None)
        progress = bool(isatty and isatty())
    if progress is False or progress is None:
        return _NoProgress()
    if progress == "log":
        return _LogProgress(stream)
    if progress is True or progress in ("bar", "tqdm", "text"):
        if progress != "text":
            try:
                from tqdm.auto import tqdm
            except ImportError:
                if progress == "tqdm":
                    raise ImportError("progress='tqdm' needs tqdm: pip install tqdm") from None
            else:
                return _TqdmProgress(tqdm, total, stream)
        return _TextProgress(total, stream)
    raise ValueError(
        f"progress must be 'auto', True, False, 'bar', 'tqdm', 'text' or 'log', got {progress!r}"
    )


def _metrics_text(loss: float, accuracy: float | None) -> str:
    text = f"loss={loss:.4f}"
    if accuracy is not None:
        text += f" acc={accuracy:.1%}"
    return text


# ---------------------------------------------------------------------------------------------
# Ctrl-C
# ---------------------------------------------------------------------------------------------
class _InterruptGuard:
    """In the main thread, turn the first Ctrl-C into a request to stop after the current
    step; a second Ctrl-C raises ``KeyboardInterrupt`` at once, except inside an optimizer
    step (while ``in_step`` is True), where it is held until the step is finished
    (:meth:`release`), so a half-applied update never happens.

    Where a handler other than Python's default is installed, the guard forwards SIGINT to it
    unchanged, except inside the step, where it holds the signal and forwards it when the step
    is finished. Either way marking the step costs attribute writes, no system call (swapping
    the handler around each step cost 15 us)."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: Any = None
        self.installed = False
        self.in_step = False
        self.pending = False  # a second Ctrl-C came during the step
        self.held: tuple[int, Any] | None = None  # a signal for the foreign handler

    def __enter__(self) -> _InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            try:
                current = signal.getsignal(signal.SIGINT)
                if current is signal.default_int_handler:
                    self.previous = signal.signal(signal.SIGINT, self._handle)
                elif callable(current):
                    self.previous = signal.signal(signal.SIGINT, self._forward)
                else:  # ignored (SIG_IGN), or the OS default: nothing to hold back
                    return self
                self.installed = True
            except (ValueError, OSError):  # not allowed here (embedded interpreters)
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            if self.in_step:
                self.pending = True  # raised by _GuardedStep when the step is finished
                return
            raise KeyboardInterrupt
        self.requested = True

    def _forward(self, signum: int, frame: Any) -> None:
        if self.in_step:
            self.held = (signum, frame)  # forwarded by release() when the step is finished
            return
        self.previous(signum, frame)

    def release(self) -> None:
        """After a step (``in_step`` back to False): act on a signal held during it."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt
        if self.held is not None:
            held, self.held = self.held, None
            self.previous(*held)

    def __exit__(self, *exc: Any) -> None:
        self.in_step = self.pending = False
        self.held = None
        if self.installed:
            signal.signal(signal.SIGINT, self.previous)
            self.installed = False


class _StepMark:
    """Where :meth:`Trainer.train_step` marks its optimizer step outside ``fit``."""

    __slots__ = ("in_step",)

    def __init__(self) -> None:
        self.in_step = False


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


# ---------------------------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------------------------
def _accuracy_counter(loss_fn: Any, y: Any, t: Any) -> tuple[Any, int]:
    """``(count, k)``: ``count(xp, y, t)`` gives a 0-d int array of correct predictions in a
    batch, and each target row holds ``k`` predictions; ``count`` is ``None`` where accuracy
    means nothing (regression). Decided once, from the loss and the first batch's shapes."""
    from nnbackend.nn.losses import MSELoss, SigmoidCrossEntropy

    xp = backend_for(y)[0]
    if isinstance(loss_fn, MSELoss):
        return None, 0
    if isinstance(loss_fn, SigmoidCrossEntropy):
        if tuple(t.shape) != tuple(y.shape):
            return None, 0
        return (lambda xp, y, t: xp.count_nonzero((y > 0) == (t > 0.5))), math.prod(
            int(d) for d in t.shape[1:]
        )
    if y.ndim != 2 or y.shape[1] < 2:
        return None, 0
    if t.ndim == 1 and xp.isdtype(t.dtype, "integral"):
        return (lambda xp, y, t: xp.count_nonzero(xp.argmax(y, axis=1) == t)), 1
    if tuple(t.shape) == tuple(y.shape):
        return (lambda xp, y, t: xp.count_nonzero(xp.argmax(y, axis=1) == xp.argmax(t, axis=1))), 1
    return None, 0


class _Sums:
    """Device-side running sums of the loss (times the batch size) and of correct
    predictions, read to the host only by :meth:`read`. With a communicator ``comm``
    (data-parallel training), :meth:`read` sums them over all ranks first."""

    __slots__ = ("comm", "correct", "loss", "predictions", "samples")

    def __init__(self, comm: Any = None) -> None:
        self.comm = comm
        self.reset()

    def reset(self) -> None:
        self.loss: Any = None
        self.correct: Any = None
        self.samples = 0
        self.predictions = 0

    def add(self, loss: Any, n: int, correct: Any, predictions: int) -> None:
        weighted = loss * float(n)
        self.loss = weighted if self.loss is None else self.loss + weighted
        self.samples += n
        if correct is not None:
            self.correct = correct if self.correct is None else self.correct + correct
            self.predictions += predictions

    def read(self) -> tuple[float, float | None]:
        """``(mean loss, accuracy or None)``; the only place that syncs with the device."""
        if self.comm is not None:
            return self._read_global()
        loss = float(self.loss) / self.samples if self.samples else math.nan
        acc = None
        if self.correct is not None and self.predictions:
            acc = int(self.correct) / self.predictions
        return loss, acc

    def _read_global(self) -> tuple[float, float | None]:
        """The sums of every rank (one all-reduce of four numbers), then as :meth:`read`."""
        xp = backend_for(self.loss)[0]
        local = [
            float(self.loss),
            float(self.samples),
            0.0 if self.correct is None else float(self.correct),
            float(self.predictions),
        ]
        wide = getattr(xp, "float64", None) or xp.float32
        total = self.comm.allreduce_sum(
            xp.asarray(local, dtype=wide, device=getattr(self.loss, "device", None))
        )
        loss_sum, samples, correct, predictions = (float(total[i]) for i in range(4))
        loss = loss_sum / samples if samples else math.nan
        acc = None
        if self.correct is not None and predictions:
            acc = correct / predictions
        return loss, acc

    def __bool__(self) -> bool:
        return self.samples > 0


def _metric_result(metric: Any, comm: Any) -> float:
    """``metric.result()``, over the batches of every rank when ``comm`` is given (its sum
    and count all-reduced; metrics without that state report this rank's value)."""
    total = getattr(metric, "total", None)
    if comm is None or total is None or not hasattr(metric, "count"):
        return float(metric.result())
    xp = backend_for(total)[0]
    wide = getattr(xp, "float64", None) or xp.float32
    both = comm.allreduce_sum(
        xp.asarray(
            [float(total), float(metric.count)], dtype=wide, device=getattr(total, "device", None)
        )
    )
    count = float(both[1])
    return float(metric.finish(float(both[0]) / count)) if count else math.nan


def _wide(xp: Any, loss: Any) -> Any:
    """The loss in a dtype wide enough to sum thousands of steps (float16 -> float32)."""
    half = getattr(xp, "float16", None)
    return xp.astype(loss, xp.float32) if half is not None and loss.dtype == half else loss


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------
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

    Attributes:
        step: optimizer steps taken in the current ``fit``.
        epoch: the current epoch (0-based).
        stop_training: set it to True (from a callback) to stop after the current step.
        loss_scaler: the :class:`~nnbackend.precision.LossScaler` in use (its counters say how
            many steps were skipped), or ``None``.
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
    ) -> None:
        if not callable(model):
            raise TypeError(f"model must be callable (an nn.Module), got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        for method in ("step", "zero_grad"):
            if not callable(getattr(optimizer, method, None)):
                raise TypeError(
                    f"optimizer must have a {method}() method (an nnbackend.optim optimizer), "
                    f"got {type(optimizer).__name__}"
                )
        if not (
            loss_scaler is None
            or loss_scaler == "auto"
            or isinstance(loss_scaler, nb_precision.LossScaler)
        ):
            raise TypeError(
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
        self._world_choice = world
        # What train_step uses; fit sets them for its run.
        self._step_scaler: nb_precision.LossScaler | None = self.loss_scaler
        self._clip: Callable[[], Any] | None = None
        self._guard: Any = _StepMark()
        self._reducer: Any = None
        self._share = 1.0

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
        if self._reducer is None or self._reducer.comm is not w.comm:
            self._reducer = GradientReducer(params, w.comm)
        self._share = 1.0 / w.size
        return w

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

    def _on_model(self, *arrays: Any) -> tuple[Any, ...]:
        """``arrays`` on the model's backend, device and dtype (labels as its int64), each
        converted once: NumPy arrays, lists, Tensors and other backends' arrays alike.
        A model without parameters takes the backend of the first backend array given, or
        the active one."""
        from nnbackend.datasets import to_backend

        like: Any = None
        if any(True for _ in self._parameters()):
            like = self.model
        else:
            for a in arrays:
                if registry.backend_of(_data(a)) is not None:
                    like = _data(a)
                    break
        return tuple(to_backend(a, like=like) for a in arrays)

    @staticmethod
    def _check_pair(x: Any, t: Any, what: str) -> tuple[Any, Any, Any]:
        x, t = _data(x), _data(t)
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
        :meth:`fit` calls it once per batch; override it to change what a step does.

        In data-parallel training the gradients are all-reduced right after ``backward``,
        weighted by this rank's share of the global batch, before clipping, unscaling and
        the optimizer: so clipping sees the global norm and a loss scaler skips a step on
        every rank when any rank overflowed. Called outside ``fit``, after
        :meth:`join_world`, each rank's share is ``1 / size`` (give every rank a batch of the
        same size) and nothing is clipped.

        Returns:
            ``(outputs, loss)``: the model's output and the (unscaled) loss Tensor.
        """
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
            metrics: :class:`nnbackend.metrics.Metric` objects or names ("top5", "mse", ...);
                each epoch's value is in ``history.metrics[name]`` (and ``"val_" + name``).
            eval_interval: report every this many steps; ``None`` reports once per epoch.
            max_grad: clip the global gradient norm to this (on the device) before each step.
            shuffle: draw a new order every epoch (from ``nnbackend.random``, seeded by
                ``seed``); False keeps the data order.
            seed: seed of the shuffling; ``None`` draws a fresh one.
            progress: ``"auto"`` (a bar on a terminal, nothing otherwise), True (a bar:
                tqdm when installed, else a built-in one), False, or ``"log"`` (one line per
                report).
            callbacks: :class:`Callback` objects (:mod:`nnbackend.callbacks`,
                :mod:`nnbackend.schedules`), or functions ``(trainer, history)`` called after
                every epoch.

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
        epochs = _positive_int("epochs", epochs, allow_zero=True)  # type: ignore[assignment]
        batch_size = _positive_int("batch_size", batch_size)  # type: ignore[assignment]
        eval_interval = _positive_int("eval_interval", eval_interval, allow_none=True)
        if max_grad is not None and not float(max_grad) > 0.0:
            raise ValueError(f"max_grad must be > 0, got {max_grad!r}")
        if validation_data is not None:
            if validation is not None:
                raise ArgumentError("give validation or validation_data, not both")
            validation = validation_data
        loader = _as_loader(x, t, validation_split)
        if loader is not None:
            if loader.like is None and any(True for _ in self._parameters()):
                loader.like = self.model
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
        from nnbackend.metrics import get as get_metric

        train_metrics = [get_metric(m) for m in metrics]
        val_metrics = [copy.deepcopy(m) for m in train_metrics]
        n = int(x.shape[0]) if loader is None else loader.n
        steps_per_epoch = -(-n // batch_size) if loader is None else len(loader)
        hooks = _hooks(callbacks)
        on_step_end = hooks["on_step_end"]
        params = self._parameters() if max_grad is not None else []
        clip: Callable[[], Any] | None = None
        if max_grad is not None:
            from nnbackend.optim import clip_grad_norm

            max_norm = float(max_grad)
            clip = lambda: clip_grad_norm(params, max_norm)
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

        history = History(batch_size=batch_size, steps_per_epoch=steps_per_epoch)
        self.step = self.epoch = 0
        self.stop_training = False
        bar = _make_progress(progress, epochs * steps_per_epoch)
        interval, whole = _Sums(comm), _Sums(comm)
        count_correct: Any = False  # decided on the first batch
        per_row = 0
        loss_fn = self.loss_fn
        scaler = self._resolve_loss_scaler()
        guard = _InterruptGuard()
        self._step_scaler, self._clip, self._guard = scaler, clip, guard
        train_step = self.train_step
        take = xp.take
        previous_mode = self._set_mode(True)
        start = time.perf_counter()

        def report(extra: str = "", read: tuple[float, float | None] | None = None) -> None:
            if scaler is not None:
                scaler.check_scale()  # a device-side scale is read here, not every step
            loss, acc = interval.read() if read is None else read
            history.loss.append(loss)
            history.accuracy.append(acc)
            history.report_steps.append(self.step)
            interval.reset()
            bar.report(_metrics_text(loss, acc) + extra)
            for hook in hooks["on_report"]:
                hook(self, history)

        finished = False  # True unless an error other than Ctrl-C propagates
        try:
            with guard:
                for hook in hooks["on_fit_start"]:
                    hook(self, history)
                for epoch in range(epochs):
                    self.epoch = epoch
                    bar.describe(f"epoch {epoch + 1}/{epochs}")
                    perm = self._permutation(generator, n, x, xp) if generator else None
                    batches = iter(loader) if loader is not None else None
                    whole.reset()
                    for m in train_metrics:
                        m.reset()
                    for i in range(steps_per_epoch):
                        lo = i * batch_size
                        hi = min(lo + batch_size, n)
                        if batches is not None:
                            xb, tb = next(batches)
                            lo, hi = 0, int(xb.shape[0])
                            if world is not None:
                                lo, hi = self._rank_rows(lo, hi, rank, size)
                                xb, tb = xb[lo:hi, ...], tb[lo:hi, ...]
                        elif perm is not None:
                            if world is not None:  # this rank's rows of the global batch
                                lo, hi = self._rank_rows(lo, hi, rank, size)
                            idx = perm[lo:hi]
                            xb, tb = take(x, idx, axis=0), take(t, idx, axis=0)
                        else:
                            if world is not None:
                                lo, hi = self._rank_rows(lo, hi, rank, size)
                            xb, tb = x[lo:hi, ...], t[lo:hi, ...]
                        y, loss = train_step(xb, tb)
                        if guard.pending or guard.held is not None:
                            guard.release()
                        yd = _data(y)
                        if count_correct is False:
                            count_correct, per_row = _accuracy_counter(loss_fn, yd, tb)
                        correct = None if count_correct is None else count_correct(xp, yd, tb)
                        lv = _wide(xp, _data(loss))
                        for m in train_metrics:
                            m.update(yd, tb)
                        whole.add(lv, hi - lo, correct, (hi - lo) * per_row)
                        if eval_interval is not None:
                            interval.add(lv, hi - lo, correct, (hi - lo) * per_row)
                        bar.update()
                        for hook in on_step_end:
                            hook(self, history)
                        if eval_interval is not None and self.step % eval_interval == 0:
                            report()
                        if guard.requested or self.stop_training:
                            break
                    else:
                        # A completed epoch: its numbers, the validation, the hooks.
                        e_loss, e_acc = whole.read()
                        whole.reset()
                        history.epoch_loss.append(e_loss)
                        history.epoch_accuracy.append(e_acc)
                        extra = ""
                        for m in train_metrics:
                            history.metrics.setdefault(m.name, []).append(_metric_result(m, comm))
                        if validation is not None:
                            v_loss, v_acc = self.evaluate(
                                validation[0], validation[1], metrics=val_metrics
                            )
                            for m in val_metrics:
                                history.metrics.setdefault("val_" + m.name, []).append(m.result())
                            history.val_loss.append(v_loss)
                            history.val_accuracy.append(v_acc)
                            extra = " val_" + _metrics_text(v_loss, v_acc).replace(
                                " acc=", " val_acc="
                            )
                        if eval_interval is None:
                            report(extra, (e_loss, e_acc))
                        elif extra:
                            bar.report("epoch " + _metrics_text(e_loss, e_acc) + extra)
                        history.epochs = epoch + 1
                        history.epoch_time.append(time.perf_counter() - start)
                        for hook in hooks["on_epoch_end"]:
                            hook(self, history)
                        if not (guard.requested or self.stop_training):
                            continue
                    break  # stopped inside the epoch, or by an epoch-end hook
                if guard.requested:
                    history.interrupted = True
                elif self.stop_training:
                    history.stopped_early = True
            finished = True
        except KeyboardInterrupt:
            history.interrupted = finished = True
        finally:
            history.steps = self.step
            pending = interval if eval_interval is not None else whole
            if finished and pending:  # steps since the last report: a last, partial interval
                try:
                    report(read=pending.read())
                except KeyboardInterrupt:
                    history.interrupted = True
            history.wall_time = time.perf_counter() - start
            bar.close()
            self._restore_mode(previous_mode)
            self._clip, self._guard = None, _StepMark()
            self._share = 1.0 / size
        for hook in hooks["on_fit_end"]:
            hook(self, history)
        return history

    # -- evaluation --------------------------------------------------------------------------
    @_under_policy
    def evaluate(
        self, x: Any, t: Any, batch_size: int = 1024, *, metrics: Iterable[Any] = ()
    ) -> tuple[float, float | None]:
        """Mean loss and accuracy of the model on ``(x, t)`` in evaluation mode, without
        gradients, in batches of ``batch_size``. Accuracy is ``None`` where it means nothing
        (regression losses). Reads two numbers from the device, once.

        ``x`` and ``t`` may be NumPy arrays, lists or arrays of any backend: they are moved
        to the model's backend, device and dtype first. Each of ``metrics``
        (:class:`nnbackend.metrics.Metric` objects) is reset and fed every batch; read it
        with ``metric.result()``.
        """
        batch_size = _positive_int("batch_size", batch_size)  # type: ignore[assignment]
        metrics = list(metrics)
        for m in metrics:
            m.reset()
        x, t = self._on_model(x, t)
        xp, x, t = self._check_pair(x, t, "evaluate")
        n = int(x.shape[0])
        sums = _Sums()
        count_correct: Any = False
        per_row = 0
        previous = self._set_mode(False)
        try:
            with no_grad():
                for lo in range(0, n, batch_size):
                    hi = min(lo + batch_size, n)
                    xb, tb = x[lo:hi, ...], t[lo:hi, ...]
                    y = _data(self.model(xb))
                    loss = _data(self.loss_fn(y, tb))
                    if count_correct is False:
                        count_correct, per_row = _accuracy_counter(self.loss_fn, y, tb)
                    correct = None if count_correct is None else count_correct(xp, y, tb)
                    for m in metrics:
                        m.update(y, tb)
                    sums.add(_wide(xp, loss), hi - lo, correct, (hi - lo) * per_row)
        finally:
            self._restore_mode(previous)
        return sums.read()

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
            return _predict(self.model, x, batch_size)
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


def _predict(model: Any, x: Any, batch_size: int) -> Any:
    x = _data(x)
    xp = backend_for(x)[0]
    n = int(x.shape[0])
    if n == 0:
        raise ShapeError("predict: no inputs (x has 0 rows)")
    with no_grad():
        outputs = [
            _data(model(x[lo : min(lo + batch_size, n), ...])) for lo in range(0, n, batch_size)
        ]
    return outputs[0] if len(outputs) == 1 else xp.concat(outputs, axis=0)


# ---------------------------------------------------------------------------------------------
# Plots of 2-D classifiers
# ---------------------------------------------------------------------------------------------
def plot_decision_boundary(
    model: Any, x: Any, t: Any, path: str | Path, *, resolution: int = 200, title: str | None = None
) -> Path:
    """Colour the plane by the class ``model`` predicts and scatter the points ``(x, t)`` on
    top: the book's spiral figure. ``x`` has two features; ``t`` holds integer labels.

    Needs matplotlib (``pip install 'nnbackend[plot]'``). Returns the path written. In
    data-parallel training only rank 0 writes the file.
    """
    Figure = _require_matplotlib("plot_decision_boundary()")
    if not _writes_files():
        return Path(path)
    from nnbackend.backends import host

    np = host.numpy()
    x, t = _data(x), _data(t)
    record = backend_for(x)[1]
    if x.ndim != 2 or x.shape[1] != 2:
        raise ShapeError(f"plot_decision_boundary needs 2-D points, got shape {tuple(x.shape)}")
    hx = np.asarray(record.to_host(x), dtype=np.float64)
    ht = np.asarray(backend_for(t)[1].to_host(t))
    if ht.ndim == 2:
        ht = ht.argmax(axis=1)
    lo, hi = hx.min(axis=0) - 0.1, hx.max(axis=0) + 0.1
    gx, gy = np.meshgrid(
        np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution)
    )
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(str(x.dtype).rsplit(".", 1)[-1])
    grid_b = record.from_host(np.ascontiguousarray(grid), getattr(x, "device", None))
    previous = getattr(model, "training", None)
    if previous is not None:
        model.eval()
    try:
        scores = _predict(model, grid_b, 8192)
    finally:
        if previous is not None:
            model.train(previous)
    hs = np.asarray(backend_for(scores)[1].to_host(scores), dtype=np.float64)
    zone = hs.argmax(axis=1) if hs.ndim == 2 and hs.shape[1] > 1 else (hs.reshape(-1) > 0)
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.subplots()
    n_classes = int(max(ht.max(initial=0), zone.max(initial=0))) + 1
    ax.contourf(
        gx,
        gy,
        zone.reshape(gx.shape),
        levels=np.arange(n_classes + 1) - 0.5,
        cmap="Pastel1" if n_classes <= 9 else "tab20",
        alpha=0.8,
    )
    markers = "o^sDvP<>p*"
    for c in range(n_classes):
        pts = hx[ht == c]
        ax.scatter(
            pts[:, 0],
            pts[:, 1],
            s=18,
            marker=markers[c % len(markers)],
            label=f"class {c}",
            edgecolors="k",
            linewidths=0.3,
        )
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize="small")
    ax.set_title(title or "decision boundary")
    path = Path(path)
    fig.savefig(path, format="png", dpi=100)
    return path
