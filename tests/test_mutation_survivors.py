"""Tests that kill the 19 faults of issue #21 that survived the whole suite.

Each test names the fault it catches (``kills: ...``); each was checked by injecting that fault
by hand into ``src/`` and watching the test fail, then restoring the code. The Trainer's
faults are covered in ``test_trainer_arithmetic.py``, the layers' gradients with random
weights in ``test_layer_gradients_random.py``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import array_api_compat.numpy
import array_api_strict
import numpy as np
import pytest

import nnbackend as nb
from nnbackend import config, io, nn, optim, registry
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import CheckpointError, LabelError
from nnbackend.io.safetensors import METADATA_FIELD
from nnbackend.namespace import ops_for
from nnbackend.nn import functional as F


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, Tensor) else a
    return np.array(registry.get(registry.backend_of(a)).to_host(a), copy=True)


def _eps(dtype: str) -> float:
    return float(np.finfo(dtype).eps)


# -- nn/functional.py --------------------------------------------------------------------------
def test_layer_norm_input_gradient_uses_the_weight_in_every_term(xp: Any, dtype: str) -> None:
    """kills: ``layer_norm`` backward forgetting the weight in its third term (``xhat *
    mean(gy * xhat)`` instead of ``mean(gy * w * xhat)``): invisible with unit weights."""
    if dtype == "float16":
        pytest.skip("central differences need float32 or wider")
    rng = np.random.default_rng(1)
    x = xp.asarray(rng.standard_normal((3, 5)))
    w = xp.asarray(rng.standard_normal(5) + 2.0)
    b = xp.asarray(rng.standard_normal(5))
    assert nb.gradcheck(lambda a, ww, bb: F.layer_norm(a, ww, bb), x, w, b)
    # And against the closed form, with the projection gy of our choosing.
    xt = Tensor(x, requires_grad=True)
    gy = rng.standard_normal((3, 5))
    y = F.layer_norm(xt, Tensor(w), Tensor(b))
    (y * Tensor(xp.asarray(gy))).sum().backward()
    xh = _host(x)
    mu = xh.mean(-1, keepdims=True)
    inv = 1.0 / np.sqrt(((xh - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
    xhat = (xh - mu) * inv
    g = gy * _host(w)
    want = inv * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    tol = 50 * _eps(dtype)
    np.testing.assert_allclose(_host(xt.grad), want, rtol=tol, atol=tol * np.abs(want).max())


def test_soft_targets_not_summing_to_one_get_the_right_gradient(xp: Any, dtype: str) -> None:
    """kills: the soft-target gradient assuming rows sum to 1 (``p - t`` instead of
    ``p * sum(t) - t``)."""
    if dtype == "float16":
        pytest.skip("central differences need float32 or wider")
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((4, 3))
    targets = rng.uniform(0.0, 1.0, (4, 3))  # row sums between 0 and 3, none of them 1
    assert not np.allclose(targets.sum(1), 1.0)
    x = Tensor(xp.asarray(logits), requires_grad=True)
    loss = F.softmax_cross_entropy(x, xp.asarray(targets))
    loss.backward()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want_loss = -(targets * np.log(p)).sum() / 4
    want_grad = (p * targets.sum(1, keepdims=True) - targets) / 4
    tol = 50 * _eps(dtype)
    assert abs(float(_host(loss.data)) - want_loss) <= tol * abs(want_loss)
    np.testing.assert_allclose(_host(x.grad), want_grad, rtol=tol, atol=tol)
    assert nb.gradcheck(F.softmax_cross_entropy, xp.asarray(logits), xp.asarray(targets))


@pytest.mark.parametrize("bad", [[0, 3, 1, 5], [-1, 0, 2, 2], [3, 3, 3, 3]])
def test_out_of_range_labels_raise_label_error_on_host_backends(xp64: Any, bad: list[int]) -> None:
    """kills: the label range check disabled on host backends (the loss would be NaN, or
    silently wrong); and the message off by one (label == n_classes not reported)."""
    logits = xp64.asarray(np.zeros((4, 3)))
    labels = xp64.asarray(np.array(bad, dtype=np.int64))
    if not ops_for(xp64, labels).on_host(labels):  # a device: the loss is NaN, no sync
        assert np.isnan(float(F.softmax_cross_entropy(logits, labels).item()))
        return
    with pytest.raises(LabelError) as info:
        F.softmax_cross_entropy(logits, labels)
    wrong = [v for v in bad if not 0 <= v < 3]
    message = str(info.value)
    assert "[0, 3)" in message and "3 classes" in message
    assert f"found {wrong}" in message, message


def test_labels_at_the_edges_of_the_range_are_accepted(xp64: Any) -> None:
    """The other side of the range check: 0 and n_classes - 1 are valid."""
    logits = xp64.asarray(np.zeros((2, 3)))
    loss = F.softmax_cross_entropy(logits, xp64.asarray(np.array([0, 2], dtype=np.int64)))
    assert abs(float(_host(loss.data)) - np.log(3.0)) < 1e-6


# -- io ----------------------------------------------------------------------------------------
def _model(seed: int = 0) -> nn.Sequential:
    nb.random.seed(seed)
    return nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))


def _values(model: Any) -> dict[str, np.ndarray]:
    return {name: _host(p) for name, p in model.named_parameters()}


def _npy(value: Any) -> bytes:
    import io as stdio

    buf = stdio.BytesIO()
    np.lib.format.write_array(buf, np.asarray(value), allow_pickle=False)
    return buf.getvalue()


def _rewrite(path: Path, change: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    members.update(change)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _meta_member(meta: dict[str, Any]) -> dict[str, bytes]:
    blob = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return {io.METADATA_KEY + ".npy": _npy(blob)}


def _assert_refused(path: Path, match: str) -> None:
    victim = _model(seed=7)
    before = _values(victim)
    with pytest.raises(CheckpointError, match=match):
        nb.load(victim, path)
    assert all(np.array_equal(v, before[k]) for k, v in _values(victim).items())


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_a_newer_format_version_is_refused_with_upgrade_advice(tmp_path: Path, fmt: str) -> None:
    """kills: the newer-format-version check removed (a version-99 file loaded as if known)."""
    path = tmp_path / f"m.{fmt}"
    nb.save(_model(), path, format=fmt)
    meta = io.read_metadata(path)
    meta["format_version"] = io.FORMAT_VERSION + 1
    if fmt == "npz":
        _rewrite(path, _meta_member(meta))
    else:
        from safetensors.numpy import load_file, save_file

        tensors = load_file(str(path))
        save_file(
            tensors, str(path), metadata={"format": io.FORMAT, METADATA_FIELD: json.dumps(meta)}
        )
    _assert_refused(path, r"newer than this nnbackend reads.*upgrade")


def test_an_array_whose_shape_differs_from_the_metadata_is_refused(tmp_path: Path) -> None:
    """kills: the metadata-vs-array shape check removed: a (3, 2) array stored where the
    metadata (and the model) say (2, 3) has as many elements and would load scrambled."""
    path = tmp_path / "m.npz"
    model = _model()
    nb.save(model, path)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    member = next(n for n, b in members.items() if _load_npy(b).shape == (2, 3))
    _rewrite(path, {member: _npy(_load_npy(members[member]).T.copy())})
    _assert_refused(path, r"has shape \(3, 2\), but the metadata says \(2, 3\)")


def _load_npy(data: bytes) -> np.ndarray:
    import io as stdio

    return np.load(stdio.BytesIO(data))


def test_load_drops_stale_gradients(tmp_path: Path, xp64: Any) -> None:
    """kills: ``load`` keeping each parameter's old ``.grad`` (a gradient of other weights,
    which the next optimizer step would apply to the loaded ones)."""
    path = tmp_path / "m.npz"
    nb.save(_model(seed=1), path)
    model = _model(seed=2)
    y = model(xp64.asarray(np.ones((4, 2))))
    (y * y).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    nb.load(model, path)
    assert all(p.grad is None for p in model.parameters())


def test_stray_optimizer_entries_are_refused(tmp_path: Path) -> None:
    """kills: stray ``optimizer/...`` entries (arrays the metadata does not name) accepted."""
    path = tmp_path / "m.npz"
    model = _model()
    opt = optim.Adam(model.parameters(), lr=0.01)
    for p in model.parameters():
        p.grad = p.data * 0.5
    opt.step()
    nb.save(model, path, optimizer=opt)
    _rewrite(path, {io.OPTIMIZER_PREFIX + "0/smuggled.npy": _npy(np.zeros((2, 3)))})
    victim = _model(seed=3)
    opt2 = optim.Adam(victim.parameters(), lr=0.01)
    before = _values(victim)
    with pytest.raises(CheckpointError, match="unexpected optimizer entries"):
        nb.load(victim, path, optimizer=opt2)
    assert all(np.array_equal(v, before[k]) for k, v in _values(victim).items())
    assert opt2.steps == 0


# -- config.py ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "value"),
    [("TRUE", True), ("True", True), (" On ", True), ("YES", True),
     ("FALSE", False), ("Off", False), ("NO", False)],
)  # fmt: skip
def test_flags_are_case_insensitive(raw: str, value: bool) -> None:
    """kills: flag parsing made case-sensitive (``NNBACKEND_CHECK_DTYPES=True`` refused)."""
    assert config._parse_flag(raw, "NNBACKEND_X") is value


def test_resolve_with_another_backend_drops_the_using_blocks_device() -> None:
    """kills: ``resolve(backend=other)`` keeping the ``using()`` block's device (a numpy
    device name handed to array_api_strict)."""
    with nb.using(backend="numpy", device="cpu"):
        assert config.resolve() == ("numpy", "float64", "cpu")
        assert config.resolve(backend="numpy")[2] == "cpu"
        assert config.resolve(backend="array_api_strict")[2] is None
        xp = nb.namespace("array_api_strict")
        assert "array_api_strict" in type(xp.asarray([1.0])).__module__


# -- registry.py -------------------------------------------------------------------------------
def test_replacing_a_backend_is_seen_by_the_next_namespace_call() -> None:
    """kills: the registry generation not bumped on register: ``namespace()`` keeps serving
    the replaced record's cached namespace."""

    def record(load: Any) -> nb.Backend:
        return nb.Backend(
            name="swapped",
            load_namespace=load,
            probe=lambda: None,
            array_modules=(),
            to_host=np.asarray,
            from_host=lambda a, device=None: a,
            capabilities=nb.Capabilities(float16=False),
        )

    before = registry.generation
    nb.register_backend(record(lambda: array_api_compat.numpy))
    assert registry.generation > before
    first = nb.namespace("swapped")
    assert type(first.asarray([1.0])).__module__ == "numpy"
    nb.register_backend(record(lambda: array_api_strict), replace=True)
    second = nb.namespace("swapped")
    assert "array_api_strict" in type(second.asarray([1.0])).__module__


