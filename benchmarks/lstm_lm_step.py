"""The chapter-6 LSTM language model step (2 LSTM layers of 650 units, vocabulary 10000,
batch 20, 35 time steps, dropout 0.5, weight tying, gradient clipping, SGD), float32:

    engine_numpy   nnbackend on numpy (fused LSTM nodes)
    book_numpy     the book's own code (benchmarks/_book_lstm.py) on NumPy
    torch_cpu      PyTorch nn.LSTM (2 layers) on the CPU
    engine_cupy    nnbackend on cupy                  (--gpu)
    book_cupy      the book's code with cupy as np    (--gpu)
    torch_cuda     PyTorch nn.LSTM on CUDA            (--gpu)

Each implementation runs in its own worker process (OpenBLAS's and OpenMP's idle threads spin
after each call and would slow the next implementation in the same process; the machinery is
``benchmarks/_workers.py``: every answer awaited at most ``--timeout`` seconds, every worker
killed when one fails or on Ctrl-C); the parent asks the workers in turn, in shuffled rounds,
for a few timed steps each, and reports medians, the load average, page faults per step over
all timed rounds, and for each worker its peak RSS (lifetime) and, apart from setup, its RSS
after setup and the timed loop's growth over it. A step is forward, loss, backward, clipping
and the SGD update on one batch of random word ids, ending with the loss read back to the
host (which also waits for a GPU). A worker that cannot run here (no GPU) is skipped, with
its reason.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.lstm_lm_step
    python -m benchmarks.lstm_lm_step --gpu            # on a CUDA machine with cupy
    python -m benchmarks.lstm_lm_step --quick --impls engine_numpy,book_numpy

Targets (issue 15): engine_numpy no slower than book_numpy; engine_cupy >= 10x engine_numpy.
Results: benchmarks/results/lstm_lm_step.json (lstm_lm_step_gpu.json with --gpu), written
atomically.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import write_atomically
from benchmarks._workers import (
    ROOT,
    Rounds,
    WorkerProcess,
    WorkerSkipped,
    close_all,
    kill_all,
    memory_note,
    run_rounds,
    serve,
)

RESULTS = ROOT / "benchmarks" / "results"
V, D, H, N, T = 10000, 650, 650, 20, 35
# --dry-run: the same plumbing at toy sizes (passed to the workers through the environment).
SMALL_ENV = "NNBACKEND_BENCH_SMALL"
if os.environ.get(SMALL_ENV):
    V, D, H, N, T = 200, 16, 16, 4, 5
LR, CLIP, DROPOUT = 20.0, 0.25, 0.5
CPU_IMPLS = ("engine_numpy", "book_numpy", "torch_cpu")
GPU_IMPLS = ("engine_cupy", "book_cupy", "torch_cuda", "engine_numpy")


def _batch(xp: Any, seed: int = 0) -> tuple[Any, Any]:
    import numpy as np

    ids = np.random.default_rng(seed).integers(0, V, size=(N, T + 1))
    xs, ts = ids[:, :-1].astype("int64"), ids[:, 1:].astype("int64")
    return xp.asarray(xs), xp.asarray(ts)


def _engine(backend: str) -> Any:
    import nnbackend as nb
    from nnbackend import nn, optim
    from nnbackend.nn import functional as F

    ctx = nb.using(backend=backend, dtype="float32")
    ctx.__enter__()
    nb.random.seed(0)
    xp = nb.namespace()

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(V, D)
            self.embed.weight.data = nn.init.normal((V, D), 0.01)
            self.drops = nn.ModuleList(nn.Dropout(DROPOUT) for _ in range(3))
            self.lstm1 = nn.LSTM(D, H, stateful=True)
            self.lstm2 = nn.LSTM(H, H, stateful=True)
            self.bias = nn.Parameter(nn.init.zeros((V,)))

        def forward(self, xs: Any, ts: Any) -> Any:
            h, _ = self.lstm1(self.drops[0](self.embed(xs)))
            h, _ = self.lstm2(self.drops[1](h))
            logits = F.linear(self.drops[2](h), self.embed.weight.T, self.bias)
            return F.softmax_cross_entropy(logits, ts)

    model = Model()
    params = list(model.parameters())
    opt = optim.SGD(params, lr=LR)
    xs, ts = _batch(xp)

    def step() -> float:
        loss = model(xs, ts)
        opt.zero_grad()
        loss.backward()
        optim.clip_grad_norm(params, CLIP)
        opt.step()
        return loss.item()

    return step


def _book(module: str) -> Any:
    import importlib

    from benchmarks._book_lstm import BookBetterRnnlm

    xp = importlib.import_module(module)
    model = BookBetterRnnlm(xp, V, D, H, DROPOUT)
    xs, ts = _batch(xp)
    return lambda: model.step(xs, ts, LR, CLIP)


def _torch(device: str) -> Any:
    import torch

    torch.manual_seed(0)

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(V, D)
            self.lstm = torch.nn.LSTM(D, H, num_layers=2, dropout=DROPOUT, batch_first=True)
            self.drop = torch.nn.Dropout(DROPOUT)
            self.out = torch.nn.Linear(H, V)
            self.out.weight = self.embed.weight  # weight tying

        def forward(self, xs: Any, state: Any) -> Any:
            h, state = self.lstm(self.drop(self.embed(xs)), state)
            return self.out(self.drop(h)), state

    model = Model().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    xs, ts = (a.to(device) for a in _batch(torch))
    state: list[Any] = [None]

    def step() -> float:
        logits, st = model(xs, state[0])
        state[0] = tuple(s.detach() for s in st)  # truncated BPTT, as stateful layers
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), ts.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        return loss.item()

    return step


def _make(impl: str) -> Any:
    return {
        "engine_numpy": lambda: _engine("numpy"),
        "engine_cupy": lambda: _engine("cupy"),
        "book_numpy": lambda: _book("numpy"),
        "book_cupy": lambda: _book("cupy"),
        "torch_cpu": lambda: _torch("cpu"),
        "torch_cuda": lambda: _torch("cuda"),
    }[impl]()


def worker(impl: str) -> None:
    """Build the step, warm it up (2 steps), then serve ``run K`` and ``stats``
    (``_workers.serve``); an error while building or warming up answers ``skip REASON``."""
    serve(lambda: _make(impl), warmup=2, skip_errors=(Exception,))


class Worker(WorkerProcess):
    """One implementation's worker (``python -m benchmarks.lstm_lm_step --worker IMPL``)."""

    def __init__(self, impl: str, *, timeout_s: float | None = None) -> None:
        super().__init__("benchmarks.lstm_lm_step", [impl], impl, timeout_s=timeout_s)


