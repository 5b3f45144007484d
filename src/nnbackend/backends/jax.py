"""The JAX backend: ``jax.numpy``, which is itself an Array API namespace (jax >= 0.4.32).

What differs from the other backends, and is decided here:

* **Immutable arrays.** JAX arrays have no ``x[...] = y`` and no in-place operators
  (``x.at[...].set(y)`` returns a new array), so :attr:`~nnbackend.Capabilities.inplace` is
  false and the engine and optimizers rebind instead of writing. :func:`scatter_add` returns
  its result (``target.at[indices].add(values)``) instead of writing into ``target``.
* **float64 only where the user asks for it.** JAX computes in 32 bits unless the process
  enabled 64-bit types (``JAX_ENABLE_X64=1`` in the environment before jax is imported, or
  ``jax.config.update("jax_enable_x64", True)`` at startup); without that it silently
  truncates a requested float64 to float32. nnbackend never switches it on for the user (it is
  process-global and changes every other jax user in the process). Instead:

  - with no dtype chosen, the jax backend's default float dtype is float64 when x64 is on and
    float32 when it is off (:func:`dtype_reason` tells :mod:`nnbackend.config`);
  - choosing float64 explicitly while x64 is off raises
    :class:`~nnbackend.errors.DtypeError` naming both ways to switch it on.

  The x64 state is read from ``jax.config`` once jax is imported, and from
  ``JAX_ENABLE_X64`` before that, so asking never imports jax.
* **Devices** are ``cpu`` (and ``cpu:N`` where jax has several CPU devices) and ``cuda:N``
  for the GPUs jax finds, numbered as ``jax.devices("gpu")`` numbers them (among the GPUs
  ``CUDA_VISIBLE_DEVICES`` leaves visible), as the torch backend names them; ``gpu:N`` is
  accepted as a synonym.
* **No hidden device sync**: :func:`on_host` is true only for committed arrays on CPU devices;
  a tracer (inside ``jax.jit``) has no value to read, so it is never "on the host".
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from typing import Any

from nnbackend.backends.base import Backend, Capabilities
from nnbackend.backends.ops import Ops

INSTALL_HINT = "pip install 'nnbackend[jax]'"
X64_ENV = "JAX_ENABLE_X64"
# As jax's own bool_env reads JAX_ENABLE_X64.
_TRUE = ("y", "yes", "t", "true", "on", "1")
X64_FIX = (
    f"set {X64_ENV}=1 in the environment before jax is imported, or call "
    'jax.config.update("jax_enable_x64", True) at startup, before any array is made'
)


def load_namespace() -> Any:
    # jax.numpy is the Array API namespace of jax arrays (x.__array_namespace__() returns it;
    # array-api-compat's array_namespace returns it too: there is no wrapper to go through).
    import jax.numpy as jnp

    return jnp


def probe() -> str | None:
    if importlib.util.find_spec("jax") is None:
        return f"jax is not installed: {INSTALL_HINT}"
    try:
        import jax
    except Exception as exc:  # jaxlib missing or broken raises ImportError or RuntimeError
        return f"jax is installed but fails to import ({type(exc).__name__}: {exc}); {INSTALL_HINT}"
    if not hasattr(jax.numpy, "__array_namespace_info__"):
        return (
            f"jax {jax.__version__} predates the Array API namespace (jax >= 0.4.32); "
            f"{INSTALL_HINT}"
        )
    return None


def x64_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether jax makes 64-bit arrays in this process: ``jax.config``'s
    ``jax_enable_x64`` once jax is imported, else what ``JAX_ENABLE_X64`` will make it.
    Never imports jax."""
    jax = sys.modules.get("jax")
    config = getattr(jax, "config", None)
    if config is not None:
        try:
            return bool(config.read("jax_enable_x64"))
        except Exception:  # an older config object: the attribute form
            return bool(getattr(config, "jax_enable_x64", False))
    return environ.get(X64_ENV, "").strip().lower() in _TRUE


def dtype_reason(dtype: str) -> str | None:
    """``None`` when jax can hold floating dtype ``dtype`` ("float64", "float32",
    "float16") in this process now, else why not and how to fix it."""
    if dtype == "float64" and not x64_enabled():
        return (
            "jax has 64-bit types switched off in this process (jax_enable_x64 is False), so "
            f"it would silently make float32 arrays instead; {X64_FIX}. nnbackend does not "
            "switch it on for you (it is process-global). Or choose float32"
        )
    return None


def to_host(x: Any) -> Any:
    import jax
    import numpy as np

    # device_get copies a device array to the host and waits for it; on a CPU device it is
    # a view where jax allows one. np.asarray makes it a plain ndarray either way.
    return np.asarray(jax.device_get(x))