# -- namespace.py ------------------------------------------------------------------------------
def test_arange_with_a_float_step_makes_default_float_values(xp: Any, dtype: str) -> None:
    """kills: ``arange`` ignoring a float step (an int start and stop with step 0.5 made an
    integer array, or the active dtype not applied)."""
    a = xp.arange(0, 2, 0.5)
    assert a.dtype == getattr(xp, dtype)
    assert _host(a).tolist() == [0.0, 0.5, 1.0, 1.5]
    assert xp.isdtype(xp.arange(0, 3, 1).dtype, "integral")


# -- optim.py ----------------------------------------------------------------------------------
def test_adam_counts_steps_per_parameter(xp64: Any) -> None:
    """kills: Adam using the optimizer's global step count instead of each parameter's own:
    a parameter that joins late must get the bias correction of its own first step."""
    a = nn.Parameter(xp64.asarray(np.ones(3)))
    b = nn.Parameter(xp64.asarray(np.ones(3)))
    opt = optim.Adam([a, b], lr=0.1)
    for _ in range(3):  # only a has a gradient for three steps
        a.grad, b.grad = xp64.asarray(np.full(3, 0.5)), None
        opt.step()
    a.grad, b.grad = xp64.asarray(np.full(3, 0.5)), xp64.asarray(np.full(3, 0.5))
    opt.step()
    # b's first step: m = 0.1 g, v = 0.001 g^2, corrected by t = 1 -> m^ = g, sqrt(v^) = g.
    # (With t = 4, the bias corrections would make it lr * 0.1 / 0.3439 / sqrt(0.001 / 0.004).)
    np.testing.assert_allclose(
        _host(b.data), np.full(3, 1.0 - 0.1 * 0.5 / (0.5 + 1e-8)), rtol=1e-12
    )
    assert opt.state_dict()["state"][1]["step"] == 1


