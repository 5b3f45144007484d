"""Optimizers and gradient clipping, written only against the Array API namespace.

Every optimizer updates each parameter in its own dtype: hyperparameters are Python floats
(which never promote an array), and state arrays are made with ``zeros_like``. Where a
backend supports in-place writes parameters and state are updated in place; elsewhere
``param.data`` is rebound to the new array: each rule is written once, with the update
primitives of the backend's ops (:class:`nnbackend.backends.ops.Ops`: ``add_``, ``sub_``,
``mul_``, ``sub_scaled_``, ``add_scaled_``, ``sub_scaled_ratio_``, ...), which decide; NumPy
computes their temporaries in scratch buffers kept across steps, so a steady-state step
allocates no parameter-sized arrays (the same operations in the same order: the same bits).
Parameters whose ``.grad`` is ``None`` are skipped.
Nothing here reads an array back to the host.

Float16 parameters where the backend computes float16 in float32 (NumPy on a CPU, whose float16
arithmetic runs in software and slows down further on subnormal numbers) are updated in
float32 and stored back in float16, state included (:meth:`~nnbackend.backends.ops.Ops.
apply_update`): the stored values are the float32 update rounded once, never float16
intermediates.

The update rules are PyTorch's (``torch.optim``), so results can be compared one to one, also
under a learning-rate schedule: :class:`Momentum` keeps PyTorch's buffer
``b = momentum * b + g`` and steps ``p -= lr * b``, which equals the book's velocity form
``v = momentum * v - lr * g; p += v`` while the learning rate is constant.

>>> import nnbackend as nb
>>> from nnbackend import nn, optim
>>> model = nn.Linear(2, 1)
>>> opt = optim.Adam(model.parameters(), lr=1e-3)
>>> loss = nn.MSELoss()(model(nb.namespace().ones((4, 2))), nb.namespace().zeros((4, 1)))
>>> opt.zero_grad(); loss.backward(); opt.step()
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from nnbackend.autograd import trace
from nnbackend.autograd.tensor import Tensor, rebinds
from nnbackend.device import map_arrays, once
from nnbackend.errors import ArgumentError, BackendMismatchError, CheckpointError
from nnbackend.namespace import backend_for, namespace, ops_for
from nnbackend.nn.module import convert_like
from nnbackend.typing import Array, Namespace

if TYPE_CHECKING:
    from nnbackend.backends.ops import Ops

__all__ = [
    "SGD",
    "AdaGrad",
    "Adam",
    "AdamW",
    "BookAdam",
    "Momentum",
    "Nesterov",
    "Optimizer",
    "RMSprop",
    "clip_grad_norm",
]


# Optimizer attributes that are its parameters or caches about them, never state to move.
_NOT_STATE = frozenset({"params", "_entries", "_rebinds_seen"})


def _as_params(params: Any) -> list[Tensor]:
    if hasattr(params, "parameters") and callable(params.parameters):
        params = params.parameters()
    elif isinstance(params, Tensor):
        # One parameter (torch's clip_grad_norm_ takes one too); iterating a Tensor would
        # give its rows, new Tensors that never get a gradient: steps would do nothing.
        params = [params]
    out: list[Tensor] = []
    seen: set[int] = set()
    for p in params:
        if not isinstance(p, Tensor):
            raise TypeError(
                f"optimizers take nnbackend Parameters (model.parameters()), got {type(p).__name__}"
            )
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def _as_float(name: str, value: Any) -> float:
    """``float(value)``, or an ArgumentError naming ``name`` (not float()'s bare TypeError
    for ``None``, or ValueError for a word)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ArgumentError(f"{name} must be a number, got {value!r}") from None


