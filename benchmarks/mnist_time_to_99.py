"""MNIST -> 99.0% test accuracy: cnnkit's fastest recipe against the standard PyTorch way, in one run.

The baseline is written here the way the well-known PyTorch MNIST example does it: a per-sample Dataset
(uint8 array -> PIL image -> float tensor -> normalise, one image at a time) read by a DataLoader, fp32,
NCHW, the example's two-convolution network, Adadelta (lr 1.0) with StepLR(gamma 0.7); it is evaluated
after every epoch and stops as soon as it reaches the target. cnnkit's recipe has a fixed epoch budget chosen
in advance (stopping on the test set is not allowed for it), and reports the accuracy that budget gives.
Wall clock includes reading the dataset files for both. It does not include loading the libraries: Python,
torch, and torch's compiler package (torch._dynamo), which torch.optim loads when the first optimiser of the
process is built (about 1 s on a 2-core CPU), are loaded before either side's clock starts; otherwise the first
cnnkit seed pays it and the baseline, timed later in the same process, does not.

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
import torch._dynamo  # noqa: F401  (loaded with torch, not inside a timed run: see the docstring)
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
    """What torchvision's MNIST (or FashionMNIST) + ToTensor + Normalize do, one sample at a time."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: float = 0.1307, std: float = 0.3081):
        self.images, self.labels, self.mean, self.std = images, labels, mean, std

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        image = Image.fromarray(self.images[i], mode="L")
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0)
        return (x - self.mean) / self.std, int(self.labels[i])


def run_standard_way(spec, model: nn.Module, optimizer, scheduler, loss_fn, batch_size: int, target: float,
                     max_epochs: int, time_cap: float = float("inf"), mean: float = 0.1307,
                     std: float = 0.3081) -> dict:
    """The usual hand-written loop over a per-sample DataLoader, evaluated after every epoch; it stops at the
    target, after ``max_epochs``, or at the first epoch end past ``time_cap`` seconds. The clock starts before
    the dataset files are read."""
    from cnnkit.data.download import locate
    from cnnkit.data.formats import read_idx

    start = time.perf_counter()
    arrays = {role: read_idx(locate(spec, f)) for role, f in spec.files.items()}
    train = torch.utils.data.DataLoader(PerSampleMNIST(arrays["train_images"], arrays["train_labels"], mean, std),
                                        batch_size=batch_size, shuffle=True)
    test = torch.utils.data.DataLoader(PerSampleMNIST(arrays["test_images"], arrays["test_labels"], mean, std),
                                       batch_size=1000)
    accuracy, epoch = 0.0, 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        for x, y in train:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test:
                correct += int((model(x).argmax(1) == y).sum())
        accuracy = 100.0 * correct / len(test.dataset)
        elapsed = time.perf_counter() - start
        print(f"  baseline epoch {epoch}: {accuracy:.2f}% at {elapsed:.1f}s", flush=True)
        if accuracy >= target or elapsed > time_cap:
            break
    return {"seconds": time.perf_counter() - start, "accuracy": accuracy, "epochs": epoch,
            "reached": accuracy >= target}


def run_baseline(max_epochs: int, seed: int) -> dict:
    """PyTorch's MNIST example: its network, Adadelta lr 1.0, StepLR(gamma 0.7), batch 64."""
    from cnnkit.data.catalog import MNIST

    torch.manual_seed(seed)
    model = ExampleNet()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    return run_standard_way(MNIST, model, optimizer, scheduler, F.nll_loss, 64, TARGET, max_epochs)


