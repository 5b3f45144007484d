"""The ``nnbackend`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from nnbackend.errors import NNBackendError
from nnbackend.info import info


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnbackend",
        description="Run one neural-network code base on NumPy, CuPy, PyTorch or any Array API "
        "library.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info_cmd = commands.add_parser(
        "info", help="settings and their sources, backends and why any is unusable, BLAS/CUDA"
    )
    info_cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nnbackend`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "info":
            report = info()
            print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else report)
    except NNBackendError as exc:
        print(f"nnbackend: error: {exc}", file=sys.stderr)
        return 2
    return 0
