"""One training step of a LeNet-style CNN (batch 64, 1x28x28, float32): nnbackend against
native PyTorch, each implementation in its own worker process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.cnn_step [--threads 1]
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.cnn_step --gpu

The network: Conv2d(1, 6, 5) - ReLU - MaxPool2d(2) - Conv2d(6, 16, 5) - ReLU - MaxPool2d(2) -
Flatten - Linear(256, 120) - ReLU - Linear(120, 84) - ReLU - Linear(84, 10); a step is forward,
softmax cross-entropy, backward and an SGD update.

Workers (CPU run): ``numpy`` (nnbackend on NumPy: im2col + GEMM), ``torch`` (nnbackend on the
torch backend: torch's convolution through the kernels), ``torch_native`` (plain PyTorch on the
CPU). With ``--gpu``: ``cupy`` (nnbackend on CuPy, the portable im2col path with
``cupyx.scatter_add``), ``torch_cuda`` (nnbackend on torch CUDA: cuDNN through the kernels)
and ``torch_native_cuda``; every worker synchronises the device before reading the clock. A GPU
worker that cannot run here (no GPU, cupy missing) answers ``skip REASON`` and is listed as
skipped with its reason; the others are timed. A GPU run where none can run saves nothing, so
the last GPU run's results stay in place.

Why processes: OpenBLAS's and OpenMP's idle threads spin after each GEMM, and slow whatever runs
next in the same process (DESIGN.md, "Measure each implementation in its own process"). The
parent starts one worker per implementation (``benchmarks/_workers.py``: every answer awaited
at most ``--timeout`` seconds, every worker killed when one fails or on Ctrl-C), then asks them
in shuffled order, round after round, to time a fixed number of steps; after its loop a worker
waits, untimed, until its threads stop spinning. It reports medians, the spread, the median of
the per-round ratios with its 90% interval, the load average, and for each worker its page
faults over all timed steps, the libraries it loaded, its peak RSS (lifetime) and, apart from
setup, its RSS after setup and the timed loop's growth over it. The result goes to
``benchmarks/results/cnn_step.json`` (``cnn_step_gpu.json`` with ``--gpu``), written atomically,
unless ``--quick``. Target: numpy within 2x of PyTorch CPU (reported, not enforced).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import median_interval, write_atomically
from benchmarks._workers import (
    WorkerProcess,
    WorkerSkipped,
    close_all,
    kill_all,
    memory_note,
    run_rounds,
    serve,
)

BATCH, SIZE, CLASSES, LR = 64, 28, 10, 0.01
RESULTS = Path(__file__).resolve().parent / "results"
CPU_WORKERS = ("numpy", "torch", "torch_native")
GPU_WORKERS = ("cupy", "torch_cuda", "torch_native_cuda")


def _data(seed: int = 0) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.random((BATCH, 1, SIZE, SIZE), dtype=np.float32)
    t = rng.integers(0, CLASSES, BATCH).astype(np.int64)
    return x, t


def _nnbackend_step(backend: str, device: str | None) -> tuple[Any, Any]:
    """``(step, sync)`` for nnbackend on ``backend``."""
    import nnbackend as nb
    from nnbackend import nn, optim

    target = backend if device is None else f"{backend}:{device}"
    nb.set_backend(backend)
    nb.set_default_dtype("float32")
    nb.random.seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, CLASSES),
    )  # fmt: skip
    if device is not None:
        model.to(target)
    loss_fn = nn.SoftmaxCrossEntropy()
    opt = optim.SGD(model.parameters(), lr=LR)
    x_host, t_host = _data()
    with nb.using(backend=backend, device=device):
        x, t = nb.datasets.to_backend(x_host, "float32"), nb.datasets.to_backend(t_host)

    def step() -> None:
        loss = loss_fn(model(x), t)
        model.zero_grad()
        loss.backward()
        opt.step()

    def sync() -> None:
        if backend == "cupy":
            import cupy

            cupy.cuda.Device().synchronize()
        elif device is not None and device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    return step, sync


def _torch_step(device: str) -> tuple[Any, Any]:
    import torch

    torch.manual_seed(0)
    tnn = torch.nn
    model = tnn.Sequential(
        tnn.Conv2d(1, 6, 5), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
        tnn.Linear(256, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, CLASSES),
    ).to(device)  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    x_host, t_host = _data()
    x, t = torch.from_numpy(x_host).to(device), torch.from_numpy(t_host).to(device)
    loss_fn = tnn.CrossEntropyLoss()

    def step() -> None:
        loss = loss_fn(model(x), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return step, sync


def _make(name: str) -> tuple[Any, Any]:
    if os.environ.get("CNN_STEP_DRY_RUN"):  # --gpu --dry-run: the GPU workers' code on the CPU
        name = {"cupy": "numpy", "torch_cuda": "torch", "torch_native_cuda": "torch_native"}.get(
            name, name
        )
    return {
        "numpy": lambda: _nnbackend_step("numpy", None),
        "torch": lambda: _nnbackend_step("torch", None),
        "torch_native": lambda: _torch_step("cpu"),
        "cupy": lambda: _nnbackend_step("cupy", None),
        "torch_cuda": lambda: _nnbackend_step("torch", "cuda:0"),
        "torch_native_cuda": lambda: _torch_step("cuda"),
    }[name]()


def _build(name: str) -> tuple[Any, Any]:
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and "torch" in name:
        import torch

        torch.set_num_threads(int(threads))
    return _make(name)


def worker(name: str) -> None:
    """Serve ``run N`` (time N steps) and ``stats`` on stdin/stdout (``_workers.serve``). A
    GPU worker whose build or warm-up fails (no GPU, cupy missing) answers ``skip REASON``;
    a CPU worker's failure (or the ``--dry-run`` stand-in's) stays an error."""
    skippable = name in GPU_WORKERS and not os.environ.get("CNN_STEP_DRY_RUN")
    serve(lambda: _build(name), warmup=3, skip_errors=(Exception,) if skippable else ())


class Worker(WorkerProcess):
    """One implementation's worker process (``python -m benchmarks.cnn_step --worker``)."""

    def __init__(self, name: str, threads: int | None = None, *, timeout_s: float | None = None):
        super().__init__("benchmarks.cnn_step", [name], name, threads, timeout_s=timeout_s)


