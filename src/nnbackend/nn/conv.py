"""Convolutions on NCHW images: ``conv2d``, ``conv_transpose2d`` and the layers ``Conv2d``,
``ConvTranspose2d``.

Weights have PyTorch's (and Chainer's) layout: ``(out_channels, in_channels / groups, kh, kw)``
for a convolution and ``(in_channels, out_channels / groups, kh, kw)`` for its transpose, so
pretrained weights load without reshuffling.

How it runs, on each backend:

* **Portable path (every backend).** im2col + one matrix product, written over the Array API
  namespace: the padded input is gathered (``take`` with a cached index array) into a matrix of
  shape ``(N * OH * OW, C * kh * kw)`` and multiplied by the weight, one GEMM (one batched GEMM
  over the groups). The backward of im2col (col2im) adds the column gradients back into the
  image by **scatter-add** with the same index array, through the backend's scatter-add
  (``np.add.at``, ``Tensor.index_add_``, ``cupyx.scatter_add``); a backend without one
  (array-api-strict) adds one strided slice per kernel offset, ``kh * kw`` additions, never a
  loop over output pixels.
* **Backend kernels.** A backend may replace ``im2col`` / ``col2im`` (NumPy: a strided
  window view copied once, :func:`numpy.lib.stride_tricks.sliding_window_view`) or the whole
  convolution (``convolution`` / ``convolution_backward``: torch's own convolution on the torch
  backend, so cuDNN on a CUDA device) through :attr:`nnbackend.Backend.kernels`.

>>> import nnbackend as nb
>>> from nnbackend import nn
>>> conv = nn.Conv2d(1, 4, kernel_size=3, padding=1)
>>> tuple(conv(nb.namespace().ones((2, 1, 8, 8))).shape)
(2, 4, 8, 8)
"""

from __future__ import annotations

import math
from typing import Any

from nnbackend.autograd.function import Function, spare_grad
from nnbackend.autograd.ops import cast, scatter_add_rows
from nnbackend.autograd.tensor import Tensor
from nnbackend.backends.ops import NATIVE, device_key
from nnbackend.errors import ArgumentError, DtypeError, ShapeError
from nnbackend.namespace import backend_for, ops_for
from nnbackend.nn import init
from nnbackend.nn.functional import (
    float_dtype,
    mixed_compute,
    not_an_array,
    same_backend,
    size_argument,
)
from nnbackend.nn.module import Module, Parameter

__all__ = [
    "Conv2d",
    "ConvTranspose2d",
    "col2im",
    "conv2d",
    "conv_transpose2d",
    "conv_output_size",
    "im2col",
]

Pair = int | tuple[int, int]


