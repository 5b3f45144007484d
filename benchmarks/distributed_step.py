"""Data-parallel costs: all-reduce latency and bandwidth of an engine, and the medium MLP's
step (784-1024-1024-10 ReLU, float32, global batch 512) on the ranks of a job.

Run alone (a world of one) and on N ranks; every rank runs the same script:

    python benchmarks/distributed_step.py
    mpiexec -n 2 python benchmarks/distributed_step.py                 # MPI (MPICH wheel)
    torchrun --nproc-per-node 2 benchmarks/distributed_step.py         # gloo

Rank 0 prints one JSON line per measurement: medians over the repetitions, the load average and
the BLAS threads per rank (``init()`` gives each rank cores / local ranks). On the GPU, with
``NNBACKEND=cupy`` and ``distributed.init("nccl")`` under torchrun, the same script measures the
NCCL path.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import numpy as np

import nnbackend as nb
from nnbackend import distributed, nn, optim


def _median_seconds(fn, reps: int, comm) -> float:
    times = []
    for _ in range(reps):
        comm.barrier()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    engine = sys.argv[1] if len(sys.argv) > 1 else None
    world = distributed.init(engine, seed=0)
    comm = world.comm
    xp = nb.namespace(dtype="float32")

    def report(**fields) -> None:
        if world.is_main:
            fields.update(engine=world.engine, ranks=world.size, load=os.getloadavg()[0])
            print(json.dumps(fields), flush=True)

    for n in (1, 1_000, 100_000, 3_000_000) if world.size > 1 else ():
        a = xp.ones((n,), dtype=xp.float32)
        reps = 50 if n <= 100_000 else 10
        comm.allreduce_sum(a)  # warm-up
        s = _median_seconds(lambda a=a: comm.allreduce_sum(a), reps, comm)
        report(what="allreduce", floats=n, ms=s * 1e3, gb_per_s=4 * n / s / 1e9)

    with nb.using(dtype="float32"):
        model = nn.Sequential(
            nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
        )
        trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), 0.01))
        rng = np.random.default_rng(0)
        batch = 512
        lo = batch * world.rank // world.size
        hi = batch * (world.rank + 1) // world.size
        x = xp.asarray(rng.standard_normal((batch, 784)).astype("float32")[lo:hi])
        t = xp.asarray(rng.integers(0, 10, batch)[lo:hi])
        trainer.join_world()
        for _ in range(2):
            trainer.train_step(x, t)
        s = _median_seconds(lambda: trainer.train_step(x, t), 10, comm)
        report(what="mlp_medium_step", global_batch=batch, ms=s * 1e3,
               threads=os.environ.get("OMP_NUM_THREADS"))  # fmt: skip


if __name__ == "__main__":
    main()
