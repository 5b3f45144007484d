"""The book's trained parameters: the pickled parameter lists of "Deep Learning from Scratch 2".

The book saves a model as ``pickle.dump([p.astype(np.float16) for p in model.params], f)``
(its ``BaseModel.save_params``) and loads it back by position into ``model.params``. A pickle
can run code when it is read, so :func:`load_book_params` reads one only when the caller says
the file is trusted, and even then through an unpickler that builds nothing but NumPy arrays,
dtypes and lists: a file holding anything else is refused before any object is made.
"""

from __future__ import annotations

import io as _stdio
import os
import pickle
import stat
from typing import Any

from nnbackend.autograd.tensor import Tensor
from nnbackend.backends import host
from nnbackend.errors import ArgumentError, CheckpointError
from nnbackend.namespace import backend_for

__all__ = ["load_book_params"]

# What a pickled list of NumPy arrays needs, under NumPy 1's and NumPy 2's module names.
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}
MAX_BYTES = 4 << 30  # the book's largest file (BetterRnnlm) is about 40 MB


class _Capped:
    """A binary file read through a cap of ``limit`` bytes: a special file (``/dev/zero``, a
    pipe) has size 0 to ``os.stat``, so only reading can tell that it holds too much."""

    def __init__(self, f: Any, limit: int, where: str) -> None:
        self._f, self._left, self._limit, self._where = f, limit, limit, where

    def _take(self, data: bytes) -> bytes:
        self._left -= len(data)
        if self._left < 0:
            raise CheckpointError(
                f"{self._where}: more than {self._limit} bytes, more than a parameter file holds"
            )
        return data

    def read(self, n: int = -1) -> bytes:
        n = self._left + 1 if n is None or n < 0 else min(n, self._left + 1)
        return self._take(self._f.read(n))

    def readline(self, n: int = -1) -> bytes:
        n = self._left + 1 if n is None or n < 0 else min(n, self._left + 1)
        return self._take(self._f.readline(n))


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(
                f"the file asks for {module}.{name}; a parameter file holds only NumPy arrays"
            )
        return getattr(__import__(module, fromlist=[name]), name)


def load_book_params(model: Any, path: str | os.PathLike[str], *, trust: bool = False) -> None:
    """Load a parameter file saved by the book's code (``model.save_params()``) into
    ``model``, by position: the file's i-th array goes to the i-th of
    ``model.parameters()``, cast to that parameter's dtype and moved to its backend.

    Build the nnbackend model whose parameters come in the book's order with the book's
    shapes: the chapter-1 ``TwoLayerNet`` (``Affine, Sigmoid, Affine``) is
    ``nn.Sequential(nn.Linear(I, H), nn.Sigmoid(), nn.Linear(H, O))``; nnbackend's ``Linear``
    keeps its weight as ``(in, out)`` like the book's ``Affine``, so nothing is transposed.

    Args:
        model: the model to fill.
        path: the book's ``.pkl`` file.
        trust: must be True: a pickle can run code when read. Pass it only for a file whose
            origin you trust (the book's own downloads). The reader still builds only arrays.

    Raises:
        ArgumentError: ``model`` has no ``parameters()`` or ``path`` is no path (the two
            swapped, say).
        CheckpointError: ``trust`` is not True; the file is unreadable, holds anything but a
            list of floating arrays, or its count, shapes or values do not fit the model (a
            value beyond float16's range for a float16 model, say), or it is a pipe or
            device that streams more than ``MAX_BYTES``. Raised before any parameter is
            changed.
    """
    if not hasattr(model, "parameters"):
        raise ArgumentError(
            f"load_book_params needs the model to fill (an nn.Module), got "
            f"{type(model).__name__}; call load_book_params(model, path, trust=True)"
        )
    if not isinstance(path, str | bytes | os.PathLike):
        raise ArgumentError(
            f"load_book_params needs the path of the book's .pkl file (a str or os.PathLike), "
            f"got {type(path).__name__}; call load_book_params(model, path, trust=True)"
        )
    where = os.fsdecode(path)
    if trust is not True:
        raise CheckpointError(
            f"{where}: the book's parameter files are pickles, and reading a pickle can run "
            "code hidden in it. Pass trust=True only for a file whose origin you trust; "
            "nnbackend then reads it with an unpickler that builds nothing but NumPy arrays. "
            "To share weights safely, save them with nnbackend.save(model, 'model.safetensors')"
        )
    np = host.numpy()
    try:
        with open(where, "rb") as f:
            info = os.fstat(f.fileno())
            if stat.S_ISREG(info.st_mode):
                if info.st_size > MAX_BYTES:
                    raise CheckpointError(
                        f"{where}: {info.st_size} bytes is more than a parameter file holds"
                    )
                loaded = _ArraysOnly(_stdio.BytesIO(f.read(MAX_BYTES + 1))).load()
            else:  # a pipe or a device: its size is known only by reading it
                loaded = _ArraysOnly(_Capped(f, MAX_BYTES, where)).load()
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"{where}: no such parameter file") from None
    except Exception as exc:  # UnpicklingError, EOFError, ValueError...: all mean unreadable
        raise CheckpointError(
            f"{where}: cannot read the book's parameter file ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(loaded, list | tuple) or not all(
        isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating) for a in loaded
    ):
        raise CheckpointError(f"{where}: expected a list of floating-point arrays")
    params = list(model.parameters())
    if len(loaded) != len(params):
        raise CheckpointError(
            f"{where}: the file holds {len(loaded)} arrays, the model has {len(params)} "
            "parameters; build the model with the book's layers in the book's order"
        )
    updates = []
    for i, (value, param) in enumerate(zip(loaded, params, strict=True)):
        data = param.data if isinstance(param, Tensor) else param
        if tuple(value.shape) != tuple(data.shape):
            raise CheckpointError(
                f"{where}: array {i} has shape {tuple(value.shape)}, but parameter {i} of the "
                f"model has shape {tuple(data.shape)}"
            )
        xp, record = backend_for(data)
        target = np.dtype(str(data.dtype).rsplit(".", 1)[-1])
        with np.errstate(over="ignore", invalid="ignore"):
            cast = np.array(value, dtype=target, order="C", copy=True)
        # Per element: a file that holds an inf somewhere must not let another value
        # overflow to inf unnoticed.
        if np.any(~np.isfinite(cast) & np.isfinite(value)):
            raise CheckpointError(
                f"{where}: array {i} holds values beyond {target}'s range; build the model "
                "in a wider dtype"
            )
        moved = record.from_host(cast, getattr(data, "device", None))
        updates.append(
            (param, moved if moved.dtype == data.dtype else xp.astype(moved, data.dtype))
        )
    for param, value in updates:
        param.data = value
        if isinstance(param, Tensor):
            param.grad = None
