"""Recurrent layers over whole sequences: ``RNN``, ``LSTM``, ``GRU`` and their one-step cells.

Each layer is one fused graph node over the whole sequence, as the book's ``TimeRNN`` /
``TimeLSTM`` are: the forward loops over the time steps on raw backend arrays and saves what the
backward needs; the backward runs backpropagation through time in one pass. So a 35-step LSTM
costs one node, not a few hundred. The input projections of all time steps are one matrix
product before the loop (``(N*T, D) @ (D, 4H)``) and so are the weight gradients after it.

Weights use the book's layout, so the book's trained weights load as they are:

* ``weight_x`` of shape ``(D, G*H)``, ``weight_h`` ``(H, G*H)``, ``bias`` ``(G*H,)`` with
  ``G`` = 1 (RNN), 4 (LSTM) or 3 (GRU);
* LSTM gates in the book's order ``(f, g, i, o)``: ``c' = f*c + g*i``, ``h' = o*tanh(c')``;
* GRU blocks in the book's order ``(z, r, h~)``: ``z = sigmoid(x Wxz + h Whz + bz)``,
  ``r = sigmoid(x Wxr + h Whr + br)``, ``h~ = tanh(x Wxh + (r*h) Whh + bh)``,
  ``h' = (1 - z) h + z h~``.

PyTorch stores ``weight_ih`` ``(G*H, D)``, ``weight_hh`` ``(G*H, H)`` and two biases, with LSTM
gates in the order ``(i, f, g, o)``; :func:`to_torch_layout` and :func:`from_torch_layout`
convert either way (the two biases of PyTorch add up to the book's one). PyTorch's GRU applies
the reset gate after the hidden product (``r * (h Whh + bhh)``) and uses ``1 - z`` where the
book uses ``z``: it is a different function, so no converter is offered for it.

``stateful=True`` keeps the final state between calls (as the book's Time layers do), detached
from the graph: truncated backpropagation through time is the user's loop over chunks of
``T`` steps plus ``stateful``; :meth:`RNNBase.reset_state` starts afresh::

    lstm = nn.LSTM(100, 100, stateful=True)
    for xs, ts in chunks:               # consecutive (N, 35, D) pieces of one long sequence
        hs, _ = lstm(xs)                # starts from the previous chunk's final state
        loss = ...                      # gradients stop at the chunk boundary
    lstm.reset_state()                  # before the next epoch / evaluation
"""

from __future__ import annotations

from typing import Any

from nnbackend.autograd import ops
from nnbackend.autograd.function import Function, spare_grad
from nnbackend.autograd.tensor import Tensor
from nnbackend.backends.ops import tanh_sigmoid
from nnbackend.errors import ArgumentError, DtypeError, ShapeError
from nnbackend.namespace import array_namespace, backend_for, ops_for
from nnbackend.nn import init
from nnbackend.nn.functional import not_an_array, size_argument
from nnbackend.nn.module import Module, Parameter

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "GRUCell",
    "LSTMCell",
    "RNNBase",
    "RNNCell",
    "from_torch_layout",
    "gru",
    "lstm",
    "rnn",
    "to_torch_layout",
]


