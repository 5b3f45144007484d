"""The book's chapter-6 "better" LSTM language model step, as the LSTM benchmark's baseline:
"Deep Learning from Scratch 2", ``ch06/better_rnnlm.py`` with ``common/time_layers.py``
(TimeEmbedding, TimeDropout, TimeLSTM, TimeAffine, TimeSoftmaxWithLoss), and the training
step of ``common/trainer.py``'s RnnlmTrainer: ``remove_duplicate`` (weight tying),
``clip_grads`` and the ``SGD`` of ``common/optimizer.py``. The same array operations and
structure as the book (a layer object per time step, gradients copied into preallocated
arrays); ``xp`` is numpy or cupy, as the book's ``common/np.py`` switches with ``GPU = True``.
"""

from __future__ import annotations

from typing import Any


def _sigmoid(xp: Any, x: Any) -> Any:
    return 1 / (1 + xp.exp(-x))


class _LSTM:
    def __init__(self, xp: Any, Wx: Any, Wh: Any, b: Any) -> None:
        self.xp = xp
        self.params = [Wx, Wh, b]
        self.grads = [xp.zeros_like(Wx), xp.zeros_like(Wh), xp.zeros_like(b)]

    def forward(self, x: Any, h_prev: Any, c_prev: Any) -> tuple[Any, Any]:
        xp = self.xp
        Wx, Wh, b = self.params
        _, H = h_prev.shape
        A = xp.dot(x, Wx) + xp.dot(h_prev, Wh) + b
        f, g, i, o = A[:, :H], A[:, H : 2 * H], A[:, 2 * H : 3 * H], A[:, 3 * H :]
        f, g, i, o = _sigmoid(xp, f), xp.tanh(g), _sigmoid(xp, i), _sigmoid(xp, o)
        c_next = f * c_prev + g * i
        h_next = o * xp.tanh(c_next)
        self.cache = (x, h_prev, c_prev, i, f, g, o, c_next)
        return h_next, c_next

    def backward(self, dh_next: Any, dc_next: Any) -> tuple[Any, Any, Any]:
        xp = self.xp
        Wx, Wh, _ = self.params
        x, h_prev, c_prev, i, f, g, o, c_next = self.cache
        tanh_c_next = xp.tanh(c_next)
        ds = dc_next + (dh_next * o) * (1 - tanh_c_next**2)
        dc_prev = ds * f
        di, df, do, dg = ds * g, ds * c_prev, dh_next * tanh_c_next, ds * i
        di *= i * (1 - i)
        df *= f * (1 - f)
        do *= o * (1 - o)
        dg *= 1 - g**2
        dA = xp.hstack((df, dg, di, do))
        self.grads[0][...] = xp.dot(x.T, dA)
        self.grads[1][...] = xp.dot(h_prev.T, dA)
        self.grads[2][...] = dA.sum(axis=0)
        return xp.dot(dA, Wx.T), xp.dot(dA, Wh.T), dc_prev


class _TimeLSTM:
    def __init__(self, xp: Any, Wx: Any, Wh: Any, b: Any) -> None:
        self.xp = xp
        self.params = [Wx, Wh, b]
        self.grads = [xp.zeros_like(Wx), xp.zeros_like(Wh), xp.zeros_like(b)]
        self.h = self.c = None

    def forward(self, xs: Any) -> Any:
        xp = self.xp
        Wx, _, _ = self.params
        N, T, _ = xs.shape
        H = Wx.shape[1] // 4
        self.layers = []
        hs = xp.empty((N, T, H), dtype="f")
        if self.h is None:
            self.h = xp.zeros((N, H), dtype="f")
        if self.c is None:
            self.c = xp.zeros((N, H), dtype="f")
        for t in range(T):
            layer = _LSTM(xp, *self.params)
            self.h, self.c = layer.forward(xs[:, t, :], self.h, self.c)
            hs[:, t, :] = self.h
            self.layers.append(layer)
        return hs

    def backward(self, dhs: Any) -> Any:
        xp = self.xp
        Wx, _, _ = self.params
        N, T, _ = dhs.shape
        D = Wx.shape[0]
        dxs = xp.empty((N, T, D), dtype="f")
        dh, dc = 0, 0
        grads = [0, 0, 0]
        for t in reversed(range(T)):
            layer = self.layers[t]
            dx, dh, dc = layer.backward(dhs[:, t, :] + dh, dc)
            dxs[:, t, :] = dx
            for i, grad in enumerate(layer.grads):
                grads[i] += grad
        for i, grad in enumerate(grads):
            self.grads[i][...] = grad
        return dxs


class _TimeEmbedding:
    def __init__(self, xp: Any, W: Any) -> None:
        self.xp = xp
        self.params, self.grads = [W], [xp.zeros_like(W)]

    def forward(self, xs: Any) -> Any:
        xp = self.xp
        N, T = xs.shape
        (W,) = self.params
        out = xp.empty((N, T, W.shape[1]), dtype="f")
        self.idx = []
        for t in range(T):
            out[:, t, :] = W[xs[:, t]]
            self.idx.append(xs[:, t])
        return out

    def backward(self, dout: Any) -> None:
        xp = self.xp
        grad = 0
        for t, idx in enumerate(self.idx):
            dW = xp.zeros_like(self.params[0])
            if xp.__name__ == "cupy":
                import cupyx

                cupyx.scatter_add(dW, idx, dout[:, t, :])
            else:
                xp.add.at(dW, idx, dout[:, t, :])
            grad += dW
        self.grads[0][...] = grad


