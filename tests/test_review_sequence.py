"""Review of the sequence models (recurrent layers, attention, negative sampling, text
helpers): user mistakes get a typed error saying what was wrong, silent wrong results are
gone, and evaluation does not carry a stateful layer's training state."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, text
from nnbackend.errors import (
    ArgumentError,
    BackendMismatchError,
    DtypeError,
    NNBackendError,
    ShapeError,
)


@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM, nn.GRU])
def test_an_empty_sequence_is_a_shape_error(cls: Any) -> None:
    # T = 0 used to end in a bare ValueError ("need at least one array to stack").
    xp = nb.namespace()
    with pytest.raises(ShapeError, match="at least one time step"):
        cls(3, 4)(xp.ones((2, 0, 3)))


@pytest.mark.parametrize("cls", [nn.RNNCell, nn.LSTMCell, nn.GRUCell])
def test_a_cell_given_a_list_says_to_make_it_an_array(cls: Any) -> None:
    # Used to be AttributeError: 'list' object has no attribute 'ndim'.
    with pytest.raises(BackendMismatchError, match="not an array"):
        cls(3, 4)([[1.0, 2.0, 3.0]])


def test_the_functional_forms_given_a_list_say_to_make_it_an_array() -> None:
    from nnbackend.nn import recurrent as R

    xp = nb.namespace()
    wx, wh, b = xp.ones((3, 4)), xp.ones((4, 4)), xp.ones((4,))
    with pytest.raises(BackendMismatchError, match="not an array"):
        R.rnn([[[1.0, 2.0, 3.0]]], None, wx, wh, b)


def test_set_state_of_an_lstm_needs_h_and_c() -> None:
    # set_state(h) on an LSTM was accepted, and the next call failed with a bare ValueError
    # (not enough values to unpack).
    xp = nb.namespace()
    lstm = nn.LSTM(3, 4, stateful=True)
    with pytest.raises(ArgumentError, match=r"\(h, c\)"):
        lstm.set_state(xp.zeros((2, 4)))
    with pytest.raises(ArgumentError, match="one array"):
        nn.RNN(3, 4, stateful=True).set_state(xp.zeros((2, 4)), xp.zeros((2, 4)))
    lstm.set_state(xp.zeros((2, 4)), xp.zeros((2, 4)))  # the right count is fine
    assert lstm(xp.ones((2, 5, 3)))[0].shape == (2, 5, 4)


@pytest.mark.parametrize("cls", [nn.RNNCell, nn.LSTMCell, nn.GRUCell])
def test_a_cell_refuses_stateful_instead_of_ignoring_it(cls: Any) -> None:
    # A cell built with stateful=True silently kept nothing between calls.
    with pytest.raises(ArgumentError, match="stateful"):
        cls(3, 4, stateful=True)


def test_attention_over_no_encoder_steps_is_a_shape_error() -> None:
    # Te = 0 ended in a bare ValueError from the softmax's reshape.
    xp = nb.namespace()
    with pytest.raises(ShapeError, match="at least one encoder step"):
        nn.TimeAttention()(xp.ones((2, 0, 3)), xp.ones((2, 4, 3)))
    with pytest.raises(ShapeError, match="at least one encoder step"):
        nn.Attention()(xp.ones((2, 0, 3)), xp.ones((2, 3)))


def test_unigram_sampler_rejects_float_or_text_word_ids() -> None:
    # 0.5 and 1.7 were silently truncated to the ids 0 and 1.
    with pytest.raises(DtypeError, match="integer"):
        nn.UnigramSampler(np.array([0.5, 1.7, 2.2, 3.0]), sample_size=2)
    with pytest.raises(DtypeError, match="integer"):
        nn.UnigramSampler([0.5, 1.7, 2.2, 3.0], sample_size=2)
    with pytest.raises(DtypeError, match="integer"):
        nn.UnigramSampler(["a", "b", "c"], sample_size=1)
    with nb.using(backend="array_api_strict"):
        xp = nb.namespace()
        with pytest.raises(DtypeError, match="integer"):
            nn.UnigramSampler(xp.asarray([0.0, 1.0, 2.0]), sample_size=1)
        ok = nn.UnigramSampler(xp.asarray([0, 1, 2, 0]), sample_size=1)
        assert ok.vocab_size == 3


def test_exclude_target_rejects_targets_outside_the_vocabulary() -> None:
    # Target -1 silently excluded the LAST word instead of being an error; target 9 of a
    # 5-word vocabulary was a bare IndexError.
    xp = nb.namespace()
    s = nn.UnigramSampler([0, 1, 2, 3, 4, 0, 1], sample_size=2, exclude_target=True, generator=0)
    for bad in (-1, 9):
        with pytest.raises(ArgumentError, match=r"\[0, 5\)"):
            s.sample(xp.asarray([bad, 0]))
    with pytest.raises(DtypeError, match="integer"):
        s.sample(xp.asarray([1.5, 0.0]))


@pytest.mark.parametrize("exclude", [False, True])
def test_sampler_of_an_empty_batch_and_of_a_list(exclude: bool) -> None:
    xp = nb.namespace()
    s = nn.UnigramSampler([0, 1, 2, 3, 4, 0], sample_size=2, exclude_target=exclude, generator=0)
    # An empty batch gives (0, K) (was an IndexError with exclude_target=True).
    assert tuple(s.sample(xp.asarray([], dtype=xp.int64)).shape) == (0, 2)
    # A list of targets: the error names it (was AttributeError: no attribute 'shape').
    with pytest.raises(BackendMismatchError, match="not an array"):
        s.sample([1, 0])
    with pytest.raises(ShapeError, match=r"\(N,\)"):
        s.sample(xp.asarray(1))


def test_embedding_dot_hidden_size_mismatch_is_a_shape_error() -> None:
    # h (N, 3) against a weight of 4 columns was a bare broadcasting ValueError.
    xp = nb.namespace()
    h = xp.ones((2, 3))
    for idx in (xp.asarray([1, 0]), xp.asarray([[1, 2], [0, 3]])):
        with pytest.raises(ShapeError, match="embedding_dim"):
            nn.EmbeddingDot(5, 4)(h, idx)
    with pytest.raises(BackendMismatchError, match="not an array"):
        nn.EmbeddingDot(5, 3)([[1.0, 2.0, 3.0]], xp.asarray([1]))
    with pytest.raises(BackendMismatchError, match="not an array"):
        nn.EmbeddingDot(5, 3)(h, [1, 0])


def test_co_matrix_rejects_ids_outside_the_vocabulary() -> None:
    # A negative id wrapped around into another word's cell: wrong counts, no error.
    xp = nb.namespace()
    with pytest.raises(ArgumentError, match=r"\[0, 3\)"):
        text.create_co_matrix(xp.asarray([0, -1, 1]), 3)
    with pytest.raises(ArgumentError, match=r"\[0, 3\)"):
        text.create_co_matrix(xp.asarray([0, 3, 1]), 3)
    with pytest.raises(DtypeError, match="integer"):
        text.create_co_matrix(xp.asarray([0.0, 1.0, 1.0]), 3)
    c = text.create_co_matrix(xp.asarray([0, 1, 2]), 3)
    assert np.asarray(c).tolist() == [[0, 1, 0], [1, 0, 1], [0, 1, 0]]


def test_analogy_ranks_correctly_when_a_word_vector_is_zero() -> None:
    # A zero row (a word PPMI never saw co-occur) gave a NaN similarity, and NaN keys broke
    # the sort: the best word was not first.
    rows = {
        "far": [1.0, 0.0, -1.0],
        "z": [0.0, 0.0, 0.0],  # a zero vector
        "best": [0.0, 1.0, 1.0],  # similarity 1 with b - a + c = (0, 1, 1)
        "a": [1.0, 0.0, 0.0],
        "b": [1.0, 1.0, 0.0],
        "c": [0.0, 0.0, 1.0],
        "mid": [0.0, 1.0, 0.2],
    }
    w2i = {w: i for i, w in enumerate(rows)}
    i2w = {i: w for w, i in w2i.items()}
    m = nb.namespace().asarray(list(rows.values()))
    got = text.analogy("a", "b", "c", w2i, i2w, m, top=4)
    assert [w for w, _ in got] == ["best", "mid", "z", "far"]
    assert all(np.isfinite(s) for _, s in got)
    assert got[2][1] == 0.0


def test_lm_batch_and_eval_perplexity_reject_bad_sizes() -> None:
    xp = nb.namespace()
    xs = xp.arange(10)
    with pytest.raises(ArgumentError, match="batch_size"):
        text.lm_batch(xs, xs, 0, 3, 0)  # was ZeroDivisionError
    with pytest.raises(ShapeError, match="same length"):
        text.lm_batch(xs, xp.arange(5), 2, 3, 0)  # was IndexError
    corpus = list(range(100))
    for bs, ts in ((0, 5), (5, 0), (-5, -5)):
        with pytest.raises(ArgumentError, match="batch_size"):
            text.eval_perplexity(lambda x, t: 1.0, corpus, bs, ts)


class _LM(nn.Module):
    """A language model that holds a stateful LSTM but has no reset_state of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.lstm = nn.LSTM(4, 4, stateful=True)
        self.out = nn.Linear(4, 10)

    def forward(self, x: Any, t: Any) -> Any:
        hs, _ = self.lstm(self.emb(x))
        n, steps = x.shape
        xp = nb.namespace()
        return nn.functional.softmax_cross_entropy(
            self.out(hs).reshape(n * steps, 10), xp.reshape(t, (-1,))
        )