def _positive(
    name: str, value: float, *, allow_zero: bool = True, allow_inf: bool = False
) -> float:
    # Infinity only where asked (clip_grad_norm's max_norm: no clipping): an infinite eps
    # stops every update, an infinite weight decay turns every weight into inf or NaN.
    value = _as_float(name, value)
    if not (value > 0.0 or (allow_zero and value == 0.0)) or math.isnan(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise ArgumentError(f"{name} must be {bound}, got {value}")
    if value == math.inf and not allow_inf:
        raise ArgumentError(f"{name} must be finite, got {value}")
    return value


def _state_index(key: Any) -> int:
    """A state dict's key as a parameter index: an int, or its decimal digits (JSON keys are
    strings). ``int()`` would take 0.5 as parameter 0, and True as 1."""
    if isinstance(key, str):
        if key.isascii() and key.isdigit():
            return int(key)
    elif not isinstance(key, bool):
        try:
            return operator.index(key)
        except TypeError:
            pass
    raise CheckpointError(
        f"state key {key!r} is not a parameter index (an int, or its decimal digits)"
    )


def _is_count(value: Any) -> bool:
    """A step count: a non-negative int (never a bool, a float or a string)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _loaded_hyperparameter(key: str, value: Any) -> float:
    """A hyperparameter from a snapshot, held to the constructor's bounds (a snapshot is
    input too: a checkpoint file may say anything); :class:`CheckpointError` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CheckpointError(
            f"hyperparameter {key!r} must be a number, got {type(value).__name__} {value!r}"
        )
    try:
        value = float(value)
    except OverflowError:  # an int beyond floats (a state dict's numbers are unbounded)
        value = math.inf
    if not math.isfinite(value):
        raise CheckpointError(f"hyperparameter {key!r} must be finite, got {value}")
    check = _fraction if key in _FRACTIONS else _positive if key in _NON_NEGATIVE else None
    if check is not None:
        try:
            check(key, value)
        except ArgumentError as exc:
            raise CheckpointError(f"hyperparameter {exc}") from None
    return value


def _checked_lr(opt: Any) -> float:
    """``opt.lr`` as a float, or an ArgumentError before anything is updated: ``lr`` may be
    changed between steps, and NaN, infinite or negative rates would corrupt every weight."""
    lr: object = opt.lr  # whatever the user assigned since
    if type(lr) is float and 0.0 <= lr < math.inf:  # the usual case: one comparison
        return lr
    # A real number (int, float, numpy.float32, ...); never a bool or a string.
    value = float(lr) if not isinstance(lr, bool) and isinstance(lr, numbers.Real) else math.nan
    if not 0.0 <= value < math.inf:
        raise ArgumentError(
            f"{type(opt).__name__}.lr must be a finite number >= 0 at step(), got {lr!r}; set "
            "it to a valid rate (e.g. opt.lr = 0.01) before the next step"
        )
    return value


class _Slot:
    """What an update rule needs to know about one parameter besides its arrays: the
    backend's ops and the dtype's smallest normal number (the floor of ``eps``)."""

    __slots__ = ("kind", "ops", "sub_scaled_", "tiny", "xp")

    def __init__(self, ops: Ops, xp: Namespace, tiny: float, kind: type) -> None:
        self.ops, self.xp, self.tiny = ops, xp, tiny
        #: The type of the parameter's array when looked up: another type means the array
        #: moved to another backend (``model.to(...)`` after the optimizer was built).
        self.kind = kind
        #: ``ops.sub_scaled_``, bound once: SGD's whole rule, called per parameter per step.
        self.sub_scaled_ = ops.sub_scaled_

    def eps(self, eps: float) -> float:
        """``eps`` raised to the dtype's smallest normal number."""
        return eps if eps > self.tiny else self.tiny


def _fraction(name: str, value: float) -> float:
    value = _as_float(name, value)
    if not 0.0 <= value < 1.0:
        raise ArgumentError(f"{name} must be in [0, 1), got {value}")
    return value


# The bounds the constructors hold each built-in hyperparameter to (betas are beta1, beta2).
_FRACTIONS = frozenset({"momentum", "alpha", "beta1", "beta2"})
_NON_NEGATIVE = frozenset({"lr", "eps", "weight_decay"})


