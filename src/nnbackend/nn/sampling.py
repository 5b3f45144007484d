"""Word2vec's output side (the book's chapter 4): ``EmbeddingDot``, the unigram negative
sampler and ``NegativeSamplingLoss``.

The sampler draws from the unigram distribution raised to ``power`` (0.75, as word2vec and the
book do) with the host generator of :mod:`nnbackend.random`, and moves the ids to the targets'
backend (``draw``: the active one): one seed gives the same negatives on numpy, torch, cupy
and array-api-strict.

>>> import nnbackend as nb
>>> sampler = nb.nn.UnigramSampler([0, 1, 2, 3, 0, 1, 0], sample_size=2, generator=0)
>>> tuple(sampler.sample(nb.namespace().asarray([0, 1, 2])).shape)
(3, 2)
"""

from __future__ import annotations

import math
import numbers
import operator
from collections import Counter
from collections.abc import Sequence
from typing import Any

from nnbackend import random as _random
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import ArgumentError, BackendMismatchError, DtypeError, ShapeError
from nnbackend.namespace import backend_for
from nnbackend.nn import functional as F
from nnbackend.nn import init
from nnbackend.nn.module import Module, Parameter

__all__ = [
    "EmbeddingDot",
    "NegativeSamplingLoss",
    "UnigramSampler",
    "embedding_dot",
    "negative_sampling_loss",
]


# The most word ids (``vocab_size``) a corpus shorter than that may imply: the sampler keeps
# one weight per id, so a larger vocabulary than the corpus has words (a remapped corpus,
# ids 0..V-1, never has) is a corpus of unmapped ids (hashes, raw token numbers), not a
# vocabulary of that many words.
_MAX_SPARSE_VOCAB = 2**22


