"""``python -m benchmarks [--case NAME ...] [--quick] [--gpu] [--list] [--no-save]``

Runs the registered cases, prints one table, writes ``benchmarks/results/<case>.json`` and
exits 1 when a row misses its target (``--no-check`` reports misses but exits 0).
Unset ``OPENBLAS_CORETYPE`` on the command line of the run, not in code::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from benchmarks import Options, Row, Skip, load_cases, machine_facts, write_result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--case",
        action="append",
        metavar="NAME",
        help="run only this case (repeatable); see --list",
    )
    parser.add_argument(
        "--quick", action="store_true", help="few, short rounds: a smoke run, not numbers to report"
    )
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="run the cases that need a CUDA GPU (and only those, unless --case names others)",
    )
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument(
        "--no-save", action="store_true", help="do not write benchmarks/results/<case>.json"
    )
    parser.add_argument(
        "--no-check", action="store_true", help="exit 0 even when a row misses its target"
    )
    return parser


def _format_value(value: float) -> str:
    if value == 0 or 0.01 <= abs(value) < 1e5:
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return f"{value:.3g}"


def _table(results: list[tuple[str, list[Row]]]) -> str:
    header = ("case", "measurement", "value", "unit", "target", "ok", "note")
    lines: list[tuple[str, ...]] = [header]
    for case, rows in results:
        for r in rows:
            ok = "" if r.passed is None else ("yes" if r.passed else "MISS")
            lines.append((case, r.name, _format_value(r.value), r.unit, r.target or "", ok, r.note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out = []
    for index, line in enumerate(lines):
        cells = [
            cell.ljust(width) if i != 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line[:-1], widths, strict=True))
        ]
        out.append("  ".join([*cells, line[-1]]).rstrip())
        if index == 0:
            out.append("  ".join("-" * w for w in widths) + "  ----")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cases = load_cases()
    if args.list:
        for case in cases.values():
            print(f"{case.name:<28} {'[gpu] ' if case.gpu else ''}{case.description}")
        return 0
    if args.case:
        unknown = [name for name in args.case if name not in cases]
        if unknown:
            print(
                f"unknown case(s) {', '.join(unknown)}; known: {', '.join(cases)}", file=sys.stderr
            )
            return 2
        selected = [cases[name] for name in args.case]
    else:
        selected = [case for case in cases.values() if case.gpu == args.gpu]
    opts = Options.make(args.quick)

    facts = machine_facts()
    blas = [p for p in facts["thread_pools"] if p.get("user_api") == "blas"]
    print(
        f"machine: {facts['cpu']}, {facts['usable_cpus']} usable CPUs, Python "
        f"{facts['python']}, numpy {facts['versions']['numpy']}"
    )
    for pool in blas:
        print(
            f"BLAS: {pool.get('internal_api')} {pool.get('version')}, "
            f"{pool.get('num_threads')} threads, kernel {pool.get('architecture')}"
        )
    if os.environ.get("OPENBLAS_CORETYPE"):
        print(
            f"warning: OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} is set and may slow "
            "NumPy; for numbers to report run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "
            "python -m benchmarks"
        )
    if opts.quick:
        print("--quick: a smoke run; do not report these numbers")
    print()

    results: list[tuple[str, list[Row]]] = []
    skipped: list[tuple[str, str]] = []
    for case in selected:
        print(f"running {case.name} ...", flush=True)
        start = time.perf_counter()
        try:
            rows = case.run(opts)
        except Skip as exc:
            skipped.append((case.name, str(exc)))
            if not args.no_save:
                write_result(case, [], opts, time.perf_counter() - start, skipped=str(exc))
            continue
        elapsed = time.perf_counter() - start
        results.append((case.name, rows))
        if not args.no_save:
            path = write_result(case, rows, opts, elapsed)
            print(f"  {len(rows)} rows in {elapsed:.1f} s -> {path}")
    print()
    if results:
        print(_table(results))
    for name, reason in skipped:
        print(f"skipped {name}: {reason}")
    misses = [(case, r) for case, rows in results for r in rows if r.passed is False]
    targets = sum(r.passed is not None for _, rows in results for r in rows)
    print(
        f"\n{targets - len(misses)} of {targets} targets met"
        + (f"; missed: {', '.join(f'{c}/{r.name}' for c, r in misses)}" if misses else "")
    )
    if not results and not skipped:
        print("no case ran", file=sys.stderr)
        return 2
    return 1 if misses and not args.no_check else 0


if __name__ == "__main__":
    sys.exit(main())
