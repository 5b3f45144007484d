"""A worker process per implementation, shared by the cases that time each library in a
process of its own (``cnn_step``, ``mlp_processes``, ``lstm_lm_step``): the parent's side
(:class:`WorkerProcess`, :func:`run_rounds`, :func:`kill_all`) and the worker's
(:func:`serve`, :class:`MemoryMeter`).

A worker is ``python -m benchmarks.<module> --worker ARGS...``: it prints ``ready`` once set
up (or ``skip REASON`` where its implementation cannot run here), then answers each command
line on stdin with one line on stdout: ``run N`` times N steps and answers JSON
``{"s": seconds, "faults": minor page faults, "last": the last step's value if a number}``;
``stats`` answers JSON (peak RSS, memory after setup and during the loop, the libraries
loaded) and is its last.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import random
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: Libraries whose presence in a worker says which one it timed (``stats``: ``libraries``).
LIBRARIES = ("numpy", "torch", "numba", "jax", "cupy")


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


def _status_mib(key: str) -> float | None:
    """A ``/proc/self/status`` memory line (``VmHWM``, ``VmRSS``) in MiB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mib() -> float:
    """This process's peak RSS: ``VmHWM`` (the ``ru_maxrss`` of a process started by a big
    parent keeps the parent's peak across ``exec`` on Linux, so it would report the parent).
    After :func:`reset_peak_rss`, the peak since the reset."""
    peak = _status_mib("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes / KiB


def rss_mib() -> float | None:
    """This process's resident memory now (``VmRSS``); None where the OS does not say."""
    return _status_mib("VmRSS")


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its RSS now (Linux: ``5`` into
    ``/proc/self/clear_refs``, then ``VmHWM`` is the peak since); whether it worked. Kernels
    before 4.0 accept the write and ignore it: then the peak stays above the RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    peak, now = _status_mib("VmHWM"), rss_mib()
    return peak is not None and now is not None and peak <= now + 1.0


class MemoryMeter:
    """A worker's memory beside its times. :meth:`after_setup` (imports, data and model
    built, before the first step) reads the RSS; :meth:`start_loop` (after the warm-up
    steps) resets the peak where the OS allows; :meth:`stats` then gives

    - ``peak_rss_mib``: the process's lifetime peak (setup and warm-up included);
    - ``setup_rss_mib``: the RSS after setup;
    - ``loop_peak_rss_mib``: the peak over the steps after warm-up (where the peak could not
      be reset, the lifetime peak: ``loop_peak_source`` says which);
    - ``loop_rss_growth_mib``: ``loop_peak_rss_mib - setup_rss_mib``, what the training loop
      itself holds at its peak beyond the model, the data and the imports."""

    RESET = "VmHWM reset after warm-up"
    LIFETIME = "lifetime peak (the peak could not be reset here): includes setup"

    def __init__(self) -> None:
        self.setup_rss: float | None = None
        self.peak_before_loop: float | None = None
        self.reset = False

    def after_setup(self) -> None:
        self.setup_rss = rss_mib()

    def start_loop(self) -> None:
        self.peak_before_loop = peak_rss_mib()
        self.reset = reset_peak_rss()

    def stats(self) -> dict[str, Any]:
        now = peak_rss_mib()
        lifetime = max(now, self.peak_before_loop or 0.0)
        loop = now if self.reset else lifetime
        growth = None if self.setup_rss is None else loop - self.setup_rss
        return {
            "peak_rss_mib": lifetime,
            "setup_rss_mib": self.setup_rss,
            "loop_peak_rss_mib": loop,
            "loop_rss_growth_mib": growth,
            "loop_peak_source": self.RESET if self.reset else self.LIFETIME,
        }


def settle_threads(cap_s: float = 0.5) -> None:
    """Sleep until this process's CPU time (all its threads) stops growing: its BLAS / OpenMP
    threads have stopped spinning and will not steal the next worker's cores."""
    deadline = time.perf_counter() + cap_s
    last = time.process_time()
    while time.perf_counter() < deadline:
        time.sleep(0.005)
        now = time.process_time()
        if now - last < 0.0005:
            return
        last = now


Step = Callable[[], Any]


def serve(
    build: Callable[[], Step | tuple[Step, Step | None]],
    *,
    warmup: int = 3,
    warmup_s: float = 0.0,
    settle: bool = True,
    skip_errors: tuple[type[BaseException], ...] = (),
) -> None:
    """A worker's life: build the step (``build()`` returns ``step`` or ``(step, sync)``,
    ``sync`` waiting for a device), run ``warmup`` steps and on until ``warmup_s`` seconds
    have passed, say ``ready``, then serve ``run N``
    and ``stats`` on stdin/stdout (module docstring). An error in ``skip_errors`` while
    building or warming up answers ``skip REASON`` instead of ``ready``.

    After each timed loop the worker waits, untimed, for its threads to stop spinning
    (``settle``). Ctrl-C is the parent's to handle (it kills its workers): a worker ignores
    SIGINT, so a Ctrl-C in a terminal, sent to every process of the group, does not leave the
    parent asking dead workers for their statistics."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    meter = MemoryMeter()
    try:
        made = build()
        step, sync = made if isinstance(made, tuple) else (made, None)
        meter.after_setup()
        # The result is held until the next step returns, in the warm-up as in the timed
        # loops, as a user's ``loss = step(x, t)`` holds it: an engine loss keeps its graph,
        # so the step after it runs with the previous step's arrays still in use (a warm-up
        # that dropped them left the first timed loop to make a second set: 3,000 page
        # faults on the medium float64 MLP, counted as the steady state's).
        value: Any = None
        deadline = time.perf_counter() + warmup_s
        done = 0
        while done < warmup or time.perf_counter() < deadline:
            value = step()
            done += 1
        if sync is not None:
            sync()
    except skip_errors as exc:
        reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        print(f"skip {reason}", flush=True)
        return
    meter.start_loop()
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.split()
        if not command:
            continue
        if command[0] == "run":
            n = int(command[1])
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            for _ in range(n):
                value = step()
            if sync is not None:
                sync()
            seconds = time.perf_counter() - start
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
            if settle:
                settle_threads()
            answer: dict[str, Any] = {"s": seconds, "faults": faults}
            if isinstance(value, int | float) and not isinstance(value, bool):
                answer["last"] = float(value)
            print(json.dumps(answer), flush=True)
        elif command[0] == "stats":
            loaded = [name for name in LIBRARIES if name in sys.modules]
            print(json.dumps({**meter.stats(), "libraries": loaded}), flush=True)
            return


class WorkerError(RuntimeError):
    """A worker process that did not start, exited, gave no answer within its timeout or
    answered out of protocol. The worker is killed (and reaped) before this is raised; the
    message names it and what to do."""


class WorkerSkipped(WorkerError):
    """A worker that answered ``skip REASON`` instead of ``ready``: its implementation cannot
    run here (no GPU, a library missing). It has exited; ``reason`` says why."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"worker {name} skipped: {reason}")
        self.name, self.reason = name, reason


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
            if line.startswith("skip "):
                self.kill()
                raise WorkerSkipped(name, line[5:])
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

    def run_steps(self, n: int) -> dict[str, Any]:
        """Time ``n`` steps: the worker's answer, ``s`` (seconds) a positive finite number and
        ``faults`` a count not below 0, or :class:`WorkerError` (the worker killed): a ratio of
        a zero time would be a division by zero, a NaN one sorts anywhere."""
        answer = self.ask(f"run {n}")
        try:
            parsed = json.loads(answer)
            seconds, faults = float(parsed["s"]), int(parsed["faults"])
        except (ValueError, TypeError, KeyError):
            self.kill()
            raise WorkerError(
                f"worker {self.name} answered {answer!r} to 'run {n}'; expected one line of "
                'JSON like {"s": 0.25, "faults": 0}'
            ) from None
        if not (math.isfinite(seconds) and seconds > 0) or faults < 0:
            self.kill()
            raise WorkerError(
                f"worker {self.name} timed {n} steps at {seconds!r} s with {faults} page "
                "faults: a time must be positive and finite, a count not negative (its clock "
                "or its step is broken)"
            )
        return {**parsed, "s": seconds, "faults": faults}

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


def close_all(workers: Mapping[str, WorkerProcess]) -> dict[str, dict[str, Any]]:
    """Every worker's ``stats``; on any error (or Ctrl-C) every worker is killed first."""
    try:
        return {name: w.close() for name, w in workers.items()}
    except BaseException:
        kill_all(workers.values())
        raise


@dataclass
class Rounds:
    """What :func:`run_rounds` measured, by worker name: ``steps`` per round, each timed
    round's ``times`` per step, the ``faults`` of all timed rounds together, each worker's
    ``last`` answer, and the 1-minute ``load`` average read after each timed round."""

    steps: dict[str, int]
    times: dict[str, list[float]]
    faults: dict[str, int]
    last: dict[str, dict[str, Any]] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)

    def faults_per_step(self, name: str) -> float:
        rounds = len(self.times[name])
        return self.faults[name] / (self.steps[name] * rounds) if rounds else 0.0


