"""Review of data loading (``nnbackend.data.DataLoader``), the unigram negative sampler
(``nnbackend.nn.UnigramSampler``) and the namespace's ``*_like`` / ``astype``.

Covered: corpora with huge word ids (memory blow-up), pandas DataFrames and Series given to
DataLoader (read by column label instead of by row), dtype names in ``zeros_like``,
``ones_like``, ``full_like``, ``empty_like`` and ``astype`` on every backend, and odd
DataLoader inputs (dicts, sets, NumPy-integer seeds, lists of dicts, shuffling with seeds,
drop_last, prefetching threads). Seeded sampler draws are pinned to what they were before
the fixes.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn
from nnbackend.data import DataLoader
from nnbackend.errors import ArgumentError, DtypeError, ShapeError
from nnbackend.nn import sampling

# ------------------------------------------------------------------------------- the sampler
CORPUS = [0, 1, 2, 3, 0, 1, 0, 5, 5, 5, 2]


def test_sampler_seeded_draws_are_unchanged() -> None:
    """The bound on word ids changed no draw: these are the draws from before the fix."""
    s = nn.UnigramSampler(CORPUS, sample_size=3, generator=7)
    assert np.asarray(s.draw((4, 3))).tolist() == [[2, 5, 5], [0, 1, 5], [0, 5, 5], [2, 1, 1]]
    assert np.asarray(s.sample(np.array([0, 1, 2]))).tolist() == [[0, 2, 2], [2, 5, 5], [2, 5, 0]]
    s = nn.UnigramSampler(CORPUS, sample_size=3, generator=7, exclude_target=True, vocab_size=9)
    assert np.asarray(s.sample(np.array([0, 1, 2, 5]))).tolist() == [
        [3, 5, 1],
        [0, 5, 3],
        [5, 1, 0],
        [0, 1, 2],
    ]
    assert len(s.word_p) == 9 and s.word_p[4] == 0.0


@pytest.mark.parametrize(
    "corpus",
    [[0, 10**12], np.array([3, 2**62], dtype=np.int64), np.array([1, 2**63 + 7], dtype=np.uint64)],
)
def test_sampler_huge_id_is_an_argument_error(corpus: Any) -> None:
    """A corpus holding one huge id (``[0, 10**12]``) built a list of 10**12 weights: the
    process hung and ran out of memory; it is now an ArgumentError naming the id, the
    vocabulary it implies, and the fix."""
    start = time.perf_counter()
    with pytest.raises(ArgumentError) as info:
        nn.UnigramSampler(corpus, sample_size=1)
    assert time.perf_counter() - start < 5
    message = str(info.value)
    top = max(int(i) for i in corpus)
    assert str(top) in message and str(top + 1) in message
    assert "0.." in message and "remap" in message


def test_sampler_huge_vocab_size_is_an_argument_error() -> None:
    """An explicit ``vocab_size=10**12`` for a small corpus built 10**12 weights (a hang);
    now an ArgumentError."""
    with pytest.raises(ArgumentError, match="vocab_size=1000000000000"):
        nn.UnigramSampler([0, 1, 2], vocab_size=10**12)
    with pytest.raises(ArgumentError, match="vocab_size"):
        nn.NegativeSamplingLoss(10**12, 4, [0, 1, 2], sample_size=1)


def test_sampler_bound_grows_with_the_corpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound refused only vocabularies larger than both the fixed limit and the corpus:
    a remapped corpus (ids 0..V-1, so V <= its length) always passed."""
    monkeypatch.setattr(sampling, "_MAX_SPARSE_VOCAB", 8)
    with pytest.raises(ArgumentError):
        nn.UnigramSampler([0, 20], sample_size=1)
    ok = nn.UnigramSampler(list(range(21)), sample_size=1, generator=0)
    assert ok.vocab_size == 21 and len(ok.word_p) == 21
    assert nn.UnigramSampler([0, 7], sample_size=1).vocab_size == 8


# ---------------------------------------------------------------- DataLoader and data frames
class FakeSeries:
    """What DataLoader sees of a pandas Series: ``s[i]`` looks up the index *label* i."""

    def __init__(self, values: Any, index: Any = None) -> None:
        self.values = np.asarray(values)
        self.index = list(range(len(self.values))) if index is None else list(index)
        self.iloc = self.values

    def to_numpy(self, dtype: Any = None) -> Any:
        return np.asarray(self.values, dtype=dtype)

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, label: Any) -> Any:
        return self.values[self.index.index(label)]

    def __iter__(self) -> Any:
        return iter(self.values)


