"""Attention of the book's chapter 8: ``Attention`` (one decoder step) and ``TimeAttention``
(every decoder step at once, as two batched matrix products instead of the book's loop).

For encoder states ``hs_enc`` (N, Te, H) and decoder states ``hs_dec`` (N, Td, H)::

    a = softmax(hs_dec @ hs_enc^T, axis=-1)       # (N, Td, Te): the book's AttentionWeight
    c = a @ hs_enc                                # (N, Td, H):  the book's WeightSum

>>> import nnbackend as nb
>>> xp = nb.namespace()
>>> c = nb.nn.TimeAttention()(xp.ones((2, 5, 3)), xp.ones((2, 4, 3)))
>>> c.shape
(2, 4, 3)
"""

from __future__ import annotations

from typing import Any

from nnbackend.autograd import ops
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import ShapeError
from nnbackend.nn import functional as F
from nnbackend.nn.module import Module

__all__ = ["Attention", "TimeAttention", "attention"]


def _tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def attention(hs_enc: Any, hs_dec: Any) -> tuple[Tensor, Tensor]:
    """Dot-product attention of each decoder state over the encoder states.

    ``hs_enc`` (N, Te, H), ``hs_dec`` (N, Td, H) -> ``(context (N, Td, H), weights
    (N, Td, Te))``; the weights of each decoder step sum to 1.
    """
    e, d = _tensor(hs_enc), _tensor(hs_dec)
    if e.ndim != 3 or d.ndim != 3 or e.shape[0] != d.shape[0] or e.shape[2] != d.shape[2]:
        raise ShapeError(
            f"attention: expected encoder states (N, Te, H) and decoder states (N, Td, H), "
            f"got {tuple(e.shape)} and {tuple(d.shape)}"
        )
    if e.shape[1] == 0:
        # Nothing to attend to: the softmax over zero scores has no value (it ended in a
        # bare reshape ValueError).
        raise ShapeError(
            f"attention: the encoder states {tuple(e.shape)} have no time steps; attention "
            "needs at least one encoder step (Te >= 1)"
        )
    scores = F.matmul(d, ops.transpose(e, (0, 2, 1)))
    weights = F.softmax(scores, axis=-1)
    return F.matmul(weights, e), weights


class TimeAttention(Module):
    """The book's ``TimeAttention``: ``forward(hs_enc, hs_dec)`` gives the context vector of
    every decoder step (N, Td, H). The last weights (N, Td, Te), a raw array, are kept in
    ``attention_weights`` for plotting."""

    def __init__(self) -> None:
        super().__init__()
        self.attention_weights: Any = None

    def forward(self, hs_enc: Any, hs_dec: Any) -> Tensor:
        c, a = attention(hs_enc, hs_dec)
        self.attention_weights = a.data
        return c


class Attention(Module):
    """The book's ``Attention`` for one decoder step: ``forward(hs_enc (N, T, H), h (N, H))``
    gives the context (N, H); the weights (N, T) are kept in ``attention_weights``."""

    def __init__(self) -> None:
        super().__init__()
        self.attention_weights: Any = None

    def forward(self, hs_enc: Any, h: Any) -> Tensor:
        h = _tensor(h)
        if h.ndim != 2:
            raise ShapeError(f"Attention: expected a decoder state (N, H), got {tuple(h.shape)}")
        n, hsz = h.shape
        c, a = attention(hs_enc, h.reshape(n, 1, hsz))
        self.attention_weights = a.data[:, 0, :]
        return c.reshape(n, hsz)