def run_rounds(
    workers: Mapping[str, WorkerProcess],
    rounds: int,
    *,
    round_s: float | None = None,
    steps: int | None = None,
    warmup: int = 0,
    seed: int = 0,
    progress: Callable[[int, Rounds], None] | None = None,
) -> Rounds:
    """Ask ``workers``, in a shuffled order each round, to time a loop of steps: ``warmup``
    untimed rounds, then ``rounds`` timed ones. A loop is ``steps`` steps, or (``steps``
    None) as many as take about ``round_s`` seconds, from a first loop of 2. Page faults are
    summed over every timed round (a median over rounds would read 0 while faults came in
    every other round). ``progress(round, so_far)`` is called after each timed round.

    Every worker is killed (and reaped) when anything fails or is interrupted; on success
    they are left running for :func:`close_all`."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a whole number, 1 or more, not {rounds!r}")
    if steps is None and not (
        isinstance(round_s, int | float) and math.isfinite(round_s) and round_s > 0
    ):
        raise ValueError(f"round_s must be a positive number of seconds, not {round_s!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a whole number, 1 or more, not {steps!r}")
    try:
        counts: dict[str, int] = {}
        for name, w in workers.items():
            if steps is not None:
                counts[name] = steps
            else:
                assert round_s is not None
                seconds = w.run_steps(2)["s"]
                counts[name] = max(1, round(round_s / max(seconds / 2, 1e-7)))
        result = Rounds(counts, {name: [] for name in workers}, dict.fromkeys(workers, 0))
        order = list(workers)
        shuffle = random.Random(seed).shuffle
        for r in range(warmup + rounds):
            shuffle(order)
            for name in order:
                answer = workers[name].run_steps(counts[name])
                if r >= warmup:
                    result.times[name].append(answer["s"] / counts[name])
                    result.faults[name] += answer["faults"]
                    result.last[name] = answer
            if r >= warmup:
                result.load.append(os.getloadavg()[0])
                if progress is not None:
                    progress(r - warmup, result)
    except BaseException:
        kill_all(workers.values())
        raise
    return result


def memory_note(stats: Mapping[str, Any]) -> str:
    """``peak RSS ... MiB, after setup ..., loop peak ... (+growth)`` from a worker's stats
    (older stats without the loop's fields: the peak alone)."""
    text = f"peak RSS {stats['peak_rss_mib']:.0f} MiB"
    setup, growth = stats.get("setup_rss_mib"), stats.get("loop_rss_growth_mib")
    if setup is not None and growth is not None:
        text += f" (after setup {setup:.0f}, loop {growth:+.0f}"
        if stats.get("loop_peak_source") not in (None, MemoryMeter.RESET):
            text += ", from the lifetime peak"
        text += ")"
    return text
