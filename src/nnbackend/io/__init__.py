"""Checkpoints: :func:`save` and :func:`load` a model's parameters (and an optimizer's state,
a loss scaler's and a learning-rate schedule's) in a file that needs no pickle to read.

Two formats, told apart by content when loading:

- **safetensors** (the default; any path not ending in ``.npz``): each tensor keyed by its
  parameter path (``"0.weight"``), the optimizer's state as ``"optimizer/<index>/<name>"``, and
  nnbackend's metadata as JSON under ``"nnbackend"`` in the header's metadata map;
  ``safetensors.numpy.load_file`` and ``safetensors.torch.load_file`` read it as it is.
- **npz** (nnbackend 0.1's layout; a path ending in ``.npz``, or ``format="npz"``): a zip of
  ``.npy`` arrays, read with ``numpy.load(path, allow_pickle=False)``, the same keys, and the
  metadata as UTF-8 JSON bytes in a uint8 array ``"__nnbackend__"``.

In both, a parameter may have any name: one the format cannot hold as a key (letters, digits,
``_ . -``, up to 200 characters) is stored as ``"parameter/<index>"``, and its metadata names
that ``"entry"`` (format version 2, written only when some name needs it). The metadata holds
the format version, nnbackend version, model class, backend, each parameter's shape, stored
dtype and model dtype, the optimizer's type, hyperparameters and step counts, a loss
scaler's scale and counters when one is saved, and a schedule's ``state_dict()`` (under
``"schedule"``) when one is saved.

Saving is atomic: the file is written to a temporary file in the same directory (created with
an explicit mode, never by changing the process umask), flushed to disk, then renamed over
``path``, so an interrupted save leaves the previous checkpoint intact; the temporary files of
a killed save are removed by the next save to the same path.

Loading treats the file as untrusted input. The safetensors header, or the zip directory and
each ``.npy`` header, are parsed here (never with pickle); the metadata is size-capped and
checked field by field; the file must hold exactly the entries the metadata names; each
array's shape and dtype are checked against the model before its data is read (or inflated),
so no more than the model's own size is ever read, whatever the file declares. Everything
(names, shapes, dtypes, values that would overflow the model's dtype, the optimizer's
hyperparameters, the loss scaler's and the schedule's state) is checked before a parameter, the
optimizer, the scaler or the schedule is touched; any problem raises
:class:`~nnbackend.errors.CheckpointError` naming the file and the entry, and leaves them
unchanged.

>>> import nnbackend as nb, tempfile, os
>>> from nnbackend import nn
>>> model = nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))
>>> path = os.path.join(tempfile.mkdtemp(), "spiral.safetensors")
>>> nb.save(model, path, dtype="float16")
>>> nb.load(model, path)       # cast back to the model's dtype, onto its backend
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nnbackend import errors
from nnbackend._version import package_version
from nnbackend.autograd.tensor import Tensor
from nnbackend.backends import host
from nnbackend.config import normalize_dtype
from nnbackend.errors import ArgumentError, CheckpointError
from nnbackend.io import _npz
from nnbackend.io import safetensors as _st
from nnbackend.io._files import atomic_write as atomic_write  # (for train.plots)
from nnbackend.io._files import open_regular
from nnbackend.io._metadata import (
    FLOAT_NAMES,
    FORMAT,
    FORMAT_VERSION,
    MAPPED_PREFIX,
    MAX_METADATA_BYTES,
    METADATA_KEY,
    OPTIMIZER_PREFIX,
    SAFE_NAME,
    entry_of,
    metadata_cap,
    optimizer_keys,
)
from nnbackend.io._npz import NpzCheckpoint, open_npz
from nnbackend.io.book import load_book_params
from nnbackend.namespace import backend_for

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_METADATA_BYTES",
    "METADATA_KEY",
    "load",
    "load_book_params",
    "read_metadata",
    "save",
]


def _dtype_name(dtype: Any) -> str:
    try:
        return normalize_dtype(dtype)
    except errors.DtypeError:
        return str(dtype).rsplit(".", 1)[-1]


def _named_parameters(model: Any) -> list[tuple[str, Any]]:
    named = getattr(model, "named_parameters", None)
    if not callable(named):
        raise TypeError(
            f"save/load need an nn.Module (something with named_parameters()), got "
            f"{type(model).__name__}"
        )
    # Buffers (BatchNorm's running statistics) are saved, validated and loaded like
    # parameters; they are Tensors too, so the rest of this module treats both alike.
    buffers = getattr(model, "named_buffers", None)
    return list(named()) + (list(buffers()) if callable(buffers) else [])


def _to_host(array: Any) -> Any:
    if isinstance(array, Tensor):
        array = array.data
    np = host.numpy()
    return np.array(backend_for(array)[1].to_host(array), copy=True, order="C")


def _flatten_optimizer(
    optimizer: Any, model_params: list[tuple[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(arrays, metadata)`` of an optimizer's ``state_dict()``: the state arrays become
    file entries, everything else JSON."""
    state_dict = optimizer.state_dict()
    names = {id(p): name for name, p in model_params}
    opt_params = list(getattr(optimizer, "params", []))
    arrays: dict[str, Any] = {}
    state_meta: dict[str, dict[str, Any]] = {}
    for index, entry in state_dict.get("state", {}).items():
        numbers: dict[str, Any] = {}
        stored: list[str] = []
        for key, value in entry.items():
            if isinstance(value, bool | int | float):
                numbers[key] = value
            else:
                if not isinstance(key, str) or not SAFE_NAME.fullmatch(key):
                    raise CheckpointError(
                        f"cannot save {type(optimizer).__name__}'s state {key!r}: state names "
                        "must be letters, digits, '_', '.' or '-'"
                    )
                arrays[f"{OPTIMIZER_PREFIX}{int(index)}/{key}"] = _to_host(value)
                stored.append(key)
        state_meta[str(int(index))] = {"numbers": numbers, "arrays": stored}
    meta = {
        "type": state_dict.get("type", type(optimizer).__name__),
        "hyperparameters": state_dict.get("hyperparameters", {}),
        "steps": state_dict.get("steps", 0),
        "state": state_meta,
        "parameters": [names.get(id(p)) for p in opt_params],
        "extra": {
            k: v
            for k, v in state_dict.items()
            if k not in ("type", "hyperparameters", "steps", "state")
        },
    }
    json.dumps(meta)  # fail now, before writing anything, if something is not JSON
    return arrays, meta