def _data(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def _flat(xp: Any, a: Any) -> Any:
    return xp.reshape(a, (-1, a.shape[-1]))


def _weight_grad(node: Any, i: int, a: Any, b: Any) -> Any:
    """``a.T @ b``, the gradient of the node's input ``i`` (a weight): written into that
    weight's gradient array from the previous step where ``zero_grad`` kept it and nothing
    else refers to it (:func:`spare_grad`; the same GEMM, no weight-sized allocation a
    step), else a new array. The product already sums over all time steps at once."""
    ops = ops_for(node.xp, b)
    out = spare_grad(node.inputs[i], ops)
    return a.T @ b if out is None else ops.matmul(a.T, b, out=out)


def _input_grads(
    self: Any, x: Any, hprev: Any, da: Any, dh0: Any, extra: Any = None
) -> tuple[Any, ...]:
    """The gradients of ``(x, h0, [c0,] wx, wh, b)`` from the stacked pre-activation
    gradients ``da`` (N, T, G*H): three matrix products over all time steps at once."""
    xp, wx = self.xp, self.wx
    need = self.needs_input_grad
    n, t = x.shape[0], x.shape[1]
    da2 = _flat(xp, da)
    gx = xp.reshape(da2 @ xp.matrix_transpose(wx), (n, t, wx.shape[0])) if need[0] else None
    gwx = _weight_grad(self, -3, _flat(xp, x), da2) if need[-3] else None
    gwh = _weight_grad(self, -2, _flat(xp, hprev), da2) if need[-2] else None
    gb = xp.sum(da2, axis=0) if need[-1] else None
    if extra is None:
        return gx, dh0 if need[1] else None, gwx, gwh, gb
    return gx, dh0 if need[1] else None, extra if need[2] else None, gwx, gwh, gb


class RNNFunction(Function):
    """Elman RNN over a sequence: ``h_t = tanh(x_t Wx + h_{t-1} Wh + b)``.
    Inputs ``(x (N,T,D), h0 (N,H), wx, wh, b)``; outputs ``(hs (N,T,H), h_T)``."""

    grad_may_alias = False

    def forward(self, x: Any, h0: Any, wx: Any, wh: Any, b: Any) -> tuple[Any, Any]:
        xp = self.xp
        n, t = x.shape[0], x.shape[1]
        self.wx, self.wh = wx, wh
        xw = xp.reshape(_flat(xp, x) @ wx + b, (n, t, wh.shape[1]))
        h = h0
        hs = []
        for s in range(t):
            h = xp.tanh(xw[:, s, :] + h @ wh)
            hs.append(h)
        self.x, self.h0 = x, h0
        self.hs = xp.stack(hs, axis=1)
        return self.hs, h

    def backward(self, ghs: Any, ghT: Any) -> tuple[Any, ...]:
        xp, hs, wh = self.xp, self.hs, self.wh
        t = hs.shape[1]
        whT = xp.matrix_transpose(wh)
        dh = xp.zeros_like(self.h0) if ghT is None else ghT
        das = [None] * t
        for s in range(t - 1, -1, -1):
            if ghs is not None:
                dh = dh + ghs[:, s, :]
            h = hs[:, s, :]
            da = dh * (1.0 - h * h)
            das[s] = da
            dh = da @ whT
        hprev = xp.concat([self.h0[:, None, :], hs[:, :-1, :]], axis=1)
        return _input_grads(self, self.x, hprev, xp.stack(das, axis=1), dh)


class LSTMFunction(Function):
    """LSTM over a sequence, gates in the book's order ``(f, g, i, o)``.
    Inputs ``(x (N,T,D), h0, c0 (N,H), wx, wh, b)``; outputs ``(hs (N,T,H), h_T, c_T)``."""

    grad_may_alias = False

    def forward(self, x: Any, h0: Any, c0: Any, wx: Any, wh: Any, b: Any) -> tuple[Any, ...]:
        xp = self.xp
        n, t = x.shape[0], x.shape[1]
        hsz = wh.shape[0]
        self.wx, self.wh = wx, wh
        xw = xp.reshape(_flat(xp, x) @ wx + b, (n, t, 4 * hsz))
        cell = ops_for(xp, x).lstm_cell  # one fused kernel a step where the backend has one
        h, c = h0, c0
        hs, cs, gates = [], [], []
        for s in range(t):
            h, c, f, g, i, o, tc = cell(xw[:, s, :] + h @ wh, c)
            hs.append(h)
            cs.append(c)
            gates.append((f, g, i, o, tc))
        self.x, self.h0, self.c0 = x, h0, c0
        self.cs, self.gates = cs, gates
        self.hs = xp.stack(hs, axis=1)
        return self.hs, h, c

    def backward(self, ghs: Any, ghT: Any, gcT: Any) -> tuple[Any, ...]:
        xp, wh, hs, cs = self.xp, self.wh, self.hs, self.cs
        t = hs.shape[1]
        whT = xp.matrix_transpose(wh)
        dh = xp.zeros_like(self.h0) if ghT is None else ghT
        dc = xp.zeros_like(self.c0) if gcT is None else gcT
        das = [None] * t
        cell_backward = ops_for(xp, wh).lstm_cell_backward
        for s in range(t - 1, -1, -1):
            if ghs is not None:
                dh = dh + ghs[:, s, :]
            c_prev = cs[s - 1] if s > 0 else self.c0
            da, dc = cell_backward(dh, dc, *self.gates[s], c_prev)
            das[s] = da
            dh = da @ whT
        hprev = xp.concat([self.h0[:, None, :], hs[:, :-1, :]], axis=1)
        return _input_grads(self, self.x, hprev, xp.stack(das, axis=1), dh, dc)


class GRUFunction(Function):
    """GRU over a sequence in the book's form (blocks ``(z, r, h~)``, reset before the hidden
    product). Inputs ``(x (N,T,D), h0 (N,H), wx, wh, b)``; outputs ``(hs (N,T,H), h_T)``."""

    grad_may_alias = False

    def forward(self, x: Any, h0: Any, wx: Any, wh: Any, b: Any) -> tuple[Any, Any]:
        xp = self.xp
        n, t = x.shape[0], x.shape[1]
        hsz = wh.shape[0]
        self.wx, self.wh = wx, wh
        xw = xp.reshape(_flat(xp, x) @ wx + b, (n, t, 3 * hsz))
        wh_zr, wh_h = wh[:, : 2 * hsz], wh[:, 2 * hsz :]
        h = h0
        hs, saved = [], []
        for s in range(t):
            a = xw[:, s, :]
            zr = tanh_sigmoid(xp, a[:, : 2 * hsz] + h @ wh_zr)
            z, r = zr[:, :hsz], zr[:, hsz:]
            rh = r * h
            hh = xp.tanh(a[:, 2 * hsz :] + rh @ wh_h)
            h = h + z * (hh - h)
            hs.append(h)
            saved.append((z, r, hh, rh))
        self.x, self.h0, self.saved = x, h0, saved
        self.hs = xp.stack(hs, axis=1)
        return self.hs, h

    def backward(self, ghs: Any, ghT: Any) -> tuple[Any, ...]:
        xp, wh, hs = self.xp, self.wh, self.hs
        hsz = wh.shape[0]
        t = hs.shape[1]
        wzrT = xp.matrix_transpose(wh[:, : 2 * hsz])
        whhT = xp.matrix_transpose(wh[:, 2 * hsz :])
        dh = xp.zeros_like(self.h0) if ghT is None else ghT
        das, rhs = [None] * t, [None] * t
        for s in range(t - 1, -1, -1):
            if ghs is not None:
                dh = dh + ghs[:, s, :]
            z, r, hh, rh = self.saved[s]
            h_prev = hs[:, s - 1, :] if s > 0 else self.h0
            dah = dh * z * (1.0 - hh * hh)
            drh = dah @ whhT
            daz = dh * (hh - h_prev) * z * (1.0 - z)
            dar = drh * h_prev * r * (1.0 - r)
            dazr = xp.concat([daz, dar], axis=1)
            das[s] = xp.concat([dazr, dah], axis=1)
            rhs[s] = rh
            dh = dh * (1.0 - z) + drh * r + dazr @ wzrT
        da = xp.stack(das, axis=1)
        need = self.needs_input_grad
        x, wx = self.x, self.wx
        n = x.shape[0]
        da2 = _flat(xp, da)
        gx = xp.reshape(da2 @ xp.matrix_transpose(wx), (n, t, wx.shape[0])) if need[0] else None
        gwx = _weight_grad(self, 2, _flat(xp, x), da2) if need[2] else None
        gb = xp.sum(da2, axis=0) if need[4] else None
        gwh = None
        if need[3]:
            # The (z, r) blocks multiply h_{t-1}, the h~ block multiplies r * h_{t-1}.
            hprev = xp.concat([self.h0[:, None, :], hs[:, :-1, :]], axis=1)
            rhp = xp.stack(rhs, axis=1)
            ops = ops_for(xp, da2)
            gwh = spare_grad(self.inputs[3], ops)
            if gwh is None:
                gwh = xp.concat(
                    [_flat(xp, hprev).T @ da2[:, : 2 * hsz], _flat(xp, rhp).T @ da2[:, 2 * hsz :]],
                    axis=1,
                )
            else:  # the two products straight into their columns of the spare
                ops.matmul(_flat(xp, hprev).T, da2[:, : 2 * hsz], out=gwh[:, : 2 * hsz])
                ops.matmul(_flat(xp, rhp).T, da2[:, 2 * hsz :], out=gwh[:, 2 * hsz :])
        gh0 = dh if need[1] else None
        return gx, gh0, gwx, gwh, gb


_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _check(kind: str, x: Any, state: tuple[Any, ...], wx: Any, wh: Any, b: Any) -> tuple[Any, ...]:
    """Validate shapes and dtypes of a recurrent call; make zero states where None."""
    xd, wxd, whd = _data(x), _data(wx), _data(wh)
    if not hasattr(xd, "shape"):  # a list: say so (not "'list' has no attribute 'ndim'")
        raise not_an_array(xd, kind)
    xp = backend_for(wxd)[0]
    g = _GATES[kind]
    hsz = whd.shape[0]
    if tuple(whd.shape) != (hsz, g * hsz) or wxd.ndim != 2 or wxd.shape[1] != g * hsz:
        raise ShapeError(
            f"{kind}: weights of shapes weight_x {tuple(wxd.shape)}, weight_h "
            f"{tuple(whd.shape)} do not form a {kind.upper()} layer; expected (D, {g}*H) and "
            f"(H, {g}*H)"
        )
    if xd.ndim != 3 or xd.shape[2] != wxd.shape[0]:
        raise ShapeError(
            f"{kind}: expected input of shape (N, T, {wxd.shape[0]}), got "
            f"{tuple(getattr(xd, 'shape', ()))}; a single time step is (N, 1, D)"
        )
    if xd.shape[1] == 0:
        # An empty sequence has no last state (the loop would end in a bare "need at least
        # one array to stack").
        raise ShapeError(
            f"{kind}: the input {tuple(xd.shape)} has no time steps; a sequence needs at "
            "least one time step (T >= 1)"
        )
    if xd.dtype != wxd.dtype:
        raise DtypeError(
            f"{kind}: input dtype {xd.dtype} differs from the weights' dtype {wxd.dtype}; cast "
            "the input (xp.astype) or build the layer under the input's dtype"
        )
    out = []
    for name, s in zip(("h0", "c0"), state, strict=False):
        if s is None:
            out.append(xp.zeros((xd.shape[0], hsz), dtype=wxd.dtype, device=wxd.device))
            continue
        sd = _data(s)
        if tuple(sd.shape) != (xd.shape[0], hsz):
            raise ShapeError(
                f"{kind}: initial state {name} has shape {tuple(sd.shape)}, expected "
                f"({xd.shape[0]}, {hsz}) (batch, hidden)"
            )
        if sd.dtype != wxd.dtype:
            raise DtypeError(
                f"{kind}: initial state {name} has dtype {sd.dtype}, the weights {wxd.dtype}"
            )
        out.append(s)
    return tuple(out)


def rnn(x: Any, h0: Any, weight_x: Any, weight_h: Any, bias: Any) -> tuple[Tensor, Tensor]:
    """Elman RNN over ``x`` (N, T, D) from ``h0`` (N, H) or None (zeros), as one graph node.

    Returns ``(hs, h_T)``: all hidden states (N, T, H) and the last one (N, H).
    """
    (h0,) = _check("rnn", x, (h0,), weight_x, weight_h, bias)
    return RNNFunction()(x, h0, weight_x, weight_h, bias)


def lstm(
    x: Any, h0: Any, c0: Any, weight_x: Any, weight_h: Any, bias: Any
) -> tuple[Tensor, Tensor, Tensor]:
    """LSTM over ``x`` (N, T, D) from ``h0``, ``c0`` (N, H) or None (zeros), gates in the
    book's order ``(f, g, i, o)``, as one graph node.

    Returns ``(hs, h_T, c_T)``: all hidden states (N, T, H), the last hidden and cell state.
    """
    h0, c0 = _check("lstm", x, (h0, c0), weight_x, weight_h, bias)
    return LSTMFunction()(x, h0, c0, weight_x, weight_h, bias)


def gru(x: Any, h0: Any, weight_x: Any, weight_h: Any, bias: Any) -> tuple[Tensor, Tensor]:
    """GRU over ``x`` (N, T, D) from ``h0`` (N, H) or None (zeros) in the book's form, as one
    graph node. Returns ``(hs, h_T)``."""
    (h0,) = _check("gru", x, (h0,), weight_x, weight_h, bias)
    return GRUFunction()(x, h0, weight_x, weight_h, bias)


class RNNBase(Module):
    """Shared parts of :class:`RNN`, :class:`LSTM` and :class:`GRU`: the parameters
    ``weight_x`` (D, G*H), ``weight_h`` (H, G*H), ``bias`` (G*H,) (Xavier normal and zeros, as
    the book initialises them), and the ``stateful`` state."""

    kind = "rnn"
    _cell = False  # the one-step cells keep no state

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        stateful: bool = False,
        generator: Any = None,
    ) -> None:
        super().__init__()
        if stateful and self._cell:
            # A cell's state is what the caller's loop passes in: it keeps nothing, so
            # stateful=True would be silently ignored.
            raise ArgumentError(
                f"{type(self).__name__} keeps no state between calls (pass h to each call); "
                f"stateful=True is for the sequence layers, e.g. nn.{type(self).__name__[:-4]}"
                "(..., stateful=True)"
            )
        # Checked as Linear's sizes are: int() truncated RNN(3.5, 4) to an RNN(3, 4), took
        # True for 1 and failed on "a" with a bare ValueError. A bool is refused although
        # torch.nn.RNN(True, 4) builds (its isinstance(int) check lets it through, while
        # torch.nn.RNN(3, True) fails): a flag passed as a size is a mistake.
        self.input_size = size_argument(type(self).__name__, "input_size", input_size)
        self.hidden_size = size_argument(type(self).__name__, "hidden_size", hidden_size)
        self.stateful = bool(stateful)
        g = _GATES[self.kind] * self.hidden_size
        self.weight_x = Parameter(init.xavier_normal((self.input_size, g), generator=generator))
        self.weight_h = Parameter(init.xavier_normal((self.hidden_size, g), generator=generator))
        self.bias = Parameter(init.zeros((g,)))
        self._state: tuple[Any, ...] | None = None

    def reset_state(self) -> None:
        """Forget the state kept by ``stateful=True`` (the next call starts from zeros)."""
        self._state = None

    def set_state(self, *state: Any) -> None:
        """Set the state the next ``stateful`` call starts from (``h`` or ``h, c``), as raw
        arrays detached from any graph."""
        count = 2 if self.kind == "lstm" else 1
        if len(state) != count:
            # Checked here: a wrong count failed only at the next call, in a bare unpacking.
            raise ArgumentError(
                f"{self!r}: set_state takes "
                + ("the pair (h, c): set_state(h, c)" if count == 2 else "one array: set_state(h)")
                + f", got {len(state)} arrays"
            )
        self._state = tuple(_data(s) for s in state)

    @property
    def state(self) -> tuple[Any, ...] | None:
        """The kept state (raw arrays) or None."""
        return self._state

    def _rows(self, x: Any) -> int:
        """The batch size of the input ``x`` (N, T, D), or the error for an input that is no
        array at all."""
        xd = _data(x)
        if not hasattr(xd, "shape"):
            raise not_an_array(xd, repr(self))
        return int(xd.shape[0])

    def _initial(self, state: Any, n: int) -> tuple[Any, ...]:
        count = 2 if self.kind == "lstm" else 1
        if state is None:
            kept = self._state if self.stateful else None
            if kept is not None and kept[0].shape[0] != n:
                raise ShapeError(
                    f"{self!r}: the kept state has batch size {kept[0].shape[0]}, the input "
                    f"{n}; call reset_state() before changing the batch size"
                )
            return kept if kept is not None else (None,) * count
        if count == 2:
            if not isinstance(state, tuple | list) or len(state) != 2:
                raise ArgumentError(f"{self!r}: the state of an LSTM is a pair (h, c)")
            return tuple(state)
        return (state,)

    def _keep(self, *final: Tensor) -> None:
        if self.stateful:
            self._state = tuple(s.data for s in final)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + (
            ", stateful=True" if self.stateful else ""
        )

    # PyTorch's names: nn.RNN / nn.LSTM (one layer) end in "_l0"; the cells do not.
    _torch_suffix = "_l0"

    def _state_to_layout(self, state: dict[str, Any], layout: str) -> dict[str, Any]:
        if layout != "torch" or not {"weight_x", "weight_h", "bias"} <= set(state):
            return state
        torch_state = to_torch_layout(
            self.kind, state["weight_x"], state["weight_h"], state["bias"]
        )
        return {k.replace("_l0", self._torch_suffix): v for k, v in torch_state.items()}

    def _state_from_layout(self, state: dict[str, Any], layout: str) -> dict[str, Any]:
        sx = self._torch_suffix
        names = (f"weight_ih{sx}", f"weight_hh{sx}")
        if layout != "torch" or not set(names) <= set(state):
            return state  # the strict key check names what is missing
        _kind(self.kind)  # a GRU: no converter, say why
        rest = {k: v for k, v in state.items() if not k.startswith(("weight_", "bias_"))}
        weight_x, weight_h, bias = from_torch_layout(
            self.kind,
            state[names[0]],
            state[names[1]],
            state.get(f"bias_ih{sx}"),
            state.get(f"bias_hh{sx}"),
        )
        return {**rest, "weight_x": weight_x, "weight_h": weight_h, "bias": bias}


