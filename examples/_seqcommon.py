"""Shared bits of the sequence examples: command line, progress and plots."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def parser(doc: str, epochs: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--backend", help="numpy, torch, cupy, array_api_strict (default: active)")
    p.add_argument("--dtype", help="float64, float32 or float16 (default: active)")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--quick", action="store_true", help="a small generated corpus, small model")
    p.add_argument("--out", type=Path, default=Path("seq-output"))
    return p


class Progress:
    """One line per report: epoch, iteration, elapsed time and the latest numbers."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.start = time.perf_counter()

    def report(self, epoch: int, it: int, **values: float) -> None:
        elapsed = time.perf_counter() - self.start
        text = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
        print(f"epoch {epoch} | iter {it}/{self.total} | {elapsed:6.1f} s | {text}", flush=True)


def plot_curve(path: Path, ys: list[float], xlabel: str, ylabel: str) -> None:
    """A line plot written with matplotlib's Figure (no pyplot, no display needed)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        print(f"no plot: matplotlib is not installed ({exc}); pip install 'nnbackend[plot]'")
        return
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.plot(range(1, len(ys) + 1), ys, marker="o")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    print(f"plot: {path}")


def plot_matrix(
    path: Path, rows: list[list[float]], xlabels: list[str], ylabels: list[str]
) -> None:
    """A heat map (attention weights) with labelled axes."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        print(f"no plot: matplotlib is not installed ({exc}); pip install 'nnbackend[plot]'")
        return
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    ax.imshow(rows, cmap="gray", aspect="auto")
    ax.set_xticks(range(len(xlabels)), xlabels)
    ax.set_yticks(range(len(ylabels)), ylabels)
    ax.set_xlabel("input")
    ax.set_ylabel("output")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    print(f"plot: {path}")


def item(x: Any) -> float:
    return float(x.item())
