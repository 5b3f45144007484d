"""The chapter-6 LSTM language model step (2 LSTM layers of 650 units, vocabulary 10000,
batch 20, 35 time steps, dropout 0.5, weight tying, gradient clipping, SGD), float32:

    engine_numpy   nnbackend on numpy (fused LSTM nodes)
    book_numpy     the book's own code (benchmarks/_book_lstm.py) on NumPy
    torch_cpu      PyTorch nn.LSTM (2 layers) on the CPU
    engine_cupy    nnbackend on cupy                  (--gpu)
    book_cupy      the book's code with cupy as np    (--gpu)
    torch_cuda     PyTorch nn.LSTM on CUDA            (--gpu)

Each implementation runs in its own worker process (OpenBLAS's and OpenMP's idle threads spin
after each call and would slow the next implementation in the same process); the parent asks
the workers in turn, in shuffled rounds, for a few timed steps each, and reports medians, the
load average, page faults per step and each worker's peak RSS. A step is forward, loss,
backward, clipping and the SGD update on one batch of random word ids, ending with the loss
read back to the host (which also waits for a GPU).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.lstm_lm_step
    python -m benchmarks.lstm_lm_step --gpu            # on a CUDA machine with cupy
    python -m benchmarks.lstm_lm_step --quick --impls engine_numpy,book_numpy

Targets (issue 15): engine_numpy no slower than book_numpy; engine_cupy >= 10x engine_numpy.
Results: benchmarks/results/lstm_lm_step.json (lstm_lm_step_gpu.json with --gpu).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._workers import ROOT, peak_rss_mib, worker_env

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
    """Build the step, warm it up, then answer 'run K' with K step times (one JSON line)."""
    import resource

    try:
        step = _make(impl)
        step()
        step()
    except Exception as exc:  # reported to the parent as a skip, with the reason
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        k = int(line.split()[1])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        times, losses = [], []
        for _ in range(k):
            t0 = time.perf_counter()
            losses.append(step())
            times.append(time.perf_counter() - t0)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(
            json.dumps(
                {
                    "times": times,
                    "faults": (usage.ru_minflt - before) / k,
                    "maxrss_mb": peak_rss_mib(),
                    "loss": losses[-1],
                }
            ),
            flush=True,
        )


def _start(impl: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.lstm_lm_step", "--worker", impl],
        cwd=ROOT,
        env=worker_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline() or '{"error": "the worker died"}')


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
    p.add_argument("--dry-run", action="store_true", help="toy sizes, 2 rounds, not saved")
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    if args.dry_run:
        os.environ[SMALL_ENV] = "1"
        args.no_save, args.quick = True, True
    impls = args.impls.split(",") if args.impls else list(GPU_IMPLS if args.gpu else CPU_IMPLS)
    rounds, steps = (3, 1) if args.quick else (args.rounds, args.steps)
    started = time.perf_counter()
    workers, skipped = {}, {}
    for impl in impls:
        proc, hello = _start(impl)
        if "error" in hello:
            skipped[impl] = hello["error"]
            proc.wait()
            print(f"skipped {impl}: {hello['error']}", flush=True)
        else:
            workers[impl] = proc
    samples: dict[str, list[float]] = {k: [] for k in workers}
    last: dict[str, dict[str, Any]] = {}
    order = list(workers)
    rng = random.Random(0)
    for r in range(rounds):
        rng.shuffle(order)
        for impl in order:
            proc = workers[impl]
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"run {steps}\n")
            proc.stdin.flush()
            reply = json.loads(proc.stdout.readline())
            samples[impl] += reply["times"]
            last[impl] = reply
        print(
            f"round {r + 1}/{rounds}: "
            + ", ".join(f"{k} {statistics.median(v) * 1e3:.0f} ms" for k, v in samples.items()),
            flush=True,
        )
    for proc in workers.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    med = {k: statistics.median(v) for k, v in samples.items()}
    rows = []
    for impl, m in med.items():
        rows.append(
            {
                "name": f"{impl}: step",
                "value": m * 1e3,
                "unit": "ms",
                "target": None,
                "passed": None,
                "note": f"{len(samples[impl])} steps; {last[impl]['faults']:.0f} page faults/step; "
                f"peak RSS {last[impl]['maxrss_mb']:.0f} MB; last loss {last[impl]['loss']:.3f}",
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
        out.write_text(json.dumps(document, indent=1) + "\n")
        print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
