"""Smoke tests of the benchmark suite (``python -m benchmarks``): it runs, reports GPU cases as
skipped without a GPU, and writes its report. Numbers are not checked here (see
docs/performance.md); each test runs the suite in a subprocess from the repository root."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from nnbackend import registry

ROOT = Path(__file__).resolve().parent.parent
#: The ``run_in_repo`` fixture (tests/conftest.py): ``python *args`` from the repository root,
#: without the shell's ``NNBACKEND*`` variables.
Run = Callable[..., subprocess.CompletedProcess[str]]


def test_quick_tiny_case_runs_and_prints_its_table(run_in_repo: Run) -> None:
    result = run_in_repo(
        "-m", "benchmarks", "--quick", "--case", "mlp_tiny", "--no-save", "--no-check"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "BLAS:" in out and "load average" in out
    assert "tiny: engine / hand" in out
    assert "<= 1.5" in out  # the row carries its target
    book = next(line for line in out.splitlines() if "tiny: engine / the book's code" in line)
    assert "issue 3's target" in book and "90% interval" in book  # and its noise


@pytest.mark.skipif(registry.probe("cupy") is None, reason="a GPU is usable: the case would run")
def test_gpu_case_is_reported_skipped_without_a_gpu(run_in_repo: Run) -> None:
    result = run_in_repo("-m", "benchmarks", "--gpu", "--case", "mlp_large", "--no-save")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipped mlp_large: no usable CUDA GPU" in result.stdout


def test_gpu_large_case_measures_issue_19s_targets_against_torch_in_both_dtypes(
    run_in_repo: Run,
) -> None:
    """Issue 19's GPU targets (the large step on cupy at most 1.1x PyTorch CUDA, float32 and
    float16, the compiled step included) are rows of ``mlp_large``: its dry run (numpy for
    cupy, torch on the CPU) makes them, the compiled step replaying."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed: the dry run has no torch side")
    code = textwrap.dedent(
        """
        import json
        from benchmarks import Options
        from benchmarks.gpu import mlp_large
        rows = mlp_large(Options.make(quick=True, dry_run=True))
        print(json.dumps([[r.name, r.value, r.target, r.note] for r in rows]))
        """
    )
    result = run_in_repo("-c", code, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {name: (value, target, note) for name, value, target, note in
            json.loads(result.stdout.splitlines()[-1])}  # fmt: skip
    for dtype in ("float32", "float16"):
        for step in ("engine", "compiled"):
            value, target, _ = rows[f"large gpu {dtype}: {step} / torch cpu"]
            assert target == "<= 1.1" and value > 0, (dtype, step, value)
        assert rows[f"large gpu {dtype}: compiled step"][0] > 0
        replays = rows[f"large gpu {dtype}: compiled / torch cpu"][2]
        assert int(replays.split(" replays")[0]) > 0, replays


def test_gpu_phases_split_the_step_into_its_own_calls(run_in_repo: Run) -> None:
    """``mlp_large_phases`` times the step's phases one by one: run in turn, the phases make
    the same step as the engine's step function (the same weights, bit for bit), and the dry
    run (numpy for cupy, torch on the CPU) gives every phase's row in both dtypes."""
    code = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        from benchmarks import Options
        from benchmarks._nets import TINY, data, engine_step
        from benchmarks.gpu_phases import PHASES, Clock, phase_functions, time_phases

        sizes, activation, batch = TINY
        x, t = data(batch, sizes[0], sizes[-1], "float64")
        whole, split = (engine_step(sizes, activation, "float64") for _ in range(2))
        phases = phase_functions(split.parts)
        for _ in range(3):
            whole(x, t)
            device, host = time_phases(phases, x, t, Clock(None), 1)
            assert len(device[0]) == len(host[0]) == len(PHASES)
            assert all(s >= h >= 0 for s, h in zip(device[0], host[0]))
        same = all(np.array_equal(a.data, b.data) for a, b in
                   zip(whole.model.parameters(), split.model.parameters()))
        rows = []
        if "torch" in sys.argv:
            from benchmarks.gpu_phases import mlp_large_phases
            rows = [[r.name, r.value] for r in mlp_large_phases(Options.make(True, dry_run=True))]
        print(json.dumps({"same": same, "rows": rows}))
        """
    )
    has_torch = importlib.util.find_spec("torch") is not None
    result = run_in_repo("-c", code, *(["torch"] if has_torch else []), timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["same"]
    if not has_torch:
        pytest.skip("torch is not installed: the dry run has no torch side")
    rows = dict(report["rows"])
    for dtype in ("float32", "float16"):
        label = f"large gpu phases {dtype}"
        for phase in ("zero_grad", "forward", "loss", "backward", "step"):
            assert rows[f"{label}: {phase}, engine GPU time"] >= 0
        for name in ("engine", "compiled", "torch"):
            assert rows[f"{label}: {name} step, GPU time"] > 0
            assert rows[f"{label}: {name} step, host time / GPU time"] > 0
        assert rows[f"{label}: engine / torch step, GPU time"] > 0
        assert rows[f"{label}: GEMMs alone, cupy / torch"] > 0
        assert rows[f"{label}: torch's products in its own layout / in the engine's"] > 0
        assert f"{label}: engine step beyond cupy's GEMMs" in rows


def test_the_report_files_every_gpu_case_under_gpu_results(run_in_repo: Run) -> None:
    """A GPU case missing from the report's GPU_CASES would be reported among the CPU
    results, on the CPU's machine facts. (In a process of its own: loading the cases imports
    every benchmark module.)"""
    code = textwrap.dedent(
        """
        import json
        from benchmarks import load_cases
        from benchmarks._report import GPU_CASES
        gpu = sorted(name for name, case in load_cases().items() if case.gpu)
        print(json.dumps([gpu, sorted(GPU_CASES)]))
        """
    )
    result = run_in_repo("-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    registered, reported = json.loads(result.stdout.splitlines()[-1])
    assert "mlp_large_phases" in registered
    assert registered == reported


def test_report_is_written_from_saved_results(tmp_path: Path, run_in_repo: Run) -> None:
    results = tmp_path / "results"
    results.mkdir()
    rows = [
        {"name": "tiny: engine / hand", "value": 1.4, "unit": "x", "target": "<= 1.5",
         "passed": True, "note": ""},
        {"name": "tiny: torch CPU / hand", "value": 6.0, "unit": "x", "target": None,
         "passed": None, "note": "a | pipe"},
    ]  # fmt: skip
    document = {
        "case": "mlp_tiny",
        "description": "tiny",
        "when": "2026-01-01T00:00:00+00:00",
        "quick": False,
        "duration_s": 1.0,
        "skipped": None,
        "passed": True,
        "rows": rows,
        "machine": {"cpu": "test CPU", "load_average": [0.5, 0.5, 0.5], "thread_pools": []},
    }
    (results / "mlp_tiny.json").write_text(json.dumps(document))
    skipped = {**document, "case": "mlp_mixed16", "rows": [], "skipped": "no precision yet"}
    (results / "mlp_mixed16.json").write_text(json.dumps(skipped))
    doc, plot = tmp_path / "performance.md", tmp_path / "performance.png"
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from benchmarks import _report
        _report.write_report(Path({str(results)!r}), Path({str(doc)!r}), Path({str(plot)!r}))
        """
    )
    result = run_in_repo("-c", script)
    assert result.returncode == 0, result.stderr[-2000:]
    text = doc.read_text()
    assert "| `mlp_tiny` | tiny: engine / hand | 1.400 x | <= 1.5 | yes |" in text
    assert "a \\| pipe" in text  # table cells are escaped
    assert "skipped: no precision yet" in text
    assert "No GPU results yet" in text
    if "matplotlib" in result.stderr or not plot.exists():
        pytest.skip("matplotlib is not installed: no plot")
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_tiny_baselines_compute_the_same_step(run_in_repo: Run) -> None:
    """The book's chapter-1 code (the tiny target's baseline) and the leaner hand-written loop
    start from the same weights and make the same step: same loss, same updated weights."""
    code = textwrap.dedent(
        """
        import numpy as np
        from benchmarks._book import BookTwoLayerNet
        from benchmarks._nets import LR, TINY, HandMLP, data
        sizes, activation, batch = TINY
        x, t = data(batch, sizes[0], sizes[-1], "float64")
        hand = HandMLP(sizes, activation, "float64")
        book = BookTwoLayerNet(sizes, "float64", LR)
        for target, (w, b) in zip(book.params[::2], hand.params):
            target[...] = w
        for target, (w, b) in zip(book.params[1::2], hand.params):
            target[...] = b
        for _ in range(3):
            np.testing.assert_allclose(book.step(x, t), hand.step(x, t), rtol=1e-6)
        for got, (w, b) in zip(book.params[::2], hand.params):
            np.testing.assert_allclose(got, w, rtol=1e-12)
        print("same")
        """
    )
    result = run_in_repo("-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["same"]


def test_the_engines_numpy_calls_alone_make_the_engines_step(run_in_repo: Run) -> None:
    """EngineCallsMLP (the FLOP rate's floor in mlp_medium) replays the engine's NumPy calls
    without the engine: from the engine's weights it makes the engine's step, loss and
    updated weights, to rounding (float64; the SGD axpy rounds once)."""
    code = textwrap.dedent(
        """
        import numpy as np
        import nnbackend as nb
        from nnbackend import nn, optim
        from benchmarks._nets import LR, EngineCallsMLP, _model, data
        sizes, batch = [300, 256, 128, 10], 160  # big enough for the pool and the axpy
        x, t = data(batch, sizes[0], sizes[-1], "float64")
        with nb.using(dtype="float64"):
            model = _model(sizes, "relu")
        linears = [m for m in model if isinstance(m, nn.Linear)]
        calls = EngineCallsMLP([(m.weight.data, m.bias.data) for m in linears], batch)
        loss_fn, opt = nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=LR)
        for _ in range(3):
            opt.zero_grad()
            loss = loss_fn(model(x), t)
            loss.backward()
            opt.step()
            np.testing.assert_allclose(calls.step(x, t), float(loss.item()), rtol=1e-12)
        for m, (w, b) in zip(linears, calls.params):
            np.testing.assert_allclose(w, m.weight.data, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(b, m.bias.data, rtol=1e-12, atol=1e-15)
        print("same")
        """
    )
    result = run_in_repo("-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["same"]


def test_the_calls_worker_starts_from_the_engines_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlp_processes' ``calls`` worker (medium) times the engine's NumPy calls alone: it starts
    from the engine worker's weights, so its steps are the engine's (loss to rounding)."""
    monkeypatch.syspath_prepend(str(ROOT))
    import dataclasses

    from benchmarks import mlp_processes as mp

    medium = mp.CONFIGS["medium"]
    assert "calls" in medium.workers
    assert {("engine", "calls"), ("calls", "hand_reused")} <= {(a, b) for a, b, _ in medium.targets}
    config = dataclasses.replace(medium, sizes=(300, 256, 128, 10), batch=160, dtype="float64")
    engine, calls = mp._make_step("engine", config), mp._make_step("calls", config)
    for _ in range(2):
        assert float(calls()) == pytest.approx(float(engine().item()), rel=1e-12)


def test_harness_refuses_to_time_two_cpu_libraries_in_one_process(run_in_repo: Run) -> None:
    """Issue 19: timing PyTorch in the process that runs NumPy slowed it up to 8x (OpenBLAS's
    idle thread spins ~100 ms after each GEMM) and gave a false "engine 0.475x PyTorch".
    ``interleaved`` refuses runners of two CPU libraries; one library per group runs."""
    code = textwrap.dedent(
        """
        import numpy as np
        import array_api_strict
        from benchmarks import MixedLibraries, Options, interleaved, library_of, step_runner
        from benchmarks import timer
        opts = Options(quick=True, rounds=2, round_s=1e-4, warmup_s=0.0, prewarm=0.0)
        a = np.ones(4)
        runs = {"numpy": step_runner(np.negative, a),
                "strict": step_runner(array_api_strict.negative, array_api_strict.asarray(a)),
                "plain": step_runner(abs, -1.0)}
        interleaved(runs, opts)  # numpy, array_api_strict (NumPy inside) and no array: fine
        assert library_of(1.0, a) == "numpy"
        try:
            import torch
        except ImportError:
            print("refused")
            raise SystemExit
        ta = torch.ones(4)
        assert library_of(ta) == "torch"
        for mixed in (
            {"numpy": runs["numpy"], "torch": step_runner(torch.neg, ta)},
            {"numpy": runs["numpy"], "torch": timer("torch.neg(x)", {"torch": torch, "x": ta})},
            {"strict": runs["strict"], "torch": step_runner(torch.neg, ta)},
        ):
            try:
                interleaved(mixed, opts)
            except MixedLibraries as exc:
                assert "numpy and torch" in str(exc) and "worker process" in str(exc)
            else:
                raise AssertionError("numpy and torch were timed in one process")
        interleaved({"torch": step_runner(torch.neg, ta)}, opts)
        print("refused")
        """
    )
    result = run_in_repo("-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["refused"]


def test_process_harness_times_each_implementation_in_its_own_process(run_in_repo: Run) -> None:
    """``mlp_processes`` starts one worker per implementation: the engine's, the hand loop's
    and the book's processes never load torch (nor numba, in float32), the torch worker does;
    each reports page faults per step and peak RSS, and the case turns them into rows."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed: no torch worker")
    code = textwrap.dedent(
        """
        import json
        from benchmarks import mlp_processes as mp
        result = mp.measure(mp.CONFIGS["tiny"], rounds=2, round_s=0.002, warmup=0)
        rows = mp.rows_of(result)
        print(json.dumps({"workers": result["workers"], "rows": [r.name for r in rows]}))
        """
    )
    result = run_in_repo("-c", code, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.splitlines()[-1])
    workers = out["workers"]
    assert set(workers) == {"engine", "compiled", "hand", "hand_reused", "book", "torch"}
    for name in ("engine", "compiled", "hand", "hand_reused", "book"):
        assert workers[name]["libraries"] == ["numpy"], (name, workers[name])
    assert "torch" in workers["torch"]["libraries"]
    for w in workers.values():
        assert w["peak_rss_mib"] > 0 and w["faults_per_step"] >= 0 and w["median_s"] > 0
    # The targets take the faster hand loop of each round; both are reported too.
    for name in ("engine / hand_best", "compiled / hand_best", "engine / hand"):
        assert f"tiny: {name}" in out["rows"]
    assert "tiny: engine / hand_reused" in out["rows"]


def test_mlp_processes_replicas_take_the_median_of_each_rounds_processes(run_in_repo: Run) -> None:
    """With ``replicas``, each implementation runs in that many processes; its time in a
    round is the median of theirs, and each process's own median is reported beside it."""
    code = textwrap.dedent(
        """
        import dataclasses, json
        from benchmarks import mlp_processes as mp
        config = dataclasses.replace(
            mp.CONFIGS["tiny"], workers=("engine", "hand", "hand_reused"), rounds_factor=1,
            targets=(("engine", "hand_best", 1.4),),
        )
        mp.CONFIGS["tiny"] = config  # rows_of looks the configuration up by name
        result = mp.measure(config, rounds=3, round_s=0.002, warmup=0, replicas=3)
        rows = mp.rows_of(result)
        print(json.dumps({**result, "notes": [r.note for r in rows]}))
        """
    )
    result = run_in_repo("-c", code, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert set(out["workers"]) == {"engine", "hand", "hand_reused"}
    own = out["process_samples"]
    assert sorted(own) == sorted(f"{i}#{k}" for i in out["workers"] for k in range(3))
    for impl, w in out["workers"].items():
        per_process = [own[f"{impl}#{k}"] for k in range(3)]
        expected = [sorted(each)[1] for each in zip(*per_process, strict=True)]
        assert out["samples"][impl] == expected
        assert w["replica_medians_s"] == [sorted(p)[1] for p in per_process]
        assert w["libraries"] == ["numpy"]
    assert any("its 3 processes" in note for note in out["notes"])
