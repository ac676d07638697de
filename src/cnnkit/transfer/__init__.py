"""Transfer learning: reuse a network trained on a large dataset for a new task with little data.

The notes' recipe (seed 003, "Transfer learning: fine tuning"; seed 002, "Train using transfer learning"):
replace the output layer, train the new head with the pretrained base frozen, then unfreeze some upper layers
and continue at about 0.1x the learning rate; with very little data, fit a linear classifier on features taken
from different stages. Each step is one call here:

    model = create_model("efficientnet_lite0", pretrained="imagenet")
    replace_head(model, num_classes=10)
    freeze(model)                                    # everything but the classifier; frozen BN stays in eval
    Trainer(model, data, TrainConfig(...)).fit()     # the one training loop
    unfreeze(model, from_="stage8")                  # the top stages, then train on at lr x 0.1

or all at once: ``finetune(model, data, "two-phase", TrainConfig(...))``; ``linear_probe(model, data,
stages=...)`` compares logistic regressions on each stage's pooled features; ``advise(n_images, similarity)``
returns the notes' 2x2 advice table entry. ``teach.teach(images, labels, classes, out=...)`` (the playground's
Teach page) fits such a regression on a few pictures per class and folds it into the network's own output layer
(``set_linear_head``), saved as an ordinary run folder.

Stages. ``stages(model)`` names the stages of every zoo model as its family defines them in its own
``feature_stages()`` (ResNet's ``layer1..4``, EfficientNet's ``stage2..8`` of the paper's Table 1, VGG/AlexNet
blocks between max-pools, ...; :mod:`cnnkit.models.stages` has the pieces). Each stage owns parameter
prefixes (for freezing and per-stage learning rates) and, for chain-shaped networks, a module computing it:
running the stages in order *is* the model's forward pass (a test checks this for every zoo model), which is
what lets ``stage_outputs`` stop early and ``extract_features`` return multi-stage outputs like timm's
``features_only``. The last stage is always ``classifier``: the layers ``replace_head`` renews.

Frozen layers stay in eval mode, batch norm included (why and how: :mod:`cnnkit.transfer.finetuning`); small
images are enlarged to the backbone's input size, never zero-padded.

One module per job: ``stage_groups`` (naming a model's stages), ``heads`` (new heads, input channels), ``finetuning``
(freezing, per-stage learning rates, the strategies), ``features`` (stage outputs, cached-feature training),
``probe`` (linear classifiers on features), ``advice`` (the 2x2 table), ``classify`` (photos through
pretrained weights), ``teach`` (a classifier from a few pictures per class).
"""

from .advice import LITTLE_DATA_BELOW, Advice, advise
from .classify import classify_images, load_photo
from .features import (FeatureDataset, StageTail, extract_features, feature_bundle, pool_features, stage_outputs,
                       train_on_features, transfer_preprocess)
from .finetuning import (STRATEGIES, finetune, freeze, hold_batchnorm_statistics, is_frozen, prepare,
                       stage_lr_multipliers, unfreeze)
from .heads import HeadNotFoundError, adapt_input_channels, replace_head, set_linear_head
from .probe import fit_linear_probe, folded_head, format_probe_table, linear_probe
from .stage_groups import CLASSIFIER, PooledClassifier, Stage, stage_names, stages, upper_stages

__all__ = [
    "CLASSIFIER", "LITTLE_DATA_BELOW", "STRATEGIES", "Advice", "FeatureDataset", "HeadNotFoundError",
    "PooledClassifier", "Stage", "StageTail", "adapt_input_channels", "advise", "classify_images", "extract_features",
    "feature_bundle", "finetune", "fit_linear_probe", "folded_head", "format_probe_table", "freeze",
    "hold_batchnorm_statistics", "is_frozen", "linear_probe", "load_photo", "pool_features", "prepare", "replace_head",
    "set_linear_head", "stage_lr_multipliers", "stage_names", "stage_outputs", "stages", "train_on_features",
    "transfer_preprocess", "unfreeze", "upper_stages",
]
