"""Weight initialisers that give the same values on every backend.

Every initialiser draws from :mod:`nnbackend.random` (NumPy's PCG64 stream on the host, cast
on the host to the target dtype, then moved), so after ``nnbackend.random.seed(0)`` a model
built on numpy, torch, cupy or array-api-strict starts from bit-identical weights. Each takes
an optional ``generator`` (a :class:`nnbackend.random.Generator`; default: the module-level
one) and ``dtype`` (default: the active default float dtype), and returns a backend array on
the active backend.

The fan-in of a shape is its first axis for 1-D and 2-D shapes (weights are stored
``(in, out)``, as ``Linear`` uses them) and the product of all axes but the last otherwise.

>>> import nnbackend as nb
>>> nb.random.seed(0)
>>> w = nb.nn.init.xavier((2, 3))
>>> tuple(w.shape), str(w.dtype)
((2, 3), 'float64')
"""

from __future__ import annotations

import math
from typing import Any

from nnbackend import random as _random
from nnbackend.namespace import namespace

__all__ = [
    "fan_in",
    "he",
    "he_normal",
    "he_uniform",
    "normal",
    "ones",
    "uniform",
    "xavier",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
]

Shape = int | tuple[int, ...]


def _shape(shape: Shape) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, int) else tuple(int(n) for n in shape)


def fan_in(shape: Shape) -> int:
    """The number of inputs feeding each output of a weight of this shape."""
    dims = _shape(shape)
    if not dims:
        return 1
    if len(dims) <= 2:
        return dims[0]
    return math.prod(dims[:-1])


def _source(generator: Any) -> Any:
    return _random if generator is None else generator


def normal(
    shape: Shape, std: float = 0.01, mean: float = 0.0, *, generator: Any = None, dtype: Any = None
) -> Any:
    """Samples of N(``mean``, ``std``²) (the book's ``0.01 * randn`` by default)."""
    return _source(generator).normal(_shape(shape), float(mean), float(std), dtype=dtype)


def uniform(
    shape: Shape,
    low: float = -0.05,
    high: float = 0.05,
    *,
    generator: Any = None,
    dtype: Any = None,
) -> Any:
    """Samples of U[``low``, ``high``)."""
    return _source(generator).uniform(_shape(shape), float(low), float(high), dtype=dtype)


def xavier_normal(shape: Shape, *, generator: Any = None, dtype: Any = None) -> Any:
    """Xavier initialisation as the book uses it: N(0, 1/fan_in), i.e. std ``sqrt(1/n)`` for
    ``n`` inputs. Suits sigmoid and tanh layers."""
    return normal(shape, math.sqrt(1.0 / fan_in(shape)), generator=generator, dtype=dtype)


def xavier_uniform(shape: Shape, *, generator: Any = None, dtype: Any = None) -> Any:
    """U[-a, a) with ``a = sqrt(3/fan_in)``: the same variance as :func:`xavier_normal`."""
    a = math.sqrt(3.0 / fan_in(shape))
    return uniform(shape, -a, a, generator=generator, dtype=dtype)


def he_normal(shape: Shape, *, generator: Any = None, dtype: Any = None) -> Any:
    """He initialisation: N(0, 2/fan_in), std ``sqrt(2/n)``. Suits ReLU layers."""
    return normal(shape, math.sqrt(2.0 / fan_in(shape)), generator=generator, dtype=dtype)


def he_uniform(shape: Shape, *, generator: Any = None, dtype: Any = None) -> Any:
    """U[-a, a) with ``a = sqrt(6/fan_in)``: the same variance as :func:`he_normal`."""
    a = math.sqrt(6.0 / fan_in(shape))
    return uniform(shape, -a, a, generator=generator, dtype=dtype)


xavier = xavier_normal
he = he_normal


def zeros(shape: Shape, *, dtype: Any = None) -> Any:
    """Zeros on the active backend, in ``dtype`` (default: the active default float dtype)."""
    return namespace(None, dtype).zeros(_shape(shape))


def ones(shape: Shape, *, dtype: Any = None) -> Any:
    """Ones on the active backend, in ``dtype`` (default: the active default float dtype)."""
    return namespace(None, dtype).ones(_shape(shape))
