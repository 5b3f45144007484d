"""torch CPU float16 step / float32 step (issue 13), each case in its own process.

Every (tree, config, dtype) case runs in a fresh worker process (an SGD step of an MLP with
softmax cross-entropy, median of ``steps`` timed steps after 3 warm-up steps); the cases are
interleaved in shuffled rounds, so a change of machine load hits every case alike. Compare
source trees by giving several ``--tree`` paths (each goes first on ``PYTHONPATH``).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.torch_float16_ratio \\
        --tree /work/main/src --tree src --rounds 5 [--busy] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Any

CONFIGS = {
    "tiny": ((2, 10, 3), 30, "Sigmoid", 300),
    "medium": ((784, 1024, 1024, 10), 256, "ReLU", 20),
}


def worker(cfg: str, backend: str, dtype: str, steps: int) -> float:
    """Median microseconds of one training step (run inside the worker process)."""
    import numpy as np

    import nnbackend as nb
    from nnbackend import nn, optim

    sizes, batch, act, _ = CONFIGS[cfg]
    with nb.using(backend=backend, dtype=dtype):
        xp = nb.namespace()
        layers: list[Any] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(getattr(nn, act)())
        model = nn.Sequential(*layers)
        opt = optim.SGD(model.parameters(), lr=0.01)
        rng = np.random.default_rng(0)
        x = xp.asarray(rng.standard_normal((batch, sizes[0])).astype(dtype))
        t = xp.asarray(rng.integers(0, sizes[-1], batch))
        loss_fn = nn.SoftmaxCrossEntropy()

        def step() -> None:
            opt.zero_grad()
            loss_fn(model(x), t).backward()
            opt.step()

        for _ in range(3):
            step()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Drive the workers; print and return the medians and the float16/float32 ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", help="a src/ directory (repeatable)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--busy", action="store_true", help="one busy process on the cores")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", nargs=4, metavar=("CFG", "BACKEND", "DTYPE", "STEPS"))
    args = parser.parse_args(argv)
    if args.worker:
        cfg, backend, dtype, steps = args.worker
        print(json.dumps({"median_us": worker(cfg, backend, dtype, int(steps))}))
        return {}
    trees = [os.path.abspath(t) for t in (args.tree or ["src"])]
    cases = [(tree, cfg, dt) for tree in trees for cfg in CONFIGS for dt in ("float32", "float16")]
    data: dict[tuple[str, str, str], list[float]] = {c: [] for c in cases}
    busy = None
    if args.busy:
        busy = subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", "while True: pass"])
    load_before = os.getloadavg()
    try:
        for _ in range(args.rounds):
            random.shuffle(cases)
            for tree, cfg, dt in cases:
                env = dict(os.environ, PYTHONPATH=tree)
                cmd = [sys.executable, "-m", "benchmarks.torch_float16_ratio", "--worker"]
                cmd += [cfg, args.backend, dt, str(CONFIGS[cfg][3])]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                data[(tree, cfg, dt)].append(json.loads(out.stdout.splitlines()[-1])["median_us"])
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    result: dict[str, Any] = {
        "backend": args.backend,
        "busy": args.busy,
        "rounds": args.rounds,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "trees": {},
    }
    for tree in trees:
        row = {}
        for cfg in CONFIGS:
            f32 = statistics.median(data[(tree, cfg, "float32")])
            f16 = statistics.median(data[(tree, cfg, "float16")])
            row[cfg] = {"float32_us": round(f32, 1), "float16_us": round(f16, 1)}
            row[cfg]["ratio"] = round(f16 / f32, 3)
        result["trees"][tree] = row
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return result


if __name__ == "__main__":
    main()
