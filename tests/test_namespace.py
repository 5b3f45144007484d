"""The dtype-defaulting namespace: creation functions follow the active default float dtype,
everything else is the backend's own object, and the namespace is cached."""

from __future__ import annotations

import importlib
import math
import timeit
import types
from collections.abc import Callable
from typing import Any

import array_api_compat.numpy
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend import registry
from nnbackend.errors import BackendMismatchError, DtypeError, NNBackendError

CREATION = ("asarray", "zeros", "ones", "empty", "full", "arange", "linspace", "eye")
FFT_CREATION = ("fftfreq", "rfftfreq")
BASE_MODULES = {
    "numpy": "array_api_compat.numpy",
    "torch": "array_api_compat.torch",
    "cupy": "array_api_compat.cupy",
    "array_api_strict": "array_api_strict",
    "jax": "jax.numpy",  # jax.numpy is the Array API namespace itself: no wrapper
}

# ---------------------------------------------------------------------------------- strategies
# Float leaves are exactly representable in float16, so values can be compared exactly.
floats16 = st.floats(min_value=-1000, max_value=1000, width=16, allow_subnormal=False)
small_ints = st.integers(min_value=-100, max_value=100)
dims = st.integers(min_value=0, max_value=3)
shapes = st.lists(dims, min_size=0, max_size=3).map(tuple)


def _list_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a nested list can have: nothing follows a zero-length dimension."""
    return shape[: shape.index(0) + 1] if 0 in shape else shape


list_shapes = shapes.map(_list_shape)


def _nest(flat: list[Any], shape: tuple[int, ...], container: type) -> Any:
    if not shape:
        return flat[0]
    step = math.prod(shape[1:])
    return container(
        _nest(flat[i * step : (i + 1) * step], shape[1:], container) for i in range(shape[0])
    )


@st.composite
def nested_data(draw: st.DrawFn) -> tuple[Any, tuple[int, ...], bool]:
    """(Python scalar or nested list/tuple, its shape, whether the library's float default
    applies: any float leaf, or no leaf at all)."""
    shape = draw(list_shapes)
    leaves = draw(st.sampled_from(["float", "int", "mixed"]))
    leaf = {"float": floats16, "int": small_ints, "mixed": st.one_of(floats16, small_ints)}
    flat = draw(st.lists(leaf[leaves], min_size=math.prod(shape), max_size=math.prod(shape)))
    container = draw(st.sampled_from([list, tuple]))
    is_float = not flat or any(type(v) is float for v in flat)
    return _nest(flat, shape, container), shape, is_float


@st.composite
def float_creation_calls(draw: st.DrawFn) -> tuple[str, tuple[Any, ...], dict[str, Any], tuple]:
    """(name, args, kwargs, expected shape) of a creation call whose dtype is the default float."""
    name = draw(st.sampled_from(CREATION))
    if name == "asarray":
        shape = draw(list_shapes)
        flat = draw(st.lists(floats16, min_size=math.prod(shape), max_size=math.prod(shape)))
        return name, (_nest(flat, shape, list) if shape else draw(floats16),), {}, shape
    if name in ("zeros", "ones", "empty"):
        shape = draw(shapes)
        as_int = len(shape) == 1 and draw(st.booleans())
        return name, (shape[0] if as_int else shape,), {}, shape
    if name == "full":
        shape = draw(shapes)
        return name, (shape, draw(floats16)), {}, shape
    if name == "arange":
        # Exactly representable arguments: the length is exact in every library and dtype.
        start = draw(st.integers(-8, 8))
        length = draw(st.integers(0, 10))
        step = draw(st.sampled_from([0.25, 0.5, 1.0, 2.0, -0.5, -1.0]))
        stop = start + length * step
        form = draw(st.sampled_from(["start-stop-step", "stop-only"]))
        if form == "stop-only" and step == 1.0 and start == 0:
            return name, (float(stop),), {}, (length,)
        return name, (float(start), stop, step), {}, (length,)
    if name == "linspace":
        num = draw(st.integers(0, 10))
        start = draw(st.one_of(small_ints, floats16))
        stop = draw(st.one_of(small_ints, floats16))
        return name, (start, stop, num), {"endpoint": draw(st.booleans())}, (num,)
    n = draw(st.integers(0, 5))
    m = draw(st.one_of(st.none(), st.integers(0, 5)))
    k = draw(st.integers(-3, 3))
    return name, (n, m), {"k": k}, (n, n if m is None else m)


@st.composite
def integer_creation_calls(draw: st.DrawFn) -> tuple[str, tuple[Any, ...], tuple]:
    """Creation calls whose dtype is the library's default integer dtype."""
    name = draw(st.sampled_from(["asarray", "full", "arange"]))
    if name == "asarray":
        shape = draw(list_shapes.filter(lambda s: math.prod(s) > 0))
        flat = draw(st.lists(small_ints, min_size=math.prod(shape), max_size=math.prod(shape)))
        return name, (_nest(flat, shape, list) if shape else flat[0],), shape
    if name == "full":
        shape = draw(shapes)
        return name, (shape, draw(small_ints)), shape
    start = draw(st.integers(-10, 10))
    stop = draw(st.integers(-10, 20))
    step = draw(st.sampled_from([1, 2, 3, -1, -2]))
    return name, (start, stop, step), (max(0, math.ceil((stop - start) / step)),)


