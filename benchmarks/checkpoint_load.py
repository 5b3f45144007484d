"""Loading a 100 MB float32 checkpoint: ``nb.load`` of a safetensors file and of a ``.npz``
file, against ``numpy.load`` of the ``.npz`` and ``safetensors.numpy.load_file``.

Every load runs in a fresh worker process (peak memory is per process), the four
implementations interleaved in shuffled rounds; each worker reports the load's wall time, the
peak resident memory the load added (``VmHWM`` reset through ``/proc/self/clear_refs`` just
before it, then read after it), and its minor page faults. The file is in the page cache for
every load (the first round warms it), so this measures parsing, checking and copying, not the
disk. ``nb.load`` does more than the two readers: it checks the file against the model, then
converts each tensor into the model's dtype and replaces the parameter (the old arrays are
freed when the load returns), so its peak holds the new parameters while the old ones live.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import Options, Row, Skip, register, row

ROOT = Path(__file__).resolve().parent.parent
SIDE = 5000  # one 5000x5000 float32 Linear: 100 MB of weights

WORKER = r"""
import json, os, resource, sys, time
kind, path, side = sys.argv[1], sys.argv[2], int(sys.argv[3])

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0

import numpy as np
if kind.startswith("nb."):
    import nnbackend as nb
    from nnbackend import nn
    with nb.using(backend="numpy", dtype="float32"):
        model = nn.Linear(side, side)
else:
    from safetensors.numpy import load_file

def load():
    if kind.startswith("nb."):
        nb.load(model, path)
        return model.weight.data
    if kind == "numpy.load":
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    return load_file(path)

rss0 = status("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
    reset = True
except OSError:
    reset = False
faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t0 = time.perf_counter()
out = load()
seconds = time.perf_counter() - t0
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
print(json.dumps({"seconds": seconds, "peak_added": status("VmHWM") - rss0 if reset else None,
                  "faults": faults}))
"""

KINDS = {
    "nb.load safetensors": "m.safetensors",
    "nb.load npz": "m.npz",
    "numpy.load npz": "m.npz",
    "safetensors load_file": "m.safetensors",
}


def _worker(kind: str, path: Path, side: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    name = "numpy.load" if kind == "numpy.load npz" else kind
    out = subprocess.run(
        [sys.executable, "-c", WORKER, name, str(path), str(side)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@register("checkpoint_load", "load a 100 MB float32 checkpoint: time, added peak RSS, faults")
def checkpoint_load(opts: Options) -> list[Row]:
    try:
        import safetensors.numpy  # noqa: F401
    except ImportError as exc:
        raise Skip(f"safetensors is not installed ({exc}): pip install safetensors") from None
    import nnbackend as nb
    from nnbackend import nn

    side = 1000 if opts.quick else SIDE
    rounds = 3 if opts.quick else 9
    with tempfile.TemporaryDirectory() as tmp:
        with nb.using(backend="numpy", dtype="float32"):
            model = nn.Linear(side, side)
        nb.save(model, Path(tmp) / "m.safetensors")
        nb.save(model, Path(tmp) / "m.npz")
        del model
        samples: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
        rng = random.Random(opts.seed)
        for round_ in range(rounds + 1):
            order = list(KINDS)
            rng.shuffle(order)
            for kind in order:
                result = _worker(kind, Path(tmp) / KINDS[kind], side)
                if round_:  # the first round warms the page cache and the imports
                    samples[kind].append(result)
    mb = (side * side + side) * 4 / 1e6
    rows: list[Row] = []
    med = {k: {f: statistics.median(s[f] for s in v) for f in v[0]} for k, v in samples.items()}
    for kind in KINDS:
        m = med[kind]
        rows.append(row(f"{kind}: time", m["seconds"] * 1e3, "ms"))
        if m["peak_added"] is not None:
            rows.append(row(f"{kind}: added peak RSS", m["peak_added"] / 1e6, "MB"))
        rows.append(row(f"{kind}: minor page faults", m["faults"], "faults"))
    base = med["safetensors load_file"]["seconds"]
    rows.append(
        row(
            "nb.load safetensors / safetensors load_file",
            med["nb.load safetensors"]["seconds"] / base,
            "x",
            at_most=1.5,
            note=f"{mb:.0f} MB of float32; nb.load also validates and replaces the parameters",
        )
    )
    rows.append(
        row(
            "nb.load safetensors / nb.load npz",
            med["nb.load safetensors"]["seconds"] / med["nb.load npz"]["seconds"],
            "x",
            at_most=1.0,
        )
    )
    return rows
