"""What nnbackend's namespace costs on top of the backend's own Array API namespace.

(a) A 10-element ``xp.exp`` through ``nnbackend.namespace()`` against the same call through
    array-api-compat's namespace of the same library (``array_api_compat.numpy`` for numpy).
    Target (issue 2): at most 1.05x. The namespace hands out the backend's own function
    object, so the ratio measures noise; the identity is checked as its own row.
(b) ``nnbackend.namespace()`` with unchanged settings, and inside a ``using`` block.
    Target: under 1 µs a call.
(c) A creation function the namespace wraps to fill in the default dtype (``xp.zeros(10)``,
    ``xp.asarray`` of ten Python floats) against the base function: the wrapper's cost in ns.
    For information; no target yet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nnbackend as nb
from benchmarks import NoDevice, Options, Row, Runner, Timings, interleaved, register, row, timer
from nnbackend import registry

EXP_RATIO_TARGET = 1.05
NAMESPACE_US_TARGET = 1.0
CPU_BACKENDS = ("numpy", "array_api_strict", "torch")


def _inside(runner: Runner, **settings: Any) -> Runner:
    """``runner`` executed inside ``nb.using(**settings)``."""

    def run(number: int) -> float:
        with nb.using(**settings):
            return runner(number)

    return run


def _backend_rows(name: str, opts: Options, sync: Callable[[], Any] | None = None) -> list[Row]:
    """Parts (a) and (c) on one backend."""
    base = registry.get(name).load_namespace()  # array-api-compat's (or strict's) namespace
    xp = nb.namespace(name)
    xp32 = nb.namespace(name, "float32")
    x = base.linspace(0.0, 1.0, 10, dtype=base.float64)
    floats = [0.1 * i for i in range(10)]
    env = {
        "base": base,
        "xp": xp,
        "xp32": xp32,
        "x": x,
        "floats": floats,
        "nb": nb,
        "f32": base.float32,
    }

    def t(stmt: str) -> Runner:
        return timer(stmt, env, sync=sync)

    per_call = t("nb.namespace().exp(x)")
    if nb.get_backend() != name:
        per_call = _inside(per_call, backend=name)
    # Small groups, so the variants a ratio compares run next to each other in every round.
    exp = interleaved({"base": t("base.exp(x)"), "xp": t("xp.exp(x)"), "per call": per_call}, opts)
    zeros = interleaved({"base": t("base.zeros(10)"), "xp": t("xp.zeros(10)")}, opts)
    zeros32 = interleaved({"base": t("base.zeros(10, dtype=f32)"), "xp": t("xp32.zeros(10)")}, opts)
    asarray = interleaved({"base": t("base.asarray(floats)"), "xp": t("xp.asarray(floats)")}, opts)

    def overhead(group: Timings) -> float:
        """The wrapper's cost in ns: the paired ratio's excess times the base's median."""
        return (group.ratio("xp", "base") - 1.0) * group["base"] * 1e9

    label = f"{name}:"
    return [
        row(f"{label} xp.exp is the base function", float(xp.exp is base.exp), "bool", at_least=1),
        row(
            f"{label} exp(x10) base",
            exp["base"] * 1e9,
            "ns",
            note=f"rounds' interquartile range {exp.spread('base'):.0%} of the median",
        ),
        row(
            f"{label} exp(x10) namespace / base",
            exp.ratio("xp", "base"),
            "x",
            at_most=EXP_RATIO_TARGET,
            note="xp = nb.namespace() taken once",
        ),
        row(
            f"{label} nb.namespace().exp(x10) / base",
            exp.ratio("per call", "base"),
            "x",
            note="namespace() looked up on every call",
        ),
        row(f"{label} zeros(10) base", zeros["base"] * 1e9, "ns"),
        row(
            f"{label} zeros(10) wrapper overhead",
            overhead(zeros),
            "ns",
            note=f"ratio {zeros.ratio('xp', 'base'):.2f}x",
        ),
        row(
            f"{label} zeros(10) float32 wrapper overhead",
            overhead(zeros32),
            "ns",
            note=f"vs base.zeros(10, dtype=float32); ratio {zeros32.ratio('xp', 'base'):.2f}x",
        ),
        row(
            f"{label} asarray(10 floats) wrapper overhead",
            overhead(asarray),
            "ns",
            note=f"ratio {asarray.ratio('xp', 'base'):.2f}x",
        ),
    ]


def _namespace_rows(opts: Options) -> list[Row]:
    """Part (b): what ``nnbackend.namespace()`` itself costs."""
    import array_api_compat

    base = registry.get(nb.get_backend()).load_namespace()
    x = base.zeros(10)
    env = {"nb": nb, "x": x, "compat": array_api_compat}
    times = interleaved(
        {
            "loop": timer("pass", env),
            "namespace": timer("nb.namespace()", env),
            "namespace using": _inside(timer("nb.namespace()", env), dtype="float32"),
            "namespace nested": _inside(
                _inside(timer("nb.namespace()", env), backend=nb.get_backend()), dtype="float32"
            ),
            "namespace explicit": timer("nb.namespace('numpy', 'float32')", env),
            "array_namespace": timer("nb.array_namespace(x)", env),
            "compat array_namespace": timer("compat.array_namespace(x)", env),
        },
        opts,
    )
    us = {key: times[key] * 1e6 for key in times.samples}
    return [
        row(
            "nb.namespace(), settings unchanged", us["namespace"], "µs", at_most=NAMESPACE_US_TARGET
        ),
        row(
            "nb.namespace() inside using(dtype=...)",
            us["namespace using"],
            "µs",
            at_most=NAMESPACE_US_TARGET,
        ),
        row(
            "nb.namespace() inside two nested using blocks",
            us["namespace nested"],
            "µs",
            at_most=NAMESPACE_US_TARGET,
        ),
        row("nb.namespace('numpy', 'float32') (explicit)", us["namespace explicit"], "µs"),
        row(
            "nb.array_namespace(x)",
            us["array_namespace"],
            "µs",
            note=f"array_api_compat.array_namespace(x): {us['compat array_namespace']:.3f} µs",
        ),
        row("empty timing loop (floor, included above)", us["loop"], "µs"),
    ]


@register(
    "namespace_overhead",
    "nnbackend.namespace() against array-api-compat: xp.exp(10), namespace(), xp.zeros(10)",
)
def namespace_overhead(opts: Options) -> list[Row]:
    rows = _namespace_rows(opts)
    available = set(nb.available_backends())
    for name in CPU_BACKENDS:
        if name in available:
            rows += _backend_rows(name, opts)
    return rows


@register(
    "namespace_overhead_gpu",
    "the namespace_overhead rows (a) and (c) on cupy, with a device synchronize per round",
    gpu=True,
)
def namespace_overhead_gpu(opts: Options) -> list[Row]:
    if opts.dry_run:  # the same code on numpy, without a device synchronize
        return _backend_rows("numpy", opts)
    reason = registry.probe("cupy")
    if reason is not None:
        raise NoDevice(f"no usable CUDA GPU here (cupy backend: {reason})")
    import cupy

    return _backend_rows("cupy", opts, sync=cupy.cuda.get_current_stream().synchronize)
