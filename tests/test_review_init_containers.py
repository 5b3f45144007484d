"""Review of the book-format weight reader (io/book.py), the initialisers (nn/init.py), model
summaries (nn/summary.py), ModuleList / ModuleDict (nn/containers.py) and the public
``nnbackend.functional`` helpers: an attacker's pass with hostile and odd inputs (zero sizes,
negative and fractional shapes, NaN and infinite bounds, wrong types, special files, files
that already hold an inf, deleted and placeholder entries, threads), compared with PyTorch's
``torch.nn.init`` and ``torch.nn`` containers and with NumPy. Each test shows a defect found
and stays as its regression test."""

from __future__ import annotations

import math
import os
import pickle
import threading
import time
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import nn
from nnbackend.errors import ArgumentError, CheckpointError
from nnbackend.namespace import backend_for


def to_host(x: Any) -> np.ndarray:
    data = x.data if isinstance(x, nb.Tensor) else x
    return np.asarray(backend_for(data)[1].to_host(data))


# -- initialisers --------------------------------------------------------------------------------

_FAN_BASED = [nn.init.xavier_normal, nn.init.xavier_uniform, nn.init.he_normal, nn.init.he_uniform]


@pytest.mark.parametrize("make", _FAN_BASED)
@pytest.mark.parametrize("shape", [(0, 3), (0,), (2, 0, 3), (0, 4, 3, 3)])
def test_fan_based_initialisers_accept_zero_size_shapes(
    xp: Any, dtype: str, make: Any, shape: tuple[int, ...]
) -> None:
    """xavier/he of a shape whose fan-in is 0 (``(0, 3)``: a layer with no inputs) raised a
    bare ZeroDivisionError; torch.nn.init leaves a zero-element tensor as it is."""
    w = make(shape)
    assert tuple(w.shape) == shape and to_host(w).size == 0
    assert str(w.dtype).rsplit(".", 1)[-1] == dtype


_BAD_SHAPES = [(2.7, 3), (2, 3.0), "34", None, (-2, 3), (True, 3), 2.5, ((2, 3),)]


@pytest.mark.parametrize(
    "make",
    [*_FAN_BASED, nn.init.normal, nn.init.uniform, nn.init.zeros, nn.init.ones, nn.init.fan_in],
)
@pytest.mark.parametrize("shape", _BAD_SHAPES, ids=repr)
def test_initialisers_refuse_shapes_that_are_not_non_negative_ints(make: Any, shape: Any) -> None:
    """A shape entry was passed through int(): ``normal((2.7, 3))`` drew a (2, 3) array,
    ``normal("34")`` a (3, 4) one; ``xavier((-2, 3))`` raised math's bare "math domain
    error", ``normal(None)`` a bare TypeError."""
    with pytest.raises(ArgumentError, match="shape"):
        make(shape)


def test_initialisers_take_numpy_integers_and_lists_as_shapes() -> None:
    """``normal(np.int64(3))`` (a size read from a NumPy array) raised "'numpy.int64' object
    is not iterable"."""
    assert tuple(nn.init.normal(np.int64(3)).shape) == (3,)
    assert tuple(nn.init.xavier([np.int64(2), 3]).shape) == (2, 3)
    assert nn.init.fan_in((np.int64(4), np.int32(5))) == 4


@pytest.mark.parametrize("std", [-1.0, float("nan")])
def test_normal_refuses_a_negative_or_nan_std(std: float) -> None:
    """``normal(shape, std=-1)`` raised NumPy's bare ValueError "scale < 0"; ``std=nan``
    silently gave all-NaN weights (torch's normal_ refuses both)."""
    with pytest.raises(ArgumentError, match="std"):
        nn.init.normal((2, 3), std)


@pytest.mark.parametrize(
    "bounds", [(1.0, 0.0), (float("-inf"), 1.0), (0.0, float("inf")), (float("nan"), 1.0)]
)
def test_uniform_refuses_reversed_or_non_finite_bounds(bounds: tuple[float, float]) -> None:
    """``uniform(shape, 1, 0)`` raised NumPy's bare ValueError "high - low < 0" and an
    infinite or NaN bound a bare OverflowError (torch's uniform_ refuses both)."""
    with pytest.raises(ArgumentError, match="low"):
        nn.init.uniform((2, 3), *bounds)