class RNN(RNNBase):
    """Elman RNN layer (the book's ``TimeRNN``): ``(N, T, D) -> (N, T, H)``.

    ``rnn(x, h0=None)`` returns ``(hs, h_T)``; one fused node over the sequence.

    >>> import nnbackend as nb
    >>> layer = nb.nn.RNN(3, 4)
    >>> hs, h = layer(nb.namespace().ones((2, 5, 3)))
    >>> hs.shape, h.shape
    ((2, 5, 4), (2, 4))
    """

    kind = "rnn"

    def forward(self, x: Any, h0: Any = None) -> tuple[Tensor, Tensor]:
        (h0,) = self._initial(h0, self._rows(x))
        hs, h = rnn(x, h0, self.weight_x, self.weight_h, self.bias)
        self._keep(h)
        return hs, h


class LSTM(RNNBase):
    """LSTM layer (the book's ``TimeLSTM``): ``(N, T, D) -> (N, T, H)``, gates ``(f, g, i, o)``.

    ``lstm(x, state=None)`` with ``state = (h0, c0)`` returns ``(hs, (h_T, c_T))``; one fused
    node over the sequence.

    >>> import nnbackend as nb
    >>> layer = nb.nn.LSTM(3, 4)
    >>> hs, (h, c) = layer(nb.namespace().ones((2, 5, 3)))
    >>> hs.shape, c.shape
    ((2, 5, 4), (2, 4))
    """

    kind = "lstm"

    def forward(self, x: Any, state: Any = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h0, c0 = self._initial(state, self._rows(x))
        hs, h, c = lstm(x, h0, c0, self.weight_x, self.weight_h, self.bias)
        self._keep(h, c)
        return hs, (h, c)


class GRU(RNNBase):
    """GRU layer in the book's form (``TimeGRU``): ``(N, T, D) -> (N, T, H)``.

    ``gru(x, h0=None)`` returns ``(hs, h_T)``; one fused node over the sequence.
    """

    kind = "gru"

    def forward(self, x: Any, h0: Any = None) -> tuple[Tensor, Tensor]:
        (h0,) = self._initial(h0, self._rows(x))
        hs, h = gru(x, h0, self.weight_x, self.weight_h, self.bias)
        self._keep(h)
        return hs, h


def _step_input(layer: Module, x: Any) -> Any:
    xd = _data(x)
    if not hasattr(xd, "shape"):  # a list: say so (not "'list' has no attribute 'ndim'")
        raise not_an_array(xd, repr(layer))
    if xd.ndim != 2:
        raise ShapeError(
            f"{layer!r}: a cell takes one time step of shape (N, D), got {tuple(xd.shape)}"
        )
    n, d = xd.shape
    return (
        ops.reshape(x, (n, 1, d))
        if isinstance(x, Tensor)
        else array_namespace(xd).reshape(xd, (n, 1, d))
    )


class RNNCell(RNNBase):
    """One RNN step ``(N, D), h -> h'`` for hand-written loops (parameters as :class:`RNN`)."""

    kind = "rnn"
    _cell = True
    _torch_suffix = ""

    def forward(self, x: Any, h: Any = None) -> Tensor:
        return rnn(_step_input(self, x), h, self.weight_x, self.weight_h, self.bias)[1]


class LSTMCell(RNNBase):
    """One LSTM step ``(N, D), (h, c) -> (h', c')`` for hand-written loops (parameters as
    :class:`LSTM`)."""

    kind = "lstm"
    _cell = True
    _torch_suffix = ""

    def forward(self, x: Any, state: Any = None) -> tuple[Tensor, Tensor]:
        h, c = (None, None) if state is None else state
        _, h, c = lstm(_step_input(self, x), h, c, self.weight_x, self.weight_h, self.bias)
        return h, c


class GRUCell(RNNBase):
    """One GRU step ``(N, D), h -> h'`` for hand-written loops (parameters as :class:`GRU`)."""

    kind = "gru"
    _cell = True

    def forward(self, x: Any, h: Any = None) -> Tensor:
        return gru(_step_input(self, x), h, self.weight_x, self.weight_h, self.bias)[1]


# Book gate block -> its position in PyTorch's order: LSTM book (f, g, i, o), torch (i, f, g, o).
_TORCH_ORDER = {"rnn": (0,), "lstm": (1, 2, 0, 3)}


def _kind(kind: str) -> str:
    k = str(kind).lower()
    if k == "gru":
        raise ArgumentError(
            "the book's GRU and PyTorch's GRU are different functions (PyTorch applies the "
            "reset gate after the hidden product and swaps z and 1-z): no layout converter"
        )
    if k not in _TORCH_ORDER:
        raise ArgumentError(f"kind must be 'rnn' or 'lstm', got {kind!r}")
    return k


def _layout_check(k: str, rows: int, cols: int, h: int, biases: tuple[Any, ...]) -> None:
    """Raise ShapeError unless ``rows`` x ``cols`` input weights, a hidden weight of ``h``
    units and ``biases`` form one ``k`` layer (``rows`` = G*H in PyTorch's layout): the
    blocks are cut by size, so another layer's weights were silently cut or shuffled."""
    g = len(_TORCH_ORDER[k])
    sizes = [tuple(getattr(b, "shape", ())) for b in biases if b is not None]
    if rows != g * h or cols != g * h or any(size != (g * h,) for size in sizes):
        raise ShapeError(
            f"weights of {rows} and {cols} gate units (biases {sizes}) with hidden size {h} "
            f"do not form a one-layer {k.upper()}: it has {g}*H gate units everywhere"
        )


def _blocks(xp: Any, a: Any, count: int, axis: int) -> list[Any]:
    size = a.shape[axis] // count
    if axis == 0:
        return [a[j * size : (j + 1) * size, ...] for j in range(count)]
    return [a[..., j * size : (j + 1) * size] for j in range(count)]


def to_torch_layout(kind: str, weight_x: Any, weight_h: Any, bias: Any) -> dict[str, Any]:
    """Book-layout weights of an ``"rnn"`` or ``"lstm"`` layer as PyTorch's ``nn.RNN`` /
    ``nn.LSTM`` (one layer) state-dict entries: ``weight_ih_l0`` (G*H, D), ``weight_hh_l0``
    (G*H, H), ``bias_ih_l0`` (the book's bias, reordered) and ``bias_hh_l0`` (zeros). Arrays
    stay on their backend."""
    k = _kind(kind)
    wx, wh, b = _data(weight_x), _data(weight_h), _data(bias)
    _layout_check(k, wh.shape[-1], wx.shape[-1], wh.shape[0], (b,))
    xp = array_namespace(wx)
    order = _TORCH_ORDER[k]
    count = len(order)

    def reorder(a: Any, axis: int) -> Any:
        blocks = _blocks(xp, a, count, axis)
        torch_blocks = [None] * count
        for book_pos, torch_pos in enumerate(order):
            torch_blocks[torch_pos] = blocks[book_pos]
        return xp.concat(torch_blocks, axis=axis)

    return {
        "weight_ih_l0": reorder(xp.matrix_transpose(wx), 0),
        "weight_hh_l0": reorder(xp.matrix_transpose(wh), 0),
        "bias_ih_l0": reorder(b, 0),
        "bias_hh_l0": xp.zeros_like(b),
    }


def from_torch_layout(
    kind: str, weight_ih: Any, weight_hh: Any, bias_ih: Any = None, bias_hh: Any = None
) -> tuple[Any, Any, Any]:
    """PyTorch ``nn.RNN`` / ``nn.LSTM`` weights (one layer) in the book's layout:
    ``(weight_x (D, G*H), weight_h (H, G*H), bias (G*H,))``, the bias being
    ``bias_ih + bias_hh`` (either may be None)."""
    k = _kind(kind)
    wi, whh = _data(weight_ih), _data(weight_hh)
    biases = tuple(_data(extra) for extra in (bias_ih, bias_hh) if extra is not None)
    _layout_check(k, whh.shape[0], wi.shape[0], whh.shape[-1], biases)
    xp = array_namespace(wi)
    order = _TORCH_ORDER[k]
    count = len(order)

    def reorder(a: Any, axis: int) -> Any:
        blocks = _blocks(xp, a, count, axis)
        return xp.concat([blocks[torch_pos] for torch_pos in order], axis=axis)

    b = xp.zeros((wi.shape[0],), dtype=wi.dtype, device=wi.device)
    for extra in (bias_ih, bias_hh):
        if extra is not None:
            b = b + _data(extra)
    return (
        reorder(xp.matrix_transpose(wi), 1),
        reorder(xp.matrix_transpose(whh), 1),
        reorder(b, 0),
    )
