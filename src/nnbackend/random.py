"""Random numbers that are the same on every backend.

Values are drawn on the host with NumPy's PCG64 generator, cast on the host to the requested
dtype, and then moved to the active backend. So one seed gives bit-identical arrays on numpy,
torch, cupy and array-api-strict, and a model initialised on the CPU equals the same model
initialised on a GPU. The host round trip costs a transfer; it is meant for initialisation and
data shuffling, not for per-step noise on a GPU.
"""

from __future__ import annotations

import operator
from typing import Any

from nnbackend import config, registry
from nnbackend.backends import host
from nnbackend.errors import ArgumentError
from nnbackend.namespace import backend_for, namespace

__all__ = ["Generator", "default_generator", "integers", "normal", "permutation", "seed", "uniform"]

Shape = int | tuple[int, ...]


def _count(n: Any, what: str) -> int:
    """``n`` as a non-negative int: Python and NumPy integers pass; floats (which ``int()``
    truncated, so 2.7 rows became 2), bools and negatives raise ArgumentError."""
    try:
        value = operator.index(n) if type(n) is not bool else -1
    except TypeError:
        value = -1
    if value < 0:
        raise ArgumentError(f"{what} must be a non-negative int, got {n!r}")
    return value


def _shape(size: Any) -> tuple[int, ...]:
    if size is None:
        return ()
    if getattr(size, "ndim", 0) == 0 and hasattr(size, "__index__"):
        return (_count(size, "size"),)
    if getattr(size, "ndim", 1) == 1 and not isinstance(size, str | bytes):
        # A tuple or list, or a 1-d integer array such as np.array([2, 3]) (as in NumPy).
        try:
            return tuple(_count(n, "each entry of size") for n in size)
        except TypeError:
            pass
    raise ArgumentError(f"size must be an int or a tuple of ints, got {size!r}")


def _seed(seed: Any) -> int | None:
    """``seed`` as a non-negative int: Python and NumPy integers (``np.int64(3)``, as NumPy
    and torch take them) pass; bools, floats, strings and negatives raise ArgumentError."""
    if seed is None:
        return None
    try:
        # Python's and NumPy's bools are refused, not read as 0 and 1.
        value = -1 if type(seed).__name__ in ("bool", "bool_") else operator.index(seed)
    except TypeError:
        value = -1
    if value < 0:
        raise ArgumentError(f"seed must be a non-negative int or None, got {seed!r}")
    return value


