"""Every zoo classifier trains on grey and on colour data (issue 22: resnet18 and vgg11 crashed on MNIST, the
ImageNet normalisation turning a 1-channel batch into a 3-channel one). One representative per family (the
family's members share the stem and the preprocessing), tiny data, one optimiser step each."""

import pytest
import torch

from cnnkit import TrainConfig, Trainer, create_model
from cnnkit.models.registry import get_model_entry, list_models
from helpers import bar_dataset


def _representatives() -> list[str]:
    """The shallowest classifier of each family (the shortest name: resnet18, resnet20, vgg11, plain20), and of
    each paper input channel count within it (the fast family holds a grey and a colour network)."""
    seen, chosen = set(), []
    for name in sorted(list_models(), key=lambda n: (len(n), n)):
        entry = get_model_entry(name)
        key = (entry.family, entry.input_size[0])
        if entry.task == "classification" and key not in seen:
            seen.add(key)
            chosen.append(name)
    return chosen


REPRESENTATIVES = _representatives()


def test_every_classifier_family_is_covered():
    families = {get_model_entry(n).family for n in list_models() if get_model_entry(n).task == "classification"}
    assert {get_model_entry(n).family for n in REPRESENTATIVES} == families
    assert {"resnet", "vgg", "alexnet", "lenet"} <= families


@pytest.mark.parametrize("channels", [1, 3], ids=["grey", "colour"])
@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_classifier_trains_one_step_on_grey_and_colour_data(name, channels):
    entry = get_model_entry(name)
    size = max(28, entry.min_input_size)  # small inputs where the model allows; fixed-input models are resized
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, in_channels=channels)
    data = bar_dataset(n_train=4, n_test=2, size=size, channels=channels)
    config = TrainConfig(epochs=1, batch_size=4, eval_batch_size=2, lr=0.01, schedule="constant", progress=False,
                         input_size=size if entry.min_input_size > 1 and not entry.min_input_size >= max(
                             entry.input_size[1:]) else None)
    trainer = Trainer(model, data, config)
    assert len(trainer.preprocess.mean) == channels  # the batch keeps the data's channels
    summary = trainer.fit()
    assert torch.isfinite(torch.tensor(summary["test_loss"]))
