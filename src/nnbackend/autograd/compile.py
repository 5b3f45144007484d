"""A compiled training step: record one step's node calls once, replay them on raw arrays.

``step = nb.compile_step(fn)`` wraps a function that runs one training step (forward, loss,
``backward()``, an optimizer ``step()``) and returns its loss. Calling ``step(x, t)`` records
the step the first time it sees a *signature*, and from then on replays the recording: each
node's ``forward`` and ``backward`` on raw arrays, in the recorded order, with the recorded
gradient accumulation, then the optimizer's ``step()``; no Tensors, no graph, no topological
sort, no per-op checks.

**The tracing contract** (that of ``torch.jit.trace`` and ``jax.jit``):

- A recording holds what the step *did*, not the Python that decided it: an ``if`` on an array
  value, a loop whose length depends on data, a NumPy call outside the engine's Functions,
  are frozen as they ran when recorded.
- Replayed every time, so never frozen: every Function's ``forward`` (its
  ``replay_forward`` where it defines one: ``forward`` less the decisions that depend only
  on the arrays' backend, shapes and dtypes, which a replay keeps) and ``backward``
  (dropout masks are drawn in ``forward``: a fresh mask per replay from the same generator
  stream as eager), the parameters' current arrays (``p.data``), the optimizer's ``step()``
  and ``clip_grad_norm`` (they run as written: learning rates changed by a schedule, Adam's
  per-parameter step counts, optimizer state loaded from a checkpoint are read each time).
- Gradients accumulate as eager ones: a replayed backward adds to the ``.grad`` a call
  finds, or stores where it is ``None``; where the step resets gradients itself
  (``zero_grad()``, seen at once; ``p.grad = None``, seen from its second recording) it
  stores; a ``zero_grad()`` of a gradient the step does not write (a parameter of
  another task's head), or after the step wrote it, is replayed where it ran. Nodes that
  update state besides their outputs (BatchNorm's running statistics) do so in
  ``forward``, so on every replay.
- The signature: the arguments' types, shapes and dtypes (Python scalars by value), which
  arguments are one array, the settings (``nb.set_*``, the innermost ``using`` block),
  whether gradients are enabled and the ``key()`` given to :func:`compile_step`. A new
  signature records again; a small cache keeps the last :attr:`CompiledStep.cache_size`
  recordings (the last, smaller batch of an epoch keeps its own). Arguments are backend
  arrays, Tensors and Python scalars (else :class:`~nnbackend.errors.ArgumentError`); a
  Tensor argument that requires a gradient runs the step eagerly with a
  :class:`~nnbackend.errors.CompileWarning` (a replay could not set its ``.grad``).
- A recording is dropped, and the step recorded again, when a parameter's array was rebound
  outside the step (``load_state_dict``, ``to_device``, ``p.data = ...``) or its
  ``requires_grad`` changed, and when the step would now find another object where it found
  one the recording holds: a Parameter, buffer or submodule replaced in a module
  (``model.fc.weight = nn.Parameter(...)``, ``model.fc = nn.Linear(...)``), a module's
  ``training`` flag changed (``model.eval()``), or a module, parameter or optimizer rebound
  in a global, closure variable, bound ``self`` or small dict the step reads
  (``opt = optim.Adam(...)``). Those places are found once per recording by following the
  step function (its globals, closure, ``self``, the plain objects and dicts they hold, two
  levels down, and the modules' registered members), and checked on every call by one
  identity test each; an object the step reaches otherwise (a list index, a deeper
  attribute chain) needs ``step.reset()`` or a ``key`` when replaced.
- Checked: with ``check=True`` (the default) the step is recorded on the first *two* calls of
  a signature and replayed from the third, when both recordings agree: the same nodes wired
  the same way, the same constants (arrays the step used that are neither inputs, parameters
  nor results of recorded nodes), the same node settings. Where they differ something
  data-dependent was frozen, and that signature runs eagerly, with a
  :class:`~nnbackend.errors.CompileWarning`. ``check=False`` replays from the second call
  (the third where the first recording could not tell whether the step resets gradients).
- Refused with :class:`~nnbackend.errors.CompileError` while recording: parameters changed
  outside an optimizer's ``step()`` (a hand-written update), gradients changed between
  ``backward()`` and ``step()`` outside ``clip_grad_norm``, a loss scaler's ``step`` (it skips
  steps depending on the gradients' values), ``backward(create_graph=True)``, a Function with
  only a ``graph_backward``.

On a backend with a tracing compiler (jax) the accepted recording is compiled whole
(``jax.jit``): parameters, optimizer state and step counts, learning rates, dropout masks
(drawn outside the trace) and the arguments go in on every call; see docs/compile.md.

Replays do not set intermediate Tensors' ``.grad`` (``retain_grad``), and each node keeps the
arrays its ``backward`` needs until the next replay (an eager graph frees them when the loss
goes). The returned Tensors are outside any graph.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import re
import types
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any

from nnbackend import config
from nnbackend.autograd import trace
from nnbackend.autograd.function import Function, add_arrays, as_array, as_arrays
from nnbackend.autograd.mode import is_grad_enabled
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import (
    ArgumentError,
    BackendMismatchError,
    CompileError,
    CompileWarning,
    GradientError,
)
from nnbackend.namespace import backend_for, ops_for

__all__ = ["CompiledStep", "compile_step"]

_SCALARS = (int, float, bool, complex, str, type(None))
_settings_version = config.settings_version
_current_overrides = config.current_overrides
_MISSING = object()  # also a hot replay's answer to a call it does not fit


def compile_step(
    fn: Callable[..., Any],
    *,
    check: bool = True,
    key: Callable[[], Hashable] | None = None,
    cache_size: int = 8,
    jit: bool = True,
) -> CompiledStep:
    """Compile ``fn``, a function running one training step, into a :class:`CompiledStep`:
    recorded on its first calls, replayed on raw arrays afterwards (see the module's tracing
    contract).

    Args:
        fn: called with the step's arguments (backend arrays, Tensors or Python scalars);
            runs forward, loss, ``backward()`` and an optimizer ``step()``; returns a Tensor
            (the loss), a tuple of Tensors, or ``None``.
        check: record twice and replay only when both recordings agree (a data-dependent
            value frozen in the first is then caught); ``False`` replays from the second call
            (the third where the first could not tell whether the step resets gradients).
        key: returns extra Python state the step depends on (e.g. ``lambda: model.training``):
            part of the signature.
        cache_size: how many signatures' recordings to keep.
        jit: on a backend with a tracing compiler (jax), compile the whole recorded step
            with it (``jax.jit``); ``False`` replays the nodes eagerly there too.

    >>> import nnbackend as nb
    >>> from nnbackend import nn, optim
    >>> model = nn.Linear(2, 1)
    >>> opt = optim.SGD(model.parameters(), lr=0.1)
    >>> def train(x, t):
    ...     opt.zero_grad()
    ...     loss = nn.MSELoss()(model(x), t)
    ...     loss.backward()
    ...     opt.step()
    ...     return loss
    >>> step = nb.compile_step(train)
    >>> xp = nb.namespace()
    >>> losses = [float(step(xp.ones((4, 2)), xp.zeros((4, 1))).item()) for _ in range(5)]
    >>> losses[-1] < losses[0]
    True
    """
    if not callable(fn):
        raise ArgumentError(
            f"compile_step needs a callable running one training step, got "
            f"{type(fn).__name__} {fn!r}"
        )
    if key is not None and not callable(key):
        raise ArgumentError(f"compile_step: key must be a callable or None, got {key!r}")
    if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
        raise ArgumentError(f"compile_step: cache_size must be an int >= 1, got {cache_size!r}")
    return CompiledStep(fn, check=check, key=key, cache_size=cache_size, jit=jit)


class CompiledStep:
    """A training step compiled by :func:`compile_step`; call it like the function it wraps.

    Attributes:
        fn: the wrapped function.
        records: how many times a step was recorded (eager calls with the recorder on).
        replays: how many calls were replayed.
        eager_signatures: signatures that run eagerly (their recordings disagreed), with why.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        check: bool = True,
        key: Callable[[], Hashable] | None = None,
        cache_size: int = 8,
        jit: bool = True,
    ) -> None:
        self.fn = fn
        self.check = bool(check)
        self.key = key
        self.cache_size = cache_size
        self.jit = bool(jit)
        self.records = 0
        self.replays = 0
        self.eager_signatures: dict[Hashable, str] = {}
        self._cache: OrderedDict[Hashable, _Recording] = OrderedDict()
        self._pending: dict[Hashable, _Recording] = {}
        # The last replayed recording's guarded replay (_Recording.fast): the signature and
        # validity checks written out for that one signature, and the replay inline; it
        # answers _MISSING for any other call, which takes the general path below.
        self._hot: Callable[..., Any] | None = None
        # The recording the last calls ran (replays of one signature in a row, hot or not),
        # and its parameters' arrays when the first of them ended: see _carry.
        self._prev: _Recording | None = None
        self._prev_snap: list[Any] = []
        key_ = id(self)

        def forget(_r: Any, key_: int = key_) -> None:
            _STEPS.pop(key_, None)

        _STEPS[key_] = weakref.ref(self, forget)

    def reset(self) -> None:
        """Forget every recording (the next call records again)."""
        self._hot = None
        self._prev = None
        self._cache.clear()
        self._pending.clear()
        self.eager_signatures.clear()

    def signature(self, *args: Any) -> Hashable:
        """The signature a call with ``args`` is cached under."""
        return self._signature(args)[0]

    def _signature(self, args: tuple[Any, ...]) -> tuple[Hashable, list[Any]]:
        """The signature of ``args`` and their raw values (a Tensor's array), in one pass."""
        sig: list[Any] = []
        raw: list[Any] = []
        # Which arguments are one array (step(x, x)): a recording names an array by the
        # first argument that held it, so calls with another pattern need their own.
        same: list[int] = []
        for i, a in enumerate(args):
            tensor = isinstance(a, Tensor)
            d = a.data if tensor else a
            raw.append(d)
            if type(d) in _SCALARS:
                sig.append((type(d), d))
                continue
            shape, dtype = getattr(d, "shape", None), getattr(d, "dtype", None)
            if shape is None or dtype is None:
                raise ArgumentError(
                    f"compile_step: argument {i} is a {type(d).__name__}; a compiled step takes "
                    "backend arrays, Tensors and Python scalars (convert it with xp.asarray)"
                )
            # A Tensor that requires a gradient gets one from backward: "grad" (such calls
            # run eagerly, see __call__).
            kind = ("grad" if a.requires_grad else True) if tensor else False
            sig.append((type(d), tuple(shape), dtype, kind))
            same.append(next(j for j in range(i + 1) if raw[j] is d))
        sig.append(tuple(same))
        sig.append(_settings_version())
        sig.append(_current_overrides())
        sig.append(is_grad_enabled())
        if self.key is not None:
            sig.append(self.key())
        return tuple(sig), raw

    def __call__(self, *args: Any) -> Any:
        hot = self._hot
        if hot is not None:
            out = hot(*args)
            if out is not _MISSING:
                self.replays += 1
                return out
        sig, raw = self._signature(args)
        try:
            rec = self._cache.get(sig)
        except TypeError:  # (arguments and settings hash; only key() can give a list)
            given = sig[-1]  # type: ignore[index]
            raise ArgumentError(
                f"compile_step: key() returned {given!r}, which is not hashable; return a "
                "hashable value, e.g. a tuple instead of a list"
            ) from None
        switch = rec is None or rec is not self._prev or not rec.valid()
        if switch:
            # Another signature (or a recording): what the compiled steps did to the
            # parameters since they last switched is passed on to the other recordings first
            # (which may make this signature's recording valid again), and what this call
            # does, after it.
            steps = _live_steps()
            for step in steps:
                step._catch_up()
            before = _arrays()
            if rec is not None and not rec.valid():
                del self._cache[sig]
                self._pending.pop(sig, None)
                rec = None
        if rec is not None:
            self.replays += 1
            self._hot = rec.fast(sig, self.key)
            out = rec.run(*raw)
            if not switch:  # the same signature again
                return out
            ran: _Recording | None = rec
        else:
            out, ran = self._record(sig, args)
        _carry(before, ran)
        self._prev = ran
        for step in steps:  # (what each step's replays do from now on: see _catch_up)
            if step._prev is not None:
                step._prev_snap = list(step._prev._left)
        return out

    def _catch_up(self) -> None:
        """Pass on what the replays of this step's last signature did since the first of them
        ended (hot replays are not followed one by one; see _carry)."""
        prev = self._prev
        if prev is None:
            return
        moved: dict[int, tuple[Tensor, Any]] = {}
        for t, was, left in zip(prev.touched, self._prev_snap, prev._left, strict=True):
            if t.data is left and was is not left:  # (left by a replay, untouched since)
                moved[id(t)] = (t, was)
        if moved:
            _carry(moved, prev)

    def _record(self, sig: Hashable, args: tuple[Any, ...]) -> tuple[Any, _Recording | None]:
        """A call no cached recording replays: the call's result, and the recording it made
        (None: it ran eagerly)."""
        self._hot = None
        if sig in self.eager_signatures:
            return self.fn(*args), None
        if any(isinstance(a, Tensor) and a.requires_grad for a in args):
            # A replay gets the arguments' arrays, not their Tensors: it could not set an
            # argument's .grad. Such calls run as they are.
            reason = "an argument is a Tensor that requires a gradient"
            self.eager_signatures[sig] = reason
            warnings.warn(
                f"compile_step: this step runs eagerly for arguments {_describe(args)}: {reason}, "
                "which a replay cannot set; pass its array (or a Tensor that needs no "
                "gradient) to compile the step",
                CompileWarning,
                stacklevel=3,
            )
            return self.fn(*args), None
        # Parameters a recording of this step already knows (from this signature's first
        # recording, or the last cached one): their gradients as the call starts tell the
        # recorder whether the step resets them itself (see _Recorder._grad_line).
        known = self._pending.get(sig) or next(reversed(self._cache.values()), None)
        new, result = _record(self.fn, args, known.leaves if known is not None else ())
        self.records += 1
        first = self._pending.pop(sig, None)
        if first is not None and not first.holds_current():
            # A parameter, submodule or optimizer was replaced since the first recording:
            # it recorded another step; this one is the first of the new objects.
            first = None
        if first is None and (self.check or not new.knows_resets()):
            # Record again on the next call: to compare (check), or, unchecked, to learn
            # from a second look whether the step resets the gradients itself.
            self._pending[sig] = new
            if len(self._pending) > self.cache_size:  # (a new float argument each call)
                del self._pending[next(iter(self._pending))]
            return result, new
        if not self.check:
            if first is not None and first.canonical == new.canonical:
                new.merge(first)
        else:
            assert first is not None
            why = first.differs(new)
            if why is None:
                new.merge(first)
            else:
                self.eager_signatures[sig] = why
                warnings.warn(
                    f"compile_step: this step runs eagerly for arguments {_describe(args)}: "
                    f"two recordings differ ({why}); something the step computed from array "
                    "values would be frozen by a replay",
                    CompileWarning,
                    stacklevel=3,
                )
                return result, new
        cached: Any = new
        if self.jit and new.leaves:
            cached = _JitRecording.make(new) or new
        self._cache[sig] = cached
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return result, cached


