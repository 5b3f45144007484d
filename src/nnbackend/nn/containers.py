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

import contextlib
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
    iterable, appendable, and (as PyTorch's) ``insert`` and ``del ml[i]`` renumber the
    entries. It has no ``forward``: the parent decides how to call them.

    ``len``, iteration and indexing see the same entries, in registration order, a ``None``
    placeholder (``add_module("1", None)``) included, as in PyTorch."""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        self.extend(modules)

    def _items(self) -> list[Any]:
        return list(self._modules.values())

    def _renumber(self, modules: list[Any]) -> None:
        """Register ``modules`` as the entries ``"0"``, ``"1"``, ... (and nothing else)."""
        for name in list(self._modules):
            self.__delattr__(name)
        for i, module in enumerate(modules):
            self.add_module(str(i), module)

    def append(self, module: Module) -> ModuleList:
        """Add ``module`` at the end; returns ``self``."""
        module = _module(module, "ModuleList")
        n = len(self._modules)
        while str(n) in self._modules:  # (an entry removed with delattr left a gap)
            n += 1
        self.add_module(str(n), module)
        return self

    def insert(self, index: int, module: Module) -> None:
        """Insert ``module`` before ``index`` (as ``list.insert``) and renumber."""
        items = self._items()
        items.insert(index, _module(module, "ModuleList"))
        self._renumber(items)

    def __delitem__(self, index: int | slice) -> None:
        items = self._items()
        del items[index]  # IndexError / TypeError as a list's
        self._renumber(items)

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
    """A dict of modules, registered under their keys (strings), in insertion order; built
    from a mapping or from ``(key, module)`` pairs, as PyTorch's."""

    def __init__(
        self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]] | None = None
    ) -> None:
        super().__init__()
        if modules is not None:
            self.update(modules)

    def update(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]]) -> None:
        """Add or replace each ``key: module`` of a mapping (a dict, another ModuleDict) or
        of an iterable of ``(key, module)`` pairs, as PyTorch's."""
        pairs: list[tuple[Any, ...]] = [()]  # (refused below)
        if isinstance(modules, Mapping | ModuleDict):
            pairs = list(modules.items())
        else:
            with contextlib.suppress(TypeError):
                pairs = [tuple(pair) for pair in modules]
            if any(len(pair) != 2 for pair in pairs):
                raise TypeError(
                    f"ModuleDict.update takes a mapping or an iterable of (key, module) pairs, "
                    f"got {type(modules).__name__}"
                )
        for key, module in pairs:
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
        if key not in self._modules:
            raise KeyError(f"{key!r} is not in this ModuleDict; it holds {list(self._modules)}")
        return self._modules[key]  # type: ignore[return-value]  # (a None placeholder too)

    def __delitem__(self, key: str) -> None:
        # Only an entry: ``del md["training"]`` went through to __delattr__ and deleted the
        # mode flag (or the ``_modules`` registry) from the instance.
        if key not in self._modules:
            raise KeyError(f"{key!r} is not in this ModuleDict; it holds {list(self._modules)}")
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
