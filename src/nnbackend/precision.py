"""Precision policies and dynamic loss scaling.

A *policy* says which dtype parameters are stored in and which dtype layers compute in:

============  ==============  ===========  ============  ==============
policy        parameters      activations  losses        loss scaling
============  ==============  ===========  ============  ==============
``float64``   float64         float64      float64       no
``float32``   float32         float32      float32       no
``float16``   float16         float16      float16       no
``mixed16``   float32         float16      float32       dynamic
============  ==============  ===========  ============  ==============

``mixed16`` follows Keras' ``mixed_float16`` policy and Chainer's ``mixed16``: parameters are
float32 *master weights*, created so by the layers; ``linear``, ``matmul``, ``embedding`` and
``layer_norm`` take float32 (or float16) inputs and weights and compute in float16; their
outputs (the activations) are float16 and each parameter's gradient comes back in the
parameter's own dtype, float32, so optimizers update float32 weights and keep float32 state.
Losses cast their float16 inputs to float32. Where the backend has no fast float16 matrix
product (NumPy on a CPU) "compute in float16" means: the products run in float32 on the
float32 weights themselves and the activations are stored in float16, so mixed16 costs about
what float32 does there; on a GPU the products run in float16.

Select a policy like any dtype setting (:mod:`nnbackend.config`):
``nb.set_default_dtype("mixed16")``, ``with nb.using(dtype="mixed16"):``,
``NNBACKEND_DTYPE=mixed16``, or per training run with
``Trainer(..., precision="mixed16")``. It must be in effect both when the model is built (the
parameters' dtype) and when it runs (the compute dtype).

Float16 gradients underflow: values below 6e-8 become zero. :class:`LossScaler` multiplies the
loss by a large factor before ``backward`` and divides the gradients by it before the
optimizer step. Dynamic scaling (the default): start at 2**15; a step whose gradients hold an
infinity or a NaN is skipped and the scale halved; after ``growth_interval`` finite steps in a
row the scale doubles. A scale that would fall below ``min_scale`` raises
:class:`LossScaleError` (the gradients are not finite even unscaled: a diverged model or a NaN
loss), instead of skipping every step forever.

>>> import nnbackend as nb
>>> from nnbackend import nn, optim, precision
>>> nb.random.seed(0)
>>> with nb.using(dtype="mixed16"):
...     model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
...     opt = optim.SGD(model.parameters(), lr=0.1)
...     scaler = precision.LossScaler()
...     x, t = nb.namespace().ones((5, 4)), nb.namespace().asarray([0, 1, 2, 0, 1])
...     loss = nn.SoftmaxCrossEntropy()(model(x), t)
...     scaler.scale_loss(loss).backward()
...     stepped = scaler.step(opt)
>>> str(model[0].weight.dtype), str(model[0].weight.grad.dtype), str(loss.dtype), stepped
('float32', 'float32', 'float32', True)
>>> with nb.using(dtype="mixed16"):
...     str(model(x).dtype)  # the activations
'float16'
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nnbackend import config
from nnbackend.autograd import trace
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import ArgumentError, CheckpointError, NNBackendError
from nnbackend.namespace import backend_for, ops_for

__all__ = [
    "POLICIES",
    "LossScaleError",
    "LossScaler",
    "Policy",
    "cast_parameters",
    "policy",
]

POLICIES = config.POLICIES


class LossScaleError(NNBackendError, FloatingPointError):
    """The loss scale would fall below its minimum: the gradients are not finite even without
    scaling."""


@dataclass(frozen=True)
class Policy:
    """A precision policy: the dtype of parameters and new arrays, the dtype layers compute
    in, the dtype of losses, and whether training scales the loss.

    Build one by name: ``Policy.named("mixed16")`` or :func:`policy`. A Policy is accepted
    wherever a dtype setting is (``nb.using(dtype=policy)``).
    """

    name: str
    param_dtype: str
    compute_dtype: str
    loss_dtype: str
    loss_scaling: bool

    @classmethod
    def named(cls, name: Any) -> Policy:
        """The policy called ``name`` ("float64", "float32", "float16", "mixed16", or a dtype
        object); unknown names raise :class:`~nnbackend.errors.DtypeError` listing them."""
        canonical = config.normalize_policy(name)
        param = config.array_dtype(canonical)
        compute = config.compute_dtype(canonical)
        mixed = param != compute
        return cls(
            name=canonical,
            param_dtype=param,
            compute_dtype=compute,
            loss_dtype=param if mixed else compute,
            loss_scaling=mixed,
        )

    @property
    def mixed(self) -> bool:
        """Whether parameters and computation use different dtypes."""
        return self.param_dtype != self.compute_dtype

    @property
    def policy_name(self) -> str:
        """The name the settings store (what ``NNBACKEND_DTYPE`` would say)."""
        return self.name

    def __str__(self) -> str:
        return self.name


def policy(name: Any = None) -> Policy:
    """The policy called ``name``, or the active one (explicit argument > ``using`` >
    ``set_default_dtype`` > ``NNBACKEND_DTYPE`` > float64).

    >>> import nnbackend as nb
    >>> with nb.using(dtype="mixed16"):
    ...     p = nb.precision.policy()
    >>> p.param_dtype, p.compute_dtype, p.loss_scaling
    ('float32', 'float16', True)
    """
    return Policy.named(config.get_policy() if name is None else name)


def _params(target: Any) -> list[Tensor]:
    """The parameters of an optimizer, a module, or an iterable of Tensors."""
    params = getattr(target, "params", None)
    if params is None and callable(getattr(target, "parameters", None)):
        params = target.parameters()
    if params is None:
        params = target
    return [p for p in params if isinstance(p, Tensor)]


class LossScaler:
    """Dynamic (or static) loss scaling for float16 training.

    Use it around ``backward`` and the optimizer step::

        scaler = LossScaler()
        loss = loss_fn(model(x), t)
        scaler.scale_loss(loss).backward()
        scaler.step(optimizer)        # unscales, checks, steps or skips, adapts the scale

    (``scaler.unscale(optimizer)`` first when you clip gradients between the two.)
    :class:`~nnbackend.Trainer` does this itself under a mixed policy.

    Args:
        init_scale: the first scale (2**15).
        growth_factor: the scale is multiplied by this after ``growth_interval`` finite steps
            in a row.
        backoff_factor: and by this after a step with an infinite or NaN gradient, which is
            skipped.
        growth_interval: finite steps in a row before the scale grows (2000).
        min_scale: a scale that would fall below this raises :class:`LossScaleError`.
        dynamic: False keeps the scale fixed (a non-finite step is still skipped, and counted).
        check: where the finiteness check is decided: ``"host"`` reads one flag per step
            back to the host (free where arrays live in host memory: NumPy, PyTorch on a CPU);
            ``"device"`` never reads anything back: the skip is applied on the device by
            keeping the old parameters and optimizer state where the gradients were not finite,
            and the scale and counters stay device arrays until read; ``"auto"`` (default)
            picks ``"host"`` for host-resident arrays and ``"device"`` otherwise.

    Attributes:
        steps: steps attempted (calls of :meth:`step`).
        skipped: steps skipped because a gradient was not finite.
        growths: times the scale grew.
        good_steps: finite steps since the scale last changed.

    In device mode the optimizer still counts a skipped step (``optimizer.steps``, Adam's
    per-parameter step count, which then slightly shifts its bias correction), because
    counting it conditionally would need the flag on the host.
    """

    def __init__(
        self,
        init_scale: float = 2.0**15,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        min_scale: float = 1.0,
        *,
        dynamic: bool = True,
        check: str = "auto",
    ) -> None:
        if not (init_scale > 0.0 and math.isfinite(init_scale)):
            raise ArgumentError(f"init_scale must be a positive finite number, got {init_scale}")
        if not growth_factor > 1.0:
            raise ArgumentError(f"growth_factor must be > 1, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ArgumentError(f"backoff_factor must be in (0, 1), got {backoff_factor}")
        if isinstance(growth_interval, bool) or not isinstance(growth_interval, int):
            raise ArgumentError(f"growth_interval must be an int >= 1, got {growth_interval!r}")
        if growth_interval < 1:
            raise ArgumentError(f"growth_interval must be an int >= 1, got {growth_interval}")
        if not min_scale > 0.0:
            raise ArgumentError(f"min_scale must be > 0, got {min_scale}")
        if init_scale < min_scale:
            raise ArgumentError(f"init_scale {init_scale} is below min_scale {min_scale}")
        if check not in ("auto", "host", "device"):
            raise ArgumentError(f"check must be 'auto', 'host' or 'device', got {check!r}")
        self.growth_factor = float(growth_factor)
        self.backoff_factor = float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self.min_scale = float(min_scale)
        self.dynamic = bool(dynamic)
        self.check = check
        self._scale: Any = float(init_scale)
        self._good: Any = 0
        self._skipped: Any = 0
        self._growths: Any = 0
        self.steps = 0
        # The largest scale the losses seen can carry (scale_loss notes the loss's dtype).
        self._loss_dtype: Any = None
        self._ceiling = _FLOAT32_MAX
        # id(optimizer) -> (optimizer, its device flag or host bool) for each optimizer unscaled
        # and not stepped yet: with two optimizers (unscale both to clip, then step both), one
        # remembered optimizer made each step unscale its gradients a second time.
        self._unscaled: dict[int, tuple[Any, Any]] = {}

    # -- reading -----------------------------------------------------------------------------
    @property
    def scale(self) -> float:
        """The current scale (reading it waits for the device in device mode)."""
        return float(self._scale)

    @property
    def skipped(self) -> int:
        """Steps skipped because a gradient was not finite."""
        return int(self._skipped)

    @property
    def growths(self) -> int:
        """Times the scale grew."""
        return int(self._growths)

    @property
    def good_steps(self) -> int:
        """Finite steps since the scale last changed."""
        return int(self._good)

    def check_scale(self) -> None:
        """Raise :class:`LossScaleError` if the scale fell below ``min_scale`` (device mode
        finds out only when it reads the scale; the Trainer calls this at each report)."""
        scale = self.scale
        if scale < self.min_scale:
            raise LossScaleError(self._collapse_message(scale))

    def _collapse_message(self, scale: float) -> str:
        return (
            f"loss scale would fall to {scale:g}, below min_scale={self.min_scale:g}, after "
            f"{self.skipped} skipped steps of {self.steps}: the gradients are infinite or NaN "
            "even unscaled. The model has diverged or the loss itself is not finite: lower the "
            "learning rate, check the inputs, or run the step inside "
            "nnbackend.autograd.detect_anomaly() to find the op that produced it"
        )

    # -- the step ----------------------------------------------------------------------------
    def scale_loss(self, loss: Any) -> Any:
        """``loss * scale``, to call ``backward`` on.

        The scale never grows beyond the largest finite value of the loss's dtype: the
        gradient that ``backward`` starts from is the scale itself, in that dtype (a float16
        loss under a scale of 2**16 would start it at infinity, and skip a step each time the
        scale grew)."""
        scale = self._scale
        data = loss.data if isinstance(loss, Tensor) else loss
        dtype = getattr(data, "dtype", None)
        if dtype is not self._loss_dtype:
            self._note_loss_dtype(data, dtype)
        if type(scale) is float:
            return loss * scale
        xp = backend_for(data)[0]
        return loss * (scale if scale.dtype == data.dtype else xp.astype(scale, data.dtype))

    def _note_loss_dtype(self, data: Any, dtype: Any) -> None:
        self._loss_dtype = dtype
        ceiling = math.inf
        if dtype is not None and type(data) not in (float, int):
            try:
                ceiling = float(backend_for(data)[0].finfo(dtype).max)
            except (TypeError, ValueError):  # not a floating dtype: nothing to bound
                ceiling = math.inf
        self._ceiling = min(ceiling, _FLOAT32_MAX)

    def _device_mode(self, params: list[Tensor]) -> bool:
        if self.check != "auto":
            return self.check == "device"
        for p in params:
            if p.grad is not None:
                return not bool(backend_for(p.grad)[1].on_host(p.grad))
        return False

    def unscale(self, optimizer: Any) -> None:
        """Divide the gradients of ``optimizer``'s parameters by the scale (once per step;
        :meth:`step` calls it when you did not) and note whether they are all finite."""
        params = _params(optimizer)
        if id(optimizer) in self._unscaled:
            return
        with_grad = [p for p in params if p.grad is not None]
        if not with_grad:
            self._unscaled[id(optimizer)] = (optimizer, True)
            return
        xp = backend_for(with_grad[0].grad)[0]
        # One sum per gradient, added up in float32 (float64 if a gradient is): a NaN or an
        # infinity anywhere makes the total non-finite; finite float32 gradients never
        # overflow it in practice (3e38).
        wide = xp.float64 if any(p.grad.dtype == xp.float64 for p in with_grad) else xp.float32
        total: Any = 0.0
        for p in with_grad:
            g = p.grad
            s = xp.sum(_accumulating(xp, g))
            total = total + (s if s.dtype == wide else xp.astype(s, wide))
        finite = xp.isfinite(total)
        if self._device_mode(with_grad):
            self._unscaled[id(optimizer)] = (optimizer, finite)
            inv = xp.where(finite, 1.0 / _to_array(xp, self._scale, total.dtype), 0.0)
            for p in with_grad:
                g = xp.where(finite, p.grad, 0.0)
                # The product in the accumulating dtype, rounded once, as on the host: 1/scale
                # in float16 is rounded, subnormal from 2**15 and 0 from 2**25 (zero gradients).
                wide = _accumulating(xp, g)
                product = wide * xp.astype(inv, wide.dtype)
                p.grad = product if wide is g else ops_for(xp, g).convert(product, g.dtype)
            return
        ok = bool(finite)
        self._unscaled[id(optimizer)] = (optimizer, ok)
        if ok:
            inv = 1.0 / float(self._scale)
            for p in with_grad:
                p.grad = _times(xp, p.grad, inv)

    def step(self, optimizer: Any) -> bool:
        """Unscale the gradients (unless :meth:`unscale` did), then run ``optimizer.step()``
        if they are all finite, else skip it; then adapt the scale. Returns whether the step
        was taken (in device mode: True; read :attr:`skipped` to know)."""
        trace.refuse(
            "LossScaler.step skips the update when a gradient is not finite, a decision "
            "taken from the gradients' values every step; run this step eagerly"
        )
        self.unscale(optimizer)
        flag = self._unscaled.pop(id(optimizer))[1]
        self.steps += 1
        if type(flag) is bool:
            if flag:
                optimizer.step()
            self._update_host(flag)
            return flag
        self._step_on_device(optimizer, flag)
        return True

    def _update_host(self, finite: bool) -> None:
        scale = float(self._scale)
        if finite:
            self._good = int(self._good) + 1
            if self.dynamic and self._good >= self.growth_interval:
                grown = scale * self.growth_factor
                if grown <= self._ceiling:
                    self._scale = grown
                    self._growths = int(self._growths) + 1
                self._good = 0
            return
        self._skipped = int(self._skipped) + 1
        self._good = 0
        if self.dynamic:
            lower = scale * self.backoff_factor
            if lower < self.min_scale:
                raise LossScaleError(self._collapse_message(lower))
            self._scale = lower

    def _step_on_device(self, optimizer: Any, finite: Any) -> None:
        params = _params(optimizer)
        xp = backend_for(finite)[0]
        # Keep what the step may change, and put it back where the gradients were not finite.
        saved = [(p, xp.asarray(p.data, copy=True)) for p in params if p.grad is not None]
        states = getattr(optimizer, "state", None)
        saved_state: list[tuple[dict[str, Any], str, Any]] = []
        if isinstance(states, list):
            for st in states:
                if isinstance(st, dict):
                    for key, value in st.items():
                        if hasattr(value, "shape") and hasattr(value, "dtype"):
                            saved_state.append((st, key, xp.asarray(value, copy=True)))
        optimizer.step()
        for p, old in saved:
            p.data = xp.where(finite, p.data, old)
        for st, key, old in saved_state:
            st[key] = xp.where(finite, st[key], old)
        scale = _to_array(xp, self._scale, xp.float32)
        good = _to_array(xp, self._good, xp.int64)
        good = xp.where(finite, good + 1, 0)
        if self.dynamic:
            grow = good >= self.growth_interval
            # Grown only where the product stays finite in float32: only a scale that fits
            # is multiplied (an overflow would warn on NumPy: a RuntimeWarning for a step
            # that went right).
            fits = scale <= self._ceiling / self.growth_factor
            grown = xp.where(fits, scale, xp.zeros_like(scale)) * self.growth_factor
            fits = fits & xp.isfinite(grown)
            grown = xp.where(fits, grown, scale)
            self._growths = _to_array(xp, self._growths, xp.int64) + xp.astype(
                grow & fits, xp.int64
            )
            scale = xp.where(finite, xp.where(grow, grown, scale), scale * self.backoff_factor)
            good = xp.where(grow, 0, good)
        self._scale, self._good = scale, good
        self._skipped = _to_array(xp, self._skipped, xp.int64) + xp.astype(~finite, xp.int64)

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"scale", "good_steps", "skipped", "growths", "steps"}`` as Python numbers (reads
        the device in device mode)."""
        return {
            "scale": self.scale,
            "good_steps": self.good_steps,
            "skipped": self.skipped,
            "growths": self.growths,
            "steps": self.steps,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; validated before anything changes."""
        keys = {"scale", "good_steps", "skipped", "growths", "steps"}
        if not isinstance(state, Mapping) or set(state) != keys:
            got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise CheckpointError(f"LossScaler state needs keys {sorted(keys)}, got {got}")
        raw = state["scale"]
        # A real number only: float() takes the string "2.0" and raises TypeError, ValueError
        # or OverflowError (an int beyond floats) for the rest, none of them a CheckpointError.
        scale = math.nan
        if type(raw) is not bool and isinstance(raw, numbers.Real):
            try:
                scale = float(raw)
            except OverflowError:
                scale = math.inf
        if not (scale > 0.0 and math.isfinite(scale)):
            raise CheckpointError(f"LossScaler state has a bad scale {raw!r:.80}")
        counts = {k: state[k] for k in keys - {"scale"}}
        for key, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CheckpointError(
                    f"LossScaler state {key!r} must be an int >= 0, got {value!r}"
                )
        self._scale = scale
        self._good = counts["good_steps"]
        self._skipped = counts["skipped"]
        self._growths = counts["growths"]
        self.steps = counts["steps"]

    def __repr__(self) -> str:
        kind = "dynamic" if self.dynamic else "static"
        return f"LossScaler({kind}, scale={self.scale:g}, skipped={self.skipped}/{self.steps})"


def _accumulating(xp: Any, g: Any) -> Any:
    """``g`` in the dtype its sums are accumulated in (float32 for float16)."""
    ops = ops_for(xp, g)
    acc = ops.accumulate_dtype(g.dtype)
    return g if acc == g.dtype else ops.convert(g, acc)


_FLOAT32_MAX = 3.4028234663852886e38  # the device-mode scale is a float32


def _to_array(xp: Any, value: Any, dtype: Any) -> Any:
    if hasattr(value, "dtype"):
        return value if value.dtype == dtype else xp.astype(value, dtype)
    return xp.asarray(value, dtype=dtype)


def _times(xp: Any, g: Any, factor: float) -> Any:
    """``g * factor`` as a new array, in float32 for float16 gradients (float16 products
    underflow, and run in software on NumPy)."""
    ops = ops_for(xp, g)
    wide = _accumulating(xp, g)
    return g * factor if wide is g else ops.convert(wide * factor, g.dtype)


def cast_parameters(params: Iterable[Tensor] | Any, dtype: Any) -> None:
    """Convert the parameters (of a module, or an iterable) to ``dtype`` in place of their
    ``.data``; gradients are dropped. For turning a model built in one policy into another,
    before its optimizer is made."""
    target = config.normalize_dtype(dtype)
    for p in _params(params):
        xp = backend_for(p.data)[0]
        p.data = xp.astype(p.data, getattr(xp, target))
        p.grad = None