def measure(
    names: tuple[str, ...],
    rounds: int,
    round_s: float,
    threads: int | None = None,
    *,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Time ``names``, each in a worker process of its own, in ``rounds`` shuffled rounds of
    about ``round_s`` seconds; ``timeout_s`` bounds every answer (default: the larger of
    ``WorkerProcess.timeout_s`` and 100 rounds). Workers that cannot run here are listed in
    ``skipped`` (name: reason), not in ``workers``. Every worker is killed and reaped when
    anything fails or is interrupted."""
    if timeout_s is None:
        timeout_s = max(WorkerProcess.timeout_s, 100 * round_s)
    workers: dict[str, Worker] = {}
    skipped: dict[str, str] = {}
    try:
        for name in names:
            try:
                workers[name] = Worker(name, threads, timeout_s=timeout_s)
            except WorkerSkipped as exc:
                skipped[name] = exc.reason
                print(f"skipped {name}: {exc.reason}", flush=True)
        if not workers:
            return {"workers": {}, "skipped": skipped, "load_average_during": []}
        measured = run_rounds(workers, rounds, round_s=round_s)
        stats = close_all(workers)
    except BaseException:
        kill_all(workers.values())
        raise
    times = measured.times
    return {
        "workers": {
            name: {
                "median_ms": statistics.median(times[name]) * 1e3,
                "min_ms": min(times[name]) * 1e3,
                "max_ms": max(times[name]) * 1e3,
                "steps_per_round": measured.steps[name],
                "minor_faults": measured.faults[name],  # over all timed steps
                "faults_per_step": measured.faults_per_step(name),
                **stats[name],
                "samples_ms": [t * 1e3 for t in times[name]],
            }
            for name in workers
        },
        "skipped": skipped,
        "load_average_during": [round(v, 2) for v in measured.load],
    }


def round_ratios(result: dict[str, Any], a: str, b: str) -> list[float]:
    """``a``'s time / ``b``'s time, round by round (the same round: drift cancels)."""
    workers = result["workers"]
    return [x / y for x, y in zip(workers[a]["samples_ms"], workers[b]["samples_ms"], strict=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cnn_step",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--gpu", action="store_true", help="the GPU workers (cupy, torch CUDA)")
    parser.add_argument("--quick", action="store_true", help="a smoke run, not saved")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="with --gpu: run the GPU workers' code on the CPU (numpy for cupy, torch CPU for "
        "CUDA); checks the plumbing, saves nothing",
    )
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="BLAS / OpenMP threads per worker (default: the libraries' own choice); on a "
        "shared machine 1 keeps the workers from fighting over cores",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for any one answer of a worker before killing it (default: "
        "600, or 100 rounds if longer)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be 1 or more, not {args.rounds}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be 1 or more, not {args.threads}")
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        parser.error(f"--timeout must be a positive number of seconds, not {args.timeout}")
    names = GPU_WORKERS if args.gpu else CPU_WORKERS
    if args.dry_run:
        os.environ["CNN_STEP_DRY_RUN"] = "1"  # inherited by the workers
        args.quick = True
    rounds = args.rounds or (3 if args.quick else 15)
    start = time.perf_counter()
    measured = measure(names, rounds, 0.05 if args.quick else 0.4, args.threads,
                       timeout_s=args.timeout)  # fmt: skip
    result, skipped = measured["workers"], measured["skipped"]
    if not result:
        print("nothing measured: every worker was skipped; nothing saved")
        return 0
    ref = "torch_native_cuda" if args.gpu else "torch_native"
    # Every ratio is against the reference: none where it was skipped.
    others = [n for n in result if n != ref] if ref in result else []
    ratios = {
        f"{n} / {ref} ({stat})": result[n][f"{stat}_ms"] / result[ref][f"{stat}_ms"]
        for n in others
        for stat in ("median", "min")
    }
    per_round = {f"{n} / {ref}": round_ratios(measured, n, ref) for n in others}
    round_medians = {
        label: {"median": statistics.median(values), "interval_90": median_interval(values)}
        for label, values in per_round.items()
    }
    for name in result:
        r = result[name]
        print(
            f"{name:>18}: {r['median_ms']:8.3f} ms/step (min {r['min_ms']:.3f}, max "
            f"{r['max_ms']:.3f}); {r['faults_per_step']:.3g} page faults/step while timed, "
            f"{memory_note(r)}, loaded {'+'.join(r['libraries'])}"
        )
    for label, value in ratios.items():
        print(f"{label:>40}: {value:.2f}x")
    for label, each in round_medians.items():
        interval = each["interval_90"]
        text = f"[{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "too few rounds"
        print(f"{label + ' (median of rounds)':>40}: {each['median']:.2f}x, 90% interval {text}")
    print(f"load average during the rounds: {measured['load_average_during']}")
    if not args.quick:
        from benchmarks import machine_facts

        document = {
            "case": "cnn_step_gpu" if args.gpu else "cnn_step",
            "description": "LeNet-style CNN training step, batch 64, 1x28x28, float32, each "
            "implementation in its own worker process",
            "when": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "rounds": rounds,
            "threads_per_worker": args.threads,
            "duration_s": round(time.perf_counter() - start, 2),
            "target": "numpy / torch_native <= 2.0 (reported)",
            "results": result | {"load_average_during": measured["load_average_during"]},
            "skipped_workers": skipped,
            "ratios": ratios,
            "round_ratios": round_medians,
            "machine": machine_facts(),
        }
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{document['case']}.json"
        write_atomically(path, json.dumps(document, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
