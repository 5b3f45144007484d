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
from typing import Any

from nnbackend.autograd.tensor import Tensor
from nnbackend.backends import host
from nnbackend.errors import CheckpointError
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
        CheckpointError: ``trust`` is not True; the file is unreadable, holds anything but a
            list of floating arrays, or its count, shapes or values do not fit the model (a
            value beyond float16's range for a float16 model, say). Raised before any
            parameter is changed.
    """
    where = os.fspath(path)
    if trust is not True:
        raise CheckpointError(
            f"{where}: the book's parameter files are pickles, and reading a pickle can run "
            "code hidden in it. Pass trust=True only for a file whose origin you trust; "
            "nnbackend then reads it with an unpickler that builds nothing but NumPy arrays. "
            "To share weights safely, save them with nnbackend.save(model, 'model.safetensors')"
        )
    np = host.numpy()
    try:
        size = os.stat(where).st_size
        if size > MAX_BYTES:
            raise CheckpointError(f"{where}: {size} bytes is more than a parameter file holds")
        with open(where, "rb") as f:
            loaded = _ArraysOnly(_stdio.BytesIO(f.read())).load()
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
        if not np.all(np.isfinite(cast)) and np.all(np.isfinite(value)):
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