def run_cnnkit(recipe: Path, seed: int, overrides: dict | None = None, train_subset: int | None = None,
               test_subset: int | None = None) -> dict:
    """One run of ``recipe`` (its options replaced by ``overrides``, its splits cut to the subsets when given).
    ``seconds``: wall clock from reading the dataset to the final test figure; ``fit_seconds``: from building the
    Trainer on the data in memory (what GPU benchmarks such as airbench time), the GPU's queue waited for."""
    from cnnkit import TrainConfig, Trainer, create_model, load_dataset
    from cnnkit.data.datasets import subset_bundle
    from cnnkit.train.recipe import load_recipe

    options = load_recipe(recipe)
    model_name, data = options.pop("model"), options.pop("data")
    model_args = options.pop("model_args", {})
    options.update(overrides or {})
    options.update(seed=seed, progress=False)
    start = time.perf_counter()
    bundle = subset_bundle(load_dataset(data), train_subset, test_subset)
    torch.manual_seed(seed)
    model = create_model(model_name, num_classes=len(bundle.classes), in_channels=bundle.image_shape[0], **model_args)
    fit_start = time.perf_counter()
    trainer = Trainer(model, bundle, TrainConfig.from_dict(options))
    summary = trainer.fit()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    end = time.perf_counter()
    return {"seconds": end - start, "fit_seconds": end - fit_start, "accuracy": summary["test_acc"],
            "epochs": summary["epochs_completed"], "device": trainer.device}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "lenet5_mnist.yaml")
    parser.add_argument("--runs", type=int, default=3, help="cnnkit seeds")
    parser.add_argument("--baseline-epochs", type=int, default=14)
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    runs = [run_cnnkit(args.recipe, seed) for seed in range(args.runs)]
    baseline = None if args.skip_baseline else run_baseline(args.baseline_epochs, seed=0)
    report_time_to_accuracy("mnist_time_to_99", args.recipe, runs, baseline, "pytorch-standard", TARGET, "mnist")


def print_runs(recipe: Path, runs: list[dict], data: str = "") -> tuple[float, list[float]]:
    """Each seed's figure, then the table's cnnkit row; returns (mean seconds, accuracies)."""
    for seed, r in enumerate(runs):
        print(f"cnnkit seed {seed}: {r['accuracy']:.2f}% in {r['seconds']:.1f}s ({r['epochs']} epochs) {data}")
    seconds = statistics.mean(r["seconds"] for r in runs)
    accs = [r["accuracy"] for r in runs]
    print(f"\n{'variant':<30}{'seconds':>10}{'accuracy':>12}   {data}")
    print(f"{'cnnkit ' + recipe.stem:<30}{seconds:>10.1f}{statistics.mean(accs):>11.2f}%  "
          f"(min {min(accs):.2f}%, {len(runs)} seeds, {runs[0]['epochs']} epochs)")
    return seconds, accs


def report_time_to_accuracy(benchmark: str, recipe: Path, runs: list[dict], baseline: dict | None,
                            baseline_name: str, target: float, data: str) -> None:
    """Print the side-by-side table and append cnnkit's figure (mean over seeds) and the baseline's."""
    seconds, accs = print_runs(recipe, runs)
    extra = {}
    if baseline:
        mark = "" if baseline["reached"] else f" (did not reach {target}% in {baseline['epochs']} epochs)"
        bound = "" if baseline["reached"] else "at least "  # a capped baseline gives a lower bound
        print(f"{baseline_name:<30}{baseline['seconds']:>10.1f}{baseline['accuracy']:>11.2f}%{mark}")
        print(f"ratio: cnnkit is {bound}{baseline['seconds'] / seconds:.1f}x faster")
        extra = {"baseline": baseline_name, "baseline_value": round(baseline["seconds"], 1),
                 "ratio": round(baseline["seconds"] / seconds, 1), "baseline_reached": baseline["reached"]}
        record(benchmark, baseline_name, "seconds", round(baseline["seconds"], 1),
               accuracy=round(baseline["accuracy"], 2), epochs=baseline["epochs"], runs=1, data=data,
               reached=baseline["reached"])
    record(benchmark, f"cnnkit-{recipe.stem}", "seconds", round(seconds, 1),
           accuracy=round(statistics.mean(accs), 2), accuracy_min=round(min(accs), 2), runs=len(runs),
           epochs=runs[0]["epochs"], data=data, **extra)

if __name__ == "__main__":
    main()
