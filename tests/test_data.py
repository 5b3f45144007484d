"""nnbackend.data.DataLoader: batches streamed from host memory (NumPy arrays, memory-mapped
files, a user's __getitem__/__len__ data set) to the model's backend, shuffled from
nnbackend.random, with the next batch prepared while the current one trains (issue 17)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim
from nnbackend.data import DataLoader
from nnbackend.errors import ArgumentError
from nnbackend.namespace import backend_for


def to_host(x: Any) -> np.ndarray:
    return np.asarray(backend_for(x)[1].to_host(x))


def data(n: int = 90) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 4))
    return x, (x[:, 0] - x[:, 3] > 0).astype(np.int64)


def fitted(make_x: Any, backend: str, dtype: str) -> dict[str, np.ndarray]:
    with nb.using(backend=backend, dtype=dtype):
        nb.random.seed(1)
        model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.2))
    x, t = make_x()
    if isinstance(x, DataLoader):
        trainer.fit(x, epochs=3, progress=False)
    else:
        trainer.fit(x, t, epochs=3, batch_size=16, seed=5, progress=False)
    return {k: to_host(v) for k, v in model.state_dict().items()}


def test_streaming_a_memory_mapped_file_equals_training_in_memory(
    backend: str, dtype: str, tmp_path: Path
) -> None:
    x, t = data()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "t.npy", t)

    def streamed() -> tuple[Any, Any]:
        xm = np.load(tmp_path / "x.npy", mmap_mode="r")
        tm = np.load(tmp_path / "t.npy", mmap_mode="r")
        return DataLoader(xm, tm, batch_size=16, seed=5), None

    ours = fitted(streamed, backend, dtype)
    reference = fitted(lambda: (x, t), backend, dtype)
    for name, value in reference.items():
        # Same permutation stream, same batches, same dtype: bit for bit.
        np.testing.assert_array_equal(ours[name], value)


class Pairs:
    """A user's data set: __len__ and __getitem__ returning (x_i, t_i)."""

    def __init__(self, x: np.ndarray, t: np.ndarray) -> None:
        self.x, self.t = x, t
        self.seen: list[int] = []
        self.wanted: set[int] = set()
        self.reached = threading.Event()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        self.seen.append(i)
        if i in self.wanted:
            self.reached.set()
        return self.x[i], int(self.t[i])


def test_a_user_dataset_streams_to_the_active_backend(backend: str) -> None:
    x, t = data(10)
    pairs = Pairs(x, t)
    with nb.using(backend=backend, dtype="float32"):
        batches = list(DataLoader(pairs, batch_size=4, shuffle=False))
    assert [tuple(b[0].shape) for b in batches] == [(4, 4), (4, 4), (2, 4)]
    for xb, tb in batches:
        assert backend_for(xb)[1].name == backend and str(xb.dtype).endswith("float32")
        assert backend_for(tb)[1].name == backend and str(tb.dtype).endswith("int64")
    np.testing.assert_array_equal(np.concatenate([to_host(b[1]) for b in batches]), t)
    assert sorted(pairs.seen) == list(range(10))


def test_the_next_batch_is_prepared_while_the_current_one_trains() -> None:
    x, t = data(8)
    pairs = Pairs(x, t)
    pairs.wanted = {4, 5, 6, 7}  # the rows of the second batch
    loader = DataLoader(pairs, batch_size=4, shuffle=False)
    batches = iter(loader)
    next(batches)
    # Still "training" on batch 0: the worker must fetch batch 1 meanwhile.
    assert pairs.reached.wait(timeout=10), "batch 1 was not prefetched"
    next(batches)
    pairs.reached.clear()
    no_prefetch = DataLoader(Pairs(x, t), batch_size=4, shuffle=False, prefetch=False)
    lazy = iter(no_prefetch)
    next(lazy)
    assert len(no_prefetch.x.seen) == 4  # without prefetching, only the batch asked for


def test_loader_arguments_are_checked() -> None:
    x, t = data(10)
    model = nn.Linear(4, 2)
    trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters()))
    loader = DataLoader(x, t, batch_size=4)
    with pytest.raises(ArgumentError, match="leave t out"):
        trainer.fit(loader, t)
    with pytest.raises(ArgumentError, match="validation_data"):
        trainer.fit(loader, validation_split=0.2)
    with pytest.raises(ArgumentError, match="needs targets"):
        trainer.fit(x)
    with pytest.raises(nb.errors.ShapeError, match="10 inputs but 9 targets"):
        DataLoader(x, t[:9])
    with pytest.raises(ArgumentError, match="batch_size"):
        DataLoader(x, t, batch_size=0)
    assert len(DataLoader(x, t, batch_size=4, drop_last=True)) == 2