def _check_methods(obj: Any, argument: str, kind: str, *methods: str) -> None:
    """ArgumentError where ``obj`` (the ``argument`` of save or load; ``None`` passes) lacks
    one of ``methods``, before anything is read or written."""
    if obj is not None and not all(callable(getattr(obj, m, None)) for m in methods):
        wanted = " and ".join(f"{m}()" for m in methods)
        raise ArgumentError(
            f"{argument} must be a {kind} (or have {wanted}), got {type(obj).__name__}"
        )


def _check_schedule_drives(schedule: Any, optimizer: Any, what: str) -> None:
    """ArgumentError where ``schedule`` drives another optimizer than ``optimizer`` (both
    given to ``what``, save or load): the pair would be saved or resumed apart, the optimizer
    keeping one rate while the schedule set another optimizer's. A schedule-like object without
    an ``optimizer`` attribute is not checked."""
    if schedule is None or optimizer is None:
        return
    driven = getattr(schedule, "optimizer", optimizer)
    if driven is not optimizer:
        raise ArgumentError(
            f"{what}(optimizer=..., schedule=...): the schedule drives another optimizer "
            f"({type(driven).__name__} at {id(driven):#x}) than the one given "
            f"({type(optimizer).__name__} at {id(optimizer):#x}); make the schedule on the "
            "optimizer you pass, as in StepLR(opt, ...) with optimizer=opt"
        )


def _epoch_count(epoch: Any) -> int | None:
    """``save``'s ``epoch``: ``None`` or an int >= 0 (completed epochs)."""
    if epoch is None:
        return None
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ArgumentError(
            f"epoch must be the number of completed epochs, an int >= 0 (or None), got "
            f"{epoch!r:.80}"
        )
    return int(epoch)


def _check_epoch(where: str, meta: dict[str, Any]) -> None:
    """CheckpointError where the metadata's ``"epoch"`` (when there is one) is no count of
    epochs that ``Trainer.fit(initial_epoch=...)`` can take."""
    epoch = meta.get("epoch")
    if epoch is None:
        return
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < 2**63:
        raise CheckpointError(
            f"{where}: metadata field epoch should be a count of epochs (an int >= 0), got "
            f"{epoch!r:.80}; the file is corrupted or was not written by nnbackend.save"
        )


