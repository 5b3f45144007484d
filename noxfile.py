"""Developer sessions: ``nox`` (tests, lint, typecheck) or ``nox -s NAME``.

| session     | what it does                                                                  |
| ----------- | ----------------------------------------------------------------------------- |
| `tests`     | installs `.[test]` and torch, runs pytest on every available backend          |
| `lint`      | `ruff check` and `ruff format --check`                                         |
| `typecheck` | mypy on `src/nnbackend` (config in pyproject.toml)                             |
| `gpu`       | on a CUDA machine, in the *current* environment: `pytest -m gpu` and the GPU   |
|             | benchmarks; installs nothing (run it as `python -m nox -s gpu`)                |
| `docs`      | `mkdocs build --strict` with the `docs` extra                                  |
| `bench`     | `python -m benchmarks` (arguments after `--` go to it: `-- --quick`)           |

Arguments after ``--`` go to the session's main command (``nox -s tests -- -x -k dtype``).

torch is installed only as ``torch==2.13.0``: that CPU build lies on this machine's disk, and any
other requirement (plain ``torch``, ``.[torch]``, a range) makes pip download a CUDA build of
several GB. Sessions use the stdlib ``venv`` with pip, which reads the machine's pip
configuration (local wheels); uv does not.

For benchmark numbers to report, unset ``OPENBLAS_CORETYPE`` on the command line, never in
code: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE nox -s bench``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests", "lint", "typecheck"]

ROOT = Path(__file__).resolve().parent
TORCH = "torch==2.13.0"  # the only torch spec allowed here (see the module docstring)
RUFF = "ruff==0.17.6"  # pinned: a newer formatter may restyle code and fail `format --check`
MYPY = "mypy==2.4.1"


@nox.session
def tests(session: nox.Session) -> None:
    """pytest on numpy, array_api_strict and torch (CPU); cupy is reported as skipped where
    no GPU is usable. ``NNBACKEND_TEST_BACKENDS`` (and ``NNBACKEND``, ``NNBACKEND_DTYPE``) are
    cleared, so every available backend runs; select a subset with pytest's own options:
    ``nox -s tests -- -k torch``."""
    session.install(".[test]", TORCH)
    session.run(
        "pytest",
        *session.posargs,
        env={"NNBACKEND_TEST_BACKENDS": None, "NNBACKEND": None, "NNBACKEND_DTYPE": None},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint rules (including the banned array-library imports) and formatting."""
    session.install(RUFF)
    session.run("ruff", "check", *(session.posargs or ["."]))
    session.run("ruff", "format", "--check", *(session.posargs or ["."]))


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy on src/nnbackend, configured by [tool.mypy] in pyproject.toml."""
    session.install(".", MYPY)
    session.run("mypy", *session.posargs)


@nox.session(venv_backend="none")
def gpu(session: nox.Session) -> None:
    """The GPU checks, in the environment nox runs in (a GPU machine may have no network, so
    this session installs nothing): ``python -m nox -s gpu`` from the environment that has
    ``nnbackend[test]`` and cupy."""
    python = sys.executable
    probe = subprocess.run(
        [python, "-c", "from nnbackend import registry; print(registry.probe('cupy') or '')"],
        capture_output=True,
        text=True,
        check=False,
    )
    reason = probe.stdout.strip() or probe.stderr.strip()[-500:]
    if probe.returncode or reason:
        session.error(f"nox -s gpu needs a usable cupy backend in {python}: {reason}")
    session.run(python, "-m", "pytest", "-m", "gpu", *session.posargs)
    session.run(python, "-m", "benchmarks", "--gpu")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, with warnings as errors."""
    if not (ROOT / "mkdocs.yml").exists():
        session.error("no mkdocs.yml at the repository root: nothing to build yet")
    session.install(".[docs]")
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """``python -m benchmarks`` (table on stdout, JSON in benchmarks/results/)."""
    session.install(".[strict]", "threadpoolctl", TORCH)
    session.run("python", "-m", "benchmarks", *session.posargs)
