"""The operations object's contract (nnbackend.backends.ops), on every backend, and the rule
that the engine, layers and optimizers hold no backend branch."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend import nn, optim, registry
from nnbackend.backends.ops import Ops
from nnbackend.namespace import backend_for, ops_for

SRC = Path(__file__).resolve().parents[1] / "src" / "nnbackend"
OPTIMIZERS = ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "BookAdam", "AdamW"]


def _ops(xp: Any) -> Any:
    a = xp.zeros((1,), dtype=xp.float32)
    return ops_for(backend_for(a)[0], a)


def _host(ops: Any, a: Any) -> Any:
    return np.asarray(ops.host_copy(a))


def test_every_backend_has_an_ops_object(xp: Any) -> None:
    ops = _ops(xp)
    assert isinstance(ops, Ops)
    assert ops is _ops(xp)  # cached per namespace


def test_widen_narrow_round_trip(xp: Any) -> None:
    ops = _ops(xp)
    if ops.float16 is None:
        pytest.skip("this backend has no float16")
    values = np.array([0.0, -0.0, 1.5, -2.25, 65504.0, 6.1e-5, 5.96e-8, np.inf], np.float16)
    x = xp.asarray(values)
    wide = ops.widen(x)
    assert wide.dtype == ops.compute_dtype(x.dtype)
    back = ops.narrow(wide, like=x)
    assert back.dtype == x.dtype
    np.testing.assert_array_equal(_host(ops, back).view(np.uint16), values.view(np.uint16))
    # convert is exact both ways whatever the policy
    assert ops.convert(x, ops.float32).dtype == ops.float32
    np.testing.assert_array_equal(
        _host(ops, ops.convert(ops.convert(x, ops.float32), x.dtype)).view(np.uint16),
        values.view(np.uint16),
    )


def test_numpy_computes_float16_in_float32() -> None:
    ops = _ops(nb.namespace("numpy"))
    assert ops.compute_dtype(ops.float16) == ops.float32
    assert ops.compute_dtype(ops.float32) == ops.float32
    big = np.ones(4096, np.float16)
    assert ops.compute(big, 1024).wide and not ops.compute(big[:10], 1024).wide
    assert not ops.compute(np.ones(4096, np.float32)).wide


def test_scatter_add_accumulates_repeated_indices(xp: Any) -> None:
    ops = _ops(xp)
    target = xp.zeros((4, 3), dtype=xp.float32)
    indices = xp.asarray([0, 2, 0, 0, 3])
    values = xp.reshape(xp.arange(15, dtype=xp.float32), (5, 3))
    out = ops.scatter_add(target, indices, values)
    want = np.zeros((4, 3), np.float32)
    np.add.at(want, [0, 2, 0, 0, 3], np.arange(15, dtype=np.float32).reshape(5, 3))
    np.testing.assert_array_equal(_host(ops, out), want)


@pytest.fixture
def no_inplace_numpy() -> Any:
    """The numpy record, registered with in-place writes forbidden (conftest restores)."""
    record = registry.get("numpy")
    registry.register_backend(
        dataclasses.replace(
            record, capabilities=dataclasses.replace(record.capabilities, inplace=False)
        ),
        replace=True,
    )
    return record


def test_update_primitives_rebind_without_inplace_writes(no_inplace_numpy: Any) -> None:
    ops = _ops(nb.namespace("numpy"))
    assert not ops.inplace
    y = np.array([1.0, 2.0])
    for op, arg in ((ops.add_, np.array([1.0, 1.0])), (ops.sub_, np.array([1.0, 1.0]))):
        out = op(y, arg)
        assert out is not y
    assert ops.mul_(y, 2.0) is not y and ops.sub_scaled_(y, 0.5, y) is not y
    assert ops.update(y, np.array([5.0, 6.0])) is not y
    fresh = ops.write(np.zeros(3), slice(0, 1), 1.0, lambda: np.array([1.0, 0.0, 0.0]))
    np.testing.assert_array_equal(fresh, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(y, [1.0, 2.0])  # never written


def test_update_primitives_write_in_place(xp: Any) -> None:
    ops = _ops(xp)
    if not ops.inplace:
        pytest.skip("no in-place writes here")
    y = xp.asarray([1.0, 2.0], dtype=xp.float32)
    assert ops.add_(y, y) is y and ops.mul_(y, 0.5) is y and ops.sub_scaled_(y, 0.5, y) is y
    np.testing.assert_array_equal(_host(ops, y), [0.5, 1.0])


def _train(name: str, steps: int = 4) -> tuple[Any, list[dict[str, Any]]]:
    rng = np.random.default_rng(3)
    originals = [rng.standard_normal((40, 900)), rng.standard_normal(7), np.array(0.5)]
    params = [nn.Parameter(a.copy()) for a in originals]
    kwargs = {"weight_decay": 0.1} if name in ("Adam", "AdamW", "BookAdam") else {}
    opt = getattr(optim, name)(params, lr=0.05, **kwargs)
    for _ in range(steps):
        for p, a in zip(params, originals, strict=True):
            p.grad = rng.standard_normal(a.shape)
        opt.step()
    return [np.array(p.data) for p in params], opt.state


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_rebinding_equals_in_place_bit_for_bit(name: str, no_inplace_numpy: Any) -> None:
    rebound, rebound_state = _train(name)
    registry.register_backend(no_inplace_numpy, replace=True)
    in_place, in_place_state = _train(name)
    for a, b in zip(rebound, in_place, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(rebound_state, in_place_state, strict=True):
        assert set(a) == set(b)
        for key in a:
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))


def test_ops_arrays_are_not_cached_where_the_ops_may_not() -> None:
    ops = _ops(nb.namespace("numpy"))
    made = []
    ops.may_cache = False
    try:
        for _ in range(2):
            ops.cached(("test", 1), lambda: made.append(1) or np.zeros(1))
    finally:
        ops.may_cache = True
    assert len(made) == 2
    ops.cached(("test", 2), lambda: made.append(1) or np.zeros(1))
    ops.cached(("test", 2), lambda: made.append(1) or np.zeros(1))
    assert len(made) == 3


def test_dropout_masks_come_from_the_ops_reproducibly(xp: Any) -> None:
    from nnbackend import random
    from nnbackend.nn import functional as F

    x = xp.ones((50, 40), dtype=xp.float32)
    masks = []
    for _ in range(2):
        gen = random.Generator(7)
        masks.append(_host(_ops(xp), F.dropout(x, 0.5, generator=gen).data))
    np.testing.assert_array_equal(masks[0], masks[1])
    assert set(np.unique(masks[0])) == {0.0, 2.0}


# -- the torch float16 probe ---------------------------------------------------------------
@pytest.mark.parametrize("mode", ["native", "float32"])
def test_torch_float16_mode_is_forced_by_the_environment(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    from nnbackend.backends import torch as torch_backend

    monkeypatch.setenv(torch_backend.FLOAT16_ENV, mode)
    record = registry.get("torch")
    ops = torch_backend.TorchOps(record.load_namespace(), record)
    x = torch.ones(2048, dtype=torch.float16)
    want = torch.float32 if mode == "float32" else torch.float16
    assert ops.compute_dtype(torch.float16, x) == want
    assert ops.compute(x).wide == (mode == "float32")
    # torch's small float16 products are slow paths: where float16 is widened, small
    # products are too (NumPy keeps them native: see test_numpy_computes_float16_in_float32).
    small = torch.ones((30, 2), dtype=torch.float16)
    assert ops.compute_product(small, 10).wide == (mode == "float32")
    # Its float16 elementwise kernels run at float32's speed: the elementwise nodes (those
    # that give a size threshold) stay native at every size; the many-pass ones widen.
    big = torch.ones((256, 1024), dtype=torch.float16)
    assert not ops.compute(small, 1024).wide
    assert not ops.compute(big, 1024).wide
    assert ops.compute(big).wide == (mode == "float32")


def test_torch_float16_setting_rejects_other_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from nnbackend.backends import torch as torch_backend
    from nnbackend.errors import ArgumentError

    monkeypatch.setenv(torch_backend.FLOAT16_ENV, "fast")
    with pytest.raises(ArgumentError, match="native, float32"):
        torch_backend.float16_setting()


def test_torch_probe_measures_and_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    from nnbackend.backends import torch as torch_backend

    mode, ratio = torch_backend.probe_float16("cpu", rounds=2)
    assert mode == ("native" if ratio <= torch_backend.PROBE_RATIO else "float32")
    monkeypatch.delenv(torch_backend.FLOAT16_ENV, raising=False)
    monkeypatch.setitem(torch_backend._probed, "cpu", ("float32", 9.0))
    assert torch_backend.float16_decision("cpu")[0] == "float32"
    monkeypatch.setitem(torch_backend._probed, "cpu", ("native", 0.9))
    assert torch_backend.float16_decision("cpu")[0] == "native"


# -- no backend branch above the adapters ----------------------------------------------------
def _checked_files() -> list[Path]:
    files = [*sorted((SRC / "autograd").rglob("*.py")), *sorted((SRC / "nn").rglob("*.py"))]
    return [*files, SRC / "optim.py", SRC / "precision.py"]


def _branch_problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            names = [a.name for a in node.names]
            if node.module == "nnbackend.backends.host" or (
                node.module == "nnbackend.backends" and "host" in names
            ):
                problems.append(f"{path.name}:{node.lineno} imports backends.host")
        if isinstance(node, ast.Import) and any(
            a.name.endswith("backends.host") for a in node.names
        ):
            problems.append(f"{path.name}:{node.lineno} imports backends.host")
        if (isinstance(node, ast.Name) and node.id == "inplace") or (
            isinstance(node, ast.arg) and node.arg == "inplace"
        ):
            problems.append(f"{path.name}:{node.lineno} a variable named inplace")
        if isinstance(node, ast.Attribute) and node.attr in ("capabilities", "fast_float16_matmul"):
            problems.append(f"{path.name}:{node.lineno} reads the record's .{node.attr}")
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_wide")) or (
            isinstance(node, ast.Name) and node.id.startswith("_wide")
        ):
            problems.append(f"{path.name}:{node.lineno} a _wide helper")
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name.startswith("_wide"):
            problems.append(f"{path.name}:{node.lineno} a _wide helper")
        if isinstance(node, (ast.If, ast.IfExp)):
            for sub in ast.walk(node.test):
                name = sub.id if isinstance(sub, ast.Name) else getattr(sub, "attr", None)
                text = sub.value if isinstance(sub, ast.Constant) else None
                if (isinstance(name, str) and ("half" in name or "float16" in name)) or (
                    text == "float16"
                ):
                    problems.append(f"{path.name}:{node.lineno} branches on float16")
    return problems


def test_no_backend_branch_in_engine_layers_or_optimizers() -> None:
    problems = [p for path in _checked_files() for p in _branch_problems(path)]
    assert problems == []


def test_the_branch_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from nnbackend.backends import host\n"
        "def f(x, k, inplace):\n"
        "    if k.half is not None and x.dtype == k.half:\n"
        "        return _wide_update(x)\n"
        "    return x.capabilities\n"
    )
    found = " ".join(_branch_problems(bad))
    for what in ("backends.host", "inplace", "float16", "_wide", ".capabilities"):
        assert what in found


# -- JaxOps: no in-place writes anywhere -----------------------------------------------------
def _jax_ops() -> Any:
    jnp = pytest.importorskip("jax.numpy")
    with nb.using(backend="jax", dtype="float32"):
        return ops_for(jnp, jnp.zeros((1,), dtype=jnp.float32))


def test_jax_scatter_add_accumulates_repeated_indices_into_a_new_array() -> None:
    ops = _jax_ops()
    jnp = ops.xp
    target = jnp.ones((4, 3), dtype=jnp.float32)
    values = jnp.reshape(jnp.arange(15, dtype=jnp.float32), (5, 3))
    out = ops.scatter_add(target, jnp.asarray([0, 2, 0, 0, 3]), values)
    want = np.ones((4, 3), np.float32)
    np.add.at(want, [0, 2, 0, 0, 3], np.arange(15, dtype=np.float32).reshape(5, 3))
    np.testing.assert_array_equal(_host(ops, out), want)
    np.testing.assert_array_equal(_host(ops, target), np.ones((4, 3)))


def test_jax_write_sets_through_at_without_the_fallback() -> None:
    ops = _jax_ops()
    jnp = ops.xp
    target = jnp.zeros((3, 4), dtype=jnp.float32)

    def fallback() -> Any:
        raise AssertionError("JaxOps.write must not need the out-of-place fallback")

    out = ops.write(target, (slice(None), slice(1, 3)), jnp.ones((3, 2), jnp.float32), fallback)
    want = np.zeros((3, 4), np.float32)
    want[:, 1:3] = 1.0
    np.testing.assert_array_equal(_host(ops, out), want)
    np.testing.assert_array_equal(_host(ops, target), np.zeros((3, 4)))


def test_jax_update_primitives_return_new_values() -> None:
    ops = _jax_ops()
    jnp = ops.xp
    assert not ops.inplace and not ops.may_cache and ops.float16_compute == "native"
    y = jnp.asarray([1.0, 2.0], dtype=jnp.float32)
    x = jnp.asarray([0.5, 4.0], dtype=jnp.float32)
    got = {
        "add_": ops.add_(y, x),
        "sub_": ops.sub_(y, x),
        "mul_": ops.mul_(y, 3.0),
        "sub_scaled_": ops.sub_scaled_(y, 0.5, x),
        "update": ops.update(y, x),
    }
    want = {
        "add_": [1.5, 6.0],
        "sub_": [0.5, -2.0],
        "mul_": [3.0, 6.0],
        "sub_scaled_": [0.75, 0.0],
        "update": [0.5, 4.0],
    }
    for name, value in got.items():
        np.testing.assert_array_equal(_host(ops, value), want[name], err_msg=name)
    np.testing.assert_array_equal(_host(ops, y), [1.0, 2.0])


def test_jax_caches_constants_only_outside_a_trace() -> None:
    ops = _jax_ops()
    jax = pytest.importorskip("jax")
    made: list[int] = []

    def make() -> Any:
        made.append(1)
        return ops.xp.asarray(2.0, dtype=ops.xp.float32)

    @jax.jit
    def traced(x: Any) -> Any:
        return x * ops.cached(("test-jax", 1), make)

    for _ in range(2):
        traced(ops.xp.ones(2, dtype=ops.xp.float32))
        traced(ops.xp.ones(3, dtype=ops.xp.float32))  # a new shape: traced again
    assert len(made) == 2 and ("test-jax", 1) not in ops._cache  # tracers never kept
    ops.cached(("test-jax", 2), make)
    ops.cached(("test-jax", 2), make)
    assert len(made) == 3  # a concrete constant is kept


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_keeps_its_state_on_jax(name: str) -> None:
    """Each rule stores what the ops return: on jax (no in-place writes) a rule that updated a
    state array through a local alias would leave the state at zero and the parameters off
    NumPy's."""
    ops = _jax_ops()
    jnp = ops.xp
    rng = np.random.default_rng(5)
    start = [rng.standard_normal((6, 5)).astype(np.float32), rng.standard_normal(4)]
    start[1] = start[1].astype(np.float32)
    grads = [[rng.standard_normal(a.shape).astype(np.float32) for a in start] for _ in range(3)]
    kwargs = {"weight_decay": 0.1} if name in ("Adam", "AdamW", "BookAdam") else {}
    results = {}
    for backend, asarray in (("numpy", np.asarray), ("jax", jnp.asarray)):
        with nb.using(backend=backend, dtype="float32"):
            params = [nn.Parameter(asarray(a.copy())) for a in start]
            opt = getattr(optim, name)(params, lr=0.05, **kwargs)
            states = []
            for step in grads:
                for p, g in zip(params, step, strict=True):
                    p.grad = asarray(g)
                opt.step()
                states.append(
                    [
                        {k: np.array(ops.host_copy(v)) for k in opt.state_names for v in [st[k]]}
                        for st in opt.state
                    ]
                )
            results[backend] = ([np.array(ops.host_copy(p.data)) for p in params], states)
    (p_np, s_np), (p_jax, s_jax) = results["numpy"], results["jax"]
    for a, b in zip(p_np, p_jax, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    for step_np, step_jax in zip(s_np, s_jax, strict=True):
        for st_np, st_jax in zip(step_np, step_jax, strict=True):
            assert set(st_np) == set(st_jax)
            for key in st_np:
                np.testing.assert_allclose(st_jax[key], st_np[key], rtol=1e-5, atol=1e-6)
    for key in results["jax"][1][0][0]:  # every state array moved between steps
        assert not np.array_equal(s_jax[0][0][key], s_jax[-1][0][key]), key
    for a, b in zip(start, p_jax, strict=True):
        assert not np.array_equal(a, b)


_GETITEM_PEAK = """
import nnbackend as nb
from nnbackend.autograd import ops as o
from nnbackend.autograd.tensor import Tensor

def vmhwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024

with nb.using(backend="jax", dtype="float32"):
    xp = nb.namespace()
    x = Tensor(xp.ones((192, 192)), requires_grad=True)
    o.sum(x * x).backward()  # jax warmed up without indexing
    base = vmhwm()
    x = Tensor(xp.ones((192, 192)), requires_grad=True)
    y = x[:, :96]
    o.sum(y * y).backward()
    total = float(xp.sum(x.grad))
    print(vmhwm() - base, total)
"""


def test_jax_indexing_backward_builds_no_big_temporary() -> None:
    """``x[:, :96]`` of a 192x192 float32 array: the gradient is written through ``.at[]``,
    not by the standard-only fallback (a 36864 x 18432 mask, 3.2 GiB of peak memory)."""
    pytest.importorskip("jax")
    import subprocess
    import sys

    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc/self/status (VmHWM)")
    done = subprocess.run(
        [sys.executable, "-c", _GETITEM_PEAK], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    growth, total = done.stdout.split()
    assert float(total) == 2.0 * 192 * 96
    assert int(growth) < 50 * 2**20, f"peak RSS grew {int(growth) / 2**20:.0f} MiB"


def test_batch_norm_rejects_immutable_running_statistics() -> None:
    """Raw jax arrays as running statistics cannot be updated: an error, never stale
    statistics; NumPy arrays are still written in place."""
    from nnbackend.errors import ArgumentError
    from nnbackend.nn import normalization as F

    x = np.arange(12.0).reshape(4, 3)
    mean, var = np.zeros(3), np.ones(3)
    F.batch_norm(x, mean, var, training=True)
    np.testing.assert_allclose(mean, 0.1 * x.mean(axis=0))
    ops = _jax_ops()
    jnp = ops.xp
    with nb.using(backend="jax", dtype="float32"):
        xj = jnp.asarray(x, dtype=jnp.float32)
        with pytest.raises(ArgumentError, match="immutable"):
            F.batch_norm(xj, jnp.zeros(3, jnp.float32), jnp.ones(3, jnp.float32), training=True)
        rm = nb.Tensor(jnp.zeros(3, jnp.float32))
        F.batch_norm(xj, rm, nb.Tensor(jnp.ones(3, jnp.float32)), training=True)
        np.testing.assert_allclose(_host(ops, rm.data), 0.1 * x.mean(axis=0), rtol=1e-6)


def test_jax_dropout_masks_on_a_cpu_follow_the_host_stream() -> None:
    """One seed, one mask: on a CPU device jax draws NumPy's numbers (gradient checks
    recompute a seeded dropout on NumPy and need the same mask)."""
    from nnbackend import random
    from nnbackend.nn import functional as F

    ops = _jax_ops()
    jnp = ops.xp
    import jax

    if jax.default_backend() != "cpu":  # an accelerator draws its own masks (by design)
        pytest.skip(f"jax runs on {jax.default_backend()} here, not a CPU")
    x = jnp.ones((50, 40), dtype=jnp.float32)
    with nb.using(backend="jax", dtype="float32"):
        masks = [
            _host(ops, F.dropout(x, 0.5, generator=random.Generator(s)).data) for s in (7, 7, 8)
        ]
    with nb.using(backend="numpy", dtype="float32"):
        host = F.dropout(np.ones((50, 40), np.float32), 0.5, generator=random.Generator(7)).data
    np.testing.assert_array_equal(masks[0], masks[1])
    np.testing.assert_array_equal(masks[0], host)
    assert not np.array_equal(masks[0], masks[2])
    assert set(np.unique(masks[0])) == {0.0, 2.0}


class _UnhashableDevice(str):
    """A device object that compares but cannot be hashed, as ``cupy.cuda.Device``."""

    __hash__ = None  # type: ignore[assignment]


def test_constants_are_cached_per_device_even_for_an_unhashable_device() -> None:
    """The root gradient's 1 (and ReLU's 0, the class range, conv's indices) are cached per
    device; a CuPy device cannot be a dictionary key itself, so the key holds its repr."""
    from nnbackend.backends.ops import device_key

    device = _UnhashableDevice("cpu")
    with pytest.raises(TypeError):
        hash(device)
    assert device_key(device) == repr(device) and device_key("cpu") == "cpu"
    assert device_key(None) is None
    xp = nb.namespace("numpy", "float32")
    ops = ops_for(xp, xp.zeros(1))
    first = ops.one(xp.float32, device)
    again = ops.one(xp.float32, device)
    assert float(first) == float(again) == 1.0 and first is not again  # copies of one cached
    assert ops.lookup(("one", xp.float32, repr(device))) is not None


@settings(deadline=None)
@given(
    rows=st.integers(1, 300),
    cols=st.integers(1, 40),
    dtype=st.sampled_from(["float32", "float64"]),
    seed=st.integers(0, 2**16),
)
def test_column_sums_and_sums_of_products_match_float64_references(
    xp: Any, rows: int, cols: int, dtype: str, seed: int
) -> None:
    """``column_sum`` (a bias's gradient) and ``sum_product`` (the softmax loss) agree with
    sums taken in float64 within the rounding of a sum in ``dtype``, on every backend (NumPy
    computes them as BLAS products with ones, and a dot product); the function
    ``column_summer`` gives for a row count is the one ``column_sum`` applies."""
    ops = _ops(xp)
    rng = np.random.default_rng(seed)
    a64, b64 = rng.standard_normal((rows, cols)), rng.standard_normal((rows, cols))
    a, b = xp.asarray(a64.astype(dtype)), xp.asarray(b64.astype(dtype))
    exact_a, exact_b = a64.astype(dtype).astype(np.float64), b64.astype(dtype).astype(np.float64)
    eps = float(np.finfo(dtype).eps)
    columns = _host(ops, ops.column_sum(a))
    assert columns.shape == (cols,) and columns.dtype == np.dtype(dtype)
    bound = rows * eps * np.abs(exact_a).sum(axis=0) + 1e-300
    assert (np.abs(columns - exact_a.sum(axis=0)) <= bound).all()
    np.testing.assert_array_equal(_host(ops, ops.column_summer(rows, a.dtype)(a)), columns)
    total = float(np.asarray(ops.to_host(ops.sum_product(a, b))))
    products = exact_a * exact_b
    assert abs(total - products.sum()) <= rows * cols * eps * np.abs(products).sum() + 1e-300


def test_numpy_sums_of_products_carry_nan_and_take_any_layout() -> None:
    """A NaN in either operand makes the BLAS dot product NaN (the loss's bad-label check
    relies on it); transposed, mixed-dtype or large operands take the product and NumPy's
    sum instead, with the same value up to rounding. The table of column-sum functions stays
    small when the row count keeps changing."""
    ops = _ops(nb.namespace("numpy"))
    a = np.arange(12.0, dtype=np.float32).reshape(4, 3)
    b = np.ones((4, 3), np.float32)
    b[2, 1] = np.nan
    assert np.isnan(ops.sum_product(a, b))
    assert ops.sum_product(a.T, a.T) == np.float32((a * a).sum())
    assert ops.sum_product(a, a.astype(np.float64)) == (a * a).sum()
    big = np.full((100, 100), 0.5)
    assert ops.sum_product(big, big) == 2500.0
    for n in range(1, 200):
        ops.column_sum(np.ones((n, 2), np.float32))
    assert len(ops._summers) <= 64
    assert ops.column_sum(np.ones((3, 2), np.int64)).tolist() == [3, 3]


@pytest.mark.parametrize("block", [None, 7001], ids=["whole", "blocks"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_relu_and_sigmoid_of_large_arrays_equal_their_scalar_forms(
    dtype: str, block: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large ReLU and sigmoid inputs are compared with a cached array of the constant (NumPy's
    vectorised loop), not a 0-d one, a block at a time beyond the cached array's size: the
    results keep every bit of the scalar forms, signed zeros, NaN and infinities included,
    and the cached constants are never written."""
    from nnbackend.backends import numpy as numpy_backend

    if block is not None:
        monkeypatch.setattr(numpy_backend, "_FILLED_MAX", block)
    ops = _ops(nb.namespace("numpy"))
    ops._cache.clear()
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((256, 300)) * 100).astype(dtype)
    x.flat[:6] = [-0.0, 0.0, np.nan, -np.inf, np.inf, -1e-300]
    relu = ops.leaky_relu(x, ops.relu_mask(x), 0.0)
    expected = np.maximum(x, np.zeros((), dtype))
    np.testing.assert_array_equal(relu.view(f"u{x.itemsize}"), expected.view(f"u{x.itemsize}"))
    floor = np.asarray(-0.999 * np.log(float(np.finfo(dtype).max)), dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        sig = ops.sigmoid(x)
        reference = np.reciprocal(np.exp(-np.maximum(x, floor)) + 1.0)
    np.testing.assert_array_equal(sig, reference)
    constants = [v for k, v in ops._cache.items() if isinstance(k, tuple) and k[0] == "filled"]
    assert len(constants) >= 2
    for filled in constants:
        assert not filled.flags.writeable
        assert filled.size <= (block or x.size)
