"""The checkpoint metadata: its constants, and the checks every field passes before a
reader trusts it (shared by the ``.npz`` and safetensors formats)."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from nnbackend.errors import CheckpointError

__all__ = [
    "FLOAT_NAMES",
    "FORMAT",
    "FORMAT_VERSION",
    "MAPPED_PREFIX",
    "MAX_METADATA_BYTES",
    "METADATA_KEY",
    "OPTIMIZER_PREFIX",
    "SAFE_NAME",
    "STATE_KEY",
    "check_entry",
    "check_metadata",
    "entry_of",
    "is_size",
    "metadata_cap",
    "optimizer_keys",
    "parse_metadata",
]

FORMAT = "nnbackend-checkpoint"
#: Version 1 keys each parameter's entry by its name; version 2 (written only when some name
#: cannot be a zip entry name) may map a parameter to the entry ``"parameter/<index>"``.
FORMAT_VERSION = 2
METADATA_KEY = "__nnbackend__"
OPTIMIZER_PREFIX = "optimizer/"
MAPPED_PREFIX = "parameter/"
# A name kept as its own zip entry name: short, portable, no path separators, nothing that a
# zip tool, a file system or numpy.load could alter. Every other name is mapped.
SAFE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,200}")
FLOAT_NAMES = frozenset({"float16", "float32", "float64"})
#: The largest metadata entry :func:`read_metadata` inflates (bytes). :func:`load` allows the
#: larger of this and what the model's parameter names can need.
MAX_METADATA_BYTES = 4 << 20
STATE_KEY = re.compile(r"0|[1-9][0-9]{0,8}")


def parse_metadata(where: str, blob: bytes) -> Any:
    try:
        return json.loads(blob.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{where}: the metadata entry is corrupted ({exc})") from None


def check_metadata(where: str, meta: Any) -> dict[str, Any]:
    """The metadata, after checking every field's JSON type (so later code never meets a
    list where a dict belongs): a :class:`CheckpointError` otherwise."""

    def bad(field: str, expected: str, got: Any) -> CheckpointError:
        shown = repr(got)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return CheckpointError(
            f"{where}: metadata field {field} should be {expected}, got {shown}; the file is "
            "corrupted or was not written by nnbackend.save"
        )

    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not an nnbackend checkpoint (unknown metadata format)")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise bad("format_version", "a positive int", version)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: checkpoint format version {version} is newer than this nnbackend reads "
            f"({FORMAT_VERSION}); upgrade nnbackend"
        )
    params = meta.get("parameters")
    if not isinstance(params, dict):
        raise CheckpointError(f"{where}: the metadata lists no parameters")
    entries: set[str] = set()
    for name, info in params.items():
        field = f"parameters[{name!r}]"
        if not isinstance(info, dict):
            raise bad(field, "an object", info)
        shape = info.get("shape")
        if not isinstance(shape, list) or not all(is_size(n) for n in shape):
            raise bad(f"{field}.shape", "a list of non-negative ints", shape)
        if not isinstance(info.get("dtype"), str) or info["dtype"] not in FLOAT_NAMES:
            raise bad(f"{field}.dtype", f"one of {sorted(FLOAT_NAMES)}", info.get("dtype"))
        entry = info.get("entry", name) if version >= 2 else name
        if (
            not isinstance(entry, str)
            or entry in entries
            or entry == METADATA_KEY
            or (entry != name and entry.startswith(OPTIMIZER_PREFIX))
        ):
            raise bad(f"{field}.entry", "a distinct entry name", entry)
        entries.add(entry)
    scaler = meta.get("loss_scaler")
    if scaler is not None and not isinstance(scaler, dict):
        raise bad("loss_scaler", "an object or null", scaler)
    schedule = meta.get("schedule")  # (its fields are the schedule's check_state_dict's)
    if schedule is not None and not isinstance(schedule, dict):
        raise bad("schedule", "an object or null", schedule)
    opt = meta.get("optimizer")
    if opt is None:
        return meta
    if not isinstance(opt, dict):
        raise bad("optimizer", "an object or null", opt)
    if not isinstance(opt.get("type"), str):
        raise bad("optimizer.type", "a string", opt.get("type"))
    for key in ("hyperparameters", "extra"):
        if not isinstance(opt.get(key, {}), dict):
            raise bad(f"optimizer.{key}", "an object", opt.get(key))
    # JSON integers are unbounded; the optimizer's checks convert its numbers with float(),
    # which raises OverflowError (no CheckpointError) beyond 1.8e308.
    for key, value in opt.get("hyperparameters", {}).items():
        if not _float_sized(value):
            raise bad(f"optimizer.hyperparameters[{key!r}]", "a number a float can hold", value)
    if not _float_sized(opt.get("steps", 0)):
        raise bad("optimizer.steps", "a number a float can hold", opt.get("steps"))
    clash = sorted(set(opt.get("extra", {})) & {"type", "hyperparameters", "steps", "state"})
    if clash:
        raise bad("optimizer.extra", "an object of other keys", clash)
    names = opt.get("parameters", [])
    if not isinstance(names, list) or not all(n is None or isinstance(n, str) for n in names):
        raise bad("optimizer.parameters", "a list of names", names)
    state = opt.get("state", {})
    if not isinstance(state, dict):
        raise bad("optimizer.state", "an object", state)
    for key, entry in state.items():
        field = f"optimizer.state[{key!r}]"
        if not STATE_KEY.fullmatch(key):
            raise bad(f"optimizer.state key {key!r}", "a parameter index", key)
        if not isinstance(entry, dict):
            raise bad(field, "an object", entry)
        if not isinstance(entry.get("numbers", {}), dict):
            raise bad(f"{field}.numbers", "an object", entry.get("numbers"))
        for name, value in entry.get("numbers", {}).items():
            if not _float_sized(value):
                raise bad(f"{field}.numbers[{name!r}]", "a number a float can hold", value)
        arrays = entry.get("arrays", [])
        if not isinstance(arrays, list) or not all(
            isinstance(a, str) and SAFE_NAME.fullmatch(a) for a in arrays
        ):
            raise bad(f"{field}.arrays", "a list of state names", arrays)
        if len(set(arrays)) != len(arrays) or set(arrays) & set(entry.get("numbers", {})):
            raise bad(f"{field}.arrays", "names listed once", arrays)
    return meta


def _float_sized(value: Any) -> bool:
    """False for an int beyond float's range; anything else is left to the optimizer."""
    return not isinstance(value, int) or abs(value) <= sys.float_info.max


