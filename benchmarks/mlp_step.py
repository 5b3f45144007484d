"""One training step of an MLP on the CPU: nnbackend's engine against a hand-written NumPy
network with explicit backward in the book's style, in one process. PyTorch is timed against
them in ``mlp_processes.py``, each implementation in its own worker process: timed in the
process that runs NumPy it was slowed up to 8x (OpenBLAS's threads spin on after each GEMM),
and :func:`benchmarks.interleaved` now refuses to mix the two.

Cases:
    mlp_tiny      2-10-3 sigmoid network, batch 30 (the book's chapter 1), float32:
                  engine / the book's own chapter-1 code (``_book.py``) <= 1.5; the leaner
                  hand-written loop of ``_nets.py`` is reported beside it.
    mlp_medium    784-1024-1024-10 ReLU network, batch 256, float32: engine / hand <= 1.10,
                  and the step reaches >= 85% of the FLOP rate of its matrix products run
                  alone (against torch: ``mlp_processes``).
    mlp_dtypes    the medium step (and, for information, the tiny one) in float64, float32 and
                  float16: float64 / float32 >= 1.6, float16 / float32 <= 1.5.
    mlp_mixed16   the medium step in mixed16 (float16 compute, float32 master weights, dynamic
                  loss scaling), for information; skipped without ``nnbackend.precision``.
    mlp_backends  the engine's tiny and medium steps on array_api_strict against numpy, and
                  on torch (CPU) against native PyTorch (same library, same process).

A step is forward, softmax-cross-entropy, backward and an SGD update; see ``_nets.py``.
Variants are timed in small interleaved groups of one library each; torch's groups pause after
each of its loops (its OpenMP threads spin on and slow the next variant).
"""

from __future__ import annotations

from dataclasses import replace

from benchmarks import Options, Row, interleaved, interval_note, register, row, step_runner
from benchmarks._book import BookTwoLayerNet
from benchmarks._nets import (
    LR,
    MEDIUM,
    TINY,
    EngineCallsMLP,
    HandMLP,
    HandReusedMLP,
    data,
    engine_step,
    gemm_products,
    mixed16_step,
    on_backend,
    step_flops,
    torch_step,
)
from nnbackend.backends.numpy import float16_conversion

TORCH_SETTLE_S = 0.01


def _medium_opts(opts: Options) -> Options:
    """A medium step takes tens of milliseconds: one step per round, no prewarm calls (the
    switching cost is under 1% of a step), fewer rounds."""
    return replace(opts, rounds=9 if opts.quick else 31, round_s=0.0, prewarm=0.0, warmup_s=0.3)


@register(
    "mlp_tiny",
    "2-10-3 sigmoid MLP step (batch 30, float32): engine vs the book's code, hand NumPy",
)
def mlp_tiny(opts: Options) -> list[Row]:
    sizes, activation, batch = TINY
    x, t = data(batch, sizes[0], sizes[-1], "float32")
    hand = HandMLP(sizes, activation, "float32")
    hand_run = step_runner(hand.step, x, t)
    book_run = step_runner(BookTwoLayerNet(sizes, "float32", LR).step, x, t)
    engine_run = step_runner(engine_step(sizes, activation, "float32"), x, t)
    times = interleaved({"book": book_run, "hand": hand_run, "engine": engine_run}, opts)
    rows = [
        row(
            "tiny: the book's chapter-1 code, step",
            times["book"] * 1e6,
            "us",
            note="TwoLayerNet of ch01 with common/layers.py and SGD (benchmarks/_book.py)",
        ),
        row(
            "tiny: hand-written NumPy step",
            times["hand"] * 1e6,
            "us",
            note="a leaner loop than the book's: no layer objects, no gradient copies",
        ),
        row(
            "tiny: engine step",
            times["engine"] * 1e6,
            "us",
            note=f"rounds' interquartile range {times.spread('engine'):.0%} of the median",
        ),
        row(
            "tiny: engine / the book's code",
            times.ratio("engine", "book"),
            "x",
            at_most=1.5,
            note=interval_note(
                times.ratios("engine", "book"),
                at_most=1.5,
                before="issue 3's target: the book's style, about 40 us on this machine",
            ),
        ),
        row("tiny: engine / hand", times.ratio("engine", "hand"), "x"),
    ]
    return rows


