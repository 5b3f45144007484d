"""Metrics as objects: accumulated on the device batch by batch, read back only by
:meth:`Metric.result` (once per epoch in :meth:`nnbackend.Trainer.fit`).

The public path is :mod:`nnbackend.metrics`, which re-exports this module's names.

Each metric keeps a device-side sum (a 0-d array) and a host-side count; ``update`` never
converts an array to a Python number, so a metric adds no device synchronisation to a step.
Give metrics to ``Trainer.fit(metrics=[...])`` (their per-epoch values land in
``history.metrics[name]`` and ``history.metrics["val_" + name]``) or
``Trainer.evaluate(metrics=[...])``, or use them by hand.

>>> import nnbackend as nb
>>> from nnbackend.metrics import TopKAccuracy
>>> xp = nb.namespace()
>>> top2 = TopKAccuracy(2)
>>> top2.update(xp.asarray([[0.1, 0.5, 0.4], [0.8, 0.15, 0.05]]), xp.asarray([2, 1]))
>>> top2.result()
1.0

A metric of your own is a function ``fn(y, t)`` returning the batch's mean as a 0-d array:

>>> from nnbackend.metrics import Mean
>>> max_logit = Mean("max_logit", lambda y, t: nb.array_namespace(y).mean(
...     nb.array_namespace(y).max(y, axis=1)))

The training accuracy that ``fit`` reports (``history.accuracy``) is a metric too: the one the
loss declares in its ``default_metric`` attribute (a metric's name, a :class:`Metric`, or
``None`` for none): :class:`Accuracy` for softmax cross-entropy, :class:`BinaryAccuracy` for
sigmoid cross-entropy, none for MSE. A loss of your own declares its own; one that declares
nothing gets :class:`Accuracy` (see :func:`default_metric`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from nnbackend.errors import ArgumentError, ShapeError
from nnbackend.namespace import backend_for
from nnbackend.train._arrays import data as _data
from nnbackend.train._arrays import wide as _wide

__all__ = [
    "Accuracy",
    "BinaryAccuracy",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "Mean",
    "Metric",
    "Perplexity",
    "TopKAccuracy",
    "default_metric",
    "get",
]


def _labels(xp: Any, y: Any, t: Any) -> Any:
    """Integer labels from ``t``: as given (one per row of ``y``: the outputs' shape without
    its last axis), or the argmax of one-hot rows. Labels of another shape are an error:
    (N, 1) labels against (N, C) outputs broadcast to an (N, N) comparison, and reported
    1.0 where the accuracy was 0.25."""
    if t.ndim == y.ndim and tuple(t.shape) == tuple(y.shape):
        return xp.argmax(t, axis=-1)
    if not xp.isdtype(t.dtype, "integral"):
        raise ShapeError(
            f"targets of shape {tuple(t.shape)} and dtype {t.dtype} are neither integer labels "
            f"nor one-hot rows of the outputs' shape {tuple(y.shape)}"
        )
    if tuple(t.shape) != tuple(y.shape[:-1]):
        raise ShapeError(
            f"integer labels of shape {tuple(t.shape)} do not fit outputs of shape "
            f"{tuple(y.shape)}: expected one label per row, shape {tuple(y.shape[:-1])}"
        )
    return t


def _same_shape(name: str, y: Any, t: Any) -> None:
    """A metric over every element compares ``y`` and ``t`` element by element: of one
    shape, never broadcast ((N, 1) outputs against (N,) targets gave an (N, N) mean)."""
    if tuple(t.shape) != tuple(y.shape):
        raise ShapeError(
            f"{name}: outputs of shape {tuple(y.shape)} and targets of shape {tuple(t.shape)} "
            "differ; reshape the targets to the outputs' shape"
        )


class Metric:
    """Base class: :meth:`update` adds a batch (on the device), :meth:`result` reads the
    value (the only host read), :meth:`reset` starts over.

    Subclasses define :meth:`batch`, returning ``(sum over the batch as a 0-d array, count)``;
    ``result`` is ``sum / count`` passed through :meth:`finish`.

    Attributes:
        name: the key in ``history.metrics``.
    """

    name = "metric"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every batch."""
        self.total: Any = None
        self.count = 0

    def batch(self, y: Any, t: Any) -> tuple[Any, int]:
        """``(sum of the batch's values as a 0-d device array, number of values)``."""
        raise NotImplementedError(f"{type(self).__name__} must define batch()")

    def applies_to(self, y: Any, t: Any) -> bool:
        """Whether the metric means something for outputs ``y`` and targets ``t`` of these
        shapes and dtypes. ``fit`` and ``evaluate`` ask the loss's default metric once, on the
        first batch, and report no accuracy where it answers False. True here."""
        return True

    def update(self, y: Any, t: Any) -> None:
        """Add the batch of outputs ``y`` and targets ``t`` (arrays or Tensors)."""
        value, n = self.batch(_data(y), _data(t))
        self.total = value if self.total is None else self.total + value
        self.count += n

    def finish(self, mean: float) -> float:
        """Turn the mean over all values into the reported number (identity here)."""
        return mean

    def result(self) -> float:
        """The metric over every batch since :meth:`reset` (``nan`` before any)."""
        if self.total is None or not self.count:
            return math.nan
        return self.finish(float(self.total) / self.count)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Accuracy(Metric):
    """The fraction of rows whose argmax equals the label (labels or one-hot targets)."""

    name = "accuracy"

    def batch(self, y: Any, t: Any) -> tuple[Any, int]:
        xp = backend_for(y)[0]
        labels = _labels(xp, y, t)
        count = math.prod(int(d) for d in labels.shape)  # every position of a sequence
        return xp.count_nonzero(xp.argmax(y, axis=-1) == labels), count

    def applies_to(self, y: Any, t: Any) -> bool:
        """Outputs ``(N, classes)`` with two classes or more, and integer labels ``(N,)`` or
        one-hot rows of the outputs' shape."""
        if y.ndim != 2 or y.shape[1] < 2:
            return False
        xp = backend_for(y)[0]
        if t.ndim == 1 and xp.isdtype(t.dtype, "integral"):
            return True
        return tuple(t.shape) == tuple(y.shape)


