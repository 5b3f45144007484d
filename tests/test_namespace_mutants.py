"""The creation functions of ``nb.namespace()`` (issue #21: mutation testing of namespace.py
left most of their arguments unchecked): an explicit dtype or device wins over the defaults,
the standard's defaults (``step=1``, ``endpoint=True``, ``k=0``) are kept, ``copy`` is passed
on, and integer fills stay integers."""

from __future__ import annotations

import types
from typing import Any

import array_api_compat.numpy
import numpy as np
import pytest

import nnbackend as nb
from nnbackend import registry
from nnbackend.errors import BackendMismatchError, DtypeError

CREATION = ("asarray", "zeros", "ones", "empty", "full", "arange", "linspace", "eye")


def _host(a: Any) -> np.ndarray:
    return np.array(registry.get(registry.backend_of(a)).to_host(a), copy=True)


def _other_float(xp: Any, dtype: str) -> Any:
    return xp.float32 if dtype == "float64" else xp.float64


def test_an_explicit_dtype_wins_over_the_default(xp: Any, dtype: str) -> None:
    other = _other_float(xp, dtype)
    made = {
        "zeros": xp.zeros((2,), dtype=other),
        "ones": xp.ones((2,), dtype=other),
        "empty": xp.empty((2,), dtype=other),
        "full": xp.full((2,), 1.5, dtype=other),
        "arange": xp.arange(0.0, 2.0, 0.5, dtype=other),
        "linspace": xp.linspace(0.0, 1.0, 3, dtype=other),
        "eye": xp.eye(2, dtype=other),
        "asarray": xp.asarray([1.5], dtype=other),
    }
    for name, array in made.items():
        assert array.dtype == other, name
    default = getattr(xp, dtype)
    for name, array in {
        "zeros": xp.zeros((2,)), "ones": xp.ones((2,)), "empty": xp.empty((2,)),
        "full": xp.full((2,), 1.5), "linspace": xp.linspace(0, 1, 3), "eye": xp.eye(2),
        "asarray": xp.asarray([1.5]),
    }.items():  # fmt: skip
        assert array.dtype == default, name
    assert xp.isdtype(xp.full((2,), 3).dtype, "integral")  # an int fill stays an int


def test_the_standards_defaults_are_kept(xp: Any) -> None:
    assert _host(xp.arange(0, 4)).tolist() == [0, 1, 2, 3]  # step 1
    assert _host(xp.linspace(0.0, 1.0, 3)).tolist() == [0.0, 0.5, 1.0]  # endpoint=True
    assert _host(xp.linspace(0.0, 1.0, 2, endpoint=False)).tolist() == [0.0, 0.5]
    assert _host(xp.eye(2)).tolist() == [[1.0, 0.0], [0.0, 1.0]]  # k=0
    assert _host(xp.eye(2, k=1)).tolist() == [[0.0, 1.0], [0.0, 0.0]]


def test_asarray_copy_is_passed_on(backend: str) -> None:
    if backend != "numpy":
        pytest.skip("a NumPy array shares memory with its asarray(copy=False) view")
    xp = nb.namespace("numpy", "float64")
    source = np.array([1.0, 2.0])
    copied = xp.asarray(source, copy=True)
    shared = xp.asarray(source, copy=False)
    source[0] = 9.0
    assert copied[0] == 1.0 and shared[0] == 9.0
    with pytest.raises(ValueError):
        xp.asarray([1.0, 2.0], copy=False)  # a list cannot be used without a copy


def test_an_explicit_device_wins(backend: str) -> None:
    if backend != "array_api_strict":
        pytest.skip("array_api_strict has several devices on any machine")
    import array_api_strict

    xp = nb.namespace("array_api_strict", "float64")
    dev = array_api_strict.Device("device1")
    for name, array in {
        "zeros": xp.zeros((2,), device=dev), "ones": xp.ones((2,), device=dev),
        "empty": xp.empty((2,), device=dev), "full": xp.full((2,), 1.0, device=dev),
        "arange": xp.arange(3, device=dev), "linspace": xp.linspace(0, 1, 3, device=dev),
        "eye": xp.eye(2, device=dev), "asarray": xp.asarray([1.0], device=dev),
    }.items():  # fmt: skip
        assert array.device == dev, name


