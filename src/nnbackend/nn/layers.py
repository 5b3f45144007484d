"""Layers: ``Linear``, ``MatMul``, activations, ``Dropout``, ``Embedding``, ``LayerNorm``.

Parameters are created at construction on the active backend in the active default float
dtype (``nnbackend.using(...)`` picks both), drawn from :mod:`nnbackend.random`, so one seed
gives the same model on every backend. Layers accept Tensors or backend arrays and return
Tensors; a float input whose dtype differs from the layer's raises
:class:`~nnbackend.errors.DtypeError` naming both (never a silent promotion).
"""

from __future__ import annotations

from typing import Any

from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import ArgumentError, DtypeError, ShapeError
from nnbackend.namespace import backend_for
from nnbackend.nn import functional as F
from nnbackend.nn import init
from nnbackend.nn.module import Module, Parameter, transpose_2d

__all__ = [
    "Dropout",
    "Embedding",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "MatMul",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
]


def _data(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def _explain(layer: Module, x: Any, weight: Any, expected: str, exc: Exception) -> Exception:
    """Re-raise a functional error with the layer's name and expected/actual facts."""
    xd = _data(x)
    shape = tuple(getattr(xd, "shape", ()))
    if isinstance(exc, ShapeError):
        return ShapeError(f"{layer!r}: expected input of shape {expected}, got shape {shape}")
    return DtypeError(
        f"{layer!r}: input dtype {getattr(xd, 'dtype', type(xd).__name__)} differs from the "
        f"layer's dtype {weight.dtype}; cast the input (xp.astype) or build the layer under "
        "the input's dtype (nnbackend.using(dtype=...))"
    )


class Linear(Module):
    """``y = x @ W + b`` with ``W`` of shape ``(in_features, out_features)``.

    ``W`` starts as Xavier normal, N(0, 1/in_features) (:func:`nnbackend.nn.init.xavier`), and
    ``b`` as zeros; pass ``generator`` (a :class:`nnbackend.random.Generator`) to draw from
    your own stream instead of the module-level one. The input may have leading batch axes:
    ``(..., in_features)`` gives ``(..., out_features)``.

    >>> import nnbackend as nb
    >>> layer = nb.nn.Linear(2, 3)
    >>> layer(nb.namespace().ones((4, 2))).shape
    (4, 3)
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *, generator: Any = None
    ) -> None:
        super().__init__()
        self.in_features = F.size_argument("Linear", "in_features", in_features)
        self.out_features = F.size_argument("Linear", "out_features", out_features)
        self.weight = Parameter(
            init.xavier_normal((self.in_features, self.out_features), generator=generator)
        )
        if bias:
            self.bias = Parameter(init.zeros((self.out_features,)))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Any) -> Tensor:
        try:
            return F.linear(x, self.weight, self.bias)
        except (ShapeError, DtypeError) as exc:
            raise _explain(self, x, self.weight, f"(..., {self.in_features})", exc) from None

    def _state_to_layout(self, state: dict[str, Any], layout: str) -> dict[str, Any]:
        # PyTorch's Linear keeps its weight as (out_features, in_features).
        if layout == "torch" and "weight" in state:
            return {**state, "weight": transpose_2d(state["weight"])}
        return state

    _state_from_layout = _state_to_layout  # a transpose is its own inverse

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class MatMul(Module):
    """The book's ``MatMul`` layer: ``y = x @ W`` for a given weight ``W`` (an array, a
    Tensor or a Parameter; it becomes this layer's ``weight`` parameter)."""

    def __init__(self, W: Any) -> None:
        super().__init__()
        self.weight = W if isinstance(W, Parameter) else Parameter(_data(W))

    def forward(self, x: Any) -> Tensor:
        w = self.weight
        try:
            return F.matmul(x, w)
        except (ShapeError, DtypeError) as exc:
            raise _explain(self, x, w, f"(..., {w.shape[0]})", exc) from None

    def extra_repr(self) -> str:
        return f"weight_shape={self.weight.shape}"


class Sigmoid(Module):
    """``1 / (1 + exp(-x))``."""

    def forward(self, x: Any) -> Tensor:
        return F.sigmoid(x)


class Tanh(Module):
    """Hyperbolic tangent."""

    def forward(self, x: Any) -> Tensor:
        return F.tanh(x)


class ReLU(Module):
    """``max(x, 0)``."""

    def forward(self, x: Any) -> Tensor:
        return F.relu(x)


class LeakyReLU(Module):
    """``x`` where positive, ``negative_slope * x`` elsewhere."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x: Any) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Softmax(Module):
    """Softmax along ``axis``."""

    def __init__(self, axis: int = -1) -> None:
        super().__init__()
        self.axis = int(axis)

    def forward(self, x: Any) -> Tensor:
        return F.softmax(x, self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


class Dropout(Module):
    """Inverted dropout: in training mode each element is zeroed with probability ``p`` and
    the rest scaled by ``1 / (1 - p)``; in evaluation mode (``.eval()``) the identity.

    The mask comes from ``generator`` (default: the module-level :mod:`nnbackend.random`
    generator), so a seed reproduces it on every backend.
    """

    def __init__(self, p: float = 0.5, *, generator: Any = None) -> None:
        super().__init__()
        p = float(p)
        if not 0.0 <= p < 1.0:
            raise ArgumentError(f"Dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.generator = generator

    def forward(self, x: Any) -> Tensor:
        return F.dropout(x, self.p, training=self.training, generator=self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Embedding(Module):
    """Rows of a ``(num_embeddings, embedding_dim)`` weight selected by integer indices of
    any shape; repeated indices accumulate their gradients. The weight starts as N(0, 1).

    Indices must lie in ``[0, num_embeddings)``: others raise
    :class:`~nnbackend.errors.ArgumentError` where the indices live on the host (a negative
    index never wraps around); on a GPU, where the check would synchronise, their rows are
    NaN instead.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, generator: Any = None) -> None:
        super().__init__()
        self.num_embeddings = F.size_argument("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = F.size_argument("Embedding", "embedding_dim", embedding_dim)
        self.weight = Parameter(
            init.normal((self.num_embeddings, self.embedding_dim), 1.0, generator=generator)
        )

    def forward(self, indices: Any) -> Tensor:
        idx = _data(indices)
        xp = backend_for(idx)[0]
        if not xp.isdtype(idx.dtype, "integral"):
            raise DtypeError(f"{self!r}: indices must be integers, got dtype {idx.dtype}")
        return F.embedding(idx, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Normalise over the last axis (size ``dim``) to zero mean and unit variance, then scale
    by ``weight`` (ones at first) and shift by ``bias`` (zeros at first)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim = int(dim)
        self.eps = float(eps)
        self.weight = Parameter(init.ones((self.dim,)))
        self.bias = Parameter(init.zeros((self.dim,)))

    def forward(self, x: Any) -> Tensor:
        xd = _data(x)
        if not hasattr(xd, "ndim"):
            raise F.not_an_array(xd, repr(self))
        if xd.ndim == 0 or xd.shape[-1] != self.dim:
            raise ShapeError(
                f"{self!r}: expected input of shape (..., {self.dim}), got shape {tuple(xd.shape)}"
            )
        # Under a mixed precision policy F.layer_norm casts float16 activations itself.
        if xd.dtype != self.weight.data.dtype and F.mixed_compute() is None:
            F.same_backend(xd, self.weight.data, repr(self))  # another backend's: say that
            raise DtypeError(
                f"{self!r}: input dtype {xd.dtype} differs from the layer's dtype "
                f"{self.weight.data.dtype}; cast the input (xp.astype) first"
            )
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"({self.dim},), eps={self.eps}"