class BinaryAccuracy(Metric):
    """The fraction of outputs on the right side of one half, over every element: an output
    is a logit, predicting 1 where it is above 0 (a sigmoid probability above 0.5), and the
    targets are probabilities, meaning 1 above 0.5. The default metric of
    :class:`nnbackend.nn.SigmoidCrossEntropy`.

    >>> import nnbackend as nb
    >>> xp = nb.namespace()
    >>> acc = BinaryAccuracy()
    >>> acc.update(xp.asarray([[2.0, -1.0], [0.5, 3.0]]), xp.asarray([[1.0, 0.0], [0.0, 0.9]]))
    >>> acc.result()
    0.75
    """

    name = "binary_accuracy"

    def batch(self, y: Any, t: Any) -> tuple[Any, int]:
        xp = backend_for(y)[0]
        _same_shape(self.name, y, t)
        return xp.count_nonzero((y > 0) == (t > 0.5)), math.prod(int(d) for d in t.shape)

    def applies_to(self, y: Any, t: Any) -> bool:
        """Targets of the outputs' shape (one probability per output)."""
        return tuple(t.shape) == tuple(y.shape)


class TopKAccuracy(Metric):
    """The fraction of rows whose label is among the ``k`` largest outputs: a row counts
    when fewer than ``k`` outputs are strictly above the label's (ties go to the label).

    As Keras's ``in_top_k``: a row with a NaN output, or whose label is outside
    ``[0, classes)``, never counts (a diverged model's rows of NaN score 0, not 1).
    """

    def __init__(self, k: int = 5, name: str | None = None) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ArgumentError(f"k must be an int >= 1, got {k!r}")
        self.k = k
        self.name = name or f"top{k}"
        super().__init__()

    def batch(self, y: Any, t: Any) -> tuple[Any, int]:
        xp = backend_for(y)[0]
        if y.ndim != 2:
            raise ShapeError(f"{self.name}: outputs need shape (N, classes), got {tuple(y.shape)}")
        labels = _labels(xp, y, t)
        hot = xp.reshape(labels, (-1, 1)) == xp.arange(y.shape[1], device=labels.device)
        score = xp.sum(xp.where(hot, y, xp.zeros_like(y)), axis=1, keepdims=True)
        above = xp.sum(xp.astype(y > score, xp.int64), axis=1)
        # A NaN output, or a label that matches no class (its score 0 was made up), makes
        # the row wrong: "nothing above" means nothing where comparisons are all False.
        known = xp.any(hot, axis=1) & ~xp.any(xp.isnan(y), axis=1)
        return xp.count_nonzero((above < self.k) & known), int(labels.shape[0])


