"""One training step of an MLP: nnbackend's engine against a hand-written NumPy network with
explicit backward in the book's style, and against PyTorch on the CPU, in one process.

Cases:
    mlp_tiny   2-10-3 sigmoid network, batch 30 (the book's chapter 1): engine / hand <= 1.5.
    mlp_medium 784-1024-1024-10 ReLU network, batch 256: engine / hand <= 1.10, engine / torch
               <= 1.0, float64 / float32 >= 1.6, float16 / float32 <= 1.5.

A step is forward, softmax-cross-entropy, backward and an SGD update. The hand-written network
is the book's: each Affine layer computes dx, the first one included (the engine skips that
product because the data needs no gradient, which is part of what is measured).
"""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise
from typing import Any

import numpy as np

import nnbackend as nb
from benchmarks import Options, Row, interleaved, register, row
from nnbackend import nn, optim


class HandMLP:
    """The book's layered network with explicit backward, in plain NumPy."""

    def __init__(self, sizes: list[int], activation: str, dtype: str, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.params = []
        for n_in, n_out in pairwise(sizes):
            w = (rng.normal(size=(n_in, n_out)) * np.sqrt(1.0 / n_in)).astype(dtype)
            self.params.append([w, np.zeros(n_out, dtype=dtype)])
        self.activation = activation

    def step(self, x: Any, t: Any, lr: float) -> Any:
        caches = []
        h = x
        last = len(self.params) - 1
        for i, (w, b) in enumerate(self.params):
            a = h @ w + b
            caches.append(h)
            if i < last:
                if self.activation == "relu":
                    mask = a <= 0
                    a[mask] = 0
                    caches.append(mask)
                else:
                    a = 1 / (1 + np.exp(-a))
                    caches.append(a)
            h = a
        # softmax with cross entropy
        n = h.shape[0]
        z = h - h.max(axis=1, keepdims=True)
        e = np.exp(z)
        p = e / e.sum(axis=1, keepdims=True)
        loss = -np.log(p[np.arange(n), t] + 1e-7).sum() / n
        dout = p.copy()
        dout[np.arange(n), t] -= 1
        dout /= n
        for i in range(last, -1, -1):
            w, b = self.params[i]
            if i < last:
                act = caches.pop()
                if self.activation == "relu":
                    dout[act] = 0
                else:
                    dout = dout * act * (1 - act)
            x_in = caches.pop()
            dw = x_in.T @ dout
            db = dout.sum(axis=0)
            dout = dout @ w.T  # the book's Affine computes dx, the first layer's included
            w -= lr * dw
            b -= lr * db
        return loss


def _engine(sizes: list[int], activation: str, dtype: str, backend: str = "numpy") -> Any:
    with nb.using(backend=backend, dtype=dtype):
        nb.random.seed(0)
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(pairwise(sizes)):
            layers.append(nn.Linear(n_in, n_out))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU() if activation == "relu" else nn.Sigmoid())
        model = nn.Sequential(*layers)
    loss_fn = nn.SoftmaxCrossEntropy()
    opt = optim.SGD(model.parameters(), lr=0.01)

    def step(x: Any, t: Any) -> Any:
        opt.zero_grad()
        loss = loss_fn(model(x), t)
        loss.backward()
        opt.step()
        return loss

    return step


def _torch_step(sizes: list[int], activation: str) -> Any:
    import torch

    layers: list[Any] = []
    for i, (n_in, n_out) in enumerate(pairwise(sizes)):
        layers.append(torch.nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU() if activation == "relu" else torch.nn.Sigmoid())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x: Any, t: Any) -> Any:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), t)
        loss.backward()
        opt.step()
        return loss

    return step


def _data(batch: int, n_in: int, n_out: int, dtype: str) -> tuple[Any, Any]:
    rng = np.random.default_rng(1)
    return rng.normal(size=(batch, n_in)).astype(dtype), rng.integers(0, n_out, batch)


def _runner(step: Any, *args: Any) -> Any:
    def run(number: int) -> float:
        import time

        start = time.perf_counter()
        for _ in range(number):
            step(*args)
        return time.perf_counter() - start

    return run


def _has_torch() -> bool:
    return "torch" in nb.available_backends()


@register("mlp_tiny", "2-10-3 sigmoid MLP step (batch 30, float32): engine vs hand NumPy, torch")
def mlp_tiny(opts: Options) -> list[Row]:
    sizes = [2, 10, 3]
    x, t = _data(30, 2, 3, "float32")
    hand = HandMLP(sizes, "sigmoid", "float32")
    hand_run = _runner(hand.step, x, t, 0.01)
    engine_run = _runner(_engine(sizes, "sigmoid", "float32"), x, t)
    # torch is timed in its own group: its OpenMP threads keep spinning after a step and would
    # slow whichever variant runs next in a shared round.
    times = interleaved({"hand": hand_run, "engine": engine_run}, opts)
    rows = [
        row("tiny: hand-written NumPy step", times["hand"] * 1e6, "us"),
        row("tiny: engine step", times["engine"] * 1e6, "us"),
        row("tiny: engine / hand", times.ratio("engine", "hand"), "x", at_most=1.5),
    ]
    if _has_torch():
        import torch

        torch_run = _runner(_torch_step(sizes, "sigmoid"), torch.from_numpy(x), torch.from_numpy(t))
        vs_torch = interleaved({"hand": hand_run, "torch": torch_run}, opts)
        rows.append(row("tiny: torch CPU / hand", vs_torch.ratio("torch", "hand"), "x"))
    return rows


@register("mlp_medium", "784-1024-1024-10 ReLU MLP step (batch 256): engine vs hand, torch, dtypes")
def mlp_medium(opts: Options) -> list[Row]:
    sizes = [784, 1024, 1024, 10]
    # A step takes tens of milliseconds: fewer rounds, one step per round.
    opts = replace(opts, rounds=9 if opts.quick else 41, round_s=0.0, warmup_s=0.5)
    x32, t = _data(256, 784, 10, "float32")
    hand = HandMLP(sizes, "relu", "float32")
    runners = {
        "hand": _runner(hand.step, x32, t, 0.01),
        "engine": _runner(_engine(sizes, "relu", "float32"), x32, t),
    }
    if _has_torch():
        import torch

        runners["torch"] = _runner(
            _torch_step(sizes, "relu"), torch.from_numpy(x32), torch.from_numpy(t)
        )
    times = interleaved(runners, opts)
    flops = 6 * 256 * sum(a * b for a, b in pairwise(sizes))
    rows = [
        row("medium: hand-written NumPy step", times["hand"] * 1e3, "ms"),
        row("medium: engine step", times["engine"] * 1e3, "ms"),
        row("medium: engine / hand", times.ratio("engine", "hand"), "x", at_most=1.10),
        row("medium: engine GFLOP/s (6*batch*weights)", flops / times["engine"] / 1e9, "GFLOP/s"),
    ]
    if "torch" in runners:
        rows.append(
            row("medium: engine / torch CPU", times.ratio("engine", "torch"), "x", at_most=1.0)
        )
        rows.append(row("medium: torch CPU / hand", times.ratio("torch", "hand"), "x"))

    dtypes = {
        name: _runner(_engine(sizes, "relu", name), x32.astype(name), t)
        for name in ("float64", "float32", "float16")
    }
    by_dtype = interleaved(dtypes, opts)
    rows += [
        row(
            "medium: float64 / float32 step",
            by_dtype.ratio("float64", "float32"),
            "x",
            at_least=1.6,
        ),
        row(
            "medium: float16 / float32 step", by_dtype.ratio("float16", "float32"), "x", at_most=1.5
        ),
    ]
    return rows
