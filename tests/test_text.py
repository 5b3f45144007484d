"""nb.text helpers (the book's common/util.py) and the text data sets."""

from __future__ import annotations

import math
import urllib.error
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend.errors import ArgumentError, DownloadError
from nnbackend.namespace import backend_for
from nnbackend.text import corpora

TEXT = "You say goodbye and I say hello."


def _host(a: Any) -> np.ndarray:
    return np.asarray(backend_for(a)[1].to_host(a))


def test_preprocess_and_count_based_vectors_match_the_book(xp: Any, dtype: str) -> None:
    corpus, w2i, i2w = nb.text.preprocess(TEXT)
    assert _host(corpus).tolist() == [0, 1, 2, 3, 4, 1, 5, 6]
    assert i2w[6] == "." and w2i["say"] == 1
    c = nb.text.create_co_matrix(corpus, len(w2i))
    expected_c = np.array(
        [
            [0, 1, 0, 0, 0, 0, 0],
            [1, 0, 1, 0, 1, 1, 0],
            [0, 1, 0, 1, 0, 0, 0],
            [0, 0, 1, 0, 1, 0, 0],
            [0, 1, 0, 1, 0, 0, 0],
            [0, 1, 0, 0, 0, 0, 1],
            [0, 0, 0, 0, 0, 1, 0],
        ]
    )
    np.testing.assert_array_equal(_host(c), expected_c)
    # The book's ppmi, its double loop verbatim.
    n, s = expected_c.sum(), expected_c.sum(axis=0)
    ref = np.zeros((7, 7))
    for i in range(7):
        for j in range(7):
            ref[i, j] = max(0, np.log2(expected_c[i, j] * n / (s[j] * s[i]) + 1e-8))
    eps = float(np.finfo(dtype).eps)
    np.testing.assert_allclose(_host(nb.text.ppmi(c)), ref, rtol=10 * eps, atol=10 * eps)
    top = nb.text.most_similar("you", w2i, i2w, xp.asarray(expected_c.astype(dtype)), top=3)
    assert [w for w, _ in top] == ["goodbye", "i", "hello"]
    book = 1 / ((1 + 1e-8) * (math.sqrt(2) + 1e-8))  # the book: x / (norm + eps), y too
    assert abs(top[0][1] - book) < 10 * eps


def test_ppmi_of_a_word_that_never_co_occurs_is_zero(xp: Any, dtype: str) -> None:
    """Its column sum is 0 (and so is its row and column of C): 0, not NaN, and no warning;
    the other words' values are the book's."""
    c = np.array([[0, 0, 0], [0, 0, 2], [0, 2, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _host(nb.text.ppmi(xp.asarray(c)))
    want = np.zeros((3, 3))
    want[1, 2] = want[2, 1] = np.log2(2 * 4 / (2 * 2) + 1e-8)  # 1
    np.testing.assert_allclose(got, want, rtol=1e-3)


def test_create_contexts_target(xp: Any) -> None:
    corpus, _, _ = nb.text.preprocess(TEXT)
    contexts, target = nb.text.create_contexts_target(corpus, window_size=2)
    assert _host(target).tolist() == [2, 3, 4, 1]
    assert _host(contexts).tolist() == [[0, 1, 3, 4], [1, 2, 4, 1], [2, 3, 1, 5], [3, 4, 5, 6]]
    with pytest.raises(ArgumentError):
        nb.text.create_contexts_target(corpus, window_size=4)


def test_analogy_finds_the_parallel_word() -> None:
    w2i = {"man": 0, "king": 1, "woman": 2, "queen": 3, "apple": 4}
    i2w = {i: w for w, i in w2i.items()}
    w = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1], [1, -1, 0.5]], dtype=float)
    assert nb.text.analogy("man", "king", "woman", w2i, i2w, w, top=1)[0][0] == "queen"


def test_lm_batch_is_the_books_get_batch(xp: Any) -> None:
    xs = xp.asarray(np.arange(20))
    ts = xp.asarray(np.arange(1, 21))
    bx, bt = nb.text.lm_batch(xs, ts, batch_size=2, time_size=3, time_idx=9)
    # The book: offsets i * (20 // 2); rows read (offset + time_idx + t) % 20.
    assert _host(bx).tolist() == [[9, 10, 11], [19, 0, 1]]
    assert _host(bt).tolist() == [[10, 11, 12], [20, 1, 2]]


