"""What one epoch of ``Trainer.fit`` computes, checked against a hand computation on a tiny
data set: the epoch loss weights each batch by its rows (the last, partial one too), the
accuracy counts every prediction of a row, sigmoid outputs are thresholded as probabilities,
every epoch draws a new permutation from the seeded generator, and a second Ctrl-C aborts
the step in progress (issue #21).

The weights are held fixed (``lr=0``) so each epoch's numbers are a function of the data and
the order alone, computed here in float64 NumPy.
"""

from __future__ import annotations

import signal
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim, registry
from nnbackend.autograd.tensor import Tensor


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, Tensor) else a
    return np.array(registry.get(registry.backend_of(a)).to_host(a), copy=True)


class _Recorder(nn.Module):
    """``x @ W`` that records the first column of every batch it sees (the row ids)."""

    def __init__(self, w: Any) -> None:
        super().__init__()
        self.inner = nn.MatMul(w)
        self.seen: list[list[int]] = []

    def forward(self, x: Any) -> Any:
        self.seen.append([int(v) for v in _host(x)[:, 0]])
        return self.inner(x)


W = np.array([[0.0, 0.0, 0.0], [1.0, -1.0, 0.5], [-0.5, 2.0, 1.0]])
# Column 0 is the row id (its weights are 0: it does not change the output).
X = np.array([[0, 1.0, 0.0], [1, 0.0, 1.0], [2, 2.0, 1.0], [3, -1.0, 0.5], [4, 0.3, -2.0]])


def _trainer(xp: Any, loss: Any) -> tuple[_Recorder, nb.Trainer]:
    model = _Recorder(xp.asarray(W))
    return model, nb.Trainer(model, loss, optim.SGD(model.parameters(), lr=0.0))


def test_mse_epoch_loss_weights_the_partial_batch_by_its_rows(xp64: Any) -> None:
    """kills: the last partial batch weighted as a full one in the epoch loss."""
    t = np.arange(15.0).reshape(5, 3) / 7.0
    _, trainer = _trainer(xp64, nn.MSELoss())
    history = trainer.fit(
        xp64.asarray(X), xp64.asarray(t), epochs=2, batch_size=2, shuffle=False, progress=False
    )
    y = X @ W
    per_row = ((y - t) ** 2).mean(axis=1)  # batches (2, 2, 1): the mean over rows is exact
    want = per_row.mean()
    batch_means = [per_row[0:2].mean(), per_row[2:4].mean(), per_row[4:5].mean()]
    wrong = (2 * batch_means[0] + 2 * batch_means[1] + 2 * batch_means[2]) / 6
    assert abs(want - wrong) > 1e-3  # the data tell the two apart
    assert history.epoch_loss == pytest.approx([want, want], rel=1e-12)
    assert history.epoch_accuracy == [None, None]


def test_softmax_epoch_accuracy_and_loss_by_hand(xp64: Any) -> None:
    labels = np.array([1, 0, 2, 1, 2])
    _, trainer = _trainer(xp64, nn.SoftmaxCrossEntropy())
    history = trainer.fit(
        xp64.asarray(X), xp64.asarray(labels), epochs=1, batch_size=3, shuffle=False,
        progress=False,
    )  # fmt: skip
    y = X @ W
    logp = y - y.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    want_loss = -logp[np.arange(5), labels].mean()
    want_acc = float((y.argmax(1) == labels).mean())
    assert history.epoch_loss == pytest.approx([want_loss], rel=1e-12)
    assert history.epoch_accuracy == [want_acc]
    assert 0.0 < want_acc < 1.0


def test_sigmoid_accuracy_counts_every_output_and_thresholds_probabilities(xp64: Any) -> None:
    """kills: epoch accuracy ignoring per-row weights (a row of 3 outputs counted as one
    prediction) and sigmoid-loss accuracy thresholding logits at 0.5 instead of at
    probability 0.5 (logit 0)."""
    targets = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1], [0, 0, 0], [1, 0, 1]], dtype=np.float64)
    _, trainer = _trainer(xp64, nn.SigmoidCrossEntropy())
    history = trainer.fit(
        xp64.asarray(X), xp64.asarray(targets), epochs=1, batch_size=2, shuffle=False,
        progress=False,
    )  # fmt: skip
    y = X @ W
    correct = ((y > 0) == (targets > 0.5)).sum()
    want_acc = correct / targets.size
    # The data separate the right threshold from the wrong one.
    assert ((y > 0.5) == (targets > 0.5)).sum() != correct
    assert np.any((y > 0) & (y <= 0.5))
    want_loss = (np.maximum(y, 0) - y * targets + np.log1p(np.exp(-np.abs(y)))).mean()
    assert history.epoch_accuracy == [pytest.approx(want_acc, rel=1e-15)]
    assert history.epoch_loss == pytest.approx([want_loss], rel=1e-12)


def _orders(model: _Recorder, batch_size: int, epochs: int) -> list[list[int]]:
    steps = -(-5 // batch_size)
    return [
        [i for batch in model.seen[e * steps : (e + 1) * steps] for i in batch]
        for e in range(epochs)
    ]


def test_each_epoch_draws_a_new_permutation_reproducible_with_a_seed(xp64: Any) -> None:
    """kills: the same shuffle every epoch (the generator reseeded per epoch)."""
    t = np.zeros((5, 3))
    runs = []
    for seed in (3, 3, 4):
        model, trainer = _trainer(xp64, nn.MSELoss())
        trainer.fit(
            xp64.asarray(X), xp64.asarray(t), epochs=4, batch_size=2, seed=seed, progress=False
        )
        runs.append(_orders(model, 2, 4))
    first, again, other = runs
    assert first == again  # the seed reproduces every epoch's order
    assert first != other
    for order in first:
        assert sorted(order) == [0, 1, 2, 3, 4]  # each epoch sees every row once
    assert len({tuple(order) for order in first}) > 1  # not the same order every epoch
    # By hand: the orders are successive permutations of nnbackend.random.Generator(seed).
    gen = nb.random.Generator(3)
    want = [[int(i) for i in _host(gen.permutation(5))] for _ in range(4)]
    assert first == want


def test_a_second_ctrl_c_aborts_the_step_in_progress(xp64: Any) -> None:
    """kills: a second Ctrl-C not aborting (it would only ask again to stop after the step).
    The two signals arrive in the forward pass of step 3: the step is abandoned, so only two
    steps ran and the history says interrupted."""
    before = signal.getsignal(signal.SIGINT)

    class CtrlCTwice(nn.Module):
        def __init__(self, w: Any) -> None:
            super().__init__()
            self.inner = nn.MatMul(w)
            self.calls = 0
            self.after = 0

        def forward(self, x: Any) -> Any:
            self.calls += 1
            if self.calls == 3:
                signal.raise_signal(signal.SIGINT)  # first: stop after this step
                signal.raise_signal(signal.SIGINT)  # second: stop now
                self.after += 1  # never reached when the second one aborts
            return self.inner(x)

    model = CtrlCTwice(xp64.asarray(W))
    trainer = nb.Trainer(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.1))
    history = trainer.fit(
        xp64.asarray(X), xp64.asarray(np.zeros((5, 3))), epochs=3, batch_size=1,
        shuffle=False, progress=False,
    )  # fmt: skip
    assert history.interrupted
    assert model.after == 0
    assert history.steps == 2
    assert signal.getsignal(signal.SIGINT) is before
