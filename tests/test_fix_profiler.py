"""nnbackend under Python's profilers: ``python -m cProfile train.py`` failed at the first
optimizer ("'Profile' object is not callable"), because the ops' reference-count probe turned
the profile hook off and handed cProfile's object back to ``sys.setprofile`` as a function."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import sys
    import nnbackend as nb
    from nnbackend import nn, optim
    from nnbackend.namespace import ops_for

    nb.random.seed(0)
    m = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = optim.SGD(m.parameters(), 0.1)
    xp = nb.namespace()
    for _ in range(3):
        loss = (m(xp.ones((3, 2))) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    ops = ops_for(xp, m[0].weight.data)
    print("refs", ops._sole_references, ops._pooled_references)
    print("loss", float(loss.data))
    """
)


def _run(tmp_path: Path, *args: str) -> str:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, *args, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_training_runs_under_cprofile_and_probes_as_without_it(tmp_path: Path) -> None:
    """``python -m cProfile train.py`` raised TypeError at the first optimizer; it now trains,
    with the same reference-count probes (and so the same buffer reuse) as without it."""
    plain = _run(tmp_path)
    profiled = _run(tmp_path, "-m", "cProfile", "-o", str(tmp_path / "train.prof"))
    lines = [line for line in plain.splitlines() if line.startswith(("refs", "loss"))]
    assert lines and all(line in profiled for line in lines)
    assert (tmp_path / "train.prof").stat().st_size > 0


def test_a_python_profile_function_is_given_back() -> None:
    """A profile function set with ``sys.setprofile`` (a Python profiler's) is still set after
    nnbackend builds an ops object, which turns it off while it probes reference counts."""
    from nnbackend.backends.numpy import _untraced

    calls: list[str] = []

    def hook(frame, event, arg):  # type: ignore[no-untyped-def]
        calls.append(event)

    sys.setprofile(hook)
    try:
        seen = _untraced(sys.getprofile)
        after = sys.getprofile()
    finally:
        sys.setprofile(None)
    assert seen is None and after is hook
