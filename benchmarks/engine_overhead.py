"""What one graph node costs: the engine's per-op overhead on top of the array operation.

(a) A chain of identity :class:`~nnbackend.autograd.Function` nodes (forward returns its input,
    backward its gradient), 21 nodes long against 1 node long, so the root gradient, the
    leaf's and the timing loop cancel: per node, the forward call with a graph being recorded,
    without (``no_grad()``), and the backward pass's share. A plain Python call of an identity
    function is the floor.
(b) A real op on 10 float32 elements, where the overhead dominates: ``a * b`` on Tensors that
    require gradients against ``a.data * b.data``, and forward plus backward against the same
    products written out in NumPy; PyTorch's autograd for scale (in its own group).

No targets: the step-level targets (``mlp_tiny``) are what counts; these rows say where a
tiny step's time goes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import nnbackend as nb
from benchmarks import Options, Row, Runner, interleaved, register, row, timer
from benchmarks._nets import has_torch
from nnbackend.autograd import Function

CHAIN = 21


class Identity(Function):
    """The cheapest possible node: the engine's own cost and nothing else."""

    grad_may_alias = False

    def forward(self, x: Any) -> Any:
        return x

    def backward(self, gy: Any) -> Any:
        return gy


def chain(x: Any, n: int) -> Any:
    for _ in range(n):
        x = Identity()(x)
    return x


def _identity(a: Any) -> Any:
    return a


def raw_chain(a: Any, n: int) -> Any:
    for _ in range(n):
        a = _identity(a)
    return a


def _no_grad(runner: Runner) -> Runner:
    def run(number: int) -> float:
        with nb.no_grad():
            return runner(number)

    return run


def _chain_rows(opts: Options) -> list[Row]:
    xd = np.linspace(0.0, 1.0, 10, dtype=np.float32)
    x = nb.Tensor(xd, requires_grad=True)
    g = np.ones(10, dtype=np.float32)
    env = {"chain": chain, "raw_chain": raw_chain, "x": x, "xd": xd, "g": g}
    runners: dict[str, Runner] = {}
    for n in (1, CHAIN):
        env[f"n{n}"] = n
        runners[f"raw {n}"] = timer(f"raw_chain(xd, n{n})", env)
        runners[f"forward {n}"] = timer(f"chain(x, n{n})", env)
        runners[f"no_grad {n}"] = _no_grad(timer(f"chain(x, n{n})", env))
        runners[f"backward {n}"] = timer(f"x.grad = None; chain(x, n{n}).backward(g)", env)
    t = interleaved(runners, opts)
    per = CHAIN - 1

    def node(kind: str) -> float:
        return (t[f"{kind} {CHAIN}"] - t[f"{kind} 1"]) / per * 1e9

    forward, backward = node("forward"), node("backward") - node("forward")
    return [
        row("identity node: forward, recording", forward, "ns", note="per node, 21 vs 1 node"),
        row("identity node: backward", backward, "ns", note="per node: the pass's share"),
        row("identity node: forward + backward", forward + backward, "ns"),
        row("identity node: forward under no_grad()", node("no_grad"), "ns"),
        row("plain Python call (floor)", node("raw"), "ns"),
    ]


def _op_rows(opts: Options) -> list[Row]:
    ad = np.linspace(0.5, 1.5, 10, dtype=np.float32)
    bd = np.linspace(1.5, 0.5, 10, dtype=np.float32)
    g = np.ones(10, dtype=np.float32)
    a, b = nb.Tensor(ad, requires_grad=True), nb.Tensor(bd, requires_grad=True)
    env = {"a": a, "b": b, "ad": ad, "bd": bd, "g": g}
    fwd = interleaved(
        {
            "raw": timer("ad * bd", env),
            "engine": timer("a * b", env),
            "no_grad": _no_grad(timer("a * b", env)),
        },
        opts,
    )
    both = interleaved(
        {
            "raw": timer("ad * bd; g * bd; g * ad", env),
            "engine": timer("a.grad = None; b.grad = None; (a * b).backward(g)", env),
        },
        opts,
    )
    rows = [
        row("mul(x10): NumPy alone", fwd["raw"] * 1e9, "ns"),
        row(
            "mul(x10): engine forward overhead",
            (fwd.ratio("engine", "raw") - 1) * fwd["raw"] * 1e9,
            "ns",
            note=f"ratio {fwd.ratio('engine', 'raw'):.1f}x; recording a node",
        ),
        row(
            "mul(x10): engine forward overhead under no_grad()",
            (fwd.ratio("no_grad", "raw") - 1) * fwd["raw"] * 1e9,
            "ns",
            note=f"ratio {fwd.ratio('no_grad', 'raw'):.1f}x",
        ),
        row(
            "mul(x10): engine forward + backward / NumPy written out",
            both.ratio("engine", "raw"),
            "x",
            note=f"engine {both['engine'] * 1e6:.2f} us, NumPy {both['raw'] * 1e6:.2f} us "
            "(backward() copies the root gradient it is given)",
        ),
    ]
    if has_torch():
        import torch

        ta = torch.from_numpy(ad.copy()).requires_grad_()
        tb = torch.from_numpy(bd.copy()).requires_grad_()
        tenv = {"ta": ta, "tb": tb, "tg": torch.from_numpy(g)}
        tt = interleaved(
            {
                "forward": timer("ta * tb", tenv),
                "both": timer("ta.grad = None; tb.grad = None; (ta * tb).backward(tg)", tenv),
            },
            opts,
        )
        rows += [
            row("mul(x10): torch autograd forward", tt["forward"] * 1e9, "ns"),
            row("mul(x10): torch autograd forward + backward", tt["both"] * 1e9, "ns"),
        ]
    return rows


@register(
    "engine_overhead",
    "per-node cost of the engine: identity-Function chains, and a*b on 10 elements vs NumPy",
)
def engine_overhead(opts: Options) -> list[Row]:
    return _chain_rows(opts) + _op_rows(opts)
