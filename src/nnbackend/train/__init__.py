"""Training: :class:`Trainer` fits a model with a progress bar and returns a :class:`History`
of the losses and accuracies; :class:`Callback` hooks into the loop;
:func:`plot_decision_boundary` draws a 2-D classifier.

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

One job per module:

- :mod:`~nnbackend.train.trainer`: :class:`Trainer`, the loop; ``Trainer.train_step`` is the
  one place a step is defined (override it to change one);
- :mod:`~nnbackend.train.history`: :class:`History`, what ``fit`` measured;
- :mod:`~nnbackend.train.callbacks`: the :class:`Callback` base, the hook dispatch, early
  stopping and checkpoints (public path :mod:`nnbackend.callbacks`);
- :mod:`~nnbackend.train.metrics`: metrics as objects, and the default metric each loss
  declares (public path :mod:`nnbackend.metrics`);
- :mod:`~nnbackend.train.progress`: the progress bars; :mod:`~nnbackend.train.interrupt`: the
  Ctrl-C guard; :mod:`~nnbackend.train.plots`: the plots (matplotlib).
"""

from __future__ import annotations

from nnbackend.train.callbacks import Callback
from nnbackend.train.history import History
from nnbackend.train.plots import plot_decision_boundary
from nnbackend.train.trainer import Trainer

__all__ = ["Callback", "History", "Trainer", "plot_decision_boundary"]
