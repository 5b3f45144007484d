"""Review of the metrics, the plots, the progress display and the learning-rate schedules:
defects found by attacking them as a user coming from NumPy, PyTorch or Keras would (metrics
against hand-written NumPy and PyTorch references, with NaN outputs, labels out of range and
odd shapes; schedules against ``torch.optim.lr_scheduler`` and with bad arguments, and resumed
from a state dict; plots interrupted mid-write and given odd file names and targets; the
progress display without a stream and with zero steps)."""

from __future__ import annotations

import io
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim
from nnbackend.errors import ArgumentError, CheckpointError, LabelError, ShapeError
from nnbackend.metrics import Mean, Perplexity, TopKAccuracy, get
from nnbackend.schedules import CosineAnnealing, ExponentialLR, ReduceLROnPlateau, StepLR
from nnbackend.train import History
from nnbackend.train.progress import NoProgress, TextProgress, make_progress

NAN = float("nan")


def _result(metric: Any, y: Any, t: Any) -> float:
    metric.update(y, t)
    return metric.result()


def _opt(lr: float = 1.0) -> optim.SGD:
    return optim.SGD(nn.Linear(2, 1).parameters(), lr=lr)


# -- metrics ---------------------------------------------------------------------------------
def test_top_k_counts_a_label_out_of_range_as_wrong(xp: Any) -> None:
    """A label outside [0, classes) scored 0 and counted as correct whenever no output was
    above 0 (outputs [[-1, -2, -3]] with label 7 gave top-1 accuracy 1.0)."""
    y = xp.asarray([[-1.0, -2.0, -3.0], [-1.0, -2.0, -3.0], [0.1, 0.5, 0.4]])
    t = xp.asarray([7, -1, 1])
    assert _result(TopKAccuracy(1), y, t) == pytest.approx(1 / 3)


def test_top_k_with_nan_outputs_counts_the_row_as_wrong(xp: Any) -> None:
    """NaN outputs were never above the label's score, so a diverged model's rows of NaN
    counted as correct (top-1 of [[0, nan, 1]] with label 2 was 1.0 where Accuracy said 0)."""
    y = xp.asarray([[0.0, NAN, 1.0], [NAN, NAN, NAN], [0.2, 0.7, 0.1]])
    t = xp.asarray([2, 0, 1])
    assert _result(TopKAccuracy(1), y, t) == pytest.approx(1 / 3)
    assert _result(TopKAccuracy(3), y, t) == pytest.approx(1 / 3)


def test_top_k_matches_a_numpy_reference_with_ties_to_the_label() -> None:
    """(A check that the fixes keep Keras's in_top_k rule: ties go to the label; rows with
    infinities are still ordered as in NumPy.)"""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, size=(200, 6)).astype(np.float64)  # many ties
    y[::7, 2] = -np.inf
    y[::11, 4] = np.inf
    t = rng.integers(0, 6, 200)
    xp = nb.namespace("numpy", "float64")
    for k in (1, 2, 5):
        score = y[np.arange(200), t][:, None]
        expected = np.mean((y > score).sum(axis=1) < k)
        got = _result(TopKAccuracy(k), xp.asarray(y), xp.asarray(t))
        assert got == pytest.approx(expected, abs=1e-15)


def test_perplexity_of_a_confident_wrong_model_is_inf_not_an_overflow_error(xp: Any) -> None:
    """A mean cross-entropy above ~709 made result() raise OverflowError from math.exp (at the
    end of an epoch in fit); PyTorch's exp gives inf."""
    y = xp.asarray([[800.0, 0.0], [900.0, 0.0]])
    assert _result(Perplexity(), y, xp.asarray([1, 1])) == math.inf


def test_perplexity_with_a_label_out_of_range_is_nan_not_a_made_up_value(xp: Any) -> None:
    """A label outside [0, classes) was scored as a logit of 0, so the perplexity was a
    plausible but made-up number (6.29 for labels shifted by 10); it is NaN now, as the loss
    gives on a device."""
    y = xp.asarray([[0.1, 0.5, 0.4], [0.8, 0.15, 0.05]])
    assert math.isnan(_result(Perplexity(), y, xp.asarray([1, 12])))
    assert math.isnan(_result(Perplexity(), y, xp.asarray([-1, 0])))


