"""The customisation points of the training layer (issue #13, item 4): ``Trainer.train_step``
is the one place a step is defined, so a subclass that overrides it changes every step of
``fit`` (whatever way the batches come), and the accuracy ``fit``/``evaluate`` report is the
metric the loss declares (``default_metric``), not an ``isinstance`` check on the loss."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim, registry
from nnbackend.data import DataLoader
from nnbackend.errors import ArgumentError
from nnbackend.metrics import Accuracy, BinaryAccuracy, Metric, default_metric


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, nb.Tensor) else a
    return np.array(registry.get(registry.backend_of(a)).to_host(a), dtype=np.float64)


# -- train_step is the customisation point ---------------------------------------------------
class AccumulatingTrainer(nb.Trainer):
    """Gradient accumulation over two micro-batches of unequal size: the first ``n // 2`` rows,
    then the rest, each micro-batch's mean loss weighted 1/2, one optimizer step. Records the
    batches it was given (host copies)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[tuple[np.ndarray, np.ndarray]] = []

    def train_step(self, x: Any, t: Any) -> tuple[Any, Any]:
        self.batches.append((_host(x), _host(t)))
        xp = nb.array_namespace(x)
        half = int(x.shape[0]) // 2
        self.optimizer.zero_grad()
        outputs, total = [], None
        for lo, hi in ((0, half), (half, int(x.shape[0]))):
            y = self.model(x[lo:hi, ...])
            loss = self.loss_fn(y, t[lo:hi, ...]) * 0.5
            loss.backward()
            outputs.append(y.data)
            total = loss if total is None else total + loss
        self.optimizer.step()
        self.step += 1
        return xp.concat(outputs, axis=0), total


def _by_hand(w: np.ndarray, b: np.ndarray, batches: list[Any], lr: float) -> tuple[Any, Any]:
    """SGD on ``y = x @ w + b`` with the mean squared error, each step's gradient the mean of
    the two micro-batches' gradients (``d/dw mean((y - t)^2) = 2 x^T (y - t) / m``)."""
    for x, t in batches:
        half = x.shape[0] // 2
        gw, gb = np.zeros_like(w), np.zeros_like(b)
        for xs, ts in ((x[:half], t[:half]), (x[half:], t[half:])):
            r = xs @ w + b - ts
            gw += 0.5 * 2.0 * xs.T @ r / r.size
            gb += 0.5 * 2.0 * r.sum(axis=0) / r.size
        w, b = w - lr * gw, b - lr * gb
    return w, b


