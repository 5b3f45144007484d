"""``nnbackend.Trainer`` and ``History``: accuracy on real problems, device-side bookkeeping,
progress output, callbacks, Ctrl-C, plots."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import datasets, nn, optim, registry, train
from nnbackend.errors import ShapeError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, nb.Tensor) else a
    return np.asarray(registry.get(registry.backend_of(a)).to_host(a))


def _spiral_setup(lr: float = 1.0, seed: int = 0) -> tuple[Any, Any, nn.Module, nb.Trainer]:
    """The book's chapter-1 network on the spiral, on the active backend and dtype."""
    nb.random.seed(seed)
    x, t = datasets.spiral()
    model = nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))
    trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=lr))
    return x, t, model, trainer


def _weights(model: nn.Module) -> dict[str, np.ndarray]:
    return {name: _host(p.data).copy() for name, p in model.named_parameters()}


def _need(backend: str) -> None:
    """Skip unless ``backend`` can run here and ``NNBACKEND_TEST_BACKENDS`` (when set) names
    it, as the ``backend`` fixture does (the mutation runner sets it to keep torch out of
    mutmut's forked children, where torch arithmetic can deadlock)."""
    selected = os.environ.get("NNBACKEND_TEST_BACKENDS", "").strip()
    if selected and backend not in {name.strip() for name in selected.split(",")}:
        pytest.skip(f"backend {backend!r} is not in NNBACKEND_TEST_BACKENDS={selected}")
    reason = registry.probe(backend)
    if reason is not None:
        pytest.skip(f"backend {backend!r} is unavailable: {reason}")


# -- accuracy on real problems ---------------------------------------------------------------
def test_spiral_book_network_reaches_95_percent_float32() -> None:
    with nb.using(backend="numpy", dtype="float32"):
        x, t, model, trainer = _spiral_setup()
        history = trainer.fit(x, t, epochs=300, batch_size=30, seed=0, progress=False)
        loss, accuracy = trainer.evaluate(x, t)
    assert model[0].weight.dtype == np.float32
    assert accuracy >= 0.95, accuracy
    assert history.epochs == 300 and history.steps == 3000 and not history.interrupted
    assert len(history.loss) == 300 and history.loss[-1] < 0.3 < history.loss[0]
    assert all(type(v) is float for v in history.loss)
    assert history.epoch_accuracy[-1] is not None and history.epoch_accuracy[-1] > 0.9
    assert math.isclose(loss, trainer.evaluate(x, t, batch_size=7)[0], rel_tol=1e-5)


@pytest.mark.slow
def test_digits_reaches_95_percent_test_accuracy_float32() -> None:
    pytest.importorskip("sklearn", reason="digits() needs scikit-learn")
    with nb.using(backend="numpy", dtype="float32"):
        nb.random.seed(0)
        (x_train, t_train), (x_test, t_test) = datasets.digits()
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        trainer = nb.Trainer(
            model, nn.SoftmaxCrossEntropy(), optim.Adam(model.parameters(), lr=0.01)
        )
        history = trainer.fit(
            x_train,
            t_train,
            epochs=20,
            batch_size=32,
            seed=0,
            validation=(x_test, t_test),
            progress=False,
        )
        loss, accuracy = trainer.evaluate(x_test, t_test)
    assert accuracy >= 0.95, accuracy
    assert history.val_accuracy[-1] == accuracy and history.val_loss[-1] == loss
    assert len(history.val_loss) == 20
    assert model[0].weight.dtype == np.float32


@pytest.mark.parametrize("backend", ["array_api_strict", "torch"])
def test_smoke_on_other_backends_matches_numpy(backend: str) -> None:
    """A few epochs on strict and torch: same data, seed and model give numpy's losses."""
    _need(backend)
    results = {}
    for name in ("numpy", backend):
        with nb.using(backend=name, dtype="float32"):
            x, t, model, trainer = _spiral_setup()
            history = trainer.fit(
                x, t, epochs=2, batch_size=30, seed=0, progress=False, validation=(x, t)
            )
            assert registry.backend_of(model[0].weight.data) == name
            assert "float32" in str(model[0].weight.dtype)
            predicted = trainer.predict(x)
            assert registry.backend_of(predicted) == name and tuple(predicted.shape) == (300, 3)
            results[name] = (history, _weights(model))
    (h_np, w_np), (h_other, w_other) = results["numpy"], results[backend]
    assert h_other.steps == 20 and len(h_other.loss) == 2
    np.testing.assert_allclose(h_other.loss, h_np.loss, rtol=1e-4)
    np.testing.assert_allclose(h_other.val_loss, h_np.val_loss, rtol=1e-4)
    assert h_other.accuracy == pytest.approx(h_np.accuracy, abs=1 / 300 + 1e-9)
    for name in w_np:
        np.testing.assert_allclose(w_other[name], w_np[name], rtol=1e-4, atol=1e-5)


