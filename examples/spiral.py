"""Train the book's first network on the spiral data set.

"Deep Learning from Scratch 2", chapter 1, trains a two-layer network (2 inputs, 10 sigmoid
units, 3 classes) on three interleaved spiral arms with plain SGD. This is the same program
written with nnbackend, so it runs unchanged on NumPy, PyTorch, CuPy or array-api-strict, in
float64, float32 or float16:

    python examples/spiral.py                         # numpy, float64
    python examples/spiral.py --backend torch --dtype float32
    NNBACKEND=cupy python examples/spiral.py          # on a GPU

It prints the accuracy, saves the weights in float16 (half the bytes of float32), loads them
back, and writes plots when matplotlib is installed (pip install 'nnbackend[plot]').
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nnbackend as nb
from nnbackend import nn, optim
from nnbackend.train import plot_decision_boundary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", help="numpy, torch, cupy, array_api_strict (default: active)")
    parser.add_argument("--dtype", help="float64, float32 or float16 (default: active)")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("spiral-output"))
    args = parser.parse_args()

    # Everything inside this block uses the chosen backend and dtype.
    with nb.using(backend=args.backend, dtype=args.dtype):
        nb.random.seed(0)  # the same seed gives the same weights on every backend

        # 1. Data: 300 points in 2-D, integer labels 0, 1, 2 (on the active backend).
        x, t = nb.datasets.spiral()

        # 2. The model: Affine -> Sigmoid -> Affine, as in the book.
        model = nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))

        # 3. Loss and optimizer: softmax with cross-entropy, SGD with learning rate 1.0.
        loss_fn = nn.SoftmaxCrossEntropy()
        optimizer = optim.SGD(model.parameters(), lr=1.0)

        # 4. Train: 300 epochs of batches of 30, shuffled each epoch, with a progress bar.
        trainer = nb.Trainer(model, loss_fn, optimizer)
        history = trainer.fit(x, t, epochs=args.epochs, batch_size=30, seed=0)
        loss, accuracy = trainer.evaluate(x, t)
        print(f"backend {nb.get_backend()}, dtype {nb.get_default_dtype()}")
        print(
            f"loss {loss:.4f}, accuracy {accuracy:.1%}, "
            f"{history.time_per_step * 1e6:.0f} us per step"
        )

        # 5. Save the weights in float16, then load them into a fresh model.
        args.out.mkdir(parents=True, exist_ok=True)
        checkpoint = args.out / "spiral.npz"
        nb.save(model, checkpoint, dtype="float16")
        fresh = nn.Sequential(nn.Linear(2, 10), nn.Sigmoid(), nn.Linear(10, 3))
        nb.load(fresh, checkpoint)  # cast back to the active dtype, onto the active backend
        _, reloaded = nb.Trainer(fresh, loss_fn, optimizer).evaluate(x, t)
        print(
            f"saved {checkpoint} ({checkpoint.stat().st_size} bytes); "
            f"reloaded model's accuracy {reloaded:.1%}"
        )

        # 6. Plots (optional: they need matplotlib).
        try:
            history.plot(args.out / "loss.png")
            plot_decision_boundary(model, x, t, args.out / "decision_boundary.png")
            print(f"plots in {args.out}/")
        except ImportError as exc:
            print(f"no plots: {exc}")


if __name__ == "__main__":
    main()