# ------------------------------------------------------------------- string dtypes, **kwargs
@pytest.mark.parametrize("name", ["float32", "float64", "int32"])
def test_a_dtype_given_by_name_becomes_the_backends_dtype_object(xp: Any, name: str) -> None:
    """``dtype="float32"`` (the form ``nb.get_default_dtype()`` returns) is turned into the
    backend's dtype object: array_api_strict accepts nothing else."""
    want = getattr(xp, name)
    made = {
        "asarray": xp.asarray([1, 2], dtype=name), "zeros": xp.zeros(2, dtype=name),
        "ones": xp.ones(2, dtype=name), "empty": xp.empty(2, dtype=name),
        "full": xp.full(2, 3, dtype=name),
    }  # fmt: skip
    for creation, array in made.items():
        assert array.dtype == want, creation


@pytest.mark.parametrize("bad", ["float128", "asarray", "Float32", ""])
def test_an_unknown_dtype_name_is_a_dtype_error_listing_the_names(xp: Any, bad: str) -> None:
    """A name that is no dtype (even one the namespace has, like ``asarray``) is refused with
    the names this backend does have, never handed to the library."""
    for make in (
        lambda: xp.asarray([1.0], dtype=bad), lambda: xp.zeros(2, dtype=bad),
        lambda: xp.ones(2, dtype=bad), lambda: xp.empty(2, dtype=bad),
        lambda: xp.full(2, 1.0, dtype=bad),
    ):  # fmt: skip
        with pytest.raises(DtypeError) as excinfo:
            make()
        message = str(excinfo.value)
        assert repr(bad) in message and "float64, float32, " in message and "int64" in message
        assert ("float16" in message) == hasattr(xp.__wrapped__, "float16")


def test_a_dtype_name_the_backend_lacks_is_a_dtype_error() -> None:
    xp = nb.namespace("array_api_strict", "float32")
    with pytest.raises(DtypeError, match="'float16'"):
        xp.zeros(2, dtype="float16")


def _spy_library(calls: list[tuple[str, dict[str, Any]]]) -> types.ModuleType:
    """A backend library over array-api-compat's NumPy namespace whose creation functions
    (no docstrings) record the keyword arguments they get, then drop the ones NumPy does not
    know (``device`` objects of this fake backend are strings, ``marker`` is made up)."""
    base = array_api_compat.numpy
    library = types.ModuleType("spy")
    library.__dict__.update({k: v for k, v in vars(base).items() if not k.startswith("__")})

    def spy(name: str, original: Any) -> Any:
        def creation(*args: Any, **kwargs: Any) -> Any:
            calls.append((name, dict(kwargs)))
            kwargs.pop("marker", None)
            kwargs.pop("device", None)
            return original(*args, **kwargs)

        creation.__name__ = name
        return creation

    for name in CREATION:
        setattr(library, name, spy(name, getattr(base, name)))
    # An fft namespace that is no module: no __name__, no dunders at all.
    library.fft = types.SimpleNamespace(
        fftfreq=spy("fftfreq", base.fft.fftfreq), rfftfreq=spy("rfftfreq", base.fft.rfftfreq)
    )

    class Info:
        def dtypes(self, *, device: Any = None, kind: Any = None) -> dict[str, Any]:
            held = {"cpu": ["float64", "float32"], "f32f16": ["float32", "float16"],
                    "f16": ["float16"], "none": []}  # fmt: skip
            return {n: getattr(np, n) for n in held[device or "cpu"]}

        def default_dtypes(self, *, device: Any = None) -> dict[str, Any]:
            return {"real floating": np.float64, "indexing": np.int64, "asked for": device}

    library.__array_namespace_info__ = Info
    return library


@pytest.fixture
def spy(numpy_like_backend: Any) -> list[tuple[str, dict[str, Any]]]:
    """Registers backend ``spy`` (see ``_spy_library``); returns the list of its calls."""
    calls: list[tuple[str, dict[str, Any]]] = []
    library = _spy_library(calls)
    nb.register_backend(
        numpy_like_backend(
            "spy",
            load_namespace=lambda: library,
            devices=lambda: ["cpu", "f32f16", "f16", "none"],
            device=lambda name: name,
        )
    )
    return calls


