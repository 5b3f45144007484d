"""Compile nnbackend's fused CuPy kernels with NVRTC, on a machine without a GPU.

CuPy compiles an ``ElementwiseKernel`` at its first call, on a device, so a kernel that does
not compile would show up only on a GPU machine (and nnbackend's update kernels would then
quietly fall back to the generic update). This script writes each kernel of
``nnbackend.backends.cupy`` out the way CuPy's code generator does (the type placeholders as
typedefs, each array parameter a reference to its element, scalars by value, the preamble
first), compiles it with NVRTC for float16, float32 and float64, and prints the arithmetic
instructions of the PTX with their counts (``fma.rn.f32`` shows an update rounded once; the
loop is unrolled, so counts are per unrolled body). It exits 1 when a kernel fails to compile.
It checks compilation and the instructions, not the values: the ``gpu`` tests in
``tests/test_cupy_backend.py`` do that on a GPU.

Needs cupy, NVRTC and the CUDA headers, all from PyPI::

    pip install cupy-cuda13x nvidia-cuda-nvrtc nvidia-cuda-runtime
    python scripts/compile_cupy_kernels.py            # compute_80 (A100); --arch compute_90
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

# Parameters passed as Python scalars (by value): every other one is an array.
SCALARS = {"nnbackend_sub_scaled": {"a"}}
# Each dtype a kernel is compiled for, with the C type CuPy gives its placeholder.
DTYPES = {"float16": "float16", "float32": "float", "float64": "double"}
# The arithmetic worth seeing in the PTX.
SHOWN = ("fma.", "mul.f", "sub.f", "add.f", "cvt.rn.f", "neg.f", "selp.f", "ex2", "rcp")


def include_dirs(cupy: Any) -> list[str]:
    """CuPy's headers (with the CCCL it vendors) and the CUDA headers of the pip wheels."""
    core = Path(cupy.__file__).parent / "_core" / "include"
    cccl = core / "cupy" / "_cccl"
    found = [core, cccl / "thrust", cccl / "libcudacxx", cccl / "cub"]
    for site in map(Path, sys.path):
        found += sorted(site.glob("nvidia/cu*/include"))
    return [str(d) for d in found if d.is_dir()]


def source(kernel: Any, ctype: str) -> str:
    """``kernel``'s code as CuPy generates it, with every placeholder ``ctype``."""
    scalars = SCALARS.get(kernel.name, set())
    params, body = [], []
    for p in (*kernel.in_params, *kernel.out_params):
        t = p.ctype if p.dtype is not None else "T"
        if p.name in scalars:
            params.append(f"const {t} {p.name}")
            continue
        params.append(f"{'const ' if p.is_const else ''}{t}* _raw_{p.name}")
        body.append(f"{'const ' if p.is_const else ''}{t} &{p.name} = _raw_{p.name}[i];")
    return "\n".join(
        [
            "#include <cupy/complex.cuh>",
            "#include <cupy/carray.cuh>",
            "#include <cupy/float16.cuh>",
            f"typedef {ctype} T;",
            kernel.preamble,
            f'extern "C" __global__ void {kernel.name}({", ".join(params)}, long long n) {{',
            "  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;",
            "       i += (long long)blockDim.x * gridDim.x) {",
            *("    " + line for line in body),
            kernel.operation,
            "  }",
            "}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="compute_80", help="NVRTC -arch (default compute_80)")
    args = parser.parse_args(argv)
    import cupy
    from cupy.cuda import compiler

    from nnbackend.backends import cupy as backend

    kernels = dict(backend.update_kernels(cupy))
    kernels["lstm_cell"], kernels["lstm_cell_backward"] = backend.lstm_elementwise_kernels(cupy)
    options = (f"-arch={args.arch}", "--std=c++17", *(f"-I{d}" for d in include_dirs(cupy)))
    failed = 0
    for label, kernel in kernels.items():
        for dtype, ctype in DTYPES.items():
            try:
                program = compiler._NVRTCProgram(source(kernel, ctype), f"{kernel.name}.cu")
                ptx = program.compile(options=options)
            except Exception as error:  # a CompileException carries NVRTC's log
                failed += 1
                print(f"FAILED {label} {dtype}:\n{error}\n")
                continue
            text = ptx[0] if isinstance(ptx, tuple) else ptx
            text = text.decode() if isinstance(text, bytes) else str(text)
            ops = [line.split()[0].lstrip("{") for line in text.splitlines() if line.strip()]
            shown = Counter(op for op in ops if op.startswith(SHOWN))
            counts = " ".join(f"{op} x{n}" for op, n in shown.items())
            print(f"ok {label} {dtype}: {counts}")
    print(f"{failed} failed" if failed else "all compiled")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
