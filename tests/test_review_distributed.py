"""Attacker's review of data-parallel training (``nnbackend.distributed`` and
``nnbackend.backends.collectives``).

Covered: world size and ranks read from the launcher's environment (missing, zero, negative,
out of range), seeds per rank (wrong types, negative), the communicators (roots out of range,
arrays whose shapes or dtypes differ between ranks, a rank that fails, is aborted or never
comes, objects shared between ranks, results that alias their inputs), and the gradient
reducer (parameters that differ between ranks, bad weights, NaN and infinite gradients, empty
and zero-size parameters). The engines are checked in memory (one thread per rank) and,
where mpi4py/mpiexec and torch are installed, under ``mpiexec -n 2`` and ``torchrun``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import distributed, nn, optim
from nnbackend.distributed import _world
from nnbackend.errors import ArgumentError, DtypeError, NNBackendError, ShapeError


def _each_rank(
    size: int, fn: Callable[[Any], Any], *, timeout: float = 5.0, dtype: str = "float64"
) -> list[Any]:
    """``fn(comm)`` on ``size`` threads of one thread group: per rank, its result or the
    exception it raised (so a test sees what every rank got, not only the first error)."""
    comms = distributed.thread_group(size, timeout=timeout)
    out: list[Any] = [None] * size

    def run(comm: Any) -> None:
        try:
            with nb.using(backend="numpy", dtype=dtype):
                out[comm.rank] = fn(comm)
        except BaseException as exc:
            out[comm.rank] = exc
            comm.abort()

    threads = [threading.Thread(target=run, args=(c,)) for c in comms]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
        assert not th.is_alive(), "a rank hangs"
    return out


def _param(xp: Any, shape: tuple[int, ...], dtype: Any = None) -> nb.Tensor:
    p = nb.Tensor(xp.zeros(shape, dtype=dtype), requires_grad=True)
    p.grad = xp.ones(shape, dtype=dtype)
    return p


# -- the launcher's environment ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"WORLD_SIZE": "0", "RANK": "0"}, "WORLD_SIZE"),
        ({"WORLD_SIZE": "-2", "RANK": "0"}, "WORLD_SIZE"),
        ({"WORLD_SIZE": "4", "RANK": "4"}, "RANK"),
        ({"WORLD_SIZE": "4", "RANK": "-1"}, "RANK"),
        ({"PMI_SIZE": "2", "PMI_RANK": "7"}, "PMI_RANK"),
        ({"WORLD_SIZE": "4", "RANK": "1", "LOCAL_RANK": "-1"}, "LOCAL_RANK"),
        ({"WORLD_SIZE": "4", "RANK": "1", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "2"},
         "LOCAL_RANK"),
        ({"WORLD_SIZE": "4", "RANK": "1", "LOCAL_WORLD_SIZE": "-1"}, "LOCAL_WORLD_SIZE"),
        ({"SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_NTASKS_PER_NODE": "0"},
         "SLURM_NTASKS_PER_NODE"),
    ],
)  # fmt: skip
def test_detect_rejects_impossible_sizes_and_ranks(env: dict[str, str], named: str) -> None:
    """WORLD_SIZE=0 or -2 silently became a world of one (or of -2 ranks, which the Trainer
    treated as one process), and RANK=4 of WORLD_SIZE=4 or RANK=-1 went on to the engine."""
    with pytest.raises(ArgumentError, match=named):
        distributed.detect(env)


def test_detect_still_accepts_consistent_launchers() -> None:
    """(Guard for the fix above: the values launchers really set still pass.)"""
    found = distributed.detect({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"})
    assert (found["size"], found["rank"], found["local_size"]) == (1, 0, 1)
    found = distributed.detect({"PMI_SIZE": "3", "PMI_RANK": "2"})
    assert (found["engine"], found["rank"], found["size"]) == ("mpi", 2, 3)


def test_info_reports_an_impossible_environment_instead_of_raising(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``nnbackend info`` showed an impossible world (rank -1 of 4) as if it were fine."""
    monkeypatch.setattr(_world, "_current", None)
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "-1")
    report = nb.info()
    assert "RANK" in report.world.get("problem", "")


