"""Looking inside a CNN: filters, feature maps, activation maximisation, DeepDream, attribution, embeddings, the
confusion matrix, training curves, the loss landscape, and receptive fields with their centre-surround index.

Every tool takes any ``nn.Module`` (layers named as in ``model.named_modules()``) and a preprocessed float
batch, returns tensors/arrays, and writes a PNG when given ``png=``. ``load_image(path, input_spec(model))``
turns an image file into such a batch. :mod:`cnnkit.viz.commands` has one function per ``cnnkit viz``
subcommand, each writing its PNG(s) into an output folder.
"""

from ..lazy import lazy_exports

# Names load on first use (cnnkit.lazy): matplotlib and the tools stay unloaded until one is used.
_EXPORTS = {
    "DreamSettings": "deepdream",
    "InputSpec": "images",
    "MaximizeSettings": "maximize",
    "UnitOutOfRangeError": "hooks",
    "center_surround_index": "receptive",
    "commands": "",
    "confusion_matrix": "confusion",
    "conv_weights": "filters",
    "dead_unit_fraction": "dead_units",
    "dead_unit_fractions": "dead_units",
    "deconvnet": "backprojection",
    "deep_dream": "deepdream",
    "difference_of_gaussians": "receptive",
    "explain": "attribution",
    "feature_maps": "maps",
    "filter_normalized_direction": "landscape",
    "find_layer": "hooks",
    "fit_difference_of_gaussians": "receptive",
    "fixed_subset": "landscape",
    "gradcam": "attribution",
    "guided_backprop": "backprojection",
    "input_spec": "images",
    "integrated_gradients": "attribution",
    "landscape_statistics": "landscape",
    "layer_names": "hooks",
    "load_image": "images",
    "loss_along_line": "landscape",
    "loss_surface": "landscape",
    "maximize_activation": "maximize",
    "occlusion": "attribution",
    "penultimate_features": "embed",
    "plot_confusion": "confusion",
    "plot_curves": "curves",
    "plot_embedding": "embed",
    "plot_error_curves": "curves",
    "plot_feature_maps": "maps",
    "plot_filters": "filters",
    "plot_gradient_depth": "gradients",
    "plot_receptive_fields": "receptive",
    "read_metrics": "curves",
    "receptive_fields": "receptive",
    "record_outputs": "hooks",
    "relu_backward_rule": "backprojection",
    "saliency": "attribution",
    "smoothgrad": "attribution",
    "spatial_autocorrelation": "filters",
    "total_variation": "maximize",
    "tsne": "embed",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
