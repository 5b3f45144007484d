"""The book's chapter-5 RNN language model, reproduced: a faithful NumPy re-implementation of
its TimeEmbedding / TimeRNN / TimeAffine / TimeSoftmaxWithLoss and training loop
(ch05/train_custom_loop.py) against the same model built from nnbackend layers, from the same
initial weights and batches: the perplexity of every epoch agrees in float64 to 1e-9."""

from __future__ import annotations

from typing import Any

import numpy as np

import nnbackend as nb
from nnbackend import nn, optim


class BookTimeEmbedding:
    def __init__(self, W: np.ndarray) -> None:
        self.params, self.grads = [W], [np.zeros_like(W)]

    def forward(self, xs: np.ndarray) -> np.ndarray:
        (W,) = self.params
        self.idx = xs
        return W[xs]

    def backward(self, dout: np.ndarray) -> None:
        dW = self.grads[0]
        dW[...] = 0
        np.add.at(dW, self.idx.reshape(-1), dout.reshape(-1, dout.shape[-1]))


class BookRNN:
    def __init__(self, Wx: np.ndarray, Wh: np.ndarray, b: np.ndarray) -> None:
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]

    def forward(self, x: np.ndarray, h_prev: np.ndarray) -> np.ndarray:
        Wx, Wh, b = self.params
        h_next = np.tanh(np.dot(h_prev, Wh) + np.dot(x, Wx) + b)
        self.cache = (x, h_prev, h_next)
        return h_next

    def backward(self, dh_next: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Wx, Wh, _b = self.params
        x, h_prev, h_next = self.cache
        dt = dh_next * (1 - h_next**2)
        db = np.sum(dt, axis=0)
        dWh = np.dot(h_prev.T, dt)
        dh_prev = np.dot(dt, Wh.T)
        dWx = np.dot(x.T, dt)
        dx = np.dot(dt, Wx.T)
        self.grads[0][...] = dWx
        self.grads[1][...] = dWh
        self.grads[2][...] = db
        return dx, dh_prev


class BookTimeRNN:
    def __init__(self, Wx: np.ndarray, Wh: np.ndarray, b: np.ndarray) -> None:
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.h: Any = None

    def forward(self, xs: np.ndarray) -> np.ndarray:
        Wx, _Wh, _b = self.params
        N, T, _D = xs.shape
        H = Wx.shape[1]
        self.layers = []
        hs = np.empty((N, T, H))
        if self.h is None:
            self.h = np.zeros((N, H))
        for t in range(T):
            layer = BookRNN(*self.params)
            self.h = layer.forward(xs[:, t, :], self.h)
            hs[:, t, :] = self.h
            self.layers.append(layer)
        return hs

    def backward(self, dhs: np.ndarray) -> np.ndarray:
        Wx, _Wh, _b = self.params
        N, T, _H = dhs.shape
        D = Wx.shape[0]
        dxs = np.empty((N, T, D))
        dh = 0
        grads = [0, 0, 0]
        for t in reversed(range(T)):
            layer = self.layers[t]
            dx, dh = layer.backward(dhs[:, t, :] + dh)
            dxs[:, t, :] = dx
            for i, grad in enumerate(layer.grads):
                grads[i] += grad
        for i, grad in enumerate(grads):
            self.grads[i][...] = grad
        return dxs


class BookTimeAffine:
    def __init__(self, W: np.ndarray, b: np.ndarray) -> None:
        self.params = [W, b]
        self.grads = [np.zeros_like(W), np.zeros_like(b)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        N, T, _D = x.shape
        W, b = self.params
        self.x = x
        return (np.dot(x.reshape(N * T, -1), W) + b).reshape(N, T, -1)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        x = self.x
        N, T, _D = x.shape
        W, _b = self.params
        dout = dout.reshape(N * T, -1)
        rx = x.reshape(N * T, -1)
        self.grads[0][...] = np.dot(rx.T, dout)
        self.grads[1][...] = np.sum(dout, axis=0)
        return np.dot(dout, W.T).reshape(*x.shape)


class BookTimeSoftmaxWithLoss:
    def forward(self, xs: np.ndarray, ts: np.ndarray) -> float:
        N, T, V = xs.shape
        mask = ts != -1
        xs, ts = xs.reshape(N * T, V), ts.reshape(N * T)
        mask = mask.reshape(N * T)
        x = xs - xs.max(axis=1, keepdims=True)
        ys = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
        ls = np.log(ys[np.arange(N * T), ts])
        ls *= mask
        self.cache = (ts, ys, mask, (N, T, V))
        return float(-np.sum(ls) / mask.sum())

    def backward(self) -> np.ndarray:
        ts, ys, mask, (N, T, V) = self.cache
        dx = ys.copy()
        dx[np.arange(N * T), ts] -= 1
        dx /= mask.sum()
        dx *= mask[:, np.newaxis]
        return dx.reshape((N, T, V))


def _batches(xs: np.ndarray, ts: np.ndarray, batch_size: int, time_size: int):
    """ch05/train_custom_loop.py's batching, verbatim."""
    data_size = len(xs)
    jump = data_size // batch_size
    offsets = [i * jump for i in range(batch_size)]
    max_iters = data_size // (batch_size * time_size)
    time_idx = 0
    for _ in range(max_iters):
        batch_x = np.empty((batch_size, time_size), dtype="i")
        batch_t = np.empty((batch_size, time_size), dtype="i")
        for t in range(time_size):
            for i, offset in enumerate(offsets):
                batch_x[i, t] = xs[(offset + time_idx) % data_size]
                batch_t[i, t] = ts[(offset + time_idx) % data_size]
            time_idx += 1
        yield batch_x, batch_t


def test_chapter5_rnnlm_perplexity_per_epoch_equals_the_books() -> None:
    V_corpus = np.asarray(nb.datasets.tiny_corpus(n_sentences=60).corpus)
    corpus = V_corpus[:300]
    V = int(corpus.max()) + 1
    D = H = 16
    batch_size, time_size, lr, epochs = 5, 5, 0.1, 8
    rng = np.random.default_rng(0)
    embed_W = rng.standard_normal((V, D)) / 100
    rnn_Wx = rng.standard_normal((D, H)) / np.sqrt(D)
    rnn_Wh = rng.standard_normal((H, H)) / np.sqrt(H)
    rnn_b = np.zeros(H)
    affine_W = rng.standard_normal((H, V)) / np.sqrt(H)
    affine_b = np.zeros(V)
    xs, ts = corpus[:-1], corpus[1:]

    layers = [
        BookTimeEmbedding(embed_W.copy()),
        BookTimeRNN(rnn_Wx.copy(), rnn_Wh.copy(), rnn_b.copy()),
        BookTimeAffine(affine_W.copy(), affine_b.copy()),
    ]
    loss_layer = BookTimeSoftmaxWithLoss()
    book_ppl = []
    for _ in range(epochs):
        total, count = 0.0, 0
        for bx, bt in _batches(xs, ts, batch_size, time_size):
            out = bx
            for layer in layers:
                out = layer.forward(out)
            loss = loss_layer.forward(out, bt)
            dout = loss_layer.backward()
            for layer in reversed(layers):
                dout = layer.backward(dout)
            for layer in layers:
                for p, g in zip(layer.params, layer.grads, strict=True):
                    p -= lr * g  # the book's SGD
            total += loss
            count += 1
        book_ppl.append(np.exp(total / count))

    with nb.using(backend="numpy", dtype="float64"):
        embed = nn.Embedding(V, D)
        rnn = nn.RNN(D, H, stateful=True)
        affine = nn.Linear(H, V)
        embed.weight.data = embed_W.copy()
        rnn.weight_x.data, rnn.weight_h.data = rnn_Wx.copy(), rnn_Wh.copy()
        rnn.bias.data = rnn_b.copy()
        affine.weight.data, affine.bias.data = affine_W.copy(), affine_b.copy()
        params = [*embed.parameters(), *rnn.parameters(), *affine.parameters()]
        opt = optim.SGD(params, lr=lr)
        ours = []
        for _ in range(epochs):
            total, count = 0.0, 0
            for bx, bt in _batches(xs, ts, batch_size, time_size):
                hs, _ = rnn(embed(bx.astype(np.int64)))
                loss = nn.functional.softmax_cross_entropy(affine(hs), bt.astype(np.int64))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item()
                count += 1
            ours.append(np.exp(total / count))
    np.testing.assert_allclose(ours, book_ppl, rtol=1e-9, atol=0)
    assert book_ppl[-1] < book_ppl[0] * 0.8  # it learns: the comparison is not of two stalls