def _schedule_state(schedule: Any) -> dict[str, Any]:
    """A schedule's ``state_dict()`` for the metadata, checked now as :func:`load` will check
    it (``check_state_dict``), so that no checkpoint is written whose schedule cannot load."""
    _check_methods(schedule, "schedule", "nnbackend.schedules schedule", "state_dict")
    state = schedule.state_dict()
    name = type(schedule).__name__
    if not isinstance(state, dict):
        raise CheckpointError(
            f"cannot save {name}: its schedule state must be a dict, got {type(state).__name__}"
        )
    try:
        json.dumps(state)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"cannot save {name}: its schedule state must hold plain Python values ({exc})"
        ) from None
    check = getattr(schedule, "check_state_dict", None)
    if callable(check):
        try:
            check(state)
        except CheckpointError as exc:
            raise CheckpointError(f"cannot save {name}: load would refuse it: {exc}") from None
    return dict(state)


def _path_of(path: Any, *, writing: bool = False) -> str:
    """``path`` as a ``str``: a ``str``, ``bytes`` or :class:`os.PathLike` naming a file. A file
    object, ``None`` or a number is an :class:`ArgumentError`, as is an empty path; saving to a
    path that ends in a separator (a folder's name) is the :class:`IsADirectoryError` that
    ``open()`` raises, where ``pathlib`` would drop the separator and write a file."""
    try:
        where = os.fsdecode(os.fspath(path))
    except TypeError:
        kind = "a file object" if hasattr(path, "write") or hasattr(path, "read") else None
        raise ArgumentError(
            "a checkpoint path must be a str or os.PathLike (pathlib.Path) naming a file, got "
            f"{kind or type(path).__name__}; nnbackend saves to and loads from files by name "
            "(it writes atomically next to the target), not to file objects"
        ) from None
    if not where:
        raise ArgumentError("the checkpoint path is empty; name a file such as 'model.safetensors'")
    if writing and where.endswith(tuple(s for s in (os.sep, os.altsep) if s)):
        raise IsADirectoryError(
            errno.EISDIR, f"cannot save the checkpoint {where!r}: the path names a folder"
        )
    return where


def _narrowing_overflow(np: Any, value: Any, target: Any) -> Any:
    """The finite values of host array ``value`` that ``target`` (a narrower floating dtype)
    cannot hold, which a cast would turn into infinity; inf and NaN cast exactly."""
    limit = float(np.finfo(target).max)
    with np.errstate(invalid="ignore"):
        big = np.isfinite(value) & (np.abs(value) > limit)
    return value[big]


#: The checkpoint formats :func:`save` writes; :func:`load` tells them apart by content.
FORMATS = ("safetensors", "npz")


def _format_for(path: str | os.PathLike[str], format: str | None) -> str:
    if format is None:
        return "npz" if os.fspath(path).lower().endswith(".npz") else "safetensors"
    if format not in FORMATS:
        raise ArgumentError(f"unknown checkpoint format {format!r}; expected one of {FORMATS}")
    return format


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: a Python str, but no JSON key on disk
        return False
    return True


def _entry_name(name: str, index: int, format: str) -> str:
    """The file's key for parameter ``name``: the name itself where the format can hold it,
    else ``"parameter/<index>"`` (never equal to a kept name). A zip entry keeps only short
    names of letters, digits, ``_ . -`` (no ``/``); safetensors keeps any string but its
    reserved ``__metadata__`` (and names that look like nnbackend's own keys)."""
    if format == "npz":
        if SAFE_NAME.fullmatch(name) and not name.startswith("__nnbackend"):
            return name
    elif (
        name not in (_st.METADATA, METADATA_KEY)
        and not name.startswith((OPTIMIZER_PREFIX, MAPPED_PREFIX))
        and _utf8(name)
    ):
        return name
    return f"{MAPPED_PREFIX}{index}"


