"""Recurrent layers: fused RNN / LSTM / GRU nodes against central differences, against
torch.autograd (torch's own nn.RNN / nn.LSTM through the layout converter), stateful
equivalence, cells, shapes, dtypes and errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnbackend as nb
from nnbackend import nn
from nnbackend.errors import ArgumentError, DtypeError, ShapeError
from nnbackend.nn import recurrent as R

N, T, D, H = 2, 4, 3, 5
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _to_host(a: Any) -> np.ndarray:
    from nnbackend.namespace import backend_for

    return np.asarray(backend_for(a)[1].to_host(a), dtype=np.float64)


def _inputs(kind: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = GATES[kind]
    return {
        "x": rng.normal(size=(N, T, D)),
        "h0": rng.normal(size=(N, H)),
        "c0": rng.normal(size=(N, H)),
        "wx": rng.normal(size=(D, g * H)) * 0.5,
        "wh": rng.normal(size=(H, g * H)) * 0.5,
        "b": rng.normal(size=(g * H,)) * 0.3,
    }


def _objective(kind: str) -> Any:
    """A scalar of all outputs (hs, the final states), nonlinear so every output matters."""
    if kind == "lstm":

        def f(x: Any, h0: Any, c0: Any, wx: Any, wh: Any, b: Any) -> Any:
            hs, h, c = R.lstm(x, h0, c0, wx, wh, b)
            return (hs * hs).sum() * 0.5 + (h * c).sum()

        return f
    fn = getattr(R, kind)

    def g(x: Any, h0: Any, wx: Any, wh: Any, b: Any) -> Any:
        hs, h = fn(x, h0, wx, wh, b)
        return (hs * hs).sum() * 0.5 + (h * h * h).sum()

    return g


def _args(kind: str, values: dict[str, np.ndarray], xp: Any) -> list[Any]:
    names = ["x", "h0", "c0", "wx", "wh", "b"] if kind == "lstm" else ["x", "h0", "wx", "wh", "b"]
    return [xp.asarray(values[k]) for k in names]


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_gradcheck_every_input(kind: str, backend: str) -> None:
    if backend == "cupy":
        pytest.skip("central differences on the host; covered by numpy")
    with nb.using(backend=backend, dtype="float64"):
        xp = nb.namespace()
        assert nb.gradcheck(_objective(kind), *_args(kind, _inputs(kind), xp))


def test_gradcheck_catches_a_wrong_backward(monkeypatch: pytest.MonkeyPatch) -> None:
    # The check above can fail: break the LSTM's forget-gate gradient and it does.
    real = R.LSTMFunction.backward

    def broken(self: Any, *gys: Any) -> Any:
        grads = list(real(self, *gys))
        grads[4] = grads[4] * 1.01
        return tuple(grads)

    monkeypatch.setattr(R.LSTMFunction, "backward", broken)
    with nb.using(backend="numpy", dtype="float64"), pytest.raises(nb.errors.GradientError):
        nb.gradcheck(_objective("lstm"), *_args("lstm", _inputs("lstm"), nb.namespace()))


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_matches_torch_layers_through_the_converter(kind: str) -> None:
    torch = pytest.importorskip("torch")
    v = _inputs(kind, seed=1)
    layout = R.to_torch_layout(kind, v["wx"], v["wh"], v["b"])
    cls = torch.nn.LSTM if kind == "lstm" else torch.nn.RNN
    ref = cls(D, H, batch_first=True).double()
    with torch.no_grad():
        for name, value in layout.items():
            getattr(ref, name).copy_(torch.from_numpy(np.ascontiguousarray(value)))
    x = torch.from_numpy(v["x"]).requires_grad_(True)
    h0 = torch.from_numpy(v["h0"])[None].clone().requires_grad_(True)
    c0 = torch.from_numpy(v["c0"])[None].clone().requires_grad_(True)
    if kind == "lstm":
        out, (hT, cT) = ref(x, (h0, c0))
        loss = (out * out).sum() * 0.5 + (hT * cT).sum()
    else:
        out, hT = ref(x, h0)
        loss = (out * out).sum() * 0.5 + (hT**3).sum()
    loss.backward()

    with nb.using(backend="numpy", dtype="float64"):
        leaves = [nb.Tensor(a, requires_grad=True) for a in _args(kind, v, nb.namespace())]
        ours = _objective(kind)(*leaves)
        ours.backward()
    assert abs(ours.item() - loss.item()) < 1e-12 * max(1.0, abs(loss.item()))
    np.testing.assert_allclose(leaves[0].grad, x.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(leaves[1].grad, h0.grad[0].numpy(), rtol=1e-10, atol=1e-12)
    if kind == "lstm":
        np.testing.assert_allclose(leaves[2].grad, c0.grad[0].numpy(), rtol=1e-10, atol=1e-12)
    gwx, gwh, gb = R.from_torch_layout(
        kind,
        ref.weight_ih_l0.grad.numpy(),
        ref.weight_hh_l0.grad.numpy(),
        ref.bias_ih_l0.grad.numpy(),
    )
    for ours_g, theirs in zip(leaves[-3:], (gwx, gwh, gb), strict=True):
        np.testing.assert_allclose(ours_g.grad, theirs, rtol=1e-10, atol=1e-12)


def test_gru_matches_torch_autograd_of_the_book_formula() -> None:
    torch = pytest.importorskip("torch")
    v = _inputs("gru", seed=2)
    t = {k: torch.from_numpy(a).requires_grad_(True) for k, a in v.items() if k != "c0"}
    h = t["h0"]
    wx, wh, b = t["wx"], t["wh"], t["b"]
    hs = []
    for s in range(T):
        a = t["x"][:, s] @ wx + b
        z = torch.sigmoid(a[:, :H] + h @ wh[:, :H])
        r = torch.sigmoid(a[:, H : 2 * H] + h @ wh[:, H : 2 * H])
        hh = torch.tanh(a[:, 2 * H :] + (r * h) @ wh[:, 2 * H :])
        h = (1 - z) * h + z * hh
        hs.append(h)
    out = torch.stack(hs, 1)
    loss = (out * out).sum() * 0.5 + (h**3).sum()
    loss.backward()
    with nb.using(backend="numpy", dtype="float64"):
        leaves = [nb.Tensor(a, requires_grad=True) for a in _args("gru", v, nb.namespace())]
        _objective("gru")(*leaves).backward()
    for leaf, key in zip(leaves, ["x", "h0", "wx", "wh", "b"], strict=True):
        np.testing.assert_allclose(leaf.grad, t[key].grad.numpy(), rtol=1e-10, atol=1e-12)


def test_converter_round_trip_and_gate_order() -> None:
    v = _inputs("lstm")
    layout = R.to_torch_layout("lstm", v["wx"], v["wh"], v["b"])
    # Torch's first block is the input gate i, the book's third.
    np.testing.assert_array_equal(layout["weight_ih_l0"][:H], v["wx"][:, 2 * H : 3 * H].T)
    np.testing.assert_array_equal(layout["bias_ih_l0"][H : 2 * H], v["b"][:H])
    back = R.from_torch_layout("lstm", *layout.values())
    for a, b in zip(back, (v["wx"], v["wh"], v["b"]), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ArgumentError, match="reset gate"):
        R.to_torch_layout("gru", v["wx"], v["wh"], v["b"])


@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM, nn.GRU])
def test_stateful_steps_equal_the_whole_sequence(cls: Any, xp: Any, dtype: str) -> None:
    nb.random.seed(0)
    whole = cls(D, H)
    stepper = cls(D, H, stateful=True)
    for p, q in zip(stepper.parameters(), whole.parameters(), strict=True):
        p.data = q.data
    x = nb.random.normal((N, T, D))
    hs, final = whole(x)
    steps = [stepper(x[:, s : s + 1, :])[0] for s in range(T)]
    eps = float(np.finfo(dtype).eps)
    for s in range(T):
        np.testing.assert_allclose(
            _to_host(steps[s].data[:, 0, :]), _to_host(hs.data[:, s, :]), rtol=0, atol=50 * eps
        )
    kept = stepper.state
    last = final if isinstance(final, nb.Tensor) else final[0]
    np.testing.assert_allclose(_to_host(kept[0]), _to_host(last.data), rtol=0, atol=50 * eps)
    assert str(hs.dtype) == str(x.dtype) and str(kept[0].dtype) == str(x.dtype)
    stepper.reset_state()
    assert stepper.state is None
    first = stepper(x[:, :1, :])[0]
    np.testing.assert_allclose(
        _to_host(first.data[:, 0, :]), _to_host(hs.data[:, 0, :]), rtol=0, atol=50 * eps
    )


def test_stateful_state_is_detached_truncated_bptt() -> None:
    with nb.using(backend="numpy", dtype="float64"):
        nb.random.seed(1)
        layer = nn.LSTM(D, H, stateful=True)
        x = nb.random.normal((N, 2 * T, D))
        layer(x[:, :T, :])
        hs2, _ = layer(x[:, T:, :])
        hs2.sum().backward()
        g_chunk = layer.weight_x.grad.copy()
        # The same gradient as a fresh layer given the kept state as a constant start.
        fresh = nn.LSTM(D, H)
        for p, q in zip(fresh.parameters(), layer.parameters(), strict=True):
            p.data = q.data
        ref_layer = nn.LSTM(D, H)
        for p, q in zip(ref_layer.parameters(), layer.parameters(), strict=True):
            p.data = q.data
        _, (h, c) = ref_layer(x[:, :T, :])
        hs_ref, _ = fresh(x[:, T:, :], (h.data, c.data))
        hs_ref.sum().backward()
        np.testing.assert_allclose(g_chunk, fresh.weight_x.grad, rtol=1e-13, atol=1e-14)
        assert ref_layer.weight_x.grad is None


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_one_node_per_sequence(kind: str) -> None:
    with nb.using(backend="numpy", dtype="float64"):
        layer = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind](D, H)
        hs, _ = layer(nb.random.normal((N, 35, D)))
        assert type(hs.creator).__name__ == f"{kind.upper()}Function"
        assert all(t is None or t.creator is None for t in hs.creator.inputs)


def test_cells_step_like_the_layers() -> None:
    with nb.using(backend="numpy", dtype="float64"):
        for layer_cls, cell_cls in (
            (nn.RNN, nn.RNNCell),
            (nn.LSTM, nn.LSTMCell),
            (nn.GRU, nn.GRUCell),
        ):
            nb.random.seed(3)
            layer = layer_cls(D, H)
            nb.random.seed(3)
            cell = cell_cls(D, H)
            x = nb.random.normal((N, T, D))
            hs, _ = layer(x)
            state = None
            for s in range(T):
                state = cell(x[:, s, :], state)
                h = state[0] if isinstance(state, tuple) else state
                np.testing.assert_allclose(h.data, hs.data[:, s, :], rtol=1e-13, atol=1e-14)


def test_lstm_forward_matches_the_book_formula() -> None:
    v = _inputs("lstm", seed=4)
    h, c = v["h0"], v["c0"]

    def sig(a: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-a))

    expected = []
    for s in range(T):
        a = v["x"][:, s] @ v["wx"] + h @ v["wh"] + v["b"]
        f, g, i, o = (
            sig(a[:, :H]),
            np.tanh(a[:, H : 2 * H]),
            sig(a[:, 2 * H : 3 * H]),
            sig(a[:, 3 * H :]),
        )
        c = f * c + g * i
        h = o * np.tanh(c)
        expected.append(h)
    with nb.using(backend="numpy", dtype="float64"):
        hs, _, cT = R.lstm(*_args("lstm", v, nb.namespace()))
    np.testing.assert_allclose(hs.data, np.stack(expected, 1), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(cT.data, c, rtol=1e-13, atol=1e-14)


def test_errors_say_what_was_expected() -> None:
    with nb.using(backend="numpy", dtype="float64"):
        layer = nn.LSTM(D, H, stateful=True)
        xp = nb.namespace()
        with pytest.raises(ShapeError, match=r"\(N, T, 3\)"):
            layer(xp.ones((N, D)))
        with pytest.raises(DtypeError, match="float32"):
            layer(xp.ones((N, T, D), dtype=xp.float32))
        with pytest.raises(ShapeError, match="initial state h0"):
            layer(xp.ones((N, T, D)), (xp.ones((N, H + 1)), xp.ones((N, H))))
        with pytest.raises(ArgumentError, match=r"pair \(h, c\)"):
            layer(xp.ones((N, T, D)), xp.ones((N, H)))
        layer(xp.ones((N, T, D)))
        with pytest.raises(ShapeError, match="reset_state"):
            layer(xp.ones((N + 1, T, D)))
        with pytest.raises(ArgumentError):
            nn.GRU(0, H)
        with pytest.raises(ShapeError, match="one time step"):
            nn.LSTMCell(D, H)(xp.ones((N, T, D)))


@settings(deadline=None)
@given(
    kind=st.sampled_from(["rnn", "lstm", "gru"]),
    cuts=st.lists(st.integers(1, 6), min_size=1, max_size=4),
)
def test_stateful_chunks_of_any_lengths_equal_one_call(kind: str, cuts: list[int]) -> None:
    cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
    with nb.using(backend="numpy", dtype="float64"):
        nb.random.seed(5)
        whole = cls(D, H)
        chunked = cls(D, H, stateful=True)
        for p, q in zip(chunked.parameters(), whole.parameters(), strict=True):
            p.data = q.data
        x = nb.random.normal((N, sum(cuts), D))
        hs, _ = whole(x)
        start, pieces = 0, []
        for n in cuts:
            pieces.append(chunked(x[:, start : start + n, :])[0].data)
            start += n
        np.testing.assert_allclose(np.concatenate(pieces, axis=1), hs.data, rtol=0, atol=1e-14)
