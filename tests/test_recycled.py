"""NumPy's recycled intermediates (``NumpyOps.recycled``, issue 19): a training step writes its
layers' outputs, ReLU masks and the gradients it passes down into arrays of earlier steps that
nothing refers to any more, so a steady-state step allocates no activation-sized arrays (and
page-faults none in, whatever glibc does with its heap). Never an array someone still holds:
values equal the step without recycling, bit for bit, and an activation a user kept from an
earlier step keeps its values."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn, optim
from nnbackend.backends import numpy as numpy_ops
from nnbackend.backends.numpy import NumpyOps
from nnbackend.namespace import ops_for

ROWS, WIDTH = 64, 1024  # 65,536 elements an activation: above recycle_min (32,768)


def _ops() -> Any:
    xp = nb.namespace("numpy")
    return ops_for(xp, xp.zeros(1))


def _in_new_thread(fn: Any) -> Any:
    """``fn()`` in a thread of its own (its pool starts empty); its result or its error."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(("ok", fn()))
        except BaseException as error:  # re-raised below, in the test's thread
            out.append(("error", error))

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    kind, value = out[0]
    if kind == "error":
        raise value
    return value


def test_an_array_comes_back_only_when_nothing_holds_it() -> None:
    def body() -> None:
        ops = _ops()
        shape, dtype = (ROWS, WIDTH), np.dtype(np.float64)
        first = ops.recycled(shape, dtype)
        assert first.shape == shape and first.dtype == dtype and first.flags.c_contiguous
        first_id = id(first)
        second = ops.recycled(shape, dtype)
        assert second is not first  # held by the test: never handed out twice
        view = first[1:]
        del first
        third = ops.recycled(shape, dtype)
        assert third is not second and id(third) != first_id  # a view holds its base
        del view
        fourth = ops.recycled(shape, dtype)
        assert id(fourth) == first_id  # nothing holds it now: the same array again
        assert ops.recycled(shape, np.dtype(np.float32)).dtype == np.float32  # its own ring

    _in_new_thread(body)


def test_small_arrays_and_records_without_writes_are_not_recycled(
    monkeypatch: pytest.MonkeyPatch, numpy_without_inplace_writes: Callable[[], None]
) -> None:
    ops = _ops()
    assert ops.recycled((ROWS, 8), np.dtype(np.float64)) is None  # below recycle_min
    monkeypatch.setattr(ops, "may_cache", False)
    assert ops.recycled((ROWS, WIDTH), np.dtype(np.float64)) is None
    numpy_without_inplace_writes()
    rebinding = _ops()
    assert rebinding.recycled((ROWS, WIDTH), np.dtype(np.float64)) is None
    assert rebinding.recycle_min > 2**40  # nodes never even ask


def test_each_thread_has_its_own_arrays() -> None:
    """Two threads must never be handed the same array: an array free in one thread's pool
    (kept alive there, so its id is its own) is not given to another thread."""
    ops = _ops()
    shape, dtype = (ROWS, WIDTH), np.dtype(np.float32)
    released, done = threading.Event(), threading.Event()
    theirs: list[int] = []

    def other() -> None:
        theirs.append(id(ops.recycled(shape, dtype)))  # let go at once: free in its pool
        released.set()
        done.wait(30)

    worker = threading.Thread(target=other)
    worker.start()
    try:
        assert released.wait(30)
        mine = [ops.recycled(shape, dtype) for _ in range(3)]
        assert theirs[0] not in {id(a) for a in mine}
    finally:
        done.set()
        worker.join()