@pytest.mark.parametrize("path", ["shuffled", "in_order", "loader", "max_grad"])
def test_fit_calls_an_overridden_train_step_on_every_path(path: str) -> None:
    with nb.using(backend="numpy", dtype="float64"):
        nb.random.seed(3)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(7, 2))
        t = x @ np.array([[1.5], [-2.0]]) + 0.3 + 0.1 * rng.normal(size=(7, 1))
        model = nn.Linear(2, 1)
        w0, b0 = _host(model.weight), _host(model.bias)
        lr = 0.1
        trainer = AccumulatingTrainer(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=lr))
        kwargs: dict[str, Any] = {"epochs": 2, "progress": False}
        if path == "loader":
            history = trainer.fit(DataLoader(x, t, batch_size=4, shuffle=False), **kwargs)
        else:
            history = trainer.fit(
                x,
                t,
                batch_size=4,
                shuffle=path != "in_order",
                seed=5,
                max_grad=1e9 if path == "max_grad" else None,
                **kwargs,
            )
    # 7 rows in batches of 4: steps of 4 and 3 rows per epoch, each one train_step call.
    assert history.steps == 4 == len(trainer.batches)
    assert [len(bx) for bx, _ in trainer.batches] == [4, 3] * 2
    for epoch in range(2):  # every row once per epoch, in whatever order
        seen = np.concatenate([bx for bx, _ in trainer.batches[2 * epoch : 2 * epoch + 2]])
        assert sorted(map(tuple, seen)) == sorted(map(tuple, x))
    if path == "in_order":
        np.testing.assert_array_equal(trainer.batches[0][0], x[:4])
    w, b = _by_hand(w0, b0, trainer.batches, lr)
    np.testing.assert_allclose(_host(model.weight), w, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(_host(model.bias), b, rtol=1e-12, atol=1e-14)


def test_accumulated_step_differs_from_the_plain_step() -> None:
    """The hand computation above tells the override from the base step: on a batch of 3
    rows, two micro-batches of 1 and 2 rows weighted equally are not the batch's mean."""
    rng = np.random.default_rng(1)
    x, t = rng.normal(size=(3, 2)), rng.normal(size=(3, 1))
    w, b = rng.normal(size=(2, 1)), rng.normal(size=(1,))
    r = x @ w + b - t
    plain = w - 0.1 * (2.0 * x.T @ r / 3)
    assert not np.allclose(_by_hand(w, b, [(x, t)], 0.1)[0], plain)


# -- the loss declares the metric ------------------------------------------------------------
class WithinHalf(Metric):
    """The fraction of outputs within 0.5 of their target."""

    name = "within_half"

    def batch(self, y: Any, t: Any) -> tuple[Any, int]:
        xp = nb.array_namespace(y)
        return xp.count_nonzero(xp.abs(y - t) < 0.5), int(np.prod(tuple(y.shape)))


class TolerantMSE(nn.MSELoss):
    """A regression loss of the user's, declaring its own metric."""

    default_metric = WithinHalf()


class SquaredError(nn.Module):
    """A user loss with no ``default_metric`` at all."""

    def forward(self, y: Any, t: Any) -> Any:
        return ((y - t) * (y - t)).mean()


def _fixed_linear(w: np.ndarray) -> nn.Module:
    model = nn.Linear(w.shape[0], w.shape[1], bias=False)
    model.weight.data = nb.namespace().asarray(w)
    return model


def test_a_user_loss_declares_its_metric_and_the_trainer_reports_it() -> None:
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0], [0.5, 0.5]])
    t = np.array([[0.2], [3.0], [1.2], [0.0], [0.9]])
    w = np.array([[0.5], [0.5]])  # outputs 0.5, 0.5, 1.0, 0.5, 0.5
    within = np.abs(x @ w - t) < 0.5  # True, False, True, False, True
    with nb.using(backend="numpy", dtype="float64"):
        model = _fixed_linear(w)
        trainer = nb.Trainer(model, TolerantMSE(), optim.SGD(model.parameters(), lr=0.0))
        history = trainer.fit(
            x, t, epochs=1, batch_size=2, shuffle=False, validation=(x[:2], t[:2]), progress=False
        )
        loss, acc = trainer.evaluate(x, t, batch_size=3)
    assert history.epoch_accuracy == [pytest.approx(within.mean())] == history.accuracy
    assert history.val_accuracy == [pytest.approx(within[:2].mean())]
    assert acc == pytest.approx(3 / 5) == within.mean()
    assert loss == pytest.approx(float(np.mean((x @ w - t) ** 2)))


def test_a_loss_declaring_no_metric_gets_no_accuracy_even_for_class_scores() -> None:
    class Quiet(nn.SoftmaxCrossEntropy):
        default_metric = None

    x, t = np.eye(3), np.array([0, 1, 2])
    with nb.using(backend="numpy", dtype="float64"):
        model = _fixed_linear(np.eye(3))
        for loss_fn, expected in ((nn.SoftmaxCrossEntropy(), 1.0), (Quiet(), None)):
            trainer = nb.Trainer(model, loss_fn, optim.SGD(model.parameters(), lr=0.0))
            history = trainer.fit(x, t, epochs=1, progress=False)
            assert history.epoch_accuracy == [expected]
            assert trainer.evaluate(x, t)[1] == expected


def test_a_loss_without_a_declaration_gets_accuracy() -> None:
    assert isinstance(default_metric(SquaredError()), Accuracy)
    x, t = np.eye(3), np.eye(3)[[0, 1, 1]]  # one-hot targets; the third row is wrong
    with nb.using(backend="numpy", dtype="float64"):
        model = _fixed_linear(np.eye(3))
        trainer = nb.Trainer(model, SquaredError(), optim.SGD(model.parameters(), lr=0.0))
        assert trainer.fit(x, t, progress=False).epoch_accuracy == [pytest.approx(2 / 3)]


def test_the_built_in_losses_declare_their_metrics() -> None:
    assert isinstance(default_metric(nn.SoftmaxCrossEntropy()), Accuracy)
    assert isinstance(default_metric(nn.SigmoidCrossEntropy()), BinaryAccuracy)
    assert default_metric(nn.MSELoss()) is None


def test_a_declaration_may_be_a_name_a_method_or_a_class_and_nothing_else() -> None:
    class Named(SquaredError):
        default_metric = "mae"

    class Method(SquaredError):
        def default_metric(self) -> Metric:
            return WithinHalf()

    class Klass(SquaredError):
        default_metric = WithinHalf

    class Wrong(SquaredError):
        default_metric = 3

    assert default_metric(Named()).name == "mae"
    assert isinstance(default_metric(Method()), WithinHalf)
    assert isinstance(default_metric(Klass()), WithinHalf)
    with pytest.raises(ArgumentError, match=r"Wrong\.default_metric"):
        default_metric(Wrong())
