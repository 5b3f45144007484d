"""Mutation-test one module with only the tests that are meant to catch its bugs, without
touching ``pyproject.toml`` (on two cores the whole ``nox -s mutation`` takes hours).

    python scripts/mutation_module.py NAME --mutate GLOB... --tests PATH... [--max-children N]
        [--rerun-survivors] [--only MUTANT_PATTERN...] [--deselect TEST_ID...]

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

``--sample N --seed S`` runs a random sample of N of the modules' mutants not run yet (for
``autograd/`` or ``nn/``, thousands of mutants, hours each on two cores): mutmut first
generates every mutant and collects which tests cover what (a run filtered to a name that
matches nothing stops right after that), then the sample, drawn with ``random.Random(S)``
from the generated names in sorted order, is run by name and saved as ``sample-S.txt``.
``scripts/mutation_report.py`` then gives each partly run module's score with its 95% Wilson
interval. Measure on one sample, write the tests its survivors call for, and report the
score of a *fresh* sample (another seed): the first sample's score is no longer unbiased
once tests were written against it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINKED = ["src", "tests", "docs", "examples", "benchmarks", "scripts", "mkdocs.yml", "README.md",
          "noxfile.py"]  # fmt: skip
NO_MATCH = "nnbackend.__sample_probe_matches_nothing__"
RETESTED = re.compile(r"^\s*(\S+__mutmut_\d+): (?:survived|no tests)$", re.MULTILINE)


def scratch_pyproject(
    mutate: list[str], tests: list[str], timeout_multiplier: float | None = None
) -> str:
    """``pyproject.toml`` with its ``[tool.mutmut]`` table narrowed to ``mutate`` and
    ``tests`` (the table must be the file's last one, as it is here), and mutmut's
    ``timeout_multiplier`` where one is given."""
    text = (ROOT / "pyproject.toml").read_text("utf-8")
    head, sep, _ = text.partition("[tool.mutmut]")
    if not sep:
        raise SystemExit("pyproject.toml has no [tool.mutmut] table")
    config = tomllib.loads(text)["tool"]["mutmut"]
    config.update(only_mutate=mutate, pytest_add_cli_args_test_selection=tests)
    if timeout_multiplier is not None:
        config["timeout_multiplier"] = timeout_multiplier
    # JSON strings and lists of them are valid TOML.
    table = "".join(f"{key} = {json.dumps(value)}\n" for key, value in config.items())
    return f"{head}[tool.mutmut]\n{table}"


def mutmut_environment(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` for mutmut's runs: no backend or dtype setting, the tests on numpy and
    array_api_strict, and one BLAS/OpenMP thread. torch's intra-op thread pool, started in
    mutmut's parent, hangs its forked children: a test that compares with torch then hangs
    until mutmut's timeout, and the mutant counts as killed whether or not a test would have
    failed (in the first nn sample, 11 of 19 such "timeouts" were survivors)."""
    env = {k: v for k, v in base.items() if k not in ("NNBACKEND", "NNBACKEND_DTYPE")}
    env["NNBACKEND_TEST_BACKENDS"] = "numpy,array_api_strict"
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    return env


def generated_mutants(scratch: Path) -> list[str]:
    """Every mutant name mutmut generated under ``scratch`` (its ``.meta`` files), sorted."""
    names: set[str] = set()
    for meta in (scratch / "mutants").rglob("*.meta"):
        names.update(json.loads(meta.read_text("utf-8"))["exit_code_by_key"])
    return sorted(names)


def draw_sample(names: list[str], n: int, seed: int, done: set[str]) -> list[str]:
    """``n`` names (all, if fewer) drawn with ``random.Random(seed)`` from ``names`` not in
    ``done``; the same arguments draw the same sample."""
    pool = [name for name in sorted(names) if name not in done]
    return sorted(random.Random(seed).sample(pool, min(n, len(pool))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="names the scratch folder mutants/scratch-NAME")
    parser.add_argument("--mutate", nargs="+", required=True, help="only_mutate globs")
    parser.add_argument("--tests", nargs="+", required=True, help="the test files to run")
    parser.add_argument(
        "--deselect",
        nargs="+",
        default=[],
        help="test ids left out (slow ones), passed to pytest as --deselect",
    )
    parser.add_argument("--max-children", type=int, default=1)
    parser.add_argument(
        "--timeout-multiplier",
        type=float,
        default=None,
        help="mutmut's timeout_multiplier (its default 15: a mutant that hangs a "
        "forked test costs 30x its tests' time before it counts as killed)",
    )
    parser.add_argument("--rerun-survivors", action="store_true")
    parser.add_argument("--only", nargs="+", default=[], help="mutant name patterns to run")
    parser.add_argument("--sample", type=int, default=0, help="run N random mutants not run yet")
    parser.add_argument("--seed", type=int, default=0, help="the sample's random seed")
    args = parser.parse_args(argv)
    if args.sample < 0:
        raise SystemExit(f"--sample must be a positive count, got {args.sample}")
    for path in args.tests:
        if not (ROOT / path.partition("::")[0]).exists():
            raise SystemExit(f"no test file {path}")
    for test_id in args.deselect:
        if not (ROOT / test_id.partition("::")[0]).exists():
            raise SystemExit(f"no test file {test_id}")
    tests = [*args.tests, *(f"--deselect={test_id}" for test_id in args.deselect)]
    scratch = ROOT / "mutants" / f"scratch-{args.name}"
    scratch.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        link = scratch / name
        if not link.is_symlink():
            link.symlink_to(ROOT / name)
    (scratch / "pyproject.toml").write_text(
        scratch_pyproject(args.mutate, tests, args.timeout_multiplier), "utf-8"
    )
    results = scratch / "results.txt"
    names = list(args.only)
    if args.rerun_survivors and results.exists():
        names += RETESTED.findall(results.read_text("utf-8"))
    env = mutmut_environment(os.environ)
    if args.sample:
        # Generates the mutants and the coverage table, then stops: nothing matches.
        probe = ["mutmut", "run", "--max-children", str(args.max_children), NO_MATCH]
        subprocess.run(probe, cwd=scratch, env=env, check=False, capture_output=True)
        generated = generated_mutants(scratch)
        if not generated:
            raise SystemExit(f"mutmut generated no mutants for {args.mutate} in {scratch}")
        done = set()
        if results.exists():
            done = {n for n, status in _statuses(results).items() if status != "not checked"}
        names += draw_sample(generated, args.sample, args.seed, done)
        (scratch / f"sample-{args.seed}.txt").write_text("\n".join(names) + "\n", "utf-8")
    run = ["mutmut", "run", "--max-children", str(args.max_children), *names]
    subprocess.run(run, cwd=scratch, env=env, check=True)
    listing = subprocess.run(["mutmut", "results", "--all", "true"], cwd=scratch, env=env,
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    results.write_text(listing, "utf-8")
    report = [sys.executable, str(ROOT / "scripts" / "mutation_report.py"), "--results",
              str(results)]  # fmt: skip
    return subprocess.run(report, check=False).returncode


def _statuses(results: Path) -> dict[str, str]:
    """``{name: status}`` from a saved ``mutmut results --all true`` listing."""
    out = {}
    for line in results.read_text("utf-8").splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep:
            out[name] = status.strip()
    return out


if __name__ == "__main__":
    sys.exit(main())
