"""The GPU check: one command, under five minutes, that installs nothing.

    python scripts/gpu_check.py              # on a machine with CUDA and cupy
    python scripts/gpu_check.py --dry-run    # the same plumbing with numpy on a CPU
    nox -s gpu                               # the same, through nox (`-- --dry-run` too)

Steps, each with its own time limit inside the overall budget (``--budget``, 285 s):

1. ``preflight``: which libraries are importable, ``nvidia-smi``, ``nnbackend.info()``, and
   whether the cupy backend is usable (the dry run uses numpy instead).
2. ``gpu-tests``: ``pytest -m gpu`` with ``NNBACKEND=cupy NNBACKEND_TEST_BACKENDS=cupy``:
   the tests marked ``gpu``, which include every test the ``backend`` fixture runs on cupy.
3. ``benchmarks``: ``python -m benchmarks --gpu`` (the GPU cases), when the benchmark suite
   has any; the dry run uses its ``--dry-run`` (or ``--quick --no-save``), so it never
   overwrites recorded numbers.
4. ``suite``: the rest of the suite, ``pytest -m "not gpu"`` (doctests included), with the
   same settings. Steps 2 and 4 together are the whole suite with ``NNBACKEND=cupy``, each
   test run once. Both run in parallel with pytest-xdist where it is installed. In the dry
   run every setting says ``numpy`` instead of ``cupy``.

Results: ``<out>/gpu_check.json`` (every step: command, status, counts, failures, seconds,
output tail; the machine; the benchmark rows), ``<out>/gpu_check.log`` (full output), copies
of the GPU benchmark JSON files when ``<out>`` is not ``benchmarks/results``, and the section
between ``<!-- gpu -->`` and ``<!-- /gpu -->`` of ``docs/performance.md`` (nothing else in
that file is touched; the section is appended when the markers are missing). The dry run
writes to ``benchmarks/results/dry-run/`` (git-ignored) and its own copy of the page there.

On a device machine whose results come back through a folder (``$OUT``)::

    python3 scripts/gpu_check.py --out $OUT --docs $OUT/performance.md
    python scripts/gpu_check.py --render-docs <fetched>/gpu_check.json   # here, afterwards

The GPU machine needs numpy, cupy, pytest and hypothesis installed, and array-api-compat
importable: pure-Python wheels (``*-none-any.whl``) in ``.whl/`` at the repository root are
put on ``PYTHONPATH`` as they are (zip imports), so carrying the wheel is enough; nothing is
installed. ``src/`` is put on ``PYTHONPATH`` too, so the project need not be installed.

Exit status: 0 when every step passed (skipped GPU tests are reported, not failures), 1
otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DRY_RESULTS = RESULTS / "dry-run"
DOCS = ROOT / "docs" / "performance.md"
WHEELS = ROOT / ".whl"
BEGIN, END = "<!-- gpu -->", "<!-- /gpu -->"
BUDGET_S = 285.0
TAIL = 6000

PREFLIGHT = r"""
import importlib.util, json, sys
out = {"python": sys.version.split()[0], "executable": sys.executable, "modules": {}}
for name in ("numpy", "array_api_compat", "cupy", "torch", "array_api_strict", "pytest",
             "hypothesis", "xdist", "threadpoolctl"):
    spec = importlib.util.find_spec(name)
    if spec is None:
        out["modules"][name] = None
        continue
    try:
        module = __import__(name)
        out["modules"][name] = str(getattr(module, "__version__", "present"))
    except Exception as exc:
        out["modules"][name] = f"broken: {type(exc).__name__}: {exc}"
try:
    import nnbackend as nb
    from nnbackend import registry
    out["nnbackend"] = nb.__file__
    out["reasons"] = {name: registry.probe(name) for name in nb.backends()}
    out["info"] = nb.info().to_dict()
    out["info_text"] = str(nb.info())
