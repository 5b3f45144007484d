"""The package's layers (``/work/shared/DESIGN.md``, "Layers of the package") import only
downwards, and no module reaches into another module's private names.

adapters -> arrays -> engine -> models -> training -> front: every import of an ``nnbackend``
module (lazy ones inside functions too, relative ones, ``importlib.import_module`` with a
constant name) points to the importer's layer or a lower one. Nothing above the adapters
imports ``backends.host`` (NumPy) except the checkpoint format (``io``), the seeded random
stream (``random``) and the dataset builders (``datasets``). A private name (``_x``) of a
module is used only by that module, and a private module (``io/_npz.py``) only inside its
package; other modules use the owner's named internal API.

Other branches are removing the last violations; each one still present is listed in
:data:`KNOWN` with the issue item that removes it. The test fails on a violation not listed
and on a listed one that is gone (delete its entry when the branch that removes it merges).
"""

from __future__ import annotations

import ast
from pathlib import Path

import nnbackend

PACKAGE = Path(nnbackend.__file__).resolve().parent

LAYERS: list[tuple[str, tuple[str, ...]]] = [  # lowest first; the first matching prefix wins
    ("adapters", ("backends", "errors", "_typing", "typing", "_version")),
    ("arrays", ("registry", "config", "namespace", "random", "device", "transfer", "devices")),
    ("engine", ("autograd", "functional")),
    ("models", ("nn", "optim", "precision")),
    (
        "training",
        (
            "train",
            "io",
            "datasets",
            "callbacks",
            "metrics",
            "data",
            "text",
            "distributed",
            "compile",
            "schedules",
        ),
    ),
    ("front", ("cli", "info", "__main__", "")),  # "" is the package itself (__init__.py)
]
RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)}
HOST = "nnbackend.backends.host"
HOST_USERS = ("nnbackend.backends", "nnbackend.io", "nnbackend.random", "nnbackend.datasets")

# Known violations awaiting removal, each with the issue item that removes it (none today;
# the test fails on an entry that is no longer a violation, so the list cannot go stale).
KNOWN: dict[str, str] = {}


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name, or None where no layer claims it."""
    rest = module.removeprefix("nnbackend").removeprefix(".")
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if rest == prefix or (prefix and rest.startswith(prefix + ".")):
                return name
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _all_modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _owner_allows(owner: str, importer: str) -> bool:
    """Whether ``importer`` may use a private name of module ``owner``: it is that module,
    or lies inside it when ``owner`` is a package."""
    return importer == owner or importer.startswith(owner + ".")


def _dotted(node: ast.expr) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def violations(source: str, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """Every layering violation and private reach in one module's ``source``, as strings
    without line numbers (``"<module> imports <layer> <target>"``, ``"<module> imports
    nnbackend.backends.host"``, ``"<module> reaches <owner>._name"``)."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    here = layer_of(module)
    found: set[str] = set()
    aliases: dict[str, str] = {}  # local name -> the nnbackend module it is bound to

    def imported(target: str) -> None:
        there = layer_of(target)
        if here is not None and there is not None and RANK[there] > RANK[here]:
            found.add(f"{module} imports {there} {target}")
        if (target == HOST or target.startswith(HOST + ".")) and not module.startswith(HOST_USERS):
            found.add(f"{module} imports {HOST}")
        parts = target.split(".")
        for i, part in enumerate(parts[1:], start=1):
            owner = ".".join(parts[:i])
            if _private(part) and not _owner_allows(owner, module):
                found.add(f"{module} reaches {owner}.{part}")
                break

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.partition(".")[0] == "nnbackend":
                    imported(alias.name)
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:
                        aliases["nnbackend"] = "nnbackend"
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source_module = ".".join(base + ([node.module] if node.module else []))
            else:
                source_module = node.module or ""
            if source_module.partition(".")[0] != "nnbackend":
                continue
            for alias in node.names:
                sub = f"{source_module}.{alias.name}"
                if sub in modules:  # "from package import submodule"
                    imported(sub)
                    aliases[alias.asname or alias.name] = sub
                else:
                    imported(source_module)
                    if _private(alias.name) and not _owner_allows(source_module, module):
                        found.add(f"{module} reaches {sub}")
        elif (
            isinstance(node, ast.Call)
            and (_dotted(node.func) or [""])[-1] in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and node.args[0].value.partition(".")[0] == "nnbackend"
        ):
            imported(node.args[0].value)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            parts = _dotted(node.value)
            if parts is None or parts[0] not in aliases:
                continue
            owner = ".".join([aliases[parts[0]], *parts[1:]])
            if owner in modules and not _owner_allows(owner, module):
                found.add(f"{module} reaches {owner}.{node.attr}")
    return found


def _package_violations() -> set[str]:
    modules = _all_modules()
    found: set[str] = set()
    for name, path in modules.items():
        source = path.read_text(encoding="utf-8")
        found |= violations(source, name, path.name == "__init__.py", set(modules))
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(name for name in _all_modules() if layer_of(name) is None)
    assert not unplaced, f"add these modules to LAYERS (and DESIGN.md's table): {unplaced}"


def test_the_scanner_finds_each_kind_of_violation() -> None:
    modules = {
        "nnbackend",
        "nnbackend.config",
        "nnbackend.nn",
        "nnbackend.nn.module",
        "nnbackend.io",
        "nnbackend.io._npz",
        "nnbackend.backends",
        "nnbackend.backends.host",
    }
    source = """
from nnbackend import config
from nnbackend.config import _context, resolve
from . import module as mod
import nnbackend.io._npz
import nnbackend as nb

def lazy():
    from nnbackend.io import save
    importlib.import_module("nnbackend.train")
    from nnbackend.backends import host
    return config._Process, nb.config._lock, mod._helper, config.public
"""
    assert violations(source, "nnbackend.nn.layers", False, modules) == {
        "nnbackend.nn.layers imports front nnbackend",
        "nnbackend.nn.layers imports training nnbackend.io",
        "nnbackend.nn.layers imports training nnbackend.io._npz",
        "nnbackend.nn.layers imports training nnbackend.train",
        "nnbackend.nn.layers imports nnbackend.backends.host",
        "nnbackend.nn.layers reaches nnbackend.config._context",
        "nnbackend.nn.layers reaches nnbackend.config._Process",
        "nnbackend.nn.layers reaches nnbackend.config._lock",
        "nnbackend.nn.layers reaches nnbackend.nn.module._helper",
        "nnbackend.nn.layers reaches nnbackend.io._npz",
    }
    # The owner itself, and a package's own modules, may use its private names.
    inside = "from nnbackend.io import _npz\nfrom nnbackend.io._npz import read\n"
    assert violations(inside, "nnbackend.io", True, modules) == set()
    assert (
        violations("from nnbackend.io._npz import read\n", "nnbackend.io.book", False, modules)
        == set()
    )


def test_layers_import_only_downwards_and_reach_no_private_names() -> None:
    found = _package_violations()
    new = sorted(found - KNOWN.keys())
    fixed = sorted(KNOWN.keys() - found)
    assert not new, "layering violations or private reaches:\n" + "\n".join(new)
    assert not fixed, (
        "these KNOWN entries are no longer violations; delete them from KNOWN in "
        "tests/test_layers_order.py:\n" + "\n".join(fixed)
    )
