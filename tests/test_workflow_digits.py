"""End to end on scikit-learn's digits (issue 17): validation_split, EarlyStopping with
restore_best, ModelCheckpoint(save_best_only) and a cosine schedule with warm-up, on every
backend. The restored weights must be the best epoch's, and the saved file must load to the
same validation accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import datasets, nn, optim
from nnbackend.callbacks import EarlyStopping, ModelCheckpoint
from nnbackend.namespace import backend_for
from nnbackend.schedules import CosineAnnealing


def to_host(x: Any) -> np.ndarray:
    return np.asarray(backend_for(x)[1].to_host(x))


def model_64_32_10() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def test_digits_end_to_end(backend: str, tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="digits() needs scikit-learn")
    with nb.using(backend=backend, dtype="float32"):
        (x, t), _ = datasets.digits()
        nb.random.seed(0)
        model = model_64_32_10()
    opt = optim.Momentum(model.parameters(), lr=0.2, momentum=0.9)
    snapshots: list[dict[str, np.ndarray]] = []

    def keep(trainer: Any, history: Any) -> None:
        snapshots.append({k: to_host(v).copy() for k, v in model.state_dict().items()})

    stop = EarlyStopping("val_accuracy", patience=4, restore_best=True)
    best_file = tmp_path / "best.npz"
    ckpt = ModelCheckpoint(best_file, "val_accuracy", save_best_only=True)
    trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), opt)
    history = trainer.fit(
        x,
        t,
        epochs=40,
        batch_size=32,
        seed=0,
        validation_split=0.2,
        callbacks=[keep, stop, ckpt, CosineAnnealing(opt, 40, warmup=2)],
        progress=False,
    )
    best = stop.best_epoch
    assert best is not None and best == ckpt.best_epoch
    assert history.val_accuracy[best] == max(history.val_accuracy) == stop.best
    assert history.val_accuracy[best] > 0.9
    assert best < history.epochs - 1  # the restored weights are not simply the last ones
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(to_host(value), snapshots[best][name])

    n = int(x.shape[0])
    cut = int(n * 0.8)
    x_val, t_val = x[cut:, ...], t[cut:]
    assert trainer.evaluate(x_val, t_val)[1] == history.val_accuracy[best]
    with nb.using(backend=backend, dtype="float32"):
        fresh = model_64_32_10()
    nb.load(fresh, best_file)
    fresh_trainer = nb.Trainer(fresh, nn.SoftmaxCrossEntropy(), optim.SGD(fresh.parameters()))
    assert fresh_trainer.evaluate(x_val, t_val)[1] == history.val_accuracy[best]
