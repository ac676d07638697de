"""t-SNE embeddings, the confusion matrix and training curves."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from cnnkit.errors import CheckpointError
from cnnkit.viz import commands, penultimate_features
from viz_support import single_thread, single_thread_for_module_fixtures  # noqa: F401


class FixedFeatures(nn.Module):
    """A 'network' whose penultimate features are the input itself, followed by a linear classifier."""

    def __init__(self, dimensions: int, classes: int):
        super().__init__()
        self.body = nn.Identity()
        self.head = nn.Linear(dimensions, classes)

    def forward(self, x):
        return self.head(self.body(x))


def clustered_batches(per_class: int = 30, classes: int = 3, dimensions: int = 10, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centres = 10 * torch.randn(classes, dimensions, generator=generator)
    labels = torch.arange(classes).repeat_interleave(per_class)
    points = centres[labels] + torch.randn(len(labels), dimensions, generator=generator)
    order = torch.randperm(len(labels), generator=generator)
    points, labels = points[order], labels[order]
    return [(points[start:start + 16], labels[start:start + 16]) for start in range(0, len(labels), 16)]


def test_penultimate_features_are_the_classifier_input():
    batches = clustered_batches()
    features, labels = penultimate_features(FixedFeatures(10, 3), batches, max_examples=50)
    assert features.shape == (50, 10) and labels.shape == (50,)
    assert torch.equal(features, torch.cat([points for points, _ in batches])[:50])


def test_tsne_keeps_clusters_apart(tmp_path):
    coordinates, labels = commands.embed(FixedFeatures(10, 3), clustered_batches(), tmp_path,
                                         class_names=["a", "b", "c"])
    assert coordinates.shape == (90, 2)
    distances = np.linalg.norm(coordinates[:, None] - coordinates[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    nearest_agrees = labels[distances.argmin(axis=1)] == labels
    assert nearest_agrees.mean() >= 0.95
    assert (tmp_path / "embed.png").stat().st_size > 0


def test_confusion_matrix_counts_true_against_predicted(tmp_path):
    model = FixedFeatures(3, 3)
    with torch.no_grad():
        model.head.weight.copy_(torch.eye(3))
        model.head.bias.zero_()
    # Inputs are one-hot predictions: true labels 0,0,1,2,2 predicted as 0,1,1,2,0.
    predicted = torch.tensor([0, 1, 1, 2, 0])
    labels = torch.tensor([0, 0, 1, 2, 2])
    batches = [(torch.eye(3)[predicted[:3]], labels[:3]), (torch.eye(3)[predicted[3:]], labels[3:])]
    matrix = commands.confusion(model, batches, tmp_path, class_names=["cat", "dog", "eel"])
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert (tmp_path / "confusion.png").stat().st_size > 0


def test_curves_read_the_run_folder(tmp_path):
    (tmp_path / "metrics.csv").write_text(
        "epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds\n"
        "1,2.0,0.3,1.8,0.35,0.1,4.2\n"
        "2,1.2,0.6,1.1,0.62,0.05,4.1\n"
    )
    metrics = commands.curves(tmp_path, tmp_path)
    assert metrics["epoch"].tolist() == [1.0, 2.0]
    assert metrics["val_acc"].tolist() == [0.35, 0.62]
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_curves_without_metrics_say_what_was_expected(tmp_path):
    with pytest.raises(CheckpointError, match="metrics.csv"):
        commands.curves(tmp_path / "no-such-run", tmp_path)


def test_confusion_picture_of_a_thousand_classes_stays_a_sensible_size(tmp_path):
    from PIL import Image

    from cnnkit.viz import plot_confusion

    plot_confusion(torch.randint(0, 5, (1000, 1000)), tmp_path / "imagenet.png")
    with Image.open(tmp_path / "imagenet.png") as image:
        assert max(image.size) <= 2000