@register(
    "mlp_medium",
    "784-1024-1024-10 ReLU MLP step (batch 256, float32): engine vs hand, GEMMs alone",
)
def mlp_medium(opts: Options) -> list[Row]:
    sizes, activation, batch = MEDIUM
    opts = _medium_opts(opts)
    x, t = data(batch, sizes[0], sizes[-1], "float32")
    hand = HandMLP(sizes, activation, "float32")
    hand_run = step_runner(hand.step, x, t)
    reused = HandReusedMLP(sizes, activation, "float32")
    reused_run = step_runner(reused.step, x, t)
    engine = engine_step(sizes, activation, "float32")
    engine_run = step_runner(engine, x, t)
    gemms, gemm_flops = gemm_products(sizes, batch, "float32")
    gemm_run = step_runner(gemms)
    # The engine's NumPy calls without the engine, from its weights: the FLOP rate's floor.
    params = list(engine.model.parameters())  # type: ignore[attr-defined]
    pairs = zip(params[::2], params[1::2], strict=True)
    calls = EngineCallsMLP([(w.data, b.data) for w, b in pairs], batch)
    calls_run = step_runner(calls.step, x, t)

    times = interleaved({"hand": hand_run, "reused": reused_run, "engine": engine_run}, opts)
    alone = interleaved({"engine": engine_run, "gemms": gemm_run, "calls": calls_run}, opts)
    nominal = step_flops(sizes, batch)
    rows = [
        row("medium: hand-written NumPy step", times["hand"] * 1e3, "ms"),
        row(
            "medium: engine step",
            times["engine"] * 1e3,
            "ms",
            note=f"rounds' interquartile range {times.spread('engine'):.0%} of the median",
        ),
        row(
            "medium: hand-written NumPy step, reused buffers",
            times["reused"] * 1e3,
            "ms",
            note="the lean loop with its arrays made once (HandReusedMLP)",
        ),
        row(
            "medium: engine / hand",
            times.ratio("engine", "hand"),
            "x",
            note="the allocating loop, the book's shape (HandMLP: also the first layer's dx)",
        ),
        row(
            "medium: engine / hand with reused buffers",
            times.ratio("engine", "reused"),
            "x",
            at_most=1.10,
            note=interval_note(
                times.ratios("engine", "reused"),
                at_most=1.10,
                before="the faster hand loop: the target's baseline",
            ),
        ),
        row(
            "medium: GEMMs alone, rate",
            gemm_flops / alone["gemms"] / 1e9,
            "GFLOP/s",
            note="the step's 8 products (3 forward, 3 weight grads, 2 input grads), float32",
        ),
        row(
            "medium: engine step, rate of its GEMM FLOPs",
            gemm_flops / alone["engine"] / 1e9,
            "GFLOP/s",
        ),
        row(
            "medium: engine FLOP rate / GEMMs-alone rate",
            alone.ratio("gemms", "engine"),
            "x",
            at_least=0.85,
            note=interval_note(
                alone.ratios("gemms", "engine"),
                at_least=0.85,
                before="= time of the 8 GEMMs alone / step time, paired per round",
            ),
        ),
        row(
            "medium: the engine's NumPy calls alone, FLOP rate / GEMMs-alone rate",
            alone.ratio("gemms", "calls"),
            "x",
            note="the floor: the same calls into kept buffers, no engine (EngineCallsMLP)",
        ),
        row(
            "medium: engine / its NumPy calls alone",
            alone.ratio("engine", "calls"),
            "x",
            note="what the engine's Python costs among the GEMMs (a few hundred us a step)",
        ),
        row(
            "medium: engine nominal rate (6*batch*weights / step)",
            nominal / alone["engine"] / 1e9,
            "GFLOP/s",
            note="the issue's formula; counts the first layer's input gradient the engine skips",
        ),
    ]
    return rows


