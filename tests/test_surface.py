"""The friendlier surface of issue 17: ``nnbackend --version``, mixed16 in the demo's help
and labels, the accuracy plot's range, and no private names in ``dir(nb)``/``dir(optim)``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import nnbackend as nb
from nnbackend import cli, optim, train


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["--version"])
    assert excinfo.value.code == 0
    assert capsys.readouterr().out.strip() == f"nnbackend {nb.__version__}"


def test_demo_help_lists_mixed16(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    assert "mixed16" in " ".join(capsys.readouterr().out.split())


def test_demo_labels_mixed16(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    titles: list[str] = []

    def plot(self: Any, path: Any, *, title: str | None = None) -> Path:
        titles.append(str(title))
        return Path(path)

    monkeypatch.setattr(train.History, "plot", plot)
    monkeypatch.setattr(
        train, "plot_decision_boundary", lambda *a, title="", **k: titles.append(title)
    )
    code = cli.main(
        ["demo", "--dtype", "mixed16", "--epochs", "1", "--no-progress", "--out", str(tmp_path)]
    )
    assert code == 0
    assert ", dtype mixed16:" in capsys.readouterr().out
    assert titles and all("mixed16" in t for t in titles)


def test_accuracy_plot_shows_a_curve_at_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figure = pytest.importorskip("matplotlib.figure", reason="History.plot needs matplotlib")
    seen: list[Any] = []
    monkeypatch.setattr(figure.Figure, "savefig", lambda self, *a, **k: seen.append(self))
    history = nb.History(
        loss=[1.0, 0.1], accuracy=[0.5, 1.0], report_steps=[1, 2], steps_per_epoch=1
    )
    history.plot(tmp_path / "h.png")
    low, high = seen[0].axes[1].get_ylim()
    assert low < 0.0 and high > 1.0  # neither end of the range clips a line drawn on it


def test_no_private_names_in_dir() -> None:
    private = {"annotations", "Any", "math", "Iterable", "Mapping"}
    assert not private & set(dir(nb))
    assert not private & set(dir(optim))
    assert dir(optim) == sorted(optim.__all__)
    for name in ("nn", "optim", "Trainer", "to_backend", "callbacks", "schedules", "__version__"):
        assert name in dir(nb)


def test_every_public_name_resolves_after_a_plain_import(run_python: Any) -> None:
    """``import nnbackend as nb`` then ``nb.nn.Linear``, ``nb.optim.SGD``, ``nb.data`` (the
    docstrings' own examples): the subpackages load on first use, and every name in
    ``__all__`` resolves in a fresh interpreter."""
    result = run_python(
        """
        import sys
        import nnbackend as nb
        assert "nnbackend.nn" not in sys.modules  # not at import: it stays light
        layer = nb.nn.Linear(2, 3)
        opt = nb.optim.SGD(layer.parameters(), lr=0.1)
        assert nb.data.DataLoader and nb.distributed.World
        missing = [name for name in nb.__all__ if not hasattr(nb, name)]
        assert not missing, missing
        print(type(opt).__name__, sorted({"nn", "optim", "data"} - set(dir(nb))))
        try:
            nb.no_such_name
        except AttributeError as error:
            print(error)
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "SGD []"
    assert lines[1] == "module 'nnbackend' has no attribute 'no_such_name'"


def test_fixture_skips_are_one_line_per_reason() -> None:
    """``-ra`` folds the dtype fixture's "has no float16" skips of different test functions
    into one line (pytest reported each at its test's line before)."""
    root = Path(__file__).resolve().parent.parent
    tests = [
        "tests/test_workflow.py::test_namespace_asarray_takes_the_default_dtype_name",
        "tests/test_workflow.py::test_to_backend_follows_the_model",
    ]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-ra",
            "-p",
            "no:cacheprovider",
            "-k",
            "array_api_strict and float16",
            *tests,
        ],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "NNBACKEND_TEST_BACKENDS": "array_api_strict"},
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if "has no float16" in line]
    assert lines == [
        f"SKIPPED [2] tests/conftest.py:{lines[0].split(':')[1]}: "
        "backend 'array_api_strict' has no float16"
    ], proc.stdout
