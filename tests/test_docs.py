"""The documentation cannot drift from the code: every ```python block in docs/**/*.md and
README.md runs here, on numpy.

Each page is one test. Its python blocks run in order in one fresh namespace (so a block may
use what an earlier block of the same page defined), with a temporary directory as the
working directory (files a block writes land there), and with the settings, registry and
random generator restored afterwards (``conftest._isolate_settings``). A failure names the
page and line: the code is compiled with the Markdown file's line numbers.

A block that cannot run here says so on the line just before its fence::

    <!-- skip: needs a GPU -->
    ```python
    with nb.using(backend="cupy"): ...
    ```

Skipped blocks are still compiled (a syntax error fails the page). Blocks whose reason starts
with "needs a GPU" also run, together with the rest of their page, in ``test_gpu_page`` (marker
``gpu``: ``nox -s gpu`` on a CUDA machine). Other fences (``bash``, ``toml``, ``text``) are not
run.

Also checked, without mkdocs: every page is in the nav of ``mkdocs.yml`` and every nav entry
exists; relative links between pages point at files that exist; every ``::: module`` of the API
reference imports. Where mkdocs is installed (``pip install -e '.[docs]'``), the site is built
with ``--strict`` too.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
RUNNABLE = {"python", "py"}
SKIP = re.compile(r"^\s*<!--\s*skip:\s*(?P<reason>.+?)\s*-->\s*$")
GPU_REASON = "needs a GPU"
OPEN_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int  # 1-based line of the first code line
    language: str
    code: str
    skip: str | None  # the reason of a preceding <!-- skip: ... --> comment

    @property
    def runnable(self) -> bool:
        return self.language in RUNNABLE

    @property
    def needs_gpu(self) -> bool:
        return self.skip is not None and self.skip.startswith(GPU_REASON)

    def compiled(self) -> object:
        # Pad with newlines so tracebacks give the Markdown file's own line numbers.
        source = "\n" * (self.line - 1) + self.code
        return compile(source, str(self.path), "exec")


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of ``path``, in order. A fence may be indented (inside an
    admonition); its body is dedented by the fence's indentation. A block opened with N
    backticks is closed by a line of at least N backticks, so ```` fences can show ```."""
    return _scan(path)[0]


def prose(path: Path) -> str:
    """``path``'s text without its fenced code blocks."""
    return _scan(path)[1]