def test_float16_training_keeps_dtype() -> None:
    with nb.using(backend="numpy", dtype="float16"):
        x, t, model, trainer = _spiral_setup()
        history = trainer.fit(x, t, epochs=5, batch_size=30, seed=0, progress=False)
    assert all(p.dtype == np.float16 for p in model.parameters())
    assert all(math.isfinite(v) for v in history.loss)


def test_same_seed_same_history() -> None:
    runs = []
    for _ in range(2):
        x, t, model, trainer = _spiral_setup()
        runs.append(
            (
                trainer.fit(x, t, epochs=4, batch_size=30, seed=5, progress=False).loss,
                _weights(model),
            )
        )
    assert runs[0][0] == runs[1][0]
    x, t, model, trainer = _spiral_setup()
    other = trainer.fit(x, t, epochs=4, batch_size=30, seed=6, progress=False).loss
    assert other != runs[0][0]


def test_no_shuffle_uses_data_order() -> None:
    x, t, model, trainer = _spiral_setup()
    start = _weights(model)
    trainer.fit(x, t, epochs=1, batch_size=300, shuffle=False, progress=False)
    # One full batch: shuffling would not matter either, so compare with a hand-made step.
    x2, t2, model2, _ = _spiral_setup()
    assert all(np.array_equal(start[k], v) for k, v in _weights(model2).items())
    opt = optim.SGD(model2.parameters(), lr=1.0)
    nn.SoftmaxCrossEntropy()(model2(x2), t2).backward()
    opt.step()
    for name, value in _weights(model2).items():
        np.testing.assert_allclose(_weights(model)[name], value, rtol=1e-12)


# -- device-side bookkeeping ---------------------------------------------------------------
def test_loss_read_back_only_at_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = []
    original = train.metrics.MetricSums.read

    def counting_read(self: Any) -> Any:
        reads.append(1)
        return original(self)

    monkeypatch.setattr(train.metrics.MetricSums, "read", counting_read)
    x, t, _, trainer = _spiral_setup()
    history = trainer.fit(x, t, epochs=4, batch_size=30, seed=0, progress=False)
    assert len(reads) == 4 == len(history.loss)  # one read per epoch, none per step
    reads.clear()
    history = trainer.fit(x, t, epochs=4, batch_size=30, seed=0, progress=False, eval_interval=15)
    # 40 steps: reports at 15 and 30, the rest (10 steps) at the end; plus 4 epoch summaries.
    assert history.report_steps == [15, 30, 40]
    assert len(reads) == 3 + 4


def test_eval_interval_losses_average_the_steps() -> None:
    x, t, _, trainer = _spiral_setup()
    losses: list[float] = []
    original = trainer.loss_fn

    def loss_fn(y: Any, t: Any) -> Any:
        loss = original(y, t)
        losses.append(float(loss.item()))
        return loss

    trainer.loss_fn = loss_fn
    history = trainer.fit(x, t, epochs=2, batch_size=30, seed=0, eval_interval=5, progress=False)
    assert history.report_steps == [5, 10, 15, 20]
    for i, value in enumerate(history.loss):
        assert value == pytest.approx(sum(losses[5 * i : 5 * i + 5]) / 5, rel=1e-12)
    assert history.epoch_loss[0] == pytest.approx(sum(losses[:10]) / 10, rel=1e-12)


def test_uneven_last_batch_weighs_by_samples() -> None:
    x, t, _, trainer = _spiral_setup()
    sizes: list[int] = []
    original = trainer.loss_fn

    def loss_fn(y: Any, t: Any) -> Any:
        sizes.append(int(t.shape[0]))
        return original(y, t)

    trainer.loss_fn = loss_fn
    history = trainer.fit(x, t, epochs=1, batch_size=128, seed=0, progress=False)
    assert sizes == [128, 128, 44] and history.steps_per_epoch == 3


