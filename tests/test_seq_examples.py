"""The sequence examples run end to end in --quick mode (one epoch) and write their outputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(
    ("script", "expect", "outputs"),
    [
        ("word2vec_cbow.py", "cat:", ["cbow.npz"]),
        ("lstm_lm.py", "validation perplexity", ["lstm_lm.npz"]),
        ("seq2seq_attention.py", "test accuracy", ["seq2seq_attention.npz"]),
    ],
)
def test_sequence_examples_run(
    run_python: Callable[..., Any], tmp_path: Path, script: str, expect: str, outputs: list[str]
) -> None:
    if not (EXAMPLES / script).exists():
        pytest.skip(f"no {script} next to the tests (installed package?)")
    proc = run_python(
        args=[str(EXAMPLES / script), "--quick", "--epochs", "1", "--out", str(tmp_path)],
        env={"MPLBACKEND": "Agg"},
        timeout=900,  # a loaded 2-core machine: seq2seq takes a minute there
    )
    assert proc.returncode == 0, proc.stderr
    assert expect in proc.stdout and "epoch 1 | iter" in proc.stdout
    for name in outputs:
        assert (tmp_path / name).is_file()
