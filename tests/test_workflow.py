"""The training workflow with a user's own data (issue 17): NumPy data onto the model's
backend, callbacks (early stopping, best checkpoints), learning-rate schedules (against
torch.optim.lr_scheduler) and metric objects (against NumPy references)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nnbackend as nb
from nnbackend import datasets, metrics, nn, optim, registry
from nnbackend.callbacks import EarlyStopping, ModelCheckpoint
from nnbackend.errors import ArgumentError, BackendMismatchError
from nnbackend.namespace import backend_for
from nnbackend.schedules import CosineAnnealing, ExponentialLR, ReduceLROnPlateau, StepLR


def to_host(x: Any) -> np.ndarray:
    data = x.data if isinstance(x, nb.Tensor) else x
    return np.asarray(backend_for(data)[1].to_host(data))


def user_data(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """What a user loads from disk: float64 features and int32 labels, as NumPy arrays."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    t = (x[:, 0] + x[:, 1] > 0).astype(np.int32) + (x[:, 2] > 1.0).astype(np.int32)
    return x, t


def small_model(hidden: int = 8, classes: int = 3) -> nn.Module:
    return nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, classes))


# -- data onto the backend --------------------------------------------------------------------
def test_fit_evaluate_predict_take_float64_numpy_data(backend: str, dtype: str) -> None:
    x, t = user_data()
    with nb.using(backend=backend, dtype=dtype):
        nb.random.seed(0)
        model = small_model()
        opt = optim.SGD(model.parameters(), lr=0.1)
        trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), opt)
        history = trainer.fit(
            x, t, epochs=2, batch_size=32, validation_data=(x[:20], t[:20].tolist())
        )
        loss, acc = trainer.evaluate(x, list(t))
        y = trainer.predict(x[:5])
    assert history.epochs == 2 and math.isfinite(history.epoch_loss[-1])
    assert math.isfinite(loss) and acc is not None and 0.0 <= acc <= 1.0
    weight = model[0].weight.data
    assert backend_for(y)[1].name == backend
    assert y.dtype == weight.dtype and str(weight.dtype).endswith(dtype)
    assert tuple(y.shape) == (5, 3)


def test_to_backend_follows_the_model(backend: str, dtype: str) -> None:
    x, t = user_data(10)
    with nb.using(backend=backend, dtype=dtype):
        model = small_model()
    xp = backend_for(model[0].weight.data)[0]
    xb = nb.to_backend(x, like=model)
    tb = nb.to_backend(t, like=model)
    assert backend_for(xb)[1].name == backend and xb.dtype == model[0].weight.dtype
    assert backend_for(tb)[1].name == backend and tb.dtype == xp.int64
    np.testing.assert_array_equal(to_host(tb), t)
    np.testing.assert_allclose(
        to_host(xb).astype(np.float64), x.astype(dtype).astype(np.float64), rtol=0, atol=0
    )
    assert nb.to_backend(xb, like=model) is xb  # already there: no copy
    # From another backend's array (through the host) and from a Tensor.
    other = "numpy" if backend != "numpy" else "array_api_strict"
    with nb.using(backend=other, dtype="float64"):
        xo = nb.to_backend(x)
    moved = nb.to_backend(nb.Tensor(xo), like=model)
    assert backend_for(moved)[1].name == backend and moved.dtype == xb.dtype


def test_fit_moves_the_data_once_not_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    x, t = user_data(96)
    calls: list[Any] = []
    real = datasets.to_backend

    def counting(values: Any, *args: Any, **kwargs: Any) -> Any:
        out = real(values, *args, **kwargs)
        if out is not values:  # a conversion (a copy); data already in place comes back as is
            calls.append(values)
        return out

    monkeypatch.setattr(datasets, "to_backend", counting)
    with nb.using(dtype="float32"):  # float64 inputs and int32 labels both need converting
        model = small_model()
    trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1))
    trainer.fit(x, t, epochs=3, batch_size=8, validation_split=0.25, progress=False)
    assert len(calls) == 2  # x and t, before the 36 steps; the split is a slice of them