class FakeFrame:
    """What DataLoader sees of a pandas DataFrame: ``len`` counts rows but ``df[k]`` is the
    *column* labelled k, and iterating gives the column labels."""

    def __init__(self, values: Any, columns: Any = None) -> None:
        self.values = np.asarray(values)
        n = self.values.shape[1]
        self.columns = list(range(n)) if columns is None else list(columns)
        self.iloc = self.values

    def to_numpy(self, dtype: Any = None) -> Any:
        return np.asarray(self.values, dtype=dtype)

    def __len__(self) -> int:
        return self.values.shape[0]

    def __iter__(self) -> Any:
        return iter(self.columns)

    def __getitem__(self, label: Any) -> Any:
        return FakeSeries(self.values[:, self.columns.index(label)])


def _epoch(loader: DataLoader) -> tuple[list[Any], list[Any]]:
    xs, ts = [], []
    for xb, tb in loader:
        xs += np.asarray(xb).tolist()
        ts += np.asarray(tb).tolist()
    return xs, ts


def test_dataloader_reads_rows_of_a_duck_typed_frame() -> None:
    """A DataFrame (here a stand-in with pandas' indexing) gave DataLoader its *columns*
    (``df[0]`` is column 0) or a bare KeyError; its rows come out now."""
    values = np.arange(12.0).reshape(4, 3)
    labels = np.array([0, 1, 1, 0])
    for frame in (FakeFrame(values), FakeFrame(values, ["a", "b", "c"])):
        xs, ts = _epoch(DataLoader(frame, FakeSeries(labels), batch_size=3, shuffle=False))
        assert xs == values.tolist() and ts == labels.tolist()


def test_dataloader_series_with_an_index_gives_positions() -> None:
    """A Series whose index is not 0..n-1 (after sorting or filtering) was read by label:
    the targets came out in index order, silently paired with the wrong inputs."""
    x = np.arange(4.0).reshape(4, 1)
    t = FakeSeries([10, 11, 12, 13], index=[3, 2, 1, 0])
    xs, ts = _epoch(DataLoader(x, t, batch_size=2, shuffle=False))
    assert ts == [10, 11, 12, 13] and xs == x.tolist()
    xs, ts = _epoch(DataLoader(x, t, batch_size=4, seed=0))
    assert sorted(zip(xs, ts, strict=True)) == [([float(i)], 10 + i) for i in range(4)]


def test_dataloader_real_pandas() -> None:
    """Real pandas: a DataFrame with integer column labels as wide as it is long gave its
    columns as rows (silently), a named one a KeyError; a shuffled Series paired labels
    with the wrong rows. Trainer.fit through the loader now trains on the rows."""
    pd = pytest.importorskip("pandas")
    values = np.arange(36.0).reshape(6, 6)
    t = pd.Series([0, 1, 0, 1, 0, 1], index=[5, 4, 3, 2, 1, 0])
    xs, ts = _epoch(DataLoader(pd.DataFrame(values), t, batch_size=4, shuffle=False))
    assert xs == values.tolist() and ts == [0, 1, 0, 1, 0, 1]
    named = pd.DataFrame(values[:, :2], columns=["a", "b"])
    xs, _ = _epoch(DataLoader(named, t.to_numpy(), batch_size=6, shuffle=False))
    assert xs == values[:, :2].tolist()
    model = nn.Sequential(nn.Linear(2, 2))
    trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), nb.optim.SGD(model.parameters(), 0.1))
    history = trainer.fit(DataLoader(named, t, batch_size=4, seed=0), epochs=1, progress=False)
    assert history.steps == 2


def test_dataloader_dict_and_set_are_argument_errors() -> None:
    """``DataLoader({"x": x, "t": t})`` (as Keras takes) ended in a bare KeyError 0 at the
    first batch, and a set in a bare TypeError; both are ArgumentErrors at construction."""
    x, t = np.zeros((4, 2)), np.zeros(4)
    with pytest.raises(ArgumentError, match=r"DataLoader\(d\["):
        DataLoader({"x": x, "t": t})
    with pytest.raises(ArgumentError, match="__getitem__"):
        DataLoader({1.0, 2.0}, [0, 1])
    with pytest.raises(ArgumentError, match="__getitem__"):
        DataLoader(x, {0, 1, 2, 3})
    # A dict keyed by row number is a data set like any other.
    rows = {i: (np.full(2, float(i)), i) for i in range(3)}
    xs, ts = _epoch(DataLoader(rows, batch_size=3, shuffle=False))
    assert ts == [0, 1, 2] and xs[2] == [2.0, 2.0]


