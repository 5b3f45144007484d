"""Convolutional layers against ``torch.nn.functional``: conv2d (stride, padding, dilation,
groups), conv_transpose2d, max / average / adaptive pooling, batch_norm (training and
evaluation) and group_norm, forward and gradients on random shapes (hypothesis), on every
backend; gradcheck on numpy and array_api_strict; im2col / col2im; the layers and their
buffers; a small CNN on the 8x8 digits."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend import nn, optim, registry
from nnbackend.errors import ArgumentError, CheckpointError, DtypeError, ShapeError
from nnbackend.namespace import array_namespace, backend_for, ops_for
from nnbackend.nn import conv as C
from nnbackend.nn import normalization as N
from nnbackend.nn import pooling as P

torch = pytest.importorskip("torch")
TF = torch.nn.functional

# Each runs on every backend and dtype: a third of the profile's budget (8 of the default 25;
# 3 under the jax-only profile, whose col2im goes through a one-hot product until the ops
# layer gives jax its scatter-add).
EXAMPLES = settings(max_examples=max(3, settings.default.max_examples // 3), deadline=None)


def _host(a: Any) -> np.ndarray:
    if isinstance(a, nb.Tensor):
        a = a.data
    return np.asarray(registry.get(registry.backend_of(a)).to_host(a), dtype=np.float64)


def _tol(dtype: str) -> float:
    """Relative tolerance: 1e-10 in float64 (the issue's bar), about 1000 eps in float32 (a
    sum of hundreds of products), 4 eps * 100 in float16."""
    return {"float64": 1e-10, "float32": 1000 * float(np.finfo(np.float32).eps)}.get(
        dtype, 100 * 4 * float(np.finfo(np.float16).eps)
    )


def _close(ours: Any, ref: Any, dtype: str, what: str) -> None:
    ours, ref = _host(ours), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    scale = max(1.0, float(np.abs(ref).max(initial=0.0)))
    err = float(np.abs(ours - ref).max(initial=0.0))
    assert err <= _tol(dtype) * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})"


def _no_half(dtype: str) -> None:
    if dtype == "float16":
        pytest.skip("compared with torch in float64 and float32; float16 in its own test")


def _compare(xp: Any, dtype: str, ours: Any, theirs: Any, arrays: list[np.ndarray]) -> None:
    """Run ``ours`` on Tensors of ``arrays`` (in ``dtype``) and ``theirs`` on float64 torch
    tensors of the same values; compare outputs and the gradients of a random projection."""
    rng = np.random.default_rng(len(arrays))
    cast = [a.astype(dtype) for a in arrays]
    leaves = [nb.Tensor(xp.asarray(a), requires_grad=True) for a in cast]
    y = ours(*leaves)
    refs = [torch.tensor(a.astype(np.float64), requires_grad=True) for a in cast]
    ref = theirs(*refs)
    _close(y, ref.detach().numpy(), dtype, "output")
    gy = rng.standard_normal(tuple(ref.shape)).astype(dtype)
    y.backward(xp.asarray(gy))
    ref.backward(torch.tensor(gy.astype(np.float64)))
    for i, (leaf, r) in enumerate(zip(leaves, refs, strict=True)):
        assert leaf.grad.dtype == leaf.data.dtype
        _close(leaf.grad, r.grad.numpy(), dtype, f"gradient of input {i}")


@st.composite
def conv_cases(draw: Any) -> dict[str, Any]:
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    h = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]), 9))
    w = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]), 9))
    return {
        "n": draw(st.integers(1, 3)),
        "cin": cin,
        "cout": cout,
        "hw": (h, w),
        "k": (kh, kw),
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "groups": groups,
        "bias": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


@EXAMPLES
@given(case=conv_cases())
def test_conv2d_matches_torch(xp: Any, dtype: str, case: dict[str, Any]) -> None:
    _no_half(dtype)
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["cin"], *case["hw"]))
    w = rng.standard_normal((case["cout"], case["cin"] // case["groups"], *case["k"]))
    arrays = [x, w] + ([rng.standard_normal(case["cout"])] if case["bias"] else [])
    kw = {k: case[k] for k in ("stride", "padding", "dilation", "groups")}
    _compare(xp, dtype, lambda *a: C.conv2d(*a, **kw), lambda *a: TF.conv2d(*a, **kw), arrays)


@EXAMPLES
@given(case=conv_cases(), extra=st.integers(0, 2))
def test_conv_transpose2d_matches_torch(
    xp: Any, dtype: str, case: dict[str, Any], extra: int
) -> None:
    _no_half(dtype)
    rng = np.random.default_rng(case["seed"])
    g = case["groups"]
    x = rng.standard_normal((case["n"], case["cin"], *case["hw"]))
    w = rng.standard_normal((case["cin"], case["cout"] // g, *case["k"]))
    out_pad = tuple(min(extra, s - 1) for s in case["stride"])
    dil = case["dilation"]
    # Keep the output non-empty: padding at most what the transposed size allows.
    pad = tuple(
        min(p, ((n - 1) * s + d * (k - 1)) // 2)
        for p, n, s, d, k in zip(
            case["padding"], case["hw"], case["stride"], dil, case["k"], strict=True
        )
    )
    arrays = [x, w] + ([rng.standard_normal(case["cout"])] if case["bias"] else [])

    def ours(*a: Any) -> Any:
        return C.conv_transpose2d(*a, stride=case["stride"], padding=pad,
                                  output_padding=out_pad, groups=g, dilation=dil)  # fmt: skip

    def theirs(*a: Any) -> Any:
        return TF.conv_transpose2d(*a, stride=case["stride"], padding=pad,
                                   output_padding=out_pad, groups=g, dilation=dil)  # fmt: skip

    _compare(xp, dtype, ours, theirs, arrays)


@st.composite
def pool_cases(draw: Any) -> dict[str, Any]:
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return {
        "shape": (
            draw(st.integers(1, 2)),
            draw(st.integers(1, 3)),
            draw(st.integers(k[0], 9)),
            draw(st.integers(k[1], 9)),
        ),
        "k": k,
        "stride": (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        "padding": (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2))),
        "seed": draw(st.integers(0, 2**16)),
    }


@EXAMPLES
@given(case=pool_cases())
def test_pools_match_torch(xp: Any, dtype: str, case: dict[str, Any]) -> None:
    _no_half(dtype)
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"])
    k, s, p = case["k"], case["stride"], case["padding"]
    _compare(
        xp, dtype, lambda a: P.max_pool2d(a, k, s, p), lambda a: TF.max_pool2d(a, k, s, p), [x]
    )
    _compare(
        xp, dtype, lambda a: P.avg_pool2d(a, k, s, p), lambda a: TF.avg_pool2d(a, k, s, p), [x]
    )
    out = (int(rng.integers(1, case["shape"][2] + 1)), int(rng.integers(1, case["shape"][3] + 1)))
    _compare(
        xp,
        dtype,
        lambda a: P.adaptive_avg_pool2d(a, out),
        lambda a: TF.adaptive_avg_pool2d(a, out),
        [x],
    )


@EXAMPLES
@given(
    shape=st.sampled_from([(4, 3), (3, 2, 5), (2, 3, 4, 5), (5, 1, 2, 2)]),
    training=st.booleans(),
    affine=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_batch_norm_matches_torch(
    xp: Any, dtype: str, shape: tuple[int, ...], training: bool, affine: bool, seed: int
) -> None:
    _no_half(dtype)
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rng.standard_normal(shape) * 3 + 1
    mean0, var0 = rng.standard_normal(c).astype(dtype), (rng.random(c) + 0.5).astype(dtype)
    running = [nb.Tensor(xp.asarray(mean0)), nb.Tensor(xp.asarray(var0))]
    ref_running = [torch.tensor(mean0.astype(np.float64)), torch.tensor(var0.astype(np.float64))]
    arrays = [x] + ([rng.standard_normal(c), rng.standard_normal(c)] if affine else [])

    def ours(*a: Any) -> Any:
        return N.batch_norm(a[0], *running, *a[1:], training=training, momentum=0.3, eps=1e-3)

    def theirs(*a: Any) -> Any:
        return TF.batch_norm(a[0], *ref_running, *a[1:], training=training, momentum=0.3, eps=1e-3)

    _compare(xp, dtype, ours, theirs, arrays)
    _close(running[0], ref_running[0].numpy(), dtype, "running mean")
    _close(running[1], ref_running[1].numpy(), dtype, "running var")


@EXAMPLES
@given(
    case=st.sampled_from([(2, 6, 3, 4, 3), (1, 4, 5, 1, 1), (3, 4, 2, 2, 4), (2, 6, 7, 0, 2)]),
    seed=st.integers(0, 2**16),
)
def test_group_norm_matches_torch(xp: Any, dtype: str, case: tuple[int, ...], seed: int) -> None:
    _no_half(dtype)
    n, c, h, w, groups = case
    shape = (n, c, h, w) if w else (n, c, h)
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(shape), rng.standard_normal(c), rng.standard_normal(c)]
    _compare(
        xp,
        dtype,
        lambda x, a, b: N.group_norm(x, groups, a, b),
        lambda x, a, b: TF.group_norm(x, groups, a, b),
        arrays,
    )


def test_float16_keeps_its_dtype(xp: Any, dtype: str) -> None:
    """Every layer keeps the input dtype, float16 included, and stays near float64."""
    rng = np.random.default_rng(0)
    x64 = rng.standard_normal((2, 4, 6, 6))
    model = nn.Sequential(
        nn.Conv2d(4, 4, 3, padding=1, groups=2),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.ConvTranspose2d(4, 2, 2, stride=2),
        nn.GroupNorm(2, 2),
        nn.AvgPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    y = model(xp.asarray(x64.astype(dtype)))
    assert y.data.dtype == xp.asarray(x64.astype(dtype)).dtype
    assert tuple(y.shape) == (2, 2)
    y.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == p.data.dtype, name
    for name, b in model.named_buffers():
        assert b.data.dtype == p.data.dtype, name


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_gradcheck_every_layer(backend: str) -> None:
    rng = np.random.default_rng(1)
    with nb.using(backend=backend, dtype="float64"):
        xp = nb.namespace()

        def arr(*shape: int) -> Any:
            return xp.asarray(rng.standard_normal(shape))

        x = arr(2, 4, 5, 5)
        assert nb.gradcheck(
            lambda a, w, b: C.conv2d(a, w, b, 2, 1, 1, 2), x, arr(4, 2, 3, 3), arr(4)
        )
        assert nb.gradcheck(
            lambda a, w: C.conv2d(a, w, None, (1, 2), (2, 0), (2, 1)), x, arr(3, 4, 2, 3)
        )
        assert nb.gradcheck(
            lambda a, w, b: C.conv_transpose2d(a, w, b, 2, 1, 1, 2), x, arr(4, 3, 3, 3), arr(6)
        )
        assert nb.gradcheck(lambda a: P.max_pool2d(a, 3, 2, 1), x)
        assert nb.gradcheck(lambda a: P.avg_pool2d(a, 2, 1, 1), x)
        assert nb.gradcheck(lambda a: P.adaptive_avg_pool2d(a, (3, 2)), x)
        assert nb.gradcheck(
            lambda a, w, b: N.batch_norm(a, None, None, w, b, True), x, arr(4), arr(4)
        )

        def evaluated(a: Any, w: Any, b: Any) -> Any:
            # gradcheck calls with float64 NumPy copies too: statistics of the input's backend.
            ns = array_namespace(a.data)
            mean = ns.asarray([0.5, -1.0, 0.0, 2.0], dtype=a.data.dtype)
            return N.batch_norm(a, mean, ns.ones((4,), dtype=a.data.dtype) * 0.7, w, b, False)

        assert nb.gradcheck(evaluated, x, arr(4), arr(4))
        assert nb.gradcheck(lambda a, w, b: N.group_norm(a, 2, w, b), x, arr(4), arr(4))


def test_col2im_is_the_adjoint_of_im2col(xp: Any, dtype: str) -> None:
    """<im2col(x), c> == <x, col2im(c)>: col2im adds each column entry back where im2col took
    it from, overlapping windows included (scatter-add, not assignment)."""
    _no_half(dtype)
    rng = np.random.default_rng(2)
    x = xp.asarray(rng.standard_normal((2, 3, 7, 6)).astype(dtype))
    geometry = ((3, 2), (2, 1), (1, 2))
    cols = C.im2col(x, *geometry)
    assert tuple(cols.shape) == (2 * 3 * 4, 3 * 3 * 2)
    c = xp.asarray(rng.standard_normal(tuple(cols.shape)).astype(dtype))
    back = C.col2im(c, (2, 3, 7, 6), *geometry)
    lhs = float(np.sum(_host(cols) * _host(c)))
    rhs = float(np.sum(_host(x) * _host(back)))
    assert abs(lhs - rhs) <= _tol(dtype) * 100 * max(1.0, abs(lhs))
    # Every pixel is counted as often as windows cover it.
    ones = C.col2im(xp.ones(tuple(cols.shape)), (2, 3, 7, 6), *geometry)
    counts = _host(ones)
    assert counts[0, 0, 0, 0] == 1 and counts.max() > 1


def test_strict_slice_col2im_matches_scatter_add(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback for backends without scatter-add (one slice add per kernel offset) gives
    the scatter-add's result."""
    rng = np.random.default_rng(3)
    cols = rng.standard_normal((2 * 3 * 3, 2 * 2 * 3))
    with nb.using(backend="numpy"):
        expected = _host(C.col2im(cols, (2, 2, 6, 7), (2, 3), (2, 2), (1, 1)))
    with nb.using(backend="array_api_strict"):
        xp = nb.namespace()
        assert registry.get("array_api_strict").scatter_add is None
        got = _host(C.col2im(xp.asarray(cols), (2, 2, 6, 7), (2, 3), (2, 2), (1, 1)))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_torch_backend_runs_torchs_own_convolution(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the torch backend, conv2d and max_pool2d run torch's own kernels, and agree with
    the portable path on the same backend (ties in the pooled input included)."""
    if registry.probe("torch") is not None:
        pytest.skip("torch backend unavailable")
    rng = np.random.default_rng(4)
    x = np.round(rng.standard_normal((2, 4, 7, 7)))
    w, b = rng.standard_normal((6, 2, 3, 3)), rng.standard_normal(6)

    def run(fused: bool) -> list[np.ndarray]:
        leaves = [nb.Tensor(xp.asarray(a), requires_grad=True) for a in (x, w, b)]
        pooled = P.max_pool2d(leaves[0], 3, 2, 1)
        assert (pooled.creator.fused is not None) == fused
        y = C.conv2d(pooled, *leaves[1:], stride=1, padding=1, groups=2)
        assert y.creator.fused == fused
        (y * y).sum().backward()
        return [_host(y)] + [_host(t.grad) for t in leaves]

    with nb.using(backend="torch", dtype="float64"):
        xp = nb.namespace()
        fused = run(True)
        arr = xp.asarray(x)
        monkeypatch.setitem(ops_for(backend_for(arr)[0], arr)._cache, ("conv_kernels",), {})
        portable = run(False)
    for a, c in zip(fused, portable, strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)


def test_weight_layout_loads_pytorch_weights() -> None:
    """A torch Conv2d's and ConvTranspose2d's state dicts load as they are."""
    torch.manual_seed(0)
    for theirs, ours in (
        (
            torch.nn.Conv2d(4, 6, (3, 2), stride=2, padding=1, groups=2),
            nn.Conv2d(4, 6, (3, 2), 2, 1, groups=2),
        ),
        (
            torch.nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2),
            nn.ConvTranspose2d(4, 6, 3, 2, groups=2),
        ),
    ):
        theirs = theirs.double()
        ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
        x = np.random.default_rng(5).standard_normal((2, 4, 6, 6))
        np.testing.assert_allclose(
            _host(ours(x)), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-12, atol=1e-12
        )


def test_batchnorm_layer_tracks_running_statistics_like_torch() -> None:
    rng = np.random.default_rng(6)
    ours, theirs = nn.BatchNorm2d(3, momentum=0.2), torch.nn.BatchNorm2d(3, momentum=0.2).double()
    for _ in range(3):
        x = rng.standard_normal((4, 3, 2, 2)) * 2 + 1
        _close(ours(x), theirs(torch.tensor(x)).detach().numpy(), "float64", "train output")
    for name in ("running_mean", "running_var"):
        _close(getattr(ours, name), getattr(theirs, name).numpy(), "float64", name)
    ours.eval()
    theirs.eval()
    x = rng.standard_normal((2, 3, 2, 2))
    _close(ours(x), theirs(torch.tensor(x)).detach().numpy(), "float64", "eval output")
    before = _host(ours.running_mean)
    ours(x)
    np.testing.assert_array_equal(_host(ours.running_mean), before)  # eval: no update
    with pytest.raises(ArgumentError, match="more than one value per channel"):
        nn.BatchNorm1d(3)(np.ones((1, 3)))


def test_buffers_are_checkpointed_and_moved(tmp_path: Any) -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 2))
    names = [name for name, _ in model.named_buffers()]
    assert names == ["1.running_mean", "1.running_var"]
    assert list(model.state_dict())[-2:] == names
    assert all(not p.requires_grad for p in model.buffers())
    assert names[0] not in [name for name, _ in model.named_parameters()]
    model(np.random.default_rng(7).standard_normal((4, 1, 4, 4)))  # updates the buffers
    saved = {k: _host(v) for k, v in model.state_dict().items()}
    nb.save(model, tmp_path / "cnn.npz")
    fresh = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 2))
    nb.load(fresh, tmp_path / "cnn.npz")
    for k, v in fresh.state_dict().items():
        np.testing.assert_array_equal(_host(v), saved[k])
    # A buffer of the wrong shape is refused before anything changes.
    other = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    with pytest.raises(CheckpointError):
        other.load_state_dict({"1.running_mean": np.zeros(2)}, strict=False)
    with pytest.raises(CheckpointError, match="running_var"):
        fresh.load_state_dict({k: v for k, v in saved.items() if "running_var" not in k})
    if registry.probe("array_api_strict") is None:
        fresh.to("array_api_strict")
        assert registry.backend_of(fresh[1].running_mean.data) == "array_api_strict"
        np.testing.assert_array_equal(_host(fresh[1].running_var), saved["1.running_var"])
    # Assigning an array to a buffer replaces its values; the name stays a buffer.
    fresh[1].running_mean = fresh[1].running_mean.data * 0.0
    assert "running_mean" in fresh[1]._buffers
    with pytest.raises(ArgumentError, match="already a parameter"):
        fresh[1].register_buffer("weight", np.zeros(2))


def test_errors_name_what_was_wrong() -> None:
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ShapeError, match=r"\(N, C, H, W\)"):
        conv(np.ones((3, 8, 8)))
    with pytest.raises(ShapeError, match="3"):
        conv(np.ones((1, 2, 8, 8)))
    with pytest.raises(ShapeError, match="does not fit"):
        conv(np.ones((1, 3, 2, 2)))
    with pytest.raises(DtypeError, match="float32"):
        conv(np.ones((1, 3, 8, 8), dtype=np.float32))
    with pytest.raises(ArgumentError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ArgumentError, match="stride"):
        nn.Conv2d(3, 4, 3, stride=0)
    with pytest.raises(ArgumentError, match="output_padding"):
        C.conv_transpose2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), output_padding=1)
    with pytest.raises(ArgumentError, match="half the kernel"):
        P.max_pool2d(np.ones((1, 1, 4, 4)), 2, padding=2)
    with pytest.raises(ShapeError, match="has 2 channels"):
        nn.BatchNorm2d(3)(np.ones((2, 2, 3, 3)))


def test_cnn_on_digit_images_reaches_97_percent() -> None:
    pytest.importorskip("sklearn", reason="digits() needs scikit-learn")
    nb.random.seed(0)
    with nb.using(dtype="float32"):
        (x, t), (x_test, t_test) = nb.datasets.digits(images=True)
        assert tuple(x.shape[1:]) == (1, 8, 8)
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 10),
        )
        start, cpu_start = time.perf_counter(), time.process_time()
        trainer = nb.Trainer(
            model, nn.SoftmaxCrossEntropy(), optim.Adam(model.parameters(), lr=3e-3)
        )
        trainer.fit(x, t, epochs=8, batch_size=32, progress=False)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        model.eval()
        predicted = np.argmax(_host(model(x_test)), axis=1)
    accuracy = float(np.mean(predicted == _host(t_test)))
    assert accuracy >= 0.97, (accuracy, seconds, cpu_seconds)
    # About 4 s of CPU time with one BLAS thread on an idle core. Speed is the benchmarks'
    # business (benchmarks/cnn_step.py), not a timed test's: on a GPU machine with 16 BLAS
    # threads spinning the process clocked 200 s of CPU time for a 32 s run.


def test_cnn_example_runs_quick(run_python: Any, tmp_path: Any) -> None:
    """examples/cnn.py --quick: trains, reports accuracy, saves, plots the loss and filters."""
    pytest.importorskip("sklearn", reason="--quick uses scikit-learn's digits")
    pytest.importorskip("matplotlib", reason="the example draws its plots with matplotlib")
    script = Path(__file__).resolve().parents[1] / "examples" / "cnn.py"
    if not script.exists():
        pytest.skip("no examples/ next to the tests (installed package?)")
    proc = run_python(
        args=[str(script), "--quick", "--epochs", "1", "--out", str(tmp_path)],
        env={"MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout
    names = {p.name for p in tmp_path.iterdir()}
    assert {"cnn.npz", "cnn-loss.png", "cnn-filters.png"} <= names


@pytest.mark.parametrize("by_offsets", [True, False])
def test_max_pool_gives_ties_to_the_first_maximum_like_torch(
    by_offsets: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both pooling paths (kernel offsets; im2col for backends without slice assignment)
    route the gradient of a tied window to its first maximum, as torch does, and agree with
    torch on overlapping, padded, dilated windows."""
    monkeypatch.setattr(P, "USE_OFFSETS", by_offsets)
    rng = np.random.default_rng(8)
    x = np.round(rng.standard_normal((2, 3, 7, 6)))  # many ties
    for args in ((2, 2, 0, 1), (3, 1, 1, 1), (3, 2, 1, 2)):
        t = nb.Tensor(x, requires_grad=True)
        y = P.max_pool2d(t, *args)
        gy = rng.standard_normal(tuple(y.shape))
        y.backward(gy)
        ref = torch.tensor(x, requires_grad=True)
        r = TF.max_pool2d(ref, *args)
        r.backward(torch.tensor(gy))
        np.testing.assert_array_equal(_host(y), r.detach().numpy())
        np.testing.assert_allclose(_host(t.grad), ref.grad.numpy(), rtol=1e-14, atol=1e-14)
        t = nb.Tensor(x, requires_grad=True)
        y = P.avg_pool2d(t, *args[:3])
        gy = rng.standard_normal(tuple(y.shape))
        y.backward(gy)
        ref = torch.tensor(x, requires_grad=True)
        r = TF.avg_pool2d(ref, *args[:3])
        r.backward(torch.tensor(gy))
        np.testing.assert_allclose(_host(y), r.detach().numpy(), rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(_host(t.grad), ref.grad.numpy(), rtol=1e-14, atol=1e-14)


def test_cnn_benchmark_smoke(tmp_path: Any) -> None:
    """benchmarks/cnn_step.py starts its worker processes, times them and prints the ratios;
    ``--gpu --dry-run`` runs the GPU workers' code on the CPU and saves nothing."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / "cnn_step.py").exists():
        pytest.skip("no benchmarks/ next to the tests")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNBACKEND")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.cnn_step",
            "--gpu",
            "--dry-run",
            "--rounds",
            "1",
            "--threads",
            "1",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cupy / torch_native_cuda (median)" in proc.stdout
    assert "page faults" in proc.stdout and "wrote" not in proc.stdout


def test_float16_convolution_computes_in_float32_where_float16_is_slow() -> None:
    """On NumPy (no fast float16) the node widens to float32 and stores float16: the output
    and gradients are float16 and as close to float64 as one float16 rounding of each."""
    rng = np.random.default_rng(9)
    x, w, b = (
        rng.standard_normal((2, 3, 9, 9)),
        rng.standard_normal((4, 3, 3, 3)),
        rng.standard_normal(4),
    )
    with nb.using(backend="numpy", dtype="float16"):
        leaves = [nb.Tensor(a.astype(np.float16), requires_grad=True) for a in (x, w, b)]
        y = C.conv2d(*leaves, stride=2, padding=1)
        assert y.creator.c.wide and y.data.dtype == np.float16
        y.backward(np.ones(tuple(y.shape), dtype=np.float16))
    ref = [
        torch.tensor(a.astype(np.float16).astype(np.float64), requires_grad=True) for a in (x, w, b)
    ]
    r = TF.conv2d(*ref, stride=2, padding=1)
    r.sum().backward()
    eps = float(np.finfo(np.float16).eps)
    for ours, theirs in [(y, r.detach())] + [
        (t.grad, q.grad) for t, q in zip(leaves, ref, strict=True)
    ]:
        data = ours.data if isinstance(ours, nb.Tensor) else ours
        assert data.dtype == np.float16
        expected = theirs.numpy()
        # float32 sums, one rounding to float16 at the end: half an eps of the value
        np.testing.assert_allclose(data.astype(np.float64), expected, rtol=eps, atol=eps)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_float16_normalisation_statistics_do_not_overflow(backend: str) -> None:
    """Deviations of 3 sigma = 450 square to 200000, beyond float16's 65504 (the variance,
    22500, fits): the statistics are taken in float32; the outputs, gradients and running
    statistics stay float16."""
    if registry.probe(backend) is not None:
        pytest.skip(f"{backend} unavailable")
    rng = np.random.default_rng(10)
    x = (rng.standard_normal((4, 3, 5, 5)) * 150).astype(np.float16)
    with nb.using(backend=backend, dtype="float16"):
        xp = nb.namespace()
        bn, gn = nn.BatchNorm2d(3), nn.GroupNorm(3, 3)
        for layer, ref in ((bn, torch.nn.BatchNorm2d(3)), (gn, torch.nn.GroupNorm(3, 3))):
            t = nb.Tensor(xp.asarray(x), requires_grad=True)
            y = layer(t)
            y.sum().backward()
            assert y.data.dtype == t.data.dtype == t.grad.dtype
            expected = ref.double()(torch.tensor(x.astype(np.float64))).detach().numpy()
            got = _host(y)
            assert np.all(np.isfinite(got))
            eps = float(np.finfo(np.float16).eps)
            np.testing.assert_allclose(got, expected, rtol=4 * eps, atol=4 * eps)
        assert bn.running_var.data.dtype == t.data.dtype
        assert np.all(np.isfinite(_host(bn.running_var)))
        bn.eval()
        assert np.all(np.isfinite(_host(bn(xp.asarray(x)))))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_cnn_under_mixed16(backend: str) -> None:
    """Under "mixed16": float32 master weights and running statistics, float16 activations
    out of every conv and normalisation layer, float32 gradients, and the same numbers as the
    float32 model to float16 accuracy."""
    if registry.probe(backend) is not None:
        pytest.skip(f"{backend} unavailable")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 2, 6, 6))

    def build() -> nn.Sequential:
        nb.random.seed(3)
        return nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
            nn.ConvTranspose2d(4, 4, 2, stride=2), nn.GroupNorm(2, 4), nn.Flatten(),
        )  # fmt: skip

    with nb.using(backend=backend, dtype="float32"):
        ref_model = build()
        ref = ref_model(nb.namespace().asarray(x.astype(np.float32)))
        ref.sum().backward()
    with nb.using(backend=backend, dtype="mixed16"):
        model = build()
        y = model(nb.namespace().asarray(x.astype(np.float32)))
        assert "float16" in str(y.data.dtype)
        y.sum().backward()
    for (name, p), (_, q) in zip(
        model.named_parameters(), ref_model.named_parameters(), strict=True
    ):
        assert "float32" in str(p.data.dtype) and "float32" in str(p.grad.dtype), name
        scale = max(1.0, float(np.abs(_host(q.grad)).max()))
        np.testing.assert_allclose(_host(p.grad), _host(q.grad), atol=0.05 * scale, err_msg=name)
    for _, b in model.named_buffers():
        assert "float32" in str(b.data.dtype)
    np.testing.assert_allclose(_host(y), _host(ref), atol=0.05)
