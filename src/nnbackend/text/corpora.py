"""Text data sets of the book's chapters 2-8: Penn Treebank (downloaded once into a cache
folder), a small generated corpus for tests and quick runs, and the addition and date-format
sequence tasks of chapters 7-8 (generated, as the book's text files were).

All loaders are reachable as ``nb.datasets.ptb``, ``nb.datasets.tiny_corpus``,
``nb.datasets.addition`` and ``nb.datasets.date_format``. Word and character ids are arrays
of the active backend's index dtype (int64; int32 on jax without x64), as
:func:`nnbackend.text.preprocess` makes them.

>>> import nnbackend as nb
>>> corpus, word_to_id, id_to_word = nb.datasets.tiny_corpus()
>>> len(word_to_id) > 20
True
>>> data = nb.datasets.addition(1000)
>>> tuple(data.x_train.shape), tuple(data.t_train.shape)
((900, 7), (900, 5))
"""

from __future__ import annotations

import http.client
import os
import random as _pyrandom
import shlex
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, NamedTuple

from nnbackend.errors import ArgumentError, DownloadError
from nnbackend.namespace import namespace
from nnbackend.text import _index_dtype

__all__ = [
    "CACHE_ENV",
    "PTB_URL",
    "SequenceData",
    "TextCorpus",
    "addition",
    "date_format",
    "ptb",
    "text_cache_dir",
    "tiny_corpus",
]

#: The environment variable that overrides the folder downloaded data sets are kept in.
CACHE_ENV = "NNBACKEND_CACHE"
#: Where the book's ``dataset/ptb.py`` downloads the PTB text files from.
PTB_URL = "https://raw.githubusercontent.com/tomsercu/lstm/master/data/"
_PTB_FILES = {"train": "ptb.train.txt", "val": "ptb.valid.txt", "test": "ptb.test.txt"}

# Tests replace this to serve files without a network.
_urlopen = urllib.request.urlopen


class TextCorpus(NamedTuple):
    """``(corpus, word_to_id, id_to_word)``, as the book's loaders return them: ``corpus`` an
    array of word ids on the active backend, in its index dtype (int64; int32 on jax without
    x64)."""

    corpus: Any
    word_to_id: dict[str, int]
    id_to_word: dict[int, str]


class SequenceData(NamedTuple):
    """A character sequence task: ``x`` (N, Tin) and ``t`` (N, Tout) id arrays (index dtype:
    int64; int32 on jax without x64) for training and test, and the character vocabulary.
    A part with no samples keeps its width: (0, Tin) and (0, Tout)."""

    x_train: Any
    t_train: Any
    x_test: Any
    t_test: Any
    char_to_id: dict[str, int]
    id_to_char: dict[int, str]


def text_cache_dir() -> Path:
    """The folder downloaded data sets are kept in: :func:`nnbackend.datasets.cache_dir`
    (``$NNBACKEND_CACHE`` when set, else ``$XDG_CACHE_HOME/nnbackend``, else
    ``~/.cache/nnbackend``)."""
    from nnbackend.datasets import cache_dir  # datasets re-exports this module: import late

    return cache_dir()


def _sha256(path: Path) -> str:
    from nnbackend.datasets import sha256_file

    return sha256_file(path)


