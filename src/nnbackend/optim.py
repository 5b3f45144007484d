"""Optimizers and gradient clipping, written only against the Array API namespace.

Every optimizer updates each parameter in its own dtype: hyperparameters are Python floats
(which never promote an array), and state arrays are made with ``zeros_like``. Where a
backend supports in-place writes (:attr:`nnbackend.Capabilities.inplace`) parameters and state
are updated in place; elsewhere ``param.data`` is rebound to the new array. Parameters whose
``.grad`` is ``None`` are skipped. Nothing here reads an array back to the host.

Float16 parameters on a backend without fast float16 arithmetic (NumPy on a CPU, whose float16
arithmetic runs in software and slows down further on subnormal numbers) are updated in
float32 and stored back in float16, state included: the stored values are the float32 update
rounded once, never float16 intermediates.

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
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nnbackend.autograd.kernels import _cache as _kernels_cache
from nnbackend.autograd.kernels import kernels
from nnbackend.autograd.tensor import Tensor
from nnbackend.device import map_arrays, once
from nnbackend.errors import ArgumentError, CheckpointError
from nnbackend.namespace import backend_for, namespace
from nnbackend.nn.module import convert_like

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
_NOT_STATE = frozenset({"params", "_entries", "_pairs", "_scratch_views", "_scratch_flat"})


def _as_params(params: Any) -> list[Tensor]:
    if hasattr(params, "parameters") and callable(params.parameters):
        params = params.parameters()
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


def _positive(name: str, value: float, *, allow_zero: bool = True) -> float:
    value = float(value)
    if not (value > 0.0 or (allow_zero and value == 0.0)) or math.isnan(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise ArgumentError(f"{name} must be {bound}, got {value}")
    return value


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
    value = float(value)
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
    lr = opt.lr
    if type(lr) is float and 0.0 <= lr < math.inf:  # the usual case: one comparison
        return lr
    # A real number (int, float, numpy.float32, ...); never a bool or a string.
    value = float(lr) if isinstance(lr, numbers.Real) and not isinstance(lr, bool) else math.nan
    if not 0.0 <= value < math.inf:
        raise ArgumentError(
            f"{type(opt).__name__}.lr must be a finite number >= 0 at step(), got {lr!r}; set "
            "it to a valid rate (e.g. opt.lr = 0.01) before the next step"
        )
    return value


class _Wide:
    """A float32 stand-in for a float16 parameter during an update."""

    __slots__ = ("data",)

    def __init__(self, data: Any) -> None:
        self.data = data


def _half_kernels(xp: Any, g: Any) -> Any:
    """The backend's kernels when ``g`` is float16 there and float16 math is slow, else None."""
    k = _kernels_cache.get(xp)
    if k is None:
        k = kernels(xp, g)
    half = k.half
    # A few hundred values: NumPy's float16 arithmetic costs less than two conversions.
    if half is None or g.dtype != half:
        return None
    n = g.size
    return k if (n if type(n) is int else math.prod(g.shape)) >= 256 else None