# -- seeds and init's arguments -----------------------------------------------------------------
@pytest.mark.parametrize("seed", [1.5, "3", True, -1, None])
def test_rank_seed_rejects_what_is_not_a_seed(seed: Any) -> None:
    """rank_seed(1.5, 0) raised a bare TypeError from a bit operation, rank_seed("3", 0) an
    OverflowError, and rank_seed(True, 0) / rank_seed(-1, 0) were accepted although
    nb.random.seed refuses both."""
    with pytest.raises(ArgumentError, match="seed"):
        distributed.rank_seed(seed, 0)


@pytest.mark.parametrize("rank", [-1, 1.0, "0"])
def test_rank_seed_rejects_a_bad_rank(rank: Any) -> None:
    """rank_seed(0, -1) gave the stream of another (seed, rank) pair; "0" raised a bare
    TypeError."""
    with pytest.raises(ArgumentError, match="rank"):
        distributed.rank_seed(0, rank)


@pytest.mark.parametrize("seed", [1.5, "3", -1])
def test_init_rejects_a_bad_seed_before_joining(seed: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """init(seed=1.5) raised a bare TypeError after the world was already set up."""
    monkeypatch.setattr(_world, "_current", None)
    with pytest.raises(ArgumentError, match="seed"):
        distributed.init(comm=distributed.LocalComm(), seed=seed)
    assert _world._current is None  # nothing joined


def test_init_rejects_a_comm_that_is_not_a_communicator(monkeypatch: pytest.MonkeyPatch) -> None:
    """init(comm="mpi") raised a bare AttributeError ('str' object has no attribute
    'engine')."""
    monkeypatch.setattr(_world, "_current", None)
    with pytest.raises(ArgumentError, match="comm"):
        distributed.init(comm="mpi")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size", "timeout"),
    [(0, 1.0), (-1, 1.0), ("2", 1.0), (2, -1.0), (2, float("nan")), (2, "30")],
)
def test_thread_group_rejects_bad_sizes_and_timeouts(size: Any, timeout: Any) -> None:
    """thread_group(0) and thread_group(-1) returned an empty group, thread_group("2") raised a
    bare TypeError, and a negative timeout made every collective fail at once. (A timeout of
    0 is no limit, as for MPIComm: tests/test_fix_tidy.py.)"""
    with pytest.raises(ArgumentError, match="thread_group"):
        distributed.thread_group(size, timeout=timeout)


def test_a_world_without_its_communicator_does_not_train_alone() -> None:
    """Trainer(..., world=World("mpi", 1, 2)) (no comm given) took rank 1's half of every
    batch and "all-reduced" through the default one-process LocalComm: it trained on half
    the data without a word. A comm whose rank or size disagree with the World's was taken
    as well."""
    from nnbackend import nn, optim

    x = np.random.default_rng(0).standard_normal((8, 4))
    t = np.arange(8) % 3
    model = nn.Linear(4, 3)
    trainer = nb.Trainer(
        model,
        nn.SoftmaxCrossEntropy(),
        optim.SGD(model.parameters()),
        world=distributed.World("mpi", 1, 2),
    )
    with pytest.raises(ArgumentError, match="communicator"):
        trainer.fit(x, t, epochs=1, batch_size=8, progress=False)
    with pytest.raises(ArgumentError, match="size"):
        distributed.World("threads", 0, 3, comm=distributed.thread_group(2)[0])
    with pytest.raises(ArgumentError, match="rank"):
        distributed.World("threads", 2, 2)
    # What the rank-0-only checks of io and plots build still works.
    assert not distributed.World("threads", 1, 2).is_main