def test_uniform_with_equal_bounds_is_a_constant() -> None:
    """The bound check added for the defect above still lets ``low == high`` through (as
    NumPy and torch do): a constant."""
    np.testing.assert_array_equal(to_host(nn.init.uniform((4,), 0.5, 0.5)), np.full(4, 0.5))


@pytest.mark.parametrize("generator", [0, np.random.default_rng(0), "seed"])
def test_initialisers_and_layers_refuse_a_generator_that_is_not_one(generator: Any) -> None:
    """``nn.Linear(2, 3, generator=0)`` raised "'int' object has no attribute 'normal'", and
    a NumPy Generator "normal() got an unexpected keyword argument 'dtype'"."""
    with pytest.raises(ArgumentError, match=r"nnbackend\.random\.Generator"):
        nn.init.xavier((2, 3), generator=generator)
    with pytest.raises(ArgumentError, match=r"nnbackend\.random\.Generator"):
        nn.Linear(2, 3, generator=generator)


def test_initialisers_match_torch_kaiming_bounds_and_are_seeded_alike() -> None:
    """A check that he_uniform is torch's kaiming_uniform_ (ReLU gain) and a seed gives the
    same values twice; it passed before the review and guards the validation added."""
    w = to_host(nn.init.he_uniform((400, 50), generator=nb.random.Generator(5)))
    bound = math.sqrt(6.0 / 400)
    assert np.abs(w).max() < bound and np.abs(w).max() > 0.99 * bound
    again = to_host(nn.init.he_uniform((400, 50), generator=nb.random.Generator(5)))
    np.testing.assert_array_equal(w, again)


# -- the book's parameter files ------------------------------------------------------------------


def _dump(path: Any, obj: Any) -> Any:
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return path