except Exception as exc:
    out["nnbackend_error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out, default=str))
"""


@dataclass
class Step:
    name: str
    title: str
    argv: list[str]
    env: dict[str, str]
    timeout: float
    kind: str  # "pytest" or "bench"
    junit: Path | None = None


@dataclass
class StepResult:
    name: str
    title: str
    command: str
    status: str  # passed, failed, timeout, skipped, error
    returncode: int | None = None
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    skips: dict[str, int] = field(default_factory=dict)
    note: str = ""
    output_tail: str = ""


# ---------------------------------------------------------------------------------- helpers
def python_path(environ: Mapping[str, str], wheels: Path = WHEELS) -> str:
    """``src/``, the repository root and pure-Python wheels from ``.whl/`` ahead of the
    current ``PYTHONPATH``: the project and its pure-Python dependencies import without an
    installation."""
    entries = [str(ROOT / "src"), str(ROOT)]
    if wheels.is_dir():
        entries += [str(p) for p in sorted(wheels.glob("*-none-any.whl"))]
    current = environ.get("PYTHONPATH", "")
    return os.pathsep.join(entries + ([current] if current else []))


def replace_section(text: str, section: str) -> str:
    """``text`` with the part between the GPU markers (markers included) replaced by
    ``section`` (which carries its own markers); appended when the markers are missing.
    Nothing outside the markers changes."""
    if not section.startswith(BEGIN) or not section.rstrip().endswith(END):
        raise ValueError(f"a GPU section starts with {BEGIN} and ends with {END}")
    begin = text.find(BEGIN)
    end = text.find(END, begin + len(BEGIN)) if begin >= 0 else -1
    if begin >= 0 and end >= 0:
        return text[:begin] + section.rstrip() + text[end + len(END) :]
    if begin >= 0:
        raise ValueError(f"{BEGIN} without a matching {END}: fix the page by hand")
    if not text.strip():
        return "# Performance\n\n" + section.rstrip() + "\n"
    return text.rstrip() + "\n\n" + section.rstrip() + "\n"


def parse_junit(path: Path) -> tuple[dict[str, int], list[dict[str, str]], dict[str, int]]:
    """``(counts, failures, skip reasons with their numbers)`` from a pytest JUnit XML."""
    root = ET.parse(path).getroot()
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures: list[dict[str, str]] = []
    skips: dict[str, int] = {}
    for case in root.iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed" if child.tag == "failure" else "errors"
                message = (child.get("message") or child.text or "").strip()
                failures.append({"test": test, "kind": child.tag, "message": message[:500]})
                break
            if child.tag == "skipped":
                outcome = "skipped"
                reason = (child.get("message") or "").strip()[:200]
                skips[reason] = skips.get(reason, 0) + 1
                break
        counts[outcome] += 1
    return counts, failures, skips


def parse_summary(output: str) -> dict[str, int]:
    """Counts from pytest's last summary line (``3 passed, 1 skipped in 2.0s``), for runs
    that left no JUnit file."""
    counts: dict[str, int] = {}
    for line in reversed(output.splitlines()):
        if " in " in line and any(w in line for w in ("passed", "failed", "skipped", "error")):
            for part in line.strip("= ").split(" in ")[0].split(","):
                words = part.split()
                if len(words) == 2 and words[0].isdigit():
                    key = {"error": "errors", "errors": "errors"}.get(words[1], words[1])
                    counts[key] = int(words[0])
            break
    return counts


def _tail(text: str) -> str:
    return text if len(text) <= TAIL else "...\n" + text[-TAIL:]


def run_command(
    argv: Sequence[str], env: Mapping[str, str], timeout: float
) -> tuple[int | None, str, float]:
    """Run ``argv`` in the repository root; ``(returncode or None on timeout, output,
    seconds)``. A run past ``timeout`` is killed with its whole process group."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(argv),
        cwd=ROOT,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=max(timeout, 1.0))
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        code = None
    return code, output or "", time.perf_counter() - start


