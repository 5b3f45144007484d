"""Progress renderers of :meth:`nnbackend.Trainer.fit`: nothing, a tqdm bar, a built-in
one-line bar, or one log line per report (``fit(progress=...)`` chooses, through
:func:`make_progress`)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from nnbackend.errors import ArgumentError

__all__: list[str] = []


class NoProgress:
    def update(self) -> None:
        pass

    def describe(self, text: str) -> None:
        pass

    def report(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class TqdmProgress(NoProgress):
    def __init__(self, tqdm: Any, total: int, stream: TextIO) -> None:
        self.bar = tqdm(
            total=total, unit="step", dynamic_ncols=True, file=stream, leave=True, mininterval=0.1
        )

    def update(self) -> None:
        self.bar.update()

    def describe(self, text: str) -> None:
        self.bar.set_description_str(text, refresh=False)

    def report(self, text: str) -> None:
        self.bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        self.bar.close()


class TextProgress(NoProgress):
    """A one-line bar redrawn in place at most ten times a second (used without tqdm)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream = total, stream
        self.n = 0
        self.start = self.last = time.perf_counter()
        self.desc = self.postfix = ""
        self.width = 0
        self.drawn: tuple[int, str] | None = None

    def update(self) -> None:
        self.n += 1
        now = time.perf_counter()
        if now - self.last >= 0.1:
            self.last = now
            self._draw(now)

    def describe(self, text: str) -> None:
        self.desc = text

    def report(self, text: str) -> None:
        self.postfix = text

    def _draw(self, now: float) -> None:
        self.drawn = (self.n, self.postfix)
        frac = min(self.n / self.total, 1.0) if self.total > 0 else 1.0
        filled = int(frac * 20)
        elapsed = now - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        line = (
            f"{self.desc} |{'#' * filled}{'.' * (20 - filled)}| {frac:4.0%} "
            f"{self.n}/{self.total} [{elapsed:.1f}s, {rate:.0f} steps/s]"
            + (f" {self.postfix}" if self.postfix else "")
        )
        pad = " " * max(self.width - len(line), 0)
        self.width = len(line)
        self.stream.write("\r" + line + pad)
        self.stream.flush()

    def close(self) -> None:
        if self.drawn != (self.n, self.postfix):
            self._draw(time.perf_counter())
        self.stream.write("\n")
        self.stream.flush()


class LogProgress(NoProgress):
    """One line per report, for logs and pipes (``progress="log"``)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.desc = ""
        self.n = 0
        self.start = time.perf_counter()

    def update(self) -> None:
        self.n += 1

    def describe(self, text: str) -> None:
        self.desc = text

    def report(self, text: str) -> None:
        elapsed = time.perf_counter() - self.start
        self.stream.write(f"{self.desc} step {self.n} [{elapsed:.1f}s] {text}\n")
        self.stream.flush()


def check_progress(progress: Any) -> None:
    """Raise :class:`~nnbackend.errors.ArgumentError` unless ``progress`` is one of
    ``fit(progress=...)``'s choices (``fit`` asks before it changes anything)."""
    if isinstance(progress, str):
        if progress in ("auto", "log", "bar", "tqdm", "text"):
            return
    elif progress is True or progress is False or progress is None:
        return
    raise ArgumentError(
        f"progress must be 'auto', True, False, 'bar', 'tqdm', 'text' or 'log', got {progress!r}"
    )


def make_progress(progress: Any, total: int, stream: TextIO | None = None) -> NoProgress:
    check_progress(progress)
    stream = sys.stderr if stream is None else stream
    if stream is None:  # no sys.stderr (pythonw, some services): nothing to write to,
        return NoProgress()  # as print() writes nothing there
    if progress == "auto":
        isatty = getattr(stream, "isatty", None)
        progress = bool(isatty and isatty())
    if progress is False or progress is None:
        return NoProgress()
    if progress == "log":
        return LogProgress(stream)
    if progress is True or progress in ("bar", "tqdm", "text"):
        if progress != "text":
            try:
                from tqdm.auto import tqdm
            except ImportError:
                if progress == "tqdm":
                    raise ImportError("progress='tqdm' needs tqdm: pip install tqdm") from None
            else:
                return TqdmProgress(tqdm, total, stream)
        return TextProgress(total, stream)
    raise AssertionError(f"unreachable: check_progress accepted {progress!r}")


def metrics_text(loss: float, accuracy: float | None) -> str:
    text = f"loss={loss:.4f}"
    if accuracy is not None:
        text += f" acc={accuracy:.1%}"
    return text
