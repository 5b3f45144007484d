"""``nnbackend.distributed`` with the in-process communicator (one thread per rank): world
detection, the bucketed weighted gradient all-reduce, zero-fill and the has-gradient mask,
``no_sync``, and the Trainer on N ranks equal to one process on the global batch."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend import distributed, nn, optim, registry
from nnbackend.distributed import _world
from nnbackend.errors import ArgumentError


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, nb.Tensor) else a
    return np.asarray(registry.get(registry.backend_of(a)).to_host(a))


def _names(backend_dtype: tuple[str, str]) -> dict[str, str]:
    return {"backend": backend_dtype[0], "dtype": backend_dtype[1]}


# -- world detection --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ("none", 0, 1, 0, 1)),
        (
            {"PMI_RANK": "1", "PMI_SIZE": "4", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"},
            ("mpi", 1, 4, 1, 2),
        ),
        (
            {
                "OMPI_COMM_WORLD_RANK": "3",
                "OMPI_COMM_WORLD_SIZE": "8",
                "OMPI_COMM_WORLD_LOCAL_RANK": "1",
                "OMPI_COMM_WORLD_LOCAL_SIZE": "4",
            },
            ("mpi", 3, 8, 1, 4),
        ),
        (
            {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"},
            ("torch", 2, 4, 0, 2),
        ),
        (
            {"SLURM_PROCID": "5", "SLURM_NTASKS": "6", "SLURM_LOCALID": "2"},
            ("mpi", 5, 6, 2, 6),
        ),
    ],
)
def test_detect_reads_the_launchers_environment(env: dict[str, str], expected: tuple) -> None:
    found = distributed.detect(env)
    got = tuple(found[k] for k in ("engine", "rank", "size", "local_rank", "local_size"))
    assert got == expected


def test_detect_rejects_a_non_integer_rank() -> None:
    with pytest.raises(ArgumentError, match="PMI_SIZE"):
        distributed.detect({"PMI_SIZE": "two"})


def test_init_without_a_launcher_is_a_world_of_one(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "WORLD_SIZE", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_world, "_current", None)
    w = distributed.init()
    assert (w.engine, w.rank, w.size, w.is_main) == ("none", 0, 1, True)
    assert distributed.world() is w and distributed.is_main()
    distributed.barrier()  # nothing to wait for
    model = nn.Linear(2, 2)
    assert nb.Trainer(model, nn.MSELoss(), optim.SGD(model.parameters())).world is None


def test_init_rejects_an_unknown_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_world, "_current", None)
    with pytest.raises(ArgumentError, match="mpi, torch, nccl"):
        distributed.init("carrier-pigeon")


@given(seed=st.integers(0, 2**31 - 1), size=st.integers(2, 64))
@settings(max_examples=50, deadline=None)
def test_rank_seeds_differ_between_ranks_and_repeat(seed: int, size: int) -> None:
    seeds = [distributed.rank_seed(seed, r) for r in range(size)]
    assert len(set(seeds)) == size
    assert seeds == [distributed.rank_seed(seed, r) for r in range(size)]
    assert all(0 <= s < 2**63 for s in seeds)


# -- the reducer --------------------------------------------------------------------------------
def _params(xp: Any, shapes: list[tuple[int, ...]]) -> list[nb.Tensor]:
    return [nb.Tensor(xp.zeros(s), requires_grad=True) for s in shapes]


def test_buckets_group_by_dtype_and_size(xp: Any) -> None:
    ps = _params(xp, [(3,), (2, 2), (5,), (1,)])
    other = nb.Tensor(xp.zeros((2,), dtype=xp.int64))
    reducer = distributed.GradientReducer([*ps, other], distributed.LocalComm(), bucket_size=7)
    # 3 + 4 fit in 7; 5 opens a new bucket, 1 joins it; the int64 one travels apart.
    assert reducer.buckets() == [[0, 1], [2, 3], [4]]
    with pytest.raises(ArgumentError, match="bucket_size"):
        distributed.GradientReducer(ps, distributed.LocalComm(), bucket_size=0)


@given(
    n0=st.integers(1, 50),
    n1=st.integers(1, 50),
    bucket=st.integers(1, 12),
    seed=st.integers(0, 1000),
)
@settings(max_examples=15, deadline=None)
def test_reduce_weights_each_rank_by_its_share(
    n0: int, n1: int, bucket: int, seed: int, on_ranks: Any
) -> None:
    rng = np.random.default_rng(seed)
    shapes = [(3,), (2, 2), (4,)]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(2)]
    shares = [n0 / (n0 + n1), n1 / (n0 + n1)]

    def work(comm: Any) -> list[np.ndarray]:
        xp = nb.namespace()
        ps = _params(xp, shapes)
        for p, g in zip(ps, grads[comm.rank], strict=True):
            p.grad = xp.asarray(g)
        reducer = distributed.GradientReducer(ps, comm, bucket_size=bucket)
        reducer.reduce(shares[comm.rank])
        assert reducer.collectives == len(reducer.buckets())
        return [_host(p.grad) for p in ps]

    out = on_ranks(2, work, backend="numpy", dtype="float64")
    for k in range(len(shapes)):
        expected = shares[0] * grads[0][k] + shares[1] * grads[1][k]
        np.testing.assert_array_equal(out[0][k], out[1][k])  # bitwise the same on every rank
        np.testing.assert_allclose(out[0][k], expected, rtol=4 * np.finfo(np.float64).eps)


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_missing_gradients_are_zero_filled_and_masked(backend: str, on_ranks: Any) -> None:
    def work(comm: Any) -> list[Any]:
        xp = nb.namespace()
        used, rank1_only, unused = _params(xp, [(2,), (3,), (2,)])
        used.grad = xp.asarray([1.0, 2.0]) * (comm.rank + 1)
        if comm.rank == 1:
            rank1_only.grad = xp.asarray([4.0, 6.0, 8.0])
        distributed.GradientReducer([used, rank1_only, unused], comm).reduce(0.5)
        return [None if p.grad is None else _host(p.grad) for p in (used, rank1_only, unused)]

    for grads in on_ranks(2, work, backend=backend, dtype="float64"):
        np.testing.assert_array_equal(grads[0], [1.5, 3.0])
        np.testing.assert_array_equal(grads[1], [2.0, 3.0, 4.0])  # rank 0 had none: zeros
        assert grads[2] is None  # no rank had one: still None everywhere


def test_no_sync_leaves_the_gradients_local(on_ranks: Any) -> None:
    def work(comm: Any) -> tuple[np.ndarray, np.ndarray]:
        xp = nb.namespace()
        (p,) = _params(xp, [(2,)])
        p.grad = xp.asarray([1.0, 1.0]) * (comm.rank + 1)
        reducer = distributed.GradientReducer([p], comm)
        with reducer.no_sync():
            reducer.reduce(0.5)
        local = _host(p.grad)
        reducer.reduce(0.5)
        return local, _host(p.grad)

    (local0, summed0), (local1, summed1) = on_ranks(2, work, backend="numpy", dtype="float64")
    np.testing.assert_array_equal(local0, [1.0, 1.0])
    np.testing.assert_array_equal(local1, [2.0, 2.0])
    np.testing.assert_array_equal(summed0, [1.5, 1.5])
    np.testing.assert_array_equal(summed1, summed0)


# -- the Trainer on two ranks ---------------------------------------------------------------------
def _data(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)), rng.integers(0, 3, n)


def _fit(world: Any, make_opt: Callable[[Any], Any], *, n: int, batch: int, **kw: Any) -> Any:
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    # Rank 1 starts elsewhere: the broadcast from rank 0 must fix it. (Own generators: the
    # module-level one is shared by the threads.)
    rng = np.random.default_rng(99 if world is not None and world.rank == 1 else 0)
    xp = nb.namespace()
    for p in model.parameters():
        p.data = xp.asarray(0.5 * rng.standard_normal(tuple(p.data.shape)))
    trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), make_opt(model), world=world)
    x, t = _data(n)
    history = trainer.fit(
        x, t, epochs=kw.pop("epochs", 5), batch_size=batch, seed=1, progress=False, **kw
    )
    return [_host(p.data) for p in model.parameters()], history


OPTIMIZERS = {
    "SGD": lambda m: optim.SGD(m.parameters(), lr=0.5),
    "Momentum": lambda m: optim.Momentum(m.parameters(), lr=0.1),
    "Adam": lambda m: optim.Adam(m.parameters(), lr=0.01),
}


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize(("n", "batch", "extra"), [(60, 12, {}), (61, 9, {"max_grad": 0.05})])
def test_two_ranks_equal_one_process_on_the_global_batch(
    backend: str, name: str, n: int, batch: int, extra: dict[str, Any], on_ranks: Any
) -> None:
    """Uneven splits (9 rows: 4 and 5; the last batch of 7: 3 and 4) and clipping included."""
    make = OPTIMIZERS[name]
    with nb.using(backend=backend, dtype="float64"):
        single, h1 = _fit(None, make, n=n, batch=batch, **extra)

    def work(comm: Any) -> Any:
        w = distributed.World("threads", comm.rank, comm.size, comm=comm)
        return _fit(w, make, n=n, batch=batch, **extra)

    (w0, h0), (w1, hr1) = on_ranks(2, work, backend=backend, dtype="float64")
    assert h0.steps == hr1.steps == h1.steps
    for a, b, c in zip(w0, w1, single, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=0, atol=1e-12)
    # The reported loss and accuracy are the global ones, the same on every rank.
    assert h0.epoch_loss == hr1.epoch_loss
    assert h0.epoch_accuracy == hr1.epoch_accuracy
    np.testing.assert_allclose(h0.epoch_loss, h1.epoch_loss, rtol=1e-12)
    assert h0.epoch_accuracy == h1.epoch_accuracy


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def _metrics() -> list[Any]:
    return ["accuracy", nb.metrics.Mean("mean_output", lambda y, t: nb.namespace().mean(y))]


def test_metrics_are_reduced_over_every_rank(on_ranks: Any) -> None:
    with nb.using(backend="numpy", dtype="float64"):
        _, single = _fit(None, OPTIMIZERS["SGD"], n=61, batch=9, metrics=_metrics())

    def work(comm: Any) -> Any:
        w = distributed.World("threads", comm.rank, comm.size, comm=comm)
        return _fit(w, OPTIMIZERS["SGD"], n=61, batch=9, metrics=_metrics())[1]

    h0, h1 = on_ranks(2, work, backend="numpy", dtype="float64")
    assert h0.metrics == h1.metrics
    assert h0.metrics["accuracy"] == single.metrics["accuracy"]
    np.testing.assert_allclose(
        h0.metrics["mean_output"], single.metrics["mean_output"], rtol=1e-12, atol=1e-14
    )


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_one_rank_overflowing_skips_the_step_on_every_rank(on_ranks: Any) -> None:
    """The loss scaler's decision is the global one: an infinite gradient on rank 1 only
    skips the step on rank 0 too (wrapping the optimizer instead would hang or diverge)."""

    def work(comm: Any) -> tuple[int, list[np.ndarray], list[np.ndarray]]:
        nb.random.seed(0)
        model = nn.Linear(4, 3)
        scaler = nb.precision.LossScaler(init_scale=8.0)
        w = distributed.World("threads", comm.rank, comm.size, comm=comm)
        trainer = nb.Trainer(
            model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters()), world=w,
            loss_scaler=scaler,
        )  # fmt: skip
        trainer.join_world()
        xp = nb.namespace()
        x, t = _data(4)
        if comm.rank == 1:
            x[0, 0] = np.inf
        before = [_host(p.data).copy() for p in model.parameters()]
        trainer.train_step(xp.asarray(x), xp.asarray(t))
        return scaler.skipped, before, [_host(p.data) for p in model.parameters()]

    for skipped, before, after in on_ranks(2, work, backend="numpy", dtype="float64"):
        assert skipped == 1
        for a, b in zip(before, after, strict=True):
            np.testing.assert_array_equal(a, b)


def test_train_step_in_a_loop_of_your_own_equals_one_process(on_ranks: Any) -> None:
    x, t = _data(16)

    def run(comm: Any) -> list[np.ndarray]:
        w = None if comm is None else distributed.World("threads", comm.rank, 2, comm=comm)
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        rng = np.random.default_rng(0 if comm is None else comm.rank)
        xp = nb.namespace()
        for p in model.parameters():
            p.data = xp.asarray(0.5 * rng.standard_normal(tuple(p.data.shape)))
        trainer = nb.Trainer(
            model, nn.SoftmaxCrossEntropy(), optim.Adam(model.parameters()), world=w
        )
        trainer.join_world()
        rows = slice(None) if comm is None else slice(8 * comm.rank, 8 * comm.rank + 8)
        for _ in range(5):
            trainer.train_step(xp.asarray(x[rows]), xp.asarray(t[rows]))
        return [_host(p.data) for p in model.parameters()]

    with nb.using(backend="numpy", dtype="float64"):
        single = run(None)
    for weights in on_ranks(2, run, backend="numpy", dtype="float64"):
        for a, c in zip(weights, single, strict=True):
            np.testing.assert_allclose(a, c, rtol=0, atol=1e-12)


def test_a_batch_too_small_for_every_rank_is_an_error(on_ranks: Any) -> None:
    def work(comm: Any) -> Any:
        w = distributed.World("threads", comm.rank, comm.size, comm=comm)
        return _fit(w, OPTIMIZERS["SGD"], n=61, batch=20)  # the last batch holds 1 row

    with pytest.raises(ArgumentError, match="leaves a rank without rows"):
        on_ranks(2, work, backend="numpy", dtype="float64")


def test_only_rank_zero_prints_progress(capsys: pytest.CaptureFixture[str], on_ranks: Any) -> None:
    def work(comm: Any) -> None:
        w = distributed.World("threads", comm.rank, comm.size, comm=comm)
        model = nn.Linear(4, 3)
        trainer = nb.Trainer(
            model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters()), world=w
        )
        x, t = _data(16)
        trainer.fit(x, t, epochs=3, batch_size=8, seed=0, progress="log")

    on_ranks(2, work, backend="numpy", dtype="float64")
    assert capsys.readouterr().err.count(" step ") == 3  # one line per epoch, one rank


def test_only_rank_zero_writes_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = nn.Linear(3, 2)
    monkeypatch.setattr(_world, "_current", distributed.World("threads", 1, 2))
    nb.save(model, tmp_path / "rank1.safetensors")
    assert not (tmp_path / "rank1.safetensors").exists()
    monkeypatch.setattr(_world, "_current", distributed.World("threads", 0, 2))
    nb.save(model, tmp_path / "rank0.safetensors")
    monkeypatch.setattr(_world, "_current", None)
    other = nn.Linear(3, 2)
    nb.load(other, tmp_path / "rank0.safetensors")  # a single process reads it
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        np.testing.assert_array_equal(_host(a.data), _host(b.data))


def test_info_shows_the_world(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_world, "_current", None)
    for name in ("OMPI_COMM_WORLD_SIZE", "WORLD_SIZE", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PMI_SIZE", "4")
    monkeypatch.setenv("PMI_RANK", "3")
    report = nb.info()
    assert report.world["engine"] == "mpi" and report.world["rank"] == 3
    assert "engine mpi, rank 3 of 4" in str(report)
    monkeypatch.setattr(_world, "_current", distributed.World("threads", 1, 2, device="cuda:1"))
    assert "engine threads, rank 1 of 2, device cuda:1 (joined)" in str(nb.info())


def test_launch_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nnbackend import cli

    script = tmp_path / "s.py"
    script.write_text("")
    monkeypatch.setattr("shutil.which", lambda *a, **k: None)
    assert cli.main(["launch", "-n", "2", str(script)]) == 2
    assert "pip install 'nnbackend[mpi]'" in capsys.readouterr().err
    assert cli.main(["launch", "-n", "2", str(tmp_path / "missing.py")]) == 2
    assert "no script" in capsys.readouterr().err


# -- the torch.distributed engine's plumbing (NCCL's logic with fakes: no GPU here) -------------
class _FakeCupyArray:
    """Stands in for a CuPy array: DLPack out, ``copy()``; its type lives in "cupy"."""

    __module__ = "cupy._fake"

    def __init__(self, a: np.ndarray) -> None:
        self.a = a

    def copy(self) -> np.ndarray:
        return self.a.copy()


def test_nccl_path_moves_cupy_arrays_through_dlpack(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    import types

    from nnbackend.backends import collectives

    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(from_dlpack=np.from_dlpack))
    original = np.arange(4.0)
    wire, kind = collectives.to_wire(_FakeCupyArray(original), "cuda:0", None)
    assert kind == "cupy" and type(wire).__module__.startswith("torch")
    wire.mul_(2)  # what the all-reduce does to it
    np.testing.assert_array_equal(original, [0.0, 1.0, 2.0, 3.0])  # the caller's array is kept
    back = collectives.from_wire(wire, kind, None, None)
    np.testing.assert_array_equal(back, [0.0, 2.0, 4.0, 6.0])


def test_nccl_engine_picks_the_local_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from nnbackend.backends import collectives

    chosen: list[int] = []
    fake = types_namespace(
        is_available=lambda: True,
        is_initialized=lambda: True,
        get_rank=lambda: 3,
        get_world_size=lambda: 4,
    )
    monkeypatch.setattr(collectives, "_dist", lambda: fake)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    found = {"engine": "torch", "rank": 3, "size": 4, "local_rank": 1, "local_size": 2}
    comm = collectives.torch_communicator("nccl", found, lambda a: None)
    assert (comm.engine, comm.rank, comm.size, comm.device) == ("nccl", 3, 4, "cuda:1")
    assert chosen == [1]


def test_torch_engine_without_a_rendezvous_says_how_to_set_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("torch")
    from nnbackend.backends import collectives

    monkeypatch.delenv("MASTER_ADDR", raising=False)
    found = {"engine": "mpi", "rank": 0, "size": 2, "local_rank": 0, "local_size": 2}
    with pytest.raises(ArgumentError, match="MASTER_ADDR and MASTER_PORT"):
        collectives.torch_communicator("torch", found, lambda a: None)


def types_namespace(**kw: Any) -> Any:
    import types

    return types.SimpleNamespace(**kw)


def test_torch_engine_world_of_one_reduces_torch_and_numpy_arrays(run_python: Any) -> None:
    pytest.importorskip("torch")
    code = """
        import numpy as np, torch
        import nnbackend as nb
        from nnbackend import distributed
        w = distributed.init("torch")
        assert (w.engine, w.rank, w.size) == ("torch", 0, 1), w
        t = torch.arange(3.0)
        out = w.comm.allreduce_sum(t)
        assert isinstance(out, torch.Tensor) and out.tolist() == [0.0, 1.0, 2.0]
        a = np.arange(3.0)
        out = w.comm.broadcast(a, 0)
        assert isinstance(out, np.ndarray) and out.tolist() == [0.0, 1.0, 2.0]
        assert w.comm.bcast_obj({"seed": 7}) == {"seed": 7}
        w.comm.barrier()
        print("ok")
    """
    proc = run_python(code, env={"MASTER_ADDR": None, "RANK": None, "WORLD_SIZE": None})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_blas_threads_are_shared_among_the_local_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    limited: list[int] = []
    threadpoolctl = pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(threadpoolctl, "threadpool_limits", limited.append)
    assert distributed.limit_blas_threads(3) == 2
    assert os.environ["OMP_NUM_THREADS"] == "2" and limited == [2]
    assert distributed.limit_blas_threads(16) == 1  # never zero


def test_a_dataloader_is_split_like_arrays(on_ranks: Any) -> None:
    from nnbackend.data import DataLoader

    x, t = _data(40)

    def run(comm: Any, seed: int | None = 0) -> list[np.ndarray]:
        w = None if comm is None else distributed.World("threads", comm.rank, 2, comm=comm)
        model = nn.Linear(4, 3)
        xp = nb.namespace()
        rng = np.random.default_rng(0 if comm is None else comm.rank)
        for p in model.parameters():
            p.data = xp.asarray(rng.standard_normal(tuple(p.data.shape)))
        trainer = nb.Trainer(
            model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.5), world=w
        )
        loader = DataLoader(x, t, batch_size=10, seed=seed, prefetch=False)
        trainer.fit(loader, epochs=3, progress=False)
        return [_host(p.data) for p in model.parameters()]

    with nb.using(backend="numpy", dtype="float64"):
        single = run(None)
    for weights in on_ranks(2, run, backend="numpy", dtype="float64"):
        for a, c in zip(weights, single, strict=True):
            np.testing.assert_allclose(a, c, rtol=0, atol=1e-12)
    with pytest.raises(ArgumentError, match=r"DataLoader\(seed=...\)"):
        on_ranks(2, lambda c: run(c, seed=None), backend="numpy", dtype="float64")


def test_only_rank_zero_writes_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    history = nb.History(loss=[1.0, 0.5], accuracy=[None, None], report_steps=[1, 2])
    monkeypatch.setattr(_world, "_current", distributed.World("threads", 1, 2))
    assert history.plot(tmp_path / "loss1.png") == tmp_path / "loss1.png"
    assert not (tmp_path / "loss1.png").exists()
    monkeypatch.setattr(_world, "_current", distributed.World("threads", 0, 2))
    history.plot(tmp_path / "loss0.png")
    assert (tmp_path / "loss0.png").stat().st_size > 0


def test_init_with_a_seed_gives_each_rank_its_own_random_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_world, "_current", None)
    draws = []
    for comm in distributed.thread_group(2):
        distributed.init(comm=comm, seed=5)  # one after the other: no collective runs here
        draws.append(_host(nb.random.uniform((4,))))
        nb.random.seed(distributed.rank_seed(5, comm.rank))
        np.testing.assert_array_equal(draws[-1], _host(nb.random.uniform((4,))))
    assert not np.array_equal(draws[0], draws[1])
