"""What :meth:`nnbackend.Trainer.fit` measured: the :class:`History` of losses, accuracies,
metrics and timings, as Python numbers, and its plot."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["History"]


@dataclass
class History:
    """What :meth:`Trainer.fit` measured. All values are Python numbers.

    Per report (once per epoch, or every ``eval_interval`` steps; plus one for the steps
    after the last report, when training ends between reports or stops early):

    Attributes:
        loss: mean training loss over the interval.
        accuracy: training accuracy over the interval: the value of the loss's default
            metric (see :class:`~nnbackend.train.Trainer`), ``None`` where the loss has none
            (regression losses) or it does not fit the outputs' shapes.
        report_steps: the global step count at each report.

    Per completed epoch:

    Attributes:
        epoch_loss: mean training loss over the epoch.
        epoch_accuracy: training accuracy over the epoch (``None`` as for ``accuracy``).
        val_loss: loss on the ``validation`` set, when one was given.
        val_accuracy: accuracy on the ``validation`` set, when one was given.
        epoch_time: seconds since the start of ``fit`` at the end of each epoch.

    Overall:

    Attributes:
        epochs: completed epochs (in this ``fit``).
        initial_epoch: the epochs a resumed run had completed before this ``fit`` (its
            ``initial_epoch``), so this fit's epochs are ``initial_epoch + 1`` to
            ``initial_epoch + epochs``, counted from 1 as ``ModelCheckpoint`` names them.
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
    initial_epoch: int = 0
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
            "initial_epoch": self.initial_epoch,
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
        from nnbackend.train.plots import plot_history

        return plot_history(self, path, title=title)
