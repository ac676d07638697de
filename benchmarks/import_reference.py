"""Imported CIFAR ResNets score what their authors' own code scores, on the same 10,000 test images.

For each akamaster/pytorch_resnet_cifar10 checkpoint (``resnetNN-*.th``, or a ``model.th`` its trainer saved):
  1. the ORIGINAL code: resnet.py from a snapshot of that repository (not part of cnnkit, never committed here),
     the trainer's evaluation (ToTensor, ImageNet normalisation, top-1 of the DataParallel-wrapped model);
  2. ``cnnkit import FILE --model resnetNN --data cifar10 --mean ... --std ...`` then ``cnnkit eval RUN``;
  3. the same import forced to cnnkit's layout before issue 23 (``--model-arg shortcut_padding=after``).
(1) and (2) must be the same number of correct images; (3) shows what the silent bug cost. Also the largest
|logit| difference between (1) and (2) over the first 1,000 test images. Figures go to results.jsonl.

    git clone https://github.com/akamaster/pytorch_resnet_cifar10 /tmp/akamaster   # outside this repository
    CNNKIT_DATA=../shared/datasets python benchmarks/import_reference.py --repo /tmp/akamaster \\
        /tmp/akamaster/pretrained_models/resnet20-12fca82f.th

The test images are cnnkit's CIFAR-10 test split (on this machine the lossy JPEG copy, so accuracies are a few
points below the authors' figures on the official files; both sides read the same images).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import record  # noqa: E402

from cnnkit.data import load_dataset  # noqa: E402
from cnnkit.train.checkpoint import load_model_checkpoint  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # akamaster trainer.py's transforms.Normalize
BENCHMARK = "import_reference_cifar_resnet"


def original_module(repo: Path):
    """The repository's resnet.py as a module (it only needs torch)."""
    spec = importlib.util.spec_from_file_location("akamaster_resnet", repo / "resnet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_batches(images: torch.Tensor, batch_size: int = 500):
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    for start in range(0, len(images), batch_size):
        yield start, (images[start:start + batch_size].float() / 255 - mean) / std


@torch.no_grad()
def logits_of(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(batch) for _, batch in test_batches(images)])


def cnnkit_eval(weights: Path, arch: str, out: Path, extra: list[str]) -> tuple[float, str]:
    """(top-1 %, command) of ``cnnkit import`` + ``cnnkit eval``, as a user would run them."""
    cli = [sys.executable, "-m", "cnnkit"]
    command = ["import", str(weights), "--model", arch, "--data", "cifar10", "--mean", ",".join(map(str, MEAN)),
               "--std", ",".join(map(str, STD)), "--out", str(out), *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    subprocess.run(cli + command, check=True, capture_output=True, text=True, env=env)
    result = subprocess.run(cli + ["eval", str(out), "--batch-size", "500"], check=True, capture_output=True,
                            text=True, env=env)
    match = re.search(r"top-1 accuracy ([0-9.]+)%", result.stdout)
    if not match:
        raise RuntimeError(f"unexpected cnnkit eval output: {result.stdout}\n{result.stderr}")
    return float(match.group(1)), "cnnkit " + " ".join(command) + f"; cnnkit eval {out}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, required=True, help="a snapshot of akamaster/pytorch_resnet_cifar10")
    parser.add_argument("weights", type=Path, nargs="+", help=".th checkpoints of that code")
    parser.add_argument("--arch", help="resnet20/32/44/56/110/1202 (default: from the file name)")
    parser.add_argument("--source", default="", help="a note on where the weights come from, stored with the rows")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # the lossy-copy warning: stated in the rows' "data" instead

    test = load_dataset("cifar10").test
    labels = test.labels
    original = original_module(args.repo)
    for weights in args.weights:
        arch = args.arch or re.search(r"resnet\d+", weights.name).group(0)
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
        checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
        reference = torch.nn.DataParallel(original.__dict__[arch]())  # as trainer.py builds it
        reference.load_state_dict(checkpoint["state_dict"])
        start = time.time()
        reference_logits = logits_of(reference, test.images)
        reference_correct = int((reference_logits.argmax(1) == labels).sum())
        reference_accuracy = 100.0 * reference_correct / len(labels)
        common = {"data": "cifar10-jpeg", "test_images": len(labels), "weights": f"{weights.name} (sha256 {digest})",
                  "source": args.source or None, "best_prec1_in_file": checkpoint.get("best_prec1")}
        record(BENCHMARK, f"{arch}: akamaster original code (resnet.py, trainer.py's evaluation)", "accuracy",
               round(reference_accuracy, 2), seconds=round(time.time() - start, 1), **common)

        with tempfile.TemporaryDirectory() as tmp:
            accuracy, command = cnnkit_eval(weights, arch, Path(tmp) / "run", [])
            imported, _ = load_model_checkpoint(Path(tmp) / "run")
            gap = (logits_of(imported, test.images[:1000]) - reference_logits[:1000]).abs().max().item()
            baseline = {"baseline": "akamaster original code", "baseline_value": round(reference_accuracy, 2)}
            record(BENCHMARK, f"{arch}: cnnkit import + cnnkit eval (shortcut_padding=both, chosen by the import)",
                   "accuracy", accuracy, **baseline, command=command, **common,
                   identical=round(accuracy * len(labels) / 100) == reference_correct)
            record(BENCHMARK, f"{arch}: cnnkit import vs original code, first 1,000 test images",
                   "max_abs_logit_diff", float(f"{gap:.3g}"), **common)
            old_accuracy, command = cnnkit_eval(weights, arch, Path(tmp) / "old",
                                                ["--model-arg", "shortcut_padding=after"])
            record(BENCHMARK, f"{arch}: cnnkit's layout before issue 23 (shortcut_padding=after)", "accuracy",
                   old_accuracy, **baseline, command=command, **common)


if __name__ == "__main__":
    main()
