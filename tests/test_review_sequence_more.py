"""Second review of the sequence models: recurrent sizes, the unigram sampler's power,
``most_similar``'s ``top`` and the generated corpora's shapes and dtypes."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, registry, text
from nnbackend.errors import ArgumentError

RECURRENT = [nn.RNN, nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell, nn.GRUCell]


@pytest.mark.parametrize("cls", RECURRENT)
@pytest.mark.parametrize(
    ("args", "name"),
    [((3.5, 4), "input_size"), (("a", 4), "input_size"), ((3, 4.0), "hidden_size")],
)
def test_a_recurrent_size_that_is_no_whole_number_is_an_argument_error(
    cls: Any, args: tuple[Any, Any], name: str
) -> None:
    # RNN(3.5, 4) silently built an RNN(3, 4); RNN("a", 4) was a bare ValueError from int().
    with pytest.raises(ArgumentError, match=name):
        cls(*args)


@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTMCell])
def test_a_recurrent_size_given_as_a_bool_is_refused(cls: Any) -> None:
    # torch.nn.RNN(True, 4) builds (and torch.nn.RNN(3, True) fails); as nn.Linear does, a
    # flag passed as a size is refused rather than read as 1.
    with pytest.raises(ArgumentError, match="input_size"):
        cls(True, 4)
    with pytest.raises(ArgumentError, match="hidden_size"):
        cls(3, False)


def test_a_recurrent_size_may_be_a_numpy_integer() -> None:
    layer = nn.GRU(np.int64(3), np.int32(4))
    assert (layer.input_size, layer.hidden_size) == (3, 4)
    assert type(layer.input_size) is int


@pytest.mark.parametrize("power", [-0.5, 0.0, 0.75, 1.0])
def test_a_word_missing_from_the_corpus_is_never_sampled(power: float) -> None:
    # Ids 1, 4 and 5 never occur: power < 0 raised ZeroDivisionError (0.0 ** -0.5), and
    # power = 0 gave them the probability of every other word (0.0 ** 0 == 1).
    sampler = nn.UnigramSampler(
        [0, 0, 0, 2, 3, 3], power=power, sample_size=3, vocab_size=6, generator=0
    )
    assert [sampler.word_p[i] for i in (1, 4, 5)] == [0.0, 0.0, 0.0]
    assert math.isclose(math.fsum(sampler.word_p), 1.0)
    with nb.using(backend="numpy"):
        drawn = np.asarray(sampler.draw((300,)))
    assert set(drawn.tolist()) <= {0, 2, 3}
    rows = nn.UnigramSampler(
        [0, 0, 0, 2, 3, 3], power=power, sample_size=2, exclude_target=True, generator=0
    ).sample(nb.namespace().asarray([0, 2, 3, 0]))
    assert set(np.asarray(rows).reshape(-1).tolist()) <= {0, 2, 3}


def test_power_zero_is_uniform_over_the_words_of_the_corpus() -> None:
    sampler = nn.UnigramSampler([0, 0, 0, 2, 3, 3], power=0, vocab_size=5, generator=0)
    assert sampler.word_p == pytest.approx([1 / 3, 0.0, 1 / 3, 1 / 3, 0.0])


@pytest.mark.parametrize("power", [float("nan"), float("inf"), "0.75", None, True, 5000.0])
def test_a_power_that_cannot_make_a_distribution_is_an_argument_error(power: Any) -> None:
    with pytest.raises(ArgumentError, match="power"):
        nn.UnigramSampler([0, 0, 1, 2], power=power, generator=0)


def _vectors() -> tuple[dict[str, int], dict[int, str], Any]:
    _, w2i, i2w = text.preprocess("a b c d e")
    m = nb.namespace().asarray([[1.0, 0.0], [0.9, 0.1], [0.5, 0.5], [0.1, 0.9], [0.0, 1.0]])
    return w2i, i2w, m


@pytest.mark.parametrize("top", [-1, -3, 2.5, "2", True])
def test_most_similar_and_analogy_refuse_a_negative_or_non_integer_top(top: Any) -> None:
    # top=-1 sliced [:-1]: every word but the last, silently.
    w2i, i2w, m = _vectors()
    with pytest.raises(ArgumentError, match="top"):
        text.most_similar("a", w2i, i2w, m, top=top)
    with pytest.raises(ArgumentError, match="top"):
        text.analogy("a", "b", "c", w2i, i2w, m, top=top)


def test_most_similar_with_top_zero_is_empty_and_top_may_be_a_numpy_integer() -> None:
    w2i, i2w, m = _vectors()
    assert text.most_similar("a", w2i, i2w, m, top=0) == []
    assert [w for w, _ in text.most_similar("a", w2i, i2w, m, top=np.int64(2))] == ["b", "c"]
    assert len(text.most_similar("a", w2i, i2w, m, top=99)) == 4


@pytest.mark.parametrize(
    ("load", "widths"), [(nb.datasets.addition, (7, 5)), (nb.datasets.date_format, (29, 11))]
)
@pytest.mark.parametrize("n", [0, 3])
def test_an_empty_part_of_a_sequence_task_keeps_its_width(
    load: Any, widths: tuple[int, int], n: int
) -> None:
    # addition(0) gave x_train of shape (0,); addition(3) holds out no test row and gave
    # x_test (0,) as well.
    data = load(n)
    tin, tout = widths
    assert tuple(data.x_train.shape) == (n, tin)
    assert tuple(data.t_train.shape) == (n, tout)
    assert tuple(data.x_test.shape) == (0, tin)
    assert tuple(data.t_test.shape) == (0, tout)


def test_the_generated_corpora_use_the_index_dtype_of_preprocess() -> None:
    xp = nb.namespace()
    want = text.preprocess("a b")[0].dtype
    assert nb.datasets.addition(20).x_train.dtype == want
    assert nb.datasets.tiny_corpus(5).corpus.dtype == xp.int64 == want


JAX_MISSING = registry.probe("jax")


@pytest.mark.skipif(JAX_MISSING is not None, reason=f"jax: {JAX_MISSING}")
def test_the_generated_corpora_do_not_warn_on_jax() -> None:
    # xp.int64 on jax without x64 warned "int64 ... will be truncated to int32" at every
    # call; preprocess asks the namespace for its index dtype instead.
    with nb.using(backend="jax"), warnings.catch_warnings():
        warnings.simplefilter("error")
        want = text.preprocess("a b")[0].dtype
        data = nb.datasets.addition(20)
        corpus = nb.datasets.tiny_corpus(5).corpus
        dates = nb.datasets.date_format(4)
    assert data.x_train.dtype == data.t_test.dtype == corpus.dtype == dates.x_train.dtype == want