# ---------------------------------------------------------------------------------- helpers
def to_host(backend: str, array: Any) -> np.ndarray:
    return np.asarray(registry.get(backend).to_host(array))


def base_namespace(backend: str) -> Any:
    return importlib.import_module(BASE_MODULES[backend])


# ---------------------------------------------------------------------------------- dtypes
@given(call=float_creation_calls())
def test_creation_uses_active_default_float(
    backend: str, dtype: str, call: tuple[str, tuple, dict, tuple]
) -> None:
    name, args, kwargs, shape = call
    with nb.using(backend=backend, dtype=dtype):
        xp = nb.namespace()
        out = getattr(xp, name)(*args, **kwargs)
    assert out.dtype == getattr(xp, dtype), (name, args, kwargs)
    assert tuple(out.shape) == shape


@given(data=nested_data())
def test_asarray_nested_sequences(backend: str, dtype: str, data: tuple[Any, tuple, bool]) -> None:
    obj, shape, is_float = data
    xp = nb.namespace(backend, dtype)
    out = xp.asarray(obj)
    info = xp.__array_namespace_info__().default_dtypes()
    expected = getattr(xp, dtype) if is_float else info["integral"]
    assert out.dtype == expected
    assert tuple(out.shape) == shape
    # The values made it unchanged (the leaves are exact in every float dtype).
    reference = np.asarray(obj, dtype=dtype if is_float else "int64")
    np.testing.assert_array_equal(to_host(backend, out), reference)


@given(call=integer_creation_calls())
def test_integer_defaults_untouched(
    backend: str, dtype: str, call: tuple[str, tuple, tuple]
) -> None:
    name, args, shape = call
    xp = nb.namespace(backend, dtype)
    out = getattr(xp, name)(*args)
    assert out.dtype == xp.__array_namespace_info__().default_dtypes()["integral"]
    assert (
        out.dtype == base_namespace(backend).__array_namespace_info__().default_dtypes()["integral"]
    )
    assert tuple(out.shape) == shape


@given(
    name=st.sampled_from(CREATION),
    explicit=st.sampled_from(["float64", "float32", "float16", "int32", "int64"]),
)
def test_explicit_dtype_wins(backend: str, dtype: str, name: str, explicit: str) -> None:
    xp = nb.namespace(backend, dtype)
    if not hasattr(xp, explicit):
        return  # array_api_strict has no float16
    target = getattr(xp, explicit)
    args: dict[str, tuple[Any, ...]] = {
        "asarray": ([1.0, 2.0] if explicit.startswith("float") else [1, 2],),
        "zeros": ((2, 3),),
        "ones": ((2, 3),),
        "empty": ((2, 3),),
        "full": ((2, 3), 1.0 if explicit.startswith("float") else 1),
        "arange": (0.0, 3.0) if explicit.startswith("float") else (0, 3),
        "linspace": (0.0, 1.0, 4),
        "eye": (3,),
    }
    if name == "linspace" and not explicit.startswith("float"):
        return  # linspace is only defined for floating dtypes
    out = getattr(xp, name)(*args[name], dtype=target)
    assert out.dtype == target


