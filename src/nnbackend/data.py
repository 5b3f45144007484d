"""Data too big for the device: :class:`DataLoader` keeps the data in host memory (NumPy
arrays, memory-mapped files, or your own ``__getitem__``/``__len__`` data set) and moves one
batch at a time to the model's backend, device and dtype, preparing the next batch in a
background thread while the current one trains.

>>> import numpy as np
>>> import nnbackend as nb
>>> from nnbackend import nn, optim
>>> from nnbackend.data import DataLoader
>>> x = np.random.default_rng(0).normal(size=(100, 4))      # or np.load(..., mmap_mode="r")
>>> t = (x[:, 0] > 0).astype(np.int64)
>>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
>>> trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1))
>>> loader = DataLoader(x, t, batch_size=32, seed=0)
>>> history = trainer.fit(loader, epochs=2, progress=False)
>>> history.steps
8

In a hand-written loop, ``DataLoader(..., like=model)`` puts the batches on the model's
backend: ``for xb, tb in loader: ...``.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import Any

from nnbackend import random as nb_random
from nnbackend.datasets import host_permutation, host_rows, to_backend
from nnbackend.errors import ArgumentError, ShapeError

__all__ = ["DataLoader"]


def _table_rows(source: Any) -> Any:
    """A pandas DataFrame or Series (told by duck typing: ``to_numpy`` with ``iloc`` or
    ``columns``, so pandas is never imported) as the NumPy array of its rows; anything else
    as it is. ``df[i]`` is the *column* labelled i and ``series[i]`` the *label* i, so
    reading rows one ``source[i]`` at a time gave columns (silently, for integer column
    labels), a bare KeyError, or the labels of a shuffled Series in index order."""
    to_numpy = getattr(source, "to_numpy", None)
    if not callable(to_numpy) or not (hasattr(source, "iloc") or hasattr(source, "columns")):
        return source
    try:
        return to_numpy()
    except Exception as exc:
        raise ArgumentError(
            f"DataLoader could not read the {type(source).__name__}'s rows with .to_numpy() "
            f"({type(exc).__name__}: {exc}); pass DataLoader(df.to_numpy(dtype=...), ...) "
            "with the numeric columns you want"
        ) from exc


def _check_rows(source: Any, what: str) -> None:
    """Refuse what cannot give rows ``source[i]``: a set (a bare TypeError at the first
    batch), a dict not keyed by row number (Keras's ``{"x": x, "t": t}``: a bare KeyError)."""
    if getattr(source, "shape", None) is not None:
        return
    if not hasattr(type(source), "__getitem__"):
        raise ArgumentError(
            f"{what} needs rows source[i]: a NumPy array, a list, or an object with __len__ "
            f"and __getitem__, got {type(source).__name__}"
        )
    if isinstance(source, Mapping) and len(source) and 0 not in source:
        keys = list(islice(source, 5))
        hint = ", ".join(f"d[{k!r}]" for k in keys[:2])
        raise ArgumentError(
            f"{what} is a dict with keys {keys}, not a data set of rows (DataLoader reads "
            f"rows x[0]..x[n-1]); pass its arrays apart: DataLoader({hint}, ...)"
        )


def _describe(row: Any) -> str:
    """What a row ``x[i]`` is, for the message that it is no pair ``(x_i, t_i)``."""
    if isinstance(row, Mapping):
        return (
            f"a dict with keys {list(islice(row, 5))}; return (row[x_key], row[t_key]) from "
            "__getitem__, or pass the inputs and targets apart: DataLoader(x, t)"
        )
    if isinstance(row, tuple):
        return f"a tuple of {len(row)}"
    shape = getattr(row, "shape", None)
    return f"a {type(row).__name__}" + ("" if shape is None else f" of shape {tuple(shape)}")


def _length(source: Any, what: str) -> int:
    shape = getattr(source, "shape", None)
    if shape is not None and len(shape):
        return int(shape[0])
    try:
        return len(source)
    except TypeError:
        raise ArgumentError(
            f"{what} needs a length: a NumPy array, a memory-mapped array, or an object with "
            f"__len__ and __getitem__, got {type(source).__name__}"
        ) from None


class DataLoader:
    """Batches of ``(x, t)`` from host memory, moved to a backend one batch at a time.

    Args:
        x: the inputs, one row per sample: a NumPy array (``np.load(path, mmap_mode="r")``
            streams from disk), or any object with ``__len__`` and ``__getitem__(i)``; when
            ``t`` is ``None``, ``x[i]`` returns the pair ``(x_i, t_i)``. A pandas DataFrame or
            Series is read by rows (positions, not index labels), copied once with
            ``.to_numpy()``.
        t: the targets, with as many rows, or ``None`` (see ``x``).
        batch_size: rows per batch; the last batch may be smaller unless ``drop_last``.
        shuffle: draw a new order every epoch from :mod:`nnbackend.random`, seeded by
            ``seed`` (the same order on every backend for one seed).
        seed: the shuffling's seed; ``None`` draws a fresh one.
        drop_last: leave out the last, smaller batch.
        prefetch: prepare the next batch (host gathering and the transfer) in a background
            thread while the current one trains.
        like: where batches go (a model or an array, as in :func:`nnbackend.to_backend`);
            ``None`` means the active backend, unless :meth:`Trainer.fit` sets it to its model.

    Iterating gives one epoch of ``(xb, tb)`` backend arrays: floats in the target dtype,
    integer labels as int64.
    """

    def __init__(
        self,
        x: Any,
        t: Any = None,
        *,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int | None = None,
        drop_last: bool = False,
        prefetch: bool = True,
        like: Any = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ArgumentError(f"batch_size must be an int >= 1, got {batch_size!r}")
        pair = isinstance(x, tuple) and len(x) == 2
        if t is None and pair and all(getattr(p, "shape", None) is not None for p in x):
            # DataLoader(nb.datasets.spiral()): the pair (x, t) read as a data set of two
            # rows failed deep in np.stack with a bare ValueError.
            raise ArgumentError(
                "DataLoader got a pair of arrays (x, t) as x; pass them apart: "
                "DataLoader(x, t, ...) (or DataLoader(*data, ...) for a Dataset)"
            )
        x, t = _table_rows(x), _table_rows(t)
        _check_rows(x, "DataLoader(x)")
        if t is not None:
            _check_rows(t, "DataLoader(t)")
        n = _length(x, "DataLoader(x)")
        if t is not None and _length(t, "DataLoader(t)") != n:
            raise ShapeError(f"DataLoader: {n} inputs but {_length(t, 'DataLoader(t)')} targets")
        if n == 0:
            raise ShapeError("DataLoader: the data set is empty")
        self.x, self.t = x, t
        self.n = n
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        if self.drop_last and n < batch_size:
            raise ShapeError(
                f"DataLoader: drop_last with {n} rows and batch_size {batch_size} leaves no "
                "batch; lower batch_size or set drop_last=False"
            )
        self.prefetch = bool(prefetch)
        self.like = like
        self.generator = nb_random.Generator(seed) if self.shuffle else None

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return self.n // self.batch_size
        return math.ceil(self.n / self.batch_size)

    def _order(self) -> Any:
        if self.generator is None:
            return None
        return host_permutation(self.generator, self.n)

    def _batch(self, order: Any, i: int) -> tuple[Any, Any]:
        lo = i * self.batch_size
        hi = min(lo + self.batch_size, self.n)
        if order is None:
            index: Any = range(lo, hi)
            index = list(index)
        else:
            index = order[lo:hi]
        if self.t is None:
            rows = host_rows(self.x, index)
            if not isinstance(rows, tuple) or len(rows) != 2:
                raise ShapeError(
                    "DataLoader(x) without t needs x[i] to return a pair (x_i, t_i); "
                    f"x[{int(index[0])}] is {_describe(self.x[int(index[0])])}"
                )
            xb, tb = rows
        else:
            xb, tb = host_rows(self.x, index), host_rows(self.t, index)
        return to_backend(xb, like=self.like), to_backend(tb, like=self.like)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        order = self._order()
        steps = len(self)
        if not self.prefetch or steps == 1:
            for i in range(steps):
                yield self._batch(order, i)
            return
        # The worker runs in a copy of this thread's context, so an active
        # nnbackend.using(backend=..., dtype=...) block decides where its batches go.
        context = contextvars.copy_context()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="nnbackend-prefetch") as pool:
            pending: Future[tuple[Any, Any]] = pool.submit(context.run, self._batch, order, 0)
            for i in range(steps):
                batch = pending.result()
                if i + 1 < steps:
                    pending = pool.submit(context.run, self._batch, order, i + 1)
                yield batch

    def __repr__(self) -> str:
        return (
            f"DataLoader({self.n} rows, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"{len(self)} batches)"
        )
