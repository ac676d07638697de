"""cnnkit.transfer.teach and the pieces it adds to transfer: a linear probe folded into one linear layer (checked
against scikit-learn's own probabilities), that layer made a network's output layer, the stratified held-out
split, and the refusals. The whole path (pretrained network, run folder, `cnnkit predict` and `cnnkit eval` on
it) is tested through the Teach page in tests/serve/test_teach_api.py."""

import pytest
import torch

from cnnkit import create_model
from cnnkit.card import card_of
from cnnkit.errors import DataError, ShapeError
from cnnkit.transfer import extract_features, fit_linear_probe, set_linear_head
from cnnkit.transfer.teach import check_teaching_data, confusion_matrix, held_out_split, save_taught_run


def clusters(num_classes: int, per_class: int, features: int = 12, spread: float = 1.5, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centres = 2 * torch.randn(num_classes, features, generator=generator) + 5  # far from standardised
    labels = torch.arange(num_classes).repeat(per_class)
    values = centres[labels] + spread * torch.randn(len(labels), features, generator=generator)
    values[:, 0] = 3.0  # a constant feature: scikit-learn's scaler leaves its scale at 1
    return values, labels


@pytest.mark.parametrize("num_classes", [2, 3])
def test_the_folded_layer_gives_scikit_learns_probabilities(num_classes):
    train_x, train_y = clusters(num_classes, 20)
    test_x, test_y = clusters(num_classes, 10, seed=1)
    probe = fit_linear_probe(train_x, train_y, test_x, test_y, c_values=(0.3,))
    logits = test_x @ probe["weight"].T + probe["bias"]
    assert probe["weight"].shape == (num_classes, 12) and probe["bias"].shape == (num_classes,)
    assert torch.allclose(torch.softmax(logits, 1), probe["probabilities"], atol=1e-5)


def test_log_loss_ranks_the_strengths_that_accuracy_leaves_tied():
    train_x, train_y = clusters(2, 12, spread=0.3)  # separable: every strength is 100 % accurate
    test_x, test_y = clusters(2, 5, spread=0.3, seed=1)
    strengths = (1e-4, 1e-2, 1.0)
    by_accuracy = fit_linear_probe(train_x, train_y, test_x, test_y, c_values=strengths)
    by_log_loss = fit_linear_probe(train_x, train_y, test_x, test_y, c_values=strengths, scoring="neg_log_loss")
    assert by_accuracy["C"] == 1e-4 and by_accuracy["cv_accuracy"] == 100.0  # the first of the tied
    assert by_log_loss["C"] == 1.0 and by_log_loss["cv_accuracy"] is None and by_log_loss["cv_score"] < 0
    assert by_log_loss["probabilities"].max(1).values.min() > by_accuracy["probabilities"].max(1).values.max()


def test_a_linear_head_set_on_a_network_computes_the_probe():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10).eval()
    images = torch.randn(4, 3, 32, 32)
    features = extract_features(model, images, channels_last=False)
    weight, bias = torch.randn(3, features.shape[1]), torch.randn(3)
    set_linear_head(model, weight, bias)
    with torch.no_grad():
        assert torch.allclose(model(images), features @ weight.T + bias, atol=1e-4)
    assert card_of(model).num_classes == 3 and card_of(model).classes is None
    with pytest.raises(ShapeError, match="reads 64 features; the head was fitted on 5"):
        set_linear_head(model, torch.randn(3, 5), torch.randn(3))
    with pytest.raises(ShapeError, match="weight \\(classes, features\\)"):
        set_linear_head(model, torch.randn(3, 64), torch.randn(4))


def test_the_held_out_split_takes_a_fifth_of_each_class():
    labels = torch.tensor([0] * 20 + [1] * 6 + [2] * 5)
    train, held_out = held_out_split(labels)
    assert sorted(torch.cat([train, held_out]).tolist()) == list(range(len(labels)))
    assert torch.bincount(labels[held_out]).tolist() == [4, 1, 1]
    assert torch.equal(held_out_split(labels)[1], held_out)  # the same split every time
    with pytest.raises(DataError, match="class 1 has 3 image\\(s\\); teaching needs at least 4 per class"):
        held_out_split(torch.tensor([0] * 5 + [1] * 3))


def test_confusion_rows_are_the_true_class():
    assert confusion_matrix(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 1]), 3) == [[1, 1, 0], [0, 1, 0],
                                                                                             [0, 1, 0]]


def test_teaching_data_is_checked_before_any_work(tmp_path):
    images = torch.zeros(10, 3, 224, 224, dtype=torch.uint8)
    labels = torch.tensor([0] * 5 + [1] * 5)
    with pytest.raises(DataError, match="uint8 \\(N, 3, H, W\\)"):
        check_teaching_data(images.float(), labels, ["a", "b"])
    with pytest.raises(DataError, match="10 images but 9 labels"):
        check_teaching_data(images, labels[:9], ["a", "b"])
    with pytest.raises(DataError, match="at least two classes with different names"):
        check_teaching_data(images, labels, ["a", "a"])
    with pytest.raises(DataError, match="no images for \\['c'\\]"):
        check_teaching_data(images, labels, ["a", "b", "c"])
    with pytest.raises(Exception, match="sorted order"):
        save_taught_run(tmp_path / "run", None, images, labels, labels[:8], labels[8:], {"classes": ["b", "a"]})


def test_a_taught_run_never_replaces_another(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.json").write_text("{}")
    images, labels = torch.zeros(10, 3, 8, 8, dtype=torch.uint8), torch.tensor([0] * 5 + [1] * 5)
    with pytest.raises(Exception, match="already holds a run"):
        save_taught_run(tmp_path / "run", None, images, labels, labels[:8], labels[8:], {"classes": ["a", "b"]})
    assert not (tmp_path / "run" / "images").exists()