def is_size(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def entry_of(meta: dict[str, Any], name: str) -> str:
    """The zip key that holds parameter ``name`` (its own name, unless it was mapped)."""
    if meta["format_version"] >= 2:
        return meta["parameters"][name].get("entry", name)
    return name


def optimizer_keys(meta: dict[str, Any]) -> set[str]:
    opt = meta.get("optimizer")
    if opt is None:
        return set()
    return {
        f"{OPTIMIZER_PREFIX}{index}/{name}"
        for index, entry in opt.get("state", {}).items()
        for name in entry.get("arrays", [])
    }


def metadata_cap(params: list[tuple[str, Any]]) -> int:
    """How many metadata bytes a checkpoint of these parameters can need: a fixed allowance
    plus, per parameter, room for its name JSON-escaped (up to 12 characters each) in the
    parameter table and the optimizer's list."""
    need = 1 << 20
    for name, _ in params:
        need += 1024 + 24 * len(name)
    return max(need, MAX_METADATA_BYTES)


def check_entry(
    where: str,
    key: str,
    dtype: str,
    shape: tuple[int, ...],
    want_shape: tuple[int, ...],
    want_dtype: str | None,
    what: str,
) -> None:
    """An entry's declared ``dtype`` (NumPy's name) and ``shape``, checked before its data is
    read: a floating dtype, ``want_dtype`` when given (what the metadata says), and
    ``want_shape`` (``what`` says where that shape comes from)."""
    if dtype not in FLOAT_NAMES:
        raise CheckpointError(f"{where}: entry {key!r} has dtype {dtype}, not a floating dtype")
    if want_dtype is not None and dtype != want_dtype:
        raise CheckpointError(
            f"{where}: entry {key!r} has dtype {dtype}, but the metadata says {want_dtype}; "
            "the file is corrupted"
        )
    if tuple(shape) != tuple(want_shape):
        raise CheckpointError(f"{where}: entry {key!r} has shape {tuple(shape)}, but {what}")