def _data(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def _not_ids(found: Any, where: str) -> DtypeError:
    return DtypeError(
        f"{where}: word ids must be integers, got {found}; a float or text id is no word id "
        "(convert the words with nnbackend.text.preprocess, or cast whole-number ids with "
        "xp.astype(ids, xp.int64))"
    )


def _id_list(a: Any, where: str = "UnigramSampler") -> list[int]:
    """Word ids as a Python list, from a sequence or an array of any backend. Float or text
    ids are a :class:`DtypeError` (``int()`` truncated 1.7 to the id 1 without a word)."""
    if isinstance(a, Sequence):
        try:
            return [operator.index(i) for i in a]
        except TypeError:
            bad = next((i for i in a if not hasattr(type(i), "__index__")), a)
            raise _not_ids(repr(bad), where) from None
    d = _data(a)
    if not hasattr(d, "shape"):
        raise F.not_an_array(d, where)
    xp, record = backend_for(d)
    if not xp.isdtype(d.dtype, "integral"):
        raise _not_ids(f"dtype {d.dtype}", where)
    found = record.to_host(d) if not hasattr(d, "tolist") else d
    return [int(i) for i in found.reshape(-1).tolist()]


def _integer(name: str, value: Any) -> int:
    """``value`` as an int (a Python or NumPy integer), or an ArgumentError naming ``name``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise ArgumentError(
            f"UnigramSampler: {name} must be an integer, got {value!r} of type "
            f"{type(value).__name__}"
        ) from None


def _as_generator(generator: Any) -> Any:
    """``generator`` as a :class:`nnbackend.random.Generator` (or None for the module-level
    one): a Generator as it is, an integer (``numpy.int64`` too) as its seed. Anything else
    is an :class:`ArgumentError`: a NumPy Generator was called as ``choice(n, size, p)``,
    whose third argument is NumPy's ``replace``, and drew every word uniformly."""
    if generator is None or isinstance(generator, _random.Generator):
        return generator
    if not isinstance(generator, bool):
        try:
            seed = operator.index(generator)
        except TypeError:
            pass
        else:
            return _random.Generator(seed)
    raise ArgumentError(
        f"UnigramSampler: generator must be an nnbackend.random.Generator, an integer seed or "
        f"None, got {type(generator).__module__}.{type(generator).__qualname__}; for a NumPy "
        "Generator pass a seed instead (generator=0)"
    )


class UnigramSampler:
    """Negative samples drawn with probability ``count(w) ** power / sum(count ** power)``.

    ``power`` is any finite real number (0.75, as the book and word2vec; 0 draws the corpus's
    words uniformly, a negative power favours rare words). A word id that never occurs in
    ``corpus`` (an id below ``vocab_size`` missing from it) is never drawn, for every power.

    ``corpus`` is a sequence (list, host or backend array) of word ids; ``vocab_size``
    defaults to ``max(corpus) + 1``. ``generator`` is a :class:`nnbackend.random.Generator`,
    a seed, or None (the module-level generator). The sampler keeps one weight per id below
    ``vocab_size``, so a vocabulary larger than both 2**22 ids and the corpus's length (ids
    that were never remapped, such as hashes: ``[0, 10**12]``) is an
    :class:`~nnbackend.errors.ArgumentError`; remap the ids to ``0..V-1`` first.

    ``exclude_target=False`` (default) draws all ``(N, sample_size)`` ids at once, with
    replacement (the book's GPU path): no device sync, one host draw per batch.
    ``exclude_target=True`` is the book's CPU path: per row, ``sample_size`` distinct ids
    other than that row's target (reads the targets back to the host).
    """

    def __init__(
        self,
        corpus: Any,
        power: float = 0.75,
        sample_size: int = 5,
        *,
        vocab_size: int | None = None,
        exclude_target: bool = False,
        generator: Any = None,
    ) -> None:
        ids = _id_list(corpus)
        if not ids or min(ids) < 0:
            raise ArgumentError("UnigramSampler needs a non-empty corpus of word ids >= 0")
        top = max(ids)
        # Checked as integers: int() truncated vocab_size=5.7 and sample_size=2.5 silently,
        # read the text "2" as 2, and failed on "x" or None with a bare ValueError/TypeError.
        size = top + 1 if vocab_size is None else _integer("vocab_size", vocab_size)
        if size <= top:
            raise ArgumentError(f"UnigramSampler: vocab_size={size} but the corpus holds id {top}")
        if size > max(_MAX_SPARSE_VOCAB, len(ids)):
            # Checked before the weights: one list entry per id below vocab_size, so the
            # corpus [0, 10**12] built a list of 10**12 floats (a hang, then no memory).
            implied = (
                f"the largest id {top} implies a vocabulary of {size} words (largest id + 1)"
                if vocab_size is None
                else f"vocab_size={size} (the corpus's largest id is {top}) means {size} words"
            )
            raise ArgumentError(
                f"UnigramSampler: {implied}, but the corpus holds only {len(set(ids))} "
                f"distinct ids in {len(ids)} words; the sampler keeps one weight per id in "
                "0..vocab_size-1, so remap the ids to 0..V-1 (V the number of distinct words: "
                "np.unique(corpus, return_inverse=True)[1], or nnbackend.text.preprocess on "
                "the text) and leave vocab_size out or make it V"
            )
        sample_size = _integer("sample_size", sample_size)
        if sample_size < 1:
            raise ArgumentError(f"sample_size must be >= 1, got {sample_size}")
        given: Any = power  # (typed float, but a user may pass anything)
        if (
            type(given) is bool
            or not isinstance(given, numbers.Real)
            or not math.isfinite(float(given))
        ):
            # Checked here: float() took the text "0.75" and True silently, failed on "a"
            # with a bare ValueError, and a NaN power made NaN probabilities.
            raise ArgumentError(
                f"UnigramSampler: power must be a finite real number (0.75 as in word2vec), "
                f"got {power!r}"
            )
        self.vocab_size = size
        self.power = float(power)
        self.sample_size = int(sample_size)
        self.exclude_target = bool(exclude_target)
        counts = Counter(ids)
        # A word of count 0 gets weight 0 whatever the power: 0.0 ** 0 is 1 (power=0 sampled
        # words the corpus lacks) and 0.0 ** -0.5 raised ZeroDivisionError.
        try:
            weights = [float(counts[i]) ** self.power if counts[i] else 0.0 for i in range(size)]
            total = math.fsum(weights)
        except OverflowError:  # count ** power, or their sum, beyond the float range
            raise ArgumentError(
                f"UnigramSampler: power={power} overflows the counts of this corpus "
                f"(largest count {max(counts.values())}); use a smaller power"
            ) from None
        if total == 0.0:  # every count ** power underflowed (a bare ZeroDivisionError below)
            raise ArgumentError(
                f"UnigramSampler: power={power} underflows the counts of this corpus (smallest "
                f"count {min(counts.values())}): every count ** power is 0.0; use a power "
                "closer to 0"
            )
        #: The sampling distribution, a list of ``vocab_size`` floats (on the host).
        self.word_p = [w / total for w in weights]
        if exclude_target and sum(1 for w in weights if w > 0) <= self.sample_size:
            raise ArgumentError(
                "exclude_target=True needs more distinct words in the corpus than sample_size"
            )
        self.generator = _as_generator(generator)

    def _generator(self) -> Any:
        return self.generator if self.generator is not None else _random.default_generator()

    def draw(self, shape: int | tuple[int, ...]) -> Any:
        """``shape`` ids drawn with replacement, as a backend int64 array."""
        return self._generator().choice(self.vocab_size, shape, self.word_p)

    def sample(self, target: Any) -> Any:
        """Negative ids of shape ``(N, sample_size)`` for targets ``(N,)``, on the targets'
        backend and device (:meth:`draw` gives the active backend's)."""
        td = _data(target)
        if not hasattr(td, "shape"):  # a list: say so (not "'list' has no attribute 'shape'")
            raise F.not_an_array(td, "UnigramSampler.sample")
        if td.ndim != 1:
            raise ShapeError(
                f"UnigramSampler.sample: expected targets of shape (N,), got {tuple(td.shape)}"
            )
        n = int(td.shape[0])
        if not self.exclude_target or n == 0:  # an empty batch: (0, K), as rows would be
            return _like(self.draw((n, self.sample_size)), td)
        rng = self._generator()
        rows = []
        targets = _id_list(td, "UnigramSampler.sample")
        wrong = [t for t in targets if not 0 <= t < self.vocab_size]
        if wrong:
            # p[-1] = 0 excluded the last word instead of the (impossible) target -1.
            raise ArgumentError(
                f"UnigramSampler.sample: targets must lie in [0, {self.vocab_size}) for a "
                f"vocabulary of {self.vocab_size} words; found {wrong[:5]} (a negative id "
                "does not count from the end)"
            )
        for t in targets:
            p = list(self.word_p)
            p[t] = 0.0
            total = math.fsum(p)
            p = [q / total for q in p]
            rows.append(rng.choice(self.vocab_size, self.sample_size, p, replace=False))
        xp = backend_for(rows[0])[0]
        return _like(xp.stack(rows, axis=0), td)


def _like(ids: Any, target: Any) -> Any:
    """The drawn ``ids`` (on the active backend) on ``target``'s backend and device: targets
    on torch while numpy was active got NumPy negatives, which the loss then refused."""
    if type(ids) is type(target) and getattr(ids, "device", None) == getattr(
        target, "device", None
    ):
        return ids
    return backend_for(target)[1].from_host(backend_for(ids)[1].to_host(ids), target.device)


def embedding_dot(h: Any, weight: Any, indices: Any) -> Tensor:
    """``sum(weight[indices] * h, axis=-1)``: the score of each id against its row of ``h``.

    ``h`` is (N, H); ``indices`` (N,) gives (N,), ``indices`` (N, K) gives (N, K).
    """
    idx = _data(indices)
    hd = _data(h)
    wd = _data(weight)
    for a in (hd, idx, wd):
        if not hasattr(a, "shape"):  # a list: say so (not "'list' has no attribute 'ndim'")
            raise F.not_an_array(a, "embedding_dot")
    # (ndim first: a 0-d index array ended in a bare IndexError on idx.shape[0])
    if hd.ndim != 2 or idx.ndim not in (1, 2) or idx.shape[0] != hd.shape[0]:
        raise ShapeError(
            f"embedding_dot: expected h (N, H) and indices (N,) or (N, K), got "
            f"{tuple(hd.shape)} and {tuple(idx.shape)}"
        )
    # Ids or h of another backend than the weight: the gather failed deep inside (torch ids
    # with a NumPy weight in a bare TypeError from torch's min()).
    # (Arrays of one type are of one backend: the usual case costs two type reads.)
    if type(idx) is not type(wd):
        F.same_backend(idx, wd, "embedding_dot (indices)")
    if type(hd) is not type(wd):
        F.same_backend(hd, wd, "embedding_dot (h)")
    if wd.ndim != 2 or wd.shape[1] != hd.shape[1]:
        # Checked here: the product of the rows and h failed in a bare broadcasting error.
        raise ShapeError(
            f"embedding_dot: h has {hd.shape[1]} columns but the weight {tuple(wd.shape)} "
            f"has embedding_dim {wd.shape[-1]}; they must be equal"
        )
    rows = F.embedding(idx, weight)
    if idx.ndim == 2:
        h = (
            h.reshape(hd.shape[0], 1, hd.shape[1])
            if isinstance(h, Tensor)
            else Tensor(backend_for(hd)[0].reshape(hd, (hd.shape[0], 1, hd.shape[1])))
        )
    return (rows * h).sum(axis=-1)


def negative_sampling_loss(h: Any, weight: Any, target: Any, negatives: Any) -> Tensor:
    """The book's negative-sampling loss for given negative ids ``(N, K)``: the sum over
    the positive and the ``K`` negative columns of the mean (over the batch) binary
    cross-entropy of ``sigmoid(embedding_dot)``, labels 1 for the target, 0 for negatives."""
    td, nd = _data(target), _data(negatives)
    for a, what in ((td, "target"), (nd, "negatives")):
        if not hasattr(a, "dtype"):  # a list: say so (not "'list' has no attribute 'dtype'")
            raise F.not_an_array(a, f"negative_sampling_loss ({what})")
    xp, t_record = backend_for(td)
    if type(nd) is not type(td):
        n_record = backend_for(nd)[1]
        if n_record.name != t_record.name:
            # Checked before the dtypes: torch targets with NumPy negatives were "not integers".
            raise BackendMismatchError(
                f"negative_sampling_loss: the target ids are an array of backend "
                f"{t_record.name!r} but the negatives of backend {n_record.name!r}; move both "
                "to the backend of the weight (nnbackend.to_backend(ids, like=model))"
            )
    if not xp.isdtype(td.dtype, "integral") or not xp.isdtype(nd.dtype, "integral"):
        raise DtypeError(f"word ids must be integers, got {td.dtype} and {nd.dtype}")
    if nd.ndim != 2 or td.ndim != 1 or nd.shape[0] != td.shape[0]:
        raise ShapeError(
            f"negative_sampling_loss: expected target (N,) and negatives (N, K), got "
            f"{tuple(td.shape)} and {tuple(nd.shape)}"
        )
    ids = xp.concat([xp.reshape(td, (-1, 1)), xp.astype(nd, td.dtype)], axis=1)
    scores = embedding_dot(h, weight, ids)
    sd = scores.data
    sx = backend_for(sd)[0]
    labels = sx.concat(
        [
            sx.ones((sd.shape[0], 1), dtype=sd.dtype),
            sx.zeros((sd.shape[0], sd.shape[1] - 1), dtype=sd.dtype),
        ],
        axis=1,
    )
    return F.sigmoid_cross_entropy(scores, labels) * float(sd.shape[1])


class EmbeddingDot(Module):
    """The book's ``EmbeddingDot``: ``sum(W[idx] * h, axis=-1)`` with its own
    ``(num_embeddings, embedding_dim)`` weight (N(0, 0.01^2) at first, as the book's
    ``W_out``), or a given one (an array or a Parameter, for weight sharing)."""

    def __init__(
        self,
        num_embeddings: int | None = None,
        embedding_dim: int | None = None,
        *,
        weight: Any = None,
        generator: Any = None,
    ) -> None:
        super().__init__()
        if weight is None:
            if num_embeddings is None or embedding_dim is None:
                raise ArgumentError(
                    "EmbeddingDot needs num_embeddings and embedding_dim, or weight"
                )
            weight = init.normal(
                (int(num_embeddings), int(embedding_dim)), 0.01, generator=generator
            )
        self.weight = weight if isinstance(weight, Parameter) else Parameter(_data(weight))

    def forward(self, h: Any, indices: Any) -> Tensor:
        return embedding_dot(h, self.weight, indices)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, {self.weight.shape[1]}"


class NegativeSamplingLoss(Module):
    """The book's ``NegativeSamplingLoss``: an :class:`EmbeddingDot` output layer scored on
    the target and ``sample_size`` negatives drawn by a :class:`UnigramSampler` from
    ``corpus`` (``power`` 0.75).

    ``loss(h, target)`` with ``h`` (N, H) and integer ``target`` (N,) returns a 0-d Tensor:
    the book's sum of ``sample_size + 1`` batch-mean sigmoid cross-entropies. The last
    negatives drawn are kept in ``last_negatives``.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        corpus: Any,
        power: float = 0.75,
        sample_size: int = 5,
        *,
        exclude_target: bool = False,
        weight: Any = None,
        generator: Any = None,
    ) -> None:
        super().__init__()
        self.sampler = UnigramSampler(
            corpus,
            power,
            sample_size,
            vocab_size=vocab_size,
            exclude_target=exclude_target,
            generator=generator,
        )
        if generator is not None:  # a seed (an int, numpy.int64): the sampler's Generator
            generator = self.sampler.generator
        self.embed = EmbeddingDot(vocab_size, hidden_size, weight=weight, generator=generator)
        self.last_negatives: Any = None

    def forward(self, h: Any, target: Any) -> Tensor:
        self.last_negatives = negatives = self.sampler.sample(target)
        return negative_sampling_loss(h, self.embed.weight, target, negatives)

    def extra_repr(self) -> str:
        s = self.sampler
        return f"vocab_size={s.vocab_size}, sample_size={s.sample_size}, power={s.power}"
