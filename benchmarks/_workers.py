"""The parent's side of a worker process per implementation, shared by the cases that time
each library in a process of its own (``cnn_step``, ``mlp_processes``, ``lstm_lm_step``), and
the worker's peak-memory reading.

A worker is ``python -m benchmarks.<module> --worker ARGS...``: it prints ``ready`` once set
up, then answers each command line on stdin with one line on stdout; ``stats`` is its last.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def worker_env(threads: int | None = None) -> dict[str, str]:
    """This process's environment with ``src/`` and the repository root ahead on
    ``PYTHONPATH`` and, given ``threads``, the BLAS / OpenMP thread counts set."""
    env = dict(os.environ)
    if threads is not None:
        for key in THREAD_VARIABLES:
            env[key] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH")) if p
    )
    return env


def peak_rss_mib() -> float:
    """This process's peak RSS: ``VmHWM`` (the ``ru_maxrss`` of a process started by a big
    parent keeps the parent's peak across ``exec`` on Linux, so it would report the parent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class WorkerProcess:
    """One implementation's worker process, started and waited for (``ready``)."""

    def __init__(self, module: str, args: list[str], name: str, threads: int | None = None) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, "--worker", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=worker_env(threads),
            cwd=ROOT,
        )
        line = self._read()
        if line != "ready":
            raise RuntimeError(f"worker {name} did not start: {line!r}")

    def _read(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} exited ({self.process.wait()})")
        return line.strip()

    def ask(self, command: str) -> str:
        """Send one command line; the worker's one-line answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> dict[str, Any]:
        """The worker's ``stats`` (JSON), then its exit (killed if it lingers)."""
        try:
            stats: dict[str, Any] = json.loads(self.ask("stats"))
        finally:
            if self.process.poll() is None:
                try:
                    self.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
        return stats