def save(
    model: Any,
    path: str | os.PathLike[str],
    *,
    dtype: Any = None,
    optimizer: Any = None,
    format: str | None = None,
    loss_scaler: Any = None,
    schedule: Any = None,
    epoch: int | None = None,
) -> None:
    """Write ``model``'s parameters (and ``optimizer``'s state, a loss scaler's and a
    learning-rate schedule's) to ``path`` atomically.

    The file is a safetensors file (``format="safetensors"``, the default; any path but one
    ending in ``.npz``) or nnbackend 0.1's ``.npz`` layout (``format="npz"``, or a path ending
    in ``.npz``). A safetensors checkpoint keys each tensor by its parameter path
    (``"0.weight"``) and the optimizer's state as ``"optimizer/<index>/<name>"``, and keeps
    nnbackend's metadata (version, model class, dtypes, the optimizer's hyperparameters) as
    JSON under ``"nnbackend"`` in the header's metadata map: ``safetensors.numpy.load_file``
    and ``safetensors.torch.load_file`` read it as it is.

    Parameters may have any names (any string): a name the format cannot hold as a key is
    stored under ``"parameter/<index>"`` and the metadata maps it back.

    The temporary file is created next to ``path`` with the mode a plain ``open()`` would give
    (the replaced file's mode when there is one), without touching the process umask.
    Temporary files that a killed save left for ``path`` are removed first.

    In data-parallel training (:func:`nnbackend.distributed.init` with several ranks) only
    rank 0 writes the file; every rank runs the checks. Call
    :func:`nnbackend.distributed.barrier` before another rank reads it.

    Args:
        model: an :class:`nnbackend.nn.Module`.
        path: the file to write, a ``str``, ``bytes`` or :class:`os.PathLike` (used as given,
            ``~`` is not expanded; ``.safetensors`` is the customary suffix). A symlink is
            written through to its target, as ``open()`` does.
        dtype: store the parameters in this dtype (``"float16"`` halves float32's bytes);
            ``None`` keeps each parameter's dtype. Optimizer state keeps its own dtype.
        optimizer: an :mod:`nnbackend.optim` optimizer whose state to save with the model.
        format: ``"safetensors"`` or ``"npz"``; ``None`` picks by the path's suffix.
        loss_scaler: a :class:`~nnbackend.precision.LossScaler` whose scale and counters to
            save (as metadata), so that a resumed float16 run starts from its scale instead
            of 2**15 again.
        schedule: a :mod:`nnbackend.schedules` schedule whose ``state_dict()`` to save (as
            metadata), so that a resumed run continues its learning-rate schedule instead of
            starting it again; load it with ``load(..., schedule=...)``. With ``optimizer``,
            it must be the optimizer's schedule (``schedule.optimizer is optimizer``).
        epoch: the number of epochs completed, kept in the metadata (``"epoch"``) so that a
            resumed run continues the count: ``Trainer.fit(...,
            initial_epoch=nnbackend.io.read_metadata(path)["epoch"])``.
            :class:`~nnbackend.callbacks.ModelCheckpoint` records it.

    Raises:
        ArgumentError: an unknown ``format``; a ``path`` that is no path (a file object) or
            empty; an ``optimizer``, ``loss_scaler`` or ``schedule`` without ``state_dict()``;
            a ``schedule`` of another optimizer than ``optimizer``; an ``epoch`` that is no
            int >= 0.
        CheckpointError: a finite value beyond the range of ``dtype``; two parameters with
            one name; a schedule state that :func:`load` would refuse (a rate set to inf by
            hand) or that is not plain JSON values.
        OSError: the file cannot be written (the message names ``path``): a full disk, a
            missing folder, ``path`` a folder (:class:`IsADirectoryError`) or a read-only file
            (:class:`PermissionError`); the previous file at ``path``, if any, is left as it
            was.
    """
    np = host.numpy()
    path = _path_of(path, writing=True)
    file_format = _format_for(path, format)
    params = _named_parameters(model)
    store_dtype = None if dtype is None else normalize_dtype(dtype)
    _check_methods(optimizer, "optimizer", "nnbackend.optim optimizer", "state_dict")
    _check_schedule_drives(schedule, optimizer, "save")
    epoch = _epoch_count(epoch)
    schedule_state = None if schedule is None else _schedule_state(schedule)
    entries: list[tuple[str, Any]] = []
    meta_params: dict[str, Any] = {}
    backend = None
    mapped = False
    for index, (name, param) in enumerate(params):
        if not isinstance(name, str):
            raise CheckpointError(f"parameter names must be strings, got {name!r}")
        if name in meta_params:
            raise CheckpointError(f"two parameters are named {name!r}; names must be distinct")
        data = param.data if isinstance(param, Tensor) else param
        backend = backend or backend_for(data)[1].name
        value = _to_host(data)
        model_dtype = _dtype_name(data.dtype)
        if model_dtype not in FLOAT_NAMES:  # load would refuse the file: refuse it here
            raise CheckpointError(
                f"cannot save {name!r}: its dtype is {model_dtype}, and a checkpoint holds "
                f"floating parameters and buffers ({', '.join(sorted(FLOAT_NAMES))}); keep a "
                "count or an index as a Python attribute, or as a float buffer"
            )
        if store_dtype is not None and value.dtype != np.dtype(store_dtype):
            target = np.dtype(store_dtype)
            if target.itemsize < value.dtype.itemsize:
                # Any narrowing: float64's 1e300 is as much beyond float32 as 1e6 beyond float16.
                big = _narrowing_overflow(np, value, target)
                if big.size:
                    raise CheckpointError(
                        f"cannot store parameter {name!r} in {target.name}: it holds values up "
                        f"to {float(np.max(np.abs(big))):.4g}, beyond {target.name}'s "
                        f"{np.finfo(target).max}"
                    )
            with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN cast as they are
                value = value.astype(target)
        entry = _entry_name(name, index, file_format)
        entries.append((entry, value))
        meta_params[name] = {
            "shape": list(value.shape),
            "dtype": str(value.dtype),
            "model_dtype": model_dtype,
        }
        if entry != name:
            meta_params[name]["entry"] = entry
            mapped = True
    meta: dict[str, Any] = {
        "format": FORMAT,
        # Files that need no mapping stay readable by nnbackend versions that read version 1.
        "format_version": 2 if mapped else 1,
        "nnbackend_version": package_version(),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "backend": backend,
        "parameters": meta_params,
        "optimizer": None,
    }
    if optimizer is not None:
        opt_arrays, meta["optimizer"] = _flatten_optimizer(optimizer, params)
        entries.extend(opt_arrays.items())
    if loss_scaler is not None:
        _check_methods(loss_scaler, "loss_scaler", "nnbackend.precision.LossScaler", "state_dict")
        # Python numbers (the device-mode scale is read back once, here)
        meta["loss_scaler"] = dict(loss_scaler.state_dict())
    if schedule_state is not None:
        meta["schedule"] = schedule_state
    if epoch is not None:
        meta["epoch"] = epoch
    text = json.dumps(meta, sort_keys=False)
    from nnbackend.distributed import is_main

    if not is_main():  # data-parallel training: rank 0 writes, the others checked the same
        return
    if file_format == "safetensors":
        header = {"format": FORMAT, _st.METADATA_FIELD: text}
        atomic_write(Path(path), lambda f: _st.write(f, dict(entries), header))
        return
    entries.append((METADATA_KEY, np.frombuffer(text.encode("utf-8"), dtype=np.uint8)))
    atomic_write(Path(path), lambda f: _npz.write_npz(f, entries))


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