def test_asarray_of_an_array_keeps_its_dtype(backend: str, dtype: str) -> None:
    xp = nb.namespace(backend, dtype)
    other = "float32" if dtype == "float64" else "float64"
    x = xp.ones(3, dtype=getattr(xp, other))
    assert xp.asarray(x).dtype == getattr(xp, other)
    assert (
        xp.asarray(xp.asarray([1, 2])).dtype
        == xp.__array_namespace_info__().default_dtypes()["integral"]
    )


def test_bool_data_stays_bool(xp: Any) -> None:
    assert xp.asarray([True, False]).dtype == xp.bool
    assert xp.full(2, True).dtype == xp.bool


def test_default_dtypes_reports_active_float(backend: str, dtype: str) -> None:
    with nb.using(backend=backend, dtype=dtype):
        xp = nb.namespace()
        info = xp.__array_namespace_info__()
        assert info.default_dtypes()["real floating"] == getattr(xp, dtype)
        # Everything else is the backend's own inspection object.
        base_info = base_namespace(backend).__array_namespace_info__()
        defaults = base_info.default_dtypes()
        assert info.default_dtypes()["integral"] == defaults["integral"]
        assert info.default_dtypes()["indexing"] == defaults["indexing"]
        assert info.capabilities() == base_info.capabilities()
        assert set(info.dtypes()) == set(base_info.dtypes())


def test_creation_on_explicit_device(xp: Any, backend: str) -> None:
    device = xp.__array_namespace_info__().default_device()
    x = xp.zeros(3, device=device)
    assert x.dtype == xp.__array_namespace_info__().default_dtypes()["real floating"]
    assert x.device == device


@pytest.mark.parametrize("name", FFT_CREATION)
@given(n=st.integers(1, 12), d=st.sampled_from([1.0, 0.5, 2.0]))
def test_fft_frequencies_use_the_active_default_float(
    backend: str, dtype: str, name: str, n: int, d: float
) -> None:
    """The standard says fftfreq and rfftfreq return the default real floating dtype: the
    array-api-tests suite failed exactly these two with a float32 default."""
    base = base_namespace(backend)
    with nb.using(backend=backend, dtype=dtype):
        xp = nb.namespace()
        out = getattr(xp.fft, name)(n, d=d)
        explicit = getattr(xp.fft, name)(n, d=d, dtype=xp.float32)
    assert out.dtype == getattr(xp, dtype)
    assert explicit.dtype == xp.float32
    assert out.dtype == xp.__array_namespace_info__().default_dtypes()["real floating"]
    reference = getattr(base.fft, name)(n, d=d, dtype=base.float64)
    np.testing.assert_allclose(
        to_host(backend, out).astype(np.float64),
        to_host(backend, reference),
        rtol=2 * float(np.finfo(dtype).eps),
    )


def test_fft_frequencies_land_on_the_using_device() -> None:
    with nb.using(backend="array_api_strict", device="device1", dtype="float32"):
        xp = nb.namespace()
        assert str(xp.fft.fftfreq(4).device) == str(xp.zeros(1).device)
        assert "device1" in str(xp.fft.rfftfreq(4).device)


def test_default_device_is_the_using_device() -> None:
    """Inside ``using(device=...)`` the inspection API names the device the creation
    functions use, not the library's own default."""
    with nb.using(backend="array_api_strict", device="device1", dtype="float32"):
        xp = nb.namespace()
        device = xp.__array_namespace_info__().default_device()
        assert "device1" in str(device)
        assert xp.zeros(1).device == device


@pytest.mark.parametrize("device", ["no_float64", "no_x64"])
def test_a_default_dtype_the_device_cannot_hold_is_a_dtype_error(device: str) -> None:
    """array_api_strict's no_float64 device with the float64 default: a DtypeError naming
    the device, the dtype and what it holds, never the library's raw ValueError."""
    with nb.using(backend="array_api_strict", device=device):
        for make in (nb.namespace, lambda: nb.Tensor([1.0]), lambda: nb.nn.Linear(2, 3)):
            with pytest.raises(DtypeError) as excinfo:
                make()
            message = str(excinfo.value)
            assert device in message and "float64" in message and "float32" in message
        with nb.using(dtype="float32"):  # what the message suggests works
            xp = nb.namespace()
            x = xp.asarray([1.0, 2.0])
            assert x.dtype == xp.float32 and device in str(x.device)
            assert nb.nn.Linear(2, 3).weight.dtype == xp.float32