def test_extra_keyword_arguments_reach_the_backend(spy: list) -> None:
    """Library-specific keywords (``order=`` on NumPy, ...) pass through every wrapper."""
    xp = nb.namespace("spy", "float32")
    xp.asarray([1.0], marker=1)
    xp.zeros(2, marker=1)
    xp.ones(2, marker=1)
    xp.empty(2, marker=1)
    xp.full(2, 1.0, marker=1)
    xp.arange(3, marker=1)
    xp.linspace(0, 1, 3, marker=1)
    xp.eye(2, marker=1)
    xp.fft.fftfreq(4, marker=1)
    xp.fft.rfftfreq(4, marker=1)
    assert [name for name, kwargs in spy if kwargs.get("marker") == 1] == [
        *CREATION,
        "fftfreq",
        "rfftfreq",
    ]


def test_the_dlpack_fallback_keeps_device_copy_and_extra_arguments(
    spy: list, dlpack_producer: type
) -> None:
    library = nb.registry.get("spy").load_namespace()
    recording = library.asarray

    def picky(obj: Any, /, **kwargs: Any) -> Any:
        if isinstance(obj, dlpack_producer):
            raise RuntimeError("could not retrieve buffer from object")
        return recording(obj, **kwargs)

    library.asarray = picky
    nb.register_backend(nb.registry.get("spy"))  # a new generation: the namespace is rebuilt
    xp = nb.namespace("spy", "float32")
    spy.clear()
    out = xp.asarray(dlpack_producer(np.arange(3.0)), device="f32f16", copy=True, marker=2)
    assert spy == [("asarray", {"dtype": None, "device": "f32f16", "copy": True, "marker": 2})]
    assert _host(out).tolist() == [0.0, 1.0, 2.0]


def test_wrappers_document_themselves_and_keep_the_backends_doc() -> None:
    xp = nb.namespace("numpy", "float32")
    base = array_api_compat.numpy
    for name in CREATION:
        doc = getattr(xp, name).__doc__
        assert doc.startswith(f"{name} of the backend namespace, with nnbackend's default")
        assert doc.endswith(f"library.\n\n{getattr(base, name).__doc__}")
    for name in ("fftfreq", "rfftfreq"):
        doc = getattr(xp.fft, name).__doc__
        assert doc.startswith(f"{name} of the backend's fft namespace")
        assert doc.endswith(f"is given.\n\n{getattr(base.fft, name).__doc__}")


def test_wrappers_of_undocumented_functions_add_nothing_after_their_own_doc(spy: list) -> None:
    xp = nb.namespace("spy", "float64")
    assert xp.zeros.__doc__.endswith("to the library.\n\n")
    assert xp.fft.fftfreq.__doc__.endswith("is given.\n\n")


# ------------------------------------------------------------------------- arange, linspace
def test_a_float_stop_or_step_makes_arange_the_default_float(backend: str) -> None:
    xp = nb.namespace(backend, "float32")
    for array in (xp.arange(0, 2.0), xp.arange(0, 2, 0.5), xp.arange(2.0)):
        assert array.dtype == xp.float32
    assert xp.isdtype(xp.arange(0, 4, 2).dtype, "integral")


def test_complex_linspace_is_left_to_the_library(backend: str) -> None:
    xp = nb.namespace(backend, "float64")
    for start, stop in ((1j, 2.0), (0.0, 1j)):
        if backend == "cupy":  # CuPy 14's linspace takes float() of its bounds: its own error
            with pytest.raises(TypeError, match="complex"):
                xp.linspace(start, stop, 3)
            continue
        array = xp.linspace(start, stop, 3)
        assert xp.isdtype(array.dtype, "complex floating"), (start, stop)


# ---------------------------------------------------------------------------------- fft
def test_fft_frequencies_default_to_a_sample_spacing_of_one(xp: Any) -> None:
    assert _host(xp.fft.fftfreq(4)).tolist() == [0.0, 0.25, -0.5, -0.25]
    assert _host(xp.fft.rfftfreq(4)).tolist() == [0.0, 0.25, 0.5]


def test_the_fft_namespace_keeps_the_backends_name_and_public_dunders_only() -> None:
    xp = nb.namespace("numpy", "float64")
    base = array_api_compat.numpy.fft
    assert xp.fft.__name__ == base.__name__
    assert xp.fft.__all__ == base.__all__
    assert hasattr(base, "__file__") and "__file__" not in vars(xp.fft)


def test_an_fft_namespace_without_a_name_is_called_fft(spy: list) -> None:
    assert nb.namespace("spy", "float64").fft.__name__ == "fft"


