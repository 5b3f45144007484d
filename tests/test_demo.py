"""``nnbackend demo``: trains the book's spiral network, prints loss, accuracy and time per
step, writes real PNG files; bad options and unusable backends give one line and exit 2."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
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
        (["--lr", "inf"], "argument --lr: expected a positive number (finite, such as 0.1)"),
        (["--lr", "nan"], "argument --lr: expected a positive number (finite, such as 0.1)"),
        (["--lr", "1e400"], "argument --lr: expected a positive number (finite, such as 0.1)"),
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


# -- issue 12 item 17: no traceback, whatever --out is, and Ctrl-C while plotting -------------
def test_out_over_a_folder_named_like_a_plot_fails_before_training(
    run_python: Callable[..., Any], tmp_path: Path
) -> None:
    (tmp_path / "loss.png").mkdir()
    proc = run_python(args=["-m", "nnbackend", "demo", "--epochs", "1", "--out", str(tmp_path)])
    line = _one_line_error(proc)
    assert "cannot write loss.png into --out folder" in line and "is a folder" in line
    assert "epochs" not in proc.stdout  # refused before any training
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png"]


def _drop_file_capabilities() -> None:
    """In the child, before exec: root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH, so
    folder permissions apply to it as to anyone else."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _unprivileged() -> dict[str, Any]:
    """subprocess.run arguments under which a read-only folder is read-only."""
    if os.geteuid() != 0:
        return {}
    if not sys.platform.startswith("linux"):
        pytest.skip("running as root, and capabilities can be dropped on Linux only")
    probe = subprocess.run(
        [sys.executable, "-c", "import os; open(os.devnull)"],
        preexec_fn=_drop_file_capabilities,
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip("running as root without the right to drop CAP_DAC_OVERRIDE")
    return {"preexec_fn": _drop_file_capabilities}


def test_read_only_out_fails_before_training_without_traceback() -> None:
    root = Path(tempfile.mkdtemp(prefix="nnbackend-readonly-"))
    try:
        out = root / "out"
        out.mkdir()
        out.chmod(0o555)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NNBACKEND")}
        proc = subprocess.run(
            [sys.executable, "-m", "nnbackend", "demo", "--epochs", "1", "--out", str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            **_unprivileged(),
        )
        line = _one_line_error(proc)
        assert f"cannot write into --out folder {str(out)!r}" in line
        assert "Permission denied" in line
        assert "epochs" not in proc.stdout
        assert list(out.iterdir()) == []
    finally:
        (root / "out").chmod(0o755)
        shutil.rmtree(root)


CTRL_C_WHILE_PLOTTING = """
import signal, sys
from nnbackend import cli, train

fit = train.Trainer.fit


class FirstCtrlC(train.Callback):
    def on_step_end(self, trainer, history):
        if trainer.step == 3:
            signal.raise_signal(signal.SIGINT)  # the first Ctrl-C: stop after this step


def fit_with_ctrl_c(self, *args, **kwargs):
    return fit(self, *args, **{**kwargs, "callbacks": [FirstCtrlC()]})


def plot_with_ctrl_c(self, path, **kwargs):
    path.write_bytes(b"half a png")  # what an interrupted savefig leaves
    signal.raise_signal(signal.SIGINT)  # the second Ctrl-C, while the plot is written


train.Trainer.fit = fit_with_ctrl_c
train.History.plot = plot_with_ctrl_c
sys.exit(cli.main(["demo", "--epochs", "5", "--out", sys.argv[1]]))
"""


def test_second_ctrl_c_while_plotting_exits_130_without_traceback(
    run_python: Callable[..., Any], tmp_path: Path
) -> None:
    proc = run_python(args=["-c", CTRL_C_WHILE_PLOTTING, str(tmp_path)])
    assert proc.returncode == 130, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert "interrupted after 3 steps" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == "nnbackend: interrupted"
    assert list(tmp_path.iterdir()) == []  # no half-written plot, no temporary file