def from_host(a: Any, device: Any = None) -> Any:
    import jax

    # device_put without a device places on the default device (or the one a
    # jax.default_device block chose).
    return jax.device_put(a, device)


# ---------------------------------------------------------------------------------- devices
def _platform_devices(platform: str) -> list[Any]:
    import jax

    try:
        return list(jax.devices(platform))
    except RuntimeError:  # "Unknown backend: 'gpu' requested, but no platforms ..."
        return []


def devices() -> list[str]:
    cpus = _platform_devices("cpu")
    names = ["cpu"] + [f"cpu:{i}" for i in range(1, len(cpus))]
    names += [f"cuda:{i}" for i in range(len(_platform_devices("gpu")))]
    return names


def parse_device(name: str) -> tuple[str, int]:
    """``"cpu"`` -> ("cpu", 0); ``"cpu:1"`` -> ("cpu", 1); ``"cuda:0"`` and ``"gpu:0"`` ->
    ("gpu", 0); anything else raises ``ValueError`` (also where jax is missing)."""
    kind, sep, index = name.strip().partition(":")
    platform = {"cpu": "cpu", "cuda": "gpu", "gpu": "gpu"}.get(kind)
    if platform is None or (sep and not index.isdigit()) or (platform == "gpu" and not sep):
        raise ValueError(
            f"a jax device is 'cpu', 'cpu:N' or 'cuda:N' (synonym 'gpu:N'), got {name!r}"
        )
    return platform, int(index) if sep else 0


def device(name: str) -> Any:
    """The ``jax.Device`` named ``name`` (see :func:`parse_device`); a device jax does not
    have raises ``ValueError`` naming those it has."""
    platform, index = parse_device(name)
    found = _platform_devices(platform)
    if index >= len(found):
        raise ValueError(f"jax has no device {name!r}; it has {', '.join(devices())}")
    return found[index]


def enter_device(device: Any) -> Any:
    """``jax.default_device(device)``: creation functions called without a device inside a
    ``using(device=...)`` block place their arrays there."""
    import jax

    return jax.default_device(device)


def on_host(array: Any) -> bool:
    try:
        return all(d.platform == "cpu" for d in array.devices())
    except Exception:  # a tracer inside jax.jit has no devices and no value to read
        return False


def version() -> str | None:
    import jax

    return str(jax.__version__)


def facts() -> dict[str, Any]:
    import jax

    return {
        "platform": jax.default_backend(),
        "x64": x64_enabled(),
        "x64_source": (
            f"{X64_ENV}={os.environ[X64_ENV]!r}" if X64_ENV in os.environ else "jax.config"
        ),
        "devices": [str(d) for d in jax.devices()],
    }


# ---------------------------------------------------------------------------------- engine
def scatter_add(target: Any, indices: Any, values: Any) -> Any:
    """``target`` with ``values`` added at rows ``indices`` (repeated indices accumulate),
    as a new array: ``target`` itself is not changed (jax arrays are immutable)."""
    return target.at[indices].add(values)


def _is_tracer(x: Any) -> bool:
    """Whether ``x`` is a placeholder inside a jax trace (``jax.jit``, ``grad``, ``vmap``)."""
    import jax

    return isinstance(x, jax.core.Tracer)


