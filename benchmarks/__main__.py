"""``python -m benchmarks [--case NAME ...] [--quick] [--gpu [--dry-run]] [--report] [--list]``

Runs the registered cases, prints one table, writes ``benchmarks/results/<case>.json`` and
exits 1 when a row misses its target (``--no-check`` reports misses but exits 0). A full run
(no ``--case``, not ``--quick``) also rewrites ``docs/performance.md`` and its plot from the
saved results; ``--report`` alone only rewrites them. Cases marked GPU run with ``--gpu`` only
and are listed as skipped otherwise. Unset ``OPENBLAS_CORETYPE`` on the command line of the
run, not in code::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence

from benchmarks import NoDevice, Options, Row, Skip, load_cases, machine_facts, write_result


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
        "--quick",
        action="store_true",
        help="few, short rounds: a smoke run, not numbers to report (never saved)",
    )
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="run the cases that need a CUDA GPU (and only those, unless --case names others)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="with --gpu: run the GPU cases' code on the CPU (numpy for cupy, torch CPU for "
        "CUDA, small sizes); checks the plumbing, saves nothing",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="rewrite docs/performance.md and its plot from benchmarks/results/*.json; alone, "
        "without running anything",
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
    if math.isnan(value):
        return "n/a"
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


def _write_report() -> None:
    from benchmarks import _report

    for path in _report.write_report():
        print(f"report: {path}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.dry_run and not args.gpu:
        print("--dry-run applies to the GPU cases: add --gpu", file=sys.stderr)
        return 2
    if args.report and not (args.case or args.gpu or args.quick):
        _write_report()
        return 0
    cases = load_cases()
    if args.list:
        for case in cases.values():
            print(f"{case.name:<28} {'[gpu] ' if case.gpu else ''}{case.description}")
        return 0
    not_run: list[tuple[str, str]] = []
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
        if not args.gpu:
            not_run = [
                (case.name, "a GPU case: run `python -m benchmarks --gpu` on a CUDA machine")
                for case in cases.values()
                if case.gpu
            ]
    opts = Options.make(args.quick, dry_run=args.dry_run)
    # --quick numbers are not for reporting: they never replace saved results.
    save = not (args.no_save or args.dry_run or args.quick)

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
    load = facts["load_average"] or ()
    print(f"load average: {', '.join(f'{x:.2f}' for x in load)}")
    cpus = facts["usable_cpus"] or facts["logical_cpus"] or 1
    if load and load[0] > cpus / 2:
        print(
            f"warning: the machine is busy (load {load[0]:.1f} on {cpus} CPUs); ratios hold up "
            "better than times, but GEMM-bound steps slow unevenly under contention"
        )
    if args.dry_run:
        print("--dry-run: the GPU cases on the CPU with numpy and torch; nothing is saved")
    elif opts.quick:
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
            # A GPU case without a GPU leaves the last GPU run's results in place.
            if save and not isinstance(exc, NoDevice):
                write_result(case, [], opts, time.perf_counter() - start, skipped=str(exc))
            continue
        elapsed = time.perf_counter() - start
        results.append((case.name, rows))
        if save:
            path = write_result(case, rows, opts, elapsed)
            print(f"  {len(rows)} rows in {elapsed:.1f} s -> {path}")
        else:
            print(f"  {len(rows)} rows in {elapsed:.1f} s")
    print()
    if results:
        print(_table(results))
    for name, reason in [*skipped, *not_run]:
        print(f"skipped {name}: {reason}")
    end_load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in end_load)}")
    if save and (args.report or not (args.case or args.quick)):
        _write_report()
    if args.dry_run:
        print("dry run: targets are not checked")
        return 0 if results or skipped else 2
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
