"""nnbackend's own version, readable from every layer (checkpoints record it, ``info`` shows
it) without importing the front layer."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version

__all__ = ["UNKNOWN_VERSION", "package_version"]

UNKNOWN_VERSION = "0+unknown"


def package_version() -> str:
    """nnbackend's installed version (``nnbackend.__version__``), or ``"0+unknown"`` when it
    runs from a source checkout on ``sys.path`` without being pip-installed."""
    try:
        return dist_version("nnbackend")
    except PackageNotFoundError:
        return UNKNOWN_VERSION