def _fraction(name: str, value: float) -> float:
    value = float(value)
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

    def __init__(self, params: Iterable[Tensor] | Any, lr: float) -> None:
        self.params = _as_params(params)
        if not self.params:
            raise ArgumentError(f"{type(self).__name__} got an empty parameter list")
        self.lr = _positive("lr", lr)
        self.steps = 0
        self.state: list[dict[str, Any]] = [{} for _ in self.params]
        # Per-parameter facts, looked up once: (param, state, xp, in-place writes?, the
        # dtype's smallest normal number).
        self._entries: list[tuple[Tensor, dict[str, Any], Any, bool, float]] = []
        for p, st in zip(self.params, self.state, strict=True):
            xp, record = backend_for(p.data)
            tiny = float(xp.finfo(p.data.dtype).smallest_normal)
            self._entries.append((p, st, xp, bool(record.capabilities.inplace), tiny))

    def zero_grad(self) -> None:
        """Set every parameter's ``.grad`` to ``None``."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient."""
        if type(self)._update is Optimizer._update:
            raise NotImplementedError(f"{type(self).__name__} must define step()")
        self.lr = _checked_lr(self)
        self.steps += 1
        update = self._update
        for p, st, xp, inplace, tiny in self._entries:
            g = p.grad
            if g is None:
                continue
            k = _half_kernels(xp, g)
            if k is not None:
                self._wide_update(k, p, g, st, xp, inplace, tiny)
            else:
                update(p, g, st, xp, inplace, tiny)

    def _update(
        self, p: Any, g: Any, st: dict[str, Any], xp: Any, inplace: bool, tiny: float
    ) -> None:
        """Update one parameter ``p`` (anything with a ``.data``) from its gradient ``g``."""
        raise NotImplementedError

    def _wide_update(
        self, k: Any, p: Any, g: Any, st: dict[str, Any], xp: Any, inplace: bool, tiny: float
    ) -> None:
        """:meth:`_update` in float32 for a float16 parameter, its state stored back in
        float16: one rounding per stored value, and no software float16 arithmetic."""
        wide = _Wide(k.widen(p.data))
        wide_state = {
            key: (k.widen(value) if key in self.state_names else value) for key, value in st.items()
        }
        self._update(wide, k.widen(g), wide_state, xp, inplace, tiny)
        for key, value in wide_state.items():
            if key not in self.state_names:
                st[key] = value
            elif inplace and key in st:
                st[key][...] = k.narrow(value)
            else:
                st[key] = k.narrow(value)
        if inplace:
            p.data[...] = k.narrow(wide.data)
        else:
            p.data = k.narrow(wide.data)

    # -- moving --------------------------------------------------------------------------
    def _apply(self, fn: Callable[[Any], Any]) -> Optimizer:
        """Rebind every array this optimizer holds to ``fn`` of it: its parameters (data and
        ``.grad``; the Parameter objects stay, so the model's links hold), its state arrays
        (the state dicts stay the same dicts) and arrays or Tensors in other attributes; then
        the per-parameter caches are renewed (:meth:`_refresh_entries`) and scratch buffers
        dropped. Returns ``self``;
        ``nnbackend.to_device`` uses it. Raises TypeError (before anything changes) where a
        subclass caches per-parameter facts in a form this method does not know."""
        if type(self)._refresh_entries is Optimizer._refresh_entries:
            self._check_entries()
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
        self.__dict__.pop("_scratch_views", None)
        self.__dict__.pop("_scratch_flat", None)
        self._refresh_entries()
        return self

    def _check_entries(self) -> None:
        entries = vars(self).get("_entries")
        pairs = vars(self).get("_pairs")
        known = (
            entries is None
            or all(
                type(e) is tuple and len(e) >= 4 and isinstance(e[0], Tensor) and type(e[1]) is dict
                for e in entries
            )
        ) and (
            pairs is None
            or all(type(e) is tuple and len(e) == 2 and isinstance(e[0], Tensor) for e in pairs)
        )
        if not known:
            raise TypeError(
                f"{type(self).__name__} caches per-parameter facts in a form _apply does not "
                "know; give it a _refresh_entries() method that rebuilds them from its parameters"
            )

    def _refresh_entries(self) -> None:
        """Renew what is cached per parameter (its namespace, whether it may be written in
        place) after the parameters' arrays moved to another backend or device."""
        entries = vars(self).get("_entries")
        if entries is not None:
            new = []
            for p, st, _xp, _inplace, *rest in entries:
                xp, record = backend_for(p.data)
                new.append((p, st, xp, bool(record.capabilities.inplace), *rest))
            entries[:] = new
        pairs = vars(self).get("_pairs")
        if pairs is not None:
            pairs[:] = [(p, bool(backend_for(p.data)[1].capabilities.inplace)) for p, _ in pairs]

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A snapshot: ``{"type", "hyperparameters", "steps", "state"}``, where ``state`` maps
        each parameter's index (in ``params`` order) to its state (copies of the arrays, so
        later steps do not change the snapshot). Parameters without state are left out."""
        state: dict[int, dict[str, Any]] = {}
        for i, (p, st, xp, _, _) in enumerate(self._entries):
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
        for key, entry in raw_state.items():
            try:
                i = int(key)
            except (TypeError, ValueError):
                raise CheckpointError(f"state key {key!r} is not a parameter index") from None
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


def _zeros_state(st: dict[str, Any], name: str, p: Any, xp: Any) -> Any:
    """The state array ``st[name]``, made as zeros like ``p.data`` on first use."""
    found = st.get(name)
    if found is None:
        found = st[name] = xp.zeros_like(p.data)
    return found


# Parameters of at least this many elements are updated through a scratch buffer (where the
# backend offers scale_into): below glibc's default mmap threshold (128 KiB) a temporary is
# cheap to allocate, and a dictionary lookup would cost more than it saves.
_SCRATCH_MIN = 32768


class SGD(Optimizer):
    """Plain stochastic gradient descent: ``p -= lr * g``."""

    def __init__(self, params: Iterable[Tensor] | Any, lr: float = 0.01) -> None:
        super().__init__(params, lr)
        self._pairs = [(p, inplace) for p, _, _, inplace, _ in self._entries]

    def step(self) -> None:
        lr = self.lr = _checked_lr(self)
        self.steps += 1
        # The kernels (and the dtype updated in float32) looked up once per backend, not once
        # per parameter: a _half_kernels call per parameter cost 0.3 us of a 50 us step.
        seen_xp = k = half = scale_into = None
        for p, _st, xp, inplace, _tiny in self._entries:
            g = p.grad
            if g is None:
                continue
            if xp is not seen_xp:
                seen_xp, k = xp, _kernels_cache.get(xp) or kernels(xp, g)
                half, scale_into = k.half, k.scale_into
            if half is not None and g.dtype == half:  # float16, in float32, rounded once
                _sgd_half(k, p, g, lr, inplace)
            elif inplace and scale_into is not None and g.size >= _SCRATCH_MIN:
                # lr * g into a scratch buffer kept across steps: a fresh parameter-sized
                # temporary, freed at the top of the heap, made glibc hand the memory back to
                # the OS and fault it in again every step (benchmarks/NOTES.md: 30% of the
                # 784-1024-1024-10 step). Small parameters keep the plain expression.
                tmp = self._scratch(xp, p, g)
                scale_into(g, lr, tmp)
                p.data -= tmp
            elif inplace:
                p.data -= lr * g
            else:
                p.data = p.data - lr * g

    def _scratch(self, xp: Any, p: Any, g: Any) -> Any:
        """A buffer of ``g``'s shape and dtype for parameter ``p``: a view of one flat array
        per (backend, dtype) sized for the largest parameter, so the scratch memory is one
        parameter's worth, not one per parameter. The view is kept per parameter."""
        views: dict[int, Any] = self.__dict__.setdefault("_scratch_views", {})
        view = views.get(id(p))
        if (
            view is not None
            and type(view) is type(g)  # not an array moved by to_device to another backend
            and view.shape == g.shape
            and view.dtype == g.dtype
        ):
            return view
        flats: dict[Any, Any] = self.__dict__.setdefault("_scratch_flat", {})
        key = (xp, g.dtype)
        flat = flats.get(key)
        if flat is None or type(flat) is not type(g) or flat.shape[0] < g.size:
            flat = flats[key] = xp.empty((g.size,), dtype=g.dtype)
            views.clear()  # views of the old array would keep it alive
        view = views[id(p)] = xp.reshape(flat[: g.size], g.shape)
        return view

    def _update(
        self, p: Any, g: Any, st: dict[str, Any], xp: Any, inplace: bool, tiny: float
    ) -> None:
        if inplace:
            p.data -= self.lr * g
        else:
            p.data = p.data - self.lr * g


