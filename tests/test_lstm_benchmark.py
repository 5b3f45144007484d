"""The LSTM LM benchmark's plumbing (``--dry-run``: toy sizes, a worker process each)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_dry_run_times_each_implementation_in_its_own_worker() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNBACKEND")}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.lstm_lm_step", "--dry-run",
         "--impls", "engine_numpy,book_numpy,engine_cupy"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "engine_numpy: step" in out and "book_numpy: step" in out
    assert "engine numpy / book numpy" in out and "(target <= 1.0)" in out
    # Without a GPU the cupy worker reports why it cannot run instead of failing the run.
    assert "engine_cupy" in out