def test_perplexity_matches_torch_cross_entropy_over_unequal_batches() -> None:
    """(A check: the streamed perplexity equals exp of PyTorch's mean cross-entropy over all
    rows, float16 logits included.)"""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    y = rng.normal(size=(40, 5)) * 3
    t = rng.integers(0, 5, 40)
    reference = math.exp(torch.nn.functional.cross_entropy(torch.tensor(y), torch.tensor(t)))
    xp = nb.namespace("numpy", "float64")
    metric = Perplexity()
    for lo, hi in ((0, 1), (1, 1), (1, 17), (17, 40)):
        metric.update(xp.asarray(y[lo:hi]), xp.asarray(t[lo:hi]))
    assert metric.result() == pytest.approx(reference, rel=1e-12)
    half = Perplexity()
    half.update(xp.asarray(y.astype(np.float16)), xp.asarray(t))
    assert half.result() == pytest.approx(reference, rel=1e-2)


def test_perplexity_with_labels_of_another_length_raises_shape_error(xp: Any) -> None:
    """Labels of another length than the outputs' rows ended in a bare ValueError from
    broadcasting deep inside; a ShapeError now says what was expected."""
    y = xp.asarray([[0.1, 0.5, 0.4], [0.8, 0.15, 0.05], [0.2, 0.2, 0.6]])
    with pytest.raises(ShapeError, match=r"perplexity.*\(3,\)"):
        Perplexity().update(y, xp.asarray([1, 0]))
    assert _result(Perplexity(), y, xp.asarray([[1], [0], [2]])) > 1.0  # (N, 1) still fits


def test_mean_metric_whose_function_returns_an_array_raises_at_update(xp: Any) -> None:
    """A function returning a whole array (not the batch's mean) was accepted by update and
    made result() fail with a bare TypeError at the end of the epoch."""
    metric = Mean("raw", lambda y, t: y)
    with pytest.raises(ShapeError, match=r"raw.*0-d"):
        metric.update(xp.ones((3, 2)), xp.ones((3,)))
    ok = Mean("one", lambda y, t: xp.reshape(xp.mean(y), (1,)))
    assert _result(ok, xp.ones((3, 2)), xp.ones((3,))) == 1.0


@pytest.mark.parametrize("name", ["top²", "top٣", "top05"])
def test_get_top_k_by_name_takes_ascii_digits_and_keeps_the_name(name: str) -> None:
    """get("top²") raised a bare ValueError from int(); "top٣" (an Arabic-Indic three) gave
    a metric named "top3"; "top05" one named "top5", so history had no key of the name
    asked for."""
    if name.isascii():
        metric = get(name)
        assert metric.name == name and metric.k == 5
    else:
        with pytest.raises(ArgumentError, match="unknown metric"):
            get(name)


# -- schedules -------------------------------------------------------------------------------
@pytest.mark.parametrize("gamma", [True, "0.5", b"0.5"])
def test_schedule_factor_of_a_bool_or_string_is_refused(gamma: Any) -> None:
    """gamma=True was taken as 1.0 (a schedule that never decays) and the string "0.5" as a
    number; PyTorch fails on both."""
    with pytest.raises(ArgumentError, match="gamma"):
        StepLR(_opt(), 2, gamma)
    with pytest.raises(ArgumentError, match="gamma"):
        ExponentialLR(_opt(), gamma)
    with pytest.raises(ArgumentError, match="factor"):
        ReduceLROnPlateau(_opt(), factor=gamma)


@pytest.mark.parametrize("min_lr", [None, math.inf, math.nan, -1.0, True, "0.1"])
def test_bad_min_lr_raises_argument_error(min_lr: Any) -> None:
    """min_lr=inf made CosineAnnealing's rate NaN and ReduceLROnPlateau's rate inf after its
    first reduction; None raised a bare TypeError from float(); negative, NaN, True and
    strings were accepted by ReduceLROnPlateau."""
    with pytest.raises(ArgumentError, match="min_lr"):
        CosineAnnealing(_opt(), 10, min_lr=min_lr)
    with pytest.raises(ArgumentError, match="min_lr"):
        ReduceLROnPlateau(_opt(), min_lr=min_lr)