def _fetch_ptb(filename: str, url_base: str, expected: str | None) -> Path:
    """``text_cache_dir()/ptb/filename``, downloaded once. The sha256 of the first download
    is recorded next to the file (``filename.sha256``) and checked at every later load, so a
    truncated or altered copy is noticed; ``expected`` pins the checksum."""
    folder = text_cache_dir() / "ptb"
    path = folder / filename
    record = folder / (filename + ".sha256")
    if path.is_file():
        got = _sha256(path)
        want = expected or (record.read_text().strip() if record.is_file() else None)
        if want is None or got == want:
            if want is None:
                record.write_text(got + "\n")
            return path
        raise DownloadError(
            f"{path} has sha256 {got}, expected {want}: the copy is damaged or not the PTB "
            f"file. Delete it (rm {shlex.quote(str(path))} {shlex.quote(str(record))}) and "
            "load again"
        )
    url = url_base + filename
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{filename}.", suffix=".part")
    except OSError as exc:  # a file in the way of the folder, a folder that is read-only
        raise DownloadError(
            f"cannot write into the cache folder {folder} ({exc.strerror or exc}); remove what "
            f"is in the way, or set {CACHE_ENV} to a folder you can write to"
        ) from None
    try:
        with os.fdopen(fd, "wb") as out, _urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        got = _sha256(Path(tmp))
        if expected is not None and got != expected:
            raise DownloadError(f"{url} has sha256 {got}, expected {expected}")
        os.replace(tmp, path)
        record.write_text(got + "\n")
        return path
    # URLError, HTTPError, timeouts and full disks are OSErrors; a connection closed mid-file
    # is http.client's IncompleteRead, which is not.
    except (OSError, http.client.HTTPException) as exc:
        if isinstance(exc, DownloadError):
            raise
        from nnbackend.datasets import manual_download_command

        raise DownloadError(
            f"could not download {url} ({type(exc).__name__}: {exc}). If this machine is "
            f"offline, download the PTB files elsewhere and copy them into {folder} (or set "
            f"{CACHE_ENV} to a folder holding a 'ptb' folder with them):\n  "
            + manual_download_command(folder, url_base, _PTB_FILES.values())
        ) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _ptb_words(path: Path) -> list[str]:
    # The book's reading (each line ends with an <eos> token), robust to lines that lack the
    # PTB files' trailing space: the book's replace("\n", "<eos>") would glue those words.
    return path.read_text(encoding="utf-8").replace("\n", " <eos> ").split()


def ptb(
    split: str = "train", *, url_base: str = PTB_URL, sha256: dict[str, str] | None = None
) -> TextCorpus:
    """Penn Treebank as the book's ``ptb.load_data(split)``: ``split`` is "train", "val"
    (or "valid") or "test"; the vocabulary (10000 words with ``<eos>``) is numbered by first
    appearance in the training file, so ids agree with the book's.

    The files are downloaded once into ``text_cache_dir()/ptb`` (``$NNBACKEND_CACHE``
    overrides the folder) and checked against the sha256 recorded at download (or given in
    ``sha256``, a mapping file name -> hex digest). Offline, the error gives the command to
    download them by hand.
    """
    key = "val" if split == "valid" else split
    if key not in _PTB_FILES:
        raise ArgumentError(f"ptb split must be 'train', 'val' or 'test', got {split!r}")
    sums = sha256 or {}
    train_file = _fetch_ptb(_PTB_FILES["train"], url_base, sums.get(_PTB_FILES["train"]))
    word_to_id: dict[str, int] = {}
    for w in _ptb_words(train_file):
        if w not in word_to_id:
            word_to_id[w] = len(word_to_id)
    path = _fetch_ptb(_PTB_FILES[key], url_base, sums.get(_PTB_FILES[key]))
    words = _ptb_words(path)
    unknown = sorted({w for w in words if w not in word_to_id})
    if unknown:
        raise DownloadError(
            f"{path} holds words missing from the training vocabulary: {unknown[:5]}"
        )
    xp = namespace()
    corpus = xp.asarray([word_to_id[w] for w in words], dtype=_index_dtype(xp))
    return TextCorpus(corpus, word_to_id, {i: w for w, i in word_to_id.items()})


_SUBJECTS = ["the cat", "the dog", "a bird", "my friend", "the teacher", "you", "we", "they"]
_VERBS = ["sees", "likes", "finds", "follows", "meets", "helps", "watches", "greets"]
_OBJECTS = ["the ball", "a house", "the river", "the old man", "a small boat", "the city"]
_PLACES = ["in the park", "near the river", "at home", "in the morning", "after school"]


def tiny_corpus(n_sentences: int = 400, seed: int = 0) -> TextCorpus:
    """A small English-like corpus generated from a fixed grammar (subject, verb, object,
    sometimes a place, then ``.``): a few thousand words over a few dozen, for tests and the
    examples' ``--quick`` mode. The same ``seed`` gives the same corpus everywhere."""
    rng = _pyrandom.Random(seed)
    words: list[str] = []
    for _ in range(int(n_sentences)):
        sentence = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
        if rng.random() < 0.5:
            sentence.append(rng.choice(_PLACES))
        words.extend([*" ".join(sentence).split(), "."])
    word_to_id: dict[str, int] = {}
    for w in words:
        word_to_id.setdefault(w, len(word_to_id))
    xp = namespace()
    corpus = xp.asarray([word_to_id[w] for w in words], dtype=_index_dtype(xp))
    return TextCorpus(corpus, word_to_id, {i: w for w, i in word_to_id.items()})


