"""nnbackend: one neural-network code base on NumPy, CuPy, PyTorch or any Array API library,
in float64, float32 or float16.

>>> import nnbackend as nb
>>> xp = nb.namespace()
>>> xp.asarray([1.0, 2.0]).dtype
dtype('float64')
"""

from __future__ import annotations

from nnbackend import (
    autograd,
    callbacks,
    datasets,
    errors,
    functional,
    metrics,
    precision,
    random,
    schedules,
    text,
)
from nnbackend.autograd import (
    Function,
    Tensor,
    enable_grad,
    grad,
    gradcheck,
    gradgradcheck,
    no_grad,
)
from nnbackend.autograd.compile import CompiledStep, compile_step
from nnbackend.backends.base import Backend, Capabilities
from nnbackend.config import (
    get_backend,
    get_default_dtype,
    get_device,
    set_backend,
    set_default_dtype,
    using,
)
from nnbackend.datasets import to_backend
from nnbackend.device import empty_cache, from_dlpack, to_device
from nnbackend.info import info
from nnbackend.io import load, load_book_params, save
from nnbackend.namespace import array_namespace, namespace
from nnbackend.registry import available_backends, backends, register_backend
from nnbackend.train import History, Trainer

__all__ = [
    "Backend",
    "Capabilities",
    "CompiledStep",
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
    "callbacks",
    "compile_step",
    "data",
    "datasets",
    "distributed",
    "empty_cache",
    "errors",
    "from_dlpack",
    "get_backend",
    "get_default_dtype",
    "get_device",
    "info",
    "load",
    "load_book_params",
    "metrics",
    "namespace",
    "nn",
    "optim",
    "precision",
    "random",
    "register_backend",
    "save",
    "schedules",
    "set_backend",
    "set_default_dtype",
    "to_backend",
    "text",
    "to_device",
    "using",
]


# Subpackages imported on first use, so ``nb.nn.Linear`` works after ``import nnbackend as
# nb`` (as ``torch.nn`` after ``import torch``) while ``import nnbackend`` stays light.
_ON_FIRST_USE = frozenset({"data", "distributed", "nn", "optim"})


def __getattr__(name: str) -> object:
    if name in _ON_FIRST_USE:
        import importlib

        return importlib.import_module(f"nnbackend.{name}")
    if name == "__version__":
        from nnbackend._version import package_version

        return package_version()
    raise AttributeError(f"module 'nnbackend' has no attribute {name!r}")


def __dir__() -> list[str]:
    """Public names only (``__all__``, the loaded subpackages, ``__version__``): no
    ``annotations`` or other names the implementation imports."""
    modules = {n for n, v in globals().items() if not n.startswith("_") and type(v) is type(errors)}
    return sorted({*__all__, *modules, "__version__"})