def test_namespace_asarray_takes_the_default_dtype_name(backend: str, dtype: str) -> None:
    with nb.using(backend=backend, dtype=dtype):
        xp = nb.namespace()
        a = xp.asarray(np.ones((2, 3)), dtype=nb.get_default_dtype())
        z = xp.zeros((2,), dtype="int64")
        assert a.dtype == getattr(xp, dtype) and z.dtype == xp.int64
        with pytest.raises(nb.errors.DtypeError, match="unknown dtype name 'float128'"):
            xp.asarray([1.0], dtype="float128")


def test_numpy_input_to_a_torch_model_is_a_backend_mismatch() -> None:
    if registry.probe("torch") is not None:
        pytest.skip("torch is not usable here")
    with nb.using(backend="torch", dtype="float64"):
        model = small_model()
    with pytest.raises(BackendMismatchError, match=r"'numpy'.*'torch'.*to_backend"):
        model(np.ones((2, 4)))
    with nb.using(backend="torch", dtype="float64"):
        norm = nn.LayerNorm(4)
    with pytest.raises(BackendMismatchError, match=r"'numpy'.*'torch'.*to_backend"):
        norm(np.ones((2, 4)))


def test_a_python_list_input_is_a_backend_mismatch_with_its_fix() -> None:
    """A list is not an array of the model's backend: a typed error naming it and
    to_backend, not an AttributeError from inside the layer (found probing, 2026-12-02)."""
    model = small_model()
    rows = np.ones((2, 4)).tolist()
    with pytest.raises(BackendMismatchError, match=r"builtins\.list, not an array.*to_backend"):
        model(rows)
    with pytest.raises(BackendMismatchError, match=r"builtins\.list"):
        nn.ReLU()(rows)
    assert tuple(model(nb.to_backend(rows, like=model)).shape) == (2, 3)
    images = np.ones((1, 1, 5, 5)).tolist()
    sequences = np.ones((2, 5, 4)).tolist()
    for layer, data in (
        (nn.LayerNorm(4), rows),
        (nn.BatchNorm1d(4), rows),
        (nn.Conv2d(1, 2, 3), images),
        (nn.LSTM(4, 3), sequences),
        (nn.GRU(4, 3), sequences),
        (nn.RNN(4, 3), sequences),
    ):
        with pytest.raises(BackendMismatchError, match=r"builtins\.list, not an array"):
            layer(data)
    with pytest.raises(BackendMismatchError, match=r"builtins\.list, not an array"):
        nn.SoftmaxCrossEntropy()(rows, np.array([0, 1]))


# -- validation_split / validation_data --------------------------------------------------------
def test_validation_split_holds_out_the_last_rows() -> None:
    x, t = user_data(100)
    model = small_model()
    trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1))
    history = trainer.fit(x, t, epochs=1, batch_size=10, validation_split=0.2, progress=False)
    assert history.steps == 8  # 80 training rows
    assert history.val_loss[0] == pytest.approx(trainer.evaluate(x[80:], t[80:])[0], rel=1e-12)
    for bad in (0.0, 1.0, -0.5, "a"):
        with pytest.raises(ArgumentError, match="validation_split"):
            trainer.fit(x, t, validation_split=bad, progress=False)
    with pytest.raises(ArgumentError, match="not both"):
        trainer.fit(x, t, validation_split=0.2, validation_data=(x, t), progress=False)


# -- schedules against torch.optim.lr_scheduler ----------------------------------------------
def _torch_rates(make: Any, epochs: int, lr: float = 0.5) -> list[float]:
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make(torch.optim.lr_scheduler, opt)
    rates = []
    for _ in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def _our_rates(make: Any, epochs: int, lr: float = 0.5) -> list[float]:
    opt = optim.SGD(nn.Linear(1, 1).parameters(), lr=lr)
    sched = make(opt)
    rates = []
    for _ in range(epochs):
        rates.append(opt.lr)
        sched.step()
    return rates


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda o: StepLR(o, 3, 0.5), lambda m, o: m.StepLR(o, 3, 0.5)),
        (lambda o: ExponentialLR(o, 0.8), lambda m, o: m.ExponentialLR(o, 0.8)),
        (
            lambda o: CosineAnnealing(o, 10, min_lr=0.01),
            lambda m, o: m.CosineAnnealingLR(o, 10, eta_min=0.01),
        ),
    ],
    ids=["StepLR", "ExponentialLR", "CosineAnnealing"],
)
def test_schedules_match_torch(ours: Any, theirs: Any) -> None:
    # 11 epochs: past T_max PyTorch's cosine climbs again, ours stays at min_lr (documented).
    np.testing.assert_allclose(_our_rates(ours, 11), _torch_rates(theirs, 11), rtol=1e-12)


