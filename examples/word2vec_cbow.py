"""Train word2vec (CBOW with negative sampling) as in the book's chapter 4.

The context words' input embeddings are averaged and scored against the target and five
negatives drawn from the unigram distribution to the power 0.75 (nn.NegativeSamplingLoss).
By default on Penn Treebank (downloaded once; see nb.datasets.ptb), with the book's
hyperparameters (window 5, 100 dimensions, batches of 100, the book's Adam):

    python examples/word2vec_cbow.py                            # PTB, numpy, float64
    python examples/word2vec_cbow.py --backend cupy --dtype float32
    python examples/word2vec_cbow.py --quick                    # a small generated corpus

It prints progress, the nearest words of a few queries, and plots the loss per epoch.
"""

from __future__ import annotations

import _seqcommon as common

import nnbackend as nb
from nnbackend import nn, optim


class CBOW(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int, corpus: object) -> None:
        super().__init__()
        self.embed_in = nn.Embedding(vocab_size, hidden_size)
        self.embed_in.weight.data = nn.init.normal((vocab_size, hidden_size), 0.01)  # the book
        self.loss = nn.NegativeSamplingLoss(vocab_size, hidden_size, corpus, 0.75, 5)

    def forward(self, contexts: object, target: object) -> nb.Tensor:
        h = self.embed_in(contexts).mean(axis=1)
        return self.loss(h, target)


def main() -> None:
    p = common.parser(__doc__, epochs=10)
    p.add_argument("--adam", choices=["book", "torch"], default="book")
    args = p.parse_args()
    with nb.using(backend=args.backend, dtype=args.dtype):
        nb.random.seed(0)
        if args.quick:
            corpus, word_to_id, id_to_word = nb.datasets.tiny_corpus()
            window, hidden, batch = 2, 16, 32
            queries = ["cat", "river", "sees"]
        else:
            corpus, word_to_id, id_to_word = nb.datasets.ptb("train")
            window, hidden, batch = 5, 100, 100
            queries = ["you", "year", "car", "toyota"]
        contexts, target = nb.text.create_contexts_target(corpus, window)
        model = CBOW(len(word_to_id), hidden, corpus)
        rule = optim.BookAdam if args.adam == "book" else optim.Adam
        opt = rule(model.parameters(), lr=0.01 if args.quick else 0.001)
        n = int(target.shape[0])
        iters = n // batch
        progress = common.Progress(iters)
        xp = nb.namespace()
        losses = []
        for epoch in range(1, args.epochs + 1):
            order = nb.random.permutation(n)
            total = 0.0
            for it in range(iters):
                idx = order[it * batch : (it + 1) * batch]
                loss = model(xp.take(contexts, idx, axis=0), xp.take(target, idx))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += common.item(loss)  # read back once per step (reported below)
                if (it + 1) % max(1, iters // 5) == 0:
                    progress.report(epoch, it + 1, loss=total / (it + 1))
            losses.append(total / iters)
        print(f"backend {nb.get_backend()}, dtype {nb.get_default_dtype()}")
        vectors = model.embed_in.weight.data
        for q in queries:
            if q in word_to_id:
                near = nb.text.most_similar(q, word_to_id, id_to_word, vectors, top=5)
                print(f"{q}: " + ", ".join(f"{w} {s:.2f}" for w, s in near))
        args.out.mkdir(parents=True, exist_ok=True)
        nb.save(model, args.out / "cbow.npz")
        common.plot_curve(args.out / "cbow_loss.png", losses, "epoch", "loss")


if __name__ == "__main__":
    main()
