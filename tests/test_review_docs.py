"""Review of the documentation's accuracy (docs/*.md, docs/reference/*.md, README.md).

Every page was read as a new user would and its claims checked against the code: signatures,
defaults, error types, the numbers the examples print, the extras of pyproject.toml, the
environment variables the code reads. ``tests/test_docs.py`` already runs every python block
and checks the nav and the links; the checks here are the ones that can be automated on top of
that:

* every public name (``__all__``) of a module the API reference renders, and of every module
  ``import nnbackend`` exports, shows up in the reference (mkdocstrings hides a callable
  without a docstring and every undocumented constant: those need a line of text there);
* every name written as ``nb.X`` / ``nn.X`` / ``optim.X`` / ``nnbackend.X`` in the prose
  exists;
* the tables that restate the code (the extras, the environment variables, the arguments of
  ``Trainer``, ``fit``, the callbacks, ``save`` / ``load``, the error classes' built-in bases,
  the checkpoint sizes) say what the code does;
* the home page and the reference's index link every page.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
import sys
import tempfile
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import nnbackend as nb

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"


def _test_docs() -> ModuleType:
    """tests/test_docs.py (its Markdown scanner), loaded by path."""
    spec = importlib.util.spec_from_file_location("_review_test_docs", ROOT / "tests/test_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


TEST_DOCS = _test_docs()


def _prose(path: Path) -> str:
    return str(TEST_DOCS.prose(path))


def _spans(text: str) -> list[str]:
    """The inline code spans of ``text``."""
    return re.findall(r"`([^`\n]+)`", text)


def _section(text: str, heading: str) -> str:
    """The text under ``heading`` (a whole Markdown heading line) up to the next heading of
    the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    after = text.split(heading + "\n", 1)[1]
    return re.split(rf"\n#{{1,{level}}} ", after, maxsplit=1)[0]


# -- the API reference ---------------------------------------------------------------------------
def _rendered() -> dict[str, Path]:
    """Each module a ``::: module`` line of docs/reference renders, and its page."""
    found = {}
    for page in sorted(REFERENCE.glob("*.md")):
        for line in page.read_text(encoding="utf-8").splitlines():
            if line.startswith(":::"):
                found[line.split(":::", 1)[1].split()[0]] = page
    return found


def _public_modules() -> list[str]:
    """The modules a user reaches from ``import nnbackend``: the modules in its ``__all__`` and
    the modules those export, and nnbackend.backends.ops, whose ``Ops`` a backend plugin
    subclasses (``Backend(ops=...)``). (The package itself re-exports names of these.)"""
    names = ["nnbackend.backends.ops"]
    for name in nb.__all__:
        module = getattr(nb, name)
        if isinstance(module, ModuleType):
            names.append(module.__name__)
            names += [
                getattr(module, sub).__name__
                for sub in getattr(module, "__all__", ())
                if isinstance(getattr(module, sub), ModuleType)
            ]
    return names


def test_every_public_module_is_rendered() -> None:
    """nnbackend.backends.ops (the Ops class that backends.md's "The operations object" and a
    plugin's ``Backend(ops=...)`` build on) had no page in the API reference."""
    rendered = _rendered()
    missing = [name for name in _public_modules() if name not in rendered]
    assert not missing, f"modules without a '::: module' line in docs/reference: {missing}"


def _attribute_docstrings(module: ModuleType) -> set[str]:
    """The module-level names of ``module``'s source that a string literal right after their
    assignment documents (what mkdocstrings renders for a constant or a type alias)."""
    tree = ast.parse(inspect.getsource(module))
    found = set()
    for node, after in zip(tree.body, tree.body[1:], strict=False):
        documented = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
        if not (documented and isinstance(after.value.value, str)):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        found |= {t.id for t in targets if isinstance(t, ast.Name)}
    return found


