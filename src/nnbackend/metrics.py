"""Metrics as objects for :meth:`nnbackend.Trainer.fit` and ``evaluate``: the public path of
:mod:`nnbackend.train.metrics`, where they are defined (the training package owns them; this
name stays so that ``from nnbackend.metrics import Accuracy`` keeps working).

>>> from nnbackend.metrics import get
>>> get("top3").k
3
"""

from __future__ import annotations

from nnbackend.train.metrics import (
    Accuracy,
    BinaryAccuracy,
    Mean,
    MeanAbsoluteError,
    MeanSquaredError,
    Metric,
    Perplexity,
    TopKAccuracy,
    default_metric,
    get,
)

__all__ = [
    "Accuracy",
    "BinaryAccuracy",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "Mean",
    "Metric",
    "Perplexity",
    "TopKAccuracy",
    "default_metric",
    "get",
]
