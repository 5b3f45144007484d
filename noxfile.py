"""Developer sessions: ``nox`` (tests, lint, typecheck) or ``nox -s NAME``.

| session     | what it does                                                                  |
| ----------- | ----------------------------------------------------------------------------- |
| `tests`     | installs `.[test]` and torch, runs pytest on every available backend          |
| `tests-jax` | installs `.[test,jax]`, runs pytest on the jax backend with `JAX_ENABLE_X64=1`  |
|             | (not a default session: the whole suite again, slower on jax; CI runs it)     |
| `lint`      | `ruff check` and `ruff format --check`                                         |
| `typecheck` | installs `.[typecheck]` (the pinned mypy), runs mypy as CI does ([tool.mypy])  |
| `gpu`       | on a CUDA machine, in the *current* environment: `scripts/gpu_check.py` (gpu   |
|             | tests, GPU benchmarks, suite on cupy); installs nothing; `-- --dry-run` on CPU |
| `docs`      | `mkdocs build --strict` with the `docs` extra                                  |
| `bench`     | `python -m benchmarks` (arguments after `--` go to it: `-- --quick`)           |
| `mutation`  | mutmut over the core (config: `[tool.mutmut]`), then the score per module;     |
|             | slow (hours on 2 cores), never in CI; `-- --max-children 4` goes to mutmut     |

Arguments after ``--`` go to the session's main command (``nox -s tests -- -x -k dtype``).

torch is installed only as ``torch==2.13.0``: that CPU build lies on this machine's disk, and any
other requirement (plain ``torch``, ``.[torch]``, a range) makes pip download a CUDA build of
several GB. Sessions use the stdlib ``venv`` with pip, which reads the machine's pip
configuration (local wheels); uv does not.

For benchmark numbers to report, unset ``OPENBLAS_CORETYPE`` on the command line, never in
code: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE nox -s bench``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests", "lint", "typecheck"]

ROOT = Path(__file__).resolve().parent
TORCH = "torch==2.13.0"  # the only torch spec allowed here (see the module docstring)
RUFF = "ruff==0.17.6"  # pinned: a newer formatter may restyle code and fail `format --check`
MUTMUT = "mutmut==3.8.1"  # [tool.mutmut] in pyproject.toml is mutmut 3's format


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


@nox.session(name="tests-jax")
def tests_jax(session: nox.Session) -> None:
    """pytest on the jax backend (CPU), float64 cases included: ``JAX_ENABLE_X64=1`` is set for
    the run, as nnbackend never switches jax's x64 on itself. Not in the default sessions:
    it runs the whole suite a second time, slower (each operation is a jax dispatch); CI's
    ``.ci/run`` runs it as a required step."""
    session.install(".[test,jax]")
    session.run(
        "pytest",
        *session.posargs,
        env={
            "NNBACKEND_TEST_BACKENDS": "jax",
            "JAX_ENABLE_X64": "1",
            "NNBACKEND": None,
            "NNBACKEND_DTYPE": None,
        },
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint rules (including the banned array-library imports) and formatting."""
    session.install(RUFF)
    session.run("ruff", "check", *(session.posargs or ["."]))
    session.run("ruff", "format", "--check", *(session.posargs or ["."]))


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy on src/nnbackend, configured by [tool.mypy] in pyproject.toml, with the mypy
    version the ``typecheck`` extra pins: the same check as CI's mypy step (``.ci/run``)."""
    session.install(".[typecheck]")
    session.run("mypy", *session.posargs)


@nox.session(venv_backend="none")
def gpu(session: nox.Session) -> None:
    """The GPU check (``scripts/gpu_check.py``) in the environment nox runs in; it installs
    nothing (a GPU machine may have no network): the tests marked ``gpu``, the GPU benchmarks
    and the whole suite with ``NNBACKEND=cupy``, in under five minutes, with results in
    ``benchmarks/results/gpu_check.json`` and the GPU section of ``docs/performance.md``.
    ``nox -s gpu -- --dry-run`` runs the same plumbing with numpy on a CPU. Where nox itself is
    missing (the GPU machine has none), run ``python scripts/gpu_check.py`` directly."""
    session.run(sys.executable, str(ROOT / "scripts" / "gpu_check.py"), *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (``mkdocs.yml``, ``docs/``) into ``site/``, with warnings as
    errors. Its code examples run in the test suite (``tests/test_docs.py``); ``mkdocs serve``
    in an environment with ``.[docs]`` previews it."""
    if not (ROOT / "mkdocs.yml").exists():
        session.error("no mkdocs.yml at the repository root: nothing to build yet")
    session.install(".[docs]")
    # NO_MKDOCS_2_WARNING: silence mkdocs-material's end-of-life notice (not a build warning).
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def bench(session: nox.Session) -> None:
    """``python -m benchmarks`` (table on stdout, JSON in benchmarks/results/)."""
    session.install(".[strict,plot,fast16]", "threadpoolctl", TORCH)
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def mutation(session: nox.Session) -> None:
    """Mutation testing of the core with mutmut (``[tool.mutmut]`` in pyproject.toml names
    the modules): every mutant is run against the tests that cover it, on numpy and
    array_api_strict; then ``scripts/mutation_report.py`` prints the score per module and the
    survivors that are neither killed nor listed in ``tests/mutation_accepted.txt``.
    Arguments after ``--`` go to ``mutmut run`` (``-- --max-children 2``, or mutant names).
    Results are kept in ``mutants/``: a second run retests only what changed; ``mutmut
    browse`` shows them. See CONTRIBUTING.md."""
    session.install(".[test]", MUTMUT)
    # One BLAS/OpenMP thread: torch's thread pool hangs mutmut's forked children otherwise.
    env = {"NNBACKEND_TEST_BACKENDS": "numpy,array_api_strict", "NNBACKEND": None,
           "NNBACKEND_DTYPE": None, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # fmt: skip
    session.run("mutmut", "run", *session.posargs, env=env)
    session.run("python", str(ROOT / "scripts" / "mutation_report.py"), env=env)