def _shown_by_mkdocstrings(module: ModuleType, name: str) -> bool:
    """Whether mkdocstrings (``show_if_no_docstring: false``) renders ``module.name`` by
    itself: a function or class of nnbackend with a docstring of its own, or a name documented
    by a string after its assignment. A constant without one, or a builtin such as a
    ContextVar's ``get``, is left out."""
    obj = getattr(module, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        own = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
        if obj.__module__.startswith("nnbackend") and own:
            return True
    return name in _attribute_docstrings(module)


def test_every_public_name_appears_in_the_reference() -> None:
    """Public names that the reference never showed: ``nb.autograd.is_grad_enabled`` and
    ``anomaly.is_enabled`` (a ContextVar's ``get``, which mkdocstrings skips), and the
    constants of ``__all__`` (``config.DTYPES``, ``config.POLICIES``, the ``*_ENV`` names,
    ``io.FORMAT`` ..., ``registry.ENTRY_POINT_GROUP``), which have no docstring to render."""
    rendered = _rendered()
    missing = []
    for name, page in rendered.items():
        module = importlib.import_module(name)
        text = page.read_text(encoding="utf-8")
        for public in getattr(module, "__all__", ()):
            if isinstance(getattr(module, public), ModuleType):
                continue
            if _shown_by_mkdocstrings(module, public):
                continue
            named = rf"`(?:{re.escape(name)}\.)?{re.escape(public)}(?:\(\))?`"
            if not re.search(named, text):
                missing.append(f"{name}.{public}")
    assert not missing, (
        f"public names the API reference does not show (no docstring for mkdocstrings, and "
        f"not named on the module's reference page): {missing}"
    )
    # The package's own names are re-exports: each is a rendered module's, or one of them.
    exported = {
        id(getattr(importlib.import_module(name), public))
        for name in rendered
        for public in getattr(importlib.import_module(name), "__all__", ())
    }
    for public in nb.__all__:
        obj = getattr(nb, public)
        shown = obj.__name__ in rendered if isinstance(obj, ModuleType) else id(obj) in exported
        assert shown, f"nnbackend.{public} is in no rendered module's __all__"


def test_reference_index_lists_every_page() -> None:
    """The reference's index table had no row for the "Data-parallel training" page
    (reference/distributed.md)."""
    index = (REFERENCE / "index.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([\w-]+\.md)\)", index))
    pages = {p.name for p in REFERENCE.glob("*.md")} - {"index.md"}
    assert pages <= linked, f"reference pages not in reference/index.md: {sorted(pages - linked)}"
    for module, page in _rendered().items():
        row = next(line for line in index.splitlines() if f"]({page.name})" in line)
        parts = module.split(".")
        suffixes = {".".join(parts[k:]) for k in range(len(parts))}  # nn.conv, conv, ...
        assert suffixes & set(_spans(row)), (
            f"reference/index.md's row for {page.name} does not name the module {module}"
        )


def test_home_page_links_every_page() -> None:
    """docs/index.md's contents left out six pages of the nav (Convolutional networks,
    Writing a Function, Compiled steps, Several processes, Sequence models, Saving and
    loading weights)."""
    listed = [p for p in TEST_DOCS.nav_pages() if not p.startswith("reference/")]
    text = _prose(DOCS / "index.md")
    linked = set(re.findall(r"\]\(([\w./-]+\.md)(?:#[\w-]*)?\)", text))
    missing = [p for p in listed if p != "index.md" and p not in linked]
    assert not missing, f"pages of the nav that docs/index.md does not link: {missing}"


# -- names in the prose ----------------------------------------------------------------------
ROOTS = {
    "nb": "nnbackend",
    "nnbackend": "nnbackend",
    "nn": "nnbackend.nn",
    "optim": "nnbackend.optim",
}
ROOTED = re.compile(r"(?<![\w.])((?:nb|nnbackend|nn|optim)(?:\.[A-Za-z_]\w*)+)")


def _resolves(dotted: str) -> bool:
    parts = ROOTS[dotted.split(".")[0]].split(".") + dotted.split(".")[1:]
    # The longest importable prefix first: nb.backends is a function that shadows the
    # subpackage nnbackend.backends as an attribute.
    for k in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for part in parts[k:]:
            if not hasattr(obj, part):
                break
            obj = getattr(obj, part)
        else:
            return True
    return False