# -- the communicators --------------------------------------------------------------------------
@pytest.mark.parametrize("root", [-1, 2, "0", 0.0])
def test_broadcast_rejects_a_root_out_of_range(root: Any) -> None:
    """broadcast(a, root=-1) silently sent the last rank's array (a Python index from the
    end) and root=2 of 2 ranks raised a bare IndexError."""
    got = _each_rank(2, lambda c: c.broadcast(np.arange(2.0) + c.rank, root))
    for r in got:
        assert isinstance(r, ArgumentError) and "root" in str(r), r
    got = _each_rank(2, lambda c: c.bcast_obj(c.rank, root))
    for r in got:
        assert isinstance(r, ArgumentError) and "root" in str(r), r


def test_broadcast_rejects_arrays_that_differ_between_ranks() -> None:
    """A broadcast whose arrays had different shapes or dtypes on different ranks (a model
    built differently on one rank) silently replaced the rank's array by rank 0's (threads)
    or failed with an MPI/gloo error on one side only, gloo aborting the process."""
    got = _each_rank(2, lambda c: c.broadcast(np.zeros(2 + c.rank), 0))
    for r in got:
        assert isinstance(r, ShapeError), r
        assert "(2,)" in str(r) and "(3,)" in str(r)
    got = _each_rank(
        2, lambda c: c.broadcast(np.zeros(2, dtype="float64" if c.rank else "float32"), 0)
    )
    for r in got:
        assert isinstance(r, DtypeError), r
        assert "float32" in str(r) and "float64" in str(r)


def test_allreduce_rejects_arrays_that_differ_between_ranks() -> None:
    """allreduce_sum of a (1,) array on rank 0 and a (3,) array on rank 1 silently broadcast
    the sum to (3,) on every rank; (2,) with (3,) raised a bare ValueError on one rank."""
    got = _each_rank(2, lambda c: c.allreduce_sum(np.ones(1 + 2 * c.rank)))
    for r in got:
        assert isinstance(r, ShapeError), r
        assert "rank 1" in str(r) and "(3,)" in str(r)


def test_a_failed_rank_gives_the_others_a_typed_error() -> None:
    """When a rank raised (and aborted the group), the others got a bare, empty
    threading.BrokenBarrierError that did not say what happened."""

    def work(comm: Any) -> Any:
        if comm.rank == 1:
            raise RuntimeError("rank 1 fails on purpose")
        return comm.allreduce_sum(np.ones(2))

    got = _each_rank(2, work)
    assert isinstance(got[1], RuntimeError)
    assert isinstance(got[0], distributed.CollectiveError), got[0]
    assert isinstance(got[0], NNBackendError)
    assert "aborted" in str(got[0]) and "allreduce_sum" in str(got[0])


def test_a_rank_that_never_comes_is_a_typed_timeout() -> None:
    """A rank that stopped early (returned without the collective) left the others with a
    bare BrokenBarrierError after the timeout, not an error saying it timed out."""

    def work(comm: Any) -> Any:
        if comm.rank == 1:
            return "gone"
        comm.barrier()

    start = time.perf_counter()
    got = _each_rank(2, work, timeout=0.3)
    assert time.perf_counter() - start < 5
    assert got[1] == "gone"
    assert isinstance(got[0], distributed.CollectiveError), got[0]
    assert "0.3 s" in str(got[0]) and "barrier" in str(got[0])
    assert isinstance(got[0], threading.BrokenBarrierError)  # what callers caught before


def test_bcast_obj_gives_each_rank_its_own_object() -> None:
    """bcast_obj of the in-memory group handed every rank the same mutable object, so one
    rank's change appeared on the others (MPI and torch send each rank a copy)."""

    def work(comm: Any) -> Any:
        obj = comm.bcast_obj({"seen": []} if comm.rank == 0 else None, 0)
        obj["seen"].append(comm.rank)
        comm.barrier()
        return obj

    got = _each_rank(2, work)
    assert got[0] == {"seen": [0]} and got[1] == {"seen": [1]}


