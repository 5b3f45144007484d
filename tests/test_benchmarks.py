"""Smoke tests of the benchmark suite (``python -m benchmarks``): it runs, reports GPU cases as
skipped without a GPU, and writes its report. Numbers are not checked here (see
docs/performance.md); each test runs the suite in a subprocess from the repository root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nnbackend import registry

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNBACKEND")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_quick_tiny_case_runs_and_prints_its_table() -> None:
    result = _run("-m", "benchmarks", "--quick", "--case", "mlp_tiny", "--no-save", "--no-check")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "BLAS:" in out and "load average" in out
    assert "tiny: engine / hand" in out
    assert "<= 1.5" in out  # the row carries its target


@pytest.mark.skipif(registry.probe("cupy") is None, reason="a GPU is usable: the case would run")
def test_gpu_case_is_reported_skipped_without_a_gpu() -> None:
    result = _run("-m", "benchmarks", "--gpu", "--case", "mlp_large", "--no-save")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipped mlp_large: no usable CUDA GPU" in result.stdout


def test_report_is_written_from_saved_results(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    rows = [
        {"name": "tiny: engine / hand", "value": 1.4, "unit": "x", "target": "<= 1.5",
         "passed": True, "note": ""},
        {"name": "tiny: torch CPU / hand", "value": 6.0, "unit": "x", "target": None,
         "passed": None, "note": "a | pipe"},
    ]  # fmt: skip
    document = {
        "case": "mlp_tiny",
        "description": "tiny",
        "when": "2026-01-01T00:00:00+00:00",
        "quick": False,
        "duration_s": 1.0,
        "skipped": None,
        "passed": True,
        "rows": rows,
        "machine": {"cpu": "test CPU", "load_average": [0.5, 0.5, 0.5], "thread_pools": []},
    }
    (results / "mlp_tiny.json").write_text(json.dumps(document))
    skipped = {**document, "case": "mlp_mixed16", "rows": [], "skipped": "no precision yet"}
    (results / "mlp_mixed16.json").write_text(json.dumps(skipped))
    doc, plot = tmp_path / "performance.md", tmp_path / "performance.png"
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from benchmarks import _report
        _report.write_report(Path({str(results)!r}), Path({str(doc)!r}), Path({str(plot)!r}))
        """
    )
    result = _run("-c", script)
    assert result.returncode == 0, result.stderr[-2000:]
    text = doc.read_text()
    assert "| `mlp_tiny` | tiny: engine / hand | 1.400 x | <= 1.5 | yes |" in text
    assert "a \\| pipe" in text  # table cells are escaped
    assert "skipped: no precision yet" in text
    assert "No GPU results yet" in text
    if "matplotlib" in result.stderr or not plot.exists():
        pytest.skip("matplotlib is not installed: no plot")
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_tiny_baselines_compute_the_same_step() -> None:
    """The book's chapter-1 code (the tiny target's baseline) and the leaner hand-written loop
    start from the same weights and make the same step: same loss, same updated weights."""
    code = textwrap.dedent(
        """
        import numpy as np
        from benchmarks._book import BookTwoLayerNet
        from benchmarks._nets import LR, TINY, HandMLP, data
        sizes, activation, batch = TINY
        x, t = data(batch, sizes[0], sizes[-1], "float64")
        hand = HandMLP(sizes, activation, "float64")
        book = BookTwoLayerNet(sizes, "float64", LR)
        for target, (w, b) in zip(book.params[::2], hand.params):
            target[...] = w
        for target, (w, b) in zip(book.params[1::2], hand.params):
            target[...] = b
        for _ in range(3):
            np.testing.assert_allclose(book.step(x, t), hand.step(x, t), rtol=1e-6)
        for got, (w, b) in zip(book.params[::2], hand.params):
            np.testing.assert_allclose(got, w, rtol=1e-12)
        print("same")
        """
    )
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["same"]