def _split(
    questions: list[str],
    answers: list[str],
    seed: int,
    test_fraction: float,
    widths: tuple[int, int],
) -> SequenceData:
    """Number the characters by first appearance (questions then answers, line by line, as
    the book's ``sequence.load_data``), shuffle with ``seed`` and hold out a test part.
    ``widths`` are the question and answer lengths, the column counts of an empty part."""
    char_to_id: dict[str, int] = {}
    for q, a in zip(questions, answers, strict=True):
        for ch in q + a:
            char_to_id.setdefault(ch, len(char_to_id))
    order = list(range(len(questions)))
    _pyrandom.Random(seed).shuffle(order)
    split_at = len(order) - int(len(order) * test_fraction)
    xp = namespace()

    index = _index_dtype(xp)  # as preprocess: int64 made jax without x64 warn

    def ids(lines: list[str], idx: list[int], width: int) -> Any:
        # Built flat and reshaped: asarray([]) of no rows was (0,), not (0, width).
        flat = [char_to_id[c] for i in idx for c in lines[i]]
        return xp.reshape(xp.asarray(flat, dtype=index), (len(idx), width))

    train, test = order[:split_at], order[split_at:]
    tin, tout = widths
    return SequenceData(
        ids(questions, train, tin),
        ids(answers, train, tout),
        ids(questions, test, tin),
        ids(answers, test, tout),
        char_to_id,
        {i: c for c, i in char_to_id.items()},
    )


def addition(n: int = 50000, seed: int = 1984, test_fraction: float = 0.1) -> SequenceData:
    """Chapter 7's addition task, generated: questions ``"16+75  "`` (7 characters, padded)
    and answers ``"_91  "`` (``_`` starts decoding; 5 characters), ``a, b`` in [0, 999]."""
    rng = _pyrandom.Random(seed + 1)
    questions, answers = [], []
    for _ in range(int(n)):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        questions.append(f"{a}+{b}".ljust(7))
        answers.append(("_" + str(a + b)).ljust(5))
    return _split(questions, answers, seed, test_fraction, (7, 5))


_MONTHS = [
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
]  # fmt: skip
_DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def _date_text(rng: _pyrandom.Random, y: int, m: int, d: int, weekday: int) -> str:
    month, day = _MONTHS[m - 1], _DAYS[weekday]
    style = rng.randrange(8)
    if style == 0:
        text = f"{month} {d}, {y}"
    elif style == 1:
        text = f"{month.capitalize()} {d}, {y}"
    elif style == 2:
        text = f"{month[:3].upper()} {d}, {y}"
    elif style == 3:
        text = f"{day.upper()}, {month.upper()} {d}, {y}"
    elif style == 4:
        text = f"{day}, {month} {d}, {y}"
    elif style == 5:
        text = f"{m}/{d}/{y % 100:02d}"
    elif style == 6:
        text = f"{d} {month[:3]} {y}"
    else:
        text = f"{y}.{m:02d}.{d:02d}"
    return text


def date_format(n: int = 50000, seed: int = 1984, test_fraction: float = 0.1) -> SequenceData:
    """Chapter 8's date-format task, generated: dates written in eight styles
    (``"september 27, 1994"``, ``"TUESDAY, SEPTEMBER 25, 1984"``, ``"2/10/93"``, ...) padded
    to 29 characters, answers ``"_1994-09-27"`` (11 characters), dates from 1970 to 2029."""
    import datetime

    rng = _pyrandom.Random(seed + 2)
    start = datetime.date(1970, 1, 1).toordinal()
    end = datetime.date(2029, 12, 31).toordinal()
    questions, answers = [], []
    for _ in range(int(n)):
        day = datetime.date.fromordinal(rng.randint(start, end))
        text = _date_text(rng, day.year, day.month, day.day, day.weekday())
        questions.append(text.ljust(29))
        answers.append("_" + day.isoformat())
    return _split(questions, answers, seed, test_fraction, (29, 11))