class Perplexity(Metric):
    """``exp`` of the mean cross-entropy of softmax outputs (``y`` are logits) against
    integer labels, over every predicted position: the language-model measure."""

    name = "perplexity"

    def batch(self, y: Any, t: Any) -> tuple[Any, int]:
        xp = backend_for(y)[0]
        if not xp.isdtype(t.dtype, "integral"):
            raise ShapeError(f"perplexity needs integer labels, got dtype {t.dtype}")
        rows = tuple(y.shape[:-1])
        if tuple(t.shape) not in (rows, (*rows, 1)):
            raise ShapeError(
                f"perplexity: integer labels of shape {tuple(t.shape)} do not fit outputs of "
                f"shape {tuple(y.shape)}: expected one label per position, shape {rows}"
            )
        y = _wide(xp, y)
        classes = y.shape[-1]
        y = xp.reshape(y, (-1, classes))
        labels = xp.reshape(t, (-1, 1))
        m = xp.max(y, axis=1, keepdims=True)
        lse = m + xp.log(xp.sum(xp.exp(y - m), axis=1, keepdims=True))
        hot = labels == xp.arange(classes, device=labels.device)
        picked = xp.sum(xp.where(hot, y, xp.zeros_like(y)), axis=1, keepdims=True)
        # A label outside [0, classes) picks no logit: NaN, as the loss gives on a device
        # (checking it here would read the labels back every step), not a made-up 0.
        picked = xp.where(
            xp.any(hot, axis=1, keepdims=True), picked, xp.full_like(picked, math.nan)
        )
        return xp.sum(lse - picked), int(y.shape[0])

    def finish(self, mean: float) -> float:
        try:
            return math.exp(mean)
        except OverflowError:  # a mean cross-entropy above ~709: exp is inf, as in PyTorch
            return math.inf


class MeanSquaredError(Metric):
    """The mean of ``(y - t) ** 2`` over every element."""

    name = "mse"

    def batch(self, y: Any, t: Any) -> tuple[Any, int]:
        xp = backend_for(y)[0]
        _same_shape(self.name, y, t)
        d = _wide(xp, y) - _wide(xp, t)
        return xp.sum(d * d), math.prod(int(s) for s in y.shape)


class MeanAbsoluteError(Metric):
    """The mean of ``|y - t|`` over every element."""

    name = "mae"

    def batch(self, y: Any, t: Any) -> tuple[Any, int]:
        xp = backend_for(y)[0]
        _same_shape(self.name, y, t)
        return xp.sum(xp.abs(_wide(xp, y) - _wide(xp, t))), math.prod(int(s) for s in y.shape)


