"""The dtype guard: with ``using(check_dtypes=True)`` (or ``NNBACKEND_CHECK_DTYPES=1``, or
``set_check_dtypes(True)``) every engine op checks that its floating outputs have the dtype the
policy gives them, and raises naming the op. The whole suite runs with it on (conftest)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import config, nn, optim
from nnbackend.autograd import Function
from nnbackend.errors import ArgumentError, DtypeError


class Promote(Function):
    """A buggy op: float64 out of anything."""

    def forward(self, x: Any) -> Any:
        return self.xp.astype(x, self.xp.float64)

    def backward(self, gy: Any) -> Any:
        return gy


class Declared(Function):
    """A cast that says so."""

    def __init__(self) -> None:
        self.output_dtype = None

    def forward(self, x: Any) -> Any:
        self.output_dtype = self.xp.float64
        return self.xp.astype(x, self.xp.float64)

    def backward(self, gy: Any) -> Any:
        return gy


def test_the_suite_runs_with_the_guard_on() -> None:
    assert config.check_dtypes_enabled()
    assert config.engine_switch.maybe


def test_guard_names_the_op_shapes_and_dtypes(xp: Any, dtype: str) -> None:
    if dtype == "float64":
        pytest.skip("float64 in, float64 out: nothing to catch")
    x = nb.Tensor(xp.ones((2, 3)), requires_grad=True)
    with pytest.raises(DtypeError, match=rf"Promote produced output 0 of dtype .*float64.*{dtype}"):
        Promote()(x)
    with pytest.raises(DtypeError, match=r"inputs \(\(2, 3\)"):
        Promote()(x)


def test_guard_off_lets_it_through() -> None:
    x = np.ones(3, np.float32)
    with nb.using(check_dtypes=False):
        assert not config.check_dtypes_enabled()
        assert Promote()(x).dtype == np.float64
        with nb.using(check_dtypes=True), pytest.raises(DtypeError):
            Promote()(x)
        assert Promote()(x).dtype == np.float64  # the inner block ended


def test_declared_casts_pass() -> None:
    x = nb.Tensor(np.ones(3, np.float32), requires_grad=True)
    assert Declared()(x).dtype == np.float64
    y = x.astype("float16")
    assert y.dtype == np.float16
    (y * 2.0).sum().backward()
    assert x.grad.dtype == np.float32


def test_no_floating_input_means_the_default_dtype() -> None:
    """The policy's dtype for an op without floating inputs. The mean of integers once
    came out float64 under a float32 default (NumPy's promotion), which the guard caught;
    it now follows the default, so the guard (on here) passes it."""
    ints = nb.Tensor(np.arange(6).reshape(2, 3))
    assert ints.mean().dtype == np.float64
    with nb.using(dtype="float32", check_dtypes=True):
        assert ints.mean().dtype == np.float32


def test_set_check_dtypes_and_the_switch() -> None:
    x = np.ones(3, np.float32)
    config.set_check_dtypes(False)  # the conftest fixture restores it
    assert Promote()(x).dtype == np.float64
    assert not config.check_dtypes_enabled()
    config.set_check_dtypes(True)
    with pytest.raises(DtypeError):
        Promote()(x)


def test_switch_is_off_when_nothing_asks_for_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off means one flag read per op: no context lookups."""
    monkeypatch.setenv(config.CHECK_DTYPES_ENV, "0")
    config._Process.environment_read = False
    config.set_check_dtypes(None)
    nb.get_backend()  # reads the environment
    assert config.engine_switch.maybe is False
    with nb.using(check_dtypes=True):
        assert config.engine_switch.maybe is True
    assert config.engine_switch.maybe is False
    with nb.autograd.detect_anomaly():
        assert config.engine_switch.maybe is True
    assert config.engine_switch.maybe is False


def test_guard_reaches_new_threads_through_the_process_setting() -> None:
    x = np.ones(3, np.float32)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            Promote()(x)
        except DtypeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert len(errors) == 1


def test_environment_switch(run_python: Callable[..., Any]) -> None:
    code = """
    import numpy as np
    import nnbackend as nb
    class Promote(nb.Function):
        def forward(self, x):
            return self.xp.astype(x, self.xp.float64)
    try:
        Promote()(np.ones(2, np.float32))
        print("passed")
    except nb.errors.DtypeError as exc:
        print("caught", str(exc).split(":")[1].split()[0])
    """
    assert run_python(code, env={"NNBACKEND_CHECK_DTYPES": "1"}).stdout.split() == [
        "caught",
        "Promote",
    ]
    assert run_python(code, env={"NNBACKEND_CHECK_DTYPES": "0"}).stdout.split() == ["passed"]
    assert run_python(code, env={"NNBACKEND_CHECK_DTYPES": None}).stdout.split() == ["passed"]
    bad = run_python(code, env={"NNBACKEND_CHECK_DTYPES": "maybe"})
    assert "NNBACKEND_CHECK_DTYPES='maybe'" in bad.stderr


def test_bad_environment_value_raises_an_argument_error(
    fresh_settings: Callable[..., None],
) -> None:
    fresh_settings(NNBACKEND_CHECK_DTYPES="sometimes")
    with pytest.raises(ArgumentError, match="NNBACKEND_CHECK_DTYPES"):
        nb.get_backend()
    fresh_settings(NNBACKEND_CHECK_DTYPES="1")


@pytest.mark.parametrize("policy", ["float32", "float16", "mixed16"])
def test_a_training_step_passes_the_guard(policy: str) -> None:
    with nb.using(dtype=policy, check_dtypes=True):
        nb.random.seed(0)
        model = nn.Sequential(
            nn.Linear(4, 8),
            nn.Sigmoid(),
            nn.Dropout(0.2),
            nn.Linear(8, 8),
            nn.ReLU(),
            nn.Linear(8, 3),
            nn.Softmax(),
        )
        x = nb.namespace().ones((5, 4))
        loss = nn.MSELoss()(model(x), nb.namespace().zeros((5, 3)))
        loss.backward()
        optim.Adam(model.parameters()).step()
