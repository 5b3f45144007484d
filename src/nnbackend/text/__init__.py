"""The text helpers of the book's ``common/util.py``, on any backend.

``preprocess`` turns a text into word ids; ``create_co_matrix``, ``ppmi``, ``cos_similarity``,
``most_similar`` and ``analogy`` are chapters 2-4's count- and inference-based word vectors;
``create_contexts_target`` makes CBOW's training pairs; ``lm_batch`` and ``eval_perplexity``
are the language-model batching and evaluation of chapters 5-6. Everything runs on the active
backend's arrays (word ids in the namespace's index dtype: int64, int32 on jax without x64),
written against the Array API only.

>>> import nnbackend as nb
>>> corpus, word_to_id, id_to_word = nb.text.preprocess("You say goodbye and I say hello.")
>>> corpus.tolist() if hasattr(corpus, "tolist") else list(corpus)
[0, 1, 2, 3, 4, 1, 5, 6]
>>> contexts, target = nb.text.create_contexts_target(corpus, window_size=1)
>>> tuple(contexts.shape), tuple(target.shape)
((6, 2), (6,))
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nnbackend.autograd.mode import no_grad
from nnbackend.autograd.ops import scatter_add_rows
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import ArgumentError, DtypeError, ShapeError
from nnbackend.namespace import array_namespace, namespace

__all__ = [
    "analogy",
    "cos_similarity",
    "create_co_matrix",
    "create_contexts_target",
    "eval_perplexity",
    "lm_batch",
    "most_similar",
    "perplexity",
    "ppmi",
    "preprocess",
    "tokenize",
]


def tokenize(text: str) -> list[str]:
    """The book's tokenisation: lower case, a space before each ``.``, split on whitespace."""
    return text.lower().replace(".", " .").split()


def preprocess(
    text: str | Sequence[str], word_to_id: dict[str, int] | None = None
) -> tuple[Any, dict[str, int], dict[int, str]]:
    """Word ids of ``text`` (a string, or a list of words already split) in order of first
    appearance, as the book's ``preprocess``: ``(corpus, word_to_id, id_to_word)``.

    ``corpus`` is an array of the active backend's index dtype (int64; int32 on jax without
    x64). Pass ``word_to_id`` to extend an
    existing vocabulary (it is updated in place with the new words).
    """
    words = tokenize(text) if isinstance(text, str) else [str(w) for w in text]
    w2i = {} if word_to_id is None else word_to_id
    for w in words:
        if w not in w2i:
            w2i[w] = len(w2i)
    i2w = {i: w for w, i in w2i.items()}
    xp = namespace()
    return xp.asarray([w2i[w] for w in words], dtype=_index_dtype(xp)), w2i, i2w


def _index_dtype(xp: Any) -> Any:
    """The namespace's own integer dtype for indices (Array API ``default_dtypes``): int64,
    or int32 where asking for int64 would be truncated with a warning (jax without x64)."""
    return xp.__array_namespace_info__().default_dtypes()["indexing"]


def _ids(xp: Any, corpus: Any) -> Any:
    if isinstance(corpus, list | tuple | range):
        return xp.asarray(list(corpus), dtype=_index_dtype(xp))
    return corpus


def create_contexts_target(corpus: Any, window_size: int = 1) -> tuple[Any, Any]:
    """CBOW's pairs: ``contexts`` (N, 2*window_size), the words around each position, and
    ``target`` (N,), the word in the middle, for N = len(corpus) - 2*window_size."""
    xp = array_namespace(corpus) if not isinstance(corpus, list | tuple | range) else namespace()
    ids = _ids(xp, corpus)
    ws = int(window_size)
    n = ids.shape[0] - 2 * ws
    if ws < 1 or n < 1:
        raise ArgumentError(
            f"create_contexts_target: window_size must be >= 1 and leave a target in a corpus "
            f"of {ids.shape[0]} words, got window_size={window_size}"
        )
    target = ids[ws : ws + n]
    offsets = [k for k in range(-ws, ws + 1) if k != 0]
    contexts = xp.stack([ids[ws + k : ws + k + n] for k in offsets], axis=1)
    return contexts, target


def create_co_matrix(corpus: Any, vocab_size: int, window_size: int = 1) -> Any:
    """The co-occurrence matrix (vocab_size, vocab_size) of the book's chapter 2, in the
    index dtype (int64; int32 on jax without x64):
    ``C[w, c]`` counts how often ``c`` lies within ``window_size`` of ``w``."""
    xp = array_namespace(corpus) if not isinstance(corpus, list | tuple | range) else namespace()
    ids = _ids(xp, corpus)
    v = int(vocab_size)
    size = ids.shape[0]
    index = _index_dtype(xp)
    if not xp.isdtype(ids.dtype, "integral"):
        raise DtypeError(f"create_co_matrix: word ids must be integers, got {ids.dtype}")
    # The cell of (w, c) is w * v + c: an id outside [0, v) lands in another word's cell (a
    # negative one silently) or past the end. Two numbers read back, once per matrix.
    if size and (int(xp.min(ids)) < 0 or int(xp.max(ids)) >= v):
        raise ArgumentError(
            f"create_co_matrix: word ids must lie in [0, {v}) for vocab_size={v}; found ids "
            f"from {int(xp.min(ids))} to {int(xp.max(ids))}"
        )
    c = xp.zeros((v * v, 1), dtype=index)
    for k in range(1, int(window_size) + 1):
        if k >= size:
            break
        a, b = ids[:-k], ids[k:]
        ones = xp.ones((a.shape[0], 1), dtype=index)
        for rows, cols in ((a, b), (b, a)):
            c = scatter_add_rows(xp, c, rows * v + cols, ones)
    return xp.reshape(c, (v, v))


