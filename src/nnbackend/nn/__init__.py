"""Layers, losses and initialisers, written only against the Array API namespace.

>>> import nnbackend as nb
>>> from nnbackend import nn
>>> model = nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))
>>> model
Sequential(
  (0): Linear(in_features=2, out_features=10, bias=True)
  (1): Sigmoid()
  (2): Linear(in_features=10, out_features=3, bias=True)
)
"""

from __future__ import annotations

from nnbackend.nn import attention, functional, init, recurrent, sampling
from nnbackend.nn.attention import Attention, TimeAttention
from nnbackend.nn.containers import ModuleDict, ModuleList
from nnbackend.nn.conv import Conv2d, ConvTranspose2d
from nnbackend.nn.layers import (
    Dropout,
    Embedding,
    LayerNorm,
    LeakyReLU,
    Linear,
    MatMul,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from nnbackend.nn.losses import MSELoss, SigmoidCrossEntropy, SoftmaxCrossEntropy, SoftmaxWithLoss
from nnbackend.nn.module import Module, Parameter, Sequential
from nnbackend.nn.normalization import BatchNorm1d, BatchNorm2d, GroupNorm
from nnbackend.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, Flatten, MaxPool2d
from nnbackend.nn.recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from nnbackend.nn.sampling import EmbeddingDot, NegativeSamplingLoss, UnigramSampler

__all__ = [
    "AdaptiveAvgPool2d",
    "Attention",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "ConvTranspose2d",
    "Dropout",
    "Embedding",
    "EmbeddingDot",
    "Flatten",
    "GRU",
    "GRUCell",
    "GroupNorm",
    "LSTM",
    "LSTMCell",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "MSELoss",
    "MatMul",
    "MaxPool2d",
    "Module",
    "ModuleDict",
    "ModuleList",
    "NegativeSamplingLoss",
    "Parameter",
    "RNN",
    "RNNCell",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "SigmoidCrossEntropy",
    "Softmax",
    "SoftmaxCrossEntropy",
    "SoftmaxWithLoss",
    "Tanh",
    "TimeAttention",
    "UnigramSampler",
    "attention",
    "functional",
    "init",
    "recurrent",
    "sampling",
]
