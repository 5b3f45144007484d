"""Files for checkpoints: atomic writes (a temporary file renamed over the target, created
with an explicit mode and cleaned up after a killed save) and opening a file for reading only
when it is a regular file."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nnbackend.errors import CheckpointError

__all__ = ["atomic_write", "open_regular", "tmp_prefix"]

_TMP_SUFFIX = ".tmp"
# The temporary files this process is writing now, never taken for stale ones.
_in_flight: set[str] = set()
_in_flight_lock = threading.Lock()


def _host_tag() -> str:
    """This machine's name, reduced to characters safe in a file name (a shared file system
    may hold temporary files of another machine's processes, whose ids mean nothing here)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


def tmp_prefix(path: Path) -> str:
    return f".{path.name}.{_host_tag()}."


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":
        return True  # os.kill(pid, 0) would send CTRL_C_EVENT there: never probe
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True  # exists (another user's), or cannot tell: keep its file
    return True


def _remove_stale_temporaries(directory: Path, path: Path) -> None:
    """Remove ``.<name>.<host>.<pid>.<token>.tmp`` files of ``path`` that a save killed
    before it could clean up left behind: those of this machine whose process is gone, or
    of this process but not being written now (a forked child's leftovers)."""
    prefix = tmp_prefix(path)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(_TMP_SUFFIX)):
            continue
        fields = name[len(prefix) : -len(_TMP_SUFFIX)].split(".")
        # ASCII digits only: str.isdigit() is also true of "²", which int() refuses.
        if len(fields) != 2 or not (fields[0].isascii() and fields[0].isdigit()):
            continue
        pid = int(fields[0])
        full = os.path.join(directory, name)
        if pid != os.getpid() and _pid_alive(pid):
            continue
        # Under the lock: a thread of this process creates and registers its temporary
        # under it too, so one being written now is never taken for a leftover.
        with _in_flight_lock, contextlib.suppress(OSError):
            if full not in _in_flight:
                os.unlink(full)


def _create_temporary(directory: Path, path: Path, what_file: str) -> tuple[int, str]:
    """A new temporary file next to ``path``, created with an explicit mode: the kernel
    applies the umask to 0o666 as for a plain ``open()``, and the process umask is never
    changed (doing that for a moment made other threads' files world-writable)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = None
    for _ in range(100):
        name = f"{tmp_prefix(path)}{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}"
        tmp = os.path.join(directory, name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        try:
            with _in_flight_lock:
                fd = os.open(tmp, flags, 0o666 if mode is None else mode)
                _in_flight.add(tmp)
        except FileExistsError:
            continue
        except OSError as exc:
            what = (
                f"the folder {os.fspath(directory)!r} does not exist"
                if isinstance(exc, FileNotFoundError)
                else exc.strerror
            )
            raise type(exc)(
                exc.errno,
                f"cannot save the {what_file} {os.fspath(path)!r}: {what}",
                os.fspath(path),
            ) from None
        if mode is not None:
            # Keep the replaced file's mode exactly (the umask may have cleared bits of it).
            with contextlib.suppress(OSError, AttributeError, NotImplementedError):
                os.fchmod(fd, mode)
        return fd, tmp
    raise FileExistsError(
        errno.EEXIST, f"cannot save the {what_file} {os.fspath(path)!r}: no free temporary name"
    )


def _target(path: Path, what_file: str) -> Path:
    """The file that ``path`` names, as ``open(path, "wb")`` would write it: a symlink is
    followed to its target (renaming over the link would replace the link itself); a folder,
    or a file this process may not write (``chmod a-w``: renaming over it needs no write
    permission on it), is refused with the :class:`OSError` that ``open()`` raises."""
    if os.path.islink(path):
        path = Path(os.path.realpath(path))
    shown = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(
            errno.EISDIR, f"cannot save the {what_file} {shown!r}: it is a folder; name a file"
        )
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise PermissionError(
            errno.EACCES,
            f"cannot save the {what_file} {shown!r}: the file is read-only (make it writable, "
            "or save to another name)",
        )
    return path


def _naming(exc: OSError, path: Path, what_file: str) -> OSError:
    """``exc`` (of its own type and errno) with a message that names ``path``: ENOSPC from a
    write says nothing of the file it was writing."""
    shown = os.fspath(path)
    if shown in str(exc):
        return exc
    reason = exc.strerror or str(exc) or type(exc).__name__
    message = f"cannot save the {what_file} {shown!r}: {reason}"
    try:
        named = type(exc)(exc.errno, message) if exc.errno is not None else type(exc)(message)
    except Exception:  # an OSError subclass with another constructor: keep it as it is
        return exc
    return named


def atomic_write(path: Path, write: Callable[[Any], Any], what_file: str = "checkpoint") -> None:
    """Run ``write(file)`` on a temporary file next to ``path``, then rename it over
    ``path``; on any failure the temporary file is removed and ``path`` left as it was.
    ``what_file`` names the file in errors ("cannot save the plot ..."), and an
    :class:`OSError` (a full disk) names ``path``. A symlink is written through to its
    target; a folder or a read-only file is refused as ``open()`` refuses it."""
    path = _target(path, what_file)
    directory = path.parent if str(path.parent) else Path(".")
    _remove_stale_temporaries(directory, path)
    fd, tmp = _create_temporary(directory, path, what_file)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        named = _naming(exc, path, what_file)
        if named is exc:
            raise
        raise named from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        with _in_flight_lock:
            _in_flight.discard(tmp)
    # Make the rename itself durable where the platform allows it.
    with contextlib.suppress(OSError, AttributeError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def open_regular(where: str) -> Any:
    """``where`` opened for binary reading, refused at once unless it is a regular file (a
    FIFO would block, a directory or device is no checkpoint)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(where, flags)
    except FileNotFoundError:
        raise CheckpointError(f"{where}: no such checkpoint file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{where}: is a directory, not a checkpoint file") from None
    except OSError as exc:
        raise CheckpointError(f"{where}: cannot open the checkpoint ({exc.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO, device or socket"
            raise CheckpointError(f"{where}: is {kind}, not a regular checkpoint file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
