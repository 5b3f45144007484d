"""``nnbackend.info()``: every setting with its source, every backend with its availability,
library versions, the BLAS in use and CUDA facts where a GPU is present."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from typing import Any

from nnbackend import config, registry
from nnbackend._version import package_version
from nnbackend.errors import NNBackendError

__all__ = ["BackendStatus", "Info", "Setting", "info"]


@dataclass(frozen=True)
class Setting:
    """One setting: its name, value and where the value came from."""

    name: str
    value: Any
    source: str


@dataclass(frozen=True)
class BackendStatus:
    """One registered backend: usable here or not (and why), its version and facts."""

    name: str
    available: bool
    reason: str | None
    version: str | None
    description: str
    capabilities: dict[str, bool]
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Info:
    """What :func:`info` found. ``str()`` gives the report that ``nnbackend info`` prints."""

    settings: tuple[Setting, ...]
    backends: tuple[BackendStatus, ...]
    versions: dict[str, str | None]
    problems: tuple[str, ...] = ()
    world: dict[str, Any] = field(default_factory=dict)

    def setting(self, name: str) -> Setting:
        """The setting called ``name`` ("backend", "dtype" or "device")."""
        for item in self.settings:
            if item.name == name:
                return item
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for JSON)."""
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"problem: {p}" for p in self.problems]
        lines.append("nnbackend settings:")
        lines += [f"  {s.name:<8}= {s.value} ({s.source})" for s in self.settings]
        lines.append("backends:")
        for b in self.backends:
            state = "yes" if b.available else f"no: {b.reason}"
            version = f" {b.version}" if b.version else ""
            lines.append(f"  {b.name:<17} available {state}")
            if b.available:
                lines.append(f"  {'':<17} {b.description}{version}")
            caps = ", ".join(k for k, v in b.capabilities.items() if v) or "none"
            lines.append(f"  {'':<17} capabilities: {caps}")
            for blas in b.facts.get("blas", []):
                lines.append(
                    f"  {'':<17} BLAS: {blas.get('library')} {blas.get('version')}, "
                    f"threads {blas.get('threads')}, kernel {blas.get('kernel')} "
                    f"({blas.get('source')})"
                )
            if "float16_conversion" in b.facts:
                lines.append(f"  {'':<17} float16 conversions: {b.facts['float16_conversion']}")
            if "allocator" in b.facts:
                lines.append(f"  {'':<17} allocator: {b.facts['allocator']}")
            for gpu in b.facts.get("gpus", []):
                lines.append(
                    f"  {'':<17} GPU {gpu['index']}: {gpu['name']}, "
                    f"{gpu['memory_bytes'] / 2**30:.1f} GiB, compute {gpu['compute_capability']}"
                )
            if "cuda_runtime" in b.facts:
                lines.append(
                    f"  {'':<17} CUDA runtime {b.facts['cuda_runtime']}, driver "
                    f"{b.facts['cuda_driver']}, memory pool "
                    f"{b.facts['memory_pool_used_bytes']}/{b.facts['memory_pool_total_bytes']} B"
                )
            if "x64" in b.facts:  # jax
                x64 = "on" if b.facts["x64"] else "off (float64 needs JAX_ENABLE_X64=1)"
                lines.append(
                    f"  {'':<17} platform {b.facts.get('platform')}, devices "
                    f"{', '.join(b.facts.get('devices', []))}; 64-bit types {x64}"
                )
            if "threads" in b.facts and not b.facts.get("blas"):
                lines.append(f"  {'':<17} threads: {b.facts['threads']}")
        if self.world:
            w = self.world
            how = "joined" if w.get("joined") else "from the environment, not joined"
            lines.append("data-parallel world:")
            if "problem" in w:
                lines.append(f"  cannot read the launcher's environment: {w['problem']}")
            else:
                lines.append(
                    f"  engine {w.get('engine')}, rank {w.get('rank')} of {w.get('size')}, "
                    f"device {w.get('device') or 'default'} ({how})"
                )
        lines.append("versions:")
        lines += [f"  {k:<17} {v or 'not installed'}" for k, v in self.versions.items()]
        return "\n".join(lines)