def test_a_world_of_one_returns_new_arrays() -> None:
    """LocalComm.allreduce_sum/broadcast (and a thread group of one) returned the caller's
    array itself, so an in-place change to the "sum" changed the input: a script behaved
    differently alone than on N ranks, where the result is a new array."""
    for comm in (distributed.LocalComm(), distributed.thread_group(1)[0]):
        for op in (comm.allreduce_sum, comm.broadcast):
            a = np.arange(3.0)
            out = op(a)
            out += 1
            np.testing.assert_array_equal(a, [0.0, 1.0, 2.0])


# -- the gradient reducer ----------------------------------------------------------------------
def test_reducer_rejects_parameters_that_differ_between_ranks() -> None:
    """Parameters whose shapes, dtypes or number differed between ranks were reduced anyway:
    a (2, 3) weight on one rank and a (3, 2) one on the other silently mixed unrelated
    elements, a float32 one came back float64, and other mismatches raised a bare ValueError
    (threads) or an MPI/gloo error on one side only."""

    def transposed(comm: Any) -> Any:
        xp = nb.namespace()
        p = _param(xp, (2, 3) if comm.rank == 0 else (3, 2))
        distributed.GradientReducer([p], comm).reduce(0.5)
        return p.grad

    for r in _each_rank(2, transposed):
        assert isinstance(r, ShapeError), r
        assert "parameter 0" in str(r) and "(3, 2)" in str(r)

    def dtypes(comm: Any) -> Any:
        xp = nb.namespace()
        p = _param(xp, (3,), xp.float64 if comm.rank == 0 else xp.float32)
        distributed.GradientReducer([p], comm).reduce(0.5)
        return p.grad

    for r in _each_rank(2, dtypes):
        assert isinstance(r, DtypeError), r

    def count(comm: Any) -> Any:
        xp = nb.namespace()
        ps = [_param(xp, (2,)) for _ in range(1 + comm.rank)]
        distributed.GradientReducer(ps, comm).reduce(0.5)

    for r in _each_rank(2, count):
        assert isinstance(r, ShapeError), r
        assert "1 parameter" in str(r) and "2 parameters" in str(r)


def test_reducer_checks_the_ranks_once_and_then_stays_cheap() -> None:
    """(Guard for the fix above: matching ranks still reduce exactly, the check adds no
    collective to later steps, and a parameter reshaped on one rank later is still a typed
    error on every rank.)"""

    def work(comm: Any) -> Any:
        xp = nb.namespace()
        ps = [_param(xp, (2,)), _param(xp, (3,))]
        counts = []
        reducer = distributed.GradientReducer(ps, comm)
        calls = 0
        original = comm.allgather_obj

        def counting(obj: Any) -> Any:
            nonlocal calls
            calls += 1
            return original(obj)

        comm.allgather_obj = counting
        for _ in range(3):
            for p in ps:
                p.grad = xp.ones(tuple(p.data.shape)) * (comm.rank + 1)
            reducer.reduce(0.5)
            counts.append(calls)
        ps[1].data = xp.zeros((4,) if comm.rank == 0 else (3,))
        ps[1].grad = xp.ones(tuple(ps[1].data.shape))
        try:
            reducer.reduce(0.5)
        except ShapeError:
            counts.append(-1)
        return counts, [np.asarray(p.grad) for p in ps[:1]]

    for counts, grads in _each_rank(2, work):
        assert counts == [1, 1, 1, -1]
        np.testing.assert_array_equal(grads[0], [1.5, 1.5])


