"""Typed errors raised by nnbackend.

Every error derives from :class:`NNBackendError` and from the built-in exception a NumPy or
PyTorch user would expect to catch (``ValueError``, ``TypeError``, ``RuntimeError``), so both
``except nnbackend.errors.DtypeError`` and ``except ValueError`` work. Messages say what was
wrong, what was expected and how to fix it.
"""

from __future__ import annotations

import threading

__all__ = [
    "ArgumentError",
    "BackendError",
    "BackendLoadError",
    "BackendMismatchError",
    "BackendUnavailableError",
    "CheckpointError",
    "CollectiveError",
    "CompileError",
    "CompileWarning",
    "DownloadError",
    "DtypeError",
    "GradientError",
    "LabelError",
    "NNBackendError",
    "ShapeError",
]


class NNBackendError(Exception):
    """Base class of every error nnbackend raises on purpose."""


class ArgumentError(NNBackendError, ValueError):
    """An argument with a value outside what the function accepts (a negative seed, a dropout
    probability of 1, a learning rate below 0)."""


class BackendError(NNBackendError, ValueError):
    """An unknown backend name, or a backend record that is malformed."""


class BackendUnavailableError(NNBackendError, RuntimeError):
    """A known backend that cannot be used here (library missing, no driver, no device)."""


class BackendLoadError(BackendError, BackendUnavailableError):
    """A registered backend whose ``load_namespace`` failed with something other than an
    ImportError (a broken install raising AttributeError, OSError or RuntimeError at import,
    a CUDA library missing): both a :class:`BackendError` and a
    :class:`BackendUnavailableError`. The library's own exception is its ``__cause__``."""


class BackendMismatchError(NNBackendError, TypeError):
    """Arrays from two different backends were mixed in one call."""


class DtypeError(NNBackendError, ValueError, TypeError):
    """An unknown dtype, a dtype the backend lacks, or a dtype that differs from the expected one.

    It is both a ``ValueError`` (a bad setting) and a ``TypeError`` (NumPy raises ``TypeError``
    for an unknown dtype), so code written for either keeps working.
    """


class ShapeError(NNBackendError, ValueError):
    """An array whose shape does not fit the operation."""


class LabelError(NNBackendError, ValueError):
    """Class labels outside ``[0, n_classes)``, or of a non-integer dtype."""


class GradientError(NNBackendError, RuntimeError):
    """Backward was called in a way that cannot produce gradients."""


class CheckpointError(NNBackendError, ValueError):
    """A checkpoint file that cannot be read, or that does not fit the model."""


class DownloadError(NNBackendError, OSError):
    """A data set that could not be downloaded (offline, a server error) or whose download
    failed its checksum; the message gives the manual download command."""


class CollectiveError(NNBackendError, threading.BrokenBarrierError):
    """A collective of data-parallel training could not complete on this rank: another rank
    failed and aborted the group, never came (it stopped early, or runs other collectives)
    and the wait timed out, or the engine (MPI, gloo, NCCL) refused the call. (A
    ``threading.BrokenBarrierError`` too, which the in-memory group raised before.) Also
    importable as ``nnbackend.distributed.CollectiveError``."""


class CompileError(NNBackendError, RuntimeError):
    """A training step that :func:`nnbackend.compile_step` cannot record faithfully (a value
    decided from array contents, parameters changed outside an optimizer's ``step``, a
    backward through a graph built outside the step); the message names the call."""


class CompileWarning(UserWarning):
    """A compiled step runs eagerly instead (its recordings differ from call to call, or it
    cannot be recorded); the message says why."""