def test_the_pool_is_bounded_and_empty_cache_lets_go(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(numpy_ops, "_POOL_DEPTH", 2)
    nbytes = ROWS * WIDTH * 8
    monkeypatch.setattr(numpy_ops, "_POOL_BYTES", 3 * nbytes)

    def body() -> dict[str, Any]:
        ops = _ops()
        a_shape, b_shape = (ROWS, WIDTH), (WIDTH, ROWS)
        dtype = np.dtype(np.float64)
        held = [ops.recycled(a_shape, dtype) for _ in range(3)]  # the third is not kept
        assert ops._local.pool_bytes == 2 * nbytes
        del held
        b = ops.recycled(b_shape, dtype)  # room for one more
        assert ops._local.pool_bytes == 3 * nbytes
        del b
        ops.recycled((ROWS // 2, WIDTH), dtype)  # no room: a_shape (the oldest) goes
        assert list(ops._local.pool) == [(b_shape, dtype), ((ROWS // 2, WIDTH), dtype)]
        kept = ops._local.pool_bytes
        report = nb.empty_cache()
        assert ops._local.pool_bytes == 0 and not ops._local.pool
        return {"report": report, "kept": kept}

    out = _in_new_thread(body)
    assert out["report"]["numpy"] == {"freed_bytes": out["kept"], "held_bytes": 0}


def _train(steps: int, keep: list[Any] | None = None) -> list[np.ndarray]:
    """A ReLU MLP wide enough to recycle, trained ``steps`` SGD steps; optionally keeping
    each step's first activation (a Tensor) in ``keep``."""
    nb.random.seed(3)
    rng = np.random.default_rng(3)
    with nb.using(backend="numpy", dtype="float64"):
        model = nn.Sequential(
            nn.Linear(32, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU(),
            nn.Linear(WIDTH, 4),
        )  # fmt: skip
    opt = optim.SGD(model.parameters(), lr=0.05)
    loss_fn = nn.SoftmaxCrossEntropy()
    x = rng.standard_normal((ROWS, 32))
    x[0, :3] = -0.0  # (NaN and infinities: test_relu_into_recycled_arrays_is_the_formula)
    t = rng.integers(0, 4, ROWS)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        h = model[1](model[0](x))
        if keep is not None:
            keep.append((h, np.array(h.data, copy=True)))
        scores = model[4](model[3](model[2](h)))
        loss = loss_fn(scores, t)
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    return [np.array(p.data) for p in model.parameters()] + [np.array(losses)]


def test_training_equals_the_step_without_recycling_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kept: list[Any] = []
    recycled = _train(6, keep=kept)
    for tensor, values in kept:  # a user's activations from earlier steps: never reused
        np.testing.assert_array_equal(np.asarray(tensor.data), values)
    monkeypatch.setattr(NumpyOps, "recycled", lambda self, shape, dtype: None)
    plain = _train(6)
    for a, b in zip(recycled, plain, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_steady_state_step_allocates_no_activation_sized_array() -> None:
    """From the third step on, the layers' outputs, masks and passed-down gradients are
    arrays of earlier steps: a step's peak of newly allocated memory stays below one
    activation (tracemalloc), where without recycling it held several."""

    def body() -> list[int]:
        rng = np.random.default_rng(4)
        with nb.using(backend="numpy", dtype="float32"):
            model = nn.Sequential(
                nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU(),
                nn.Linear(WIDTH, 8),
            )  # fmt: skip
        opt = optim.SGD(model.parameters(), lr=0.01)
        loss_fn = nn.SoftmaxCrossEntropy()
        x = rng.standard_normal((ROWS, WIDTH)).astype(np.float32)
        t = rng.integers(0, 8, ROWS)
        peaks = []
        for _ in range(4):
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            opt.zero_grad()
            loss = loss_fn(model(x), t)
            loss.backward()
            opt.step()
            del loss
            peaks.append(tracemalloc.get_traced_memory()[1] - before)
            tracemalloc.stop()
        return peaks

    peaks = _in_new_thread(body)
    activation = ROWS * WIDTH * 4
    assert peaks[0] > 4 * activation  # the first step makes them
    assert max(peaks[2:]) < activation, peaks


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_into_recycled_arrays_is_the_formula(dtype: Any) -> None:
    """NaN, infinities, -0 and +0 through ReLU's forward and backward on arrays large enough
    to recycle: NumPy's ``maximum(x, 0)``, ``x > 0`` and ``mask * gy`` exactly."""
    ops = _ops()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((ROWS, WIDTH)).astype(dtype)
    x.flat[:6] = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-300]
    gy = rng.standard_normal(x.shape).astype(dtype)
    gy.flat[6:9] = [np.nan, np.inf, -np.inf]
    mask = ops.relu_mask(x)
    np.testing.assert_array_equal(mask, x > 0)
    y = ops.leaky_relu(x, mask, 0.0)
    want = np.maximum(x, dtype(0))
    np.testing.assert_array_equal(y, want)
    assert np.array_equal(np.signbit(y), np.signbit(want))
    with np.errstate(invalid="ignore"):  # 0 * inf: NaN, as NumPy gives
        gx = ops.leaky_relu_backward(gy, mask, 0.0)
        np.testing.assert_array_equal(gx, (x > 0).astype(dtype) * gy)
    assert y is not x and gx is not gy
