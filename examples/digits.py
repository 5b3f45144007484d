"""Classify handwritten digits: a real data set, a validation split, Adam and checkpoints.

scikit-learn ships 1797 scanned digits of 8x8 pixels (no download needed). This script trains
a small multi-layer perceptron on three quarters of them and measures the accuracy on the
rest, which it never trains on:

    pip install scikit-learn
    python examples/digits.py                         # numpy, float32
    python examples/digits.py --backend torch

It keeps the weights of the epoch with the best validation accuracy (a callback), saves them
with the optimizer state, and shows that training resumes from the checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nnbackend as nb
from nnbackend import nn, optim


class KeepBest(nb.train.Callback):
    """After each epoch, save the model if its validation accuracy is the best so far."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.best = -1.0

    def on_epoch_end(self, trainer: nb.Trainer, history: nb.History) -> None:
        accuracy = history.val_accuracy[-1]
        if accuracy is not None and accuracy > self.best:
            self.best = accuracy
            nb.save(trainer.model, self.path, optimizer=trainer.optimizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", help="numpy, torch, cupy, array_api_strict (default: active)")
    parser.add_argument("--dtype", default="float32", help="float64, float32 or float16")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("digits-output"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    with nb.using(backend=args.backend, dtype=args.dtype):
        nb.random.seed(0)
        # 64 pixel values in [0, 1] per image; labels 0..9. Stratified 75/25 split.
        (x_train, t_train), (x_test, t_test) = nb.datasets.digits()
        print(f"{x_train.shape[0]} training and {x_test.shape[0]} test images")

        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        optimizer = optim.Adam(model.parameters(), lr=0.01)
        trainer = nb.Trainer(model, nn.SoftmaxCrossEntropy(), optimizer)

        best = args.out / "digits-best.npz"
        history = trainer.fit(
            x_train,
            t_train,
            epochs=args.epochs,
            batch_size=32,
            seed=0,
            validation=(x_test, t_test),  # evaluated after every epoch
            callbacks=[KeepBest(best)],
        )
        for epoch, (loss, acc) in enumerate(
            zip(history.val_loss, history.val_accuracy, strict=True), start=1
        ):
            print(f"epoch {epoch:2d}: test loss {loss:.4f}, test accuracy {acc:.1%}")

        # Back to the best epoch's weights (and optimizer state), then a few more epochs.
        nb.load(model, best, optimizer=optimizer)
        print(f"best test accuracy {trainer.evaluate(x_test, t_test)[1]:.1%} (from {best})")
        trainer.fit(x_train, t_train, epochs=3, batch_size=32, seed=1, progress=False)
        print(f"after 3 more epochs: {trainer.evaluate(x_test, t_test)[1]:.1%}")

        # Predictions are backend arrays; look at the first few.
        xp = nb.namespace()
        predicted = xp.argmax(trainer.predict(x_test[:10, ...]), axis=1)
        print("predicted:", [int(v) for v in predicted])
        print("actual:   ", [int(v) for v in t_test[:10]])

        try:
            history.plot(args.out / "digits-loss.png")
            print(f"loss curve in {args.out / 'digits-loss.png'}")
        except ImportError as exc:
            print(f"no plot: {exc}")


if __name__ == "__main__":
    main()