def test_reduce_on_plateau_never_raises_the_rate_to_min_lr() -> None:
    """With min_lr above the current rate, a plateau set the rate up to min_lr (0.01 became
    0.5); PyTorch only ever lowers it."""
    torch = pytest.importorskip("torch")
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    t_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(t_opt, patience=0, min_lr=0.5)
    opt = _opt(0.01)
    sched = ReduceLROnPlateau(opt, patience=0, min_lr=0.5)
    for value in (1.0, 1.0, 1.0):
        t_opt.step()
        t_sched.step(value)
        sched.step(value)
        assert opt.lr == t_opt.param_groups[0]["lr"] == 0.01


@pytest.mark.parametrize("value", ["abc", [1.0], (0.5,)])
def test_reduce_on_plateau_step_with_a_non_number_raises_argument_error(value: Any) -> None:
    """step("abc") raised a bare ValueError and step([1.0]) a bare TypeError from float()."""
    sched = ReduceLROnPlateau(_opt())
    with pytest.raises(ArgumentError, match=r"ReduceLROnPlateau\.step"):
        sched.step(value)
    assert sched.n == 0 and sched.wait == 0  # nothing was counted


def test_reduce_on_plateau_step_with_a_1d_array_raises_argument_error() -> None:
    """An array of several values (a per-sample loss) raised a bare TypeError from float()."""
    xp = nb.namespace("numpy", "float64")
    with pytest.raises(ArgumentError, match="one number"):
        ReduceLROnPlateau(_opt()).step(xp.asarray([0.5, 0.4]))
    assert ReduceLROnPlateau(_opt()).step(xp.asarray(0.5)) == 1.0  # a 0-d array is a number


@pytest.mark.parametrize(
    "make",
    [
        lambda o: StepLR(o, 3, 0.5),
        lambda o: ExponentialLR(o, 0.8),
        lambda o: CosineAnnealing(o, 10, warmup=3, min_lr=0.01),
        lambda o: CosineAnnealing(o, 100, per="step"),
    ],
    ids=["StepLR", "ExponentialLR", "CosineWarmup", "CosinePerStep"],
)
def test_schedule_resumes_from_its_state_dict(make: Any) -> None:
    """Schedules had no state_dict / load_state_dict (AttributeError), and a schedule made
    again after optimizer.load_state_dict took the decayed rate as its base rate, so a resumed
    run decayed twice (StepLR(3, 0.5) resumed at epoch 4 ran at 0.25 where it had 0.5)."""
    opt = _opt(0.8)
    sched = make(opt)
    for _ in range(4):
        sched.step()
    saved_sched, saved_opt = sched.state_dict(), opt.state_dict()
    later = [sched.step() for _ in range(8)]

    opt2 = _opt(0.8)
    opt2.load_state_dict(saved_opt)  # the decayed rate
    sched2 = make(opt2)
    sched2.load_state_dict(saved_sched)
    assert sched2.n == 4 and opt2.lr == saved_opt["hyperparameters"]["lr"]
    assert [sched2.step() for _ in range(8)] == later


def test_reduce_on_plateau_resumes_its_best_and_patience() -> None:
    """(With the fix above: the plateau's best value and wait count come back too, so the
    resumed run reduces the rate on the same epoch as an uninterrupted one.)"""
    values = [1.0, 0.9, 0.95, 0.95, 0.8, 0.85, 0.85, 0.85, 0.7]
    opt = _opt()
    sched = ReduceLROnPlateau(opt, factor=0.5, patience=1)
    for v in values[:3]:
        sched.step(v)
    saved, saved_lr = sched.state_dict(), opt.lr
    rest = [sched.step(v) for v in values[3:]]
    opt2 = _opt(saved_lr)
    sched2 = ReduceLROnPlateau(opt2, factor=0.5, patience=1)
    sched2.load_state_dict(saved)
    assert [sched2.step(v) for v in values[3:]] == rest