@pytest.mark.parametrize("weight", ["half", math.nan, math.inf, -0.5, 1.5, None])
def test_reducer_rejects_a_bad_weight(weight: Any) -> None:
    """reduce("half") raised a bare ValueError from float(); a NaN, infinite or negative
    weight, or one above 1, silently scaled every gradient by it."""

    def work(comm: Any) -> Any:
        xp = nb.namespace()
        distributed.GradientReducer([_param(xp, (2,))], comm).reduce(weight)

    for r in _each_rank(2, work):
        assert isinstance(r, ArgumentError) and "weight" in str(r), r


@pytest.mark.parametrize("params", [[np.zeros(3)], [1.0], "weights"])
def test_reducer_rejects_what_is_not_a_parameter(params: Any) -> None:
    """GradientReducer([np.zeros(3)], comm) was accepted and failed at the first reduce with
    a bare AttributeError ('numpy.ndarray' object has no attribute 'data')."""
    with pytest.raises(ArgumentError, match="param"):
        distributed.GradientReducer(params, distributed.LocalComm())


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_reducer_keeps_nan_inf_zero_size_and_missing_gradients_right() -> None:
    """(Guard: non-finite gradients reach every rank, zero-size and gradient-less parameters
    come back as they should, in float16 too.)"""

    def work(comm: Any) -> Any:
        xp = nb.namespace()
        empty, a, b, unused = (
            _param(xp, (0, 3)),
            _param(xp, (2,)),
            _param(xp, (2,)),
            _param(xp, (1,)),
        )
        unused.grad = None
        if comm.rank == 1:
            a.grad = xp.asarray([xp.nan, 1.0], dtype=a.data.dtype)
            b.grad = xp.asarray([xp.inf, 1.0], dtype=b.data.dtype)
        distributed.GradientReducer([empty, a, b, unused], comm).reduce(0.5)
        return empty.grad.shape, np.asarray(a.grad), np.asarray(b.grad), unused.grad

    for dtype in ("float64", "float16"):
        for shape, a, b, unused in _each_rank(2, work, dtype=dtype):
            assert shape == (0, 3) and unused is None
            assert np.isnan(a[0]) and a[1] == 1.0 and a.dtype == np.dtype(dtype)
            assert np.isposinf(b[0]) and b[1] == 1.0


def test_nccl_without_a_usable_gpu_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """init("nccl") on a machine without CUDA raised a bare AttributeError ("module
    'torch._C' has no attribute '_cuda_setDevice'"), and a local rank beyond the GPUs a
    bare torch error."""
    torch = pytest.importorskip("torch")
    from nnbackend.backends import collectives
    from nnbackend.errors import BackendUnavailableError

    found = {"engine": "torch", "rank": 0, "size": 1, "local_rank": 0, "local_size": 1}
    if not torch.cuda.is_available():  # the real failure of a CPU-only machine
        with pytest.raises(BackendUnavailableError, match="no CUDA GPU"):
            collectives.torch_communicator("nccl", found, lambda a: None)

    def no_such_device(index: int) -> None:
        raise RuntimeError("CUDA error: invalid device ordinal")

    monkeypatch.setattr(torch.cuda, "set_device", no_such_device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(BackendUnavailableError, match="local rank 2 has no GPU"):
        collectives.torch_communicator("nccl", {**found, "local_rank": 2}, lambda a: None)


@pytest.mark.parametrize("when", ["step", "epoch"])
def test_a_stop_on_one_rank_stops_every_rank_after_the_same_step(when: str, on_ranks: Any) -> None:
    """A callback that set stop_training on one rank only (or a Ctrl-C that reached one rank
    first) stopped that rank alone: the others went on into the next step's collective and
    met the stopped rank's epoch-end collective instead (a ShapeError on threads, a hang on
    MPI). The ranks now decide together, and the others note an early stop."""

    class StopOnRankZero(nb.callbacks.Callback):
        def __init__(self, rank: int) -> None:
            self.rank = rank

        def on_step_end(self, trainer: Any, history: Any) -> None:
            if when == "step" and self.rank == 0 and trainer.step == 3:
                trainer.stop_training = True

        def on_epoch_end(self, trainer: Any, history: Any) -> None:
            if when == "epoch" and self.rank == 0 and trainer.epoch == 1:
                trainer.stop_training = True

    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((40, 4)), rng.integers(0, 3, 40)

    def work(comm: Any) -> Any:
        world = distributed.World("threads", comm.rank, comm.size, comm=comm)
        model = nn.Sequential(nn.Linear(4, 3))
        trainer = nb.Trainer(
            model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1), world=world
        )
        history = trainer.fit(
            x, t, epochs=5, batch_size=10, seed=1, progress=False,
            callbacks=[StopOnRankZero(comm.rank)],
        )  # fmt: skip
        return (
            history.steps,
            history.stopped_early,
            [np.asarray(p.data) for p in model.parameters()],
        )

    (s0, early0, w0), (s1, early1, w1) = on_ranks(2, work, backend="numpy", dtype="float64")
    assert s0 == s1 == (3 if when == "step" else 8)
    assert early0 and early1
    for a, b in zip(w0, w1, strict=True):
        np.testing.assert_array_equal(a, b)