def cos_similarity(x: Any, y: Any, eps: float = 1e-8) -> Any:
    """Cosine similarity of two vectors (a 0-d array), or of each row of ``x`` (V, H) with
    ``y`` (H,) (an array (V,)); ``eps`` keeps a zero vector from dividing by zero."""
    xp = array_namespace(x, y)
    nx = x / (xp.sqrt(xp.sum(x * x, axis=-1, keepdims=True)) + eps)
    ny = y / (xp.sqrt(xp.sum(y * y)) + eps)
    return xp.sum(nx * ny, axis=-1)


def ppmi(c: Any, eps: float = 1e-8) -> Any:
    """Positive pointwise mutual information of a co-occurrence matrix, in the active default
    float dtype: ``max(0, log2(C[i,j] * N / (S[i] * S[j]) + eps))`` with ``N`` the total and
    ``S`` the column sums (the book's loop, vectorised)."""
    xp = array_namespace(c)
    ns = namespace()
    cf = xp.astype(c, ns.asarray(0.0).dtype) if xp.isdtype(c.dtype, "integral") else c
    total = xp.sum(cf)
    s = xp.sum(cf, axis=0)
    # A word that never co-occurs has S = 0, and C = 0 in its row and column: its PPMI is 0
    # (dividing by S * S = 0 gave NaN). log2 is taken of positive values only (a ratio + eps
    # of 0, where eps is below float16's range, would be -inf): the PPMI is 0 there too.
    product = s[:, None] * s[None, :]
    ratio = cf * total / xp.where(product > 0, product, xp.ones_like(product)) + eps
    pmi = xp.log2(xp.where(ratio > 0, ratio, xp.ones_like(ratio)))
    return xp.maximum(pmi, xp.zeros_like(pmi))


def _host_list(x: Any) -> list[Any]:
    if isinstance(x, Tensor):
        x = x.data
    return x.tolist() if hasattr(x, "tolist") else list(x)


def _top(where: str, top: Any) -> int:
    """``top`` as a count >= 0: a negative one sliced ``[:-1]`` (dropping only the last word)
    and ``int(2.5)`` truncated, silently."""
    try:
        if isinstance(top, bool):
            raise TypeError
        count = operator.index(top)  # ints and integral numpy scalars, no floats
    except TypeError:
        raise ArgumentError(
            f"{where}: top must be an integer >= 0, got {top!r} of type {type(top).__name__}"
        ) from None
    if count < 0:
        raise ArgumentError(f"{where}: top must be an integer >= 0 (0 gives []), got {count}")
    return count


def most_similar(
    query: str,
    word_to_id: Mapping[str, int],
    id_to_word: Mapping[int, str],
    word_matrix: Any,
    top: int = 5,
) -> list[tuple[str, float]]:
    """The ``top`` words closest to ``query`` by cosine similarity of the rows of
    ``word_matrix``, as ``[(word, similarity), ...]`` best first (the book prints them);
    ``top`` is an integer >= 0 (0 gives ``[]``)."""
    count = _top("most_similar", top)
    if query not in word_to_id:
        raise ArgumentError(f"most_similar: {query!r} is not in the vocabulary")
    w = word_matrix.data if isinstance(word_matrix, Tensor) else word_matrix
    sims = _host_list(cos_similarity(w, w[word_to_id[query], ...]))
    order = sorted(range(len(sims)), key=lambda i: -sims[i])
    qid = word_to_id[query]
    return [(id_to_word[i], float(sims[i])) for i in order if i != qid][:count]


def _norm(xp: Any, a: Any, axis: int | None) -> Any:
    """The Euclidean norm of ``a`` (of its rows for ``axis=1``), 1 where it is 0: a zero
    vector normalises to itself (similarity 0) instead of NaN, whose sort keys would scramble
    the whole ranking."""
    n = xp.sqrt(xp.sum(a * a, axis=axis, keepdims=axis is not None))
    return xp.where(n > 0, n, xp.ones_like(n))


