"""cnnkit's torchvision importer against torchvision itself (not in CI: torchvision is not a cnnkit dependency).

tests/test_import_references.py checks every layout against compact models written after torchvision's code;
this script checks the same layouts against the real thing: each torchvision model gets random weights and
batch-norm statistics, is saved as a .pth state dict, loaded with ``create_model(NAME, pretrained=FILE)`` and
both networks' logits are compared on random inputs. GoogLeNet must be refused (cnnkit builds the paper's
network, torchvision a different one). One row per model goes to results.jsonl.

    python3 -m venv /work/refvenv && /work/refvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 \\
        safetensors numpy pillow pyyaml tqdm
    /work/refvenv/bin/python benchmarks/torchvision_reference.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from record import record  # noqa: E402

from cnnkit.errors import CheckpointError  # noqa: E402
from cnnkit.models import create_model  # noqa: E402
from references.random_weights import randomise  # noqa: E402

# cnnkit name, torchvision builder, input size (the smallest both accept, to stay fast)
CASES = [
    ("resnet18", torchvision.models.resnet18, 64),
    ("resnet34", torchvision.models.resnet34, 64),
    ("resnet50", torchvision.models.resnet50, 64),
    ("resnet101", torchvision.models.resnet101, 64),
    ("vgg11", torchvision.models.vgg11, 32),
    ("vgg11_bn", torchvision.models.vgg11_bn, 32),
    ("vgg16", torchvision.models.vgg16, 32),
    ("vgg19_bn", torchvision.models.vgg19_bn, 32),
    ("alexnet_owt", torchvision.models.alexnet, 67),
]
NUM_CLASSES = 10


def main() -> None:
    torch.set_num_threads(2)
    versions = f"torch {torch.__version__}, torchvision {torchvision.__version__}"
    with tempfile.TemporaryDirectory() as tmp:
        for index, (name, builder, size) in enumerate(CASES):
            reference = randomise(builder(num_classes=NUM_CLASSES), seed=index)
            path = Path(tmp) / f"{name}.pth"
            torch.save(reference.state_dict(), path)
            imported = create_model(name, num_classes=NUM_CLASSES, pretrained=str(path)).eval()
            x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(index))
            with torch.no_grad():
                expected, got = reference(x), imported(x)
            gap = (expected - got).abs().max().item()
            print(f"{name:<12} max |logit diff| {gap:.2e}  (logit std {expected.std().item():.2f})")
            record("import_reference_torchvision", f"{name} vs torchvision.models.{builder.__name__}",
                   "max_abs_logit_diff", float(f"{gap:.3g}"), input_size=size, reference=versions,
                   passed=gap < 1e-4)
            path.unlink()
        path = Path(tmp) / "googlenet.pth"
        torch.save(torchvision.models.googlenet(num_classes=NUM_CLASSES, aux_logits=True, init_weights=True)
                   .state_dict(), path)
        try:
            create_model("googlenet", num_classes=NUM_CLASSES, pretrained=str(path))
            refused = False
        except CheckpointError as error:
            refused = True
            print(f"googlenet    refused: {str(error)[:160]}...")
        record("import_reference_torchvision", "googlenet vs torchvision.models.googlenet: refused (different network)",
               "refused", refused, reference=versions)


if __name__ == "__main__":
    main()