# -- which parameters' arrays each recording may take as its own ----------------------------
# A recording replays only while its parameters hold the arrays its last run left (valid():
# nothing rebound them outside the step). Where updates rebind the arrays (jax: immutable
# arrays), a call of one signature would so invalidate the recordings of every other, and of
# every other compiled step training the same parameters: a smaller last batch per epoch
# recorded (and traced, and compiled) both signatures again every epoch, and two compiled
# steps sharing a model (a GAN, two tasks) never replayed. What a compiled step itself does
# to a parameter is no change "outside the step": it is passed on to every recording that
# held the array the call started from, when a call switches signature or step (nothing on
# the hot path, which follows one recording).

#: Every live CompiledStep, by id (weak: a step nobody holds goes).
_STEPS: dict[int, weakref.ref[CompiledStep]] = {}


def _live_steps() -> list[CompiledStep]:
    return [s for s in (r() for r in list(_STEPS.values())) if s is not None]


def _lists() -> Iterator[tuple[Any, list[Tensor], list[Any]]]:
    """Every cached recording with each of its (Tensors, the arrays its last run left)."""
    for step in _live_steps():
        for rec in list(step._cache.values()):
            base = rec.base
            yield rec, base.leaves, base._last
            if rec.touched is not base.leaves:  # (a jitted recording's)
                yield rec, rec.touched, rec._left