# ---------------------------------------------------------------------------------- identity
# The *_like functions and astype are wrapped only to read dtype names ("float32"), which torch
# and array_api_strict refuse; they have no default dtype, so they are not in CREATION.
LIKE = ("zeros_like", "ones_like", "empty_like", "full_like", "astype")


def test_non_creation_names_are_the_backends_own_objects(backend: str, dtype: str) -> None:
    xp = nb.namespace(backend, dtype)
    base = base_namespace(backend)
    public = [name for name in vars(base) if not name.startswith("_")]
    assert len(public) > 100  # a complete namespace, not a hand-picked subset
    for name in public:
        if name in CREATION or name in LIKE:
            assert getattr(xp, name) is not getattr(base, name)
            assert getattr(xp, name).__wrapped__ is getattr(base, name)
        elif name == "fft":  # a copy whose two creation functions default the dtype
            for inner in vars(base.fft):
                if inner.startswith("_"):
                    continue
                ours, theirs = getattr(xp.fft, inner), getattr(base.fft, inner)
                if inner in FFT_CREATION:
                    assert ours.__wrapped__ is theirs
                else:
                    assert ours is theirs, f"fft.{inner}"
        else:
            assert getattr(xp, name) is getattr(base, name), name


def test_exp_is_array_api_compat_exp() -> None:
    assert nb.namespace("numpy").exp is array_api_compat.numpy.exp
    assert nb.namespace("numpy", "float32").matmul is array_api_compat.numpy.matmul


def test_namespace_is_module_like(backend: str, dtype: str) -> None:
    xp = nb.namespace(backend, dtype)
    base = base_namespace(backend)
    assert isinstance(xp, types.ModuleType)
    assert xp.__name__ == f"nnbackend.namespace.{backend}"
    assert xp.__array_api_version__ == base.__array_api_version__
    assert callable(xp.__array_namespace_info__)
    assert dtype in xp.__doc__
    # It computes what the library computes.
    ours = xp.exp(xp.linspace(0.0, 1.0, 5))
    theirs = base.exp(base.linspace(0.0, 1.0, 5, dtype=getattr(base, dtype)))
    np.testing.assert_array_equal(to_host(backend, ours), to_host(backend, theirs))


# ---------------------------------------------------------------------------------- float16
def test_float16_on_array_api_strict_raises_dtype_error() -> None:
    with pytest.raises(DtypeError, match="float16") as excinfo:
        nb.namespace("array_api_strict", "float16")
    assert isinstance(excinfo.value, ValueError)
    assert isinstance(excinfo.value, NNBackendError)
    assert "numpy" in str(excinfo.value)  # names backends that have float16
    with nb.using(backend="array_api_strict", dtype="float16"), pytest.raises(DtypeError):
        nb.namespace()


def test_float16_on_numpy() -> None:
    xp = nb.namespace("numpy", "float16")
    assert xp.asarray([0.5]).dtype == xp.float16
    assert xp.eye(2).dtype == xp.float16


def test_torch_global_default_dtype_untouched() -> None:
    if registry.probe("torch") is not None:
        pytest.skip(f"torch unavailable: {registry.probe('torch')}")
    import torch

    before = torch.get_default_dtype()
    for dtype in ("float64", "float16", "float32"):
        xp = nb.namespace("torch", dtype)
        for out in (
            xp.asarray([1.0]),
            xp.zeros(2),
            xp.arange(0.0, 2.0),
            xp.linspace(0, 1, 3),
            xp.eye(2),
            xp.full(2, 1.5),
            xp.asarray([]),
        ):
            assert out.dtype == getattr(torch, dtype)
        assert torch.get_default_dtype() == before
    # And the other way: another library changing torch's default does not move ours.
    torch.set_default_dtype(torch.float64)
    try:
        xp = nb.namespace("torch", "float32")
        assert xp.asarray([1.0]).dtype == torch.float32
        assert xp.asarray([]).dtype == torch.float32
    finally:
        torch.set_default_dtype(before)


def test_empty_sequence_follows_active_dtype(backend: str, dtype: str) -> None:
    # Regression: numpy made float64 and torch its global default for asarray([]).
    xp = nb.namespace(backend, dtype)
    for obj in ([], (), [[]], [[], []]):
        assert xp.asarray(obj).dtype == getattr(xp, dtype), obj


