"""``nnbackend.autograd.to_dot``: the graph behind a Tensor as Graphviz DOT text."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend.autograd import Tensor, to_dot

NODE = re.compile(r'^\s*(\w+) \[label="((?:[^"\\]|\\.)*)"(.*)\];$')
EDGE = re.compile(r"^\s*(\w+) -> (\w+);$")


def parse(dot: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(node id -> label, edges); fails on any line that is neither."""
    lines = dot.strip().splitlines()
    assert re.match(r'^digraph "[^"]*" \{$', lines[0]), lines[0]
    assert lines[-1] == "}"
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str]] = []
    for line in lines[1:-1]:
        if m := NODE.match(line):
            assert m.group(1) not in nodes, f"node {m.group(1)} declared twice"
            nodes[m.group(1)] = m.group(2)
        elif m := EDGE.match(line):
            edges.append((m.group(1), m.group(2)))
        else:
            assert re.match(r"^\s*(rankdir=\w+|node \[.*\]);$", line), line
    return nodes, edges


def balanced(dot: str) -> bool:
    """Braces balance outside quoted strings."""
    depth = 0
    quoted = escaped = False
    for ch in dot:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted and ch in "{}":
            depth += 1 if ch == "{" else -1
            if depth < 0:
                return False
    return depth == 0 and not quoted


def mlp(xp: Any, dtype: str) -> tuple[Tensor, Tensor, Tensor]:
    rng = np.random.default_rng(0)
    cast = lambda a: xp.asarray(a.tolist(), dtype=getattr(xp, dtype))
    x = Tensor(cast(rng.normal(size=(5, 2))), name="x")
    w = Tensor(cast(rng.normal(size=(2, 3))), requires_grad=True, name="W")
    b = Tensor(cast(rng.normal(size=(3,))), requires_grad=True, name="b")
    h = x @ w + b
    loss = (h * h).sum()
    return loss, w, b


def test_dot_is_well_formed_and_names_ops_shapes_and_dtypes(xp: Any, dtype: str) -> None:
    loss, _, _ = mlp(xp, dtype)
    dot = to_dot(loss)
    assert dot.startswith("digraph")
    assert balanced(dot)
    nodes, edges = parse(dot)
    labels = list(nodes.values())
    for op in ("MatMul", "Add", "Mul", "Sum"):
        assert labels.count(op) == 1, (op, labels)
    for shape in ("(5, 2)", "(2, 3)", "(3,)", "(5, 3)", "()"):
        assert any(shape in label for label in labels), shape
    assert all(label.endswith(dtype) for label in labels if label.startswith(("x", "W", "b")))
    assert f"(2, 3) {dtype}" in dot
    # dtypes are plain names on every backend, not "torch.float32" or "array_api_strict...".
    assert "torch." not in dot and "array_api_strict." not in dot
    for name in ("x", "W", "b"):
        assert any(label.startswith(name + "\\n") for label in labels), name
    # Every edge joins declared nodes; ops connect tensors to tensors.
    for a, b in edges:
        assert a in nodes and b in nodes
        assert a.startswith("f") != b.startswith("f"), (a, b)
    # Tensors x, W, b, x@W, h, h*h, loss and the ops MatMul, Add, Mul, Sum.
    assert len(nodes) == 11
    assert len(edges) == 11


def test_leaves_that_need_gradients_are_filled(xp: Any, dtype: str) -> None:
    loss, _, _ = mlp(xp, dtype)
    nodes_lines = {
        line.split(" ")[2]: line for line in to_dot(loss).splitlines()[3:-1] if "label=" in line
    }
    filled = [line for line in nodes_lines.values() if "lightblue" in line]
    assert len(filled) == 2
    assert all('label="W' in line or 'label="b' in line for line in filled)


def test_shared_subexpressions_appear_once(xp: Any, dtype: str) -> None:
    a = Tensor(xp.ones((2,), dtype=getattr(xp, dtype)), requires_grad=True, name="a")
    y = a * 2.0
    z = (y + y * y).sum()
    nodes, edges = parse(to_dot(z))
    assert sorted(nodes.values()).count("Mul") == 2
    assert len(set(edges)) == len(edges) - 1  # y * y: y feeds the Mul twice
    y_ids = [k for k, label in nodes.items() if label.startswith("(2,)") and k.startswith("t")]
    assert len(y_ids) == 3  # y, y*y, y + y*y


def test_a_leaf_alone_and_a_title(xp: Any, dtype: str) -> None:
    w = Tensor(xp.ones((4,), dtype=getattr(xp, dtype)), requires_grad=True, name="w")
    nodes, edges = parse(to_dot(w, title="mine"))
    assert list(nodes.values()) == [f"w\\n(4,) {dtype}"]
    assert edges == []
    assert to_dot(w, title="mine").startswith('digraph "mine" {')


def test_tensor_names_are_escaped(xp: Any, dtype: str) -> None:
    w = Tensor(xp.ones((2,), dtype=getattr(xp, dtype)), requires_grad=True, name='say "hi"')
    dot = to_dot((w * 2.0).sum())
    assert balanced(dot)
    nodes, _ = parse(dot)
    assert any(label.startswith('say \\"hi\\"') for label in nodes.values())


@settings(max_examples=max(1, settings.default.max_examples * 4 // 5))
@given(
    depth=st.integers(1, 6),
    ops=st.lists(st.sampled_from(["mul", "add", "exp", "mm"]), min_size=6, max_size=6),
)
def test_random_graphs_have_one_node_per_function(depth: int, ops: list[str]) -> None:
    xp = nb.namespace("numpy", "float64")
    w = Tensor(xp.ones((3, 3)) * 0.1, requires_grad=True, name="w")
    y = w
    for op in ops[:depth]:
        y = {
            "mul": lambda t: t * t,
            "add": lambda t: t + w,
            "exp": lambda t: t.exp(),
            "mm": lambda t: t @ w,
        }[op](y)
    loss = y.sum()
    nodes, edges = parse(to_dot(loss))
    functions = [k for k in nodes if k.startswith("f")]
    assert len(functions) == depth + 1
    assert balanced(to_dot(loss))
    assert sum(1 for a, _ in edges if a.startswith("f")) == depth + 1  # one output each


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
def test_graphviz_accepts_it(xp: Any, dtype: str, tmp_path: Any) -> None:
    loss, _, _ = mlp(xp, dtype)
    path = tmp_path / "graph.dot"
    path.write_text(to_dot(loss))
    result = subprocess.run(["dot", "-Tsvg", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