def _arrays() -> dict[int, tuple[Tensor, Any]]:
    """The cached recordings' Tensors with their arrays now."""
    return {id(t): (t, t.data) for _rec, tensors, _last in _lists() for t in tensors}


def _carry(before: dict[int, tuple[Tensor, Any]], ran: Any) -> None:
    """Every cached recording (but ``ran``, the one that ran) that had a Tensor's array
    ``before`` a call of a compiled step takes the array the call left."""
    if not before:
        return
    ran = getattr(ran, "base", None)
    for rec, tensors, last in _lists():
        if rec.base is ran:
            continue
        for i, t in enumerate(tensors):
            entry = before.get(id(t))
            if entry is not None and last[i] is entry[1]:
                last[i] = t.data


def _describe(args: Any) -> str:
    parts = []
    for a in args:
        d = a.data if isinstance(a, Tensor) else a
        if type(d) in _SCALARS:
            parts.append(repr(d))
        else:
            parts.append(f"{tuple(d.shape)} {d.dtype}")
    return "(" + ", ".join(parts) + ")"


def _equal_arrays(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if type(a) is not type(b) or tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype:
        return False
    xp = backend_for(a)[0]
    # NaN equals NaN here: a parameter a diverging step made NaN is unchanged, not "changed
    # outside the optimizer" (a != a is all False for integers and booleans)
    return bool(xp.all((a == b) | ((a != a) & (b != b))))


def _equal_values(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if type(a) in _SCALARS or type(b) in _SCALARS:
        return type(a) is type(b) and (a == b or (a != a and b != b))
    if hasattr(a, "shape") and hasattr(a, "dtype") and hasattr(b, "shape"):
        try:
            backend_for(a)
        except Exception:
            return False
        return _equal_arrays(a, b)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_equal_values(x, y) for x, y in zip(a, b, strict=True))
    try:
        return bool(a == b)
    except Exception:
        return False


#: Arrays from this many bytes up that a node kept after its step are let go by the replay.
_BIG_BYTES = 64 * 1024


def _holds_big_array(value: Any) -> bool:
    """Whether ``value`` is, or is a tuple/list holding, an array of :data:`_BIG_BYTES`+."""
    if isinstance(value, tuple | list):
        return any(_holds_big_array(v) for v in value)
    nbytes = getattr(value, "nbytes", None)
    return isinstance(nbytes, int) and nbytes >= _BIG_BYTES


class _Recording:
    """One signature's replay: generated Python code over the recorded nodes."""

    def __init__(self, rec: _Recorder) -> None:
        # The code as recorded, every leaf's first gradient write in its general form (what
        # differs() compares), and those writes: (line, the form for a step that resets the
        # leaf's gradient itself, leaf index, whether this recording saw it do so).
        self.canonical = "\n".join(rec.lines)
        self.base = self  # (a _JitRecording's is the recording it compiles)
        self._lines = rec.lines
        self._writes = rec.grad_writes
        self.returned = rec.returned
        self.nodes = rec.nodes
        self.pre = rec.pre
        self.leaves = rec.leaves
        self.consts = rec.consts
        self.literals = rec.literals
        self.calls = rec.calls
        self.reset_only = rec.reset_only
        self.requires = [t.requires_grad for t in rec.leaves]
        self._last = [t.data for t in rec.leaves]
        # The Tensors a run may rebind the arrays of, and the arrays its last run left
        # (CompiledStep._catch_up): the leaves (a jitted recording adds some).
        self.touched, self._left = self.leaves, self._last
        self.draws = rec.draws
        self.backend = rec.backend
        self.scope = rec.scope
        self._build()
        scope: dict[str, Any] = dict(rec.scope)
        # The checks of valid() and the arrays run() notes, written out for these leaves:
        # one expression each instead of a loop over three lists (the tiny step's replay
        # pays them every call).
        n = len(self.leaves)
        for i, r in enumerate(self.requires):
            scope[f"_R{i}"] = r
        # Where the step finds what the recording holds, still holding it (see _holders).
        self.holders = rec.holders
        held = []
        for j, (holder, key, value) in enumerate(self.holders):
            scope[f"_H{j}"], scope[f"_HV{j}"] = holder, value
            if key is None:  # a closure cell
                held.append(f"_H{j}.cell_contents is _HV{j}")
            else:
                scope[f"_HK{j}"] = key
                held.append(f"_H{j}.get(_HK{j}, _NOTHING) is _HV{j}")
        scope["_NOTHING"] = _MISSING
        held_checks = " and ".join(held) or "True"
        checks = self._checks = (
            " and ".join(
                [f"L{i}.data is _D[{i}] and L{i}.requires_grad is _R{i}" for i in range(n)] + held
            )
            or "True"
        )
        datas = self._data_list = "".join(f"L{i}.data, " for i in range(n))
        extra = (
            f"def _valid(_D):\n    return {checks}\ndef _datas():\n    return [{datas}]\n"
            f"def _held():\n    return {held_checks}\n"
        )
        exec(compile(extra, "<nnbackend compiled step checks>", "exec"), scope)
        self._exec_scope = scope
        self._valid, self._datas = scope["_valid"], scope["_datas"]
        self._held = scope["_held"]

    def _build(self) -> None:
        """The replay's code and function: each first gradient write in the form for a step
        that resets the gradient itself where this recording (or one merged in) saw it do
        so, else in the general form, which reads the ``.grad`` the call finds."""
        lines = list(self._lines)
        inputs = []
        for line, reset_form, leaf, reset in self._writes:
            if reset:
                lines[line] = reset_form
            else:
                inputs.append(leaf)
        self.grad_inputs = inputs  # leaves whose incoming .grad a replay reads
        self.code = "\n".join(lines)
        self.body = lines[1:-1]
        scope: dict[str, Any] = dict(self.scope)
        exec(compile(self.code, "<nnbackend compiled step>", "exec"), scope)
        self._replay = scope["_replay"]
        self._fast: Callable[..., Any] | None = None

    def knows_resets(self) -> bool:
        """Whether this recording saw the step reset every gradient it writes first
        (the usual step, which calls zero_grad()): nothing about them is left to learn."""
        return all(reset for _line, _form, _leaf, reset in self._writes)

    def merge(self, other: _Recording) -> None:
        """Take in what ``other``, a recording of the same code (``differs`` found
        nothing), saw of the step resetting gradients itself: a reset either saw happened
        (the step is the same Python both times), where the other could not tell."""
        writes = [
            (line, form, leaf, reset or theirs[3])
            for (line, form, leaf, reset), theirs in zip(self._writes, other._writes, strict=True)
        ]
        if writes != self._writes:
            self._writes = writes
            self._build()

    def valid(self) -> bool:
        """Whether every parameter still has the array the last run left (nothing rebound it
        outside the step) and its ``requires_grad``, and the step still finds the parameters,
        modules and optimizers the recording holds where it found them (:func:`_holders`)."""
        return bool(self._valid(self._last))

    def holds_current(self) -> bool:
        """Whether the step still finds the objects the recording holds where it found them
        (nothing replaced a parameter, buffer, submodule or optimizer since)."""
        return bool(self._held())

    def run(self, *args: Any) -> Any:
        out = self._replay(*args)
        self._last[:] = self._datas()
        return out

    def fast(self, sig: Any, key: Callable[[], Hashable] | None) -> Callable[..., Any]:
        """This recording's replay behind the checks :class:`CompiledStep` makes before it,
        written out for ``sig`` (the signature it is cached under): a function of the call's
        arguments that replays when they, the settings and the parameters fit, and answers
        ``_MISSING`` otherwise, touching nothing. Made once per recording."""
        if self._fast is not None:  # a recording is cached under one signature only
            return self._fast
        scope: dict[str, Any] = dict(self._exec_scope)
        n_args = len(sig) - (5 if key is not None else 4)
        args = [f"a{i}" for i in range(n_args)]
        lines = [f"def _fast({', '.join(args)}):"]
        arrays: list[str] = []
        for i, entry in enumerate(sig[:n_args]):
            a = args[i]
            scope[f"_T{i}"] = entry[0]
            if len(entry) == 2:  # a Python scalar, by type and value
                scope[f"_V{i}"] = entry[1]
                lines.append(f"    if type({a}) is not _T{i} or not {a} == _V{i}: return _MISSING")
                continue
            _type, shape, dtype, tensor = entry
            if tensor:  # (never "grad": such signatures run eagerly)
                lines.append(
                    f"    if type({a}) is not _Tensor or {a}.requires_grad: return _MISSING"
                )
                lines.append(f"    {a} = {a}.data")
            scope[f"_S{i}"], scope[f"_DT{i}"] = shape, dtype
            lines.append(
                f"    if type({a}) is not _T{i} or {a}.shape != _S{i} "
                f"or {a}.dtype != _DT{i}: return _MISSING"
            )
            arrays.append(a)
        # The arguments' sharing of arrays, as recorded (sig[n_args]: per array argument,
        # the index of the first argument holding the same array).
        same = sig[n_args]
        for j in range(1, len(arrays)):
            for i in range(j):
                op = "is not" if same[i] == same[j] else "is"
                lines.append(f"    if {arrays[j]} {op} {arrays[i]}: return _MISSING")
        scope.update(
            _Tensor=Tensor,
            _MISSING=_MISSING,
            _sv=_settings_version,
            _co=_current_overrides,
            _ge=is_grad_enabled,
            _SV=sig[n_args + 1],
            _CO=sig[n_args + 2],
            _GE=sig[n_args + 3],
            _D=self._last,
        )
        context = "_sv() != _SV or _ge() is not _GE or _co() != _CO"
        if key is not None:
            scope["_key"], scope["_K"] = key, sig[n_args + 4]
            context += " or _key() != _K"
        lines.append(f"    if {context}: return _MISSING")
        lines.append(f"    if not ({self._checks}): return _MISSING")
        lines.extend(self.body)
        lines.append(f"    _D[:] = [{self._data_list}]")
        lines.append(f"    return {self.returned}")
        exec(compile("\n".join(lines), "<nnbackend compiled step (hot)>", "exec"), scope)
        self._fast = scope["_fast"]
        return self._fast

    def differs(self, other: _Recording) -> str | None:
        """Why ``other`` (a second recording of the same signature) differs, or None."""
        if self.canonical != other.canonical:
            return "the nodes, their wiring or the calls differ"
        for na, nb_ in zip(self.nodes, other.nodes, strict=True):
            if type(na) is not type(nb_):
                return f"node {type(na).__name__} against {type(nb_).__name__}"
        for i, (pa, pb) in enumerate(zip(self.pre, other.pre, strict=True)):
            if pa.keys() != pb.keys() or not all(_equal_values(pa[k], pb[k]) for k in pa):
                return f"the settings of node {i} ({type(self.nodes[i]).__name__}) differ"
        for ta, tb in zip(self.leaves, other.leaves, strict=True):
            if ta is not tb and not _equal_arrays(ta.data, tb.data):
                return "a Tensor made inside the step holds other values"
        for i, (a, b) in enumerate(zip(self.consts, other.consts, strict=True)):
            if not _equal_arrays(a, b):
                return f"constant {i} of shape {tuple(a.shape)} holds other values"
        for a, b in zip(self.literals, other.literals, strict=True):
            if not _equal_values(a, b):
                return f"a Python value given to a node differs ({a!r} against {b!r})"
        for (fa, aa, ka), (fb, ab, kb) in zip(self.calls, other.calls, strict=True):
            if fa is not fb or len(aa) != len(ab) or ka.keys() != kb.keys():
                return f"the call to {getattr(fa, '__qualname__', fa)} differs"
            for x, y in itertools.chain(zip(aa, ab, strict=True), ((ka[k], kb[k]) for k in ka)):
                if x is not y and not _equal_values(x, y):
                    return f"the arguments of {getattr(fa, '__qualname__', fa)} differ"
        return None


def _takes_shortcut(cls: type, name: str = "replay_forward") -> bool:
    """Whether nodes of ``cls`` are replayed through the shortcut ``name``: ``replay_forward``
    instead of ``forward``, or the code of ``replay_code`` instead of both methods. Only where
    the class that defines it is the one defining ``forward``, or a subclass of it, and for
    ``replay_code``, likewise for ``backward`` and ``replay_forward``. A subclass that
    overrides ``forward`` alone (its own computation), or ``backward`` (its own gradient), is
    replayed with its own methods, never with an inherited shortcut that would skip the
    override."""
    over = ("forward",) if name == "replay_forward" else ("forward", "backward", "replay_forward")
    owners: dict[str, type | None] = dict.fromkeys((name, *over))
    for klass in cls.__mro__:
        for key, owner in owners.items():
            if owner is None and key in klass.__dict__:
                owners[key] = klass
    replay_owner = owners[name]
    if replay_owner is None or replay_owner.__dict__[name] is None:
        return False
    return all(
        owners[key] is None or issubclass(replay_owner, owners[key])  # type: ignore[arg-type]
        for key in over
    )


def _record(
    fn: Callable[..., Any], args: tuple[Any, ...], known: Any = ()
) -> tuple[_Recording, Any]:
    """Run ``fn(*args)`` eagerly with a recorder on; return its recording and result.
    ``known``: Tensors the step is expected to use (their gradients are noted first)."""
    rec = _Recorder(args, known)
    token = trace.start(rec)
    config.count_blocks("trace", 1)
    try:
        result = fn(*args)
    finally:
        config.count_blocks("trace", -1)
        trace.stop(token)
    rec.finish(result)
    rec.holders = _holders(fn, rec)
    return _Recording(rec), result


# -- where the step finds the objects a recording holds --------------------------------------
# A recording holds the parameters (and the modules, optimizers) the step used when it was
# recorded; eager code finds them again on every call, through the step's globals, closure,
# bound self and the modules' attributes. Where one of those now names another object
# (``model.fc.weight = nn.Parameter(...)``, ``model.fc = nn.Linear(...)``, a buffer
# reassigned, ``opt = optim.Adam(...)`` rebinding a global the step reads), a replay would
# go on training the old one: the recording is dropped and the step recorded again. Found
# once per recording by walking from the step function (no heap scan); checked on every
# call by one identity test each.

#: A container with more entries than this is not looked into (a dataset held in a dict).
_HOLDER_FANOUT = 256
#: At most this many objects are looked at per recording.
_HOLDER_BUDGET = 5000


def _instance_dict(obj: Any) -> Any:
    """``obj.__dict__``, or None; never runs a class's own ``__getattr__``."""
    try:
        return object.__getattribute__(obj, "__dict__")
    except Exception:
        return None


def _is_module(obj: Any) -> bool:
    """Whether ``obj`` is an nnbackend Module (told by its registries, without importing
    nnbackend.nn, a higher layer)."""
    d = _instance_dict(obj)
    return (
        type(d) is dict
        and type(d.get("_parameters")) is dict
        and type(d.get("_modules")) is dict
        and type(d.get("_buffers")) is dict
    )


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):  # (a comprehension, lambda or inner function)
            names |= _global_names(const)
    return names


