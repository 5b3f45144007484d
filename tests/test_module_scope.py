"""nnbackend imports under a debugger-style tracer on Python 3.12.

Python 3.12 inlines list, set and dict comprehensions (PEP 709). At module level their loop
variables then live in the module's frame, and a tracer that reads ``frame.f_locals`` (as
debuggers do) resets them to None between events: ``{m: r.name for r in BUILTIN for m in
r.array_modules}`` in ``registry`` raised AttributeError, so ``import nnbackend`` failed under
such a tracer (found on the GPU image's Python 3.12.3; CPython gh-124118, gh-130809). The
package's module and class bodies therefore hold no such comprehension; a generator
expression keeps its own frame and is fine.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "nnbackend"
INLINED = (ast.ListComp, ast.SetComp, ast.DictComp)
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _module_level_comprehensions(tree: ast.AST) -> list[int]:
    """Line numbers of the comprehensions Python 3.12 inlines into a module or class body."""
    found: list[int] = []
    pending = [tree]
    while pending:
        for child in ast.iter_child_nodes(pending.pop()):
            if isinstance(child, FUNCTIONS):
                continue  # a function's own frame: its locals are real fast locals
            if isinstance(child, INLINED):
                found.append(child.lineno)
            pending.append(child)
    return sorted(found)


def test_the_finder_sees_module_and_class_bodies_but_not_functions() -> None:
    code = (
        "A = [x for x in range(3)]\n"
        "class C:\n    B = {k: 1 for k in 'ab'}\n"
        "def f():\n    return {x for x in range(3)}\n"
        "G = tuple(x for x in range(3))\n"
        "H = (lambda: [y for y in ()])\n"
    )
    assert _module_level_comprehensions(ast.parse(code)) == [1, 3]


def test_no_comprehension_runs_in_a_module_or_class_body() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for line in _module_level_comprehensions(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(f"{path.relative_to(SRC.parent)}:{line}")
    assert not offenders, (
        "comprehensions at module or class level break `import nnbackend` under a tracer "
        f"on Python 3.12 (see this module's docstring); build them in a function: {offenders}"
    )


@pytest.mark.parametrize("module", ["nnbackend", "nnbackend.io", "nnbackend.train"])
def test_imports_under_a_tracer_that_reads_locals(module: str) -> None:
    # NumPy's numpy.typing and array-api-compat are imported first: on 3.12 numpy.typing's own
    # module-level comprehension fails under this tracer.
    code = (
        "import sys, numpy.typing, array_api_compat.numpy\n"
        "def tracer(frame, event, arg):\n    frame.f_locals\n    return tracer\n"
        f"sys.settrace(tracer)\nimport {module}\nsys.settrace(None)\nprint('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.split() == ["ok"], result.stderr[-2000:]