def test_max_grad_clips_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = optim.clip_grad_norm

    def spy(params: Any, max_norm: float) -> Any:
        calls.append(max_norm)
        return original(params, max_norm)

    monkeypatch.setattr(optim, "clip_grad_norm", spy)
    x, t, _, trainer = _spiral_setup()
    trainer.fit(x, t, epochs=2, batch_size=30, seed=0, progress=False, max_grad=0.5)
    assert calls == [0.5] * 20


# -- history --------------------------------------------------------------------------------
def test_history_to_dict_is_json(tmp_path: Path) -> None:
    x, t, _, trainer = _spiral_setup()
    history = trainer.fit(x, t, epochs=3, batch_size=30, seed=0, progress=False, validation=(x, t))
    data = json.loads(json.dumps(history.to_dict()))
    assert data["epochs"] == 3 and data["steps"] == 30 and data["interrupted"] is False
    assert len(data["val_loss"]) == len(data["val_accuracy"]) == len(data["epoch_time"]) == 3
    assert data["wall_time"] > 0 and data["time_per_step"] == pytest.approx(history.wall_time / 30)
    assert data["epoch_time"] == sorted(data["epoch_time"])


def test_history_plot_writes_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="History.plot needs matplotlib")
    x, t, _, trainer = _spiral_setup()
    history = trainer.fit(
        x, t, epochs=3, batch_size=30, seed=0, progress=False, validation=(x, t), eval_interval=4
    )
    path = history.plot(tmp_path / "loss.png", title="test")
    assert path.read_bytes()[:8] == PNG_MAGIC
    no_acc = nb.History(loss=[1.0, 0.5], accuracy=[None, None], report_steps=[1, 2])
    assert no_acc.plot(tmp_path / "mse.png").read_bytes()[:8] == PNG_MAGIC


def test_plots_without_matplotlib_say_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'nnbackend\[plot\]'"):
        nb.History(loss=[1.0], accuracy=[None], report_steps=[1]).plot(tmp_path / "x.png")
    x, t, model, _ = _spiral_setup()
    with pytest.raises(ImportError, match=r"pip install 'nnbackend\[plot\]'"):
        train.plot_decision_boundary(model, x, t, tmp_path / "b.png")
    assert not list(tmp_path.iterdir())


def test_decision_boundary_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="plots need matplotlib")
    x, t, model, _ = _spiral_setup()
    model.train()
    path = train.plot_decision_boundary(model, x, t, tmp_path / "b.png", resolution=30)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert model.training  # mode restored
    with pytest.raises(ShapeError, match="2-D points"):
        train.plot_decision_boundary(model, nb.namespace().ones((3, 4)), t, tmp_path / "c.png")


# -- Ctrl-C, callbacks, stopping --------------------------------------------------------------
class _RaiseAt(train.Callback):
    def __init__(self, step: int, exc: type[BaseException] = KeyboardInterrupt) -> None:
        self.step, self.exc = step, exc

    def on_step_end(self, trainer: nb.Trainer, history: nb.History) -> None:
        if trainer.step == self.step:
            raise self.exc()


class _StopAt(train.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: nb.Trainer, history: nb.History) -> None:
        if trainer.step == self.step:
            trainer.stop_training = True


def test_keyboard_interrupt_returns_history_and_intact_model() -> None:
    x, t, model, trainer = _spiral_setup()
    model.eval()
    ended = []

    class End(train.Callback):
        def on_fit_end(self, trainer: nb.Trainer, history: nb.History) -> None:
            ended.append(history.interrupted)

    history = trainer.fit(
        x, t, epochs=10, batch_size=30, seed=0, progress=False, callbacks=[_RaiseAt(25), End()]
    )
    assert history.interrupted and not history.stopped_early
    assert history.steps == 25 and history.epochs == 2
    assert len(history.epoch_loss) == 2
    assert history.report_steps == [10, 20, 25]  # the partial epoch is reported too
    assert ended == [True]
    assert not model.training  # the mode it had before fit
    # Intact: exactly the weights of a run stopped cleanly after the same 25 steps.
    x2, t2, model2, trainer2 = _spiral_setup()
    stopped = trainer2.fit(
        x2, t2, epochs=10, batch_size=30, seed=0, progress=False, callbacks=[_StopAt(25)]
    )
    assert stopped.stopped_early and not stopped.interrupted and stopped.steps == 25
    for name, value in _weights(model2).items():
        assert np.array_equal(_weights(model)[name], value)
    assert stopped.loss == history.loss
    # And the model still trains.
    again = trainer.fit(x, t, epochs=1, batch_size=30, seed=1, progress=False)
    assert not again.interrupted and math.isfinite(again.loss[0])