# Elements per pass of a float16 update: the float32 temporaries stay small (and in cache),
# instead of megabyte arrays that the allocator maps fresh, page fault by page fault, each step.
_CHUNK = 1 << 16


def _sgd_half(k: Any, p: Any, g: Any, lr: float, inplace: bool) -> None:
    """``p -= lr * g`` for float16 ``p`` and ``g``, in float32, a block of rows at a time."""
    data = p.data
    if not inplace or data.ndim == 0:
        wide = k.widen(data)
        wide -= lr * k.widen(g)
        if inplace:
            data[...] = k.narrow(wide)
        else:
            p.data = k.narrow(wide)
        return
    rows = data.shape[0]
    per_row = 1
    for n in data.shape[1:]:
        per_row *= n
    block = max(1, _CHUNK // max(per_row, 1))
    for lo in range(0, rows, block):
        part = slice(lo, lo + block)
        wide = k.widen(data[part])
        wide -= lr * k.widen(g[part])
        data[part] = k.narrow(wide)


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

    def _update(
        self, p: Any, g: Any, st: dict[str, Any], xp: Any, inplace: bool, tiny: float
    ) -> None:
        lr, mu = self.lr, self.momentum
        b = _zeros_state(st, "momentum_buffer", p, xp)
        if inplace:
            b *= mu
            b += g
            p.data -= lr * b
        else:
            b = st["momentum_buffer"] = mu * b + g
            p.data = p.data - lr * b


class Nesterov(Momentum):
    """Nesterov's accelerated gradient in PyTorch's form (``SGD(momentum=m,
    nesterov=True)``): ``b = momentum * b + g; p -= lr * (g + momentum * b)``."""

    def _update(
        self, p: Any, g: Any, st: dict[str, Any], xp: Any, inplace: bool, tiny: float
    ) -> None:
        lr, mu = self.lr, self.momentum
        b = _zeros_state(st, "momentum_buffer", p, xp)
        if inplace:
            b *= mu
            b += g
            p.data -= lr * (g + mu * b)
        else:
            b = st["momentum_buffer"] = mu * b + g
            p.data = p.data - lr * (g + mu * b)


class AdaGrad(Optimizer):
    """``h += g * g; p -= lr * g / (sqrt(h) + eps)`` (PyTorch's ``Adagrad``)."""

    hyperparameters = ("lr", "eps")
    state_names = ("h",)

    def __init__(
        self, params: Iterable[Tensor] | Any, lr: float = 0.01, eps: float = 1e-10
    ) -> None:
        super().__init__(params, lr)
        self.eps = _positive("eps", eps)

    def _update(
        self, p: Any, g: Any, st: dict[str, Any], xp: Any, inplace: bool, tiny: float
    ) -> None:
        lr, eps = self.lr, self.eps
        h = _zeros_state(st, "h", p, xp)
        e = eps if eps > tiny else tiny
        if inplace:
            h += g * g
            p.data -= lr * g / (xp.sqrt(h) + e)
        else:
            h = st["h"] = h + g * g
            p.data = p.data - lr * g / (xp.sqrt(h) + e)


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

    def _update(
        self, p: Any, g: Any, st: dict[str, Any], xp: Any, inplace: bool, tiny: float
    ) -> None:
        lr, a, eps = self.lr, self.alpha, self.eps
        h = _zeros_state(st, "h", p, xp)
        e = eps if eps > tiny else tiny
        if inplace:
            h *= a
            h += (1.0 - a) * (g * g)
            p.data -= lr * g / (xp.sqrt(h) + e)
        else:
            h = st["h"] = a * h + (1.0 - a) * (g * g)
            p.data = p.data - lr * g / (xp.sqrt(h) + e)


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
        self.beta1 = _fraction("betas[0]", betas[0])
        self.beta2 = _fraction("betas[1]", betas[1])
        self.eps = _positive("eps", eps)
        self.weight_decay = _positive("weight_decay", weight_decay)

    def _update(
        self, p: Any, g: Any, st: dict[str, Any], xp: Any, inplace: bool, tiny: float
    ) -> None:
        lr, b1, b2, eps, wd = self.lr, self.beta1, self.beta2, self.eps, self.weight_decay
        m = _zeros_state(st, "m", p, xp)
        v = _zeros_state(st, "v", p, xp)
        t = st["step"] = st.get("step", 0) + 1
        step_size = lr / (1.0 - b1**t)
        inv_sqrt_bc2 = 1.0 / math.sqrt(1.0 - b2**t)
        e = eps if eps > tiny else tiny
        if wd:
            if self._decoupled:
                if inplace:
                    p.data *= 1.0 - lr * wd
                else:
                    p.data = p.data * (1.0 - lr * wd)
            else:
                g = g + wd * p.data
        if inplace:
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            p.data -= step_size * m / (xp.sqrt(v) * inv_sqrt_bc2 + e)
        else:
            m = st["m"] = b1 * m + (1.0 - b1) * g
            v = st["v"] = b2 * v + (1.0 - b2) * (g * g)
            p.data = p.data - step_size * m / (xp.sqrt(v) * inv_sqrt_bc2 + e)


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

    def _update(
        self, p: Any, g: Any, st: dict[str, Any], xp: Any, inplace: bool, tiny: float
    ) -> None:
        lr, b1, b2, eps, wd = self.lr, self.beta1, self.beta2, self.eps, self.weight_decay
        m = _zeros_state(st, "m", p, xp)
        v = _zeros_state(st, "v", p, xp)
        t = st["step"] = st.get("step", 0) + 1
        lr_t = lr * math.sqrt(1.0 - b2**t) / (1.0 - b1**t)
        e = eps if eps > tiny else tiny
        if wd:
            g = g + wd * p.data
        if inplace:
            m += (1.0 - b1) * (g - m)
            v += (1.0 - b2) * (g * g - v)
            p.data -= lr_t * m / (xp.sqrt(v) + e)
        else:
            m = st["m"] = m + (1.0 - b1) * (g - m)
            v = st["v"] = v + (1.0 - b2) * (g * g - v)
            p.data = p.data - lr_t * m / (xp.sqrt(v) + e)


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


def clip_grad_norm(params: Iterable[Tensor] | Any, max_norm: float, eps: float = 1e-6) -> Any:
    """Scale the gradients so that their global L2 norm is at most ``max_norm``.

    Everything happens on the device: the factor ``min(1, max_norm / (norm + eps))`` is a 0-d
    array, and the gradients are multiplied by it whether or not it is 1, so the norm is never
    read back to the host. The gradients are rebound (``p.grad = g * factor``), never written
    in place, because a gradient array may be shared by several parameters or be a read-only
    broadcast view. The squares are summed in at least float32, so float16 gradients do not
    overflow.

    Returns:
        The norm before clipping, as a 0-d array (float32 for float16 gradients, else the
        gradients' dtype). With no gradients at all, a 0-d zero of the active namespace.
    """
    max_norm = _positive("max_norm", max_norm, allow_zero=False)
    with_grad = [p for p in _as_params(params) if p.grad is not None]
    if not with_grad:
        return namespace().zeros(())
    xp = backend_for(with_grad[0].grad)[0]
    acc = xp.float32
    for p in with_grad:
        if p.grad.dtype == xp.float64:
            acc = xp.float64
    total = None
    for p in with_grad:
        g = p.grad
        if g.dtype != acc:
            g = xp.astype(g, acc)
        sq = xp.sum(g * g)
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
