"""pytest collects ``src/`` for doctests (``--doctest-modules``): skip the module that needs
the optional numba where it is not installed."""

import importlib.util

collect_ignore = []
if importlib.util.find_spec("numba") is None:
    collect_ignore.append("nnbackend/backends/numba_half.py")