@pytest.mark.parametrize("path", TEST_DOCS.pages(), ids=TEST_DOCS._page_id)
def test_names_in_the_prose_exist(path: Path) -> None:
    """backends.md told jax users to "use ``nn.BatchNorm``", a class that does not exist
    (``nn.BatchNorm1d`` and ``nn.BatchNorm2d`` do)."""
    wrong = sorted(
        {
            match[1]
            for span in _spans(_prose(path))
            for match in ROOTED.finditer(span)
            if not _resolves(match[1])
        }
    )
    assert not wrong, f"{path.name} names what nnbackend does not have: {wrong}"


# -- tables that restate the code ----------------------------------------------------------------
def test_getting_started_lists_every_extra() -> None:
    """The extras table of getting-started.md lacked ``jax``, ``fast16``, ``mpi`` and
    ``distributed-torch``, which pyproject.toml defines and other pages tell users to install."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    table = [
        line
        for line in _section(_prose(DOCS / "getting-started.md"), "## Install").splitlines()
        if line.startswith("| `")
    ]
    listed = {re.match(r"\| `([\w-]+)`", line)[1] for line in table}  # type: ignore[index]
    assert set(extras) <= listed, f"extras missing from the table: {sorted(set(extras) - listed)}"
    assert listed <= set(extras), f"the table lists unknown extras: {sorted(listed - set(extras))}"


def _environment_variables_read_by_the_code() -> set[str]:
    names: set[str] = set()
    for source in (ROOT / "src/nnbackend").rglob("*.py"):
        names |= set(re.findall(r"[\"'](NNBACKEND(?:_[A-Z0-9]+)*)[\"']", source.read_text("utf-8")))
    return names


def test_environment_table_lists_every_variable() -> None:
    """backends.md's "Environment variables" table left out NNBACKEND_CACHE,
    NNBACKEND_FLOAT16_COMPUTE, NNBACKEND_NUMBA and NNBACKEND_KEEP_FREED_MEMORY, which the code
    reads."""
    text = _section(_prose(DOCS / "backends.md"), "### Environment variables")
    table = {m[1] for m in re.finditer(r"^\| `(\w+)` \|", text, re.MULTILINE)}
    read = _environment_variables_read_by_the_code()
    assert {"NNBACKEND", "NNBACKEND_DTYPE"} <= read  # the scan finds the variables at all
    assert read <= table, f"variables missing from the table: {sorted(read - table)}"


def test_error_paragraph_names_every_builtin_base() -> None:
    """backends.md said every nnbackend error is also a ValueError, TypeError or RuntimeError;
    DownloadError is an OSError, and AnomalyError and LossScaleError are FloatingPointErrors."""
    from nnbackend import errors
    from nnbackend.autograd import AnomalyError
    from nnbackend.distributed import CollectiveError
    from nnbackend.precision import LossScaleError

    text = _section(_prose(DOCS / "backends.md"), "## Error messages and what to do")
    intro = text.split("\n| ", 1)[0]
    named = set(_spans(intro))
    classes = [getattr(errors, n) for n in errors.__all__]
    classes += [AnomalyError, CollectiveError, LossScaleError]
    for cls in classes:
        if not issubclass(cls, errors.NNBackendError) or cls is errors.NNBackendError:
            continue  # (CompileWarning is a warning; the root class has no built-in base)
        bases = {
            b.__name__
            for b in cls.__mro__
            if b.__module__ == "builtins" and b not in (Exception, BaseException, object)
        }
        assert bases & named, f"{cls.__name__} is a {sorted(bases)}: the paragraph names {named}"


def _documented(text: str, parameter: str) -> bool:
    return bool(re.search(rf"`[^`]*\b{re.escape(parameter)}\b[^`]*`", text))


# What a user of each page looks up there: every parameter of these callables is named in it.
DOCUMENTED_ARGUMENTS = {
    "training.md": [
        ("nnbackend.train.Trainer", "__init__"),
        ("nnbackend.train.Trainer", "fit"),
        ("nnbackend.callbacks.EarlyStopping", "__init__"),
        ("nnbackend.callbacks.ModelCheckpoint", "__init__"),
        ("nnbackend.io", "save"),
        ("nnbackend.io", "load"),
        ("nnbackend.data.DataLoader", "__init__"),
    ],
}


def _callable(where: str, name: str) -> Any:
    module_name, _, owner = where.rpartition(".")
    try:
        holder: Any = importlib.import_module(where)
    except ImportError:
        holder = getattr(importlib.import_module(module_name), owner)
    return getattr(holder, name)


@pytest.mark.parametrize("page", sorted(DOCUMENTED_ARGUMENTS))
def test_pages_name_every_argument(page: str) -> None:
    """training.md never named fit's ``validation_split``, ``validation_data`` and
    ``metrics``, Trainer's ``precision``, ``loss_scaler``, ``compile`` and ``world``,
    ModelCheckpoint's ``mode``, ``dtype`` and ``save_optimizer``, save's ``format`` and
    ``loss_scaler``, load's ``strict`` and ``loss_scaler``, or DataLoader's ``drop_last``,
    ``prefetch`` and ``like``."""
    text = _prose(DOCS / page)
    missing = []
    for where, name in DOCUMENTED_ARGUMENTS[page]:
        for parameter in inspect.signature(_callable(where, name)).parameters:
            if parameter in ("self", "args", "kwargs"):
                continue
            if not _documented(text, parameter):
                missing.append(f"{where.rsplit('.', 1)[-1]}.{name}({parameter})")
    assert not missing, f"{page} does not name: {missing}"


def test_training_page_shows_resuming_a_schedule_and_a_loss_scaler() -> None:
    """training.md's "Resuming training" restored the weights and the optimizer only: it
    never said that a schedule's ``state_dict()`` / ``load_state_dict()`` must be saved and
    restored too (made anew, a schedule takes the decayed rate as its base), nor that
    ``ModelCheckpoint(save_optimizer=True)`` also saves the loss scaler."""
    code = "".join(b.code for b in TEST_DOCS.blocks(DOCS / "training.md") if b.runnable)
    text = _prose(DOCS / "training.md")
    # (since nb.save and nb.load take schedule=, the example passes it to them)
    assert re.search(r"nb\.save\([^)]*schedule=", code), "no nb.save(..., schedule=) example"
    assert re.search(r"nb\.load\([^)]*schedule=", code), "no nb.load(..., schedule=) example"
    assert "save_optimizer=True" in text and "loss_scaler" in text


def test_precision_checkpoint_sizes_are_the_default_formats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """precision.md's "Float16 checkpoints" table gave the sizes of 0.1's .npz files (2 006 and
    1 880 bytes for the spiral network) as the sizes of ``nb.save``, whose default is
    safetensors (1 140 and 1 014 bytes).

    The files record nnbackend's version: the table is for the release in pyproject.toml,
    so that version is recorded here too (a source checkout that is not pip-installed says
    "0+unknown", four bytes longer: 8 more with the header's padding)."""
    import nnbackend.io
    from nnbackend import nn

    release = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    monkeypatch.setattr(nnbackend.io, "package_version", lambda: release["project"]["version"])

    text = _section((DOCS / "precision.md").read_text(encoding="utf-8"), "## Float16 checkpoints")
    rows = [line for line in text.splitlines() if line.startswith("| spiral") or "digits," in line]
    assert len(rows) == 2, rows
    models = {
        "spiral": lambda: nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3)),
        "digits": lambda: nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10)),
    }
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        numbers = [int(c.replace(" ", "").removesuffix("bytes")) for c in cells[1:3]]
        with nb.using(dtype="float32"):
            model = models[cells[0].split(",")[0]]()
        sizes = [_saved_size(model, dtype) for dtype in (None, "float16")]
        assert numbers == sizes, f"{cells[0]}: the table says {numbers}, nb.save writes {sizes}"


def _saved_size(model: Any, dtype: Any) -> int:
    """The bytes ``nb.save`` writes for ``model`` to a path with the customary suffix."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        nb.save(model, path, dtype=dtype)
        return path.stat().st_size