def _bound(value: Any, what: str) -> int:
    """An integer bound of :meth:`Generator.integers`: floats are refused (as in torch),
    not truncated (``integers(2.9)`` gave only 0 and 1)."""
    if type(value).__name__ in ("bool", "bool_"):
        raise ArgumentError(f"{what} must be an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ArgumentError(f"{what} must be an int, got {value!r}") from None


def _drawn(method: str, draw: Any, *args: Any, **kwargs: Any) -> Any:
    """``draw(*args, **kwargs)`` on the host generator; a user mistake NumPy refuses (a
    negative scale, ``low > high``, an infinite range, probabilities that do not sum to 1)
    raises ArgumentError naming the call, not NumPy's bare ValueError or OverflowError."""
    try:
        return draw(*args, **kwargs)
    except (ValueError, OverflowError, TypeError) as exc:
        shown = ", ".join([*(repr(a) for a in args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        raise ArgumentError(f"nnbackend.random {method}({shown}): {exc}") from exc


class Generator:
    """A seeded source of random arrays on the active backend.

    >>> import nnbackend as nb
    >>> a = nb.random.Generator(0).normal((2, 3))
    >>> b = nb.random.Generator(0).normal((2, 3))
    >>> bool((a == b).all())
    True
    """

    def __init__(self, seed: int | None = None) -> None:
        seed = _seed(seed)
        self.seed = seed
        self._host = host.generator(seed)

    def _to_backend(self, values: Any, dtype: Any) -> Any:
        dtype_name = config.get_default_dtype() if dtype is None else config.normalize_dtype(dtype)
        return self._move(values.astype(dtype_name, copy=False), dtype_name)

    def normal(
        self, size: Shape | None = None, loc: float = 0.0, scale: float = 1.0, *, dtype: Any = None
    ) -> Any:
        """Normal samples of shape ``size`` in ``dtype`` (default: the active float dtype)."""
        values = _drawn("normal", self._host.normal, loc, scale, _shape(size))
        return self._to_backend(values, dtype)

    def uniform(
        self, size: Shape | None = None, low: float = 0.0, high: float = 1.0, *, dtype: Any = None
    ) -> Any:
        """Uniform samples in ``[low, high)``, in ``dtype`` too: a float64 draw just below
        ``high`` that rounds up to it (float16 and float32) becomes the value below it, as
        in torch (``log(1 - u)`` never meets ``u == 1``)."""
        shape = _shape(size)
        dtype_name = config.get_default_dtype() if dtype is None else config.normalize_dtype(dtype)
        np = host.numpy()
        largest = float(np.finfo(dtype_name).max)
        for name, bound in (("low", low), ("high", high)):
            try:
                values = np.asarray(bound, dtype="float64")
            except (TypeError, ValueError):
                continue  # not a number: NumPy's own message follows
            if np.isnan(values).any():
                raise ArgumentError(f"nnbackend.random uniform(): {name} is NaN ({bound!r})")
            if (np.abs(values) > largest).any():
                # Cast, it became inf or was clamped to the largest finite value (torch raises).
                raise ArgumentError(
                    f"nnbackend.random uniform(): {name}={bound!r} is outside the range of "
                    f"{dtype_name} (largest {largest:g}); pass a wider dtype or smaller bounds"
                )
        values = _drawn("uniform", self._host.uniform, low, high, shape)
        cast = values.astype(dtype_name, copy=False)
        if cast.dtype.itemsize < 8 and cast.size and high > low:
            top = np.asarray(high, dtype=cast.dtype)
            over = cast >= top
            if over.any():
                cast[over] = np.nextafter(top, np.asarray(-np.inf, dtype=cast.dtype))
        return self._move(cast, dtype_name)

    def integers(self, low: int, high: int | None = None, size: Shape | None = None) -> Any:
        """Integers in ``[low, high)`` (or ``[0, low)``) as the backend's int64."""
        low = _bound(low, "low")
        high = None if high is None else _bound(high, "high")
        values = _drawn("integers", self._host.integers, low, high, _shape(size), dtype="int64")
        return self._move(values)

    def choice(
        self,
        n: int,
        size: Shape | None = None,
        p: Any = None,
        *,
        replace: bool = True,
    ) -> Any:
        """Integers in ``[0, n)`` drawn with probabilities ``p`` (a sequence of ``n`` floats
        summing to 1; default uniform), with or without replacement, as the backend's int64."""
        values = _drawn(
            "choice", self._host.choice, _count(n, "n"), size=_shape(size), replace=replace, p=p
        )
        return self._move(values.astype("int64"))

    def permutation(self, x: int | Any) -> Any:
        """A random permutation of ``range(x)`` (int64), or of an array's rows."""
        if getattr(x, "ndim", 0) == 0:  # an int (NumPy's too), not an array of rows
            return self._move(self._host.permutation(_count(x, "x")).astype("int64"))
        array: Any = x
        # The order goes to x's own backend and device, not the active ones: a torch array
        # shuffled while numpy is active stays a torch array.
        xp, record = backend_for(array)
        order = self._host.permutation(array.shape[0]).astype("int64")
        return xp.take(array, record.from_host(order, array.device), axis=0)

    def _move(self, values: Any, dtype: str | None = None) -> Any:
        # namespace() raises the backend's own error (unavailable, no float16) before we move.
        namespace(None, dtype)
        backend, _, device = config.resolve()
        record = registry.get(backend)
        return record.from_host(values, record.device(device) if device is not None else None)


# Made on first use, so that ``import nnbackend`` does not import NumPy.
_global: Generator | None = None


def default_generator() -> Generator:
    """The module-level generator behind :func:`normal`, :func:`uniform`, ... (reseeded by
    :func:`seed`; unseeded until then)."""
    global _global
    if _global is None:
        _global = Generator(None)
    return _global


def seed(n: int) -> None:
    """Reseed the module-level generator used by :func:`normal`, :func:`uniform`, ..."""
    global _global
    _global = Generator(n)


def normal(
    size: Shape | None = None, loc: float = 0.0, scale: float = 1.0, *, dtype: Any = None
) -> Any:
    """:meth:`Generator.normal` on the module-level generator."""
    return default_generator().normal(size, loc, scale, dtype=dtype)


def uniform(
    size: Shape | None = None, low: float = 0.0, high: float = 1.0, *, dtype: Any = None
) -> Any:
    """:meth:`Generator.uniform` on the module-level generator."""
    return default_generator().uniform(size, low, high, dtype=dtype)


def integers(low: int, high: int | None = None, size: Shape | None = None) -> Any:
    """:meth:`Generator.integers` on the module-level generator."""
    return default_generator().integers(low, high, size)


def permutation(x: int | Any) -> Any:
    """:meth:`Generator.permutation` on the module-level generator."""
    return default_generator().permutation(x)