@register(
    "mlp_dtypes", "engine step in float64 / float32 / float16 (medium with targets, tiny for info)"
)
def mlp_dtypes(opts: Options) -> list[Row]:
    rows: list[Row] = []
    sizes, activation, batch = MEDIUM
    x64, t = data(batch, sizes[0], sizes[-1], "float64")
    runners = {
        name: step_runner(engine_step(sizes, activation, name), x64.astype(name), t)
        for name in ("float64", "float32", "float16")
    }
    medium = _medium_opts(opts)
    # Pairs, so each ratio's two variants alternate closely.
    wide = interleaved({k: runners[k] for k in ("float64", "float32")}, medium)
    half = interleaved({k: runners[k] for k in ("float16", "float32")}, medium)
    rows += [
        row("medium: float64 step", wide["float64"] * 1e3, "ms"),
        row("medium: float32 step", wide["float32"] * 1e3, "ms"),
        row("medium: float16 step", half["float16"] * 1e3, "ms"),
        row(
            "medium: float64 / float32 step",
            wide.ratio("float64", "float32"),
            "x",
            at_least=1.6,
            note=interval_note(wide.ratios("float64", "float32"), at_least=1.6),
        ),
        row(
            "medium: float16 / float32 step",
            half.ratio("float16", "float32"),
            "x",
            at_most=1.5,
            note=interval_note(
                half.ratios("float16", "float32"),
                at_most=1.5,
                before=f"float16 conversions: {float16_conversion()}",
            ),
        ),
    ]
    sizes, activation, batch = TINY
    x64, t = data(batch, sizes[0], sizes[-1], "float64")
    tiny = interleaved(
        {
            name: step_runner(engine_step(sizes, activation, name), x64.astype(name), t)
            for name in ("float64", "float32", "float16")
        },
        opts,
    )
    rows += [
        row("tiny: float64 / float32 step", tiny.ratio("float64", "float32"), "x"),
        row("tiny: float16 / float32 step", tiny.ratio("float16", "float32"), "x"),
    ]
    return rows


@register(
    "mlp_mixed16", "engine medium step in mixed16 against float32 (needs nnbackend.precision)"
)
def mlp_mixed16(opts: Options) -> list[Row]:
    sizes, activation, batch = MEDIUM
    mixed = mixed16_step(sizes, activation)  # raises Skip without nnbackend.precision
    x, t = data(batch, sizes[0], sizes[-1], "float32")
    times = interleaved(
        {
            "mixed16": step_runner(mixed, x, t),
            "float32": step_runner(engine_step(sizes, activation, "float32"), x, t),
        },
        _medium_opts(opts),
    )
    return [
        row("medium: mixed16 step", times["mixed16"] * 1e3, "ms"),
        row(
            "medium: mixed16 / float32 step",
            times.ratio("mixed16", "float32"),
            "x",
            note="with LossScaler; on NumPy the products run in float32 (no fast float16), "
            "so about float32's cost is expected",
        ),
    ]


def _backend_rows(label: str, net: tuple[list[int], str, int], opts: Options) -> list[Row]:
    import nnbackend as nb

    sizes, activation, batch = net
    x, t = data(batch, sizes[0], sizes[-1], "float32")
    numpy_run = step_runner(engine_step(sizes, activation, "float32"), x, t)
    available = set(nb.available_backends())
    rows: list[Row] = []
    if "array_api_strict" in available:
        xs, ts = on_backend("array_api_strict", x, t)
        strict_run = step_runner(
            engine_step(sizes, activation, "float32", "array_api_strict"), xs, ts
        )
        g = interleaved({"numpy": numpy_run, "strict": strict_run}, opts)
        rows.append(
            row(
                f"{label}: engine on array_api_strict / on numpy",
                g.ratio("strict", "numpy"),
                "x",
                note=f"array_api_strict step {_fmt_s(g['strict'])}",
            )
        )
    if "torch" in available:
        xt, tt = on_backend("torch", x, t)
        on_torch = step_runner(engine_step(sizes, activation, "float32", "torch"), xt, tt)
        native = interleaved(
            {"on torch": on_torch, "torch": step_runner(torch_step(sizes, activation), xt, tt)},
            opts,
            settle_s=TORCH_SETTLE_S,
        )
        rows += [
            row(
                f"{label}: engine on torch CPU step",
                native["on torch"] * 1e3,
                "ms",
                note="against the engine on numpy: mlp_processes (one library per process)",
            ),
            row(
                f"{label}: engine on torch CPU / native torch",
                native.ratio("on torch", "torch"),
                "x",
                note="same arrays, same library: the engine's cost against torch.autograd",
            ),
        ]
    return rows


def _fmt_s(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.0f} us"


@register(
    "mlp_backends",
    "engine tiny and medium steps (float32) on array_api_strict vs numpy, on torch CPU vs PyTorch",
)
def mlp_backends(opts: Options) -> list[Row]:
    return _backend_rows("tiny", TINY, opts) + _backend_rows("medium", MEDIUM, _medium_opts(opts))
