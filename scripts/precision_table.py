"""The speed-and-accuracy table of docs/precision.md, per precision policy, on one backend.

    python scripts/precision_table.py                   # numpy (the active backend)
    python scripts/precision_table.py --backend cupy    # on a GPU
    python scripts/precision_table.py --repeats 1 --policies float32 mixed16

Two networks, each trained from the same seed under each policy:

* the book's spiral network (2-10-3 sigmoid, SGD lr 1.0, batch 30, 300 epochs), accuracy on
  the training points, as in the book;
* scikit-learn's digits (64-100-10 ReLU, SGD lr 0.5, batch 32, 50 epochs), accuracy on the
  held-out quarter (needs scikit-learn).

Each row is the best time per step of ``--repeats`` runs (the machine is shared), printed as a
Markdown table row. For float32 it also saves the model in float32 and float16 and reports the
file sizes and the accuracy after loading each (``--no-checkpoints`` skips that).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import nnbackend as nb
from nnbackend import nn, optim

POLICIES = ("float64", "float32", "float16", "mixed16")


def spiral(policy: str) -> tuple[float, float, Any, Any, tuple[Any, Any]]:
    with nb.using(dtype=policy):
        nb.random.seed(0)
        x, t = nb.datasets.spiral()
        model = nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))
        trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=1.0))
        history = trainer.fit(x, t, epochs=300, batch_size=30, seed=0, progress=False)
        return history.time_per_step, trainer.evaluate(x, t)[1], model, trainer, (x, t)


def digits(policy: str) -> tuple[float, float, Any, Any, tuple[Any, Any]]:
    with nb.using(dtype=policy):
        nb.random.seed(0)
        (x, t), (x_test, t_test) = nb.datasets.digits()
        model = nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))
        trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.5))
        history = trainer.fit(x, t, epochs=50, batch_size=32, seed=0, progress=False)
        accuracy = trainer.evaluate(x_test, t_test)[1]
        return history.time_per_step, accuracy, model, trainer, (x_test, t_test)


RUNS: dict[str, Callable[[str], tuple[float, float, Any, Any, tuple[Any, Any]]]] = {
    "spiral": spiral,
    "digits": digits,
}


def checkpoint_rows(name: str, model: Any, trainer: Any, test: tuple[Any, Any]) -> list[str]:
    """File size and accuracy after loading, for the model saved in float32 and in float16."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for store in (None, "float16"):
            path = os.path.join(tmp, "model.npz")
            nb.save(model, path, dtype=store)
            with nb.using(dtype="float32"):
                nb.load(model, path)
                accuracy = trainer.evaluate(*test)[1]
            rows.append(
                f"| {name} | saved as {store or 'float32'} | {os.path.getsize(path)} bytes | "
                f"{accuracy:.1%} after loading |"
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/precision_table.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backend", help="backend to train on (default: the active one)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row; the best counts")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--data", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--no-checkpoints", action="store_true", help="skip the file sizes")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    backend = args.backend or nb.get_backend()
    print(f"backend {backend}; best of {args.repeats} run(s) per row\n")
    print("| data | policy | time per step | accuracy |")
    print("|---|---|---|---|")
    checkpoints: list[str] = []
    with nb.using(backend=backend):
        for name in args.data:
            for policy in args.policies:
                try:
                    results = [RUNS[name](policy) for _ in range(args.repeats)]
                except ImportError as exc:  # digits without scikit-learn
                    print(f"| {name} | {policy} | skipped: {exc} | |")
                    break
                step = min(r[0] for r in results)
                _, accuracy, model, trainer, test = results[-1]
                print(f"| {name} | {policy} | {step * 1e6:.0f} µs | {accuracy:.1%} |", flush=True)
                if policy == "float32" and not args.no_checkpoints:
                    checkpoints += checkpoint_rows(name, model, trainer, test)
    if checkpoints:
        print("\n| data | checkpoint | size | accuracy |\n|---|---|---|---|")
        print("\n".join(checkpoints))
    return 0


if __name__ == "__main__":
    sys.exit(main())