def _dist(name: str) -> str | None:
    try:
        return dist_version(name)
    except PackageNotFoundError:
        return None


def _status(name: str) -> BackendStatus:
    reason = registry.probe(name)
    record = registry.find(name)
    if record is None:  # a plugin whose entry point failed
        return BackendStatus(name, False, reason, None, "plugin", {})
    version = facts = None
    if reason is None:
        try:
            version = record.version()
            facts = record.facts()
        except Exception as exc:  # report, never crash the report
            facts = {"error": f"{type(exc).__name__}: {exc}"}
    caps = {
        "float16": record.capabilities.float16,
        "inplace": record.capabilities.inplace,
        "fast_float16_matmul": record.capabilities.fast_float16_matmul,
    }
    return BackendStatus(
        name, reason is None, reason, version, record.description, caps, facts or {}
    )


def info() -> Info:
    """Every setting with its value and source, every registered backend with whether it is
    usable here (and why not), library versions, BLAS and CUDA facts."""
    problems: tuple[str, ...] = ()
    try:
        found = config.sources()
    except NNBackendError as exc:
        # A bad NNBACKEND / NNBACKEND_DTYPE: report it and everything else, never fail.
        problems = (" ".join(str(exc).split()),)
        settings = _settings_despite_environment()
    else:
        settings = tuple(Setting(name, value, source) for name, (value, source) in found.items())
        problems = _active_problems(found)
    statuses = tuple(_status(name) for name in registry.backends())
    versions = {
        "nnbackend": package_version(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "array-api-compat": _dist("array-api-compat"),
        "numpy": _dist("numpy"),
        "mpi4py": _dist("mpi4py"),
    }
    world = _world()
    if "problem" in world:
        # A launcher's environment that distributed.init() will refuse: the text report
        # printed "rank 0 of 1" and the exit code was 0.
        problems += (world["problem"],)
    return Info(settings, statuses, versions, problems, world)


def _active_problems(found: dict[str, tuple[Any, str]]) -> tuple[str, ...]:
    """Why the active settings cannot run here (the backend is unusable, or lacks the dtype):
    the report said nothing of it and ``nnbackend info`` exited 0, though every use failed."""
    from nnbackend.namespace import namespace

    backend, backend_source = found["backend"]
    dtype, dtype_source = found["dtype"]
    try:
        namespace()
    except NNBackendError as exc:
        return (
            f"the active settings cannot run here (backend {backend}, {backend_source}; "
            f"dtype {dtype}, {dtype_source}): " + " ".join(str(exc).split()),
        )
    return ()


def _world() -> dict[str, Any]:
    """The data-parallel world: the one :func:`nnbackend.distributed.init` joined, else what
    the launcher's environment says (without joining it)."""
    from nnbackend import distributed

    w = distributed.world()
    if w.size > 1 or w.engine != "none":
        return {"engine": w.engine, "rank": w.rank, "size": w.size,
                "local_rank": w.local_rank, "device": w.device, "joined": True}  # fmt: skip
    try:
        found = distributed.detect()
    except NNBackendError as exc:
        return {"engine": "none", "rank": 0, "size": 1, "problem": " ".join(str(exc).split())}
    found["joined"] = False
    return found


def _settings_despite_environment() -> tuple[Setting, ...]:
    """The settings as the environment gives them, each variable checked on its own, where
    reading them all at once failed."""
    out = []
    for name, variable, check, builtin in (
        ("backend", config.BACKEND_ENV, config.check_backend, config.BUILTIN_BACKEND),
        ("dtype", config.DTYPE_ENV, config.normalize_policy, config.BUILTIN_DTYPE),
    ):
        raw = os.environ.get(variable, "").strip()
        if not raw:
            out.append(Setting(name, builtin, config.SOURCE_BUILTIN))
            continue
        try:
            out.append(Setting(name, check(raw), f"from {variable}"))
        except NNBackendError:
            out.append(
                Setting(name, f"INVALID {raw!r}", f"from {variable}; fix it or unset {variable}")
            )
    out.append(Setting("device", "default", config.SOURCE_BUILTIN))
    return tuple(out)
