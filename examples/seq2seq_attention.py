"""Translate dates into ISO format with seq2seq and attention (the book's chapter 8).

An LSTM encoder reads the (reversed) date text; an LSTM decoder, started from the encoder's
final state, attends over all encoder states at each step (nn.TimeAttention) and predicts the
next character from [context, decoder state]. Trained with Adam and gradient clipping on the
generated date-format task (nb.datasets.date_format), as in the book:

    python examples/seq2seq_attention.py                       # numpy, float64
    python examples/seq2seq_attention.py --backend torch --dtype float32
    python examples/seq2seq_attention.py --quick               # fewer, shorter epochs

It prints progress and the test accuracy per epoch, and plots the attention map of one date.
"""

from __future__ import annotations

import _seqcommon as common

import nnbackend as nb
from nnbackend import nn, optim
from nnbackend.nn import functional as F


class AttentionSeq2seq(nn.Module):
    def __init__(self, vocab_size: int, wordvec: int, hidden: int) -> None:
        super().__init__()
        self.enc_embed = nn.Embedding(vocab_size, wordvec)
        self.enc_lstm = nn.LSTM(wordvec, hidden)
        self.dec_embed = nn.Embedding(vocab_size, wordvec)
        self.dec_lstm = nn.LSTM(wordvec, hidden)
        self.attention = nn.TimeAttention()
        # The book's Affine on concat(context, h) written as two products summed.
        self.out_context = nn.Linear(hidden, vocab_size, bias=False)
        self.out_state = nn.Linear(hidden, vocab_size)
        for emb in (self.enc_embed, self.dec_embed):
            emb.weight.data = nn.init.normal(tuple(emb.weight.shape), 0.01)  # the book's

    def encode(self, xs: object) -> tuple[nb.Tensor, tuple[nb.Tensor, nb.Tensor]]:
        return self.enc_lstm(self.enc_embed(xs))

    def decode(self, enc_hs: nb.Tensor, ys: object, state: object) -> tuple[nb.Tensor, object]:
        dec_hs, state = self.dec_lstm(self.dec_embed(ys), state)
        c = self.attention(enc_hs, dec_hs)
        return self.out_context(c) + self.out_state(dec_hs), state

    def forward(self, xs: object, ts: object) -> nb.Tensor:
        enc_hs, (h, _) = self.encode(xs)
        # The book starts the decoder from the encoder's last h and a zero cell state.
        logits, _ = self.decode(enc_hs, ts[:, :-1], (h, None))
        return F.softmax_cross_entropy(logits, ts[:, 1:])

    def generate(self, xs: object, start: object, length: int) -> list[object]:
        """Greedy decoding, one step at a time, for a batch."""
        xp = nb.namespace()
        with nb.no_grad():
            enc_hs, (h, _) = self.encode(xs)
            state: object = (h, None)
            y = start
            out = []
            for _ in range(length):
                logits, state = self.decode(enc_hs, y, state)
                y = xp.argmax(logits.data, axis=-1)
                out.append(y[:, 0])
        return out


def main() -> None:
    args = common.parser(__doc__, epochs=10).parse_args()
    with nb.using(backend=args.backend, dtype=args.dtype):
        nb.random.seed(0)
        xp = nb.namespace()
        if args.quick:
            data = nb.datasets.date_format(2000)
            wordvec, hidden, batch = 16, 64, 64
        else:
            data = nb.datasets.date_format()
            wordvec, hidden, batch = 16, 256, 128
        # The book reverses the input sequences (it helps the decoder's first steps).
        x_train, x_test = xp.flip(data.x_train, axis=1), xp.flip(data.x_test, axis=1)
        t_train, t_test = data.t_train, data.t_test
        model = AttentionSeq2seq(len(data.char_to_id), wordvec, hidden)
        params = list(model.parameters())
        opt = optim.Adam(params, lr=0.001)
        n = int(x_train.shape[0])
        iters = n // batch
        progress = common.Progress(iters)
        accuracy = []
        n_eval = min(500, int(x_test.shape[0]))
        start = t_test[:n_eval, :1]
        for epoch in range(1, args.epochs + 1):
            order = nb.random.permutation(n)
            total = 0.0
            for it in range(iters):
                idx = order[it * batch : (it + 1) * batch]
                loss = model(xp.take(x_train, idx, axis=0), xp.take(t_train, idx, axis=0))
                opt.zero_grad()
                loss.backward()
                optim.clip_grad_norm(params, 5.0)
                opt.step()
                total += common.item(loss)
                if (it + 1) % max(1, iters // 4) == 0:
                    progress.report(epoch, it + 1, loss=total / (it + 1))
            guess = model.generate(x_test[:n_eval], start, int(t_test.shape[1]) - 1)
            right = xp.all(xp.stack(guess, axis=1) == t_test[:n_eval, 1:], axis=1)
            acc = float(xp.sum(xp.astype(right, xp.int64))) / n_eval
            accuracy.append(acc)
            print(f"epoch {epoch}: test accuracy {acc:.1%}")
        print(f"backend {nb.get_backend()}, dtype {nb.get_default_dtype()}")
        args.out.mkdir(parents=True, exist_ok=True)
        nb.save(model, args.out / "seq2seq_attention.npz")
        common.plot_curve(args.out / "accuracy.png", accuracy, "epoch", "test accuracy")
        # The attention map of the first test date: which input characters each output used.
        model(x_test[:1], t_test[:1])
        weights = nb.Tensor(model.attention.attention_weights[0]).tolist()
        chars = data.id_to_char
        inputs = [chars[int(i)] for i in nb.Tensor(x_test[0]).tolist()]
        outputs = [chars[int(i)] for i in nb.Tensor(t_test[0, 1:]).tolist()]
        common.plot_matrix(args.out / "attention.png", weights, inputs, outputs)


if __name__ == "__main__":
    main()