class Optimizer:
    """Base class: holds the parameters (in the order given), their per-parameter state and
    the hyperparameters.

    Subclasses name their hyperparameters in ``hyperparameters`` (attributes holding Python
    floats, which may be changed between steps, e.g. ``opt.lr = 0.1``) and their state arrays
    in ``state_names``, and define :meth:`step`. Each :meth:`step` first checks ``lr``: NaN,
    infinite or negative rates raise :class:`~nnbackend.errors.ArgumentError` before any
    parameter changes.

    An ``eps`` below the parameter dtype's smallest normal number (float16: 6.1e-5) is raised
    to it for that parameter, so a zero gradient never divides 0 by 0.

    Attributes:
        params: the parameters, deduplicated, in the order given.
        state: one dict per parameter (``{}`` until its first update) of state arrays and, for
            the Adam family, its own step count.
        steps: how many times :meth:`step` ran.
    """

    hyperparameters: tuple[str, ...] = ("lr",)
    state_names: tuple[str, ...] = ()
    counts_steps_per_param = False
    _rebinds_seen = -1  # (a subclass that skips __init__ checks its entries on its first step)

    def __init__(self, params: Iterable[Tensor] | Any, lr: float) -> None:
        self.params = _as_params(params)
        if not self.params:
            raise ArgumentError(f"{type(self).__name__} got an empty parameter list")
        self.lr = _positive("lr", lr)
        self.steps = 0
        self.state: list[dict[str, Any]] = [{} for _ in self.params]
        # Per-parameter facts, looked up once: (param, state, slot).
        self._entries: list[tuple[Tensor, dict[str, Any], _Slot]] = self._entry_list()
        self._rebinds_seen = rebinds[0]  # Tensor._apply's count when entries were checked

    def _refresh_entries(self) -> None:
        """Look up each parameter's backend facts again (after its arrays moved)."""
        self._entries = self._entry_list()

    def _entry_list(self) -> list[tuple[Tensor, dict[str, Any], _Slot]]:
        entries = []
        for i, (p, st) in enumerate(zip(self.params, self.state, strict=True)):
            xp = backend_for(p.data)[0]
            ops = ops_for(xp, p.data)
            if ops.read_only(p.data):
                # Checked once here: every step would fail in the library's own words
                # ("output array is read-only"), after the gradients were computed.
                raise ArgumentError(
                    f"parameter {i} of shape {tuple(p.data.shape)} is a read-only array (a "
                    "file opened with mmap_mode='r', a broadcast view); give the model its "
                    "own copy first: p.data = xp.asarray(p.data, copy=True), or load the "
                    "weights with nnbackend.load"
                )
            tiny = float(xp.finfo(p.data.dtype).smallest_normal)
            entries.append((p, st, _Slot(ops, xp, tiny, type(p.data))))
        return entries

    def _live_entries(self) -> list[tuple[Tensor, dict[str, Any], _Slot]]:
        """``_entries``, looked up again where a parameter's array has changed type: the
        model moved to another backend after this optimizer was built (``Module.to`` keeps
        the Parameter objects, so the optimizer stays valid), and the old backend's ops
        would fail inside that library. State arrays left on the old backend raise
        :class:`~nnbackend.errors.BackendMismatchError` naming the fix, before any change.
        Called by ``step`` only when :data:`nnbackend.autograd.tensor.rebinds` moved since."""
        self._rebinds_seen = rebinds[0]
        entries = self._entries
        for p, _st, slot in entries:
            if type(p.data) is not slot.kind:
                break
        else:
            return entries
        self._refresh_entries()
        for i, (p, st, _slot) in enumerate(self._entries):
            here = backend_for(p.data)[1]
            for key in self.state_names:
                value = st.get(key)
                if value is not None and backend_for(value)[1] is not here:
                    raise BackendMismatchError(
                        f"{type(self).__name__} state {key!r} of parameter {i} is on "
                        f"{backend_for(value)[1].name}, but the parameter moved to {here.name}: "
                        "move the optimizer with its model, "
                        f"nnbackend.to_device(optimizer, {here.name!r})"
                    )
        return self._entries

    def zero_grad(self) -> None:
        """Set every parameter's ``.grad`` to ``None``, keeping each array aside for the next
        ``backward`` to write into where nothing else refers to it
        (:meth:`nnbackend.Tensor.zero_grad`)."""
        for p in self.params:
            p.zero_grad()

    @trace.recorded
    def step(self) -> None:
        """Update every parameter that has a gradient."""
        if type(self)._rule is Optimizer._rule:
            raise NotImplementedError(f"{type(self).__name__} must define _rule()")
        self.lr = _checked_lr(self)
        entries = self._entries if self._rebinds_seen == rebinds[0] else self._live_entries()
        self.steps += 1
        rule, names = self._rule, self.state_names
        for p, st, slot in entries:
            g = p.grad
            if g is None:
                continue
            p.data = slot.ops.apply_update(rule, p.data, g, st, names, slot)

    def _step_lr(self) -> float:
        """``self.lr`` as :meth:`step` takes it (a float), or the ArgumentError it raises:
        also what compile_step's jitted whole step checks before running."""
        return _checked_lr(self)

    def _rule(self, p: Array, g: Array, st: dict[str, Any], slot: _Slot) -> Array:
        """The update of one parameter: from its data ``p``, gradient ``g``, state ``st`` (a
        dict of arrays, updated by rebinding its entries) and ``slot`` (the ops and the eps
        floor), the new data. Written once with the ops' update primitives, which write in
        place where the backend allows and return new arrays otherwise."""
        raise NotImplementedError

    # -- moving --------------------------------------------------------------------------
    def _apply(self, fn: Callable[[Array], Array]) -> Optimizer:
        """Rebind every array this optimizer holds to ``fn`` of it: its parameters (data and
        ``.grad``; the Parameter objects stay, so the model's links hold), its state arrays
        (the state dicts stay the same dicts) and arrays or Tensors in other attributes; then
        the per-parameter caches are renewed (:meth:`_refresh_entries`, which a subclass
        caching its own per-parameter facts extends). Returns ``self``; ``nnbackend.to_device``
        uses it."""
        fn = once(fn)
        for p in self.params:
            p._apply(fn)
        for key, value in list(vars(self).items()):
            if key not in _NOT_STATE:
                new = map_arrays(value, fn)
                if new is not value:
                    setattr(self, key, new)
        # The parameters may have moved before this call (a model moved with its optimizer
        # rebinds them first), so the caches are renewed whether or not fn changed anything.
        self._refresh_entries()
        return self

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A snapshot: ``{"type", "hyperparameters", "steps", "state"}``, where ``state`` maps
        each parameter's index (in ``params`` order) to its state (copies of the arrays, so
        later steps do not change the snapshot). Parameters without state are left out."""
        state: dict[int, dict[str, Any]] = {}
        for i, (p, st, slot) in enumerate(self._entries):
            xp = slot.xp
            if st:
                state[i] = {
                    k: (xp.asarray(v, copy=True) if k in self.state_names else v)
                    for k, v in st.items()
                }
            del p
        return {
            "type": type(self).__name__,
            "hyperparameters": {name: getattr(self, name) for name in self.hyperparameters},
            "steps": self.steps,
            "state": state,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` snapshot.

        Everything is validated first (type, hyperparameter names, parameter indices, state
        names, shapes and dtypes); on any error :class:`~nnbackend.errors.CheckpointError` is
        raised and the optimizer is left unchanged. Arrays of another backend are moved to
        each parameter's backend through the host; the arrays are copied, never shared.
        """
        name = type(self).__name__
        if not isinstance(state_dict, Mapping):
            raise CheckpointError(
                f"{name}.load_state_dict needs a mapping, got {type(state_dict).__name__}"
            )
        expected_keys = {"type", "hyperparameters", "steps", "state"}
        if set(state_dict) != expected_keys:
            raise CheckpointError(
                f"{name} state dict needs keys {sorted(expected_keys)}, got {sorted(state_dict)}"
            )
        if state_dict["type"] != name:
            raise CheckpointError(
                f"state dict is for a {state_dict['type']} optimizer, not a {name}"
            )
        hyper = state_dict["hyperparameters"]
        if not isinstance(hyper, Mapping) or set(hyper) != set(self.hyperparameters):
            got = sorted(hyper) if isinstance(hyper, Mapping) else hyper
            raise CheckpointError(
                f"{name} hyperparameters are {sorted(self.hyperparameters)}, got {got}"
            )
        new_hyper = {key: _loaded_hyperparameter(key, value) for key, value in hyper.items()}
        steps = state_dict["steps"]
        if not _is_count(steps):
            raise CheckpointError(f"steps must be a non-negative int, got {steps!r}")
        raw_state = state_dict["state"]
        if not isinstance(raw_state, Mapping):
            raise CheckpointError(
                f"state must map parameter indices to dicts, got {type(raw_state).__name__}"
            )
        wanted = set(self.state_names) | ({"step"} if self.counts_steps_per_param else set())
        new_state: list[dict[str, Any]] = [{} for _ in self.params]
        seen: set[int] = set()
        for key, entry in raw_state.items():
            i = _state_index(key)
            if i in seen:
                raise CheckpointError(f"state for parameter {i} is given twice (key {key!r})")
            seen.add(i)
            if not 0 <= i < len(self.params):
                raise CheckpointError(
                    f"state for parameter {i}, but {name} has {len(self.params)} parameters"
                )
            if not isinstance(entry, Mapping) or set(entry) != wanted:
                got = sorted(entry) if isinstance(entry, Mapping) else entry
                raise CheckpointError(
                    f"state of parameter {i} needs entries {sorted(wanted)}, got {got}"
                )
            p = self.params[i]
            for k, v in entry.items():
                if k == "step":
                    if not _is_count(v):
                        raise CheckpointError(
                            f"state[{i}]['step'] must be a non-negative int, got {v!r}"
                        )
                    new_state[i][k] = int(v)
                else:
                    new_state[i][k] = convert_like(v, p.data, f"state[{i}][{k!r}]")
        # Validated: now commit, keeping the dicts the entries refer to.
        for key, value in new_hyper.items():
            setattr(self, key, value)
        self.steps = int(steps)
        for st, new in zip(self.state, new_state, strict=True):
            st.clear()
            st.update(new)

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={getattr(self, k)}" for k in self.hyperparameters)
        return f"{type(self).__name__}({len(self.params)} parameters, {hyper})"