def test_cosine_warmup_rises_linearly_then_anneals() -> None:
    rates = _our_rates(lambda o: CosineAnnealing(o, 8, warmup=3), 10, lr=1.0)
    np.testing.assert_allclose(rates[:3], [0.25, 0.5, 0.75])
    assert rates[3] == 1.0 and rates[8] == 0.0 and rates[9] == 0.0
    assert all(a > b for a, b in itertools.pairwise(rates[3:9]))
    with pytest.raises(ArgumentError, match="warmup"):
        CosineAnnealing(optim.SGD(nn.Linear(1, 1).parameters()), 3, warmup=3)


def test_reduce_on_plateau_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    values = [1.0, 0.9, 0.95, 0.95, 0.9, 0.8, 0.85, 0.85, 0.85, 0.85, 0.7, 0.9, 0.9]
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    t_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        t_opt, factor=0.5, patience=1, threshold=0.0, min_lr=0.2
    )
    opt = optim.SGD(nn.Linear(1, 1).parameters(), lr=1.0)
    sched = ReduceLROnPlateau(opt, "val_loss", factor=0.5, patience=1, min_lr=0.2)
    for v in values:
        t_opt.step()
        t_sched.step(v)
        sched.step(v)
        assert opt.lr == pytest.approx(t_opt.param_groups[0]["lr"], rel=1e-12)
    assert opt.lr == 0.2


def test_schedule_in_fit_steps_once_per_epoch() -> None:
    x, t = user_data(40)
    model = small_model()
    opt = optim.SGD(model.parameters(), lr=1.0)
    seen: list[float] = []
    trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), opt)
    trainer.fit(
        x,
        t,
        epochs=4,
        batch_size=10,
        progress=False,
        callbacks=[StepLR(opt, 1, 0.5), lambda tr, h: seen.append(tr.optimizer.lr)],
    )
    assert seen == [0.5, 0.25, 0.125, 0.0625]


# -- callbacks --------------------------------------------------------------------------------
class _Scripted(nb.train.Callback):
    """Replaces the validation loss by a scripted sequence, so the best epoch is known."""

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def on_epoch_end(self, trainer: Any, history: Any) -> None:
        history.val_loss[-1] = self.values[trainer.epoch]


def test_early_stopping_stops_and_restores_the_best_epoch(tmp_path: Path) -> None:
    x, t = user_data(60)
    model = small_model()
    trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.5))
    snapshots: list[dict[str, np.ndarray]] = []

    def keep(trainer: Any, history: Any) -> None:
        snapshots.append({k: to_host(v).copy() for k, v in model.state_dict().items()})

    stop = EarlyStopping("val_loss", patience=2, restore_best=True)
    ckpt = ModelCheckpoint(tmp_path / "best.npz", "val_loss", save_best_only=True)
    scripted = _Scripted([1.0, 0.5, 0.7, 0.4, 0.6, 0.45, 0.3, 0.1])
    history = trainer.fit(
        x,
        t,
        epochs=8,
        batch_size=20,
        validation_data=(x, t),
        progress=False,
        callbacks=[scripted, keep, stop, ckpt],
    )
    assert history.stopped_early and history.epochs == 6 and stop.stopped_epoch == 5
    assert stop.best_epoch == 3 and stop.best == 0.4 and ckpt.best_epoch == 3
    assert [p.name for p in ckpt.saved] == ["best.npz"] * 3  # epochs 0, 1 and 3
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(to_host(value), snapshots[3][name])
    fresh = small_model()
    nb.load(fresh, tmp_path / "best.npz")
    for name, value in fresh.state_dict().items():
        np.testing.assert_array_equal(to_host(value), snapshots[3][name])