def test_sigint_stops_after_the_current_step() -> None:
    before = signal.getsignal(signal.SIGINT)

    class CtrlC(train.Callback):
        def on_step_end(self, trainer: nb.Trainer, history: nb.History) -> None:
            if trainer.step == 7:
                os.kill(os.getpid(), signal.SIGINT)

    x, t, _, trainer = _spiral_setup()
    history = trainer.fit(
        x, t, epochs=5, batch_size=30, seed=0, progress=False, callbacks=[CtrlC()]
    )
    assert history.interrupted and history.steps == 7
    assert signal.getsignal(signal.SIGINT) is before


def test_other_errors_propagate() -> None:
    x, t, model, trainer = _spiral_setup()
    model.eval()
    with pytest.raises(ZeroDivisionError):
        trainer.fit(
            x,
            t,
            epochs=2,
            batch_size=30,
            progress=False,
            callbacks=[_RaiseAt(3, ZeroDivisionError)],
        )
    assert not model.training


def test_function_callbacks_run_each_epoch() -> None:
    seen = []
    x, t, _, trainer = _spiral_setup()

    def on_epoch(trainer: nb.Trainer, history: nb.History) -> None:
        seen.append((trainer.epoch, history.epochs, len(history.epoch_loss)))
        if trainer.epoch == 2:
            trainer.stop_training = True

    history = trainer.fit(x, t, epochs=6, batch_size=30, progress=False, callbacks=[on_epoch])
    assert seen == [(0, 1, 1), (1, 2, 2), (2, 3, 3)]
    assert history.stopped_early and history.epochs == 3 and history.steps == 30
    with pytest.raises(TypeError, match="callback"):
        trainer.fit(x, t, epochs=1, batch_size=30, progress=False, callbacks=[42])


def test_report_hook_sees_each_report() -> None:
    seen = []

    class Reports(train.Callback):
        def on_report(self, trainer: nb.Trainer, history: nb.History) -> None:
            seen.append((trainer.step, history.loss[-1]))

    x, t, _, trainer = _spiral_setup()
    history = trainer.fit(
        x, t, epochs=2, batch_size=30, eval_interval=4, progress=False, callbacks=[Reports()]
    )
    assert [s for s, _ in seen] == [4, 8, 12, 16, 20]
    assert [v for _, v in seen] == history.loss


# -- progress output ------------------------------------------------------------------------
def test_progress_off_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    x, t, _, trainer = _spiral_setup()
    trainer.fit(x, t, epochs=2, batch_size=30, progress="auto")
    trainer.fit(x, t, epochs=2, batch_size=30, progress=False)
    assert capsys.readouterr() == ("", "")


