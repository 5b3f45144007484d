"""Callbacks for :meth:`nnbackend.Trainer.fit`: the public path of
:mod:`nnbackend.train.callbacks`, where they are defined (the training package owns the loop
and its hooks; this name stays so that ``from nnbackend.callbacks import EarlyStopping``
keeps working).

>>> from nnbackend.callbacks import EarlyStopping
>>> EarlyStopping("val_loss", patience=2).patience
2
"""

from __future__ import annotations

from nnbackend.train.callbacks import Callback, EarlyStopping, ModelCheckpoint, monitored_value

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "monitored_value"]