def test_dataloader_numpy_integer_seed() -> None:
    """A NumPy integer seed (``np.int64(3)``, as from ``rng.integers``) was refused as
    "not an int"; it now shuffles as the Python int does."""
    x, t = np.arange(10.0).reshape(10, 1), np.arange(10)
    _, a = _epoch(DataLoader(x, t, batch_size=10, seed=np.int64(3)))
    _, b = _epoch(DataLoader(x, t, batch_size=10, seed=3))
    assert a == b and sorted(a) == list(range(10))
    with pytest.raises(ArgumentError):
        DataLoader(x, t, seed=True)


def test_dataloader_shuffle_and_drop_last_cover_rows_once() -> None:
    """Shuffling with drop_last gave every kept row once, the same per seed, prefetching or
    not (a check of behaviour the fixes must keep)."""
    x, t = np.arange(10.0).reshape(10, 1), np.arange(10)
    runs = [
        _epoch(DataLoader(x, t, batch_size=3, seed=5, drop_last=True, prefetch=p))[1]
        for p in (True, False)
    ]
    assert runs[0] == runs[1] and len(runs[0]) == 9 and len(set(runs[0])) == 9


# --------------------------------------------------------------------- namespace dtype names
LIKE = ("zeros_like", "ones_like", "empty_like")


def test_like_functions_take_dtype_names(xp64: Any) -> None:
    """``zeros_like(x, dtype="float32")``, and the other ``*_like`` and ``astype``, failed on
    torch (TypeError) and array_api_strict (ValueError, AttributeError) while numpy took
    the name; the name now works on every backend, and an unknown one is a DtypeError."""
    xp = xp64
    x = xp.ones((2, 3))
    for name in LIKE:
        y = getattr(xp, name)(x, dtype="float32")
        assert y.dtype == xp.float32 and tuple(y.shape) == (2, 3)
        assert getattr(xp, name)(x).dtype == x.dtype
    assert float(xp.sum(xp.ones_like(x, dtype="int32"))) == 6
    full = xp.full_like(x, 7, dtype="int32")
    assert full.dtype == xp.int32 and int(xp.sum(full)) == 42
    assert xp.full_like(x, 2.5).dtype == x.dtype
    cast = xp.astype(xp.asarray([1.7, -2.2]), "int64")
    assert cast.dtype == xp.int64 and [int(v) for v in cast] == [1, -2]
    assert xp.astype(x, "float32", copy=True).dtype == xp.float32
    assert xp.astype(x, xp.float32).dtype == xp.float32
    for call in (
        lambda: xp.astype(x, "float8"),
        lambda: xp.zeros_like(x, dtype="double"),
        lambda: xp.full_like(x, 1, dtype="f4"),
    ):
        with pytest.raises(DtypeError, match="unknown dtype name"):
            call()


def test_like_wrappers_keep_their_origin() -> None:
    """The wrappers name the library's function (``__wrapped__``) and keep its docs."""
    xp = nb.namespace("numpy")
    for name in (*LIKE, "full_like", "astype"):
        ours = getattr(xp, name)
        assert ours.__wrapped__ is getattr(xp.__wrapped__, name)
        assert ours.__name__ == name


# ------------------------------------------------------------------------- loader error text
def test_dataloader_list_of_dicts_message() -> None:
    """A list of dict rows (``[{"x": ..., "t": ...}]``) got "needs x[i] to return a pair"
    without saying what x[i] was; the message now names the dict's keys."""
    rows = [{"x": np.zeros(2), "t": 0} for _ in range(3)]
    with pytest.raises(ShapeError, match=r"dict with keys \['x', 't'\]"):
        list(DataLoader(rows, shuffle=False))


@pytest.mark.parametrize("power", [-2000, -1100.5])
def test_sampler_power_underflow_is_an_argument_error(power: float) -> None:
    """A very negative power underflowed every ``count ** power`` to 0.0 and the
    normalisation ended in a bare ZeroDivisionError; now an ArgumentError, as overflow is."""
    with pytest.raises(ArgumentError, match="underflows"):
        nn.UnigramSampler([5, 5, 6, 6], power=power)
    # A count of 1 does not underflow (1 ** p == 1): such a corpus still works.
    s = nn.UnigramSampler([5, 6, 6], power=-2000, generator=0)
    assert s.word_p[5] == 1.0 and np.asarray(s.draw(3)).tolist() == [5, 5, 5]
