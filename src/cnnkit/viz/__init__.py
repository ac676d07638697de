"""Looking inside a CNN: filters, feature maps, activation maximisation, attribution, embeddings, the
confusion matrix, training curves, the loss landscape, and receptive fields with their centre-surround index.

Every tool takes any ``nn.Module`` (layers named as in ``model.named_modules()``) and a preprocessed float
batch, returns tensors/arrays, and writes a PNG when given ``png=``. ``load_image(path, input_spec(model))``
turns an image file into such a batch. :mod:`cnnkit.viz.commands` has one function per ``cnnkit viz``
subcommand, each writing its PNG(s) into an output folder.
"""

from . import commands
from .attribution import explain, gradcam, saliency, smoothgrad
from .confusion import confusion_matrix, plot_confusion
from .curves import plot_curves, read_metrics
from .embed import penultimate_features, plot_embedding, tsne
from .filters import conv_weights, plot_filters, spatial_autocorrelation
from .hooks import UnitOutOfRangeError, find_layer, layer_names, record_outputs
from .images import InputSpec, input_spec, load_image
from .landscape import (
                        filter_normalized_direction,
                        fixed_subset,
                        landscape_statistics,
                        loss_along_line,
                        loss_surface,
)
from .maps import feature_maps, plot_feature_maps
from .maximize import MaximizeSettings, maximize_activation, total_variation
from .receptive import (
                        center_surround_index,
                        difference_of_gaussians,
                        fit_difference_of_gaussians,
                        plot_receptive_fields,
                        receptive_fields,
)

__all__ = [
    "InputSpec", "MaximizeSettings", "UnitOutOfRangeError", "center_surround_index", "commands", "confusion_matrix",
    "conv_weights", "difference_of_gaussians", "fit_difference_of_gaussians", "plot_receptive_fields",
    "receptive_fields",
    "explain", "feature_maps", "filter_normalized_direction", "find_layer", "fixed_subset", "gradcam",
    "input_spec", "landscape_statistics", "layer_names", "load_image", "loss_along_line", "loss_surface",
    "maximize_activation", "penultimate_features", "plot_confusion", "plot_curves", "plot_embedding",
    "plot_feature_maps", "plot_filters", "read_metrics", "record_outputs", "saliency", "smoothgrad",
    "spatial_autocorrelation", "total_variation", "tsne",
]
