"""Plots of training: the loss and accuracy curves of a :class:`~nnbackend.train.History`
(drawn by :meth:`History.plot <nnbackend.train.History.plot>`) and the decision boundary of a
2-D classifier (:func:`plot_decision_boundary`).

Every plot needs matplotlib (``pip install 'nnbackend[plot]'``) and uses its object API only,
so the user's pyplot state and GUI backend are left alone. Arrays reach the host through
:func:`nnbackend.to_device` (a ``"numpy"`` target gives a NumPy array, which matplotlib reads);
this module imports no array library itself. In data-parallel training only rank 0 writes
files.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nnbackend.device import to_device
from nnbackend.errors import ArgumentError, LabelError, ShapeError
from nnbackend.namespace import array_namespace
from nnbackend.train._arrays import data, predict

if TYPE_CHECKING:
    from nnbackend.train.history import History

__all__ = ["PLOT_HINT", "plot_decision_boundary"]

PLOT_HINT = "pip install 'nnbackend[plot]'"
"""How to install what the plots need."""


def _writes_files() -> bool:
    """False on the ranks other than 0 of a data-parallel job: they leave files alone."""
    from nnbackend.distributed import is_main

    return is_main()


def _require_matplotlib(what: str) -> Any:
    """``matplotlib.figure.Figure``, or an ImportError that says how to install it."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"{what} needs matplotlib, which is not installed: {PLOT_HINT}") from exc
    return Figure


def _on_host(x: Any) -> Any:
    """``x`` (an array of any backend, or a Tensor) as a NumPy array."""
    return to_device(data(x), "numpy")


def _save(fig: Any, path: Path) -> Path:
    """Write ``fig`` to ``path`` in the format its suffix names (``.pdf``, ``.svg``, ...; PNG
    where it names none matplotlib knows, as ``lr0.1``), atomically: to a temporary file in
    the same folder, renamed over ``path`` only once complete, so a Ctrl-C or a full disk
    mid-write leaves the previous file whole."""
    from nnbackend.io import atomic_write  # (internal API shared with the checkpoints)

    kinds = fig.canvas.get_supported_filetypes()
    kind = path.suffix[1:].lower()
    kind = kind if kind in kinds else "png"
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(
            errno.ENOENT,
            f"cannot write the plot {os.fspath(path)!r}: the folder {os.fspath(folder)!r} "
            "does not exist",
            os.fspath(path),
        )
    atomic_write(path, lambda f: fig.savefig(f, format=kind, dpi=100), "plot")
    return path