# -- autograd/function.py ----------------------------------------------------------------------
def test_the_root_keeps_its_gradient_after_backward(xp64: Any) -> None:
    """kills: the root's gradient cleared after backward (like an intermediate's)."""
    x = Tensor(xp64.asarray(np.arange(3.0)), requires_grad=True)
    y = (x * x).sum()
    y.backward()
    assert y.grad is not None and float(_host(y.grad)) == 1.0
    z = x * 2.0
    z.backward(xp64.asarray(np.array([1.0, 2.0, 3.0])))
    assert _host(z.grad).tolist() == [1.0, 2.0, 3.0]


def test_a_safetensors_array_whose_shape_differs_from_the_metadata_is_refused(
    tmp_path: Path,
) -> None:
    """The same check in the safetensors reader (the survivor was found in the .npz one)."""
    from safetensors.numpy import load_file, save_file

    path = tmp_path / "m.safetensors"
    nb.save(_model(), path)
    meta = io.read_metadata(path)
    tensors = load_file(str(path))
    key = next(k for k, v in tensors.items() if v.shape == (2, 3))
    tensors[key] = tensors[key].T.copy()
    save_file(tensors, str(path), metadata={"format": io.FORMAT, METADATA_FIELD: json.dumps(meta)})
    _assert_refused(path, r"has shape \(3, 2\), but the metadata says \(2, 3\)")