def _holders(fn: Any, rec: _Recorder) -> list[tuple[Any, Any, Any]]:
    """``(holder, key, obj)``: each place the step ``fn`` finds a module, parameter, buffer
    or optimizer the recording used (``holder`` a dict, ``key`` its key; or a closure cell
    and ``None``), as recorded. The step's globals, closure cells, bound ``self``, the dicts
    and plain objects they hold (two levels down) and the helper functions it calls are
    followed; below a module, its registered parameters, buffers and submodules."""
    held = {id(t) for t in rec.leaves} | {id(t) for t in rec.reset_only}
    for _method, args, kwargs in rec.calls:  # (an optimizer: Optimizer.step's self)
        held.update(id(a) for a in args if type(a) not in _SCALARS)
        held.update(id(a) for a in kwargs.values() if type(a) not in _SCALARS)
    links: dict[tuple[int, Any], tuple[Any, Any, Any]] = {}
    seen: set[int] = set()
    budget = [_HOLDER_BUDGET]

    def link(holder: Any, key: Any, value: Any) -> None:
        if holder is not None:
            links.setdefault((id(holder), key), (holder, key, value))

    def module(m: Any) -> None:
        if id(m) in seen:
            return
        seen.add(id(m))
        d = m.__dict__
        if "training" in d:  # (model.eval(): Dropout and BatchNorm record other nodes)
            link(d, "training", d["training"])
        registered = (d["_parameters"], d["_buffers"], d["_modules"])
        for k, v in list(d.items()):
            if any(k in r for r in registered):
                link(d, k, v)  # (None too: a placeholder given a Parameter later)
                if v is not None and _is_module(v):
                    module(v)

    def note(holder: Any, key: Any, value: Any, depth: int) -> None:
        if value is None or type(value) in _SCALARS:
            return
        if _is_module(value):
            link(holder, key, value)
            module(value)
        elif id(value) in held:
            link(holder, key, value)
        elif value is fn:
            explore(value, depth)
        elif depth > 0:
            explore(value, depth - 1)

    def explore(obj: Any, depth: int) -> None:
        if id(obj) in seen or budget[0] <= 0:
            return
        seen.add(id(obj))
        budget[0] -= 1
        if isinstance(obj, types.MethodType):  # (its self is looked into as deep as it)
            note(None, None, obj.__self__, depth + 1)
            explore(obj.__func__, depth)
        elif isinstance(obj, functools.partial):
            for v in (obj.func, *obj.args, *obj.keywords.values()):
                note(None, None, v, depth)
        elif isinstance(obj, types.FunctionType):
            if obj.__module__ and obj.__module__.startswith("nnbackend."):
                return  # (the library's own functions hold no model)
            for cell in obj.__closure__ or ():
                try:
                    value = cell.cell_contents
                except ValueError:  # (not yet bound)
                    continue
                note(cell, None, value, depth)
            g = obj.__globals__
            for name in _global_names(obj.__code__):
                if name in g:
                    note(g, name, g[name], depth)
            for value in (*(obj.__defaults__ or ()), *(obj.__kwdefaults__ or {}).values()):
                note(None, None, value, depth)
        elif type(obj) is dict:
            if len(obj) <= _HOLDER_FANOUT:
                for k, v in list(obj.items()):
                    note(obj, k, v, depth)
        elif type(obj) in (list, tuple):
            if len(obj) <= _HOLDER_FANOUT:
                for v in obj:  # (by position: no link, but what they hold is followed)
                    note(None, None, v, depth)
        elif not isinstance(obj, type | types.ModuleType):
            d = _instance_dict(obj)
            if type(d) is dict and len(d) <= _HOLDER_FANOUT:
                for k, v in list(d.items()):
                    note(d, k, v, depth)

    note(None, None, fn, 2)
    return list(links.values())