def test_eval_perplexity_starts_stateful_layers_inside_a_model_afresh() -> None:
    # The stateful LSTM inside kept the state of the previous evaluation (or training):
    # two evaluations of the same model differed, and another batch size was a ShapeError.
    with nb.using(backend="numpy", dtype="float64"):
        model = _LM()
        corpus = [int(i) for i in np.random.default_rng(0).integers(0, 10, size=200)]
        p1 = text.eval_perplexity(model, corpus, 2, 5)
        p2 = text.eval_perplexity(model, corpus, 2, 5)
        assert p1 == p2
        text.eval_perplexity(model, corpus, 3, 5)


def test_errors_are_nnbackend_errors() -> None:
    # Guard: every error above is one of nnbackend's (catchable as NNBackendError).
    for cls in (ArgumentError, BackendMismatchError, DtypeError, ShapeError):
        assert issubclass(cls, NNBackendError)


def test_layout_converters_reject_weights_of_another_layer() -> None:
    # Weights that do not form the layer were silently cut or shuffled: 10 LSTM rows came
    # back as 8 (two dropped), and an RNN's (D, H) weight was "reordered" in blocks of H/4.
    from nnbackend.nn import recurrent as R

    with pytest.raises(ShapeError, match="LSTM"):
        R.from_torch_layout("lstm", np.ones((10, 5)), np.ones((10, 4)))
    with pytest.raises(ShapeError, match="LSTM"):
        R.from_torch_layout("lstm", np.ones((16, 5)), np.ones((16, 4)), np.ones(12))
    with pytest.raises(ShapeError, match="LSTM"):
        R.to_torch_layout("lstm", np.ones((5, 4)), np.ones((4, 4)), np.ones(4))
    with pytest.raises(ShapeError, match="RNN"):
        R.to_torch_layout("rnn", np.ones((5, 4)), np.ones((4, 4)), np.ones(3))
    # The right shapes still convert, both ways.
    wx, wh, b = R.from_torch_layout("lstm", np.ones((16, 5)), np.ones((16, 4)), np.ones(16))
    assert (wx.shape, wh.shape, b.shape) == ((5, 16), (4, 16), (16,))
    assert R.to_torch_layout("lstm", wx, wh, b)["weight_hh_l0"].shape == (16, 4)