# ---------------------------------------------------------------------------------- devices
@pytest.mark.parametrize(
    ("device", "holds", "suggested"),
    [("f32f16", "float32, float16", "'float32'"), ("f16", "float16", "'float16'"),
     ("none", "no floating dtype nnbackend uses", "'float32'")],
)  # fmt: skip
def test_a_device_without_the_default_dtype_names_what_it_holds(
    spy: list, device: str, holds: str, suggested: str
) -> None:
    with nb.using(backend="spy", device=device), pytest.raises(DtypeError) as excinfo:
        nb.namespace()
    message = str(excinfo.value)
    assert f"device {device!r} of backend 'spy' cannot hold float64" in message
    assert f"it holds {holds}. " in message
    assert f"dtype={suggested})" in message


def test_default_dtypes_asks_the_backend_about_the_given_device(spy: list) -> None:
    info = nb.namespace("spy", "float32").__array_namespace_info__()
    assert info.default_dtypes(device="f16")["asked for"] == "f16"
    assert info.default_dtypes()["real floating"] == np.float32


def test_the_namespace_describes_itself_and_wraps_the_backends() -> None:
    xp = nb.namespace("array_api_strict", "float32")
    import array_api_strict

    assert xp.__wrapped__ is array_api_strict
    assert xp.__doc__ == (
        "The Array API namespace of backend 'array_api_strict' with default float dtype "
        "float32, made by nnbackend.namespace()."
    )
    with nb.using(backend="array_api_strict", dtype="float32", device="device1"):
        doc = nb.namespace().__doc__
    assert doc.endswith("float32 on device 'device1', made by nnbackend.namespace().")


def test_float16_refused_lists_the_backends_that_have_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin that failed to load is listed by ``registry.backends()`` but has no record:
    the message is still built."""
    monkeypatch.setitem(registry._entry_point_errors, "broken_plugin", "ImportError: no")
    with pytest.raises(DtypeError) as excinfo:
        nb.namespace("array_api_strict", "float16")
    have = [n for n in registry.backends() if n in registry._records
            and registry._records[n].capabilities.float16]  # fmt: skip
    assert len(have) >= 2 and f"({', '.join(have)})" in str(excinfo.value)


def test_namespaces_chosen_by_arguments_are_built_once() -> None:
    assert nb.namespace("numpy", "float32") is nb.namespace("numpy", "float32")
    assert nb.namespace("array_api_strict", "float64") is nb.namespace("array_api_strict")


# --------------------------------------------------------------------------- array_namespace
class _Alien:
    """An object of no backend."""


def test_array_namespace_skips_scalars_and_none_before_the_first_array() -> None:
    strict = nb.namespace("array_api_strict", "float32").zeros(2)
    found = nb.array_namespace(None, 1.0, 2, strict)
    assert found.__nnbackend__ == ("array_api_strict", "float32", None)


def test_array_namespace_of_another_backend_defaults_to_the_arrays_dtype() -> None:
    with nb.using(backend="numpy", dtype="float64"):
        for dtype in ("float32", "float64"):
            x = nb.namespace("array_api_strict", dtype).zeros(2)
            assert nb.array_namespace(x).__nnbackend__ == ("array_api_strict", dtype, None)


def test_array_namespace_without_arrays_takes_the_dtype_given() -> None:
    with nb.using(backend="numpy", dtype="float64"):
        assert nb.array_namespace(1.0, None, dtype="float32").__nnbackend__[:2] == (
            "numpy", "float32"
        )  # fmt: skip


def test_array_namespace_errors_name_the_types() -> None:
    with pytest.raises(BackendMismatchError, match=r"test_namespace_mutants\._Alien belongs to"):
        nb.array_namespace(_Alien())
    a = nb.namespace("numpy").zeros(2)
    b = nb.namespace("array_api_strict").zeros(2)
    with pytest.raises(BackendMismatchError) as excinfo:
        nb.array_namespace(a, b)
    message = str(excinfo.value)
    for array in (a, b):
        assert f"({type(array).__module__}.{type(array).__qualname__})" in message
    assert message.endswith("move one to the other's backend first")


def test_backend_for_an_unknown_object_names_it_and_the_backends() -> None:
    from nnbackend.namespace import backend_for

    with pytest.raises(BackendMismatchError) as excinfo:
        backend_for(_Alien())
    message = str(excinfo.value)
    assert f"({', '.join(registry.backends())}), got " in message
    assert message.endswith("test_namespace_mutants._Alien")
    _, record = backend_for(np.zeros(2))
    assert record.name == "numpy"
    with pytest.raises(BackendMismatchError):  # what was cached for arrays is not for None
        backend_for(None)
