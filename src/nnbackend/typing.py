"""Type aliases for annotations: what a backend array, an Array API namespace, a dtype and a
device are, named once.

The Array API standard defines no common nominal type: an array is a ``numpy.ndarray``, a
``cupy.ndarray``, a ``torch.Tensor``, an ``array_api_strict`` array or a third party's, and
only ``backends/`` may import those libraries. So each alias is ``Any`` for the type checker;
its name says what is meant, and the runtime checks (``nnbackend.namespace.backend_for``,
``nnbackend.device.is_array``) say what is accepted.

>>> from nnbackend.typing import Array, Namespace
>>> def double(xp: Namespace, x: Array) -> Array:
...     return xp.multiply(x, 2.0)
"""

from __future__ import annotations

from typing import Any, TypeAlias

__all__ = ["Array", "DType", "Device", "Namespace"]

Array: TypeAlias = Any
"""An array of a registered backend (``numpy.ndarray``, ``torch.Tensor``, ...), never an
:class:`nnbackend.Tensor` (whose ``.data`` is one)."""

Namespace: TypeAlias = Any
"""An Array API namespace: the module ``nnbackend.namespace()`` returns (creation functions
defaulting to the active dtype), or a backend's own (``backend_for(x)[0]``)."""

DType: TypeAlias = Any
"""A dtype object of a backend's namespace (``xp.float32``); settings take dtype names
(``"float32"``) instead."""

Device: TypeAlias = Any
"""A device object of a backend (``record.device("cuda:0")``); targets and settings take
device names (``"cupy:1"``, ``"cuda:0"``) instead."""