class JaxOps(Ops):
    """JAX's operations: every update rebinds (jax arrays are immutable), indexed writes and
    scatter-adds go through ``.at[]``, and dropout's random bits come from ``jax.random``.

    * **No in-place writes.** :meth:`update`, :meth:`add_`, :meth:`sub_`, :meth:`mul_` and
      :meth:`sub_scaled_` return new arrays (``inplace`` is false); the optimizers and the
      engine store what they return. :meth:`write` is ``target.at[key].set(value)`` and
      :meth:`scatter_add` ``target.at[indices].add(values)``: one pass each, never the
      standard-only fallbacks (a one-hot mask of input size x output size).
    * **Caching.** ``may_cache`` is false: no array is kept across calls on the ops' own
      initiative (the float32 weight copies of the base class are not kept; they would be
      rewritten in place, which jax cannot do, and would hold tracers inside a trace).
      :meth:`cached` still keeps a constant (``one(dtype)``, the zero of ReLU) that was made
      outside any trace, because a concrete jax array is an immutable value that is safe to
      share; one made inside a trace is a tracer, valid only in that trace, and is made anew
      each time.
    * **float16 natively.** XLA's CPU backend computes float16 products in float32 inside
      one kernel already; widening in Python adds two dispatches per product. Measured on
      this machine (AMD EPYC, jax 0.10.2, medians of 7 x 10): float16/float32 matmul time
      1.08 at 256x1024x1024 and 1.09 at 30x100x100, while widening in Python cost 3.9x
      float32 at 30x100x100 (dispatch) and 28x for a 100x2 by 2x100 outer product.
    * **Random bits.** :meth:`uniform` (and so :meth:`dropout_mask`) takes the host stream of
      :mod:`nnbackend.random` on a CPU device (the same masks as NumPy's for one seed), and
      draws with ``jax.random`` on an accelerator, keyed from that stream (reproducible per
      seed), as the torch backend does on CUDA.
    """

    may_cache = False
    float16_compute = "native"
    take_checks_range = False

    def cached(self, key: Any, make: Any) -> Any:
        """``make()``, kept under ``key`` when it is a concrete array (made outside a trace);
        a tracer is never kept."""
        found = self._cache.get(key)
        if found is None:
            found = make()
            if not _is_tracer(found):
                self._cache[key] = found
        return found

    def matmul(self, a: Any, b: Any, out: Any = None) -> Any:
        """``a @ b`` as a new array (``out`` is ignored: jax arrays cannot be written)."""
        return a @ b

    def scatter_add(self, target: Any, indices: Any, values: Any) -> Any:
        """``target.at[indices].add(values)``: a new array, repeated indices accumulating."""
        return target.at[indices].add(values)

    def expand(self, x: Any, shape: tuple[int, ...]) -> Any:
        """``x`` broadcast to ``shape`` (a new array; jax arrays are never written)."""
        return self.xp.broadcast_to(x, shape)

    def update(self, old: Any, new: Any) -> Any:
        """``new`` (rebind it: ``old`` cannot be written)."""
        return new

    def add_(self, y: Any, x: Any) -> Any:
        """``y + x`` as a new array."""
        return y + x

    def sub_(self, y: Any, x: Any) -> Any:
        """``y - x`` as a new array."""
        return y - x

    def mul_(self, y: Any, a: Any) -> Any:
        """``y * a`` as a new array."""
        return y * a

    def sub_scaled_(self, y: Any, a: float, x: Any) -> Any:
        """``y - a * x`` as a new array, in ``y``'s dtype (a gradient of another dtype set
        by hand would promote the parameter: SGD calls this without apply_update's
        conversion)."""
        new = y - a * x
        return new if new.dtype == y.dtype else new.astype(y.dtype)

    def write(self, target: Any, key: Any, value: Any, fallback: Any) -> Any:
        """``target.at[key].set(value)``: a new array (``fallback`` is not needed)."""
        return target.at[key].set(value)

    def jit(self, fn: Any) -> Any:
        """``jax.jit(fn)``: :func:`nnbackend.compile_step` compiles a whole training step."""
        import jax

        return jax.jit(fn)

    def uniform(self, generator: Any, shape: tuple[int, ...], like: Any) -> Any:
        """Uniform numbers in [0, 1) of ``shape`` on ``like``'s device. On a CPU device, the
        host stream of ``generator`` (the ``numpy.random.Generator`` inside an
        :class:`nnbackend.random.Generator`), as every CPU backend draws them: a jax CPU array
        lives in host memory already, and one seed gives the same masks as NumPy's and torch's
        (gradient checks, which recompute on NumPy, rely on it). On an accelerator, float32
        numbers drawn there by ``jax.random`` from a key of 32 bits taken from ``generator``
        (reproducible per seed, but a different stream from the host's)."""
        import jax

        device = None if _is_tracer(like) else _only_device(like)
        if device is None or device.platform == "cpu":
            return self.from_host(generator.random(shape), device)
        key = jax.random.key(int(generator.integers(0, 2**32)))
        with jax.default_device(device):
            return jax.random.uniform(key, shape, dtype=jax.numpy.float32)


def _only_device(x: Any) -> Any:
    """The one device ``x`` lives on, or ``None`` (several devices: a sharded array)."""
    placed = x.devices()
    return next(iter(placed)) if len(placed) == 1 else None


BACKEND = Backend(
    name="jax",
    load_namespace=load_namespace,
    probe=probe,
    array_modules=("jaxlib", "jax"),
    to_host=to_host,
    from_host=from_host,
    devices=devices,
    device=device,
    capabilities=Capabilities(float16=True, inplace=False, fast_float16_matmul=False),
    version=version,
    facts=facts,
    scatter_add=scatter_add,
    ops=JaxOps,
    on_host=on_host,
    enter_device=enter_device,
    dtype_reason=dtype_reason,
    install_hint=INSTALL_HINT,
    description="JAX arrays (immutable; CPU here, GPUs where jax finds them)",
)
