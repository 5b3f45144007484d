"""The ``nnbackend`` command line: ``nnbackend info``, ``nnbackend demo``,
``nnbackend launch -n N script.py`` and ``nnbackend --version``.

``nnbackend launch -n N [--engine mpi|torch] script.py [args...]`` starts ``N`` ranks of a
data-parallel script on this machine (``mpiexec -n N python script.py`` from the MPICH wheel
of ``nnbackend[mpi]``, or ``torchrun --nproc-per-node N script.py``); the first rank that
fails ends them all, and its exit code is the command's.

It never ends in a traceback for a user's mistake. Exit codes: 0 done; 2 a bad option or
setting (one line on stderr says what and how to fix it: an unknown backend, a non-finite
``--lr``, an ``--out`` folder that cannot be written or has a folder in the way of a plot,
checked before any training); 130 Ctrl-C (the first one stops training after the current
step and the demo still reports and plots; another one, while plotting, stops at once and
leaves no half-written plot: each PNG is written to a temporary file and renamed); 141 the
reader of the output went away (``nnbackend info | head -1``), quietly, as a program killed by
SIGPIPE.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from nnbackend.errors import ArgumentError, NNBackendError
from nnbackend.info import info


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (still exit code 2): what was wrong and the usage."""

    def error(self, message: str) -> NoReturn:
        usage = " ".join(self.format_usage().split())
        self.exit(2, f"nnbackend: error: {message} ({usage}; see '{self.prog} --help')\n")


def _integer_at_least(least: int, what: str) -> Callable[[str], int]:
    """An argparse type: the text as an int >= ``least`` (``what`` names it in the error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive_int = _integer_at_least(1, "a positive integer")
_seed = _integer_at_least(0, "a non-negative integer")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0.0):
        raise argparse.ArgumentTypeError(
            f"expected a positive number (finite, such as 0.1), got {value}"
        )
    return value


PLOT_NAMES = ("loss.png", "decision_boundary.png")


def _check_out(out: Path) -> None:
    """Create the ``--out`` folder and make sure the plots can be written there, before any
    training: a folder that cannot be written, or a folder in the way of a plot's name, is an
    error now rather than after the run."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NNBackendError(f"cannot create --out folder {str(out)!r}: {exc}") from None
    for name in PLOT_NAMES:
        target = out / name
        if target.is_dir() or (target.exists() and not target.is_file()):
            raise NNBackendError(
                f"cannot write {name} into --out folder {str(out)!r}: {str(target)!r} is a "
                "folder or another non-file in the way; remove it or choose another --out"
            )
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".nnbackend-write-check-"):
            pass
    except OSError as exc:
        raise NNBackendError(
            f"cannot write into --out folder {str(out)!r} ({exc.strerror or exc}); choose a "
            "folder you can write to"
        ) from None


def _write_atomically(path: Path, write: Any) -> Path:
    """``write(temporary path)``, then the temporary file renamed to ``path``: an error or a
    Ctrl-C while writing leaves no half-written plot (and removes the temporary file)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nnbackend",
        description="Run one neural-network code base on NumPy, CuPy, PyTorch or any Array API "
        "library.",
    )
    parser.add_argument(
        "--version", action="version", version=f"nnbackend {_version()}", help="print the version"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info_cmd = commands.add_parser(
        "info", help="settings and their sources, backends and why any is unusable, BLAS/CUDA"
    )
    info_cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    demo = commands.add_parser(
        "demo",
        help="train the book's spiral network and plot its loss and decision boundary",
        description="Train the 2-10-3 sigmoid network of 'Deep Learning from Scratch 2' "
        "(chapter 1) on the spiral data set with SGD, show progress, print the final loss, "
        "accuracy and time per step, and write loss.png and decision_boundary.png (the plots "
        "need matplotlib: pip install 'nnbackend[plot]').",
    )
    demo.add_argument(
        "--backend",
        metavar="B",
        help="backend to train on (default: the active one, e.g. NNBACKEND)",
    )
    demo.add_argument(
        "--dtype",
        metavar="D",
        help="float64, float32, float16, or mixed16 (float32 weights, float16 compute, loss "
        "scaling) (default: the active one)",
    )
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=300,
        metavar="N",
        help="passes over the data (default: 300)",
    )
    demo.add_argument(
        "--batch-size",
        type=_positive_int,
        default=30,
        metavar="N",
        help="points per step (default: 30)",
    )
    demo.add_argument(
        "--lr", type=_positive_float, default=1.0, help="SGD learning rate (default: 1.0)"
    )
    demo.add_argument(
        "--seed", type=_seed, default=0, help="seed of the weights and the shuffling (default: 0)"
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("nnbackend-demo"),
        metavar="DIR",
        help="folder for the plots, created if missing (default: nnbackend-demo)",
    )
    demo.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (it is also off when stderr is not a terminal)",
    )
    launch = commands.add_parser(
        "launch",
        help="run a data-parallel training script on N processes of this machine",
        description="Run SCRIPT on N ranks of this machine: with mpiexec (engine mpi, from "
        "pip install 'nnbackend[mpi]') or torchrun (engine torch, gloo on the CPU). The "
        "script calls nnbackend.distributed.init(). The first failing rank ends every rank.",
    )
    launch.add_argument("-n", "--nproc", type=_positive_int, required=True, metavar="N")
    launch.add_argument(
        "--engine", choices=("mpi", "torch"), default="mpi", help="default: mpi (mpiexec)"
    )
    launch.add_argument("script", help="the Python script to run")
    launch.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the script")
    return parser


def _launch_command(args: argparse.Namespace) -> list[str]:
    """The launcher's command line for ``nnbackend launch``."""
    if args.engine == "torch":
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise ArgumentError(
                "nnbackend launch --engine torch needs torch: pip install "
                "'nnbackend[distributed-torch]'"
            )
        return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                str(args.nproc), args.script, *args.args]  # fmt: skip
    import shutil

    mpiexec = shutil.which("mpiexec") or shutil.which(
        "mpiexec", path=str(Path(sys.executable).parent)
    )
    if mpiexec is None:
        raise ArgumentError(
            "nnbackend launch needs mpiexec, which was not found: pip install 'nnbackend[mpi]' "
            "(mpi4py and the MPICH wheel), or use --engine torch"
        )
    import importlib.util

    # Through mpi4py's runner where it is installed: an uncaught exception or sys.exit() on
    # one rank then aborts the job (SystemExit bypasses sys.excepthook, so the abort hook of
    # nnbackend.distributed never saw it, and the other ranks waited forever).
    runner = ["-m", "mpi4py"] if importlib.util.find_spec("mpi4py") is not None else []
    return [mpiexec, "-n", str(args.nproc), sys.executable, *runner, args.script, *args.args]


