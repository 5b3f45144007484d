"""Train the book's "better" LSTM language model (chapter 6) and report perplexity.

Two stacked LSTM layers with dropout and weight tying (the output layer reuses the embedding
matrix), truncated backpropagation through time over 35 steps with stateful layers, SGD with
gradient clipping, and the learning rate divided by 4 when the validation perplexity worsens.
The book's settings: 650 units, batches of 20, lr 20, 40 epochs, on Penn Treebank:

    python examples/lstm_lm.py --backend cupy --dtype float32    # the book's GPU headline
    python examples/lstm_lm.py --quick                           # small corpus and model

It prints progress and the perplexity per epoch, and plots the perplexity curve.
"""

from __future__ import annotations

import _seqcommon as common

import nnbackend as nb
from nnbackend import nn, optim
from nnbackend.nn import functional as F


class BetterRnnlm(nn.Module):
    def __init__(self, vocab_size: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden)
        self.embed.weight.data = nn.init.normal((vocab_size, hidden), 0.01)  # the book's
        self.drop1, self.drop2, self.drop3 = (nn.Dropout(dropout) for _ in range(3))
        self.lstm1 = nn.LSTM(hidden, hidden, stateful=True)
        self.lstm2 = nn.LSTM(hidden, hidden, stateful=True)
        self.out_bias = nn.Parameter(nn.init.zeros((vocab_size,)))

    def logits(self, xs: object) -> nb.Tensor:
        h = self.drop1(self.embed(xs))
        h, _ = self.lstm1(h)
        h, _ = self.lstm2(self.drop2(h))
        # Weight tying: the output layer is the embedding matrix, transposed.
        return F.linear(self.drop3(h), self.embed.weight.T, self.out_bias)

    def forward(self, xs: object, ts: object) -> nb.Tensor:
        return F.softmax_cross_entropy(self.logits(xs), ts)

    def reset_state(self) -> None:
        self.lstm1.reset_state()
        self.lstm2.reset_state()


def main() -> None:
    args = common.parser(__doc__, epochs=40).parse_args()
    with nb.using(backend=args.backend, dtype=args.dtype):
        nb.random.seed(0)
        if args.quick:
            corpus, word_to_id, _ = nb.datasets.tiny_corpus(2000)
            split = int(corpus.shape[0]) * 9 // 10
            train, val = corpus[:split], corpus[split:]
            hidden, batch, steps, lr = 64, 10, 20, 5.0
        else:
            train, word_to_id, _ = nb.datasets.ptb("train")
            val = nb.datasets.ptb("val").corpus
            hidden, batch, steps, lr = 650, 20, 35, 20.0
        model = BetterRnnlm(len(word_to_id), hidden, 0.5)
        params = list(model.parameters())
        opt = optim.SGD(params, lr=lr)
        xs, ts = train[:-1], train[1:]
        iters = int(xs.shape[0]) // (batch * steps)
        progress = common.Progress(iters)
        best, curve = float("inf"), []
        for epoch in range(1, args.epochs + 1):
            model.train()
            model.reset_state()
            total, time_idx = 0.0, 0
            for it in range(iters):
                bx, bt = nb.text.lm_batch(xs, ts, batch, steps, time_idx)
                time_idx += steps
                loss = model(bx, bt)
                opt.zero_grad()
                loss.backward()
                optim.clip_grad_norm(params, 0.25)
                opt.step()
                total += common.item(loss)
                if (it + 1) % max(1, iters // 4) == 0:
                    ppl = nb.text.perplexity(total / (it + 1))
                    progress.report(epoch, it + 1, perplexity=ppl)
            model.eval()
            val_ppl = nb.text.eval_perplexity(model, val, batch_size=batch, time_size=steps)
            model.reset_state()
            curve.append(val_ppl)
            print(f"epoch {epoch}: validation perplexity {val_ppl:.2f} (lr {opt.lr:g})")
            if val_ppl < best:
                best = val_ppl
            else:
                opt.lr /= 4.0
        print(f"backend {nb.get_backend()}, dtype {nb.get_default_dtype()}, best {best:.2f}")
        args.out.mkdir(parents=True, exist_ok=True)
        nb.save(model, args.out / "lstm_lm.npz")
        common.plot_curve(args.out / "perplexity.png", curve, "epoch", "validation perplexity")


if __name__ == "__main__":
    main()