def _sqrt(x: Any) -> Any:
    """``math.sqrt`` of a Python float; the square root of a traced scalar otherwise (a jitted
    step, compile_step on jax, passes the step counts in as arrays)."""
    return math.sqrt(x) if isinstance(x, float) else x**0.5


def _zeros_state(st: dict[str, Any], name: str, p: Array, xp: Namespace) -> Array:
    """The state array ``st[name]``, made as zeros like ``p`` (an array) on first use."""
    found = st.get(name)
    if found is None:
        found = st[name] = xp.zeros_like(p)
    return found


class SGD(Optimizer):
    """Plain stochastic gradient descent: ``p -= lr * g``."""

    def __init__(self, params: Iterable[Tensor] | Any, lr: float = 0.01) -> None:
        super().__init__(params, lr)

    @trace.recorded
    def step(self) -> None:
        lr = self.lr = _checked_lr(self)
        entries = self._entries if self._rebinds_seen == rebinds[0] else self._live_entries()
        self.steps += 1
        # One pass, no state: the ops' sub_scaled_ (NumPy: through a scratch buffer, and
        # float16 in float32 a block at a time) is the whole rule.
        for p, _st, slot in entries:
            g = p.grad
            if g is not None:
                p.data = slot.sub_scaled_(p.data, lr, g)

    def _rule(self, p: Array, g: Array, st: dict[str, Any], slot: _Slot) -> Array:
        return slot.ops.sub_scaled_(p, self.lr, g)