def test_eval_perplexity_of_a_uniform_model_is_the_vocabulary_size() -> None:
    with nb.using(backend="numpy", dtype="float64"):
        seen = []

        class Uniform:
            def reset_state(self) -> None:
                seen.append("reset")

            def __call__(self, xs: Any, ts: Any) -> Any:
                seen.append(tuple(xs.shape))
                logits = nb.namespace().zeros((*xs.shape, 7))
                return nb.nn.functional.softmax_cross_entropy(logits, ts)

        ppl = nb.text.eval_perplexity(Uniform(), list(range(7)) * 30, batch_size=2, time_size=5)
        assert abs(ppl - 7.0) < 1e-12
        assert seen[0] == "reset" and seen[1:] == [(2, 5)] * ((210 - 1) // 10)


def _fake_ptb(folder: Path) -> None:
    folder.mkdir()
    (folder / "ptb.train.txt").write_text(" the cat sat\n the dog sat on the cat\n")
    (folder / "ptb.valid.txt").write_text(" the dog sat\n")
    (folder / "ptb.test.txt").write_text(" on the cat\n")


def test_ptb_downloads_once_checks_the_checksum_and_builds_the_books_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = tmp_path / "server"
    _fake_ptb(server)
    monkeypatch.setenv(corpora.CACHE_ENV, str(tmp_path / "cache"))
    url = server.as_uri() + "/"
    corpus, w2i, _ = nb.datasets.ptb("train", url_base=url)
    # The book: lines end with <eos>, ids by first appearance in the training file.
    assert list(w2i) == ["the", "cat", "sat", "<eos>", "dog", "on"]
    assert _host(corpus).tolist() == [0, 1, 2, 3, 0, 4, 2, 5, 0, 1, 3]
    val, w2i_val, _ = nb.datasets.ptb("val", url_base=url)
    assert w2i_val == w2i and _host(val).tolist() == [0, 4, 2, 3]
    cached = tmp_path / "cache" / "ptb" / "ptb.train.txt"
    assert cached.is_file() and (cached.parent / "ptb.train.txt.sha256").is_file()

    def offline(*args: Any, **kwargs: Any) -> Any:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(corpora, "_urlopen", offline)
    assert _host(nb.datasets.ptb("val").corpus).tolist() == [0, 4, 2, 3]  # from the cache
    with pytest.raises(DownloadError, match=r"curl -fLO .*ptb\.test\.txt"):
        nb.datasets.ptb("test")
    cached.write_text(" the cat\n")  # damaged copy
    with pytest.raises(DownloadError, match="sha256"):
        nb.datasets.ptb("train")
    with pytest.raises(ArgumentError):
        nb.datasets.ptb("dev")


def test_ptb_pinned_checksum_rejects_another_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = tmp_path / "server"
    _fake_ptb(server)
    monkeypatch.setenv(corpora.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(DownloadError, match="expected 00"):
        nb.datasets.ptb(url_base=server.as_uri() + "/", sha256={"ptb.train.txt": "00" * 32})
    assert not (tmp_path / "cache" / "ptb" / "ptb.train.txt").exists()


def test_generated_sequence_tasks() -> None:
    data = nb.datasets.addition(200, seed=3)
    assert tuple(data.x_train.shape) == (180, 7) and tuple(data.t_test.shape) == (20, 5)
    for q, a in zip(_host(data.x_train).tolist(), _host(data.t_train).tolist(), strict=True):
        question = "".join(data.id_to_char[i] for i in q)
        answer = "".join(data.id_to_char[i] for i in a)
        x, y = question.split("+")
        assert answer[0] == "_" and int(answer[1:]) == int(x) + int(y)
    dates = nb.datasets.date_format(100, seed=3)
    assert tuple(dates.x_train.shape) == (90, 29) and tuple(dates.t_train.shape) == (90, 11)
    first = "".join(dates.id_to_char[i] for i in _host(dates.t_train)[0].tolist())
    assert first[0] == "_" and first[5] == "-"
    again = nb.datasets.addition(200, seed=3)
    assert _host(again.x_train).tolist() == _host(data.x_train).tolist()
    corpus = nb.datasets.tiny_corpus()
    assert len(corpus.word_to_id) > 20 and _host(corpus.corpus).shape[0] > 2000
