"""The parent's side of a worker process per implementation, shared by the cases that time
each library in a process of its own (``cnn_step``, ``mlp_processes``, ``lstm_lm_step``), and
the worker's peak-memory reading.

A worker is ``python -m benchmarks.<module> --worker ARGS...``: it prints ``ready`` once set
up, then answers each command line on stdin with one line on stdout; ``stats`` is its last.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import resource
import subprocess
import sys
import threading
from collections.abc import Iterable
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


class WorkerError(RuntimeError):
    """A worker process that did not start, exited, gave no answer within its timeout or
    answered out of protocol. The worker is killed (and reaped) before this is raised; the
    message names it and what to do."""


class WorkerProcess:
    """One implementation's worker process, started and waited for (``ready``).

    Every answer is awaited at most ``timeout_s`` seconds (a start: imports, building the
    model; a loop of steps): past it the worker is killed and :class:`WorkerError` raised, so
    a hung worker cannot hang the run. Whoever starts workers calls :meth:`close` on the way
    out of a measurement and :meth:`kill` on every other way out (an error, Ctrl-C)."""

    #: Seconds to wait for one answer; raise it for steps whose loop takes longer.
    timeout_s: float = 600.0

    def __init__(
        self,
        module: str,
        args: list[str],
        name: str,
        threads: int | None = None,
        *,
        timeout_s: float | None = None,
    ) -> None:
        self.name = name
        if timeout_s is not None:
            if not timeout_s > 0:
                raise ValueError(f"timeout_s must be a positive number of seconds, not {timeout_s}")
            self.timeout_s = timeout_s
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, "--worker", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=worker_env(threads),
            cwd=ROOT,
        )
        # A thread reads the worker's lines, so that waiting for one can time out.
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(
            target=self._pump, name=f"worker {name} reader", daemon=True
        )
        self._reader.start()
        try:
            line = self._read()
            if line != "ready":
                raise WorkerError(
                    f"worker {name} did not start: it printed {line!r} where it should print "
                    "'ready' (a worker may write only its answers to stdout)"
                )
        except BaseException:
            self.kill()
            raise

    def _pump(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            for line in stdout:
                self._lines.put(line)
        except (OSError, ValueError):  # the pipe closed under us: the worker is being killed
            pass
        finally:
            self._lines.put(None)

    def _read(self) -> str:
        try:
            line = self._lines.get(timeout=self.timeout_s)
        except queue.Empty:
            self.kill()
            raise WorkerError(
                f"worker {self.name} gave no answer in {self.timeout_s:g} s and was killed "
                "(a hung step?); for steps that take longer, raise its timeout_s"
            ) from None
        if line is None:
            status = self._exit_status()
            raise WorkerError(
                f"worker {self.name} exited (status {status}) before answering; its error, if "
                "any, is on stderr above"
            )
        return line.strip()

    def ask(self, command: str) -> str:
        """Send one command line; the worker's one-line answer."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        except OSError:  # BrokenPipeError: it has exited
            status = self._exit_status()
            raise WorkerError(
                f"worker {self.name} exited (status {status}) before it was sent {command!r}; "
                "its error, if any, is on stderr above"
            ) from None
        return self._read()

    def _exit_status(self) -> int | None:
        """The status of a worker that closed its end (a moment to exit on its own), after
        making sure it is gone."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        status = self.process.returncode
        self.kill()
        return status

    def close(self) -> dict[str, Any]:
        """The worker's ``stats`` (JSON), then its exit (killed if it lingers, and on any
        error)."""
        try:
            answer = self.ask("stats")
            try:
                stats: dict[str, Any] = json.loads(answer)
            except ValueError:
                raise WorkerError(
                    f"worker {self.name} answered {answer!r} to 'stats'; expected one line of JSON"
                ) from None
            with contextlib.suppress(subprocess.TimeoutExpired):  # lingering: killed below
                self.process.wait(timeout=30)
        finally:
            self.kill()
        return stats

    def kill(self) -> None:
        """Kill the worker if it still runs, reap it and close its pipes (never raises)."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        for pipe in (self.process.stdin,):
            if pipe is not None:
                with contextlib.suppress(OSError, ValueError):
                    pipe.close()
        if self.process.returncode is not None:
            self._reader.join(timeout=5)
            if not self._reader.is_alive() and self.process.stdout is not None:
                with contextlib.suppress(OSError, ValueError):
                    self.process.stdout.close()


def kill_all(workers: Iterable[WorkerProcess]) -> None:
    """Kill and reap every worker (on an error, or Ctrl-C, while measuring)."""
    for worker in workers:
        worker.kill()