class _TimeDropout:
    def __init__(self, xp: Any, ratio: float) -> None:
        self.xp, self.ratio, self.params, self.grads = xp, ratio, [], []

    def forward(self, xs: Any) -> Any:
        flg = self.xp.random.rand(*xs.shape) > self.ratio
        self.mask = flg.astype(self.xp.float32) * (1.0 / (1.0 - self.ratio))
        return xs * self.mask

    def backward(self, dout: Any) -> Any:
        return dout * self.mask


class _TimeAffine:
    def __init__(self, xp: Any, W: Any, b: Any) -> None:
        self.xp = xp
        self.params = [W, b]
        self.grads = [xp.zeros_like(W), xp.zeros_like(b)]

    def forward(self, x: Any) -> Any:
        N, T, _ = x.shape
        W, b = self.params
        self.x = x
        return (self.xp.dot(x.reshape(N * T, -1), W) + b).reshape(N, T, -1)

    def backward(self, dout: Any) -> Any:
        xp = self.xp
        x = self.x
        N, T, _ = x.shape
        W, _ = self.params
        dout = dout.reshape(N * T, -1)
        self.grads[0][...] = xp.dot(x.reshape(N * T, -1).T, dout)
        self.grads[1][...] = xp.sum(dout, axis=0)
        return xp.dot(dout, W.T).reshape(*x.shape)


class _TimeSoftmaxWithLoss:
    def __init__(self, xp: Any) -> None:
        self.xp, self.ignore_label = xp, -1

    def forward(self, xs: Any, ts: Any) -> Any:
        xp = self.xp
        N, T, V = xs.shape
        mask = ts != self.ignore_label
        xs, ts, mask = xs.reshape(N * T, V), ts.reshape(N * T), mask.reshape(N * T)
        x = xs - xs.max(axis=1, keepdims=True)
        x = xp.exp(x)
        ys = x / x.sum(axis=1, keepdims=True)
        ls = xp.log(ys[xp.arange(N * T), ts])
        ls *= mask
        self.cache = (ts, ys, mask, (N, T, V))
        return -xp.sum(ls) / mask.sum()

    def backward(self) -> Any:
        ts, ys, mask, (N, T, V) = self.cache
        dx = ys
        dx[self.xp.arange(N * T), ts] -= 1
        dx /= mask.sum()
        dx *= mask[:, None]
        return dx.reshape((N, T, V))


def _remove_duplicate(xp: Any, params: list[Any], grads: list[Any]) -> tuple[list, list]:
    params, grads = params[:], grads[:]
    while True:
        find_flg = False
        L = len(params)
        for i in range(0, L - 1):
            for j in range(i + 1, L):
                if params[i] is params[j]:
                    grads[i] += grads[j]
                    find_flg = True
                    params.pop(j)
                    grads.pop(j)
                elif (
                    params[i].ndim == 2
                    and params[j].ndim == 2
                    and params[i].T.shape == params[j].shape
                    and xp.all(params[j] == params[i].T)
                ):
                    grads[i] += grads[j].T
                    find_flg = True
                    params.pop(j)
                    grads.pop(j)
                if find_flg:
                    break
            if find_flg:
                break
        if not find_flg:
            break
    return params, grads


def _clip_grads(xp: Any, grads: list[Any], max_norm: float) -> None:
    total_norm = 0
    for grad in grads:
        total_norm += xp.sum(grad**2)
    total_norm = xp.sqrt(total_norm)
    rate = max_norm / (total_norm + 1e-6)
    if rate < 1:
        for grad in grads:
            grad *= rate


class BookBetterRnnlm:
    """``ch06/better_rnnlm.py``'s model plus one RnnlmTrainer step (``step(xs, ts)``)."""

    def __init__(self, xp: Any, V: int, D: int, H: int, dropout: float, seed: int = 0) -> None:
        self.xp = xp
        rn = xp.random.RandomState(seed).randn if xp.__name__ == "numpy" else None
        if rn is None:
            xp.random.seed(seed)
            rn = xp.random.randn
        embed_W = (rn(V, D) / 100).astype("f")
        ws = []
        for d in (D, H):
            ws += [
                (rn(d, 4 * H) / xp.sqrt(d)).astype("f"),
                (rn(H, 4 * H) / xp.sqrt(H)).astype("f"),
                xp.zeros(4 * H).astype("f"),
            ]
        affine_b = xp.zeros(V).astype("f")
        self.layers = [
            _TimeEmbedding(xp, embed_W),
            _TimeDropout(xp, dropout),
            _TimeLSTM(xp, *ws[:3]),
            _TimeDropout(xp, dropout),
            _TimeLSTM(xp, *ws[3:]),
            _TimeDropout(xp, dropout),
            _TimeAffine(xp, embed_W.T, affine_b),  # weight tying
        ]
        self.loss_layer = _TimeSoftmaxWithLoss(xp)
        self.params, self.grads = [], []
        for layer in self.layers:
            self.params += layer.params
            self.grads += layer.grads

    def step(self, xs: Any, ts: Any, lr: float = 20.0, max_grad: float = 0.25) -> float:
        xp = self.xp
        out = xs
        for layer in self.layers:
            out = layer.forward(out)
        loss = self.loss_layer.forward(out, ts)
        dout = self.loss_layer.backward()
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        params, grads = _remove_duplicate(xp, self.params, self.grads)
        _clip_grads(xp, grads, max_grad)
        for p, g in zip(params, grads, strict=True):
            p -= lr * g
        return float(loss)