def as_pair(value: Any, what: str, minimum: int) -> tuple[int, int]:
    """``value`` (an int or two ints, each >= ``minimum``) as a pair of ints, else an
    :class:`ArgumentError` naming ``what``. Internal API, shared with the pooling layers."""
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, tuple | list) and len(value) == 2:
        pair = (value[0], value[1])
    else:
        raise ArgumentError(f"{what} must be an int or a pair of ints, got {value!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in pair):
        raise ArgumentError(f"{what} must be integers >= {minimum}, got {value!r}")
    return (int(pair[0]), int(pair[1]))


def _data(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """The output length of a convolution along one axis:
    ``(size + 2 padding - dilation (kernel - 1) - 1) // stride + 1``."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


# -- backend kernels -----------------------------------------------------------------------
def backend_kernels(xp: Any, array: Any) -> dict[str, Any]:
    """The convolution kernels (``im2col``, ``col2im``, ``convolution``,
    ``convolution_backward``, ``max_pool2d``, ``max_pool2d_backward``) that ``array``'s
    backend offers (:meth:`nnbackend.backends.ops.Ops.kernel`); an empty mapping where it
    offers none."""
    ops = ops_for(xp, array)
    return ops.cached(("conv_kernels",), lambda: _offered(ops))


def _offered(ops: Any) -> dict[str, Any]:
    names = (
        "im2col",
        "col2im",
        "convolution",
        "convolution_backward",
        "max_pool2d",
        "max_pool2d_backward",
    )
    return {name: ops.kernel(name) for name in names if ops.kernel(name) is not None}


# -- im2col / col2im over the namespace ----------------------------------------------------
# (namespace, device, geometry) -> int64 gather indices, made once per geometry.
_index_cache: dict[Any, Any] = {}
_INDEX_CACHE_SIZE = 64


def _gather_indices(xp: Any, like: Any, geometry: tuple[int, ...]) -> Any:
    n, c, hp, wp, kh, kw, sh, sw, dh, dw, oh, ow = geometry
    device = getattr(like, "device", None)
    key = (xp, device_key(device), geometry)
    found = _index_cache.get(key)
    if found is None:
        i64 = xp.int64

        def axis(length: int, step: int, position: int) -> Any:
            shape = [1] * 6
            shape[position] = length
            return xp.reshape(xp.arange(length, dtype=i64, device=device) * step, tuple(shape))

        # Rows (n, oh, ow), columns (c, i, j): n C Hp Wp + c Hp Wp + (oh sh + i dh) Wp + ...
        flat = (
            axis(n, c * hp * wp, 0)
            + axis(oh, sh * wp, 1)
            + axis(ow, sw, 2)
            + axis(c, hp * wp, 3)
            + axis(kh, dh * wp, 4)
            + axis(kw, dw, 5)
        )
        found = xp.reshape(flat, (-1,))
        if len(_index_cache) >= _INDEX_CACHE_SIZE:
            _index_cache.clear()
        _index_cache[key] = found
    return found


def im2col(
    x: Any,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> Any:
    """The patches of an (already padded) NCHW array as a matrix of shape
    ``(N * OH * OW, C * kh * kw)``: row ``(n, oh, ow)`` holds the ``C * kh * kw`` input values
    that output pixel ``(oh, ow)`` of image ``n`` sees, in the weight's ``(c, i, j)`` order.

    Uses the backend's ``im2col`` kernel where it has one, else a gather over the namespace.
    """
    xp = backend_for(x)[0]
    return im2col_with(xp, x, patch_geometry(x.shape, kernel_size, stride, dilation))


def col2im(
    cols: Any,
    shape: tuple[int, int, int, int],
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> Any:
    """The adjoint of :func:`im2col`: an NCHW array of ``shape`` (the padded input's) where
    each element is the sum of the entries of ``cols`` that :func:`im2col` copied from it.
    Scatter-add, through the backend's kernel or its scatter-add where it has one."""
    xp = backend_for(cols)[0]
    return col2im_with(xp, cols, patch_geometry(tuple(shape), kernel_size, stride, dilation))


def patch_geometry(
    shape: Any, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> tuple[int, ...]:
    """The 12 numbers :func:`im2col_with` and :func:`col2im_with` work from: the padded NCHW
    input ``shape``, kernel, stride, dilation and the output height and width."""
    n, c, hp, wp = (int(s) for s in shape)
    oh = (hp - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    ow = (wp - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    if oh < 1 or ow < 1:
        raise ShapeError(
            f"a kernel of size {kernel} with dilation {dilation} does not fit a (padded) input "
            f"of height and width {(hp, wp)}; use a smaller kernel or more padding"
        )
    return (n, c, hp, wp, kernel[0], kernel[1], stride[0], stride[1], *dilation, oh, ow)


def im2col_with(xp: Any, x: Any, g: tuple[int, ...]) -> Any:
    """:func:`im2col` of ``x`` in namespace ``xp`` for a :func:`patch_geometry` ``g``."""
    kernel = backend_kernels(xp, x).get("im2col")
    if kernel is not None:
        return kernel(x, g)
    n, c, _, _, kh, kw, _, _, _, _, oh, ow = g
    idx = _gather_indices(xp, x, g)
    return xp.reshape(xp.take(xp.reshape(x, (-1,)), idx, axis=0), (n * oh * ow, c * kh * kw))


def col2im_with(xp: Any, cols: Any, g: tuple[int, ...]) -> Any:
    """:func:`col2im` of ``cols`` in namespace ``xp`` for a :func:`patch_geometry` ``g``."""
    kernel = backend_kernels(xp, cols).get("col2im")
    if kernel is not None:
        return kernel(cols, g)
    n, c, hp, wp, kh, kw, sh, sw, dh, dw, oh, ow = g
    ops = ops_for(xp, cols)
    if ops.record.scatter_add is not None or not ops.inplace:
        idx = _gather_indices(xp, cols, g)
        target = xp.zeros((n * c * hp * wp,), dtype=cols.dtype, device=cols.device)
        out = scatter_add_rows(xp, target, idx, xp.reshape(cols, (-1,)))
        return xp.reshape(out, (n, c, hp, wp))
    # No scatter-add (array-api-strict): one strided slice addition per kernel offset.
    six = xp.permute_dims(xp.reshape(cols, (n, oh, ow, c, kh, kw)), (0, 3, 4, 5, 1, 2))
    out = xp.zeros((n, c, hp, wp), dtype=cols.dtype, device=cols.device)
    for i in range(kh):
        rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
        for j in range(kw):
            columns = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
            out[:, :, rows, columns] = out[:, :, rows, columns] + six[:, :, i, j, :, :]
    return out


def pad2d(xp: Any, x: Any, padding: tuple[int, int], value: float = 0.0) -> Any:
    """``x`` (N, C, H, W) with ``padding`` rows and columns of ``value`` on each side (the
    standard has no ``pad``: a filled array and one slice assignment, or concatenation where
    arrays are immutable)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    n, c, h, w = x.shape
    shape = (n, c, h + 2 * ph, w + 2 * pw)

    def by_concat() -> Any:
        side = xp.full((n, c, h, pw), value, dtype=x.dtype, device=x.device)
        wide = xp.concat([side, x, side], axis=3)
        top = xp.full((n, c, ph, w + 2 * pw), value, dtype=x.dtype, device=x.device)
        return xp.concat([top, wide, top], axis=2)

    out = xp.full(shape, value, dtype=x.dtype, device=x.device)
    return ops_for(xp, x).write(
        out, (slice(None), slice(None), slice(ph, ph + h), slice(pw, pw + w)), x, by_concat
    )


def crop_to(x: Any, padding: tuple[int, int], size: tuple[int, int]) -> Any:
    """The ``size`` (height, width) window of NCHW ``x`` starting at ``padding`` (``x``
    itself when that is all of it): undoes :func:`pad2d`."""
    ph, pw = padding
    if ph == 0 and pw == 0 and tuple(x.shape[2:]) == tuple(size):
        return x
    return x[:, :, ph : ph + size[0], pw : pw + size[1]]


def _grouped(xp: Any, a: Any, b: Any, groups: int, transpose_b: bool) -> Any:
    """``a`` (M, G Ka) times the block-diagonal matrix whose blocks are ``b[g]`` (``b``
    (G, Ka, Kb), or (G, Kb, Ka) when ``transpose_b``): (M, G Kb), as one (batched) GEMM."""
    if groups == 1:
        b0 = b[0, ...]
        return a @ (b0.T if transpose_b else b0)
    m = a.shape[0]
    ag = xp.permute_dims(xp.reshape(a, (m, groups, -1)), (1, 0, 2))
    bg = xp.permute_dims(b, (0, 2, 1)) if transpose_b else b
    out = ag @ bg
    return xp.reshape(xp.permute_dims(out, (1, 0, 2)), (m, -1))


def _grouped_t(xp: Any, a: Any, b: Any, groups: int, out: Any = None, ops: Any = None) -> Any:
    """``a.T @ b`` per group: ``a`` (M, G Ka), ``b`` (M, G Kb) -> (G, Ka, Kb). With ``out``
    (a C-contiguous array of G Ka Kb elements, from :func:`spare_grad`), the product is
    written into it by ``ops.matmul`` (the same GEMM) and ``out`` is returned."""
    m = a.shape[0]
    if groups == 1:
        if out is not None:
            ops.matmul(a.T, b, out=xp.reshape(out, (a.shape[1], b.shape[1]), copy=False))
            return out
        return xp.reshape(a.T @ b, (1, a.shape[1], b.shape[1]))
    ag = xp.permute_dims(xp.reshape(a, (m, groups, -1)), (1, 2, 0))
    bg = xp.permute_dims(xp.reshape(b, (m, groups, -1)), (1, 0, 2))
    if out is not None:
        shape = (groups, ag.shape[1], bg.shape[2])
        ops.matmul(ag, bg, out=xp.reshape(out, shape, copy=False))
        return out
    return ag @ bg


def _nhwc_rows(xp: Any, x: Any) -> Any:
    n, c, h, w = x.shape
    return xp.reshape(xp.permute_dims(x, (0, 2, 3, 1)), (n * h * w, c))


def _rows_nchw(xp: Any, rows: Any, n: int, h: int, w: int) -> Any:
    return xp.permute_dims(xp.reshape(rows, (n, h, w, rows.shape[1])), (0, 3, 1, 2))


class Convolution(Function):
    """The node of :func:`conv2d` (``transposed=False``) and :func:`conv_transpose2d`."""

    grad_may_alias = False
    trusted_grads = True

    def __init__(
        self,
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
        groups: int,
        transposed: bool = False,
        output_padding: tuple[int, int] = (0, 0),
    ) -> None:
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.groups, self.transposed, self.output_padding = groups, transposed, output_padding

    def forward(self, x: Any, w: Any, b: Any = None) -> Any:
        xp = self.xp
        # Where float16 is slow (NumPy on a CPU: software float16, 37x slower for a LeNet
        # step): compute in float32, store float16, as the Linear node does.
        c = self.c = ops_for(xp, x).compute(x)
        return c.narrow(self._forward_any(xp, c.widen(x), c.widen(w), c.widen(b)))

    def _forward_any(self, xp: Any, x: Any, w: Any, b: Any) -> Any:
        self.has_bias = b is not None
        self.x, self.w = x, w
        fused = backend_kernels(xp, x).get("convolution")
        self.fused = fused is not None
        if fused is not None:
            # The sizes are checked here too: the backend's convolution raises its own error
            # type (torch's RuntimeError) for a kernel that does not fit.
            self._output_geometry(x, w)
            return fused(
                x,
                w,
                b,
                self.stride,
                self.padding,
                self.dilation,
                self.transposed,
                self.output_padding,
                self.groups,
            )
        y = self._transposed_forward(xp, x, w) if self.transposed else self._forward(xp, x, w)
        if b is not None:
            y = y + xp.reshape(b, (1, -1, 1, 1))
        return y

    def _output_geometry(self, x: Any, w: Any) -> tuple[int, ...]:
        """The :func:`patch_geometry` of the convolution (of the transposed one: of the
        convolution whose adjoint it is, over its uncropped output), or a ShapeError where the
        kernel does not fit the padded input or the padding leaves no output."""
        n, c, h, wd = (int(s) for s in x.shape)
        kh, kw = int(w.shape[2]), int(w.shape[3])
        (sh, sw), (dh, dw), (ph, pw) = self.stride, self.dilation, self.padding
        if not self.transposed:
            return patch_geometry(
                (n, c, h + 2 * ph, wd + 2 * pw), (kh, kw), self.stride, self.dilation
            )
        hp = (h - 1) * sh + dh * (kh - 1) + 1 + self.output_padding[0]
        wp = (wd - 1) * sw + dw * (kw - 1) + 1 + self.output_padding[1]
        self.out_size = (hp - 2 * ph, wp - 2 * pw)
        if min(self.out_size) < 1:
            raise ShapeError(
                f"conv_transpose2d: padding {self.padding} leaves no output for an input of "
                f"height and width {(h, wd)}; use less padding"
            )
        return patch_geometry(
            (n, int(w.shape[1]) * self.groups, hp, wp), (kh, kw), self.stride, self.dilation
        )

    # y = conv(x): cols = im2col(pad(x)) (M, C kk); y = cols @ W^T per group.
    def _forward(self, xp: Any, x: Any, w: Any) -> Any:
        n = x.shape[0]
        o, cg, kh, kw = w.shape
        self.geometry = g = self._output_geometry(x, w)
        self.cols = cols = im2col_with(xp, pad2d(xp, x, self.padding), g)
        w3 = xp.reshape(w, (self.groups, o // self.groups, cg * kh * kw))
        y = _grouped(xp, cols, w3, self.groups, transpose_b=True)  # (M, O)
        return _rows_nchw(xp, y, n, g[10], g[11])

    # y = conv_transpose(x): cols = x rows @ W per group; y = crop(col2im(cols)).
    def _transposed_forward(self, xp: Any, x: Any, w: Any) -> Any:
        cin = x.shape[1]
        _, og, kh, kw = w.shape
        self.geometry = g = self._output_geometry(x, w)
        self.rows = rows = _nhwc_rows(xp, x)  # (N H W, Cin)
        w3 = xp.reshape(w, (self.groups, cin // self.groups, og * kh * kw))
        cols = _grouped(xp, rows, w3, self.groups, transpose_b=False)  # (N H W, Cout kk)
        return crop_to(col2im_with(xp, cols, g), self.padding, self.out_size)

    def backward(self, gy: Any) -> tuple[Any, ...]:
        c = self.c
        return tuple(c.narrow(g) for g in self._backward_any(c.widen(gy)))

    def _backward_any(self, gy: Any) -> tuple[Any, ...]:
        xp = self.xp
        need_x, need_w = self.needs_input_grad[:2]
        need_b = self.has_bias and self.needs_input_grad[2]
        if self.fused:
            gx, gw, gb = backend_kernels(xp, gy)["convolution_backward"](
                gy,
                self.x,
                self.w,
                self.stride,
                self.padding,
                self.dilation,
                self.transposed,
                self.output_padding,
                self.groups,
                (need_x, need_w, need_b),
            )
        else:
            if self.transposed:
                gb = xp.sum(gy, axis=(0, 2, 3)) if need_b else None
                gx, gw = self._transposed_backward(xp, gy, need_x, need_w)
            else:
                gx, gw, gb = self._backward(xp, gy, need_x, need_w, need_b)
        return (gx, gw, gb) if self.has_bias else (gx, gw)

    def _spare_weight_grad(self, xp: Any, gy: Any) -> tuple[Any, Any]:
        """``(array, ops)``: the array the weight gradient's product is written into: the
        weight's gradient array from the previous step, where ``zero_grad`` kept it and
        nothing else refers to it (:func:`spare_grad`; no weight-sized allocation a step),
        else a new array of the weight's shape where the backend can write into one
        (:meth:`~nnbackend.backends.ops.Ops.out_array`: the product reshaped would be a view,
        which could never be reused), else ``None``. Only where the node computes in the
        weight's own dtype: a widened float16 gradient is narrowed into a new array anyway."""
        ops = ops_for(xp, gy)
        if self.c is not NATIVE:
            return None, ops
        w = self.w
        out = spare_grad(self.inputs[1], ops)
        return (ops.out_array(tuple(w.shape), w.dtype) if out is None else out), ops

    def _backward(
        self, xp: Any, gy: Any, need_x: bool, need_w: bool, need_b: bool
    ) -> tuple[Any, Any, Any]:
        w, groups = self.w, self.groups
        h, wd = self.x.shape[2:]
        o = w.shape[0]
        # (M, O): free when gy is laid out like the forward's output (NHWC in memory), and
        # the bias gradient is then a sum over contiguous rows, not over strided axes.
        gy_rows = _nhwc_rows(xp, gy)
        gb = xp.sum(gy_rows, axis=0) if need_b else None
        gx = gw = None
        if need_w:
            out, ops = self._spare_weight_grad(xp, gy)
            gw = _grouped_t(xp, gy_rows, self.cols, groups, out, ops)
            gw = xp.reshape(gw, tuple(w.shape)) if out is None else out
        if need_x:
            w3 = xp.reshape(w, (groups, o // groups, -1))
            gcols = _grouped(xp, gy_rows, w3, groups, transpose_b=False)  # (M, C kk)
            gx = crop_to(col2im_with(xp, gcols, self.geometry), self.padding, (h, wd))
        return gx, gw, gb

    def _transposed_backward(self, xp: Any, gy: Any, need_x: bool, need_w: bool) -> tuple[Any, Any]:
        w, groups, g = self.w, self.groups, self.geometry
        n, cin, h, wd = self.x.shape
        hp, wp = g[2], g[3]
        ph, pw = self.padding
        # The padded gradient: the cropped-off border (and output padding) got no gradient.
        gy_p = xp.zeros((n, gy.shape[1], hp, wp), dtype=gy.dtype, device=gy.device)

        def by_concat() -> Any:
            padded = pad2d(xp, gy, self.padding)
            extra = (hp - padded.shape[2], wp - padded.shape[3])
            if extra != (0, 0):
                padded = xp.concat(
                    [
                        padded,
                        xp.zeros(
                            (n, gy.shape[1], extra[0], padded.shape[3]),
                            dtype=gy.dtype,
                            device=gy.device,
                        ),
                    ],
                    axis=2,
                )
                padded = xp.concat(
                    [
                        padded,
                        xp.zeros((n, gy.shape[1], hp, extra[1]), dtype=gy.dtype, device=gy.device),
                    ],
                    axis=3,
                )
            return padded

        key = (slice(None), slice(None), slice(ph, ph + gy.shape[2]), slice(pw, pw + gy.shape[3]))
        gy_p = ops_for(xp, gy).write(gy_p, key, gy, by_concat)
        gcols = im2col_with(xp, gy_p, g)  # (N H W, Cout kk)
        gx = gw = None
        if need_w:
            out, ops = self._spare_weight_grad(xp, gy)
            gw = _grouped_t(xp, self.rows, gcols, groups, out, ops)
            gw = xp.reshape(gw, tuple(w.shape)) if out is None else out
        if need_x:
            w3 = xp.reshape(w, (groups, cin // groups, -1))
            rows = _grouped(xp, gcols, w3, groups, transpose_b=True)  # (N H W, Cin)
            gx = _rows_nchw(xp, rows, n, h, wd)
        return gx, gw


def _check(name: str, x: Any, w: Any, b: Any, channels: int, groups: int, outputs: int) -> None:
    if not hasattr(x, "ndim"):
        raise not_an_array(x, name)
    if x.ndim != 4:
        raise ShapeError(
            f"{name}: input must be a batch of images (N, C, H, W), got shape {tuple(x.shape)}; "
            "add a batch axis with x.reshape(1, *x.shape) or a channel axis with "
            "x.reshape(N, 1, H, W)"
        )
    if w.ndim != 4:
        raise ShapeError(f"{name}: weight must have 4 axes, got shape {tuple(w.shape)}")
    if x.shape[1] != channels:
        raise ShapeError(
            f"{name}: input has {x.shape[1]} channels (shape {tuple(x.shape)}), the weight of "
            f"shape {tuple(w.shape)} with groups={groups} expects {channels}"
        )
    if x.dtype != w.dtype or (b is not None and b.dtype != w.dtype):
        same_backend(x, w, name)  # arrays of two backends: say so, not "float64 != float64"
        raise DtypeError(
            f"{name}: input dtype {x.dtype} differs from weight dtype {w.dtype}"
            + ("" if b is None else f" (bias {b.dtype})")
            + "; cast the input (xp.astype) or build the layer under the input's dtype"
        )
    if b is not None and b.ndim != 1:
        raise ShapeError(f"{name}: bias must be 1-D, got shape {tuple(b.shape)}")
    # One value per output channel: a (1,) bias would otherwise broadcast over all of them.
    if b is not None and tuple(b.shape) != (outputs,):
        raise ShapeError(
            f"{name}: bias has shape {tuple(b.shape)}, the weight of shape {tuple(w.shape)} "
            f"with groups={groups} makes {outputs} output channels; expected ({outputs},)"
        )


def _check_groups(name: str, groups: int, channels: int, what: str) -> None:
    if not isinstance(groups, int) or groups < 1:
        raise ArgumentError(f"{name}: groups must be a positive int, got {groups!r}")
    if channels % groups:
        raise ArgumentError(f"{name}: {what} ({channels}) must be divisible by groups ({groups})")


def _to_compute(x: Any, weight: Any, bias: Any) -> tuple[Any, Any, Any]:
    """Under a mixed precision policy ("mixed16"): the operands cast to its compute dtype
    (differentiably: each gradient comes back in its operand's dtype), else unchanged."""
    compute = mixed_compute()
    if compute is None:
        return x, weight, bias
    target = float_dtype(_data(weight), compute)
    return tuple(
        a if a is None or _data(a).dtype == target else cast(a, compute) for a in (x, weight, bias)
    )


def conv2d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: Pair = 1,
    padding: Pair = 0,
    dilation: Pair = 1,
    groups: int = 1,
) -> Tensor:
    """2-D convolution (cross-correlation, as in every framework) of NCHW ``x`` with
    ``weight`` of shape ``(out_channels, in_channels / groups, kh, kw)``, plus ``bias``
    (``(out_channels,)``), as one graph node. Matches ``torch.nn.functional.conv2d``.

    Output shape ``(N, out_channels, OH, OW)`` with ``OH = (H + 2 ph - dh (kh - 1) - 1) // sh
    + 1`` (:func:`conv_output_size`).

    Under a mixed precision policy ("mixed16") the operands are cast to its compute dtype
    (float16) first; the output is float16 and each gradient comes back in its operand's
    dtype (float32 master weights).

    Raises:
        ShapeError: ``x`` is not 4-D, its channels do not fit the weight, or the kernel does
            not fit the padded input.
        DtypeError: ``x``, ``weight`` and ``bias`` differ in dtype (outside a mixed policy).
        ArgumentError: bad ``stride``, ``padding``, ``dilation`` or ``groups``.
    """
    x, weight, bias = _to_compute(x, weight, bias)
    xd, wd, bd = _data(x), _data(weight), _data(bias)
    _check_groups("conv2d", groups, int(wd.shape[0]) if wd.ndim else 0, "out_channels")
    _check("conv2d", xd, wd, bd, int(wd.shape[1]) * groups, groups, int(wd.shape[0]))
    node = Convolution(
        as_pair(stride, "stride", 1),
        as_pair(padding, "padding", 0),
        as_pair(dilation, "dilation", 1),
        groups,
    )
    return node(x, weight) if bias is None else node(x, weight, bias)


def conv_transpose2d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: Pair = 1,
    padding: Pair = 0,
    output_padding: Pair = 0,
    groups: int = 1,
    dilation: Pair = 1,
) -> Tensor:
    """The transpose (gradient) of :func:`conv2d`, a.k.a. deconvolution, with ``weight`` of
    shape ``(in_channels, out_channels / groups, kh, kw)``. Matches
    ``torch.nn.functional.conv_transpose2d`` (same argument order).

    Output height ``(H - 1) sh - 2 ph + dh (kh - 1) + output_padding + 1``; ``output_padding``
    (smaller than the stride) picks among the input sizes that a strided
    convolution maps to the same output size.
    """
    x, weight, bias = _to_compute(x, weight, bias)
    xd, wd, bd = _data(x), _data(weight), _data(bias)
    _check_groups("conv_transpose2d", groups, int(wd.shape[0]) if wd.ndim else 0, "in_channels")
    _check("conv_transpose2d", xd, wd, bd, int(wd.shape[0]), groups, int(wd.shape[1]) * groups)
    stride_, dilation_ = as_pair(stride, "stride", 1), as_pair(dilation, "dilation", 1)
    out_pad = as_pair(output_padding, "output_padding", 0)
    if out_pad[0] >= stride_[0] or out_pad[1] >= stride_[1]:
        raise ArgumentError(
            f"conv_transpose2d: output_padding {out_pad} must be smaller than the stride {stride_}"
        )
    node = Convolution(stride_, as_pair(padding, "padding", 0), dilation_, groups, True, out_pad)
    return node(x, weight) if bias is None else node(x, weight, bias)


def _conv_init(shape: tuple[int, ...], fan_in: int, generator: Any) -> Any:
    # PyTorch's default (kaiming_uniform with a = sqrt(5)): U[-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bound = 1.0 / math.sqrt(fan_in)
    return init.uniform(shape, -bound, bound, generator=generator)


class _ConvNd(Module):
    """What Conv2d and ConvTranspose2d share: checked sizes, the weight and bias (PyTorch's
    layout and initialisation) and the repr."""

    output_padding = (0, 0)

    def _setup(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Pair,
        stride: Pair,
        padding: Pair,
        dilation: Pair,
        groups: int,
        bias: bool,
        generator: Any,
        *,
        transposed: bool,
    ) -> None:
        name = type(self).__name__
        in_channels = size_argument(name, "in_channels", in_channels)
        out_channels = size_argument(name, "out_channels", out_channels)
        _check_groups(name, groups, in_channels, "in_channels")
        _check_groups(name, groups, out_channels, "out_channels")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = as_pair(kernel_size, "kernel_size", 1)
        self.stride = as_pair(stride, "stride", 1)
        self.padding = as_pair(padding, "padding", 0)
        self.dilation = as_pair(dilation, "dilation", 1)
        self.groups = groups
        # Conv2d: (out, in / groups, kh, kw); ConvTranspose2d: (in, out / groups, kh, kw).
        first, second = (
            (self.in_channels, self.out_channels)
            if transposed
            else (self.out_channels, self.in_channels)
        )
        shape = (first, second // groups, *self.kernel_size)
        fan_in = math.prod(shape[1:])
        self.weight = Parameter(_conv_init(shape, fan_in, generator))
        if bias:
            self.bias = Parameter(_conv_init((self.out_channels,), fan_in, generator))
        else:
            self.register_parameter("bias", None)

    def _explain(self, x: Any, exc: Exception) -> Exception:
        return type(exc)(f"{self!r}: {exc}")

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.output_padding != (0, 0):
            text += f", output_padding={self.output_padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        return text + ("" if self.bias is not None else ", bias=False")


class Conv2d(_ConvNd):
    """2-D convolution layer over NCHW images (:func:`conv2d`).

    ``weight`` has shape ``(out_channels, in_channels / groups, kh, kw)`` (PyTorch's layout)
    and starts, like ``bias``, as U[-1/sqrt(fan_in), 1/sqrt(fan_in)) with ``fan_in = in_channels
    / groups * kh * kw`` (PyTorch's default), drawn from :mod:`nnbackend.random` or
    ``generator``.

    >>> import nnbackend as nb
    >>> conv = nb.nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1)
    >>> tuple(conv(nb.namespace().ones((1, 3, 32, 32))).shape)
    (1, 8, 16, 16)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Pair,
        stride: Pair = 1,
        padding: Pair = 0,
        dilation: Pair = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        generator: Any = None,
    ) -> None:
        super().__init__()
        self._setup(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            generator, transposed=False,
        )  # fmt: skip

    def forward(self, x: Any) -> Tensor:
        try:
            return conv2d(
                x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
            )
        except (ShapeError, DtypeError) as exc:
            raise self._explain(x, exc) from None


class ConvTranspose2d(_ConvNd):
    """Transposed 2-D convolution layer (:func:`conv_transpose2d`), the upsampling layer of
    decoders and GANs (DeZero's ``Deconv2d``).

    ``weight`` has shape ``(in_channels, out_channels / groups, kh, kw)`` (PyTorch's layout)
    and starts, like ``bias``, as U[-1/sqrt(fan_in), 1/sqrt(fan_in)) with ``fan_in =
    out_channels / groups * kh * kw``.

    >>> import nnbackend as nb
    >>> up = nb.nn.ConvTranspose2d(8, 3, kernel_size=4, stride=2, padding=1)
    >>> tuple(up(nb.namespace().ones((1, 8, 16, 16))).shape)
    (1, 3, 32, 32)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Pair,
        stride: Pair = 1,
        padding: Pair = 0,
        output_padding: Pair = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: Pair = 1,
        *,
        generator: Any = None,
    ) -> None:
        super().__init__()
        self._setup(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            generator, transposed=True,
        )  # fmt: skip
        self.output_padding = as_pair(output_padding, "output_padding", 0)

    def forward(self, x: Any) -> Tensor:
        try:
            return conv_transpose2d(
                x,
                self.weight,
                self.bias,
                self.stride,
                self.padding,
                self.output_padding,
                self.groups,
                self.dilation,
            )
        except (ShapeError, DtypeError) as exc:
            raise self._explain(x, exc) from None
