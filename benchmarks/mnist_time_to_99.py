"""MNIST -> 99.0% test accuracy: cnnkit's fastest recipe against the standard PyTorch way, in one run.

The baseline is written here the way the well-known PyTorch MNIST example does it: a per-sample Dataset
(uint8 array -> PIL image -> float tensor -> normalise, one image at a time) read by a DataLoader, fp32,
NCHW, the example's two-convolution network, Adadelta (lr 1.0) with StepLR(gamma 0.7); it is evaluated
after every epoch and stops as soon as it reaches the target. cnnkit's recipe has a fixed epoch budget chosen
in advance (stopping on the test set is not allowed for it), and reports the accuracy that budget gives.
Wall clock includes reading the dataset files for both.

    python benchmarks/mnist_time_to_99.py --runs 3            # both, 3 seeds of cnnkit
    python benchmarks/mnist_time_to_99.py --skip-baseline     # cnnkit only
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from record import record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGET = 99.0


class ExampleNet(nn.Module):
    """The network of PyTorch's examples/mnist/main.py."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = self.dropout1(x)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)


class PerSampleMNIST(torch.utils.data.Dataset):
    """What torchvision's MNIST + ToTensor + Normalize do, one sample at a time."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        image = Image.fromarray(self.images[i], mode="L")
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0)
        return (x - 0.1307) / 0.3081, int(self.labels[i])


def run_baseline(max_epochs: int, seed: int) -> dict:
    from cnnkit.data.catalog import MNIST
    from cnnkit.data.download import locate
    from cnnkit.data.formats import read_idx

    torch.manual_seed(seed)
    start = time.perf_counter()
    arrays = {role: read_idx(locate(MNIST, f)) for role, f in MNIST.files.items()}
    train = torch.utils.data.DataLoader(PerSampleMNIST(arrays["train_images"], arrays["train_labels"]),
                                        batch_size=64, shuffle=True)
    test = torch.utils.data.DataLoader(PerSampleMNIST(arrays["test_images"], arrays["test_labels"]),
                                       batch_size=1000)
    model = ExampleNet()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    accuracy, epoch = 0.0, 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        for x, y in train:
            optimizer.zero_grad()
            F.nll_loss(model(x), y).backward()
            optimizer.step()
        scheduler.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test:
                correct += int((model(x).argmax(1) == y).sum())
        accuracy = 100.0 * correct / len(test.dataset)
        print(f"  baseline epoch {epoch}: {accuracy:.2f}% at {time.perf_counter() - start:.1f}s", flush=True)
        if accuracy >= TARGET:
            break
    return {"seconds": time.perf_counter() - start, "accuracy": accuracy, "epochs": epoch,
            "reached": accuracy >= TARGET}


def run_cnnkit(recipe: Path, seed: int) -> dict:
    from cnnkit import TrainConfig, Trainer, create_model, load_dataset
    from cnnkit.cli import load_recipe

    options = load_recipe(recipe)
    model_name, data = options.pop("model"), options.pop("data")
    model_args = options.pop("model_args", {})
    options.update(seed=seed, progress=False)
    start = time.perf_counter()
    bundle = load_dataset(data)
    torch.manual_seed(seed)
    model = create_model(model_name, num_classes=10, in_channels=1, **model_args)
    summary = Trainer(model, bundle, TrainConfig.from_dict(options)).fit()
    return {"seconds": time.perf_counter() - start, "accuracy": summary["test_acc"],
            "epochs": summary["epochs_completed"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "lenet5_mnist.yaml")
    parser.add_argument("--runs", type=int, default=3, help="cnnkit seeds")
    parser.add_argument("--baseline-epochs", type=int, default=14)
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    runs = [run_cnnkit(args.recipe, seed) for seed in range(args.runs)]
    for seed, r in enumerate(runs):
        print(f"cnnkit seed {seed}: {r['accuracy']:.2f}% in {r['seconds']:.1f}s ({r['epochs']} epochs)")
    seconds = statistics.mean(r["seconds"] for r in runs)
    accs = [r["accuracy"] for r in runs]
    baseline = None if args.skip_baseline else run_baseline(args.baseline_epochs, seed=0)
    print(f"\n{'variant':<28}{'seconds':>10}{'accuracy':>12}")
    print(f"{'cnnkit ' + args.recipe.stem:<28}{seconds:>10.1f}{statistics.mean(accs):>11.2f}%  "
          f"(min {min(accs):.2f}%, {len(runs)} seeds)")
    extra = {}
    if baseline:
        mark = "" if baseline["reached"] else f" (did not reach {TARGET}% in {baseline['epochs']} epochs)"
        print(f"{'pytorch-standard':<28}{baseline['seconds']:>10.1f}{baseline['accuracy']:>11.2f}%{mark}")
        print(f"ratio: cnnkit is {baseline['seconds'] / seconds:.1f}x faster")
        extra = {"baseline": "pytorch-standard", "baseline_value": round(baseline["seconds"], 1),
                 "ratio": round(baseline["seconds"] / seconds, 1)}
        record("mnist_time_to_99", "pytorch-standard", "seconds", round(baseline["seconds"], 1),
               accuracy=round(baseline["accuracy"], 2), epochs=baseline["epochs"], runs=1, data="mnist")
    record("mnist_time_to_99", f"cnnkit-{args.recipe.stem}", "seconds", round(seconds, 1),
           accuracy=round(statistics.mean(accs), 2), accuracy_min=round(min(accs), 2), runs=len(runs),
           data="mnist", **extra)


if __name__ == "__main__":
    main()
