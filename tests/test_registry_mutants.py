"""Registry behaviour that mutation testing found untested in-process (issue #21): plugin
entry points (the suite's real entry-point test runs in a subprocess, where mutants of the
parent process are invisible), error messages, and what unregistering gives back."""

from __future__ import annotations

from typing import Any

import array_api_compat.numpy
import array_api_strict
import numpy as np
import pytest

import nnbackend as nb
from nnbackend import registry
from nnbackend.errors import BackendError, BackendUnavailableError
from nnbackend.namespace import backend_for


def _record(name: str, load: Any = lambda: array_api_compat.numpy, **kw: Any) -> nb.Backend:
    return nb.Backend(
        name=name,
        load_namespace=load,
        probe=lambda: None,
        array_modules=kw.pop("array_modules", ()),
        to_host=np.asarray,
        from_host=lambda a, device=None: a,
        capabilities=nb.Capabilities(float16=False),
        **kw,
    )


GROUPS: list[str] = []  # the groups the registry asked entry_points() for


class _EntryPoint:
    def __init__(self, name: str, value: str, target: Any) -> None:
        self.name, self.value, self._target = name, value, target
        self.loads = 0

    def load(self) -> Any:
        self.loads += 1
        if isinstance(self._target, BaseException):
            raise self._target
        return self._target


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> dict[str, _EntryPoint]:
    eps = {
        "plain": _EntryPoint("plain", "pkg:PLAIN", _record("plain")),
        "factory": _EntryPoint("factory", "pkg:make", lambda: _record("factory")),
        "numpy": _EntryPoint("numpy", "pkg:shadow", _record("numpy")),  # a built-in's name
        "notabackend": _EntryPoint("notabackend", "pkg:three", lambda: 3),
        "misnamed": _EntryPoint("misnamed", "pkg:other", _record("other")),
        "broken": _EntryPoint("broken", "pkg:boom", ImportError("no module named boom")),
    }
    groups = GROUPS
    groups.clear()

    def entry_points(*, group: str) -> list[_EntryPoint]:
        groups.append(group)
        return list(eps.values()) if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(registry, "entry_points", entry_points)
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    return eps


def test_entry_points_are_loaded_once_and_broken_ones_explained(plugins: Any) -> None:
    # get() of a plugin before anything listed the backends: found by the entry-point path.
    assert registry.get("factory").name == "factory"
    names = registry.backends()
    assert names[: len(registry.BUILTIN)] == [r.name for r in registry.BUILTIN]
    assert names[len(registry.BUILTIN) :] == ["plain", "factory", "notabackend", "misnamed",
                                              "broken"]  # fmt: skip
    assert GROUPS == [registry.ENTRY_POINT_GROUP]
    assert plugins["numpy"].loads == 0  # a registered name is never loaded again
    assert registry.get("plain") is plugins["plain"]._target
    assert registry.get("factory").name == "factory"
    assert registry.probe("plain") is None and registry.probe("factory") is None
    expected = {
        "notabackend": "plugin entry point 'pkg:three' failed to load "
        "(TypeError: it gave int, not an nnbackend.Backend)",
        "misnamed": "plugin entry point 'pkg:other' failed to load (ValueError: the entry point "
        "is named 'misnamed' but its record is 'other')",
        "broken": "plugin entry point 'pkg:boom' failed to load "
        "(ImportError: no module named boom)",
    }
    for name, reason in expected.items():
        assert registry.probe(name) == reason
        with pytest.raises(BackendUnavailableError) as info:
            registry.get(name)
        assert str(info.value) == f"backend {name!r}: {reason}"
        assert name not in registry.available_backends()
    assert "other" not in names
    registry.backends()
    assert all(ep.loads <= 1 for ep in plugins.values())
    assert GROUPS == [registry.ENTRY_POINT_GROUP]


def test_unknown_names_list_every_backend(plugins: Any) -> None:
    with pytest.raises(BackendError) as info:
        registry.probe("nope")
    listed = ", ".join(repr(n) for n in registry.backends())
    assert str(info.value) == f"unknown backend 'nope'; registered backends are {listed}"
    assert not isinstance(info.value, BackendUnavailableError)


def test_registration_errors_say_what_to_do() -> None:
    with pytest.raises(BackendError) as info:
        nb.register_backend(3)  # type: ignore[arg-type]
    assert "got int;" in str(info.value)
    assert str(info.value).endswith(
        "; build one with nnbackend.Backend(name=..., load_namespace=..., probe=..., ...)"
    )
    nb.register_backend(_record("dup"))
    with pytest.raises(BackendError, match=r"already registered; pass replace=True to replace it$"):
        nb.register_backend(_record("dup"))
    with pytest.raises(BackendError) as info:
        nb.register_backend(_record("thief", array_modules=("mine", "numpy", "array_api_strict")))
    assert "declares array_modules 'numpy', 'array_api_strict', whose arrays" in str(info.value)


def test_unregistering_gives_taken_modules_back_at_once() -> None:
    a = np.zeros(2)
    assert backend_for(a)[1].name == "numpy"
    nb.register_backend(_record("thief", array_modules=("numpy",)), replace="numpy")
    assert registry.backend_of(a) == "thief" and backend_for(a)[1].name == "thief"
    registry.unregister_backend("thief")
    assert registry.backend_of(a) == "numpy"
    assert backend_for(a)[1].name == "numpy"  # the cache keyed by array type forgot "thief"


def test_a_name_registered_again_after_unregistering_gets_the_new_namespace() -> None:
    nb.register_backend(_record("again"))
    assert type(nb.namespace("again").asarray([1.0])).__module__ == "numpy"
    registry.unregister_backend("again")
    nb.register_backend(_record("again", load=lambda: array_api_strict))
    assert "array_api_strict" in type(nb.namespace("again").asarray([1.0])).__module__


def test_every_registry_change_gives_a_new_generation(numpy_like_backend: Any) -> None:
    """``namespace()`` trusts its last namespace while the generation is unchanged: a
    generation that came back after a change would hand out a namespace of a replaced or
    removed backend."""
    seen = [registry.generation]
    for _ in range(2):
        nb.register_backend(numpy_like_backend("gen_a"))
        seen.append(registry.generation)
        nb.register_backend(numpy_like_backend("gen_b"))
        seen.append(registry.generation)
        registry.unregister_backend("gen_a")
        seen.append(registry.generation)
        registry.unregister_backend("gen_b")
        seen.append(registry.generation)
    assert seen == sorted(set(seen)), seen
    library = type(array_api_compat.numpy)("replaced")
    library.__dict__.update(vars(array_api_compat.numpy))
    nb.register_backend(numpy_like_backend("gen_a"))
    with nb.using(backend="gen_a"):
        first = nb.namespace()
        nb.register_backend(numpy_like_backend("gen_a", load_namespace=lambda: library),
                            replace=True)  # fmt: skip
        assert nb.namespace() is not first and nb.namespace().__wrapped__ is library
