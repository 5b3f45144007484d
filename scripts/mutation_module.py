"""Mutation-test one module with only the tests that are meant to catch its bugs, without
touching ``pyproject.toml`` (on two cores the whole ``nox -s mutation`` takes hours).

    python scripts/mutation_module.py NAME --mutate GLOB... --tests PATH... [--max-children N]
        [--rerun-survivors] [--only MUTANT_PATTERN...]

    python scripts/mutation_module.py namespace --mutate src/nnbackend/namespace.py \\
        --tests tests/test_namespace.py tests/test_namespace_mutants.py

A scratch folder ``mutants/scratch-NAME/`` (git ignores ``mutants/``) gets links to this
checkout's ``src``, ``tests`` and the other files the tests read, and a copy of
``pyproject.toml`` whose ``[tool.mutmut]`` table mutates only ``--mutate`` and runs only
``--tests``. ``mutmut run`` runs there (so it mutates this checkout's code), on numpy and
array_api_strict; ``mutmut results`` is saved as ``results.txt`` in that folder and
``scripts/mutation_report.py`` prints the score. mutmut does not retest a survivor when only
the tests changed: ``--rerun-survivors`` passes the survivors of the last run by name;
``--only`` runs just the mutants matching the patterns (``"nnbackend.io._metadata.*"``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINKED = ["src", "tests", "docs", "examples", "benchmarks", "scripts", "mkdocs.yml", "README.md",
          "noxfile.py"]  # fmt: skip
RETESTED = re.compile(r"^\s*(\S+__mutmut_\d+): (?:survived|no tests)$", re.MULTILINE)


def scratch_pyproject(mutate: list[str], tests: list[str]) -> str:
    """``pyproject.toml`` with its ``[tool.mutmut]`` table narrowed to ``mutate`` and
    ``tests`` (the table must be the file's last one, as it is here)."""
    text = (ROOT / "pyproject.toml").read_text("utf-8")
    head, sep, _ = text.partition("[tool.mutmut]")
    if not sep:
        raise SystemExit("pyproject.toml has no [tool.mutmut] table")
    config = tomllib.loads(text)["tool"]["mutmut"]
    config.update(only_mutate=mutate, pytest_add_cli_args_test_selection=tests)
    # JSON strings and lists of them are valid TOML.
    table = "".join(f"{key} = {json.dumps(value)}\n" for key, value in config.items())
    return f"{head}[tool.mutmut]\n{table}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="names the scratch folder mutants/scratch-NAME")
    parser.add_argument("--mutate", nargs="+", required=True, help="only_mutate globs")
    parser.add_argument("--tests", nargs="+", required=True, help="the test files to run")
    parser.add_argument("--max-children", type=int, default=1)
    parser.add_argument("--rerun-survivors", action="store_true")
    parser.add_argument("--only", nargs="+", default=[], help="mutant name patterns to run")
    args = parser.parse_args(argv)
    for path in args.tests:
        if not (ROOT / path.partition("::")[0]).exists():
            raise SystemExit(f"no test file {path}")
    scratch = ROOT / "mutants" / f"scratch-{args.name}"
    scratch.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        link = scratch / name
        if not link.is_symlink():
            link.symlink_to(ROOT / name)
    (scratch / "pyproject.toml").write_text(scratch_pyproject(args.mutate, args.tests), "utf-8")
    results = scratch / "results.txt"
    names = list(args.only)
    if args.rerun_survivors and results.exists():
        names += RETESTED.findall(results.read_text("utf-8"))
    env = {k: v for k, v in os.environ.items() if k not in ("NNBACKEND", "NNBACKEND_DTYPE")}
    env["NNBACKEND_TEST_BACKENDS"] = "numpy,array_api_strict"
    run = ["mutmut", "run", "--max-children", str(args.max_children), *names]
    subprocess.run(run, cwd=scratch, env=env, check=True)
    listing = subprocess.run(["mutmut", "results", "--all", "true"], cwd=scratch, env=env,
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    results.write_text(listing, "utf-8")
    report = [sys.executable, str(ROOT / "scripts" / "mutation_report.py"), "--results",
              str(results)]  # fmt: skip
    return subprocess.run(report, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
