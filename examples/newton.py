"""Newton's method with second derivatives from the engine (DeZero steps 29 and 33).

Minimise ``f(x) = x**4 - 2 x**2`` from ``x = 2``: each step divides the first derivative by
the second, both computed by back-propagation (``create_graph=True`` records the first
backward pass, so its result can be differentiated again). The iterates are
2.0, 1.4545..., 1.1510..., 1.0253..., 1.0009..., 1.0000012..., 1.000000000002..., and after
**7 steps** ``x`` is exactly 1.0 in float64. ``newton_2d`` runs Newton's method on the
two-variable Rosenbrock function with the Hessian built from Hessian-vector products: from
(-1.2, 1) it is within 1e-10 of the minimum (1, 1) after **6 steps**.

    python examples/newton.py                 # numpy, float64
    python examples/newton.py --backend torch
"""

from __future__ import annotations

import argparse

import nnbackend as nb

#: Steps after which the 1-D iteration from x = 2 has reached x = 1 to float64 precision.
STEPS = 7


def f(x: nb.Tensor) -> nb.Tensor:
    """The function minimised: ``x**4 - 2 x**2`` (minima at x = -1 and x = 1)."""
    return x**4 - 2.0 * x**2


def newton(x0: float = 2.0, steps: int = STEPS) -> list[float]:
    """The iterates of Newton's method on :func:`f` from ``x0`` (``steps + 1`` values)."""
    x = nb.Tensor(nb.namespace().asarray(x0), requires_grad=True)
    history = [x.item()]
    for _ in range(steps):
        y = f(x)
        y.backward(create_graph=True)  # x.grad = f'(x), itself a Tensor in the graph
        gx = x.grad
        x.grad = None
        gx.backward()  # x.grad = f''(x)
        gx2 = x.grad
        x = nb.Tensor(x.data - gx.data / gx2, requires_grad=True)
        history.append(x.item())
    return history


def rosenbrock(v: nb.Tensor) -> nb.Tensor:
    """``(1 - a)**2 + 100 (b - a**2)**2`` for ``v = (a, b)``; its minimum is at (1, 1)."""
    a, b = v[0], v[1]
    return (1.0 - a) ** 2 + 100.0 * (b - a**2) ** 2


def newton_2d(start: tuple[float, float] = (-1.2, 1.0), steps: int = 6) -> list[list[float]]:
    """Newton's method on :func:`rosenbrock`: the Hessian is assembled column by column from
    Hessian-vector products (``nb.grad`` of the gradient), then a 2x2 solve."""
    xp = nb.namespace()
    v = nb.Tensor(xp.asarray(list(start)), requires_grad=True)
    history = [v.tolist()]
    for _ in range(steps):
        (g,) = nb.grad(rosenbrock(v), v, create_graph=True)
        cols = [nb.grad((g * xp.asarray(e)).sum(), v)[0].tolist() for e in ([1.0, 0.0], [0.0, 1.0])]
        (h11, h21), (h12, h22) = cols
        g1, g2 = g.tolist()
        det = h11 * h22 - h12 * h21
        step = [(h22 * g1 - h12 * g2) / det, (h11 * g2 - h21 * g1) / det]
        v = nb.Tensor(v.data - xp.asarray(step), requires_grad=True)
        history.append(v.tolist())
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", help="numpy, torch, cupy, array_api_strict (default: active)")
    args = parser.parse_args()
    with nb.using(backend=args.backend, dtype="float64"):
        for i, x in enumerate(newton()):
            print(f"step {i}: x = {x!r}")
        for i, v in enumerate(newton_2d()):
            print(f"2-D step {i}: (a, b) = ({v[0]:.12f}, {v[1]:.12f})")


if __name__ == "__main__":
    main()