def _launch(args: argparse.Namespace) -> int:
    import subprocess

    if not Path(args.script).is_file():
        raise ArgumentError(f"nnbackend launch: no script at {args.script!r}")
    return subprocess.call(_launch_command(args))


def _version() -> str:
    from nnbackend._version import package_version

    return package_version()


def _demo(args: argparse.Namespace) -> int:
    from nnbackend import config, datasets, nn, optim, registry
    from nnbackend import random as nb_random
    from nnbackend.namespace import namespace
    from nnbackend.train import Trainer, plot_decision_boundary
    from nnbackend.train.plots import PLOT_HINT

    with config.using(backend=args.backend, dtype=args.dtype):
        namespace()  # an unknown or unusable backend, or a dtype it lacks, fails here
        # The policy's name, so mixed16 is labelled mixed16 (its weights are float32).
        backend, dtype = config.get_backend(), config.get_policy()
        out: Path = args.out
        _check_out(out)
        version = registry.get(backend).version()
        nb_random.seed(args.seed)
        x, t = datasets.spiral()
        model = nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))
        trainer = Trainer(
            model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=args.lr)
        )
        steps = args.epochs * -(-int(x.shape[0]) // args.batch_size)
        print(
            "nnbackend demo: the spiral (3 classes x 100 points), network 2-10-3 with "
            f"sigmoid, SGD lr={args.lr:g}, batch {args.batch_size}"
        )
        print(
            f"backend {backend}"
            + (f" {version}" if version else "")
            + f", dtype {dtype}: {args.epochs} epochs, {steps} steps",
            flush=True,
        )
        history = trainer.fit(
            x,
            t,
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=False if args.no_progress else "auto",
        )
        loss, accuracy = trainer.evaluate(x, t)
        if history.interrupted:
            print(f"interrupted after {history.steps} steps ({history.epochs} epochs)")
        print(f"final loss {loss:.4f}, accuracy {accuracy:.1%} on the training points")
        print(
            f"time per step {history.time_per_step * 1e6:.1f} us "
            f"({history.steps} steps in {history.wall_time:.2f} s)"
        )
        try:
            written = [
                _write_atomically(
                    out / "loss.png",
                    lambda path: history.plot(path, title=f"spiral, {backend} {dtype}"),
                ),
                _write_atomically(
                    out / "decision_boundary.png",
                    lambda path: plot_decision_boundary(
                        model, x, t, path, title=f"spiral, {backend} {dtype}: {accuracy:.1%}"
                    ),
                ),
            ]
        except ImportError:
            print(f"plots skipped: matplotlib is not installed ({PLOT_HINT})", file=sys.stderr)
        except OSError as exc:
            raise NNBackendError(f"cannot write the plots into {str(out)!r}: {exc}") from None
        else:
            for path in written:
                print(f"wrote {path}")
    return 130 if history.interrupted else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nnbackend`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "info":
            report = info()
            print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else report)
            if report.problems:  # the report is printed, and the exit code says it is not OK
                for problem in report.problems:
                    print(f"nnbackend: error: {problem}", file=sys.stderr)
                return 2
        elif args.command == "demo":
            return _demo(args)
        elif args.command == "launch":
            return _launch(args)
    except NNBackendError as exc:
        print(f"nnbackend: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader left (nnbackend info | head -1): no traceback, and no second
        # BrokenPipeError when Python flushes stdout at exit.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return 141
    except KeyboardInterrupt:
        # Ctrl-C outside training (the trainer handles its own): while loading a backend,
        # evaluating, or writing the plots (a second Ctrl-C after the first stopped training).
        print("nnbackend: interrupted", file=sys.stderr)
        return 130
    return 0


def _one_line(exc: Any) -> str:
    return " ".join(str(exc).split())
