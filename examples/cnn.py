"""Train a small convolutional network on MNIST (or, with --quick, on the 8x8 digits).

    python examples/cnn.py                          # MNIST, numpy, float32 (downloads ~11 MB once)
    python examples/cnn.py --backend torch          # the same on torch (its own convolutions)
    python examples/cnn.py --quick                  # 8x8 digits from scikit-learn, no download

Two convolution blocks (Conv2d - BatchNorm2d - ReLU - MaxPool2d), then Flatten and Linear. The
script shows a progress bar, prints the test accuracy, saves the model (BatchNorm's running
statistics included), writes the loss curve and draws the first layer's filters as an image.
MNIST is cached in ~/.cache/nnbackend (or $NNBACKEND_CACHE); offline, the error message says how
to fetch the files by hand.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import nnbackend as nb
from nnbackend import nn, optim, registry
from nnbackend.errors import DownloadError


def build(quick: bool) -> nn.Sequential:
    if quick:  # 1x8x8 -> 16x8x8 -> 32x8x8 -> 32x4x4
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 4 * 4, 10),
        )  # fmt: skip
    # 1x28x28 -> 16x28x28 -> 16x14x14 -> 32x14x14 -> 32x7x7
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )  # fmt: skip


def draw_filters(conv: nn.Conv2d, path: Path) -> Path:
    """The first layer's filters, one grey-scale tile each (white = large weight)."""
    from matplotlib.figure import Figure

    weight = conv.weight.data
    host = registry.get(registry.backend_of(weight)).to_host(weight)
    n = host.shape[0]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(1.2 * cols, 1.2 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < n:
            ax.imshow(host[i, 0].astype("float32"), cmap="gray", interpolation="nearest")
    fig.suptitle(f"first layer: {n} filters of {host.shape[2]}x{host.shape[3]}")
    fig.savefig(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", help="numpy, torch, cupy, array_api_strict (default: active)")
    parser.add_argument("--dtype", default="float32", help="float64, float32 or float16")
    parser.add_argument("--quick", action="store_true", help="8x8 digits instead of MNIST")
    parser.add_argument("--epochs", type=int, default=None, help="default: 3, or 8 with --quick")
    parser.add_argument("--out", type=Path, default=Path("cnn-output"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    epochs = args.epochs or (8 if args.quick else 3)

    with nb.using(backend=args.backend, dtype=args.dtype):
        nb.random.seed(0)
        if args.quick:
            (x_train, t_train), (x_test, t_test) = nb.datasets.digits(images=True)
        else:
            try:
                (x_train, t_train), (x_test, t_test) = nb.datasets.mnist()
            except DownloadError as exc:
                print(f"{exc}\n\nOr run with --quick to use the 8x8 digits.", file=sys.stderr)
                return 1
        print(f"{x_train.shape[0]} training and {x_test.shape[0]} test images of shape "
              f"{tuple(x_train.shape[1:])} on {nb.get_backend()}")  # fmt: skip

        model = build(args.quick)
        print(model)
        trainer = nb.Trainer(
            model, nn.SoftmaxCrossEntropy(), optim.Adam(model.parameters(), lr=3e-3)
        )
        history = trainer.fit(
            x_train, t_train, epochs=epochs, batch_size=64 if not args.quick else 32, seed=0,
            validation=(x_test, t_test),
        )  # fmt: skip
        model.eval()  # BatchNorm uses its running statistics from here on
        loss, accuracy = trainer.evaluate(x_test, t_test)
        print(f"test loss {loss:.4f}, test accuracy {accuracy:.2%}")

        checkpoint = args.out / "cnn.npz"
        nb.save(model, checkpoint)
        print(f"model saved to {checkpoint} (parameters and BatchNorm buffers)")
        try:
            print(f"loss curve in {history.plot(args.out / 'cnn-loss.png')}")
            print(
                f"first layer's filters in {draw_filters(model[0], args.out / 'cnn-filters.png')}"
            )
        except ImportError as exc:
            print(f"no plots: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