def test_progress_bar_with_tqdm(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    x, t, _, trainer = _spiral_setup()
    trainer.fit(x, t, epochs=2, batch_size=30, progress=True)
    err = capsys.readouterr().err
    assert "20/20" in err and "loss=" in err and "acc=" in err and "step/s" in err


def test_progress_bar_without_tqdm(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    x, t, _, trainer = _spiral_setup()
    trainer.fit(x, t, epochs=2, batch_size=30, progress=True, validation=(x, t))
    err = capsys.readouterr().err
    assert err.startswith("\r") and err.endswith("\n")
    assert "epoch 2/2" in err and "20/20" in err and "steps/s" in err
    assert "val_loss=" in err and "val_acc=" in err
    with pytest.raises(ImportError, match="pip install tqdm"):
        trainer.fit(x, t, epochs=1, batch_size=30, progress="tqdm")


def test_progress_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    x, t, _, trainer = _spiral_setup()
    trainer.fit(x, t, epochs=3, batch_size=30, progress="log")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    assert lines[-1].startswith("epoch 3/3 step 30") and "loss=" in lines[-1]


# -- evaluate, predict, bad input -----------------------------------------------------------
def test_evaluate_and_predict() -> None:
    x, t, model, trainer = _spiral_setup()
    model.train()
    loss, accuracy = trainer.evaluate(x, t)
    y = trainer.predict(x, batch_size=64)
    assert model.training
    direct = _host(model(x))
    np.testing.assert_allclose(_host(y), direct, rtol=1e-12)
    expected = float(nn.SoftmaxCrossEntropy()(model(x), t).item())
    assert loss == pytest.approx(expected, rel=1e-12)
    assert accuracy == pytest.approx(float(np.mean(direct.argmax(axis=1) == _host(t))))


def test_one_hot_targets_and_regression() -> None:
    x, t, model, trainer = _spiral_setup()
    xp = nb.namespace()
    onehot = xp.astype(xp.reshape(t, (-1, 1)) == xp.arange(3), xp.float64)
    assert trainer.evaluate(x, onehot) == pytest.approx(trainer.evaluate(x, t))
    reg = nb.Trainer(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.1))
    history = reg.fit(x, onehot, epochs=2, batch_size=30, progress=False)
    assert history.accuracy == [None, None] and reg.evaluate(x, onehot)[1] is None


def test_binary_accuracy_on_xor() -> None:
    nb.random.seed(0)
    x, t = datasets.xor(n_per_corner=25, noise=0.05)
    xp = nb.namespace()
    target = xp.reshape(xp.astype(t, xp.float64), (-1, 1))
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    trainer = nb.Trainer(model, nn.SigmoidCrossEntropy(), optim.Adam(model.parameters(), 0.05))
    trainer.fit(x, target, epochs=60, batch_size=20, seed=0, progress=False)
    loss, accuracy = trainer.evaluate(x, target)
    assert accuracy == 1.0 and loss < 0.1


def test_bad_arguments() -> None:
    x, t, _, trainer = _spiral_setup()
    with pytest.raises(ShapeError, match="300 inputs"):
        trainer.fit(x, t[:299], epochs=1, batch_size=30)
    with pytest.raises(ValueError, match="batch_size"):
        trainer.fit(x, t, epochs=1, batch_size=0)
    with pytest.raises(ValueError, match="epochs"):
        trainer.fit(x, t, epochs=-1, batch_size=30)
    with pytest.raises(ValueError, match="eval_interval"):
        trainer.fit(x, t, epochs=1, batch_size=30, eval_interval=0)
    with pytest.raises(ValueError, match="max_grad"):
        trainer.fit(x, t, epochs=1, batch_size=30, max_grad=0.0)
    with pytest.raises(ValueError, match="progress"):
        trainer.fit(x, t, epochs=1, batch_size=30, progress="loud")
    with pytest.raises(ValueError, match="validation"):
        trainer.fit(x, t, epochs=1, batch_size=30, validation=(x,))
    with pytest.raises(ShapeError, match="validation"):
        trainer.fit(x, t, epochs=1, batch_size=30, validation=(x, t[:5]))
    with pytest.raises(TypeError, match="optimizer"):
        nb.Trainer(trainer.model, trainer.loss_fn, object())
    assert trainer.fit(x, t, epochs=0, batch_size=30).steps == 0


def test_data_of_another_backend_is_moved_to_the_models() -> None:
    """Issue 17: fit takes arrays of any registered backend and moves them to the model's
    backend once (it used to reject targets of another backend)."""
    _need("array_api_strict")
    x, _, model, trainer = _spiral_setup()
    with nb.using(backend="array_api_strict"):
        t_strict = datasets.spiral().t
    history = trainer.fit(x, t_strict, epochs=1, batch_size=30, progress=False)
    assert history.steps == 10 and registry.backend_of(model[0].weight.data) == "numpy"


def test_data_on_another_backend_than_the_active_one() -> None:
    """Shuffle indices follow the data's backend, not the active setting."""
    _need("array_api_strict")
    with nb.using(backend="array_api_strict", dtype="float32"):
        x, t, model, trainer = _spiral_setup()
    with nb.using(backend="numpy", dtype="float16"):
        history = trainer.fit(x, t, epochs=1, batch_size=30, seed=0, progress=False)
    assert history.steps == 10 and registry.backend_of(model[0].weight.data) == ("array_api_strict")


# -- issue 12: settings fixed for the run, Ctrl-C inside a step, arguments -------------------
class _SwitchSettings(train.Callback):
    """At ``step``, change the process-wide settings, as another thread could at any time."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: nb.Trainer, history: nb.History) -> None:
        if trainer.step == self.step:
            nb.set_default_dtype("mixed16")
            if registry.probe("array_api_strict") is None:
                nb.set_backend("array_api_strict")


@pytest.mark.parametrize("precision", [None, "float32"])
def test_fit_keeps_the_settings_it_started_with(precision: str | None) -> None:
    """A process-wide set_default_dtype/set_backend during fit (from another thread, or here
    a callback) does not reach the running fit: bitwise the same weights and history."""

    def run(callbacks: list[Any]) -> tuple[dict[str, np.ndarray], list[float]]:
        nb.set_backend("numpy")
        nb.set_default_dtype("float64")
        with nb.using(dtype=precision):
            x, t, model, _ = _spiral_setup()
        trainer = nb.Trainer(
            model,
            nn.SoftmaxCrossEntropy(),
            optim.SGD(model.parameters(), lr=1.0),
            precision=precision,
        )
        history = trainer.fit(
            x, t, epochs=3, batch_size=30, seed=0, progress=False, callbacks=callbacks
        )
        assert trainer.loss_scaler is None
        return _weights(model), history.loss

    reference, ref_loss = run([])
    weights, loss = run([_SwitchSettings(5)])
    assert nb.config.get_policy() == "mixed16"  # the change did happen, process-wide
    assert loss == ref_loss
    for name, value in reference.items():
        assert value.dtype == weights[name].dtype
        assert np.array_equal(weights[name], value), name


class _InterruptedSGD(optim.SGD):
    """SGD that updates one parameter at a time, and at step ``fire_at`` receives two SIGINTs
    (a user pressing Ctrl-C twice) after its first parameter is updated."""

    fire_at: int | None = None
    signals = 2

    def step(self) -> None:
        self.steps += 1
        for i, p in enumerate(self.params):
            p.data = p.data - self.lr * p.grad
            if self.steps == self.fire_at and i == 0:
                for _ in range(self.signals):
                    signal.raise_signal(signal.SIGINT)


def _interrupted_run(fire_at: int | None, stop_at: int | None = None) -> tuple[Any, Any]:
    nb.random.seed(0)
    x, t = datasets.spiral()
    model = nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))
    opt = _InterruptedSGD(model.parameters(), lr=1.0)
    opt.fire_at = fire_at
    trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), opt)
    callbacks = [] if stop_at is None else [_StopAt(stop_at)]
    history = trainer.fit(
        x, t, epochs=3, batch_size=30, seed=0, progress=False, callbacks=callbacks
    )
    return history, model


def test_second_ctrl_c_inside_the_optimizer_step_waits_for_the_update() -> None:
    before = signal.getsignal(signal.SIGINT)
    history, model = _interrupted_run(fire_at=4)
    assert signal.getsignal(signal.SIGINT) is before
    assert history.interrupted and history.steps == 4
    _, reference = _interrupted_run(fire_at=None, stop_at=4)
    for name, value in _weights(reference).items():
        assert np.array_equal(_weights(model)[name], value), name


def test_ctrl_c_inside_the_step_under_a_foreign_handler_waits_for_the_update() -> None:
    """Where the user installed their own SIGINT handler (raising KeyboardInterrupt at the
    first Ctrl-C), fit leaves it in place but still holds the signal for the step."""
    calls = []

    def handler(signum: int, frame: Any) -> None:
        calls.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        _InterruptedSGD.signals = 1
        history, model = _interrupted_run(fire_at=4)
        assert signal.getsignal(signal.SIGINT) is handler  # put back after fit
    finally:
        _InterruptedSGD.signals = 2
        signal.signal(signal.SIGINT, previous)
    assert calls == [signal.SIGINT]
    assert history.interrupted and history.steps == 4
    _, reference = _interrupted_run(fire_at=None, stop_at=4)
    for name, value in _weights(reference).items():
        assert np.array_equal(_weights(model)[name], value), name


def test_integral_batch_size_and_epochs_are_accepted() -> None:
    x, t, _, trainer = _spiral_setup()
    history = trainer.fit(
        x,
        t,
        epochs=np.int32(1),
        batch_size=np.int64(8),
        eval_interval=np.uint8(10),
        progress=False,
    )
    assert history.batch_size == 8 and type(history.batch_size) is int
    assert history.steps == 38 and history.steps_per_epoch == 38
    assert trainer.evaluate(x, t, batch_size=np.int16(50))[1] is not None
    for bad in (8.0, "8", True, np.float64(8.0), None):
        with pytest.raises(nb.errors.ArgumentError, match="batch_size must be an integer"):
            trainer.fit(x, t, epochs=1, batch_size=bad)


def test_bad_validation_set_is_refused_before_the_first_epoch() -> None:
    x, t, _, trainer = _spiral_setup()
    xp = nb.namespace()
    steps = []

    class Count(train.Callback):
        def on_step_end(self, trainer: nb.Trainer, history: nb.History) -> None:
            steps.append(trainer.step)

    def fit(validation: Any) -> None:
        trainer.fit(
            x,
            t,
            epochs=2,
            batch_size=30,
            validation=validation,
            callbacks=[Count()],
            progress=False,
        )

    with pytest.raises(ShapeError, match=r"validation inputs have shape \(5, 3\).*\(2,\)"):
        fit((xp.ones((5, 3)), t[:5]))
    with pytest.raises(ShapeError, match="validation targets"):
        fit((x[:5], xp.ones((5, 3))))
    with pytest.raises(nb.errors.ArgumentError, match="pair"):
        fit(x)
    with pytest.raises(nb.errors.ArgumentError, match="pair"):
        fit(iter([x, t]))
    with pytest.raises(ShapeError, match="empty"):
        fit((x[:0], t[:0]))
    assert steps == []  # nothing trained
    fit((x[:5], xp.astype(t[:5], xp.int32)))  # integer labels of another width are fine
    assert len(steps) == 20
    # Another dtype or another backend is no error: fit moves the validation set to the
    # model's backend and dtype, as it does the training data (issue 17).
    fit((xp.astype(x[:5], xp.float32), t[:5]))
    if registry.probe("array_api_strict") is None:
        with nb.using(backend="array_api_strict"):
            other = datasets.spiral()
        fit((other.x, other.t))
    assert len(steps) == 60 if registry.probe("array_api_strict") is None else 40


def test_metrics_refuse_targets_that_would_broadcast() -> None:
    """Found probing (2026-12-02): (N, 1) labels against (N, C) outputs made Accuracy compare
    an (N, N) grid and report 1.0 where it was 0.25; MSE / MAE / BinaryAccuracy averaged
    (N, 1) outputs against (N,) or (N + 1,) targets over a broadcast grid. Now a ShapeError
    naming both shapes, and a sequence's accuracy counts every position."""
    from nnbackend import metrics
    from nnbackend.errors import ShapeError

    rng = np.random.default_rng(0)
    scores = rng.standard_normal((4, 3))
    labels = np.array([0, 1, 2, 0])
    right = float(np.mean(np.argmax(scores, axis=1) == labels))
    for make in (metrics.Accuracy, lambda: metrics.TopKAccuracy(1)):
        metric = make()
        for bad in (labels[:, None], np.append(labels, 0)):
            with pytest.raises(ShapeError, match=r"do not fit outputs of shape \(4, 3\)"):
                metric.update(scores, bad)
        metric.update(scores, labels)
        assert metric.result() == right
    column = scores[:, :1]
    for make in (metrics.MeanSquaredError, metrics.MeanAbsoluteError, metrics.BinaryAccuracy):
        metric = make()
        for bad in (np.zeros(4), np.zeros(5)):
            with pytest.raises(ShapeError, match=r"outputs of shape \(4, 1\) and targets"):
                metric.update(column, bad)
        metric.update(column, np.zeros((4, 1)))
        assert 0.0 <= metric.result() < math.inf
    assert metrics.MeanSquaredError().batch(column, np.zeros((4, 1)))[1] == 4
    sequence = rng.standard_normal((2, 5, 3))
    tags = rng.integers(0, 3, (2, 5))
    accuracy = metrics.Accuracy()
    accuracy.update(sequence, tags)
    assert accuracy.result() == float(np.mean(np.argmax(sequence, axis=-1) == tags))