def test_book_params_refuse_a_value_overflowing_float16_next_to_an_inf(tmp_path: Any) -> None:
    """The range check asked "is every cast value finite, or was some value already
    infinite?": a file that held one inf let 1e6 become inf in a float16 model silently."""
    path = _dump(tmp_path / "p.pkl", [np.array([[np.inf, 1e6, 1.0], [1, 1, 1]]), np.ones(3)])
    with nb.using(backend="numpy", dtype="float16"):
        model = nn.Linear(2, 3)
    before = to_host(model.weight).copy()
    with pytest.raises(CheckpointError, match="beyond float16's range"):
        nb.load_book_params(model, path, trust=True)
    np.testing.assert_array_equal(to_host(model.weight), before)
    # An inf the file holds is loaded as it is (NumPy's and torch's cast keep it).
    path = _dump(tmp_path / "q.pkl", [np.array([[np.inf, 2.0, 1.0], [1, 1, 1]]), np.ones(3)])
    nb.load_book_params(model, path, trust=True)
    assert np.isinf(to_host(model.weight)[0, 0]) and to_host(model.weight)[0, 1] == 2.0


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_book_params_stop_reading_an_endless_file(monkeypatch: Any) -> None:
    """A special file (``/dev/zero``, a pipe) has size 0 to ``os.stat``, so the size cap
    passed and the whole endless file was read into memory (until a MemoryError or the
    machine ran out)."""
    from nnbackend.io import book

    monkeypatch.setattr(book, "MAX_BYTES", 1 << 16)
    result: list[Any] = []

    def load() -> None:
        try:
            nb.load_book_params(nn.Linear(2, 3), "/dev/zero", trust=True)
        except Exception as exc:  # the test inspects it
            result.append(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "load_book_params kept reading /dev/zero"
    assert len(result) == 1 and isinstance(result[0], CheckpointError), result
    assert "MemoryError" not in str(result[0])  # refused from what it read, not from memory


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_book_params_cap_a_pipe_too(tmp_path: Any, monkeypatch: Any) -> None:
    """A named pipe has size 0 to ``os.stat``, so a parameter file streamed through one was
    read whole however large: the byte cap never applied."""
    from nnbackend.io import book

    data = pickle.dumps([np.ones((200, 3)), np.ones(3)])
    fifo = tmp_path / "params.pipe"
    os.mkfifo(fifo)

    def write() -> None:
        try:
            with open(fifo, "wb") as f:
                f.write(data)
        except BrokenPipeError:
            pass  # the reader stopped at the cap

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    monkeypatch.setattr(book, "MAX_BYTES", 1000)
    with pytest.raises(CheckpointError, match="more than 1000 bytes"):
        nb.load_book_params(nn.Linear(200, 3), fifo, trust=True)
    writer.join(10)
    assert not writer.is_alive()


@pytest.mark.parametrize("model", [None, [np.ones(3)], "model.pkl"])
def test_book_params_need_a_model(tmp_path: Any, model: Any) -> None:
    """``load_book_params(None, path, trust=True)`` read the file, then raised a bare
    AttributeError ("'NoneType' object has no attribute 'parameters'")."""
    path = _dump(tmp_path / "p.pkl", [np.ones(3)])
    with pytest.raises(ArgumentError, match="model"):
        nb.load_book_params(model, path, trust=True)


@pytest.mark.parametrize("path", [None, 3, nn.Linear(2, 3)], ids=["None", "int", "a model"])
def test_book_params_need_a_path(path: Any) -> None:
    """A path that is no path (arguments swapped: ``load_book_params(path, model)``) raised
    os.fspath's bare TypeError."""
    with pytest.raises(ArgumentError, match="path"):
        nb.load_book_params(nn.Linear(2, 3), path, trust=True)


# -- ModuleList ------------------------------------------------------------------------------------


def _kinds(modules: Any) -> list[str]:
    return [type(m).__name__ for m in modules]


def test_module_list_deletes_and_renumbers_like_torch() -> None:
    """``del ml[0]`` raised AttributeError ('__delitem__'); and after removing an entry with
    ``delattr(ml, "0")`` the next ``append`` reused the name "2" and silently replaced the
    layer registered there."""
    ml = nn.ModuleList([nn.Linear(2, 2), nn.ReLU(), nn.Tanh(), nn.Sigmoid()])
    del ml[0]
    assert _kinds(ml) == ["ReLU", "Tanh", "Sigmoid"] and list(ml._modules) == ["0", "1", "2"]
    del ml[-1]
    assert _kinds(ml) == ["ReLU", "Tanh"]
    ml.extend([nn.Sigmoid(), nn.Linear(1, 1)])
    del ml[::2]
    assert _kinds(ml) == ["Tanh", "Linear"] and list(ml._modules) == ["0", "1"]
    with pytest.raises(IndexError):
        del ml[5]
    other = nn.ModuleList([nn.Linear(2, 2), nn.ReLU(), nn.Tanh()])
    delattr(other, "0")
    other.append(nn.Sigmoid())
    assert _kinds(other) == ["ReLU", "Tanh", "Sigmoid"] and len(other) == 3


def test_module_list_insert_like_torch() -> None:
    """ModuleList had no ``insert`` (torch's has): AttributeError."""
    ml = nn.ModuleList([nn.Linear(2, 2), nn.ReLU()])
    ml.insert(0, nn.Tanh())
    ml.insert(-1, nn.Sigmoid())
    ml.insert(10, nn.Linear(1, 1))
    assert _kinds(ml) == ["Tanh", "Linear", "Sigmoid", "ReLU", "Linear"]
    assert list(ml._modules) == ["0", "1", "2", "3", "4"]
    assert [n for n, _ in ml.named_parameters()] == ["1.weight", "1.bias", "4.weight", "4.bias"]
    with pytest.raises(TypeError, match=r"nn\.Module"):
        ml.insert(0, lambda x: x)  # type: ignore[arg-type]
    assert len(ml) == 5


def test_module_list_len_iteration_and_indexing_agree_with_a_placeholder() -> None:
    """With a ``None`` placeholder (``add_module("1", None)``), ``len`` counted it but
    iteration and indexing skipped it: ``ml[1]`` returned the layer named "2", while
    ``ml[1] = x`` wrote the name "1"."""
    a, c = nn.Linear(2, 2), nn.Linear(2, 3)
    ml = nn.ModuleList([a, nn.ReLU(), c])
    ml.add_module("1", None)
    assert len(ml) == len(list(ml)) == 3
    assert ml[1] is None and ml[2] is c and ml[-1] is c
    ml[1] = nn.Tanh()
    assert _kinds(ml) == ["Linear", "Tanh", "Linear"]


# -- ModuleDict --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["training", "_modules", "_parameters", "keys", "missing"])
def test_module_dict_del_of_a_key_it_does_not_hold_is_a_key_error(key: str) -> None:
    """``del md["training"]`` deleted the module's mode flag (``md.training`` then raised
    AttributeError) and ``del md["_modules"]`` its registry; ``del md["missing"]`` raised
    AttributeError, not a dict's KeyError."""
    md = nn.ModuleDict({"a": nn.Linear(2, 2)})
    with pytest.raises(KeyError, match=key):
        del md[key]
    assert md.training is True and list(md) == ["a"]
    assert [n for n, _ in md.named_parameters()] == ["a.weight", "a.bias"]
    md.eval()
    del md["a"]
    assert len(md) == 0 and md.training is False


def test_module_dict_takes_key_module_pairs_like_torch() -> None:
    """``nn.ModuleDict([("a", layer), ...])`` (torch accepts an iterable of pairs) raised
    "'list' object has no attribute 'items'"; ``update(None)`` a bare AttributeError."""
    a, b = nn.Linear(2, 2), nn.ReLU()
    md = nn.ModuleDict([("a", a), ("b", b)])
    assert md.keys() == ["a", "b"] and md["a"] is a
    md.update((("c", nn.Tanh()),))
    md.update(nn.ModuleDict({"d": nn.Sigmoid()}))
    assert md.keys() == ["a", "b", "c", "d"]
    for bad in (None, 5, [("x",)], ["ab"]):
        with pytest.raises(TypeError, match="ModuleDict"):
            nn.ModuleDict().update(bad)


def test_module_dict_lookup_agrees_with_membership_for_a_placeholder() -> None:
    """After ``md.a = None`` (a placeholder), ``"a" in md`` and ``md.keys()`` held it but
    ``md["a"]`` raised "'a' is not in this ModuleDict; it holds ['a']"."""
    md = nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.ReLU()})
    md.a = None
    assert "a" in md and md["a"] is None
    with pytest.raises(KeyError, match="'z' is not in this ModuleDict"):
        md["z"]