class Momentum(Optimizer):
    """SGD with momentum in PyTorch's form (``SGD(momentum=m)``, no dampening):
    ``b = momentum * b + g; p -= lr * b``, with the buffer ``b`` kept as state
    ``"momentum_buffer"``.

    While ``lr`` is constant this is the book's velocity form ``v = momentum * v - lr * g;
    p += v`` (``v = -lr * b``). When ``lr`` changes (a schedule), the buffer keeps the past
    gradients unscaled and the new rate applies to all of them at once, as in PyTorch; the
    velocity form would keep moving at the old rate for many steps.
    """

    hyperparameters = ("lr", "momentum")
    state_names = ("momentum_buffer",)

    def __init__(
        self, params: Iterable[Tensor] | Any, lr: float = 0.01, momentum: float = 0.9
    ) -> None:
        super().__init__(params, lr)
        self.momentum = _fraction("momentum", momentum)

    def _rule(self, p: Array, g: Array, st: dict[str, Any], slot: _Slot) -> Array:
        ops, mu = slot.ops, self.momentum
        b = _zeros_state(st, "momentum_buffer", p, slot.xp)
        b = st["momentum_buffer"] = ops.add_(ops.mul_(b, mu), g)
        return ops.sub_times_(p, self.lr, b)


class Nesterov(Momentum):
    """Nesterov's accelerated gradient in PyTorch's form (``SGD(momentum=m,
    nesterov=True)``): ``b = momentum * b + g; p -= lr * (g + momentum * b)``."""

    def _rule(self, p: Array, g: Array, st: dict[str, Any], slot: _Slot) -> Array:
        ops, mu = slot.ops, self.momentum
        b = _zeros_state(st, "momentum_buffer", p, slot.xp)
        b = st["momentum_buffer"] = ops.add_(ops.mul_(b, mu), g)
        return ops.sub_scaled_sum_(p, self.lr, g, mu, b)