def test_schedule_load_state_dict_refuses_another_schedule_or_junk() -> None:
    """(With the fix above: a state dict of another schedule, or a malformed one, is refused
    with a CheckpointError (as an optimizer's) and leaves the schedule as it was.)"""
    sched = StepLR(_opt(), 3, 0.5)
    cosine = CosineAnnealing(_opt(), 10).state_dict()
    for bad in (cosine, {"type": "StepLR"}, {**sched.state_dict(), "n": -1}, "x", None):
        with pytest.raises(CheckpointError, match="state"):
            sched.load_state_dict(bad)
    assert sched.n == 0 and sched.optimizer.lr == 1.0


# -- progress --------------------------------------------------------------------------------
@pytest.mark.parametrize("progress", ["log", "text", True, "bar"])
def test_progress_without_stderr_writes_nothing_instead_of_crashing(
    progress: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With sys.stderr None (pythonw, some services) the log and text displays crashed the
    first report with AttributeError; print() writes nothing there, and so does fit now."""
    monkeypatch.setattr(sys, "stderr", None)
    bar = make_progress(progress, 3)
    bar.describe("epoch 1/1")
    bar.update()
    bar.report("loss=1.0")
    bar.close()
    assert type(bar) is NoProgress


def test_text_progress_of_zero_steps_shows_zero_steps() -> None:
    """A run of zero steps was drawn as "0/1"."""
    stream = io.StringIO()
    bar = TextProgress(0, stream)
    bar.describe("époch ✓")
    bar.close()
    assert " 0/0 " in stream.getvalue() and "époch ✓" in stream.getvalue()


# -- plots -----------------------------------------------------------------------------------
def _history() -> History:
    history = History(batch_size=4, steps_per_epoch=2)
    history.report_steps = [1, 2, 3, 4]
    history.loss = [1.0, 0.8, 0.7, 0.6]
    history.accuracy = [0.2, 0.4, 0.5, 0.6]
    history.val_loss = [0.9, 0.7]
    history.val_accuracy = [0.3, 0.5]
    return history


def test_interrupted_plot_leaves_the_previous_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C (or a full disk) during savefig left a truncated image where the good one
    was; the plot is written to a temporary file and renamed over it now."""
    figure = pytest.importorskip("matplotlib.figure")
    path = tmp_path / "loss.png"
    _history().plot(path)
    good = path.read_bytes()
    real = figure.Figure.savefig

    def interrupted(self: Any, fname: Any, **kwargs: Any) -> None:
        buffer = io.BytesIO()
        real(self, buffer, **kwargs)
        if hasattr(fname, "write"):
            fname.write(buffer.getvalue()[:100])
        else:
            Path(fname).write_bytes(buffer.getvalue()[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(figure.Figure, "savefig", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _history().plot(path, title="second")
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["loss.png"]  # no temporary file left


@pytest.mark.parametrize(
    ("suffix", "magic"), [(".pdf", b"%PDF"), (".svg", b"<?xml"), ("", b"\x89PNG")]
)
def test_plot_is_written_in_the_format_its_suffix_names(
    tmp_path: Path, suffix: str, magic: bytes
) -> None:
    """A path ending in .pdf or .svg got PNG bytes under that name (a file no viewer opens);
    the suffix chooses the format as in matplotlib's savefig, PNG without one."""
    pytest.importorskip("matplotlib")
    path = _history().plot(tmp_path / f"lr0.1 ünï{suffix}")
    assert path.read_bytes().startswith(magic)


class _Scatters:
    """Records what plot_decision_boundary scatters: {label: number of points}."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        axes = pytest.importorskip("matplotlib.axes")
        self.points: dict[str, int] = {}
        real = axes.Axes.scatter

        def scatter(ax: Any, x: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
            self.points[kwargs.get("label", "")] = len(x)
            return real(ax, x, y, *args, **kwargs)

        monkeypatch.setattr(axes.Axes, "scatter", scatter)


def _points() -> tuple[Any, Any]:
    xp = nb.namespace("numpy", "float64")
    rng = np.random.default_rng(0)
    return xp.asarray(rng.normal(size=(20, 2))), xp.asarray(np.arange(20) % 2)


def test_decision_boundary_of_n_by_1_binary_targets_keeps_both_classes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Targets of shape (N, 1) (a sigmoid classifier's) went through argmax, which is 0 for
    every row: every point was drawn as class 0."""
    from nnbackend.train.plots import plot_decision_boundary

    scatters = _Scatters(monkeypatch)
    x, t = _points()
    xp = nb.namespace("numpy", "float64")
    t = xp.reshape(xp.astype(t, xp.float64), (-1, 1))
    plot_decision_boundary(nn.Linear(2, 1), x, t, tmp_path / "b.png", resolution=10)
    assert scatters.points == {"class 0": 10, "class 1": 10}


@pytest.mark.parametrize("shift", [-1, 0.5])
def test_decision_boundary_refuses_labels_it_cannot_draw(tmp_path: Path, shift: float) -> None:
    """Negative or fractional labels were silently left out of the scatter."""
    pytest.importorskip("matplotlib")
    from nnbackend.train.plots import plot_decision_boundary

    x, t = _points()
    with pytest.raises(LabelError, match="labels"):
        plot_decision_boundary(nn.Linear(2, 2), x, t + shift, tmp_path / "b.png", resolution=10)
    assert not (tmp_path / "b.png").exists()


@pytest.mark.parametrize("resolution", [0, 1, -5, True, 2.5, "10"])
def test_decision_boundary_bad_resolution_raises_argument_error(
    tmp_path: Path, resolution: Any
) -> None:
    """resolution 0 gave "predict: no inputs", 1 and True a TypeError from matplotlib's
    contourf, -5 a bare ValueError, 2.5 and "10" bare TypeErrors."""
    pytest.importorskip("matplotlib")
    from nnbackend.train.plots import plot_decision_boundary

    x, t = _points()
    with pytest.raises(ArgumentError, match="resolution"):
        plot_decision_boundary(nn.Linear(2, 2), x, t, tmp_path / "b.png", resolution=resolution)


def test_decision_boundary_bad_points_raise_typed_errors(tmp_path: Path) -> None:
    """No points raised a bare ValueError from min(); labels of another length an IndexError;
    a NaN point matplotlib's ValueError; a list an AttributeError."""
    pytest.importorskip("matplotlib")
    from nnbackend.train.plots import plot_decision_boundary

    x, t = _points()
    model, path = nn.Linear(2, 2), tmp_path / "b.png"
    xp = nb.namespace("numpy", "float64")
    with pytest.raises(ShapeError, match="no points"):
        plot_decision_boundary(model, x[:0], t[:0], path, resolution=10)
    with pytest.raises(ShapeError, match=r"20 points.*5 labels"):
        plot_decision_boundary(model, x, t[:5], path, resolution=10)
    with pytest.raises(ArgumentError, match="finite"):
        plot_decision_boundary(model, xp.where(x > 1.0, NAN, x), t, path, resolution=10)
    with pytest.raises(ArgumentError, match="array"):
        plot_decision_boundary(model, [[0.0, 1.0]], [0], path, resolution=10)
    assert not path.exists()


def test_text_perplexity_of_a_huge_loss_is_inf() -> None:
    """nb.text.perplexity(800.0) raised OverflowError from math.exp (as the metric did)."""
    assert nb.text.perplexity(800.0) == math.inf
    assert nb.text.perplexity(0.0) == 1.0


def test_a_plot_that_cannot_be_written_is_named_a_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """atomic_write's errors said 'cannot save the checkpoint' for a plot."""
    from nnbackend.io import _files

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_files.os, "open", refuse)
    with pytest.raises(PermissionError, match="cannot save the plot"):
        _files.atomic_write(tmp_path / "loss.png", lambda f: f.write(b"x"), "plot")
    with pytest.raises(PermissionError, match="cannot save the checkpoint"):
        _files.atomic_write(tmp_path / "m.safetensors", lambda f: f.write(b"x"))
