"""The Ctrl-C guard of :meth:`nnbackend.Trainer.fit`: the first Ctrl-C asks training to stop
after the current step, a second one stops at once, but never inside an optimizer step."""

from __future__ import annotations

import signal
import threading
from typing import Any

__all__: list[str] = []


class InterruptGuard:
    """In the main thread, turn the first Ctrl-C into a request to stop after the current
    step; a second Ctrl-C raises ``KeyboardInterrupt`` at once, except inside an optimizer
    step (while ``in_step`` is True), where it is held until the step is finished
    (:meth:`release`), so a half-applied update never happens.

    Where a handler other than Python's default is installed, the guard forwards SIGINT to it
    unchanged, except inside the step, where it holds the signal and forwards it when the step
    is finished. Either way marking the step costs attribute writes, no system call (swapping
    the handler around each step cost 15 us)."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: Any = None
        self.installed = False
        self.in_step = False
        self.pending = False  # a second Ctrl-C came during the step
        self.held: tuple[int, Any] | None = None  # a signal for the foreign handler

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            try:
                current = signal.getsignal(signal.SIGINT)
                if current is signal.default_int_handler:
                    self.previous = signal.signal(signal.SIGINT, self._handle)
                elif callable(current):
                    self.previous = signal.signal(signal.SIGINT, self._forward)
                else:  # ignored (SIG_IGN), or the OS default: nothing to hold back
                    return self
                self.installed = True
            except (ValueError, OSError):  # not allowed here (embedded interpreters)
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            if self.in_step:
                self.pending = True  # raised by _GuardedStep when the step is finished
                return
            raise KeyboardInterrupt
        self.requested = True

    def _forward(self, signum: int, frame: Any) -> None:
        if self.in_step:
            self.held = (signum, frame)  # forwarded by release() when the step is finished
            return
        self.previous(signum, frame)

    def release(self) -> None:
        """After a step (``in_step`` back to False): act on a signal held during it."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt
        if self.held is not None:
            held, self.held = self.held, None
            self.previous(*held)

    def __exit__(self, *exc: Any) -> None:
        self.in_step = self.pending = False
        self.held = None
        if self.installed:
            signal.signal(signal.SIGINT, self.previous)
            self.installed = False


class StepMark:
    """Where :meth:`Trainer.train_step` marks its optimizer step outside ``fit``."""

    __slots__ = ("in_step",)

    def __init__(self) -> None:
        self.in_step = False