@contextlib.contextmanager
def _opened(path: str | os.PathLike[str], meta_cap: int) -> Iterator[Any]:
    """The checkpoint at ``path`` open for reading, whichever format its first bytes say it
    is, its metadata read and checked."""
    where = os.fspath(path)
    with open_regular(where) as f:
        prefix = f.read(_st.MAGIC_PREFIX_LEN + 1)
    if prefix.startswith(_ZIP_MAGIC):
        with open_npz(where, meta_cap) as ckpt:
            yield ckpt
    elif _st.looks_like_safetensors(prefix):
        with _st.open_safetensors(where, meta_cap) as st_ckpt:
            yield st_ckpt
    else:
        raise CheckpointError(
            f"{where}: cannot read the checkpoint: it is neither a safetensors nor an .npz "
            f"file (it starts with {prefix[:8]!r}); the file is truncated, corrupted or of "
            "another kind"
        )


def _check_entries(ckpt: NpzCheckpoint | _st.SafetensorsCheckpoint) -> dict[str, str]:
    """``{parameter name: entry key}``, after checking that the zip holds exactly the
    entries the metadata names: anything else is refused before a byte of it is inflated."""
    where, meta = ckpt.where, ckpt.meta
    by_name = {name: entry_of(meta, name) for name in meta["parameters"]}
    opt_keys = optimizer_keys(meta)
    present = set(ckpt.entries) - {METADATA_KEY}
    file_params = {k for k in present if not k.startswith(OPTIMIZER_PREFIX)}
    listed = set(by_name.values())
    unlisted = sorted(file_params ^ listed)
    if unlisted:
        raise CheckpointError(
            f"{where}: the metadata and the arrays disagree about entries {unlisted}; the file "
            "is corrupted"
        )
    stray = sorted(k for k in present - file_params if k not in opt_keys)
    if stray:
        raise CheckpointError(f"{where}: unexpected optimizer entries {stray}")
    missing = sorted(opt_keys - present)
    if missing:
        raise CheckpointError(f"{where}: optimizer entries {missing} are missing")
    if ckpt.stray_names:
        raise CheckpointError(
            f"{where}: unexpected entries {sorted(ckpt.stray_names)} (a checkpoint holds .npy "
            "arrays only)"
        )
    return by_name


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a checkpoint (version, model class, parameter shapes and dtypes, and
    ``"epoch"``, the epochs completed, where :func:`save` was given them).

    Only the metadata entry is inflated (at most :data:`MAX_METADATA_BYTES`); the zip
    directory is checked to hold exactly the entries the metadata names, but no array is read.

    Raises:
        CheckpointError: the file is missing, not a regular file, not a checkpoint, or its
            metadata is malformed.
    """
    with _opened(_path_of(path), MAX_METADATA_BYTES) as ckpt:
        _check_entries(ckpt)
        _check_epoch(ckpt.where, ckpt.meta)
        return ckpt.meta


def _convert(where: str, key: str, value: Any, like: Any) -> Any:
    """Host array ``value`` cast to ``like``'s dtype and moved to its backend and device; a
    value that the cast would turn into infinity (float64 1e6 into float16) is refused, as
    :func:`save` refuses to store one."""
    np = host.numpy()
    record = backend_for(like)[1]
    target = np.dtype(_dtype_name(like.dtype))
    if target != value.dtype and target.kind == "f" and target.itemsize < value.dtype.itemsize:
        big = _narrowing_overflow(np, value, target)
        if big.size:
            limit = float(np.finfo(target).max)
            raise CheckpointError(
                f"{where}: entry {key!r} holds values up to "
                f"{float(np.max(np.abs(big))):.4g}, beyond {target.name}'s {limit:.4g}: "
                f"loading it into a {target.name} parameter would make them infinite. Load "
                "into a model of a wider dtype"
            )
    if value.dtype == target and value.flags.owndata and value.flags.c_contiguous:
        # The readers read each entry into a new array of its own (no memory map): adopted as
        # it is, not copied a second time (a second copy made a 4 MB load 3 ms -> 14 ms).
        host_value = value
        host_value.flags.writeable = True
    else:
        with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN cast as they are
            host_value = np.array(value, dtype=target, order="C", copy=True)
    moved = record.from_host(host_value, getattr(like, "device", None))
    if moved.dtype != like.dtype:
        moved = backend_for(moved)[0].astype(moved, like.dtype)
    return moved


def load(
    model: Any,
    path: str | os.PathLike[str],
    *,
    optimizer: Any = None,
    strict: bool = True,
    loss_scaler: Any = None,
    schedule: Any = None,
) -> None:
    """Load a checkpoint written by :func:`save` into ``model`` (and ``optimizer``,
    ``loss_scaler`` and ``schedule``).

    Each array is cast to the dtype the model's parameter has now and moved to its backend and
    device: save on a GPU, load on a CPU, or the other way round.

    The file is read defensively: the metadata is checked field by field, the zip must hold
    exactly the entries it names, and each array's shape and dtype are checked from its
    ``.npy`` header against the model before its data is inflated, so no more than the
    model's own size is ever decompressed, whatever the file declares.

    Args:
        model: the model to fill; its architecture must match the checkpoint.
        path: the checkpoint file, a ``str``, ``bytes`` or :class:`os.PathLike` (a regular
            file: a directory or a FIFO is refused at once).
        optimizer: also restore this optimizer's state (the checkpoint must hold one); its
            hyperparameters and step counts are held to the bounds its constructor enforces.
        strict: when True, a parameter missing from the file, or an entry the model lacks,
            is an error; when False, only the names present in both are loaded.
        loss_scaler: also restore this :class:`~nnbackend.precision.LossScaler`'s scale and
            counters (the checkpoint must hold them: ``save(..., loss_scaler=...)``).
        schedule: also restore this learning-rate schedule (the checkpoint must hold one:
            ``save(..., schedule=...)``, or ``ModelCheckpoint(save_optimizer=True)``), made as
            in the saved run: the same kind of schedule on the same optimizer. Its count of
            steps and base rate come back, and it sets the optimizer's ``lr`` to the rate
            there. A checkpoint that holds a schedule loads without ``schedule=`` too (as one
            that holds an optimizer's state loads without ``optimizer=``). With ``optimizer``,
            it must be that optimizer's schedule (``schedule.optimizer is optimizer``), and
            of the saved schedule's settings (``step_size``, ``gamma``, ``per``, ...).

    Raises:
        ArgumentError: a ``path`` that is no path (a file object) or empty; an
            ``optimizer``, ``loss_scaler`` or ``schedule`` without ``load_state_dict()``; a
            ``schedule`` of another optimizer than ``optimizer``.
        CheckpointError: the file is missing, truncated or corrupted; a key is missing or
            extra; a shape differs; a value would overflow the model's dtype; the optimizer
            state does not fit or holds values its constructor refuses; the loss scaler's state
            is missing or malformed; the schedule's state is missing, malformed, of another
            kind of schedule or of other settings; the ``epoch`` metadata is no count.
            Raised before anything is changed: the model, the optimizer, the loss scaler and
            the schedule are left exactly as they were.
    """
    where = path = _path_of(path)
    params = _named_parameters(model)
    _check_methods(optimizer, "optimizer", "nnbackend.optim optimizer", "load_state_dict")
    _check_methods(
        schedule,
        "schedule",
        "nnbackend.schedules schedule",
        "check_state_dict",
        "load_state_dict",
    )
    _check_schedule_drives(schedule, optimizer, "load")
    with _opened(path, metadata_cap(params)) as ckpt:
        meta = ckpt.meta
        by_name = _check_entries(ckpt)
        _check_epoch(where, meta)
        listed = meta["parameters"]
        own = dict(params)
        missing = [name for name in own if name not in listed]
        extra = [name for name in listed if name not in own]
        if strict and (missing or extra):
            parts = []
            if missing:
                parts.append(f"missing from the file: {missing}")
            if extra:
                parts.append(f"not in the model: {extra}")
            raise CheckpointError(
                f"{where}: the checkpoint does not fit {type(model).__name__} ("
                + "; ".join(parts)
                + f"); it was saved from {meta.get('model_class')!s:.200}. Pass "
                "strict=False to load only the common entries"
            )
        foreign = getattr(ckpt, "foreign", False)
        if foreign:
            _refuse_ambiguous_layout(where, model, listed)
        # Shapes from the metadata first, so nothing is inflated for a model that cannot fit.
        for name, param in params:
            if name not in listed:
                continue
            data = param.data if isinstance(param, Tensor) else param
            shape = tuple(listed[name]["shape"])
            if shape != tuple(data.shape):
                raise CheckpointError(
                    f"{where}: entry {name!r} has shape {shape}, but the model's parameter "
                    f"{name!r} has shape {tuple(data.shape)}"
                    + (f"; {_TORCH_LAYOUT_HINT}" if foreign else "")
                )
        updates: list[tuple[Any, Any]] = []
        for name, param in params:
            if name not in listed:
                continue
            data = param.data if isinstance(param, Tensor) else param
            shape = tuple(listed[name]["shape"])
            value = ckpt.array(
                by_name[name], shape, listed[name]["dtype"], f"the metadata says {shape}"
            )
            updates.append((param, _convert(where, name, value, data)))
        opt_update = None
        if optimizer is not None:
            opt_update = _optimizer_state(ckpt, optimizer, params)
        scaler_state = None
        if loss_scaler is not None:
            _check_methods(
                loss_scaler, "loss_scaler", "nnbackend.precision.LossScaler", "load_state_dict"
            )
            scaler_state = meta.get("loss_scaler")
            if scaler_state is None:
                raise CheckpointError(
                    f"{where}: the checkpoint holds no loss scaler state (save it with "
                    "nnbackend.save(model, path, loss_scaler=scaler))"
                )
            try:  # validated on a copy: nothing may change before every check has passed
                copy.copy(loss_scaler).load_state_dict(scaler_state)
            except CheckpointError as exc:
                raise CheckpointError(f"{where}: {exc}") from None
        schedule_state = None
        if schedule is not None:
            schedule_state = meta.get("schedule")
            if schedule_state is None:
                raise CheckpointError(
                    f"{where}: the checkpoint holds no schedule (save it with "
                    "nnbackend.save(model, path, optimizer=opt, schedule=schedule), or "
                    "ModelCheckpoint(..., save_optimizer=True) with the schedule in fit's "
                    "callbacks), or load without schedule="
                )
            try:  # checked, not applied: nothing may change before every check has passed
                schedule.check_state_dict(schedule_state)
            except CheckpointError as exc:
                raise CheckpointError(f"{where}: {exc}") from None
    if optimizer is not None:
        # The optimizer validates everything before it changes anything, and raises
        # CheckpointError otherwise; the model is still untouched at this point.
        try:
            optimizer.load_state_dict(opt_update)
        except CheckpointError as exc:
            raise CheckpointError(f"{where}: optimizer state does not fit: {exc}") from None
    if scaler_state is not None:
        loss_scaler.load_state_dict(scaler_state)
    if schedule_state is not None:
        # After the optimizer's state: the schedule sets its lr (to the saved rate).
        schedule.load_state_dict(schedule_state)
    for param, value in updates:
        param.data = value
        if isinstance(param, Tensor):
            param.grad = None


_TORCH_LAYOUT_HINT = (
    "a file another program wrote may hold PyTorch's layout: load a PyTorch state dict with "
    "model.load_state_dict(safetensors.numpy.load_file(path), layout='torch')"
)


def _refuse_ambiguous_layout(where: str, model: Any, listed: dict[str, Any]) -> None:
    """A file another program wrote says nothing of its layout. Where a parameter's
    PyTorch layout differs from nnbackend's with the same shape (a square ``Linear`` weight:
    ``(out, in)`` there, ``(in, out)`` here), a PyTorch file fits both and loading it as it is
    would transpose the weight silently: refuse, naming the remedy."""
    from nnbackend.nn.module import Module

    if not isinstance(model, Module):
        return
    ours = model.state_dict()
    try:
        theirs = model.state_dict(layout="torch")
    except ArgumentError:  # a layer with no PyTorch equivalent: no PyTorch file fits it
        return
    ambiguous = [
        name
        for name in listed
        if name in ours
        and name in theirs
        and theirs[name] is not ours[name]  # the layout hooks return unchanged arrays as they are
        and tuple(theirs[name].shape) == tuple(ours[name].shape)
        and math.prod(tuple(ours[name].shape)) > 1
    ]
    if ambiguous:
        raise CheckpointError(
            f"{where}: the file was written by another program and says nothing of its layout; "
            f"entries {ambiguous} fit the model both as nnbackend keeps them and as PyTorch does "
            "(Linear's weight is (in, out) here, (out, in) there), so loading could transpose "
            "them. Load a PyTorch state dict with model.load_state_dict("
            "safetensors.numpy.load_file(path), layout='torch'), or one in nnbackend's layout "
            "with layout='nnbackend'"
        )


def _optimizer_state(
    ckpt: NpzCheckpoint | _st.SafetensorsCheckpoint,
    optimizer: Any,
    params: list[tuple[str, Any]],
) -> dict[str, Any]:
    """The optimizer's ``state_dict`` rebuilt from the file, its arrays converted to the
    dtype, backend and device of the parameters they belong to."""
    where, meta = ckpt.where, ckpt.meta
    opt_meta = meta.get("optimizer")
    if opt_meta is None:
        raise CheckpointError(
            f"{where}: the checkpoint holds no optimizer state (save it with "
            "nnbackend.save(model, path, optimizer=opt))"
        )
    opt_params = list(getattr(optimizer, "params", []))
    saved_names = opt_meta.get("parameters", [])
    names = {id(p): name for name, p in params}
    current_names = [names.get(id(p)) for p in opt_params]
    if len(saved_names) != len(current_names):
        raise CheckpointError(
            f"{where}: the saved optimizer had {len(saved_names)} parameters, this one has "
            f"{len(current_names)}"
        )
    for i, (saved, current) in enumerate(zip(saved_names, current_names, strict=True)):
        if saved is not None and current is not None and saved != current:
            raise CheckpointError(
                f"{where}: optimizer parameter {i} was {saved!r} when saved but is {current!r} now"
            )
    state: dict[int, dict[str, Any]] = {}
    for key, entry in opt_meta.get("state", {}).items():
        i = int(key)
        if not 0 <= i < len(opt_params):
            raise CheckpointError(
                f"{where}: optimizer state for parameter {i}, but the optimizer has "
                f"{len(opt_params)} parameters"
            )
        like = opt_params[i].data
        new: dict[str, Any] = dict(entry.get("numbers", {}))
        for name in entry.get("arrays", []):
            array_key = f"{OPTIMIZER_PREFIX}{i}/{name}"
            shape = tuple(like.shape)
            value = ckpt.array(array_key, shape, None, f"its parameter has shape {shape}")
            new[name] = _convert(where, array_key, value, like)
        state[i] = new
    return {
        "type": opt_meta["type"],
        "hyperparameters": opt_meta.get("hyperparameters", {}),
        "steps": opt_meta.get("steps", 0),
        "state": state,
        **opt_meta.get("extra", {}),
    }
