"""nnbackend: one neural-network code base on NumPy, CuPy, PyTorch or any Array API library,
in float64, float32 or float16.

>>> import nnbackend as nb
>>> xp = nb.namespace()
>>> xp.asarray([1.0, 2.0]).dtype
dtype('float64')
"""

from __future__ import annotations

from nnbackend import autograd, datasets, errors, functional, precision, random
from nnbackend.autograd import (
    Function,
    Tensor,
    enable_grad,
    grad,
    gradcheck,
    gradgradcheck,
    no_grad,
)
from nnbackend.backends.base import Backend, Capabilities
from nnbackend.config import (
    get_backend,
    get_default_dtype,
    get_device,
    set_backend,
    set_default_dtype,
    using,
)
from nnbackend.device import empty_cache, from_dlpack, to_device
from nnbackend.info import info
from nnbackend.io import load, save
from nnbackend.namespace import array_namespace, namespace
from nnbackend.registry import available_backends, backends, register_backend
from nnbackend.train import History, Trainer

__all__ = [
    "Backend",
    "Capabilities",
    "Function",
    "History",
    "Tensor",
    "Trainer",
    "autograd",
    "enable_grad",
    "functional",
    "grad",
    "gradcheck",
    "gradgradcheck",
    "no_grad",
    "array_namespace",
    "available_backends",
    "backends",
    "datasets",
    "empty_cache",
    "errors",
    "from_dlpack",
    "get_backend",
    "get_default_dtype",
    "get_device",
    "info",
    "load",
    "namespace",
    "precision",
    "random",
    "register_backend",
    "save",
    "set_backend",
    "set_default_dtype",
    "to_device",
    "using",
]


def __getattr__(name: str) -> object:
    if name == "__version__":
        from nnbackend.info import package_version

        return package_version()
    raise AttributeError(f"module 'nnbackend' has no attribute {name!r}")
