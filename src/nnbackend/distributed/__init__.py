"""Data-parallel training on established engines: MPI (mpi4py), torch.distributed (gloo,
NCCL).

>>> import nnbackend.distributed as dist
>>> w = dist.init()          # a world of one process when no launcher set anything
>>> (w.rank, w.size, w.engine)
(0, 1, 'none')

Launch a script on N processes with ``mpiexec -n N python train.py`` (or
``nnbackend launch -n N train.py``); a :class:`nnbackend.Trainer` built after
:func:`init` splits every global batch across the ranks and all-reduces the gradients right
after ``backward``, so N ranks end with the weights one process gets on the global batch.
"""

from nnbackend.distributed._comm import (
    CollectiveError,
    Communicator,
    LocalComm,
    MPIComm,
    ThreadComm,
    thread_group,
)
from nnbackend.distributed._world import (
    World,
    barrier,
    detect,
    init,
    is_main,
    limit_blas_threads,
    rank_seed,
    world,
)
from nnbackend.distributed.reducer import GradientReducer

__all__ = [
    "CollectiveError",
    "Communicator",
    "GradientReducer",
    "LocalComm",
    "MPIComm",
    "ThreadComm",
    "World",
    "barrier",
    "detect",
    "init",
    "is_main",
    "limit_blas_threads",
    "rank_seed",
    "thread_group",
    "world",
]