def measure(
    impls: list[str] | tuple[str, ...],
    rounds: int,
    steps: int,
    *,
    timeout_s: float | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Time ``impls``, each in a worker process of its own, ``steps`` steps a worker a round
    for ``rounds`` shuffled rounds; ``timeout_s`` bounds every answer (a start builds the
    model and runs 2 steps). Workers that cannot run here are listed in ``skipped``. Every
    worker is killed and reaped when anything fails or is interrupted."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a whole number, 1 or more, not {steps!r}")
    if timeout_s is None:
        timeout_s = max(WorkerProcess.timeout_s, 200.0 * steps)
    workers: dict[str, Worker] = {}
    skipped: dict[str, str] = {}
    try:
        for impl in impls:
            try:
                workers[impl] = Worker(impl, timeout_s=timeout_s)
            except WorkerSkipped as exc:
                skipped[impl] = exc.reason
                print(f"skipped {impl}: {exc.reason}", flush=True)
        measured = (
            run_rounds(workers, rounds, steps=steps, progress=progress)
            if workers
            else Rounds({}, {}, {})
        )
        stats = close_all(workers)
    except BaseException:
        kill_all(workers.values())
        raise
    return {
        "workers": {
            impl: {
                "median_s": statistics.median(measured.times[impl]),
                "steps": steps * len(measured.times[impl]),
                "faults_per_step": measured.faults_per_step(impl),
                "last_loss": measured.last[impl].get("last"),
                **stats[impl],
                "samples_s": measured.times[impl],
            }
            for impl in workers
        },
        "skipped": skipped,
        "load_average_during": [round(v, 2) for v in measured.load],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--gpu", action="store_true", help="the GPU set: " + ", ".join(GPU_IMPLS))
    p.add_argument("--impls", help="comma-separated implementations (default: the set)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=3, help="timed steps per worker per round")
    p.add_argument("--quick", action="store_true", help="3 rounds of 1 step")
    p.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/...)")
    p.add_argument("--no-save", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="toy sizes, 3 rounds, not saved")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for any one answer of a worker before killing it (default: "
        "600, or 200 per step if longer)",
    )
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    for flag, value in (("--rounds", args.rounds), ("--steps", args.steps)):
        if value < 1:
            p.error(f"{flag} must be 1 or more, not {value}")
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        p.error(f"--timeout must be a positive number of seconds, not {args.timeout}")
    if args.dry_run:
        os.environ[SMALL_ENV] = "1"
        args.no_save, args.quick = True, True
    impls = args.impls.split(",") if args.impls else list(GPU_IMPLS if args.gpu else CPU_IMPLS)
    rounds, steps = (3, 1) if args.quick else (args.rounds, args.steps)
    started = time.perf_counter()

    def progress(r: int, so_far: Rounds) -> None:
        print(
            f"round {r + 1}/{rounds}: "
            + ", ".join(
                f"{k} {statistics.median(v) * 1e3:.0f} ms" for k, v in so_far.times.items()
            ),
            flush=True,
        )

    measured = measure(impls, rounds, steps, timeout_s=args.timeout, progress=progress)
    workers, skipped = measured["workers"], measured["skipped"]
    med = {k: w["median_s"] for k, w in workers.items()}
    rows = []
    for impl, w in workers.items():
        loss = w["last_loss"]
        rows.append(
            {
                "name": f"{impl}: step",
                "value": w["median_s"] * 1e3,
                "unit": "ms",
                "target": None,
                "passed": None,
                "note": f"{w['steps']} steps; {w['faults_per_step']:.0f} page faults/step; "
                f"{memory_note(w)}; loaded {'+'.join(w['libraries'])}"
                + (f"; last loss {loss:.3f}" if isinstance(loss, float) else ""),
            }
        )

    def ratio(name: str, a: str, b: str, target: str | None, ok: Any) -> None:
        if a in med and b in med:
            value = med[a] / med[b]
            rows.append(
                {
                    "name": name,
                    "value": value,
                    "unit": "x",
                    "target": target,
                    "passed": None if ok is None else bool(ok(value)),
                    "note": None,
                }
            )

    ratio("engine numpy / book numpy", "engine_numpy", "book_numpy", "<= 1.0", lambda v: v <= 1.0)
    ratio("engine numpy / torch CPU", "engine_numpy", "torch_cpu", None, None)
    ratio(
        "engine numpy / engine cupy (speed-up)",
        "engine_numpy",
        "engine_cupy",
        ">= 10",
        lambda v: v >= 10,
    )
    ratio("book numpy / book cupy (speed-up)", "book_numpy", "book_cupy", None, None)
    ratio("engine cupy / torch CUDA", "engine_cupy", "torch_cuda", None, None)
    ratio("engine cupy / book cupy", "engine_cupy", "book_cupy", None, None)
    try:
        from benchmarks import machine_facts

        machine = machine_facts()
    except Exception as exc:  # the facts are a courtesy; the numbers stand without them
        machine = {"error": str(exc), "load_average": list(os.getloadavg())}
    checks = [r["passed"] for r in rows if r["passed"] is not None]
    document = {
        "case": "lstm_lm_step_gpu" if args.gpu else "lstm_lm_step",
        "description": f"chapter-6 LSTM LM step (2x LSTM {H}, V {V}, batch {N}, T {T}, "
        "dropout, tying, clip, SGD), float32, one worker process per implementation",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": bool(args.quick),
        "rounds": rounds,
        "steps_per_round": steps,
        "duration_s": round(time.perf_counter() - started, 2),
        "skipped": None if workers else "; ".join(f"{k}: {v}" for k, v in skipped.items()),
        "skipped_impls": skipped,
        "load_average_during": measured["load_average_during"],
        "workers": workers,
        "passed": all(checks) if checks else None,
        "rows": rows,
        "machine": machine,
    }
    for r in rows:
        target = f" (target {r['target']})" if r["target"] else ""
        print(f"{r['name']}: {r['value']:.3f} {r['unit']}{target} {r['note'] or ''}")
    if not args.no_save:
        out = args.out or RESULTS / f"{document['case']}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(out, json.dumps(document, indent=1) + "\n")
        print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
