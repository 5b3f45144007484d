"""Invariant 1: only ``src/nnbackend/backends/`` imports array libraries, and importing
nnbackend loads none of the optional ones."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nnbackend

BANNED = {"numpy", "cupy", "cupyx", "torch", "array_api_strict", "array_api_compat", "jax"}
PACKAGE = Path(nnbackend.__file__).resolve().parent


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def test_scanner_sees_every_import_form() -> None:
    tree = ast.parse(
        "import numpy as np\nfrom torch import nn\nimport os, jax.numpy\n"
        "importlib.import_module('cupy')\nfrom . import numpy\n"
    )
    names = {name.partition(".")[0] for _, name in _imported_modules(tree)}
    assert names == {"numpy", "torch", "os", "jax", "cupy"}


def test_only_backends_import_array_libraries() -> None:
    files = [p for p in PACKAGE.rglob("*.py") if "backends" not in p.relative_to(PACKAGE).parts]
    assert any(p.name == "namespace.py" for p in files)
    offenders = []
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for lineno, module in _imported_modules(tree):
            if module.partition(".")[0] in BANNED:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{lineno}: imports {module}")
    assert not offenders, "array libraries imported outside backends/:\n" + "\n".join(offenders)


def test_import_loads_no_optional_library(run_python: Callable[..., Any]) -> None:
    code = """
    import json, sys
    optional = ("torch", "array_api_strict", "cupy", "jax")
    out = {}
    import nnbackend as nb
    out["import"] = [m for m in optional if m in sys.modules]
    nb.backends()
    nb.get_backend()
    xp = nb.namespace()
    xp.exp(xp.zeros(2))
    nb.random.normal(3)
    out["numpy use"] = [m for m in optional if m in sys.modules]
    print(json.dumps(out))
    """
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"import": [], "numpy use": []}