class AdaGrad(Optimizer):
    """``h += g * g; p -= lr * g / (sqrt(h) + eps)`` (PyTorch's ``Adagrad``)."""

    hyperparameters = ("lr", "eps")
    state_names = ("h",)

    def __init__(
        self, params: Iterable[Tensor] | Any, lr: float = 0.01, eps: float = 1e-10
    ) -> None:
        super().__init__(params, lr)
        self.eps = _positive("eps", eps)

    def _rule(self, p: Array, g: Array, st: dict[str, Any], slot: _Slot) -> Array:
        ops, xp = slot.ops, slot.xp
        h = st["h"] = ops.add_scaled_square_(_zeros_state(st, "h", p, xp), None, g)
        return ops.sub_scaled_ratio_(p, self.lr, g, h, None, slot.eps(self.eps))


class RMSprop(Optimizer):
    """``h = alpha * h + (1 - alpha) * g * g; p -= lr * g / (sqrt(h) + eps)`` (PyTorch's
    ``RMSprop``; the book calls ``alpha`` the decay rate)."""

    hyperparameters = ("lr", "alpha", "eps")
    state_names = ("h",)

    def __init__(
        self,
        params: Iterable[Tensor] | Any,
        lr: float = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, lr)
        self.alpha = _fraction("alpha", alpha)
        self.eps = _positive("eps", eps)

    def _rule(self, p: Array, g: Array, st: dict[str, Any], slot: _Slot) -> Array:
        ops, xp, a = slot.ops, slot.xp, self.alpha
        h = ops.mul_(_zeros_state(st, "h", p, xp), a)
        h = st["h"] = ops.add_scaled_square_(h, 1.0 - a, g)
        return ops.sub_scaled_ratio_(p, self.lr, g, h, None, slot.eps(self.eps))


