"""``ModuleList`` and ``ModuleDict``: lists and dicts of layers whose parameters the parent
module sees.

A plain Python list of layers assigned to a module attribute is refused (its parameters would
be missed by ``parameters()``, the optimizer, ``to()`` and checkpoints); wrap it in one of
these instead.

>>> from nnbackend import nn
>>> class Tower(nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
...         self.heads = nn.ModuleDict({"a": nn.Linear(4, 2), "b": nn.Linear(4, 1)})
...     def forward(self, x):
...         for block in self.blocks:
...             x = block(x)
...         return self.heads["a"](x)
>>> len(list(Tower().parameters()))
10
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from nnbackend.nn.module import Module

__all__ = ["ModuleDict", "ModuleList"]


def _module(value: Any, where: str) -> Module:
    if not isinstance(value, Module):
        raise TypeError(f"{where} holds nn.Module objects, got {type(value).__name__}")
    return value


class ModuleList(Module):
    """A list of modules, registered under the names ``"0"``, ``"1"``, ...: indexable,
    iterable, appendable. It has no ``forward``: the parent decides how to call them."""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        self.extend(modules)

    def _items(self) -> list[Module]:
        return [m for m in self._modules.values() if m is not None]

    def append(self, module: Module) -> ModuleList:
        """Add ``module`` at the end; returns ``self``."""
        self.add_module(str(len(self._modules)), _module(module, "ModuleList"))
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        """Append each of ``modules``; returns ``self``."""
        for module in modules:
            self.append(module)
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._items())

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return ModuleList(self._items()[index])
        return self._items()[index]

    def __setitem__(self, index: int, module: Module) -> None:
        name = list(self._modules)[index]
        self.add_module(name, _module(module, "ModuleList"))


class ModuleDict(Module):
    """A dict of modules, registered under their keys (strings), in insertion order."""

    def __init__(self, modules: Mapping[str, Module] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.update(modules)

    def update(self, modules: Mapping[str, Module]) -> None:
        """Add or replace each ``key: module``."""
        for key, module in modules.items():
            self[key] = module

    def __setitem__(self, key: str, module: Module) -> None:
        # An instance attribute that is no entry (``training``, the ``_modules`` registry)
        # is refused too: add_module would replace it in ``__dict__``.
        if (
            not isinstance(key, str)
            or not key
            or "." in key
            or hasattr(type(self), key)
            or (key in self.__dict__ and key not in self._modules)
        ):
            raise KeyError(
                f"ModuleDict keys are non-empty strings without '.' that are not ModuleDict "
                f"attributes (keys, items, update, ...), got {key!r}"
            )
        self.add_module(key, _module(module, "ModuleDict"))

    def __getitem__(self, key: str) -> Module:
        module = self._modules.get(key)
        if module is None:
            raise KeyError(f"{key!r} is not in this ModuleDict; it holds {list(self._modules)}")
        return module

    def __delitem__(self, key: str) -> None:
        self.__delattr__(key)

    def __contains__(self, key: object) -> bool:
        return key in self._modules

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._modules))

    def keys(self) -> list[str]:
        """The keys, in insertion order."""
        return list(self._modules)

    def values(self) -> list[Module]:
        """The modules, in insertion order."""
        return [m for m in self._modules.values() if m is not None]

    def items(self) -> list[tuple[str, Module]]:
        """``(key, module)`` pairs, in insertion order."""
        return [(k, m) for k, m in self._modules.items() if m is not None]