def _scan(path: Path) -> tuple[list[Block], str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    text: list[str] = []
    i = 0
    while i < len(lines):
        match = OPEN_FENCE.match(lines[i])
        if match is None:
            text.append(lines[i])
            i += 1
            continue
        indent, fence = len(match["indent"]), match["fence"]
        language = (match["info"].split() or [""])[0].lower()
        previous = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        skip = SKIP.match(previous)
        body: list[str] = []
        j = i + 1
        close = re.compile(rf"^ {{0,{indent + 3}}}{fence[0]}{{{len(fence)},}}\s*$")
        while j < len(lines) and not close.match(lines[j]):
            code_line = lines[j]
            body.append(
                code_line[indent:] if code_line[:indent].strip() == "" else code_line.lstrip()
            )
            j += 1
        if j == len(lines):
            raise AssertionError(f"{path}:{i + 1}: code fence {fence!r} is never closed")
        found.append(
            Block(path, i + 2, language, "\n".join(body) + "\n", skip["reason"] if skip else None)
        )
        i = j + 1
    return found, "\n".join(text)


def pages() -> list[Path]:
    return [*sorted(DOCS.rglob("*.md")), README]


def _page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


PAGES_WITH_CODE = [p for p in pages() if any(b.runnable for b in blocks(p))]
PAGES_WITH_GPU_CODE = [p for p in PAGES_WITH_CODE if any(b.needs_gpu for b in blocks(p))]


# The extras the examples use (all in `.[test]`): where one is missing (a GPU machine without
# network may lack them), the page is skipped with the reason instead of failing.
OPTIONAL = {"array_api_strict", "matplotlib", "sklearn", "tqdm", "torch"}


def _missing_extra(exc: BaseException | None) -> str | None:
    """The optional module whose absence caused ``exc`` (or an exception it chains), or None."""
    from nnbackend.errors import BackendUnavailableError

    while exc is not None:
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in OPTIONAL:
            return exc.name
        if isinstance(exc, BackendUnavailableError) and "is not installed" in str(exc):
            names = [name for name in OPTIONAL if name.replace("_", "-") in str(exc)]
            if names:
                return names[0]
        exc = exc.__cause__ or exc.__context__
    return None


def _run_page(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gpu: bool) -> int:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NNBACKEND", raising=False)
    monkeypatch.delenv("NNBACKEND_DTYPE", raising=False)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    ran = 0
    for block in blocks(path):
        if not block.runnable:
            continue
        code = block.compiled()
        if block.skip is not None and not (gpu and block.needs_gpu):
            continue
        start = time.perf_counter()
        try:
            exec(code, namespace)
        except Exception as exc:
            missing = _missing_extra(exc)
            if missing is None:
                raise
            pytest.skip(f"{block.path.name}:{block.line} needs {missing}, not installed here")
        ran += 1
        took = time.perf_counter() - start
        # Examples are short on purpose (small epochs): the whole docs suite stays fast.
        assert took < 20, f"{block.path}:{block.line}: the block took {took:.1f} s; shorten it"
    return ran


@pytest.mark.parametrize("path", PAGES_WITH_CODE, ids=_page_id)
def test_page_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every python block of the page runs, in order, in one namespace."""
    assert _run_page(path, tmp_path, monkeypatch, gpu=False) > 0


@pytest.mark.gpu
@pytest.mark.parametrize("path", PAGES_WITH_GPU_CODE, ids=_page_id)
def test_gpu_page(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page again, with its "needs a GPU" blocks included."""
    _run_page(path, tmp_path, monkeypatch, gpu=True)


@pytest.mark.parametrize("path", pages(), ids=_page_id)
def test_blocks_compile_and_skips_say_why(path: Path) -> None:
    """Skipped blocks are valid Python too, and a skip marker precedes a python block."""
    for block in blocks(path):
        if block.skip is not None:
            assert block.runnable, f"{path}:{block.line}: a skip marker before a non-python block"
        if block.runnable:
            block.compiled()


def test_markers_are_understood(tmp_path: Path) -> None:
    text = (
        "intro\n\n<!-- skip: needs a GPU -->\n```python\nx = 1\n```\n\n"
        "````markdown\n```python\nnot run\n```\n````\n\n!!! note\n    ```py\n    y = 2\n    ```\n"
    )
    path = tmp_path / "sample.md"
    path.write_text(text, encoding="utf-8")
    found = blocks(path)
    assert [(b.language, b.code, b.skip) for b in found] == [
        ("python", "x = 1\n", "needs a GPU"),
        ("markdown", "```python\nnot run\n```\n", None),
        ("py", "y = 2\n", None),
    ]
    assert found[0].needs_gpu and found[0].line == 5


# -- the site's structure, checked without mkdocs ------------------------------------------------
NAV_ENTRY = re.compile(r"^\s*-\s*(?:[^:\n]+:\s*)?(?P<path>[\w./-]+\.md)\s*$")


def nav_pages() -> list[str]:
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text.split("\nnav:", 1)[1]
    nav = re.split(r"\n\S", nav, maxsplit=1)[0]  # up to the next top-level key
    return [m["path"] for line in nav.splitlines() if (m := NAV_ENTRY.match(line))]


def _optional_pages() -> tuple[str, ...]:
    """Pages other work writes (docs/_ext/optional_pages.py): the nav may name them, and pages
    may link to them, before they exist."""
    spec = importlib.util.spec_from_file_location("optional_pages", DOCS / "_ext/optional_pages.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(module.OPTIONAL_PAGES)


def test_nav_lists_every_page_once() -> None:
    listed = nav_pages()
    on_disk = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    expected = sorted(set(on_disk) | (set(_optional_pages()) & set(listed)))
    assert sorted(set(listed)) == expected, "mkdocs.yml's nav and docs/ disagree"
    assert len(listed) == len(set(listed)), "a page is listed twice in the nav"


LINK = re.compile(r"\]\((?P<target>[^)\s]+?)(?:\s+\"[^\"]*\")?\)")


@pytest.mark.parametrize("path", pages(), ids=_page_id)
def test_relative_links_resolve(path: Path) -> None:
    optional = {DOCS / name for name in _optional_pages()}
    for match in LINK.finditer(prose(path)):  # links inside code blocks are not links
        target = match["target"].split("#", 1)[0]
        if not target or re.match(r"^[a-z]+:", target) or (path.parent / target) in optional:
            continue
        assert (path.parent / target).exists(), f"{path}: link to missing {match['target']!r}"


def test_reference_modules_import() -> None:
    targets = [
        line.split(":::", 1)[1].split()[0]
        for page in sorted((DOCS / "reference").glob("*.md"))
        for line in page.read_text(encoding="utf-8").splitlines()
        if line.startswith(":::")
    ]
    assert targets
    for target in targets:
        importlib.import_module(target)


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
    reason="mkdocs is not installed (pip install -e '.[docs]'); `nox -s docs` builds the site",
)
def test_site_builds_strict(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


# -- the error table of backends.md matches the messages the code raises ---------------------------
def _error_rows() -> list[list[re.Pattern[str]]]:
    """Each row of the table under "## Error messages and what to do" in backends.md, as the
    patterns of the code spans in its first cell (``...`` stands for any text)."""
    text = (DOCS / "backends.md").read_text(encoding="utf-8")
    section = text.split("## Error messages and what to do", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split(" | ", 1)[0]
        spans = re.findall(r"`([^`]+)`", first_cell)
        rows.append(
            [
                re.compile(".*".join(re.escape(part) for part in re.split(r"\s*\.\.\.\s*", span)))
                for span in spans
            ]
        )
    return rows


def _raised(action: Any) -> str:
    try:
        action()
    except Exception as exc:
        return str(exc)
    raise AssertionError(f"{action} raised nothing")


def _broken_backend_message() -> str:
    """The message of a registered backend whose library raises AttributeError at import."""
    import nnbackend as nb
    from nnbackend import registry

    def load() -> Any:
        raise AttributeError("module 'mylib' has no attribute 'linalg'")

    nb.register_backend(
        nb.Backend(
            name="mylib",
            load_namespace=load,
            probe=lambda: None,
            array_modules=("mylib",),
            to_host=lambda a: a,
            from_host=lambda a, device=None: a,
        )
    )
    try:
        return _raised(lambda: nb.namespace("mylib"))
    finally:
        registry.unregister_backend("mylib")


def test_error_table_matches_the_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    array_api_strict = pytest.importorskip("array_api_strict")
    import numpy as np

    import nnbackend as nb
    from nnbackend import config, nn
    from nnbackend.backends import cupy as cupy_backend

    def env_backend() -> None:
        monkeypatch.setenv("NNBACKEND", "mxnet")
        config._Process.environment_read = False
        try:
            nb.get_backend()
        finally:
            monkeypatch.delenv("NNBACKEND")
            config._Process.environment_read = False

    def failing(message: str) -> Any:
        def call() -> int:
            raise RuntimeError(message)

        return call

    with nb.using(backend="array_api_strict"):
        strict_linear = nn.Linear(2, 3)
    messages = [
        _raised(lambda: nb.set_backend("mxnet")),
        _raised(env_backend),
        _raised(lambda: nb.set_default_dtype("bfloat16")),
        _raised(lambda: nb.namespace("array_api_strict", dtype="float16")),
        _raised(lambda: nb.array_namespace(np.ones(2), array_api_strict.ones(2))),
        _raised(lambda: nb.array_namespace([1.0])),
        _raised(lambda: nb.using(device="gpu").__enter__()),
        _raised(lambda: nb.using(backend="numpy", device="cupy:0").__enter__()),
        _raised(lambda: nn.Linear(2, 3)(nb.namespace(dtype="float32").ones((4, 2)))),
        _raised(lambda: strict_linear(np.ones((4, 2)))),
        cupy_backend.diagnose({"CUDA_VISIBLE_DEVICES": ""}, True, failing("x"), failing("x")),
        cupy_backend.diagnose({}, True, failing("cudaErrorInsufficientDriver"), failing("x")),
        cupy_backend.diagnose({}, True, lambda: 0, failing("x")),
        cupy_backend.diagnose({}, True, lambda: 12040, failing("cudaErrorNoDevice")),
        cupy_backend.diagnose({}, True, lambda: 12040, lambda: 0),
        "backend 'cupy' is unavailable: " + str(cupy_backend.diagnose({}, False, None, None)),
        _broken_backend_message(),
    ]
    rows = _error_rows()
    matched: set[int] = set()
    for message in messages:
        hits = [i for i, row in enumerate(rows) if any(p.fullmatch(message) for p in row)]
        assert hits, f"backends.md's error table has no row for the message {message!r}"
        matched.update(hits)
    # The rows left need a broken or missing install (a CuPy wheel that fails to import, a
    # missing torch, a broken plugin); the registry's own tests raise those.
    unmatched = [row[0].pattern for i, row in enumerate(rows) if i not in matched]
    assert len(unmatched) <= 3, unmatched