# ---------------------------------------------------------------------------------- steps
def preflight(env: Mapping[str, str]) -> dict[str, Any]:
    code, output, seconds = run_command([sys.executable, "-c", PREFLIGHT], env, 120)
    facts: dict[str, Any] = {"seconds": round(seconds, 2)}
    try:
        facts.update(json.loads(output.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        facts["error"] = f"preflight failed (exit {code}): {_tail(output)}"
    smi = shutil.which("nvidia-smi")
    if smi:
        query = "--query-gpu=name,driver_version,memory.total,compute_cap"
        smi_code, smi_out, _ = run_command([smi, query, "--format=csv,noheader"], env, 30)
        facts["nvidia_smi"] = smi_out.strip() if smi_code == 0 else f"failed: {smi_out.strip()}"
    else:
        facts["nvidia_smi"] = None
    return facts


def gpu_benchmark_cases(env: Mapping[str, str]) -> tuple[list[str], str, bool]:
    """``(names of the cases marked [gpu], why none, whether --gpu --dry-run exists)``, from
    ``python -m benchmarks --list`` and ``--help``."""
    if not (ROOT / "benchmarks" / "__main__.py").exists():
        return [], "there is no benchmarks/ suite", False
    code, output, _ = run_command([sys.executable, "-m", "benchmarks", "--list"], env, 60)
    if code != 0:
        why = f"python -m benchmarks --list failed (exit {code}): {output.strip()[-300:]}"
        return [], why, False
    names = [line.split()[0] for line in output.splitlines() if "[gpu]" in line and line.split()]
    _, usage, _ = run_command([sys.executable, "-m", "benchmarks", "--help"], env, 60)
    why = "" if names else "the benchmark suite has no GPU case yet"
    return names, why, "--dry-run" in usage


def plan(
    *, dry_run: bool, workers: int, budget: float, tmp: Path, env: Mapping[str, str]
) -> tuple[list[Step], list[StepResult]]:
    """The steps to run, and the ones skipped up front (with why).

    The two pytest steps split the suite, so every test runs once: ``-m gpu`` takes the tests
    marked gpu, which include every test the ``backend`` fixture runs on cupy; ``-m "not
    gpu"`` takes the rest (backend-independent tests and doctests)."""
    backend = "numpy" if dry_run else "cupy"
    test_env = dict(env, NNBACKEND=backend, NNBACKEND_TEST_BACKENDS=backend, PYTHONUNBUFFERED="1")
    # The suite tests jax on a CPU, as CI does; on the GPU it would take 75% of the memory
    # cupy's tests use, and fail to start (CUDA_ERROR_OUT_OF_MEMORY) in the xdist workers
    # after the first. The caller's JAX_PLATFORMS wins.
    test_env.setdefault("JAX_PLATFORMS", "cpu")
    pytest = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE"]
    parallel = ["-n", str(workers)] if workers > 0 else []
    steps = [
        Step(
            "gpu-tests",
            "tests marked gpu (`pytest -m gpu`: the GPU tests and every cupy-parametrised test)",
            [*pytest, *parallel, "-m", "gpu", "--junitxml", str(tmp / "gpu_tests.xml"), "tests"],
            test_env,
            budget * 0.4,
            "pytest",
            tmp / "gpu_tests.xml",
        )
    ]
    skipped: list[StepResult] = []
    cases, why_not, has_dry_run = gpu_benchmark_cases(env)
    bench = [sys.executable, "-m", "benchmarks", "--gpu", "--no-check"]
    if dry_run:  # the GPU cases' own dry run where it exists; never save numbers from it
        bench += ["--dry-run"] if has_dry_run else ["--quick", "--no-save"]
    if cases:
        steps.append(
            Step(
                "benchmarks",
                "GPU benchmarks (`python -m benchmarks --gpu`)",
                bench,
                dict(env, NNBACKEND=backend, PYTHONUNBUFFERED="1"),
                budget * 0.35,
                "bench",
            )
        )
    else:
        skipped.append(
            StepResult(
                "benchmarks",
                "GPU benchmarks (`python -m benchmarks --gpu`)",
                " ".join(bench[1:]),
                "skipped",
                note=why_not,
            )
        )
    steps.append(
        Step(
            "suite",
            f"rest of the suite (`-m 'not gpu'`, doctests too), NNBACKEND={backend}",
            [*pytest, *parallel, "-m", "not gpu", "--junitxml", str(tmp / "suite.xml")],
            test_env,
            0.0,  # the rest of the budget, decided when it starts
            "pytest",
            tmp / "suite.xml",
        )
    )
    return steps, skipped


def _command_text(step: Step) -> str:
    shown = [Path(a).name if a == sys.executable else a for a in step.argv]
    shown = ["<tmp>/" + Path(a).name if a.startswith(tempfile.gettempdir()) else a for a in shown]
    keys = ("NNBACKEND", "NNBACKEND_TEST_BACKENDS")
    prefix = " ".join(f"{k}={step.env[k]}" for k in keys if k in step.env)
    return (prefix + " " if prefix else "") + " ".join(
        a if a.startswith("<tmp>/") else shlex.quote(a) for a in shown
    )


def run_step(step: Step, log: Any) -> StepResult:
    result = StepResult(step.name, step.title, _command_text(step), "error")
    print(f"[{step.name}] {result.command} (limit {step.timeout:.0f} s)", flush=True)
    code, output, seconds = run_command(step.argv, step.env, step.timeout)
    log.write(f"\n===== {step.name}: {result.command}\n{output}\n")
    log.flush()
    result.returncode, result.seconds, result.output_tail = code, round(seconds, 1), _tail(output)
    if step.kind == "pytest":
        if step.junit is not None and step.junit.exists():
            result.counts, result.failures, result.skips = parse_junit(step.junit)
        else:
            result.counts = parse_summary(output)
        bad = result.counts.get("failed", 0) + result.counts.get("errors", 0)
        if code is None:
            result.status, result.note = "timeout", f"stopped after {step.timeout:.0f} s"
        elif code == 5:
            result.status, result.note = "skipped", "pytest collected no test"
        elif code == 0 and not bad:
            result.status = "passed"
        else:
            result.status = "failed"
    else:
        if code is None:
            result.status, result.note = "timeout", f"stopped after {step.timeout:.0f} s"
        else:
            result.status = "passed" if code == 0 else "failed"
    counts = ", ".join(f"{v} {k}" for k, v in result.counts.items() if v)
    print(f"[{step.name}] {result.status} in {result.seconds:.1f} s {counts}".rstrip(), flush=True)
    for failure in result.failures[:20]:
        print(f"    {failure['kind']}: {failure['test']}: {failure['message'][:200]}")
    return result


def benchmark_rows(cases: Sequence[str], since: float, out: Path) -> list[dict[str, Any]]:
    """The rows the GPU cases wrote (``benchmarks/results/<case>.json`` newer than
    ``since``), copied next to the report when ``out`` is elsewhere."""
    found = []
    for name in cases:
        path = RESULTS / f"{name}.json"
        if not path.exists() or path.stat().st_mtime < since:
            continue
        document = json.loads(path.read_text())
        found.append(
            {
                "case": name,
                "skipped": document.get("skipped"),
                "passed": document.get("passed"),
                "quick": document.get("quick"),
                "rows": document.get("rows", []),
            }
        )
        if out.resolve() != RESULTS.resolve():
            shutil.copy2(path, out / path.name)
    return found


# ---------------------------------------------------------------------------------- report
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_section(report: Mapping[str, Any]) -> str:
    """The Markdown between the GPU markers of docs/performance.md."""
    pre = report.get("preflight", {})
    dry = report.get("dry_run", False)
    lines = [BEGIN, "## GPU check", ""]
    if dry:
        lines += [
            "**Dry run** (numpy on the CPU): it checks the plumbing of the GPU check only. "
            "These are not GPU results.",
            "",
        ]
    gpu = pre.get("nvidia_smi") or "no nvidia-smi"
    modules = pre.get("modules", {})
    lines += [
        f"Recorded by `python scripts/gpu_check.py{' --dry-run' if dry else ''}` on "
        f"{report.get('when', '?')} in {report.get('seconds', 0):.0f} s. GPU: {gpu}; "
        f"cupy {modules.get('cupy') or 'missing'}, numpy {modules.get('numpy') or 'missing'}, "
        f"torch {modules.get('torch') or 'missing'}, Python {pre.get('python', '?')}.",
        "",
        "| step | result | counts | seconds |",
        "| --- | --- | --- | --- |",
    ]
    for step in report.get("steps", []):
        counts = ", ".join(f"{v} {k}" for k, v in step.get("counts", {}).items() if v)
        result = step["status"] + (f" ({step['note']})" if step.get("note") else "")
        lines.append(f"| {step['title']} | {result} | {counts or '-'} | {step['seconds']:.0f} |")
    failures = [(s["name"], f) for s in report.get("steps", []) for f in s.get("failures", [])]
    if failures:
        lines += ["", "Failures:", ""]
        for name, failure in failures[:30]:
            message = failure["message"].splitlines()[0][:160] if failure["message"] else ""
            lines.append(f"- `{name}`: `{failure['test']}`: {message}")
        if len(failures) > 30:
            lines.append(f"- ... and {len(failures) - 30} more (see gpu_check.json)")
    rows = [(case, row) for case in report.get("benchmarks", []) for row in case["rows"]]
    targets = [(case, row) for case, row in rows if row.get("passed") is not None]
    if targets:
        missed = [(case, row) for case, row in targets if not row["passed"]]
        lines += [
            "",
            f"GPU benchmark targets: {len(targets) - len(missed)} of {len(targets)} met "
            "(the numbers are under GPU results).",
        ]
        for case, row in missed:
            lines.append(
                f"- missed: {case['case']} / {row['name']}: {_fmt(row['value'])} {row['unit']}, "
                f"target {row.get('target')}"
            )
    lines += ["", "Full record: `benchmarks/results/gpu_check.json`.", END]
    return "\n".join(lines) + "\n"


def write_docs(report: Mapping[str, Any], target: Path, source: Path = DOCS) -> None:
    base = target if target.exists() else source
    text = base.read_text() if base.exists() else ""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(replace_section(text, render_section(report)))


# ---------------------------------------------------------------------------------- main
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python scripts/gpu_check.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dry-run", action="store_true", help="run the plumbing with numpy")
    parser.add_argument("--out", type=Path, help="folder for gpu_check.json and the log")
    parser.add_argument("--docs", type=Path, help="the page whose GPU section to write")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all steps")
    parser.add_argument(
        "--workers",
        default="auto",
        help="pytest-xdist workers for the suite ('auto': 4 if xdist is installed, else 0)",
    )
    parser.add_argument(
        "--render-docs",
        type=Path,
        metavar="JSON",
        help="only write the GPU section of --docs from a gpu_check.json (no steps run)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.render_docs is not None:
        report = json.loads(args.render_docs.read_text())
        target = args.docs or DOCS
        write_docs(report, target)
        print(f"wrote the GPU section of {target} from {args.render_docs}")
        return 0
    started = time.perf_counter()
    wall = time.time()
    out: Path = args.out or (DRY_RESULTS if args.dry_run else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    if args.dry_run and out == DRY_RESULTS:
        (out / ".gitignore").write_text("*\n")
    docs: Path = args.docs or (out / "performance.md" if args.dry_run else DOCS)
    env = dict(os.environ, PYTHONPATH=python_path(os.environ))
    env.pop("NNBACKEND_DTYPE", None)
    mode = "DRY RUN: numpy on the CPU" if args.dry_run else "cupy on the GPU"
    print(f"GPU check ({mode}); budget {args.budget:.0f} s; results in {out}", flush=True)

    facts = preflight(env)
    backend = "numpy" if args.dry_run else "cupy"
    reason = facts.get("reasons", {}).get(backend, facts.get("nnbackend_error", "unknown"))
    if "error" in facts:
        reason = facts["error"]
    print(
        f"[preflight] {facts.get('seconds')} s; python {facts.get('python')}; "
        f"nvidia-smi: {facts.get('nvidia_smi')}"
    )
    missing = [m for m, v in facts.get("modules", {}).items() if v is None]
    if missing:
        print(f"[preflight] not importable: {', '.join(missing)}")
        pure = {"array_api_compat", "array_api_strict", "hypothesis"} & set(missing)
        if pure:
            print(
                f"[preflight] {', '.join(sorted(pure))}: carry pure-Python wheels in "
                f"{WHEELS} (put on PYTHONPATH as they are; nothing is installed)"
            )
    if reason:
        print(f"[preflight] backend {backend!r} is unusable: {reason}")
    xdist = bool(facts.get("modules", {}).get("xdist"))
    workers = (4 if xdist else 0) if args.workers == "auto" else int(args.workers)

    results: list[StepResult] = []
    bench_rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="nnbackend-gpu-check-") as tmp,
        open(out / "gpu_check.log", "w") as log,
    ):
        log.write(json.dumps({k: v for k, v in facts.items() if k != "info"}, indent=2) + "\n")
        if facts.get("info_text"):
            log.write(facts["info_text"] + "\n")
        steps, skipped = plan(
            dry_run=args.dry_run, workers=workers, budget=args.budget, tmp=Path(tmp), env=env
        )
        results += skipped
        for step in steps:
            if reason:
                results.append(
                    StepResult(
                        step.name,
                        step.title,
                        _command_text(step),
                        "skipped",
                        note=f"backend {backend!r} unusable: {reason}",
                    )
                )
                continue
            left = args.budget - (time.perf_counter() - started)
            step.timeout = left - 5 if step.timeout == 0.0 else min(step.timeout, left - 5)
            if step.timeout < 10:
                results.append(
                    StepResult(
                        step.name,
                        step.title,
                        _command_text(step),
                        "skipped",
                        note="no time left in the budget",
                    )
                )
                continue
            before = time.time()
            results.append(run_step(step, log))
            if step.name == "benchmarks":
                cases = gpu_benchmark_cases(env)[0]
                bench_rows = [] if args.dry_run else benchmark_rows(cases, before, out)
    order = {"gpu-tests": 0, "benchmarks": 1, "suite": 2}
    results.sort(key=lambda r: order.get(r.name, 9))
    report = {
        "dry_run": args.dry_run,
        "backend": backend,
        "when": dt.datetime.fromtimestamp(wall, dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
        "budget_s": args.budget,
        "workers": workers,
        "ok": not reason
        and all(r.status in ("passed", "skipped") for r in results)
        and any(r.status == "passed" for r in results),
        "preflight": facts,
        "steps": [asdict(r) for r in results],
        "benchmarks": bench_rows,
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    write_docs(report, docs)
    print()
    for r in results:
        counts = ", ".join(f"{v} {k}" for k, v in r.counts.items() if v)
        print(f"  {r.name:<11} {r.status:<8} {r.seconds:6.1f} s  {counts}  {r.note}".rstrip())
    print(
        f"\n{'OK' if report['ok'] else 'NOT OK'} in {report['seconds']:.0f} s; wrote "
        f"{out / 'gpu_check.json'}, {out / 'gpu_check.log'} and the GPU section of {docs}"
    )
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
