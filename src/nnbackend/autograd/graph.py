"""Draw a computational graph: Graphviz DOT text of the ops, shapes and dtypes behind a
Tensor (render it with ``dot -Tpng graph.dot -o graph.png``)."""

from __future__ import annotations

from typing import Any

from nnbackend.autograd.tensor import Tensor

__all__ = ["to_dot"]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _label(t: Tensor) -> str:
    dtype = str(t.dtype).rsplit(".", 1)[-1]
    name = f"{_escape(t.name)}\\n" if t.name else ""
    return f"{name}{t.shape} {dtype}"


def to_dot(tensor: Tensor, *, title: str = "nnbackend") -> str:
    """The graph that produced ``tensor`` as DOT text: one box per op, one ellipse per tensor
    (its name, shape and dtype), leaves that need gradients filled.

    >>> import nnbackend as nb
    >>> from nnbackend.autograd import to_dot
    >>> w = nb.Tensor([1.0, 2.0], requires_grad=True, name="w")
    >>> print(to_dot((w * w).sum()).splitlines()[0])
    digraph "nnbackend" {
    """
    lines = [f'digraph "{_escape(title)}" {{', "  rankdir=LR;", '  node [fontname="Helvetica"];']
    seen: set[int] = set()

    def tensor_node(t: Tensor) -> str:
        key = f"t{id(t)}"
        if id(t) not in seen:
            seen.add(id(t))
            style = (
                ', style=filled, fillcolor="lightblue"'
                if t.requires_grad and t.creator is None
                else ""
            )
            lines.append(f'  {key} [label="{_label(t)}", shape=ellipse{style}];')
        return key

    stack: list[Any] = []
    root = tensor_node(tensor)
    del root
    if tensor.creator is not None:
        stack.append(tensor.creator)
    done: set[int] = set()
    while stack:
        f = stack.pop()
        if id(f) in done:
            continue
        done.add(id(f))
        key = f"f{id(f)}"
        lines.append(f'  {key} [label="{f.name}", shape=box, style=filled, fillcolor="lightgrey"];')
        for ref in f.outputs:
            out = ref()
            if out is not None:
                lines.append(f"  {key} -> {tensor_node(out)};")
        for x in f.inputs:
            if x is None:
                continue
            lines.append(f"  {tensor_node(x)} -> {key};")
            if x.creator is not None:
                stack.append(x.creator)
    lines.append("}")
    return "\n".join(lines)