class _Recorder:
    """Watches one eager step (through the hooks of :mod:`nnbackend.autograd.trace`) and
    writes the Python code that replays it."""

    def __init__(self, args: tuple[Any, ...], known: Any = ()) -> None:
        self.lines = ["def _replay(" + ", ".join(f"a{i}" for i in range(len(args))) + "):"]
        self.scope: dict[str, Any] = {
            "_as": as_arrays,
            "_as1": as_array,
            "_add": add_arrays,
            "_W": Tensor._wrap,
        }
        self.names: dict[int, str] = {}  # id(array) -> the expression that holds it
        self.keep: list[Any] = []  # every array named, so that ids stay unique
        self.nodes: list[Function] = []
        self.node_index: dict[int, int] = {}
        # Node index -> the code of its backward, for nodes replayed inline (replay_code).
        self.inline_backward: dict[int, Callable[[str, list[str | None], bool], list[str]]] = {}
        # The variable holding loss.backward()'s own seed, a 0-d one, while it is known to be.
        self.unit_var: str | None = None
        self.pre: list[dict[str, Any]] = []
        self.pending: tuple[Function, dict[str, Any]] | None = None
        self.leaves: list[Tensor] = []
        self.leaf_index: dict[int, int] = {}
        self.leaf_snap: list[Any] = []  # (data, copy) after the leaf's last recorded change
        self.consts: list[Any] = []
        self.literals: list[Any] = []
        self.calls: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []
        self.grads: dict[int, Any] = {}  # id(leaf) -> the .grad the recording left
        # What the recording knows of each leaf's .grad, for the code of its first write
        # (_grad_line): the gradients of known Tensors as the call started, and of each leaf
        # when the step first used it; the Tensors zero_grad() reset since their last write;
        # those written since their last reset; the leaves whose replayed first write reads
        # the .grad the call finds (their gradient accumulates, as eager's does).
        self.start_grads: dict[int, Any] = {id(t): t.grad for t in known}
        self.seen_grads: dict[int, Any] = {}
        self.zeroed: set[int] = set()
        self.written: set[int] = set()
        self.grad_writes: list[tuple[int, str, int, bool]] = []  # see _Recording
        # Each zero_grad() the step called: (the line it came before, the Tensor, whether
        # the step had written its gradient before); see finish().
        self.resets: list[tuple[int, Tensor, bool]] = []
        self.reset_only: list[Tensor] = []  # Tensors reset, neither read nor trained
        self.tensors: list[Tensor] = list(known)  # (so that the ids above stay unique)
        self.in_call = False
        self.backend: Any = None
        self.draws: list[tuple[Function, tuple[Any, ...]]] = []
        self._call_srcs: list[str] = []
        self.returned = "None"  # the expression the replay returns (set by finish)
        self.holders: list[tuple[Any, Any, Any]] = []  # (set by _record: see _holders)
        for i, a in enumerate(args):
            d = a.data if isinstance(a, Tensor) else a
            if type(d) in _SCALARS:
                continue
            self._backend_of(d, f"argument {i}")
            self.names.setdefault(id(d), f"a{i}")  # step(x, x): both are a0
            self.keep.append(d)

    # -- naming ---------------------------------------------------------------------------
    def _backend_of(self, d: Any, what: str) -> None:
        record = backend_for(d)[1]
        if self.backend is None:
            self.backend = record
        elif record.name != self.backend.name:
            raise BackendMismatchError(
                f"compile_step: {what} is a {record.name} array where the step's other "
                f"arrays are {self.backend.name}; move it with nb.to_backend(x, "
                f"{self.backend.name!r}) first"
            )

    def _leaf(self, t: Tensor) -> str:
        i = self.leaf_index.get(id(t))
        if i is None:
            i = self.leaf_index[id(t)] = len(self.leaves)
            self.leaves.append(t)
            self.scope[f"L{i}"] = t
            self._backend_of(t.data, "a parameter")
            self.leaf_snap.append(self._snapshot(t.data))
            self.seen_grads[id(t)] = t.grad
        return f"L{i}"

    @staticmethod
    def _snapshot(d: Any) -> tuple[Any, Any]:
        xp = backend_for(d)[0]
        return d, xp.asarray(d, copy=True)

    def _source(self, x: Any, t: Any) -> str:
        """The expression that gives the input array ``x`` (Tensor ``t``, or None) on replay."""
        if x is None or type(x) in _SCALARS:
            name = f"K{len(self.literals)}"
            self.literals.append(x)
            self.scope[name] = x
            return name
        found = self.names.get(id(x))
        if found is not None:
            return found
        if t is not None and t.creator is None:
            return self._leaf(t) + ".data"
        name = f"C{len(self.consts)}"
        self.consts.append(x)
        self.keep.append(x)
        self.scope[name] = x
        return name

    # -- hooks ----------------------------------------------------------------------------
    def before_forward(self, f: Function, xs: Any, tensors: Any) -> None:
        if self.in_call or self.pending is not None:
            return  # inside a recorded call, or a node called by another node's forward
        if type(f).backward is Function.backward and any(f.needs_input_grad):
            raise CompileError(
                f"compile_step cannot record {type(f).__name__}: it defines only "
                "graph_backward(), which reads the recorded input Tensors; define backward()"
            )
        k = len(self.nodes)
        pre = dict(vars(f))
        self.pending = (f, pre)
        srcs = [self._source(x, t) for x, t in zip(xs, tensors, strict=True)]
        self.nodes.append(f)
        self.node_index[id(f)] = k
        self.pre.append({key: v for key, v in pre.items()})
        self.scope[f"n{k}"] = f
        if getattr(type(f), "draw_random", None) is not None:  # a jitted replay draws outside
            self.draws.append((f, tuple(xs)))
        self._call_srcs = srcs

    def after_forward(self, f: Function, xs: Any, ys: Any) -> None:
        if self.in_call or self.pending is None or self.pending[0] is not f:
            return
        pre = self.pending[1]
        self.pending = None
        k = self.node_index[id(f)]
        now = vars(f)
        changed = {key: v for key, v in pre.items() if now.get(key, _MISSING) is not v}
        inline = type(ys) is not tuple and self._inline(f, k)
        if changed and not inline:  # forward rebinds a setting: put it back before each
            self.scope[f"R{k}"] = changed  # replayed forward
            self.lines.append(f"    n{k}.__dict__.update(R{k})")
        # A node's replay_forward: forward without re-deciding what the recording decided.
        method = "replay_forward" if _takes_shortcut(type(f)) else "forward"
        call = f"n{k}.{method}({', '.join(self._call_srcs)})"
        if inline:  # its code, written by _inline
            outs, arrays = [f"v{k}"], [ys]
            self._as_array_line(f, k, ys)
        elif type(ys) is tuple:
            outs = [f"v{k}_{j}" for j in range(len(ys))]
            self.lines.append(
                f"    {', '.join(outs)}{',' if len(outs) == 1 else ''} = _as(n{k}.xp, {call})"
            )
            arrays = list(ys)
        else:
            outs = [f"v{k}"]
            arrays = [ys]
            self.lines.append(f"    v{k} = {call}")
            self._as_array_line(f, k, ys)
        for name, y in zip(outs, arrays, strict=True):
            if y is not None and type(y) not in _SCALARS:
                self.names[id(y)] = name
                self.keep.append(y)

    def _as_array_line(self, f: Function, k: int, y: Any) -> None:
        if getattr(y, "shape", None) == ():  # NumPy may give a scalar: as __call__ does
            # (as_array's conversion, the ops looked up once: the loss of every step)
            self.scope[f"T{k}"] = type(y)
            self.scope[f"AS{k}"] = ops_for(f.xp, y).asarray
            self.lines.append(f"    if type(v{k}) is not T{k}: v{k} = AS{k}(v{k})")

    def _inline(self, f: Function, k: int) -> bool:
        """Write node ``k``'s forward as its own code (:attr:`Function.replay_code`) where it
        offers some for this run; whether it did."""
        if not _takes_shortcut(type(f), "replay_code"):
            return False

        def bind(value: Any) -> str:
            name = f"B{k}_{len(bound)}"
            bound[name] = value
            return name

        bound: dict[str, Any] = {}
        code = f.replay_code(list(self._call_srcs), f"v{k}", bind)
        if code is None:
            return False
        lines, self.inline_backward[k] = code
        self.scope.update(bound)
        self.lines.extend("    " + line for line in lines)
        return True

    def call(self, method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.in_call:
            return method(*args, **kwargs)
        self._check_unchanged(f"before {method.__qualname__}")
        # An iterator argument (model.parameters() as a generator) would be spent after one
        # call: the recording keeps, and the call gets, its items.
        args = tuple(list(a) if isinstance(a, Iterator) else a for a in args)
        j = len(self.calls)
        self.calls.append((method, args, kwargs))
        self.scope[f"F{j}"] = method
        self.scope[f"P{j}"] = args
        self.scope[f"Q{j}"] = kwargs
        self.in_call = True
        try:
            out = method(*args, **kwargs)
        finally:
            self.in_call = False
        line = f"F{j}(*P{j}, **Q{j})"
        if out is not None and type(out) not in _SCALARS and hasattr(out, "shape"):
            self.names[id(out)] = f"r{j}"
            self.keep.append(out)
            line = f"r{j} = " + line
        self.lines.append("    " + line)
        # What the call left is the new expected state.
        for t in self.leaves:
            if id(t) in self.grads:
                self.grads[id(t)] = t.grad
        self.leaf_snap = [self._snapshot(t.data) for t in self.leaves]
        return out

    def _check_unchanged(self, when: str) -> None:
        for i, t in enumerate(self.leaves):
            d, copy = self.leaf_snap[i]
            if t.data is not d or not _equal_arrays(t.data, copy):
                raise CompileError(
                    f"compile_step cannot record this step: parameter {i} (shape "
                    f"{tuple(t.data.shape)}) changed {when} outside an optimizer's step() "
                    "(a hand-written update): replays run only recorded calls. Use an "
                    "nnbackend.optim optimizer, or a decorated step (nnbackend.autograd.trace."
                    "recorded)"
                )
            expected = self.grads.get(id(t), _MISSING)
            if expected is not _MISSING and t.grad is not expected:
                raise CompileError(
                    f"compile_step cannot record this step: the gradient of parameter {i} "
                    f"changed {when} outside backward() and clip_grad_norm(); replays would "
                    "not repeat that change"
                )

    def zero_grad(self, t: Tensor) -> None:
        """``t.zero_grad()`` ran in the step: its gradient is ``None`` until written again.
        Where that matters to a replay (the step wrote the gradient before, or never writes
        it: a parameter it does not train, whose gradient another step left), finish()
        writes the reset into the replay at this point."""
        i = id(t)
        self.zeroed.add(i)
        self.written.discard(i)
        self.tensors.append(t)
        if self.in_call:
            return  # (the recorded call does it again on every replay)
        written = i in self.grads
        if written:
            self.grads[i] = None  # what the next recorded call may find
        self.resets.append((len(self.lines), t, written))

    def _grad_line(self, x: Tensor, leaf: str, k: int, src: str, copy: str) -> str:
        """The replay's code for a write of ``src`` into leaf ``x``'s ``.grad`` by node ``k``
        (``copy``: the expression a first gradient is stored as), as eager's run_backward
        decides it: added to a gradient the leaf has, else stored. Where the recording knows
        the state (written earlier in the step, or reset by it since), the code is that
        branch; where it depends on what the caller left (gradients accumulated over calls
        without zero_grad() in the step), both, chosen on each replay."""
        i = id(x)
        add = f"_add(n{k}.xp, {leaf}.grad, {src})"
        if i in self.written:
            return f"    {leaf}.grad = {add}"
        # The step's own reset (zero_grad(), or .grad = None), seen: the gradient was set
        # as the call started or as the step first used the leaf, and is None now.
        reset = x.grad is None and (
            i in self.zeroed
            or self.start_grads.get(i) is not None
            or self.seen_grads.get(i) is not None
        )
        self.grad_writes.append(
            (len(self.lines), f"    {leaf}.grad = {copy}", self.leaf_index[i], reset)
        )
        return f"    {leaf}.grad = {copy} if {leaf}.grad is None else {add}"

    def backward(self, root: Tensor, grad: Any, retain_grad: bool, create_graph: bool) -> None:
        if create_graph:
            raise CompileError(
                "compile_step cannot record backward(create_graph=True); take higher-order "
                "gradients eagerly"
            )
        if self.in_call:
            raise CompileError("compile_step: backward() inside a recorded call")
        data = root.data
        xp = backend_for(data)[0]
        if root.creator is None:
            raise CompileError("compile_step cannot record backward() on a leaf Tensor")
        rname = self.names.get(id(data))
        if rname is None or not rname.startswith("v"):
            raise CompileError(
                "compile_step: backward() on a Tensor computed outside the step being recorded"
            )
        root_var = "g" + rname
        if grad is None:
            if data.ndim == 0:
                one = ops_for(xp, data).one
                self.scope["ONE_" + rname] = one
                self.scope["DT_" + rname] = data.dtype
                seed = one(data.dtype)
                self.lines.append(f"    {root_var} = ONE_{rname}(DT_{rname})")
            elif math.prod(data.shape) == 1:
                self.scope["XP_" + rname] = xp
                seed = xp.ones_like(data)
                self.lines.append(f"    {root_var} = XP_{rname}.ones_like({rname})")
            else:
                raise GradientError(
                    f"backward() without a gradient needs a one-element tensor, this one has "
                    f"shape {tuple(data.shape)}"
                )
        else:
            g = grad.data if isinstance(grad, Tensor) else grad
            src = self._source(g, grad if isinstance(grad, Tensor) else None)
            self.scope["XP_" + rname] = xp
            self.scope["DT_" + rname] = data.dtype
            seed = xp.astype(g, data.dtype, copy=True)
            self.lines.append(f"    {root_var} = XP_{rname}.astype({src}, DT_{rname}, copy=True)")
        if type(seed) is not type(data):
            seed = as_array(xp, seed)
        if getattr(seed, "shape", None) == ():
            self.scope["XP0"], self.scope["T_" + rname] = xp, type(seed)
            self.lines.append(
                f"    if type({root_var}) is not T_{rname}: {root_var} = _as1(XP0, {root_var})"
            )
        seeded = len(self.lines)
        self.unit_var = root_var if grad is None and data.ndim == 0 else None
        try:
            self._run_backward(root, seed, retain_grad, root_var)
        finally:
            self.unit_var = None
        if grad is None and not any(
            re.search(rf"\b{root_var}\b", line) for line in self.lines[seeded:]
        ):
            # Nothing reads the seed (the loss's inline backward left the product with one
            # out): the lines making it go, as `pass` (no bytecode), so that the lines
            # grad_writes points at keep their places.
            gone = 2 if data.ndim == 0 else 1
            self.lines[seeded - gone : seeded] = ["    pass"] * gone

    def _grad_var(self, t: Tensor) -> str:
        name = self.names.get(id(t.data))
        if name is None or not name.startswith("v"):
            raise CompileError(
                "compile_step: backward() reaches a Tensor computed outside the step being "
                "recorded; compute everything the loss depends on inside the step"
            )
        return "g" + name

    def _run_backward(self, root: Tensor, grad: Any, retain_grad: bool, root_var: str) -> None:
        # run_backward's pass (nnbackend.autograd.function), executed here as it is there and
        # written down as code: the same order, the same accumulations.
        import heapq

        lines = self.lines
        root.grad = grad
        creator = root.creator
        fresh = {root: root_var}  # intermediate -> the variable holding its gradient
        heap: list[tuple[int, int, Function]] = [(-creator.generation, -creator.seq, creator)]
        seen = {creator}
        while heap:
            f = heapq.heappop(heap)[2]
            k = self.node_index.get(id(f))
            if k is None:
                raise CompileError(
                    f"compile_step: backward() reaches a {f.name} node created outside the "
                    "step being recorded"
                )
            outputs = [r() for r in f.outputs]
            exprs = []
            for out in outputs:
                if out is None:
                    exprs.append("None")
                elif out in fresh:
                    exprs.append(fresh[out])
                elif out.grad is None:
                    exprs.append("None")
                else:
                    raise CompileError("compile_step: a second backward() through a retained graph")
            gxs = f.backward(*[None if o is None else o.grad for o in outputs])
            tuple_out = type(gxs) is tuple
            if not tuple_out:
                gxs = (gxs,)
            inline = self.inline_backward.get(k)
            if inline is not None:  # the node's own code; each gradient in a variable
                names: list[str | None] = [
                    f"_g{k}_{i}" if need and gx is not None else None
                    for i, (need, gx) in enumerate(zip(f.needs_input_grad, gxs, strict=False))
                ]
                unit = exprs[0] == self.unit_var
                lines.extend("    " + line for line in inline(exprs[0], names, unit))
            else:
                lines.append(f"    _r = n{k}.backward({', '.join(exprs)})")
            inputs = f.inputs
            if len(gxs) != len(inputs):
                raise GradientError(
                    f"{f.name}.backward returned {len(gxs)} gradients for {len(inputs)} inputs"
                )
            check = not f.trusted_grads
            for i, (x, gx, need) in enumerate(zip(inputs, gxs, f.needs_input_grad, strict=True)):
                if not need or gx is None:
                    continue
                if inline is not None:
                    src = str(names[i])
                else:
                    src = f"_r[{i}]" if tuple_out else "_r"
                xd = x.data
                if type(gx) is not type(xd):
                    gx = as_array(f.xp, gx)
                if getattr(xd, "shape", None) == ():  # a NumPy scalar gradient: as run_backward
                    self.scope[f"T{k}_{i}"] = type(xd)
                    lines.append(f"    _x = {src}")
                    lines.append(f"    if type(_x) is not T{k}_{i}: _x = _as1(n{k}.xp, _x)")
                    src = "_x"
                if check and (gx.shape != xd.shape or gx.dtype != xd.dtype):
                    from nnbackend.autograd.function import check_gradient

                    check_gradient(f, x, gx)
                c = x.creator
                if c is not None:
                    if x in fresh:
                        x.grad = add_arrays(f.xp, x.grad, gx)
                        var = fresh[x]
                        lines.append(f"    {var} = _add(n{k}.xp, {var}, {src})")
                    else:
                        x.grad = gx
                        var = fresh[x] = self._grad_var(x)
                        lines.append(f"    {var} = {src}")
                    if c not in seen:
                        seen.add(c)
                        heapq.heappush(heap, (-c.generation, -c.seq, c))
                    continue
                leaf = self._leaf(x)
                copied, first = src, gx
                if f.grad_may_alias:  # a first gradient gets its own array, as eager's
                    copied, first = f"{src} * 1.0", gx * 1.0
                    if type(first) is not type(xd):
                        copied, first = f"_as1(n{k}.xp, {copied})", as_array(f.xp, first)
                lines.append(self._grad_line(x, leaf, k, src, copied))
                x.grad = first if x.grad is None else add_arrays(f.xp, x.grad, gx)
                self.grads[id(x)] = x.grad
                self.written.add(id(x))
                self.zeroed.discard(id(x))
            if not retain_grad:
                for out in outputs:
                    if out is not None and not out._retain and out is not root:
                        out.grad = None

    # -- the end --------------------------------------------------------------------------
    def finish(self, result: Any) -> None:
        self._check_unchanged("after the last recorded call")
        self._write_resets()
        for t in self.leaves:  # e.g. p.grad = None at the end of the step
            if id(t) in self.grads and t.grad is None and id(t) not in self.zeroed:
                self.lines.append(f"    {self._leaf(t)}.grad = None")
        for k, f in enumerate(self.nodes):
            # What forward kept for backward (inputs, masks, outputs) is dead once the step
            # has run: let it go after each replay, as the eager graph goes, instead of
            # holding a step's activations between steps. Only large arrays: a tiny step's
            # replay would pay more for the lines than the memory is worth.
            pre = self.pre[k]
            held = {key: pre.get(key) for key, v in vars(f).items() if _holds_big_array(v)}
            if held and k not in self.inline_backward:  # an inline node keeps nothing
                self.scope[f"DROP{k}"] = held
                self.lines.append(f"    n{k}.__dict__.update(DROP{k})")
            vars(f).update(held)
        self.returned = self._returned(result)
        self.lines.append("    return " + self.returned)
        for f in self.nodes:  # the replay never reads them: let the recorded graph go
            if getattr(f, "inputs", None):
                f.inputs = tuple(None for _ in f.inputs)

    def _write_resets(self) -> None:
        """Put the step's zero_grad() calls that a replay must repeat into its code, each
        where it ran: those of a gradient the step had written (a reset after the update,
        or between backward() and step()) and those of a Tensor whose gradient the step
        never writes (a parameter it does not train: the optimizer's replayed step() must
        not find the gradient another step left, as eager's does not). A reset before the
        step's first write of a gradient needs no line: that write stores (_grad_line)."""
        inserts: list[tuple[int, str]] = []
        names: dict[int, str] = {}
        for pos, t, written in self.resets:
            if not written and id(t) in self.grads:
                continue
            name = names.get(id(t))
            if name is None:
                if id(t) in self.leaf_index:
                    name = self._leaf(t)
                else:
                    name = f"Z{len(self.reset_only)}"
                    self.scope[name] = t
                    self.reset_only.append(t)
                names[id(t)] = name
            inserts.append((pos, f"    {name}.grad = None"))
        for pos, line in reversed(inserts):  # (stable: resets at one place keep their order)
            self.lines.insert(pos, line)
        if inserts:  # the gradient writes' lines moved down by the lines put before them
            at = [pos for pos, _line in inserts]
            self.grad_writes = [
                (line + bisect.bisect_right(at, line), form, leaf, reset)
                for line, form, leaf, reset in self.grad_writes
            ]

    def _returned(self, result: Any) -> str:
        if result is None:
            return "None"
        if isinstance(result, list):  # (as the step returned it: a list stays a list)
            return "[" + ", ".join(self._returned(r) for r in result) + "]"
        if isinstance(result, tuple):
            inner = ", ".join(self._returned(r) for r in result)
            return f"({inner}{',' if len(result) == 1 else ''})"
        if isinstance(result, Tensor):
            name = self.names.get(id(result.data))
            if name is None:
                if result.creator is None and result.requires_grad:
                    return f"{self._leaf(result)}"
                raise CompileError(
                    "compile_step: the step returned a Tensor that no recorded node made"
                )
            return f"_W({name}, False)"
        if type(result) in _SCALARS:
            raise CompileError(
                f"compile_step: the step returned the Python value {result!r}, which a replay "
                "would freeze; return Tensors (the loss) and read them with .item()"
            )
        name = self.names.get(id(result))
        if name is None:
            raise CompileError(
                f"compile_step: the step returned a {type(result).__name__} that no recorded "
                "node made; return Tensors"
            )
        return name


def _optimizer_of(method: Any, args: tuple[Any, ...]) -> Any:
    """The optimizer a recorded call steps (``Optimizer.step`` and overrides), or None."""
    if method.__name__ != "step" or len(args) != 1:
        return None
    opt = args[0]
    return opt if hasattr(opt, "_entries") and hasattr(opt, "_rule") else None


class _JitRecording:
    """A recording compiled whole by the backend's tracing compiler (``jax.jit``): one pure
    function of the parameters' arrays, the optimizers' state arrays and step counts, their
    learning rates, the random draws (dropout masks, drawn outside from the same generator
    stream as eager steps) and the arguments, returning the new parameters, gradients, state
    and the step's results. Nothing that changes from step to step is a constant of the trace;
    the other hyperparameters (betas, eps, momentum, weight decay) are, and a change of one
    traces again."""

    def __init__(self, rec: _Recording, compiler: Callable[..., Any]) -> None:
        self.rec = self.base = rec
        self.leaves = rec.leaves
        self.opts: list[Any] = []
        scope = dict(rec.scope)
        for j, (method, args, _kwargs) in enumerate(rec.calls):
            opt = _optimizer_of(method, args)
            if opt is not None:
                if opt not in self.opts:
                    self.opts.append(opt)
                scope[f"F{j}"] = self._traced_step
        scope["_W"] = lambda d, _rg: d  # raw arrays out of the trace; wrapped after
        # The optimizers' parameters the step does not use (another task's head): their
        # gradients, left by another step, are the optimizer's to apply, as eagerly; they
        # go through the trace as the leaves do (as constants of it, the updated arrays
        # would leak out of the trace).
        known = {id(t) for t in rec.leaves}
        self.tensors = list(rec.leaves)
        for opt in self.opts:
            for p in opt.params:
                if id(p) not in known:
                    known.add(id(p))
                    self.tensors.append(p)
        self.touched, self._left = self.tensors, [t.data for t in self.tensors]
        exec(compile(rec.code, "<nnbackend jitted step>", "exec"), scope)
        self._replay = scope["_replay"]
        self._compiler = compiler
        self._compiled: dict[Hashable, Any] = {}
        # What a trace's optimizer steps did, counted while tracing (the same for every
        # trace of one recording): how many times each optimizer stepped, and each
        # (optimizer, parameter) was updated (a step calling opt.step() twice counts two).
        self._steps: list[int] = [0] * len(self.opts)
        self._updated: dict[tuple[int, int], int] = {}
        self._counting: tuple[list[int], dict[tuple[int, int], int]] = ([], {})

    @staticmethod
    def make(rec: _Recording) -> _JitRecording | None:
        """A jitted recording where the backend has a tracing compiler, else None."""
        d = rec.leaves[0].data
        ops = ops_for(backend_for(d)[0], d)
        if ops.jit(lambda: None) is None:
            return None
        if any(node.updates_state for node in rec.nodes):
            return None  # (see Function.updates_state)
        for method, args, _kwargs in rec.calls:
            opt = _optimizer_of(method, args)
            if opt is None and method.__name__ == "step":
                return None  # a step of its own kind: replay it as it is
        return _JitRecording(rec, ops.jit)

    def valid(self) -> bool:
        return self.rec.valid()

    def fast(self, sig: Any, key: Callable[[], Hashable] | None) -> None:
        """No guarded replay: every call goes through :meth:`run` (whose own work, moving
        the state in and out of the compiled function, outweighs the checks)."""
        return None

    # -- inside the trace ------------------------------------------------------------------
    def _traced_step(self, opt: Any) -> None:
        # Optimizer.step without its host-side parts (the lr check and the count, done
        # around the call): each parameter's rule on traced arrays.
        rule, names = opt._rule, opt.state_names
        k = self.opts.index(opt)
        steps, updated = self._counting
        steps[k] += 1
        for i, (p, st, slot) in enumerate(opt._entries):
            g = p.grad
            if g is None:
                continue
            updated[k, i] = updated.get((k, i), 0) + 1
            p.data = slot.ops.apply_update(rule, p.data, g, st, names, slot)

    def _pure(
        self, params: Any, grads: Any, states: Any, lrs: Any, draws: Any, args: Any
    ) -> tuple[Any, ...]:
        leaves, opts = self.tensors, self.opts
        # (counted afresh, kept only from a trace that ran to its end)
        counting: tuple[list[int], dict[Any, Any]] = ([0] * len(opts), {})
        self._counting = counting
        for t, d, g in zip(leaves, params, grads, strict=True):
            t.data, t.grad = d, g
        for opt, st_list, lr in zip(opts, states, lrs, strict=True):
            opt.lr = lr
            for st, new in zip(opt.state, st_list, strict=True):
                st.update(new)
        for (node, _xs), mask in zip(self.rec.draws, draws, strict=True):
            node.__dict__["draw_random"] = lambda *_xs, _m=mask: _m
        try:
            out = self._replay(*args)
        finally:
            for node, _xs in self.rec.draws:
                node.__dict__.pop("draw_random", None)
        new_states = [[dict(st) for st in opt.state] for opt in opts]
        self._steps, self._updated = counting
        return [t.data for t in leaves], [t.grad for t in leaves], new_states, out

    # -- around it -------------------------------------------------------------------------
    def run(self, *args: Any) -> Any:
        leaves, opts = self.tensors, self.opts
        lrs = [opt._step_lr() for opt in opts]
        static = tuple(
            tuple(getattr(opt, h) for h in opt.hyperparameters if h != "lr") for opt in opts
        )
        fn = self._compiled.get(static)
        if fn is None:
            fn = self._compiled[static] = self._compiler(self._pure)
        draws = [getattr(node, "draw_random")(*xs) for node, xs in self.rec.draws]  # noqa: B009
        params = [t.data for t in leaves]
        states = [[dict(st) for st in opt.state] for opt in opts]
        reset_only = self.rec.reset_only
        saved = (
            [(t.data, t.grad) for t in leaves],
            [opt.lr for opt in opts],
            states,
            [t.grad for t in reset_only],
        )
        # The replay never reads a Python scalar argument (it is part of the signature, by
        # value): none goes into the trace, where a string is no valid argument.
        args = tuple(None if type(a) in _SCALARS else a for a in args)
        try:
            # The gradients a replay adds to (accumulation over calls) go in, and those of
            # the parameters outside the recording; None else.
            n = len(self.leaves)
            grads_in = [None] * n + [t.grad for t in leaves[n:]]
            for i in self.rec.grad_inputs:
                grads_in[i] = leaves[i].grad
            new_params, grads, new_states, out = fn(params, grads_in, states, lrs, draws, args)
        except BaseException:
            self._restore(saved)
            raise
        for t, d, g in zip(leaves, new_params, grads, strict=True):
            t.data, t.grad = d, g
        for t in reset_only:  # (zero_grad() of Tensors outside the trace)
            t.grad = None
        updated, steps = self._updated, self._steps
        for k, (opt, lr, st_list) in enumerate(zip(opts, lrs, new_states, strict=True)):
            opt.lr = lr
            opt.steps += steps[k]
            for i, (st, new) in enumerate(zip(opt.state, st_list, strict=True)):
                if "step" in new:  # the count stays a Python int (the trace got it as input)
                    # (.get: a state emptied since, e.g. one loaded from before any step)
                    new["step"] = states[k][i].get("step", 0) + updated.get((k, i), 0)
                st.update(new)
        self.rec._last[:] = [t.data for t in self.leaves]
        self._left[:] = [t.data for t in leaves]
        return _wrap_out(out)

    def _restore(self, saved: Any) -> None:
        pairs, lrs, states, reset_grads = saved
        for t, (d, g) in zip(self.tensors, pairs, strict=True):
            t.data, t.grad = d, g
        for t, g in zip(self.rec.reset_only, reset_grads, strict=True):
            t.grad = g
        for opt, lr, st_list in zip(self.opts, lrs, states, strict=True):
            opt.lr = lr
            for st, old in zip(opt.state, st_list, strict=True):
                st.clear()
                st.update(old)


def _wrap_out(out: Any) -> Any:
    if out is None or isinstance(out, Tensor):
        return out
    if isinstance(out, tuple):
        return tuple(_wrap_out(o) for o in out)
    if isinstance(out, list):
        return [_wrap_out(o) for o in out]
    return Tensor._wrap(out, False)
