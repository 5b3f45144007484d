"""Loss modules: thin wrappers of the fused, numerically stable functions in
:mod:`nnbackend.nn.functional`. Each returns a 0-d Tensor (mean reduction), and names in
``default_metric`` the metric of :mod:`nnbackend.metrics` that ``Trainer`` reports as its
accuracy (``None``: no accuracy)."""

from __future__ import annotations

from typing import Any

from nnbackend.autograd.tensor import Tensor
from nnbackend.nn import functional as F
from nnbackend.nn.module import Module

__all__ = ["MSELoss", "SigmoidCrossEntropy", "SoftmaxCrossEntropy", "SoftmaxWithLoss"]


class SoftmaxCrossEntropy(Module):
    """Mean cross-entropy of ``softmax(logits)`` against integer labels ``(N,)`` or one-hot /
    probability targets ``(N, C)``, as one node (log-sum-exp stable). Its gradient with
    respect to the logits is exactly ``(softmax - onehot) / N``. Sequence logits ``(N, T, C)``
    take labels ``(N, T)``; labels equal to ``ignore_index`` (the book's ``ignore_label=-1``)
    are left out of the mean.

    >>> import nnbackend as nb
    >>> xp = nb.namespace()
    >>> loss = nb.nn.SoftmaxCrossEntropy()(xp.zeros((2, 4)), xp.asarray([0, 3]))
    >>> round(loss.item(), 6)  # log(4)
    1.386294
    """

    default_metric: str | None = "accuracy"  # what Trainer reports (nnbackend.metrics)

    def __init__(self, ignore_index: int | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: Any, labels: Any) -> Tensor:
        return F.softmax_cross_entropy(logits, labels, self.ignore_index)

    def extra_repr(self) -> str:
        return "" if self.ignore_index is None else f"ignore_index={self.ignore_index}"


SoftmaxWithLoss = SoftmaxCrossEntropy  # the book's name


class SigmoidCrossEntropy(Module):
    """Mean binary cross-entropy of ``sigmoid(logits)`` against targets in [0, 1], stable for
    logits of any magnitude."""

    default_metric: str | None = "binary_accuracy"  # outputs > 0 against targets > 0.5

    def forward(self, logits: Any, targets: Any) -> Tensor:
        return F.sigmoid_cross_entropy(logits, targets)


class MSELoss(Module):
    """Mean of ``(y - t) ** 2`` over all elements."""

    default_metric: str | None = None  # a regression loss: no accuracy

    def forward(self, y: Any, t: Any) -> Tensor:
        return F.mse_loss(y, t)
