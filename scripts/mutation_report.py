"""The mutation score per module, from the results of the last ``mutmut run`` (run in the
repository root, after ``nox -s mutation`` or ``mutmut run``).

    python scripts/mutation_report.py [--fail-under 90] [--results FILE] [--accepted FILE]

Reads ``mutmut results --all true`` (or ``--results FILE``, a saved copy of that output) and
``tests/mutation_accepted.txt``, the survivors judged equivalent (one per line: the mutant's
name, then ``#`` and why no test can tell it from the original). The score of a module is
``killed / (mutants - accepted)``, where killed counts timeouts too (an infinite loop is a
caught bug), a mutant no test covers ("no tests") counts as a survivor, and mutants skipped
or not checked yet do not count. Survivors that are not accepted are listed: each wants a
test, or a line in the accepted file.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ACCEPTED = ROOT / "tests" / "mutation_accepted.txt"
# nnbackend.io._npz.x__array_bytes__mutmut_3, nnbackend.optim.xǁAdamǁ_update__mutmut_12
NAME = re.compile(r"^(?P<module>[\w.]+?)\.x[_ǁ][^.]*__mutmut_\d+$")
KILLED = {"killed", "timeout"}
SURVIVED = {"survived", "no tests"}  # no test covers a "no tests" mutant: it survives


def module_of(mutant: str) -> str:
    """``nnbackend.registry`` for ``nnbackend.registry.x_get__mutmut_1``."""
    match = NAME.match(mutant)
    if match is None:
        raise ValueError(f"not a mutmut 3 mutant name: {mutant!r}")
    return match.group("module")


def wilson(killed: int, judged: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval, in percent, of a kill rate of ``killed``/``judged``:
    the range a module's whole score lies in when only a random sample of its mutants ran."""
    if judged == 0:
        return 0.0, 100.0
    p = killed / judged
    centre = p + z * z / (2 * judged)
    half = z * math.sqrt(p * (1 - p) / judged + z * z / (4 * judged * judged))
    scale = 1 + z * z / judged
    return 100.0 * (centre - half) / scale, 100.0 * (centre + half) / scale


def read_accepted(path: Path = ACCEPTED) -> dict[str, str]:
    """``{mutant name: reason}`` from the accepted-survivors file; blank lines and lines
    starting with ``#`` are comments. Raises ValueError on a malformed or repeated line."""
    accepted: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, reason = line.partition("#")
        name, reason = name.strip(), reason.strip()
        if not sep or not reason or " " in name:
            raise ValueError(
                f"{path.name}:{number}: expected 'MUTANT_NAME  # reason', got {line!r}"
            )
        module_of(name)
        if name in accepted:
            raise ValueError(f"{path.name}:{number}: {name} is listed twice")
        accepted[name] = reason
    return accepted


def parse_results(text: str) -> dict[str, str]:
    """``{mutant name: status}`` from the output of ``mutmut results --all true``."""
    out = {}
    for line in text.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and NAME.match(name):
            out[name] = status.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fail-under", type=float, default=None)
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--accepted", type=Path, default=ACCEPTED)
    args = parser.parse_args(argv)
    if args.results is not None:
        text = args.results.read_text(encoding="utf-8")
    else:
        cmd = ["mutmut", "results", "--all", "true"]
        text = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    results = parse_results(text)
    accepted = read_accepted(args.accepted)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    open_survivors = []
    for name, status in sorted(results.items()):
        row = counts[module_of(name)]
        row["mutants"] += 1
        if status in KILLED:
            row["killed"] += 1
        elif status in SURVIVED and name in accepted:
            row["accepted"] += 1
        elif status in SURVIVED:
            row["survived"] += 1
            open_survivors.append(name)
        else:
            row["other"] += 1  # skipped, not checked, suspicious, segfault
    print(
        f"{'module':36} {'mutants':>7} {'killed':>7} {'accepted':>8} {'survived':>8} "
        f"{'not run':>7} {'score':>6}"
    )
    worst = 100.0
    for module, row in sorted(counts.items()):
        judged = row["killed"] + row["survived"]
        score = 100.0 * row["killed"] / judged if judged else 100.0
        worst = min(worst, score)
        # Mutants not run yet (a stopped run) are left out of the score: say how many.
        shown = f"{score:5.1f}%" if judged else "   n/a"
        if judged and row["other"]:  # a sample: the whole module's score lies in this range
            low, high = wilson(row["killed"], judged)
            shown += f" (sample of {judged}: 95% interval {low:.1f}-{high:.1f}%)"
        print(
            f"{module:36} {row['mutants']:7} {row['killed']:7} {row['accepted']:8} "
            f"{row['survived']:8} {row['other']:7} {shown}"
        )
    if open_survivors:
        print(f"\n{len(open_survivors)} survivors want a test (or a line in {ACCEPTED.name}):")
        for name in open_survivors:
            print(f"  {name}   (mutmut show {name})")
    # Only modules this run covered: a run of one module says nothing about the others.
    stale = sorted(n for n in set(accepted) - set(results) if module_of(n) in counts)
    if stale:
        print(f"\n{len(stale)} accepted names no longer exist (the code moved): {stale[:10]}")
    if args.fail_under is not None and worst < args.fail_under:
        print(f"\nlowest module score {worst:.1f}% is under {args.fail_under}%")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