def plot_history(history: History, path: str | Path, *, title: str | None = None) -> Path:
    """The body of :meth:`History.plot <nnbackend.train.History.plot>`."""
    Figure = _require_matplotlib("History.plot()")
    path = Path(path)
    if not _writes_files():
        return path
    has_acc = any(a is not None for a in history.accuracy + history.val_accuracy)
    fig = Figure(figsize=(10 if has_acc else 6, 4), layout="constrained")
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
    epoch_steps = [history.steps_per_epoch * (i + 1) for i in range(len(history.val_loss))]
    ax = axes[0]
    ax.plot(history.report_steps, history.loss, label="train")
    if history.val_loss:
        ax.plot(epoch_steps, history.val_loss, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("loss")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if has_acc:
        ax = axes[1]
        steps = [
            s for s, a in zip(history.report_steps, history.accuracy, strict=True) if a is not None
        ]
        ax.plot(steps, [a for a in history.accuracy if a is not None], label="train")
        if any(a is not None for a in history.val_accuracy):
            ax.plot(
                [
                    s
                    for s, a in zip(epoch_steps, history.val_accuracy, strict=True)
                    if a is not None
                ],
                [a for a in history.val_accuracy if a is not None],
                label="validation",
            )
        ax.set_xlabel("step")
        ax.set_ylabel("accuracy")
        ax.set_title("accuracy")
        ax.set_ylim(-0.02, 1.02)  # a curve at exactly 0 or 1 stays visible
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_decision_boundary(
    model: Any, x: Any, t: Any, path: str | Path, *, resolution: int = 200, title: str | None = None
) -> Path:
    """Colour the plane by the class ``model`` predicts and scatter the points ``(x, t)`` on
    top: the book's spiral figure. ``x`` has two features; ``t`` holds integer labels.

    Needs matplotlib (``pip install 'nnbackend[plot]'``). Returns the path written. In
    data-parallel training only rank 0 writes the file.
    """
    from nnbackend.datasets import to_backend

    Figure = _require_matplotlib("plot_decision_boundary()")
    if not _writes_files():
        return Path(path)
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ArgumentError(
            f"plot_decision_boundary: resolution must be an int >= 2 (grid points per axis), "
            f"got {resolution!r}"
        )
    x, t = data(x), data(t)
    for name, value in (("x", x), ("t", t)):
        if not hasattr(value, "ndim"):
            raise ArgumentError(
                f"plot_decision_boundary: {name} must be an array of a backend "
                f"(nnbackend.to_backend(...) converts lists), got {type(value).__name__}"
            )
    if x.ndim != 2 or x.shape[1] != 2:
        raise ShapeError(f"plot_decision_boundary needs 2-D points, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ShapeError("plot_decision_boundary: no points (x has 0 rows)")
    hx = _on_host(x)
    hp = array_namespace(hx)  # NumPy's namespace: the grid is built on the host in float64
    hx = hp.astype(hx, hp.float64)
    if not bool(hp.all(hp.isfinite(hx))):
        raise ArgumentError("plot_decision_boundary: the points must be finite (x has NaN or inf)")
    ht = _labels_on_host(hp, _on_host(t), int(hx.shape[0]))
    lo, hi = hx.min(axis=0) - 0.1, hx.max(axis=0) + 0.1
    gx, gy = hp.meshgrid(
        hp.linspace(lo[0], hi[0], resolution, dtype=hp.float64),
        hp.linspace(lo[1], hi[1], resolution, dtype=hp.float64),
    )
    grid = hp.stack([hp.reshape(gx, (-1,)), hp.reshape(gy, (-1,))], axis=1)
    grid_b = to_backend(grid, like=x)  # x's backend, device and dtype
    previous = getattr(model, "training", None)
    if previous is not None:
        model.eval()
    try:
        scores = predict(model, grid_b, 8192)
    finally:
        if previous is not None:
            model.train(previous)
    hs = hp.astype(_on_host(scores), hp.float64)
    zone = hs.argmax(axis=1) if hs.ndim == 2 and hs.shape[1] > 1 else (hs.reshape(-1) > 0)
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.subplots()
    n_classes = int(max(ht.max(initial=0), zone.max(initial=0))) + 1
    ax.contourf(
        gx,
        gy,
        zone.reshape(gx.shape),
        levels=[c - 0.5 for c in range(n_classes + 1)],
        cmap="Pastel1" if n_classes <= 9 else "tab20",
        alpha=0.8,
    )
    markers = "o^sDvP<>p*"
    for c in range(n_classes):
        pts = hx[ht == c]
        ax.scatter(
            pts[:, 0],
            pts[:, 1],
            s=18,
            marker=markers[c % len(markers)],
            label=f"class {c}",
            edgecolors="k",
            linewidths=0.3,
        )
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize="small")
    ax.set_title(title or "decision boundary")
    return _save(fig, Path(path))


def _labels_on_host(hp: Any, ht: Any, n: int) -> Any:
    """The class of each of the ``n`` points from targets ``ht`` (on the host): integer labels
    (N,), the same as floats (0.0, 1.0), a column of them (N, 1) (a sigmoid classifier's),
    or one-hot rows (N, C). Anything else is an error: a negative or fractional label was
    left out of the picture, and (N, 1) targets went through argmax, all class 0."""
    if ht.ndim == 2:
        ht = hp.reshape(ht, (-1,)) if ht.shape[1] == 1 else hp.argmax(ht, axis=1)
    if ht.ndim != 1 or ht.shape[0] != n:
        raise ShapeError(
            f"plot_decision_boundary: {n} points but {ht.shape[0] if ht.ndim else 1} labels "
            f"(targets of shape {tuple(ht.shape)}); pass one label per point"
        )
    if hp.isdtype(ht.dtype, "bool"):
        ht = hp.astype(ht, hp.int64)
    if not hp.isdtype(ht.dtype, "integral"):
        if not bool(hp.all(hp.isfinite(ht) & (ht == hp.round(ht)))):
            raise LabelError(
                "plot_decision_boundary: the labels must be whole class numbers (integer "
                "labels, or one-hot rows); got fractional or non-finite ones"
            )
        ht = hp.astype(ht, hp.int64)
    if bool(hp.any(ht < 0)):
        raise LabelError(f"plot_decision_boundary: the labels must be >= 0, got {int(hp.min(ht))}")
    return ht
