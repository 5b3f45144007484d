"""Attacker's review of attention, the word2vec sampling layers, higher-order gradients,
gradcheck and anomaly mode.

Covered: chapter 8's dot-product attention against a NumPy/torch reference (Te = 1, Td = 0,
empty batches, float16, gradients); ``embedding_dot``, ``negative_sampling_loss`` and the
``UnigramSampler`` with out-of-range, negative, float, 0-d, list and other-backend ids, odd
sizes and generators; ``nb.grad`` with odd ``grad_outputs``; ``gradcheck`` /
``gradgradcheck`` with transposed and broadcast inputs, mixed input dtypes, bad seeds and
non-Tensor results; ``detect_anomaly`` naming the op whose backward produced an infinity.
Each test below names the defect it caught (its docstring, in the past tense).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import nnbackend as nb
import nnbackend.functional as F
from nnbackend import nn
from nnbackend.autograd import AnomalyError, Function, detect_anomaly, ops
from nnbackend.autograd.gradcheck import gradcheck, gradgradcheck
from nnbackend.errors import (
    ArgumentError,
    BackendMismatchError,
    GradientError,
    ShapeError,
)
from nnbackend.namespace import backend_for
from nnbackend.nn.attention import attention
from nnbackend.nn.sampling import embedding_dot, negative_sampling_loss

CORPUS = [0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4]


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, nb.Tensor) else a
    return np.asarray(backend_for(a)[1].to_host(a), dtype=np.float64)


# --- attention ------------------------------------------------------------------------------


@pytest.mark.parametrize(("te", "td", "n"), [(5, 4, 2), (1, 3, 2), (4, 0, 2), (3, 2, 0), (1, 1, 1)])
def test_attention_matches_torch_unscaled_sdpa_with_gradients(te: int, td: int, n: int) -> None:
    """(No defect found: the reference check the review ran.) Attention equals torch's
    scaled_dot_product_attention with scale 1, values and gradients, at the edges too."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(te * 10 + td)
    e, d = rng.normal(size=(n, te, 3)), rng.normal(size=(n, td, 3))
    w = rng.normal(size=(n, td, 3))
    te_, td_ = nb.Tensor(e, requires_grad=True), nb.Tensor(d, requires_grad=True)
    c, _ = attention(te_, td_)
    (c * nb.Tensor(w)).sum().backward()
    E, D = torch.tensor(e, requires_grad=True), torch.tensor(d, requires_grad=True)
    C = torch.nn.functional.scaled_dot_product_attention(D, E, E, scale=1.0)
    (C * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(_host(c), C.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(_host(te_.grad), E.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(_host(td_.grad), D.grad.numpy(), atol=1e-12)


# --- sampling layers --------------------------------------------------------------------------


def test_a_numpy_generator_is_refused_not_used_to_draw_uniformly() -> None:
    """A NumPy Generator passed as ``generator`` was called as choice(n, size, p), whose third
    argument is NumPy's ``replace``: it drew every word uniformly, ignoring the unigram law
    (and other objects failed later with a bare AttributeError)."""
    for bad in (np.random.default_rng(0), "seed", True, 1.5):
        with pytest.raises(ArgumentError, match="generator"):
            nn.UnigramSampler(CORPUS, generator=bad)


def test_an_integral_numpy_seed_is_a_seed() -> None:
    """A seed given as numpy.int64 was kept as the generator and failed at the first draw
    with a bare AttributeError (in NegativeSamplingLoss, at construction)."""
    with nb.using(backend="numpy"):
        a = nn.UnigramSampler(CORPUS, generator=np.int64(3)).draw(40)
        b = nn.UnigramSampler(CORPUS, generator=3).draw(40)
        np.testing.assert_array_equal(a, b)
        loss = nn.NegativeSamplingLoss(5, 4, CORPUS, generator=np.int64(3))
        same = nn.NegativeSamplingLoss(5, 4, CORPUS, generator=3)
        np.testing.assert_array_equal(_host(loss.embed.weight), _host(same.embed.weight))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("vocab_size", 5.7),
        ("vocab_size", "x"),
        ("sample_size", 2.5),
        ("sample_size", "2"),
        ("sample_size", "x"),
        ("sample_size", None),
    ],
)
def test_fractional_or_text_sizes_are_argument_errors(field: str, value: Any) -> None:
    """vocab_size=5.7 and sample_size=2.5 were truncated silently to 5 and 2 ("2" was read as
    2), and "x" or None ended in a bare ValueError/TypeError from int()."""
    with pytest.raises(ArgumentError, match=field):
        nn.UnigramSampler(CORPUS, **{field: value})


def test_embedding_dot_user_mistakes_are_typed() -> None:
    """A 0-d index array ended in a bare IndexError, a weight given as a list in a bare
    AttributeError."""
    rng = np.random.default_rng(0)
    w, h = rng.normal(size=(6, 3)), rng.normal(size=(4, 3))
    with pytest.raises(ShapeError, match="indices"):
        embedding_dot(h, w, np.array(3))
    with pytest.raises(BackendMismatchError, match="embedding_dot"):
        embedding_dot(h, w.tolist(), np.array([0, 1, 2, 3]))


def test_embedding_dot_ids_of_another_backend_are_a_backend_mismatch() -> None:
    """torch ids with NumPy h and weight ended in a bare TypeError from torch
    ("min(): argument 'dim' must be int")."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w, h = rng.normal(size=(6, 3)), rng.normal(size=(4, 3))
    with pytest.raises(BackendMismatchError, match="torch"):
        embedding_dot(h, w, torch.tensor([0, 1, 2, 3]))


def test_negative_sampling_loss_user_mistakes_are_typed() -> None:
    """Negatives given as a list ended in a bare AttributeError; torch targets with NumPy
    negatives were a DtypeError claiming the (integer) ids were not integers."""
    rng = np.random.default_rng(0)
    w, h = rng.normal(size=(6, 3)), rng.normal(size=(4, 3))
    t, neg = np.array([0, 1, 2, 3]), np.array([[1, 2], [3, 3], [0, 5], [3, 3]])
    with pytest.raises(BackendMismatchError, match="negative"):
        negative_sampling_loss(h, w, t, neg.tolist())
    torch = pytest.importorskip("torch")
    with pytest.raises(BackendMismatchError, match="torch"):
        negative_sampling_loss(h, w, torch.tensor(t), neg)


@pytest.mark.parametrize("exclude_target", [False, True])
def test_negatives_follow_the_targets_backend(exclude_target: bool) -> None:
    """Targets on torch while numpy was the active backend (a model moved to torch) got
    NumPy negatives, and NegativeSamplingLoss failed on its own draw (a DtypeError saying the
    integer ids were not integers)."""
    torch = pytest.importorskip("torch")
    make = lambda: nn.UnigramSampler(
        CORPUS, sample_size=2, exclude_target=exclude_target, generator=5
    )
    expected = np.asarray(make().sample(np.array([0, 1, 4])))
    got = make().sample(torch.tensor([0, 1, 4]))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), expected)
    with nb.using(backend="torch"):
        loss = nn.NegativeSamplingLoss(5, 4, CORPUS, generator=0)
        h = nb.Tensor(torch.ones((3, 4), dtype=torch.float64), requires_grad=True)
    value = loss(h, torch.tensor([0, 1, 4]))  # numpy is active here
    value.backward()
    assert isinstance(value.data, torch.Tensor) and h.grad is not None


# --- higher-order gradients -------------------------------------------------------------------


def test_grad_takes_a_python_number_for_a_scalar_output() -> None:
    """``nb.grad(y, x, 2.0)`` for a 0-d y ended in a bare TypeError ('float' object is not
    iterable)."""
    x = nb.Tensor(np.array([1.0, -2.0, 0.5]), requires_grad=True)
    (g,) = nb.grad((x * x).sum(), x, 2.0)
    np.testing.assert_allclose(_host(g), 4.0 * _host(x))


def test_grad_outputs_that_are_no_numbers_are_a_gradient_error() -> None:
    """Text as a grad_output ended in a bare ValueError from the array constructor."""
    x = nb.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with pytest.raises(GradientError, match="grad_outputs"):
        nb.grad(x * 2.0, x, ["a"])


@pytest.mark.parametrize("create_graph", [False, True])
def test_a_grad_output_tensor_of_another_dtype_is_cast_as_arrays_are(create_graph: bool) -> None:
    """A float32 grad_output Tensor for a float64 output raised a DtypeError blaming
    ``Mul.backward``; the same values as a float32 array were cast and worked."""
    x = nb.Tensor(np.array([1.0, -2.0, 0.5]), requires_grad=True)
    v = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    (g,) = nb.grad(x * 3.0, x, nb.Tensor(v), create_graph=create_graph)
    assert g.data.dtype == np.float64
    np.testing.assert_allclose(_host(g), 3.0 * v)


def test_a_grad_output_tensor_of_another_backend_is_a_backend_mismatch() -> None:
    """A torch Tensor as the grad_output of a NumPy output raised a DtypeError blaming
    ``Mul.backward`` ("returned a torch.float64 gradient for a float64 input")."""
    torch = pytest.importorskip("torch")
    x = nb.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with pytest.raises(BackendMismatchError, match="grad_outputs"):
        nb.grad(x * 2.0, x, nb.Tensor(torch.ones(2, dtype=torch.float64)))


class _InfGrad(Function):
    """Identity forward; a raw backward that gives an infinite gradient."""

    def forward(self, x: Any) -> Any:
        return x * 1.0

    def backward(self, gy: Any) -> Any:
        return gy / 0.0


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_anomaly_in_a_raw_backward_under_create_graph_names_the_op() -> None:
    """With create_graph=True the infinite gradient of a raw ``backward`` was reported as
    "_BackwardOf forward produced inf", an engine class the user never wrote."""
    w = nb.Tensor(np.ones(3), requires_grad=True)
    with detect_anomaly():
        y = _InfGrad()(w)
        with pytest.raises(AnomalyError) as info:
            nb.grad(y.sum(), w, create_graph=True)
    assert str(info.value).startswith("_InfGrad backward produced inf")


# --- anomaly mode -----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("how", ["backward", "grad", "create_graph"])
def test_anomaly_in_a_tensor_op_backward_names_that_op(how: str) -> None:
    """sqrt's gradient at 0 is infinite: anomaly mode reported "Div forward produced inf",
    an op of sqrt's backward formula, as if the user's forward pass held a Div."""
    x = nb.Tensor(np.array([0.0, 1.0]), requires_grad=True)
    with detect_anomaly():
        y = F.sqrt(x).sum()  # the line the error shows
        with pytest.raises(AnomalyError) as info:
            if how == "backward":
                y.backward()
            else:
                nb.grad(y, x, create_graph=how == "create_graph")
    message = str(info.value)
    assert message.startswith("Sqrt backward produced inf"), message
    assert "Div" in message  # the step of the formula that overflowed is still named
    assert "y = F.sqrt(x).sum()" in message


# --- gradcheck ----------------------------------------------------------------------------------


def _layouts(xp: Any, w: np.ndarray) -> list[Any]:
    a = xp.asarray(w.tolist())
    return [xp.permute_dims(a, (1, 0)), xp.broadcast_to(a[0:1, :], (3, 2))]


def test_gradcheck_of_transposed_or_broadcast_inputs(xp64: Any) -> None:
    """A transposed (Fortran-ordered) or broadcast input made every central difference 0:
    the steps were written into a copy, so gradcheck failed on correct gradients, saying
    "central differences give 0.0"."""
    w = np.random.default_rng(1).normal(size=(3, 2))
    for x in _layouts(xp64, w):
        assert gradcheck(lambda t: F.tanh(t) * 2.0, x)
    assert gradcheck(lambda t: F.tanh(t) * 2.0, np.asfortranarray(w))


@pytest.mark.parametrize("seed", [-1, "a", 1.5, True])
def test_gradcheck_bad_seed_is_an_argument_error(seed: Any) -> None:
    """seed=-1 or "a" ended in NumPy's bare ValueError/TypeError from default_rng."""
    x = np.array([0.3, -0.7])
    with pytest.raises(ArgumentError, match="seed"):
        gradcheck(lambda t: (t * t).sum(), x, seed=seed)
    with pytest.raises(ArgumentError, match="seed"):
        gradgradcheck(lambda t: (t * t * t).sum(), x, seed=seed)


def test_gradcheck_tolerance_and_message_follow_each_inputs_dtype() -> None:
    """With a float64 and a float16 input, the float16 input's gradient was held to float64's
    tolerance (a failure of a correct function) and reported as "float64"."""
    a = np.array([3.0, -7.0, 12.0])
    b = np.array([0.5, 1.5, -2.0], dtype=np.float16)

    def fn(x: Any, y: Any) -> Any:
        return (x * ops.cast(y, "float64")).sum()

    assert gradcheck(fn, a, b)

    def wrong(x: Any, y: Any) -> Any:  # y's gradient is twice the true one
        return (x * ops.cast(_Doubled()(y), "float64")).sum()

    with pytest.raises(GradientError, match=r"input 1 \(shape \(3,\), float16\)"):
        gradcheck(wrong, a, b)


class _Doubled(Function):
    """Identity forward; a backward twice the true gradient."""

    def forward(self, x: Any) -> Any:
        return x * 1.0

    def backward(self, gy: Any) -> Any:
        return gy * 2.0


def test_gradgradcheck_of_a_function_that_returns_no_tensor() -> None:
    """gradgradcheck of a function returning a float ended in a bare AttributeError
    ('float' object has no attribute 'shape'); gradcheck raised a GradientError."""
    with pytest.raises(GradientError, match="not a Tensor"):
        gradgradcheck(lambda t: 1.0, np.array([1.0, 2.0]))