# -- summary -----------------------------------------------------------------------------------


class _Slow(nn.Module):
    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def forward(self, x: Any) -> Any:
        time.sleep(self.delay)
        return x


def test_summaries_in_two_threads_leave_no_class_patched() -> None:
    """summary() patches the layer classes' ``__call__`` while it runs; two summaries in two
    threads saved each other's recorder as "the original", so Linear (and every other class
    of both models) stayed patched for good: every later call went through a recorder."""
    linear_call = nn.Linear.__dict__["__call__"]
    first = nn.Sequential(nn.Linear(2, 2), _Slow(0.3))
    second = nn.Sequential(_Slow(0.6), nn.Linear(2, 2))
    texts: list[str] = []
    threads = [
        threading.Thread(target=lambda m=m: texts.append(m.summary(input_shape=(2,))))
        for m in (first, second)
    ]
    threads[0].start()
    time.sleep(0.1)
    threads[1].start()
    for t in threads:
        t.join()
    assert nn.Linear.__dict__["__call__"] is linear_call
    assert _Slow.__dict__["__call__"] is _Slow.__dict__["forward"]
    assert len(texts) == 2 and all("(1, 2)" in text for text in texts)


@pytest.mark.parametrize("shape", [(2.7,), "2", (-1,), (True,), 2], ids=repr)
def test_summary_refuses_an_input_shape_that_is_not_non_negative_ints(shape: Any) -> None:
    """``input_shape=(2.7,)`` ran the model on a (1, 2) input and ``"2"`` on ``(1, 2)``
    (both read through int()); ``(-1,)`` raised NumPy's bare "negative dimensions are not
    allowed"."""
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ArgumentError, match="input_shape"):
        model.summary(input_shape=shape)
    assert "(1, 2)" in model.summary(input_shape=(np.int64(2),))