class Adam(Optimizer):
    """Adam (PyTorch's rule): ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g²``,
    ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``.

    ``weight_decay`` adds ``weight_decay * p`` to the gradient (L2 regularisation, coupled);
    see :class:`AdamW` for decoupled decay. Each parameter counts its own steps ``t`` (a
    parameter without a gradient in some step is not advanced).
    """

    hyperparameters = ("lr", "beta1", "beta2", "eps", "weight_decay")
    state_names = ("m", "v")
    counts_steps_per_param = True
    _decoupled = False

    def __init__(
        self,
        params: Iterable[Tensor] | Any,
        lr: float = 0.001,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        try:
            beta1, beta2 = betas[0], betas[1]
        except (TypeError, IndexError, KeyError):
            raise ArgumentError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self.beta1 = _fraction("betas[0]", beta1)
        self.beta2 = _fraction("betas[1]", beta2)
        self.eps = _positive("eps", eps)
        self.weight_decay = _positive("weight_decay", weight_decay)

    def _rule(self, p: Array, g: Array, st: dict[str, Any], slot: _Slot) -> Array:
        ops, xp = slot.ops, slot.xp
        lr, b1, b2, wd = self.lr, self.beta1, self.beta2, self.weight_decay
        m = _zeros_state(st, "m", p, xp)
        v = _zeros_state(st, "v", p, xp)
        t = st["step"] = st.get("step", 0) + 1
        step_size = lr / (1.0 - b1**t)
        inv_sqrt_bc2 = 1.0 / _sqrt(1.0 - b2**t)
        if wd:
            if self._decoupled:
                p = ops.mul_(p, 1.0 - lr * wd)
            else:
                g = ops.scaled_sum(g, wd, p)  # a temporary: p.grad itself stays as it is
        m = st["m"] = ops.add_scaled_(ops.mul_(m, b1), 1.0 - b1, g)
        v = st["v"] = ops.add_scaled_square_(ops.mul_(v, b2), 1.0 - b2, g)
        return ops.sub_scaled_ratio_(p, step_size, m, v, inv_sqrt_bc2, slot.eps(self.eps))


class BookAdam(Adam):
    """Adam exactly as "Deep Learning from Scratch" writes it: the bias corrections go into
    the step size and epsilon (default ``1e-7``) is added to the uncorrected ``sqrt(v)``::

        lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)
        m += (1 - b1) * (g - m);  v += (1 - b2) * (g*g - v)
        p -= lr_t * m / (sqrt(v) + eps)

    :class:`Adam` adds epsilon to the *corrected* ``sqrt(v / (1 - b2^t))``. The two agree
    when gradients are much larger than epsilon; where they are tiny (word2vec's embedding
    gradients are about 1e-6) the book's epsilon weighs ``1 / sqrt(1 - b2^t)`` times more in
    the early steps and the trajectories differ visibly. Pick ``BookAdam`` to reproduce the
    book's numbers, :class:`Adam` to match PyTorch.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Any,
        lr: float = 0.001,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-7,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)

    def _rule(self, p: Array, g: Array, st: dict[str, Any], slot: _Slot) -> Array:
        ops, xp = slot.ops, slot.xp
        lr, b1, b2, wd = self.lr, self.beta1, self.beta2, self.weight_decay
        m = _zeros_state(st, "m", p, xp)
        v = _zeros_state(st, "v", p, xp)
        t = st["step"] = st.get("step", 0) + 1
        lr_t = lr * _sqrt(1.0 - b2**t) / (1.0 - b1**t)
        if wd:
            g = ops.scaled_sum(g, wd, p)  # a temporary: p.grad itself stays as it is
        m = st["m"] = ops.add_scaled_diff_(m, 1.0 - b1, g)
        v = st["v"] = ops.add_scaled_diff_(v, 1.0 - b2, g, square=True)
        return ops.sub_scaled_ratio_(p, lr_t, m, v, None, slot.eps(self.eps))


class AdamW(Adam):
    """Adam with decoupled weight decay (PyTorch's ``AdamW``): before the Adam update,
    ``p *= 1 - lr * weight_decay``."""

    _decoupled = True

    def __init__(
        self,
        params: Iterable[Tensor] | Any,
        lr: float = 0.001,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)


@trace.recorded
def clip_grad_norm(params: Iterable[Tensor] | Any, max_norm: float, eps: float = 1e-6) -> Array:
    """Scale the gradients so that their global L2 norm is at most ``max_norm``.

    Everything happens on the device: the factor ``min(1, max_norm / (norm + eps))`` is a 0-d
    array, and the gradients are multiplied by it whether or not it is 1, so the norm is never
    read back to the host. The gradients are rebound (``p.grad = g * factor``), never written
    in place, because a gradient array may be shared by several parameters or be a read-only
    broadcast view (scaling in place where nothing else holds the array was measured on the
    LSTM language model: no fewer page faults, 25 MB more peak memory). The squares are
    summed in at least float32, so float16 gradients do not overflow; on NumPy they go
    through a scratch buffer (:meth:`Ops.sum_of_squares
    <nnbackend.backends.ops.Ops.sum_of_squares>`), not a new gradient-sized array each.

    Returns:
        The norm before clipping, as a 0-d array (float32 for float16 gradients, else the
        gradients' dtype). With no gradients at all, a 0-d zero of the active namespace.
    """
    max_norm = _positive("max_norm", max_norm, allow_zero=False, allow_inf=True)
    with_grad = [p for p in _as_params(params) if p.grad is not None]
    if not with_grad:
        return namespace().zeros(())
    xp = backend_for(with_grad[0].grad)[0]
    ops = ops_for(xp, with_grad[0].grad)
    acc = xp.float32
    for p in with_grad:
        if p.grad.dtype == xp.float64:
            acc = xp.float64
    total = None
    for p in with_grad:
        sq = ops.sum_of_squares(p.grad, acc)
        total = sq if total is None else total + sq
    norm = xp.sqrt(total)
    factor = xp.clip(max_norm / (norm + eps), max=1.0)
    for p in with_grad:
        g = p.grad
        p.grad = g * (factor if g.dtype == acc else xp.astype(factor, g.dtype))
    return norm


def __dir__() -> list[str]:
    """The public names (``__all__``): not ``math``, ``Any`` or the other imports."""
    return sorted(__all__)