def analogy(
    a: str,
    b: str,
    c: str,
    word_to_id: Mapping[str, int],
    id_to_word: Mapping[int, str],
    word_matrix: Any,
    top: int = 5,
) -> list[tuple[str, float]]:
    """``a : b = c : ?``, answered by the words whose normalised vectors have the largest dot
    product with ``b - a + c`` (the book's ``analogy``), leaving out ``a``, ``b``, ``c``."""
    count = _top("analogy", top)
    for word in (a, b, c):
        if word not in word_to_id:
            raise ArgumentError(f"analogy: {word!r} is not in the vocabulary")
    w = word_matrix.data if isinstance(word_matrix, Tensor) else word_matrix
    xp = array_namespace(w)
    query = w[word_to_id[b], ...] - w[word_to_id[a], ...] + w[word_to_id[c], ...]
    query = query / _norm(xp, query, None)
    normed = w / _norm(xp, w, 1)
    sims = _host_list(normed @ query)
    skip = {word_to_id[a], word_to_id[b], word_to_id[c]}
    order = sorted(range(len(sims)), key=lambda i: -sims[i])
    return [(id_to_word[i], float(sims[i])) for i in order if i not in skip][:count]


def lm_batch(xs: Any, ts: Any, batch_size: int, time_size: int, time_idx: int) -> tuple[Any, Any]:
    """The book's ``RnnlmTrainer.get_batch``: ``batch_size`` rows that each read the corpus
    from their own offset (``i * (len(xs) // batch_size)``), ``time_size`` steps starting at
    ``time_idx``, wrapping around. Returns ``(batch_x, batch_t)`` of shape
    (batch_size, time_size); the caller advances ``time_idx`` by ``time_size``."""
    xp = array_namespace(xs)
    size = xs.shape[0]
    if int(batch_size) < 1 or int(time_size) < 1:
        raise ArgumentError(
            f"lm_batch: batch_size and time_size must be >= 1, got batch_size={batch_size}, "
            f"time_size={time_size}"
        )
    if ts.shape[0] != size:
        # The targets are read at the same positions as the inputs.
        raise ShapeError(
            f"lm_batch: xs and ts must have the same length, got {size} and {ts.shape[0]}"
        )
    jump = size // int(batch_size)
    if jump < 1:
        raise ShapeError(f"lm_batch: a corpus of {size} words is shorter than the batch size")
    index = _index_dtype(xp)
    offsets = xp.arange(int(batch_size), dtype=index) * jump
    steps = xp.arange(int(time_size), dtype=index) + int(time_idx)
    idx = xp.reshape((offsets[:, None] + steps[None, :]) % size, (-1,))
    shape = (int(batch_size), int(time_size))
    return xp.reshape(xp.take(xs, idx), shape), xp.reshape(xp.take(ts, idx), shape)


def perplexity(mean_loss: float) -> float:
    """``exp(mean cross-entropy)``: the number of words the model hesitates between (inf
    for a mean loss above about 709, where ``math.exp`` overflows)."""
    try:
        return math.exp(float(mean_loss))
    except OverflowError:
        return math.inf


def eval_perplexity(
    model: Callable[[Any, Any], Any],
    corpus: Any,
    batch_size: int = 10,
    time_size: int = 35,
) -> float:
    """The book's ``eval_perplexity``: run ``model(xs, ts)`` (returning the mean
    cross-entropy) over the corpus in ``batch_size`` parallel streams of ``time_size`` steps,
    without gradients, and return ``exp`` of the mean loss. Calls ``model.reset_state()``
    first when the model has one, and ``reset_state()`` of every module inside it that has
    one (stateful layers), so each evaluation starts afresh (reset them again before training
    on)."""
    xp = array_namespace(corpus) if not isinstance(corpus, list | tuple | range) else namespace()
    ids = _ids(xp, corpus)
    size = ids.shape[0]
    if int(batch_size) < 1 or int(time_size) < 1:
        raise ArgumentError(
            f"eval_perplexity: batch_size and time_size must be >= 1, got "
            f"batch_size={batch_size}, time_size={time_size}"
        )
    max_iters = (size - 1) // (int(batch_size) * int(time_size))
    if max_iters < 1:
        raise ArgumentError(
            f"eval_perplexity: a corpus of {size} words is shorter than one batch of "
            f"{batch_size} x {time_size} steps"
        )
    jump = (size - 1) // int(batch_size)
    reset = getattr(model, "reset_state", None)
    if reset is not None:
        reset()
    # A model without a reset_state of its own that holds stateful layers (an LSTM with
    # stateful=True): they would start from whatever ran last (training, an earlier
    # evaluation), and refuse another batch size. Start each afresh.
    modules = getattr(model, "modules", None)
    for module in modules() if callable(modules) else ():
        inner = getattr(module, "reset_state", None)
        if module is not model and callable(inner):
            inner()
    index = _index_dtype(xp)
    offsets = xp.arange(int(batch_size), dtype=index) * jump
    total = 0.0
    with no_grad():
        for it in range(max_iters):
            steps = xp.arange(int(time_size), dtype=index) + it * int(time_size)
            pos = offsets[:, None] + steps[None, :]
            shape = (int(batch_size), int(time_size))
            bx = xp.reshape(xp.take(ids, xp.reshape(pos % size, (-1,))), shape)
            bt = xp.reshape(xp.take(ids, xp.reshape((pos + 1) % size, (-1,))), shape)
            loss = model(bx, bt)
            total += float(loss.item() if isinstance(loss, Tensor) else loss)
    return math.exp(total / max_iters)
