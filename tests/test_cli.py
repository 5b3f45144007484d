"""The ``nnbackend`` command line: ``nnbackend info`` and ``python -m nnbackend info``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import nnbackend as nb
from nnbackend import cli, registry


def test_module_info(run_python: Callable[..., Any]) -> None:
    proc = run_python(args=["-m", "nnbackend", "info"], env={"NNBACKEND_DTYPE": "float32"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "nnbackend settings:"
    assert "  backend = numpy (built-in default)" in lines
    assert "  dtype   = float32 (from NNBACKEND_DTYPE)" in lines
    for name in ("numpy", "cupy", "torch", "array_api_strict", "jax"):
        assert any(line.startswith(f"  {name} ") and "available" in line for line in lines)
    assert "versions:" in lines


def test_module_info_json(run_python: Callable[..., Any]) -> None:
    proc = run_python(args=["-m", "nnbackend", "info", "--json"])
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == {"settings", "backends", "versions", "problems", "world"}
    assert data["problems"] == []
    assert (data["world"]["engine"], data["world"]["size"]) == ("none", 1)
    assert data["settings"][0] == {
        "name": "backend",
        "value": "numpy",
        "source": "built-in default",
    }
    statuses = {b["name"]: b for b in data["backends"]}
    assert statuses["numpy"]["available"] is True
    for status in statuses.values():
        assert status["available"] == (status["reason"] is None)


def test_bad_environment_is_a_one_line_error(run_python: Callable[..., Any]) -> None:
    """``info`` still prints its report (issue 17), marks the bad setting, and exits 2 with
    the one-line error on stderr."""
    proc = run_python(args=["-m", "nnbackend", "info"], env={"NNBACKEND": "bogus"})
    assert proc.returncode == 2
    assert "backend = INVALID 'bogus' (from NNBACKEND; fix it or unset NNBACKEND)" in proc.stdout
    assert "problem: NNBACKEND='bogus': unknown backend" in proc.stdout
    assert "numpy             available yes" in proc.stdout
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("nnbackend: error: NNBACKEND='bogus': unknown backend")
    assert "'numpy'" in lines[0]


def test_console_script(run_python: Callable[..., Any]) -> None:
    script = Path(sys.executable).parent / "nnbackend"
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable} (package not installed)")
    proc = run_python(argv=[str(script), "info", "--json"])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["settings"][1]["name"] == "dtype"


# In-process: cheaper, and covers the paths a subprocess cannot see from inside.
def test_main_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    nb.set_default_dtype("float16")
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "  dtype   = float16 (set_default_dtype())" in out
    assert cli.main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [b["name"] for b in data["backends"]] == nb.backends()


def test_main_reports_nnbackend_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> Any:
        raise nb.errors.BackendError("something is off")

    monkeypatch.setattr(cli, "info", broken)
    assert cli.main(["info"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "nnbackend: error: something is off\n"


def test_main_without_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        cli.main([])
    assert excinfo.value.code == 2
    assert "usage: nnbackend" in capsys.readouterr().err


def test_info_lists_unavailable_backend_with_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for name in nb.backends():
        reason = registry.probe(name)
        if reason is not None:
            assert f"available no: {reason}" in out
