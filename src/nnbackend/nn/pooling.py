"""Pooling over NCHW images and ``Flatten``: ``max_pool2d``, ``avg_pool2d``,
``adaptive_avg_pool2d`` and their layers.

Max and average pooling visit each window one kernel offset at a time: ``kh * kw`` strided
views of the (padded) input, combined elementwise (a running maximum or sum), and the backward
adds each offset's share back by strided slice assignment (max pooling: to the first maximum of
each window, as in PyTorch); no copy of the windows and no loop over output pixels. Backends
without slice assignment use the convolutions' im2col (:func:`nnbackend.nn.conv.im2col`) and
its scatter-add col2im instead. Adaptive average pooling is two small matrix products with
averaging matrices (exact for any input and output size, global pooling included).

>>> import nnbackend as nb
>>> from nnbackend import nn
>>> x = nb.namespace().ones((2, 3, 8, 8))
>>> tuple(nn.MaxPool2d(2)(x).shape), tuple(nn.AdaptiveAvgPool2d(1)(x).shape)
((2, 3, 4, 4), (2, 3, 1, 1))
"""

from __future__ import annotations

import math
from typing import Any

from nnbackend.autograd.function import Function
from nnbackend.autograd.ops import reshape
from nnbackend.autograd.tensor import Tensor
from nnbackend.errors import ArgumentError, ShapeError
from nnbackend.namespace import backend_for, ops_for
from nnbackend.nn.conv import (
    Pair,
    as_pair,
    backend_kernels,
    col2im_with,
    crop_to,
    im2col_with,
    pad2d,
    patch_geometry,
)
from nnbackend.nn.module import Module

__all__ = [
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "Flatten",
    "MaxPool2d",
    "adaptive_avg_pool2d",
    "avg_pool2d",
    "flatten",
    "max_pool2d",
]


