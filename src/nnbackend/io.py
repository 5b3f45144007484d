"""Checkpoints: :func:`save` and :func:`load` a model's parameters (and an optimizer's state)
as a NumPy ``.npz`` file that needs no pickle to read.

File layout (a zip of ``.npy`` arrays, read with ``numpy.load(path, allow_pickle=False)``):

- one array per parameter, keyed by its dotted path from ``model.named_parameters()``
  (``"0.weight"``), stored on the host in the saved dtype;
- ``"optimizer/<index>/<name>"`` for each optimizer state array, when an optimizer is saved;
- ``"__nnbackend__"``: the metadata as UTF-8 JSON bytes in a uint8 array: format version,
  nnbackend version, model class, backend, and each parameter's shape, stored dtype and model
  dtype (plus the optimizer's type, hyperparameters and step counts).

Saving is atomic: the file is written to a temporary file in the same directory, flushed to
disk, then renamed over ``path``, so an interrupted save leaves the previous checkpoint
intact. Loading reads and checks everything (readable, names, shapes, metadata) before it
touches a parameter or the optimizer; any problem raises
:class:`~nnbackend.errors.CheckpointError` naming the file and the entry, and leaves both
unchanged.

>>> import nnbackend as nb, tempfile, os
>>> from nnbackend import nn
>>> model = nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))
>>> path = os.path.join(tempfile.mkdtemp(), "spiral.npz")
>>> nb.save(model, path, dtype="float16")
>>> nb.load(model, path)       # cast back to the model's dtype, onto its backend
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nnbackend import errors
from nnbackend.autograd.tensor import Tensor
from nnbackend.backends import host
from nnbackend.config import normalize_dtype
from nnbackend.errors import CheckpointError
from nnbackend.info import package_version
from nnbackend.namespace import backend_for

__all__ = ["FORMAT", "FORMAT_VERSION", "METADATA_KEY", "load", "read_metadata", "save"]

FORMAT = "nnbackend-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "__nnbackend__"
OPTIMIZER_PREFIX = "optimizer/"


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


def save(
    model: Any, path: str | os.PathLike[str], *, dtype: Any = None, optimizer: Any = None
) -> None:
    """Write ``model``'s parameters (and ``optimizer``'s state) to ``path`` atomically.

    Args:
        model: an :class:`nnbackend.nn.Module`.
        path: the file to write (used as given; ``.npz`` is the customary suffix).
        dtype: store the parameters in this dtype (``"float16"`` halves float32's bytes);
            ``None`` keeps each parameter's dtype. Optimizer state keeps its own dtype.
        optimizer: an :mod:`nnbackend.optim` optimizer whose state to save with the model.
    """
    np = host.numpy()
    params = _named_parameters(model)
    store_dtype = None if dtype is None else normalize_dtype(dtype)
    arrays: dict[str, Any] = {}
    meta_params: dict[str, Any] = {}
    backend = None
    for name, param in params:
        if name == METADATA_KEY or name.startswith(OPTIMIZER_PREFIX):
            raise CheckpointError(f"parameter name {name!r} clashes with the checkpoint layout")
        data = param.data if isinstance(param, Tensor) else param
        backend = backend or backend_for(data)[1].name
        value = _to_host(data)
        model_dtype = _dtype_name(data.dtype)
        if store_dtype is not None and value.dtype != np.dtype(store_dtype):
            if store_dtype == "float16":
                finfo = np.finfo(np.float16)
                big = np.abs(value) > finfo.max
                if np.any(big):
                    raise CheckpointError(
                        f"cannot store parameter {name!r} in float16: it holds values up to "
                        f"{float(np.max(np.abs(value))):.4g}, beyond float16's {finfo.max}"
                    )
            value = value.astype(store_dtype)
        arrays[name] = value
        meta_params[name] = {
            "shape": list(value.shape),
            "dtype": str(value.dtype),
            "model_dtype": model_dtype,
        }
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nnbackend_version": package_version(),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "backend": backend,
        "parameters": meta_params,
        "optimizer": None,
    }
    if optimizer is not None:
        opt_arrays, meta["optimizer"] = _flatten_optimizer(optimizer, params)
        arrays.update(opt_arrays)
    blob = json.dumps(meta, sort_keys=False).encode("utf-8")
    arrays[METADATA_KEY] = np.frombuffer(blob, dtype=np.uint8)
    _atomic_write(Path(path), lambda f: np.savez(f, **arrays))


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """Run ``write(file)`` on a temporary file next to ``path``, then rename it over
    ``path``; on any failure the temporary file is removed and ``path`` left as it was."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        with contextlib.suppress(OSError, AttributeError):
            os.fchmod(fd, _new_file_mode(path))
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable where the platform allows it.
    with contextlib.suppress(OSError, AttributeError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _new_file_mode(path: Path) -> int:
    """The replaced file's mode, else 0o666 less the process umask."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every array of the checkpoint and its metadata, or a CheckpointError."""
    np = host.numpy()
    where = os.fspath(path)
    if not os.path.exists(where):
        raise CheckpointError(f"{where}: no such checkpoint file")
    try:
        with np.load(where, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as exc:  # zipfile, zlib, OSError, ValueError: all mean "unreadable"
        raise CheckpointError(
            f"{where}: cannot read the checkpoint ({type(exc).__name__}: {exc}); the file is "
            "truncated, corrupted or not an .npz checkpoint"
        ) from None
    raw = arrays.pop(METADATA_KEY, None)
    if raw is None:
        raise CheckpointError(
            f"{where}: not an nnbackend checkpoint (no {METADATA_KEY!r} metadata entry)"
        )
    try:
        meta = json.loads(bytes(np.asarray(raw, dtype=np.uint8)).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{where}: the metadata entry is corrupted ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not an nnbackend checkpoint (unknown metadata format)")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: checkpoint format version {meta.get('format_version')} is newer than "
            f"this nnbackend reads ({FORMAT_VERSION}); upgrade nnbackend"
        )
    if not isinstance(meta.get("parameters"), dict):
        raise CheckpointError(f"{where}: the metadata lists no parameters")
    return arrays, meta


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a checkpoint (version, model class, parameter shapes and dtypes),
    after checking that the whole file is readable."""
    return _read(path)[1]


def _convert(value: Any, like: Any) -> Any:
    """Host array ``value`` cast to ``like``'s dtype and moved to its backend and device."""
    np = host.numpy()
    record = backend_for(like)[1]
    target = np.dtype(_dtype_name(like.dtype))
    host_value = np.array(value, dtype=target, order="C", copy=True)
    moved = record.from_host(host_value, getattr(like, "device", None))
    if moved.dtype != like.dtype:
        moved = backend_for(moved)[0].astype(moved, like.dtype)
    return moved


def load(
    model: Any, path: str | os.PathLike[str], *, optimizer: Any = None, strict: bool = True
) -> None:
    """Load a checkpoint written by :func:`save` into ``model`` (and ``optimizer``).

    Each array is cast to the dtype the model's parameter has now and moved to its backend and
    device: save on a GPU, load on a CPU, or the other way round.

    Args:
        model: the model to fill; its architecture must match the checkpoint.
        path: the checkpoint file.
        optimizer: also restore this optimizer's state (the checkpoint must hold one).
        strict: when True, a parameter missing from the file, or an entry the model lacks,
            is an error; when False, only the names present in both are loaded.

    Raises:
        CheckpointError: the file is missing, truncated or corrupted; a key is missing or
            extra; a shape differs; the optimizer state does not fit. Raised before anything
            is changed: the model and the optimizer are left exactly as they were.
    """
    where = os.fspath(path)
    arrays, meta = _read(path)
    params = _named_parameters(model)
    own = dict(params)
    file_params = {k: v for k, v in arrays.items() if not k.startswith(OPTIMIZER_PREFIX)}
    listed = meta["parameters"]
    unlisted = sorted(set(file_params) ^ set(listed))
    if unlisted:
        raise CheckpointError(
            f"{where}: the metadata and the arrays disagree about entries {unlisted}; the file "
            "is corrupted"
        )
    missing = [name for name in own if name not in file_params]
    extra = [name for name in file_params if name not in own]
    if strict and (missing or extra):
        parts = []
        if missing:
            parts.append(f"missing from the file: {missing}")
        if extra:
            parts.append(f"not in the model: {extra}")
        raise CheckpointError(
            f"{where}: the checkpoint does not fit {type(model).__name__} ("
            + "; ".join(parts)
            + f"); it was saved from {meta.get('model_class')}. Pass "
            "strict=False to load only the common entries"
        )
    np = host.numpy()
    updates: list[tuple[Any, Any]] = []
    for name, param in params:
        if name not in file_params:
            continue
        value = file_params[name]
        data = param.data if isinstance(param, Tensor) else param
        if tuple(value.shape) != tuple(data.shape):
            raise CheckpointError(
                f"{where}: entry {name!r} has shape {tuple(value.shape)}, but the model's "
                f"parameter {name!r} has shape {tuple(data.shape)}"
            )
        if tuple(listed[name].get("shape", ())) != tuple(value.shape):
            raise CheckpointError(
                f"{where}: entry {name!r} has shape {tuple(value.shape)}, but the metadata "
                f"says {tuple(listed[name].get('shape', ()))}; the file is corrupted"
            )
        if listed[name].get("dtype") != str(value.dtype):
            raise CheckpointError(
                f"{where}: entry {name!r} has dtype {value.dtype}, but the metadata says "
                f"{listed[name].get('dtype')}; the file is corrupted"
            )
        if not np.issubdtype(value.dtype, np.floating):
            raise CheckpointError(
                f"{where}: entry {name!r} has dtype {value.dtype}, not a floating dtype"
            )
        updates.append((param, _convert(value, data)))
    opt_update = None
    if optimizer is not None:
        opt_update = _optimizer_state(where, arrays, meta, optimizer, params)
        # The optimizer validates everything before it changes anything, and raises
        # CheckpointError otherwise; the model is still untouched at this point.
        try:
            optimizer.load_state_dict(opt_update)
        except CheckpointError as exc:
            raise CheckpointError(f"{where}: optimizer state does not fit: {exc}") from None
    for param, value in updates:
        param.data = value
        if isinstance(param, Tensor):
            param.grad = None


def _optimizer_state(
    where: str,
    arrays: dict[str, Any],
    meta: dict[str, Any],
    optimizer: Any,
    params: list[tuple[str, Any]],
) -> dict[str, Any]:
    """The optimizer's ``state_dict`` rebuilt from the file, its arrays converted to the
    dtype, backend and device of the parameters they belong to."""
    opt_meta = meta.get("optimizer")
    if not isinstance(opt_meta, dict):
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
    expected = set()
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
            expected.add(array_key)
            if array_key not in arrays:
                raise CheckpointError(f"{where}: optimizer entry {array_key!r} is missing")
            value = arrays[array_key]
            if tuple(value.shape) != tuple(like.shape):
                raise CheckpointError(
                    f"{where}: optimizer entry {array_key!r} has shape {tuple(value.shape)}, "
                    f"but its parameter has shape {tuple(like.shape)}"
                )
            new[name] = _convert(value, like)
        state[i] = new
    stray = sorted(k for k in arrays if k.startswith(OPTIMIZER_PREFIX) and k not in expected)
    if stray:
        raise CheckpointError(f"{where}: unexpected optimizer entries {stray}")
    return {
        "type": opt_meta.get("type"),
        "hyperparameters": opt_meta.get("hyperparameters", {}),
        "steps": opt_meta.get("steps", 0),
        "state": state,
        **opt_meta.get("extra", {}),
    }
