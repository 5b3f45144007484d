"""Weight initialisers that give the same values on every backend.

Every initialiser draws from :mod:`nnbackend.random` (NumPy's PCG64 stream on the host, cast
on the host to the target dtype, then moved), so after ``nnbackend.random.seed(0)`` a model
built on numpy, torch, cupy or array-api-strict starts from bit-identical weights. Each takes
an optional ``generator`` (a :class:`nnbackend.random.Generator`; default: the module-level
one) and ``dtype`` (default: the active default float dtype), and returns a backend array on
the active backend.

The fan-in of a shape is its first axis for 1-D and 2-D shapes (weights are stored
``(in, out)``, as ``Linear`` uses them) and the product of all axes but the last otherwise.
A shape whose fan-in is 0 has no elements and gives an empty array (as ``torch.nn.init``
leaves a zero-element tensor). A shape is an int or a sequence of non-negative ints (Python's
or NumPy's); a bad shape, a negative or NaN ``std``, ``low > high`` or a non-finite bound, and
a ``generator`` that is no :class:`nnbackend.random.Generator` raise
:class:`~nnbackend.errors.ArgumentError`.

>>> import nnbackend as nb
>>> nb.random.seed(0)
>>> w = nb.nn.init.xavier((2, 3))
>>> tuple(w.shape), str(w.dtype)
((2, 3), 'float64')
"""

from __future__ import annotations

import contextlib
import math
import operator
from typing import Any

from nnbackend import random as _random
from nnbackend.errors import ArgumentError
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


def _size(n: Any, shape: Any) -> int:
    # operator.index, not int(): a float (2.7 rows became 2) or a str ("34" became (3, 4))
    # is a mistake to report, not a size to round.
    try:
        value = operator.index(n) if type(n) is not bool else -1
    except TypeError:
        value = -1
    if value < 0:
        raise ArgumentError(
            f"shape must be an int or a sequence of non-negative ints, got {shape!r}; "
            "e.g. (in_features, out_features)"
        )
    return value


def _shape(shape: Any) -> tuple[int, ...]:
    try:
        operator.index(shape)
    except TypeError:
        pass
    else:  # one int (Python's, NumPy's or a 0-d array); a bool is refused by _size
        return (_size(shape, shape),)
    sizes: list[Any] = [None]  # (refused by _size)
    if not isinstance(shape, str | bytes):
        with contextlib.suppress(TypeError):
            sizes = list(shape)
    return tuple(_size(n, shape) for n in sizes)


def fan_in(shape: Shape) -> int:
    """The number of inputs feeding each output of a weight of this shape."""
    dims = _shape(shape)
    if not dims:
        return 1
    if len(dims) <= 2:
        return dims[0]
    return math.prod(dims[:-1])


def _source(generator: Any) -> Any:
    if generator is None:
        return _random
    if not isinstance(generator, _random.Generator):
        raise ArgumentError(
            f"generator must be an nnbackend.random.Generator or None, got "
            f"{type(generator).__name__}; for a seed n pass nnbackend.random.Generator(n)"
        )
    return generator


def _fan(shape: Shape) -> int:
    # A fan-in of 0 comes only from a shape with a zero axis: no elements, so any scale does
    # (1/0 raised ZeroDivisionError where torch.nn.init leaves a zero-element tensor alone).
    return fan_in(shape) or 1


def normal(
    shape: Shape, std: float = 0.01, mean: float = 0.0, *, generator: Any = None, dtype: Any = None
) -> Any:
    """Samples of N(``mean``, ``std``²) (the book's ``0.01 * randn`` by default)."""
    dims, source = _shape(shape), _source(generator)
    if not float(std) >= 0.0:  # (NaN too: it compares False)
        raise ArgumentError(f"normal: std must be >= 0, got {std!r}")
    return source.normal(dims, float(mean), float(std), dtype=dtype)


def uniform(
    shape: Shape,
    low: float = -0.05,
    high: float = 0.05,
    *,
    generator: Any = None,
    dtype: Any = None,
) -> Any:
    """Samples of U[``low``, ``high``)."""
    dims, source = _shape(shape), _source(generator)
    lo, hi = float(low), float(high)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ArgumentError(
            f"uniform: low and high must be finite with low <= high, got low={low!r}, high={high!r}"
        )
    return source.uniform(dims, lo, hi, dtype=dtype)


def xavier_normal(shape: Shape, *, generator: Any = None, dtype: Any = None) -> Any:
    """Xavier initialisation as the book uses it: N(0, 1/fan_in), i.e. std ``sqrt(1/n)`` for
    ``n`` inputs. Suits sigmoid and tanh layers."""
    return normal(shape, math.sqrt(1.0 / _fan(shape)), generator=generator, dtype=dtype)


def xavier_uniform(shape: Shape, *, generator: Any = None, dtype: Any = None) -> Any:
    """U[-a, a) with ``a = sqrt(3/fan_in)``: the same variance as :func:`xavier_normal`."""
    a = math.sqrt(3.0 / _fan(shape))
    return uniform(shape, -a, a, generator=generator, dtype=dtype)


def he_normal(shape: Shape, *, generator: Any = None, dtype: Any = None) -> Any:
    """He initialisation: N(0, 2/fan_in), std ``sqrt(2/n)``. Suits ReLU layers."""
    return normal(shape, math.sqrt(2.0 / _fan(shape)), generator=generator, dtype=dtype)


def he_uniform(shape: Shape, *, generator: Any = None, dtype: Any = None) -> Any:
    """U[-a, a) with ``a = sqrt(6/fan_in)``: the same variance as :func:`he_normal`."""
    a = math.sqrt(6.0 / _fan(shape))
    return uniform(shape, -a, a, generator=generator, dtype=dtype)


xavier = xavier_normal
he = he_normal


def zeros(shape: Shape, *, dtype: Any = None) -> Any:
    """Zeros on the active backend, in ``dtype`` (default: the active default float dtype)."""
    return namespace(None, dtype).zeros(_shape(shape))


def ones(shape: Shape, *, dtype: Any = None) -> Any:
    """Ones on the active backend, in ``dtype`` (default: the active default float dtype)."""
    return namespace(None, dtype).ones(_shape(shape))