def test_checkpoint_every_epoch_formats_the_path(tmp_path: Path) -> None:
    x, t = user_data(30)
    model = small_model()
    trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.5))
    ckpt = ModelCheckpoint(tmp_path / "e{epoch}-{loss:.3f}.npz", "loss")
    history = trainer.fit(x, t, epochs=2, batch_size=10, progress=False, callbacks=[ckpt])
    assert [p.name for p in ckpt.saved] == [
        f"e{i + 1}-{history.epoch_loss[i]:.3f}.npz" for i in (0, 1)
    ]
    assert all(p.exists() for p in ckpt.saved)


def test_monitoring_an_unknown_name_says_what_exists() -> None:
    x, t = user_data(20)
    model = small_model()
    trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.5))
    with pytest.raises(ArgumentError, match=r"cannot monitor 'val_acc'.*'val_accuracy'"):
        trainer.fit(x, t, epochs=1, progress=False, callbacks=[EarlyStopping("val_acc")])


# -- metrics ----------------------------------------------------------------------------------
def _on(backend: str, a: np.ndarray) -> Any:
    return registry.get(backend).from_host(np.ascontiguousarray(a), None)


# No subnormals: XLA's CPU backend (jax) flushes them to zero, so argmax([-2.2e-313, 0]) is a tie
# there (index 0) where NumPy finds index 1; docs/backends.md says so.
_METRIC_VALUES = st.floats(-4, 4, allow_subnormal=False)


@given(
    y=hnp.arrays(
        np.float64, st.tuples(st.integers(1, 12), st.integers(2, 6)), elements=_METRIC_VALUES
    ),
    data=st.data(),
)
def test_metrics_match_numpy_references(backend: str, y: np.ndarray, data: Any) -> None:
    n, c = y.shape
    t = np.asarray(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    k = data.draw(st.integers(1, c))
    r = data.draw(hnp.arrays(np.float64, y.shape, elements=_METRIC_VALUES))
    yb, tb, rb = _on(backend, y), _on(backend, t.astype(np.int64)), _on(backend, r)
    label_score = y[np.arange(n), t]
    expected = {
        "accuracy": np.mean(np.argmax(y, axis=1) == t),
        f"top{k}": np.mean((y > label_score[:, None]).sum(axis=1) < k),
        "perplexity": math.exp(
            np.mean(np.log(np.exp(y - y.max(1, keepdims=True)).sum(1)) + y.max(1) - label_score)
        ),
    }
    for name, value in expected.items():
        m = metrics.get(name)
        # Two batches: the metric must weight them by their rows.
        m.update(yb[: n // 2, ...], tb[: n // 2])
        m.update(yb[n // 2 :, ...], tb[n // 2 :])
        assert m.result() == pytest.approx(value, rel=1e-12), name
    for m, value in (
        (metrics.MeanSquaredError(), np.mean((y - r) ** 2)),
        (metrics.MeanAbsoluteError(), np.mean(np.abs(y - r))),
    ):
        m.update(yb, rb)
        assert m.result() == pytest.approx(value, rel=1e-12, abs=1e-15)


def test_metrics_in_fit_are_read_once_per_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    x, t = user_data(60)
    model = small_model()
    trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.5))
    reads = []
    real = metrics.Metric.result

    def counted(self: metrics.Metric) -> float:
        reads.append(self.name)
        return real(self)

    monkeypatch.setattr(metrics.Metric, "result", counted)
    user = metrics.Mean("mean_max", lambda y, t: nb.array_namespace(y).mean(y[:, 0]))
    history = trainer.fit(
        x,
        t,
        epochs=3,
        batch_size=10,
        metrics=["top2", user],
        validation_split=0.5,
        progress=False,
    )
    assert sorted(history.metrics) == ["mean_max", "top2", "val_mean_max", "val_top2"]
    assert all(len(v) == 3 for v in history.metrics.values())
    assert len(reads) == 12  # 2 metrics x (train + validation) x 3 epochs, not per step
    y = to_host(trainer.predict(x[30:]))
    assert history.metrics["val_mean_max"][-1] == pytest.approx(y[:, 0].mean(), rel=1e-12)
    with pytest.raises(ArgumentError, match="unknown metric 'f1'"):
        metrics.get("f1")
