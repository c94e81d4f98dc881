"""Our CNN trainer vs a seed-style torchvision DataLoader loop — same model, epochs and data — and the
real-only CNN on the full 60k train set with the `quick` profile.

    python bench/trainer.py [--epochs 10] [--size 5000] [--skip-full]

Prints throughput (training images/s) of both loops side by side in one run, their ratio, both test
accuracies, and the full-data run's test accuracy and wall time.  No timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from synthboost.classifiers import CNNClassifier, CNNConfig, SmallCNN
from synthboost.config import DataConfig, build
from synthboost.data import load_fashion_mnist, make_split
from synthboost.metrics import classification_metrics


class SeedStyleDataset(Dataset):
    """What torchvision's FashionMNIST does per item: uint8 -> PIL image -> ToTensor."""

    def __init__(self, x, y):
        self.x, self.y, self.tf = x, y, transforms.ToTensor()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.tf(Image.fromarray(self.x[i].numpy(), mode="L")), int(self.y[i])


def seed_style_train(x, y, *, epochs: int, batch_size: int = 64, lr: float = 1e-3, seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    net = SmallCNN()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loader = DataLoader(SeedStyleDataset(x, y), batch_size=batch_size, shuffle=True)
    for _ in range(epochs):
        net.train()
        for xb, yb in loader:
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def accuracy(net, x, y) -> float:
    from synthboost.data import to_float

    pred = torch.cat([net(to_float(x[i:i + 2000])).argmax(1) for i in range(0, len(x), 2000)])
    return classification_metrics(y.numpy(), pred.numpy())["accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--size", type=int, default=5000)
    ap.add_argument("--skip-full", action="store_true", help="skip the 60k-image quick-profile run")
    args = ap.parse_args()

    split = make_split(DataConfig(regime="balanced", size=args.size), 0)
    n = len(split.train_y)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; balanced {args.size} "
          f"({n} train images), {args.epochs} epochs each\n")

    t0 = time.perf_counter()
    seed_net = seed_style_train(split.train_x, split.train_y, epochs=args.epochs)
    t_seed = time.perf_counter() - t0
    acc_seed = accuracy(seed_net, split.test_x, split.test_y)

    ours = CNNClassifier(build(CNNConfig, {"epochs": args.epochs}, profile="quick"), seed=0)
    t0 = time.perf_counter()
    ours.fit(split.train_x, split.train_y)
    t_ours = time.perf_counter() - t0
    acc_ours = classification_metrics(split.test_y.numpy(), ours.predict(split.test_x))["accuracy"]

    rows = [("seed-style DataLoader loop", t_seed, acc_seed), ("synthboost CNNClassifier", t_ours, acc_ours)]
    print(f"{'trainer':<28}{'seconds':>9}{'images/s':>11}{'test acc':>10}")
    for name, t, acc in rows:
        print(f"{name:<28}{t:>9.1f}{n * args.epochs / t:>11.0f}{acc:>10.4f}")
    print(f"\nthroughput ratio (ours / seed-style): {t_seed / t_ours:.2f}x   "
          f"accuracy difference: {100 * (acc_ours - acc_seed):+.2f} pt")

    if not args.skip_full:
        data = load_fashion_mnist()
        full = CNNClassifier(build(CNNConfig, profile="quick"), seed=0)
        t0 = time.perf_counter()
        full.fit(data.train_x, data.train_y)
        t_full = time.perf_counter() - t0
        acc = classification_metrics(data.test_y.numpy(), full.predict(data.test_x))["accuracy"]
        print(f"\nreal-only CNN, full 60k train set, quick profile ({full.config.epochs} epochs): "
              f"test accuracy {acc:.4f}, wall time {t_full:.0f} s ({60000 * full.config.epochs / t_full:.0f} images/s)")


if __name__ == "__main__":
    main()
