"""Review of the optimizers and module state (optim.py, nn/module.py, nn/containers.py,
nn/summary.py): each test shows a defect found by attacking the public API as a PyTorch user
would, and stays as its regression test."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend import nn, optim, registry
from nnbackend.errors import ArgumentError, BackendMismatchError, CheckpointError
from nnbackend.namespace import backend_for


def to_host(x: Any) -> np.ndarray:
    data = x.data if isinstance(x, nb.Tensor) else x
    return np.asarray(backend_for(data)[1].to_host(data))


# -- optimizers: a single Tensor is one parameter, never its rows -----------------------------


@pytest.mark.parametrize("cls", [optim.SGD, optim.Momentum, optim.Adam])
def test_optimizer_given_one_parameter_updates_it(cls: type[optim.Optimizer]) -> None:
    # optim.SGD(layer.weight) iterated the weight's rows: the optimizer held three row
    # Tensors that never get a gradient, and every step silently did nothing.
    p = nn.Parameter(np.ones((3, 2)))
    opt = cls(p, lr=0.1)
    assert len(opt.params) == 1 and opt.params[0] is p
    p.grad = np.ones((3, 2))
    opt.step()
    assert np.all(to_host(p) < 1.0)


def test_clip_grad_norm_of_one_parameter_clips_it() -> None:
    # torch.nn.utils.clip_grad_norm_ takes a single Tensor; here it iterated its rows, found
    # no gradients, returned 0 and left the gradient unclipped.
    p = nn.Parameter(np.zeros(2))
    p.grad = np.array([3.0, 4.0])
    norm = optim.clip_grad_norm(p, 1.0)
    assert float(norm) == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad, [0.6, 0.8], rtol=1e-6)


# -- optimizers: hyperparameters are checked where they are given ------------------------------


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda ps: optim.SGD(ps, lr=float("inf")), "lr"),
        (lambda ps: optim.Adam(ps, eps=float("inf")), "eps"),
        (lambda ps: optim.Adam(ps, weight_decay=float("inf")), "weight_decay"),
        (lambda ps: optim.AdamW(ps, weight_decay=float("inf")), "weight_decay"),
        (lambda ps: optim.RMSprop(ps, eps=float("inf")), "eps"),
        (lambda ps: optim.SGD(ps, lr=None), "lr"),
        (lambda ps: optim.Adam(ps, lr="fast"), "lr"),
        (lambda ps: optim.Adam(ps, betas=0.9), "betas"),
        (lambda ps: optim.Momentum(ps, momentum=None), "momentum"),
    ],
)
def test_bad_hyperparameters_raise_argument_error(make: Any, what: str) -> None:
    # weight_decay=inf was accepted and the first step turned every weight into NaN / -inf;
    # lr=None and betas=0.9 raised bare TypeErrors from float() and from indexing.
    p = nn.Parameter(np.ones(2))
    with pytest.raises(ArgumentError, match=what):
        make([p])


def test_clip_grad_norm_still_takes_an_infinite_max_norm() -> None:
    p = nn.Parameter(np.zeros(2))
    p.grad = np.array([3.0, 4.0])
    assert float(optim.clip_grad_norm([p], float("inf"))) == 5.0
    np.testing.assert_array_equal(p.grad, [3.0, 4.0])
    with pytest.raises(ArgumentError, match="max_norm"):
        optim.clip_grad_norm([p], None)  # type: ignore[arg-type]


# -- optimizers: a model moved after its optimizer was built -----------------------------------


def _loss_step(model: nn.Module, opt: optim.Optimizer, x: Any) -> None:
    loss = (model(nb.Tensor(x)) ** 2).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()


@pytest.mark.parametrize("cls", [optim.SGD, optim.Momentum, optim.Adam])
def test_optimizer_follows_a_model_moved_before_its_first_step(
    cls: type[optim.Optimizer],
) -> None:
    # Module.to promises "an optimizer built on them stays valid"; the optimizer kept the
    # NumPy ops it looked up at construction and crashed with a bare TypeError from inside
    # NumPy when the parameters had become torch tensors.
    if registry.probe("torch") is not None:
        pytest.skip(f"torch backend unavailable: {registry.probe('torch')}")
    nb.random.seed(0)
    model = nn.Linear(2, 2)
    ref = nn.Linear(2, 2)
    ref.load_state_dict(model.state_dict())
    opt = cls(model.parameters(), lr=0.1)
    ref_opt = cls(ref.parameters(), lr=0.1)
    model.to("torch")
    x = np.ones((3, 2))
    for _ in range(2):
        _loss_step(model, opt, registry.get("torch").from_host(x.copy(), None))
        _loss_step(ref, ref_opt, x)
    assert backend_for(model.weight.data)[1].name == "torch"
    np.testing.assert_allclose(to_host(model.weight), to_host(ref.weight), rtol=1e-12)


def test_optimizer_with_state_left_behind_names_the_fix() -> None:
    if registry.probe("torch") is not None:
        pytest.skip(f"torch backend unavailable: {registry.probe('torch')}")
    model = nn.Linear(2, 2)
    opt = optim.Momentum(model.parameters(), lr=0.1)
    _loss_step(model, opt, np.ones((3, 2)))
    before = to_host(model.weight).copy()
    model.to("torch")
    x = registry.get("torch").from_host(np.ones((3, 2)), None)
    with pytest.raises(BackendMismatchError, match=r"to_device\(optimizer"):
        _loss_step(model, opt, x)
    np.testing.assert_array_equal(to_host(model.weight), before)  # nothing updated
    assert opt.steps == 1
    nb.to_device(opt, "torch")  # the fix the message names
    _loss_step(model, opt, x)
    assert opt.steps == 2


# -- Module.load_state_dict: only mappings -------------------------------------------------------


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("bad", ["model", None, "weights.npz", "pairs"])
def test_load_state_dict_of_a_non_mapping_raises_checkpoint_error(bad: Any, strict: bool) -> None:
    # model.load_state_dict(other_model) raised "argument of type 'Linear' is not iterable",
    # a path string was read as its characters, and a list of pairs with strict=False loaded
    # nothing without a word.
    model = nn.Linear(2, 2)
    before = to_host(model.weight).copy()
    value = {
        "model": nn.Linear(2, 2),
        None: None,
        "weights.npz": "weights.npz",
        "pairs": [("weight", np.zeros((2, 2))), ("bias", np.zeros(2))],
    }[bad]
    with pytest.raises(CheckpointError, match="mapping"):
        model.load_state_dict(value, strict=strict)
    np.testing.assert_array_equal(to_host(model.weight), before)


# -- names a module keeps for itself -------------------------------------------------------------


@pytest.mark.parametrize("key", ["training", "_modules", "_parameters", "_buffers"])
def test_module_dict_refuses_the_module_bookkeeping_names(key: str) -> None:
    # ModuleDict({"_modules": layer}) replaced the registry itself (AttributeError later);
    # "training" replaced the mode flag with a layer.
    with pytest.raises(KeyError, match=key):
        nn.ModuleDict({key: nn.Linear(2, 2)})


@pytest.mark.parametrize("name", ["training", "_modules", "a.b", ""])
def test_add_module_and_register_parameter_refuse_bad_names(name: str) -> None:
    with pytest.raises(ArgumentError, match="name"):
        nn.Sequential(OrderedDict([(name, nn.Linear(2, 2))]))
    layer = nn.Linear(2, 2)
    with pytest.raises(ArgumentError, match="name"):
        layer.register_parameter(name, nn.Parameter(np.ones(2)))
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    assert layer.training is True


def test_dotted_names_cannot_collide_in_a_state_dict() -> None:
    # A child named "b.c" under "a" and a child "c" under "a.b" both gave "a.b.c.weight":
    # the state dict kept one array and load_state_dict wrote it into both layers.
    with pytest.raises(ArgumentError):
        inner = nn.Sequential(OrderedDict([("b.c", nn.Linear(1, 1))]))
        nn.Sequential(OrderedDict([("a", inner)]))


# -- summary keeps each module's own mode --------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(st.lists(st.booleans(), min_size=5, max_size=5))
def test_summary_restores_every_modules_mode(modes: list[bool]) -> None:
    # summary() ran the model in eval mode and then called model.train(previous), which
    # switched a Dropout the user had put in eval mode (a frozen part) back to training.
    model = nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.5), nn.Sequential(nn.Dropout(0.2)))
    mods = list(model.modules())
    for m, mode in zip(mods, modes, strict=True):
        m.__dict__["training"] = mode
    model.summary(input_shape=(2,))
    assert [m.training for m in mods] == modes


def test_an_optimizer_over_a_read_only_parameter_says_so_when_built() -> None:
    """A parameter on a read-only NumPy array (a file opened with mmap_mode="r") made every
    step fail with NumPy's bare "output array is read-only", after the backward."""
    data = np.zeros((2, 3))
    data.flags.writeable = False
    p = nn.Parameter(data)
    with pytest.raises(ArgumentError, match="parameter 0 of shape \\(2, 3\\) is a read-only"):
        optim.SGD([p], lr=0.1)
    with pytest.raises(ArgumentError, match="read-only"):
        optim.Adam([nn.Parameter(np.ones(4)), p])
    p.data = np.array(p.data)  # the remedy: its own copy
    opt = optim.SGD([p], lr=0.1)
    p.grad = np.ones((2, 3))
    opt.step()
    np.testing.assert_array_equal(p.data, -0.1 * np.ones((2, 3)))