class Mean(Metric):
    """A metric of your own: ``fn(y, t)`` returns the batch's mean as a 0-d array (kept on
    the device); the result is the mean over batches weighted by their rows."""

    def __init__(self, name: str, fn: Callable[[Any, Any], Any]) -> None:
        if not callable(fn):
            raise ArgumentError(f"fn must be callable (y, t) -> 0-d array, got {fn!r}")
        self.name = str(name)
        self.fn = fn
        super().__init__()

    def batch(self, y: Any, t: Any) -> tuple[Any, int]:
        n = int(y.shape[0]) if y.ndim else 1
        value = _data(self.fn(y, t))
        xp = backend_for(value)[0]
        if value.ndim:
            # A whole array summed into the total made result() fail at the end of the epoch.
            if math.prod(int(d) for d in value.shape) != 1:
                raise ShapeError(
                    f"metric {self.name!r}: its function returned an array of shape "
                    f"{tuple(value.shape)}; it must return the batch's mean as a 0-d array "
                    "(take xp.mean(...) of the per-row values)"
                )
            value = xp.reshape(value, ())
        return _wide(xp, value) * float(n), n


_BY_NAME: dict[str, Callable[[], Metric]] = {
    "accuracy": Accuracy,
    "binary_accuracy": BinaryAccuracy,
    "top5": lambda: TopKAccuracy(5),
    "perplexity": Perplexity,
    "mse": MeanSquaredError,
    "mae": MeanAbsoluteError,
}


def get(metric: Metric | str) -> Metric:
    """A :class:`Metric` from itself or a name: "accuracy", "binary_accuracy", "top5" (any
    "top<k>"), "perplexity", "mse", "mae"."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        digits = metric[3:]
        # ASCII digits only: str.isdigit() is also true of "²", which int() refuses. The
        # metric keeps the name asked for ("top05"), the key its values get in history.
        if metric.startswith("top") and digits.isascii() and digits.isdigit():
            return TopKAccuracy(int(digits), name=metric)
        if metric in _BY_NAME:
            return _BY_NAME[metric]()
    raise ArgumentError(
        f"unknown metric {metric!r}: give a nnbackend.metrics.Metric or one of "
        f"{sorted(_BY_NAME)} (or 'top<k>')"
    )


_UNDECLARED = object()


def default_metric(loss_fn: Any) -> Metric | None:
    """The metric ``fit`` and ``evaluate`` report as the accuracy for the loss ``loss_fn``:
    what the loss declares in its ``default_metric`` attribute, or :class:`Accuracy` for a
    loss that declares nothing.

    The attribute (a class attribute, or a method taking no arguments that returns one of
    these) is a metric's name (``"accuracy"``, ``"binary_accuracy"``, see :func:`get`), a
    :class:`Metric` object or class, or ``None`` for no accuracy (regression losses).

    >>> import nnbackend as nb
    >>> default_metric(nb.nn.SoftmaxCrossEntropy())
    Accuracy(name='accuracy')
    >>> default_metric(nb.nn.MSELoss()) is None
    True

    Raises:
        ArgumentError: the declaration is none of these (the message names the loss).
    """
    choice: Any = getattr(loss_fn, "default_metric", _UNDECLARED)  # checked by get() below
    if choice is _UNDECLARED:
        return Accuracy()
    if callable(choice) and not isinstance(choice, Metric):
        choice = choice()  # a method, or a Metric class
    if choice is None:
        return None
    try:
        return get(choice)
    except ArgumentError:
        raise ArgumentError(
            f"{type(loss_fn).__name__}.default_metric must be a metric's name, a "
            f"nnbackend.metrics.Metric or None, got {choice!r}"
        ) from None


class MetricSums:
    """Device-side running sums of the loss (times the batch size) and of the loss's default
    metric (``correct``, counted over ``predictions``: for accuracy, the correct predictions),
    read to the host only by :meth:`read`: what ``fit`` and ``evaluate`` report. With a
    communicator ``comm`` (data-parallel training), :meth:`read` sums them over all ranks
    first."""

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
            acc = float(self.correct) / self.predictions
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


def metric_result(metric: Any, comm: Any) -> float:
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