def test_torch_collective_failures_are_collective_errors() -> None:
    """gloo's timeouts and lost connections came out as bare RuntimeErrors (CollectiveError
    lived above the backends); they are CollectiveErrors naming the collective now."""
    pytest.importorskip("torch")
    from nnbackend.backends.collectives import TorchComm
    from nnbackend.namespace import backend_for

    class Broken:
        class ReduceOp:
            SUM = "sum"

        def all_reduce(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("[../third_party/gloo/...] Timed out waiting 1800000ms for recv")

        def barrier(self) -> None:
            raise RuntimeError("Connection closed by peer")

    comm = TorchComm("gloo", 0, 2, None, lambda a: backend_for(a)[1])
    comm._dist = Broken()
    with pytest.raises(nb.errors.CollectiveError, match="allreduce_sum failed on rank 0 of 2"):
        comm.allreduce_sum(np.zeros(3))
    with pytest.raises(nb.errors.CollectiveError, match="Connection closed"):
        comm.barrier()
    assert issubclass(nb.errors.CollectiveError, distributed.CollectiveError)


@pytest.mark.parametrize("stop_mid_epoch", [False, True])
def test_ranks_keep_batch_norm_statistics_equal(stop_mid_epoch: bool, on_ranks: Any) -> None:
    """join_world broadcast the parameters but not the buffers, and each rank's BatchNorm
    running statistics then came from its own rows: the ranks evaluated different models,
    and rank 0 saved its own. The buffers start as rank 0's and are averaged over the ranks
    after every epoch (and when training stops mid-epoch)."""
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((48, 4)) * 3.0 + 1.0, rng.integers(0, 3, 48)

    class StopAtStep5(nb.callbacks.Callback):
        def on_step_end(self, trainer: Any, history: Any) -> None:
            if stop_mid_epoch and trainer.step == 5:
                trainer.stop_training = True

    def work(comm: Any) -> Any:
        world = distributed.World("threads", comm.rank, comm.size, comm=comm)
        model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
        bn = model[1]
        if comm.rank == 1:  # rank 1 starts elsewhere: join_world must fix it
            bn.running_mean.data = bn.running_mean.data + 7.0
        trainer = nb.Trainer(
            model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1), world=world
        )
        trainer.fit(
            x, t, epochs=2, batch_size=12, seed=1, progress=False, callbacks=[StopAtStep5()]
        )
        return np.asarray(bn.running_mean.data), np.asarray(bn.running_var.data)

    (m0, v0), (m1, v1) = on_ranks(2, work, backend="numpy", dtype="float64")
    np.testing.assert_array_equal(m0, m1)
    np.testing.assert_array_equal(v0, v1)
    assert np.all(np.abs(m0) < 7.0) and not np.allclose(v0, 1.0)
