"""A griffe extension for the API reference: turn the reStructuredText habits of nnbackend's
docstrings into Markdown before mkdocstrings renders them.

- Sphinx roles (``:class:`~nnbackend.errors.DtypeError```, ``:func:`using```) become code
  spans, linked (through mkdocs-autorefs) where the target is an object the reference renders;
- doctest examples (``>>>`` lines and their output) become ``pycon`` code blocks, instead of
  Markdown block quotes;
- a paragraph ending in ``::`` followed by an indented block becomes a ``python`` code block.

Docstrings in the source stay as they are (``help()`` and ``pydoc`` read them there). Loaded by
mkdocstrings through ``extensions:`` in ``mkdocs.yml``; not part of the package.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(class|func|meth|attr|data|mod|obj|exc|const):`(~?)([^`]+)`")


def _find(obj: Any, target: str) -> Any:
    """The object ``target`` names, seen from ``obj`` (absolute, relative to the object's
    module, its class, or the package), or None."""
    collection = obj.modules_collection
    candidates = [target]
    module = obj.module.path
    candidates += [f"{module}.{target}", f"nnbackend.{target}"]
    if obj.parent is not None:
        candidates.append(f"{obj.parent.path}.{target}")
    if obj.is_class:
        candidates.append(f"{obj.path}.{target}")
    for path in candidates:
        try:
            found = collection.get_member(path)
        except (KeyError, ValueError, AttributeError, griffe.AliasResolutionError):
            continue
        try:
            return found.final_target if found.is_alias else found
        except griffe.AliasResolutionError:
            continue
    return None


def _rendered(obj: Any, linkable: set[str]) -> bool:
    """Whether the reference renders ``obj`` (so a link to it resolves): its module is on a
    reference page, and it is public and documented, as are the classes holding it."""
    if obj.module.path not in linkable:
        return False
    while not obj.is_module:
        if not obj.is_public or obj.docstring is None:
            return False
        obj = obj.parent
    return True


def _roles(obj: Any, text: str, linkable: set[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        tilde, target = match.group(2), match.group(3)
        shown = target.rsplit(".", 1)[-1] if tilde else target
        found = _find(obj, target)
        if found is not None and _rendered(found, linkable):
            return f"[`{shown}`][{found.path}]"
        return f"`{shown}`"

    return ROLE.sub(replace, text)


def _fence_doctests(text: str) -> str:
    """Wrap each run of ``>>>`` lines (with their continuation and output lines, up to a blank
    line) in a ``pycon`` fence, keeping the run's indentation."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
            while i < len(lines) and lines[i].strip():
                out.append(lines[i])
                i += 1
            out.append(f"{indent}```")
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _fence_literal_blocks(text: str) -> str:
    """``Intro::`` + blank line + indented block -> ``Intro:`` + a python fence."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::") and i + 2 < len(lines) and not lines[i + 1].strip():
            indent = len(line) - len(line.lstrip())
            j = i + 2
            block: list[str] = []
            while j < len(lines) and (
                not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent
            ):
                block.append(lines[j])
                j += 1
            while block and not block[-1].strip():
                block.pop()
                j -= 1
            if block:
                inner = min(len(b) - len(b.lstrip()) for b in block if b.strip())
                pad = " " * indent
                out.append(line.rstrip()[:-1])
                out.append("")
                out.append(f"{pad}```python")
                out += [pad + b[inner:] if b.strip() else "" for b in block]
                out.append(f"{pad}```")
                i = j
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


class RstToMarkdown(griffe.Extension):
    """Rewrite each docstring once the package's object tree is complete."""

    def __init__(self, reference_dir: str = "docs/reference") -> None:
        super().__init__()
        # The modules the reference renders (its "::: module" lines): links may point there.
        self.linkable = {
            line.split(":::", 1)[1].split()[0]
            for page in Path(reference_dir).glob("*.md")
            for line in page.read_text(encoding="utf-8").splitlines()
            if line.startswith(":::")
        }

    def on_object(self, *, obj: Any, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is None or obj.is_alias:
            return
        text = _fence_literal_blocks(docstring.value)
        text = _fence_doctests(text)
        docstring.value = _roles(obj, text, self.linkable)
