"""``nnbackend demo``: trains the book's spiral network, prints loss, accuracy and time per
step, writes real PNG files; bad options and unusable backends give one line and exit 2."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nnbackend import cli, registry

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def _accuracy(stdout: str) -> float:
    found = re.search(r"final loss (\d+\.\d+), accuracy (\d+\.\d)%", stdout)
    assert found, stdout
    return float(found.group(2)) / 100


def test_demo_subprocess_writes_pngs(run_python: Callable[..., Any], tmp_path: Path) -> None:
    out = tmp_path / "plots" / "here"
    proc = run_python(
        args=["-m", "nnbackend", "demo", "--epochs", "20", "--out", str(out), "--dtype", "float32"]
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert (
        lines[1].startswith("backend numpy ")
        and "dtype float32: 20 epochs, 200 steps" in (lines[1])
    )
    assert 0.0 < _accuracy(proc.stdout) <= 1.0
    assert re.search(r"time per step \d+\.\d us \(200 steps in", proc.stdout)
    assert "Traceback" not in proc.stderr
    if HAS_MATPLOTLIB:
        for name in ("loss.png", "decision_boundary.png"):
            assert (out / name).read_bytes()[:8] == PNG_MAGIC
            assert f"wrote {out / name}" in lines
    else:
        assert "plots skipped: matplotlib is not installed" in proc.stderr
        assert "pip install 'nnbackend[plot]'" in proc.stderr


def test_demo_default_run_reaches_95_percent(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The full default demo (300 epochs, float64) in-process: the book's 97%-ish."""
    assert cli.main(["demo", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "300 epochs, 3000 steps" in out
    assert _accuracy(out) >= 0.95


def test_demo_uses_the_environment_backend(run_python: Callable[..., Any], tmp_path: Path) -> None:
    if registry.probe("array_api_strict") is not None:
        pytest.skip(registry.probe("array_api_strict"))
    proc = run_python(
        args=["-m", "nnbackend", "demo", "--epochs", "2", "--out", str(tmp_path)],
        env={"NNBACKEND": "array_api_strict", "NNBACKEND_DTYPE": "float32", "MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "backend array_api_strict" in proc.stdout and "dtype float32" in proc.stdout


@pytest.mark.parametrize("backend", ["torch", "array_api_strict"])
def test_demo_in_process_on_other_backends(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if registry.probe(backend) is not None:
        pytest.skip(registry.probe(backend))
    assert (
        cli.main(
            [
                "demo",
                "--backend",
                backend,
                "--dtype",
                "float32",
                "--epochs",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert f"backend {backend}" in capsys.readouterr().out


def test_demo_without_matplotlib_still_trains(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)
    assert cli.main(["demo", "--epochs", "2", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "final loss" in captured.out
    assert captured.err == (
        "plots skipped: matplotlib is not installed (pip install 'nnbackend[plot]')\n"
    )
    assert not list(tmp_path.iterdir())


def _one_line_error(proc: Any) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("nnbackend: error: ")
    return str(lines[0])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--backend", "bogus"], "unknown backend 'bogus'; registered backends are 'numpy'"),
        (["--dtype", "int8"], "unknown default dtype 'int8'"),
        (["--backend", "array_api_strict", "--dtype", "float16"], "has no float16"),
        (["--epochs", "0"], "argument --epochs: expected a positive integer, got 0"),
        (["--epochs", "many"], "argument --epochs: expected a positive integer, got 'many'"),
        (["--lr", "-1"], "argument --lr: expected a positive number"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_options_give_one_line_and_exit_2(
    run_python: Callable[..., Any], tmp_path: Path, args: list[str], expected: str
) -> None:
    proc = run_python(args=["-m", "nnbackend", "demo", "--out", str(tmp_path), *args])
    assert expected in _one_line_error(proc)
    assert not list(tmp_path.iterdir())


def test_unusable_backend_gives_one_line_and_exit_2(
    run_python: Callable[..., Any], tmp_path: Path
) -> None:
    reason = registry.probe("cupy")
    if reason is None:
        pytest.skip("cupy is usable here")
    proc = run_python(args=["-m", "nnbackend", "demo", "--backend", "cupy", "--out", str(tmp_path)])
    line = _one_line_error(proc)
    assert "backend 'cupy' is unavailable" in line and " ".join(reason.split()) in line


def test_unwritable_out_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert cli.main(["demo", "--out", str(blocker / "sub"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnbackend: error: cannot create --out folder") and err.count("\n") == 1


def test_console_script_demo(run_python: Callable[..., Any], tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "nnbackend"
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable} (package not installed)")
    proc = run_python(
        argv=[str(script), "demo", "--epochs", "1", "--out", str(tmp_path)],
        env={"MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "final loss" in proc.stdout
    bad = run_python(argv=[str(script), "demo", "--nope"])
    assert "unrecognized arguments: --nope" in _one_line_error(bad)


def test_demo_help_lists_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["demo", "--help"])
    assert excinfo.value.code == 0
    out = capsys.readouterr().out
    for option in ("--backend", "--dtype", "--epochs", "--out", "nnbackend[plot]"):
        assert option in out


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(("script", "needs"), [("spiral.py", None), ("digits.py", "sklearn")])
def test_examples_run(
    run_python: Callable[..., Any], tmp_path: Path, script: str, needs: str | None
) -> None:
    if not (EXAMPLES / script).exists():
        pytest.skip(f"no {script} next to the tests (installed package?)")
    if needs is not None:
        pytest.importorskip(needs)
    proc = run_python(
        args=[str(EXAMPLES / script), "--epochs", "2", "--out", str(tmp_path)],
        env={"MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "accuracy" in proc.stdout and "Traceback" not in proc.stderr
    assert any(p.suffix == ".npz" for p in tmp_path.iterdir())