def _data(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def _check_images(name: str, x: Any) -> None:
    if getattr(x, "ndim", None) != 4:
        raise ShapeError(
            f"{name}: input must be a batch of images (N, C, H, W), got shape "
            f"{tuple(getattr(x, 'shape', ()))}"
        )
    if not backend_for(x)[0].isdtype(x.dtype, "real floating"):
        raise ArgumentError(f"{name}: input must be floating, got dtype {x.dtype}")


class _Pool(Function):
    grad_may_alias = False
    trusted_grads = True

    def __init__(
        self,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
    ) -> None:
        self.kernel, self.stride, self.padding, self.dilation = kernel, stride, padding, dilation

    def _padded(self, x: Any, fill: float) -> Any:
        """``x`` padded with ``fill``; sets the geometry and whether windows go by offsets."""
        self._setup(x)
        return pad2d(self.xp, x, self.padding, fill)

    def _setup(self, x: Any) -> None:
        """Check the arguments against ``x``; set the geometry and the way windows go."""
        n, c, h, w = x.shape
        self.in_shape = (n, c, h, w)
        (ph, pw), (kh, kw) = self.padding, self.kernel
        if ph > kh // 2 or pw > kw // 2:
            raise ArgumentError(
                f"pooling padding {self.padding} must be at most half the kernel size {self.kernel}"
            )
        self.geometry = patch_geometry(
            (n, c, h + 2 * ph, w + 2 * pw), self.kernel, self.stride, self.dilation
        )
        # Where arrays take slice assignment, a window is visited one kernel offset at a time
        # (kh kw strided views of the input, no copy); elsewhere through im2col / col2im.
        self.by_offsets = USE_OFFSETS and ops_for(self.xp, x).inplace

    def _offsets(self) -> Any:
        """``(offset, rows, columns)``: the strided view of every window's element ``offset``."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        oh, ow = self.geometry[10], self.geometry[11]
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
                yield i * kw + j, rows, slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)

    def _columns(self, padded: Any) -> Any:
        """The windows of every channel as rows: (N C OH OW, kh kw)."""
        n, c, hp, wp = padded.shape
        g = (n * c, 1, *self.geometry[2:])
        return im2col_with(self.xp, self.xp.reshape(padded, (n * c, 1, hp, wp)), g)

    def _from_columns(self, gcols: Any) -> Any:
        n, c, h, w = self.in_shape
        g = self.geometry
        padded = col2im_with(self.xp, gcols, (n * c, 1, *g[2:]))
        return crop_to(self.xp.reshape(padded, (n, c, g[2], g[3])), self.padding, (h, w))

    def _scatter(self, parts: Any, dtype: Any, device: Any) -> Any:
        """The input gradient from ``(offset, rows, columns, gradient)`` of each offset."""
        n, c, h, w = self.in_shape
        g = self.geometry
        out = self.xp.zeros((n, c, g[2], g[3]), dtype=dtype, device=device)
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        disjoint = sh >= (kh - 1) * dh + 1 and sw >= (kw - 1) * dw + 1  # windows never overlap
        for rows, columns, part in parts:
            if disjoint:
                out[:, :, rows, columns] = part
            else:
                out[:, :, rows, columns] = out[:, :, rows, columns] + part
        return crop_to(out, self.padding, (h, w))

    def _out(self, y: Any) -> Any:
        n, c = self.in_shape[:2]
        return self.xp.reshape(y, (n, c, self.geometry[10], self.geometry[11]))


# Visit pooling windows by kernel offsets where the backend allows (tests turn it off to check
# the im2col path, which backends without slice assignment use).
USE_OFFSETS = True


class MaxPool(_Pool):
    """The node of :func:`max_pool2d`: the gradient goes to the first maximum of each
    window (as in PyTorch), a NaN counting as the maximum (the window's first NaN; PyTorch's
    own kernels pick its last), and never to the padding (a window of ``-inf`` gives it to
    its first element inside the image, as PyTorch does)."""

    fused: Any = None

    def forward(self, x: Any) -> Any:
        xp = self.xp
        kernels = backend_kernels(xp, x)
        if "max_pool2d" in kernels:  # the backend's own (torch's)
            self._setup(x)
            self.fused, self.x = kernels["max_pool2d_backward"], x
            args = (self.kernel, self.stride, self.padding, self.dilation)
            y, self.indices = kernels["max_pool2d"](x, *args)
            return y
        padded = self._padded(x, -math.inf)
        if not self.by_offsets:
            cols = self._columns(padded)
            y = xp.max(cols, axis=1)
            self.argmax = xp.argmax(cols, axis=1)
            if self.padding != (0, 0):
                # A window of -inf: its first element inside the image, not the padding.
                inside = self._columns(self._inside(padded.shape, x.dtype, x.device))
                first_inside = xp.argmax(inside, axis=1)
                self.argmax = xp.where(y == -math.inf, first_inside, self.argmax)
            self.width = cols.shape[1]
            return self._out(y)
        # A running maximum (one ufunc call per offset, no branches; NaN propagates as in
        # torch); which offset held it is found in the backward, from the saved input.
        self.padded = padded
        y = None
        for _, rows, columns in self._offsets():
            v = padded[:, :, rows, columns]
            y = xp.asarray(v, copy=True) if y is None else xp.maximum(y, v)
        self.y = y
        return y

    def backward(self, gy: Any) -> Any:
        xp = self.xp
        if self.fused is not None:
            args = (self.kernel, self.stride, self.padding, self.dilation)
            return self.fused(gy, self.x, *args, self.indices)
        zero = xp.zeros((), dtype=gy.dtype, device=gy.device)
        if not self.by_offsets:
            positions = xp.arange(self.width, dtype=self.argmax.dtype, device=gy.device)
            hit = xp.reshape(self.argmax, (-1, 1)) == positions
            return self._from_columns(xp.where(hit, xp.reshape(gy, (-1, 1)), zero))
        return self._scatter(self._first_maxima(gy), gy.dtype, gy.device)

    def _inside(self, shape: tuple[int, ...], dtype: Any, device: Any) -> Any:
        """An image of ``shape`` (the padded input's) and ``dtype``: 1 inside the image, 0
        in the padding."""
        n, c, h, w = self.in_shape
        ones = self.xp.ones((n, c, h, w), dtype=dtype, device=device)
        return pad2d(self.xp, ones, self.padding, 0.0)

    def _first_maxima(self, gy: Any) -> Any:
        """Each offset's share of ``gy``: where its element is the window's first maximum."""
        xp, y, padded = self.xp, self.y, self.padded
        # Two rare cases need more work per offset: a NaN window (NaN equals nothing) and,
        # with padding, a window of -inf (whose first maximum may be the padding's -inf).
        # Host arrays are asked once whether either occurs (one pass over the output; a
        # replay runs this again); device arrays always take the safe way (no read-back).
        host = backend_for(y)[1].on_host(y)
        nan_safe = not host or bool(xp.any(y != y))
        inside = None
        if self.padding != (0, 0) and (not host or bool(xp.any(y == -math.inf))):
            hp, wp = padded.shape[2:]
            ph, pw = self.padding
            inside = xp.zeros((1, 1, hp, wp), dtype=xp.bool, device=padded.device)
            inside[:, :, ph : hp - ph, pw : wp - pw] = True
        taken = None
        for _, rows, columns in self._offsets():
            v = padded[:, :, rows, columns]
            hit = v == y
            if nan_safe:  # v != v: a NaN, which made its window's maximum NaN
                hit = hit | (v != v)
            if inside is not None:
                hit = hit & inside[:, :, rows, columns]
            if taken is None:
                taken = hit
            else:
                hit = hit & ~taken
                taken = taken | hit
            yield rows, columns, gy * xp.astype(hit, gy.dtype)


class AvgPool(_Pool):
    """The node of :func:`avg_pool2d` (padding counts as zeros, PyTorch's default
    ``count_include_pad=True``)."""

    def forward(self, x: Any) -> Any:
        xp = self.xp
        padded = self._padded(x, 0.0)
        self.width = self.kernel[0] * self.kernel[1]
        if not self.by_offsets:
            return self._out(xp.mean(self._columns(padded), axis=1))
        total: Any = None  # the sum over the offsets (there is at least one)
        for _, rows, columns in self._offsets():
            v = padded[:, :, rows, columns]
            total = v if total is None else total + v
        return total * (1.0 / self.width)

    def backward(self, gy: Any) -> Any:
        xp = self.xp
        share = gy * (1.0 / self.width)
        if not self.by_offsets:
            share = xp.reshape(share, (-1, 1))
            return self._from_columns(xp.broadcast_to(share, (share.shape[0], self.width)))
        return self._scatter(
            ((rows, columns, share) for _, rows, columns in self._offsets()), gy.dtype, gy.device
        )


def _pool_args(
    kernel_size: Pair, stride: Pair | None, padding: Pair, dilation: Pair
) -> tuple[tuple[int, int], ...]:
    kernel = as_pair(kernel_size, "kernel_size", 1)
    return (
        kernel,
        kernel if stride is None else as_pair(stride, "stride", 1),
        as_pair(padding, "padding", 0),
        as_pair(dilation, "dilation", 1),
    )


def max_pool2d(
    x: Any, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0, dilation: Pair = 1
) -> Tensor:
    """The maximum of each ``kernel_size`` window of NCHW ``x`` (``stride`` defaults to the
    kernel size; ``padding``, at most half the kernel, counts as ``-inf``). Matches
    ``torch.nn.functional.max_pool2d``."""
    _check_images("max_pool2d", _data(x))
    return MaxPool(*_pool_args(kernel_size, stride, padding, dilation))(x)


def avg_pool2d(x: Any, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0) -> Tensor:
    """The mean of each ``kernel_size`` window of NCHW ``x`` (``stride`` defaults to the
    kernel size; ``padding`` counts as zeros and in the divisor). Matches
    ``torch.nn.functional.avg_pool2d`` with its defaults."""
    _check_images("avg_pool2d", _data(x))
    return AvgPool(*_pool_args(kernel_size, stride, padding, 1))(x)


class AdaptiveAvgPool(Function):
    """The node of :func:`adaptive_avg_pool2d`: ``P_h @ x @ P_w^T`` with averaging
    matrices ``P`` (row ``i`` averages input ``floor(i H / oh) .. ceil((i + 1) H / oh)``)."""

    grad_may_alias = False
    trusted_grads = True

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size

    def _matrix(self, out: int, length: int, like: Any) -> Any:
        xp = self.xp
        rows = xp.reshape(xp.arange(out, dtype=xp.int64, device=like.device), (-1, 1))
        cols = xp.reshape(xp.arange(length, dtype=xp.int64, device=like.device), (1, -1))
        start = (rows * length) // out
        end = ((rows + 1) * length + out - 1) // out
        inside = xp.astype((cols >= start) & (cols < end), like.dtype)
        return inside / xp.astype(end - start, like.dtype)

    def forward(self, x: Any) -> Any:
        self.ph = self._matrix(self.size[0], x.shape[2], x)
        self.pw = self._matrix(self.size[1], x.shape[3], x)
        return self.ph @ x @ self.pw.T

    def backward(self, gy: Any) -> Any:
        return self.ph.T @ gy @ self.pw


def adaptive_avg_pool2d(x: Any, output_size: int | tuple[int, int]) -> Tensor:
    """Average pooling of NCHW ``x`` to ``output_size`` (an int or a pair) whatever its height
    and width; ``output_size=1`` is global average pooling. Matches
    ``torch.nn.functional.adaptive_avg_pool2d``."""
    xd = _data(x)
    _check_images("adaptive_avg_pool2d", xd)
    return AdaptiveAvgPool(as_pair(output_size, "output_size", 1))(x)


def flatten(x: Any, start_dim: int = 1) -> Tensor:
    """``x`` with the axes from ``start_dim`` on merged into one: (N, C, H, W) -> (N, C H W)."""
    shape = tuple(_data(x).shape)
    if not -len(shape) <= start_dim < max(len(shape), 1):
        raise ArgumentError(f"flatten: start_dim {start_dim} is out of range for shape {shape}")
    # A 0-d array counts as 1-d (as in torch): flatten(scalar, 0) has shape (1,).
    start = start_dim % max(len(shape), 1)
    return reshape(x, (*shape[:start], math.prod(shape[start:])))


class MaxPool2d(Module):
    """Max pooling layer (:func:`max_pool2d`); ``stride`` defaults to ``kernel_size``."""

    def __init__(
        self,
        kernel_size: Pair,
        stride: Pair | None = None,
        padding: Pair = 0,
        dilation: Pair = 1,
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = _pool_args(
            kernel_size, stride, padding, dilation
        )

    def forward(self, x: Any) -> Tensor:
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(Module):
    """Average pooling layer (:func:`avg_pool2d`); ``stride`` defaults to ``kernel_size``."""

    def __init__(self, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding, _ = _pool_args(kernel_size, stride, padding, 1)

    def forward(self, x: Any) -> Tensor:
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Adaptive average pooling layer (:func:`adaptive_avg_pool2d`); ``AdaptiveAvgPool2d(1)``
    is global average pooling."""

    def __init__(self, output_size: int | tuple[int, int]) -> None:
        super().__init__()
        self.output_size = as_pair(output_size, "output_size", 1)

    def forward(self, x: Any) -> Tensor:
        return adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class Flatten(Module):
    """Merge the axes from ``start_dim`` (default 1) on: the step from convolutional features
    (N, C, H, W) to a ``Linear`` layer's (N, C H W)."""

    def __init__(self, start_dim: int = 1) -> None:
        super().__init__()
        self.start_dim = int(start_dim)

    def forward(self, x: Any) -> Tensor:
        return flatten(x, self.start_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}"