# ---------------------------------------------------------------------------------- caching
def test_namespace_is_cached() -> None:
    first = nb.namespace()
    assert nb.namespace() is first
    assert nb.namespace("numpy", "float64") is first
    nb.set_default_dtype("float32")
    second = nb.namespace()
    assert second is not first
    assert second.zeros(1).dtype == second.float32
    assert nb.namespace() is second
    nb.set_default_dtype("float64")
    assert nb.namespace() is first
    with nb.using(dtype="float32"):
        assert nb.namespace() is second
        with nb.using(dtype="float64"):
            assert nb.namespace() is first
        assert nb.namespace() is second
    assert nb.namespace() is first


def test_namespace_call_is_cheap() -> None:
    # The budget is 1 µs; the assertion leaves room for slow CI machines, and still fails
    # for anything that re-resolves the settings or rebuilds the namespace per call.
    nb.namespace()
    best = min(timeit.repeat(nb.namespace, number=20_000, repeat=5)) / 20_000
    assert best < 5e-6, f"namespace() took {best * 1e9:.0f} ns"


def test_namespace_rejects_unknown_names() -> None:
    with pytest.raises(nb.errors.BackendError, match="'numpy'"):
        nb.namespace("nope")
    with pytest.raises(DtypeError, match="'float64'"):
        nb.namespace(dtype="int32")


# ---------------------------------------------------------------------------------- array_namespace
@pytest.mark.parametrize("other", ["torch", "array_api_strict"])
def test_array_namespace_mixing_backends_names_both(other: str) -> None:
    if registry.probe(other) is not None:
        pytest.skip(f"backend {other!r} unavailable: {registry.probe(other)}")
    a = nb.namespace("numpy").zeros(2)
    b = nb.namespace(other).zeros(2)
    for pair in ((a, b), (b, a)):
        with pytest.raises(BackendMismatchError) as excinfo:
            nb.array_namespace(*pair)
        message = str(excinfo.value)
        assert "'numpy'" in message and f"'{other}'" in message
        assert isinstance(excinfo.value, TypeError)


def test_array_namespace_of_one_backend(backend: str, dtype: str) -> None:
    xp = nb.namespace(backend, dtype)
    x, y = xp.zeros(2), xp.ones(2)
    found = nb.array_namespace(x, 1.0, None, y, 3)
    assert found.__nnbackend__[0] == backend
    assert found.exp is xp.exp
    with nb.using(backend=backend, dtype=dtype):
        assert nb.array_namespace(x) is nb.namespace()
    assert nb.array_namespace(x, dtype=dtype) is xp


def test_array_namespace_without_arrays_is_active() -> None:
    with nb.using(dtype="float32"):
        assert nb.array_namespace() is nb.namespace()
        assert nb.array_namespace(1.0, None) is nb.namespace()


def test_array_namespace_unknown_type() -> None:
    with pytest.raises(BackendMismatchError, match=r"builtins\.list"):
        nb.array_namespace([1.0, 2.0])


def test_asarray_falls_back_to_dlpack_where_the_library_cannot_read_an_array(
    dlpack_producer: type, numpy_like_backend: Callable[..., nb.Backend]
) -> None:
    """torch.asarray of a CuPy array fails (it tries the buffer protocol); the namespace's
    asarray then imports it through DLPack, without a copy. Other errors stay as they were."""
    base = array_api_compat.numpy

    def strict_asarray(obj: Any, /, **kwargs: Any) -> Any:
        if isinstance(obj, dlpack_producer):
            raise RuntimeError("could not retrieve buffer from object")
        return base.asarray(obj, **kwargs)

    library = types.ModuleType("picky")
    library.__dict__.update({k: v for k, v in vars(base).items() if not k.startswith("__")})
    library.__array_namespace_info__ = base.__array_namespace_info__
    library.asarray = strict_asarray
    nb.register_backend(numpy_like_backend("picky", load_namespace=lambda: library))
    xp = nb.namespace("picky", "float32")
    source = np.arange(4.0)
    imported = xp.asarray(dlpack_producer(source))
    assert imported.dtype == np.float64 and np.shares_memory(imported, source)
    assert xp.asarray(dlpack_producer(source), dtype=xp.float32).dtype == np.float32
    with pytest.raises(RuntimeError, match="could not retrieve buffer"):
        xp.asarray(dlpack_producer(np.array(["not", "numeric"])))  # DLPack refuses it too
