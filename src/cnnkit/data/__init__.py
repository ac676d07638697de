"""Datasets in memory as uint8 tensors, their files, loaders and augmentation; names load on first use
(cnnkit.lazy), so that the catalog and the command line need no torch."""

from ..lazy import lazy_exports

_EXPORTS = {
    "AugmentConfig": "augment",
    "CATALOG": "catalog",
    "DatasetBundle": "datasets",
    "FolderImageDataset": "datasets",
    "InMemoryLoader": "loader",
    "LossyDataWarning": "datasets",
    "Preprocess": "augment",
    "TensorImageDataset": "datasets",
    "cutout": "augment",
    "describe_catalog": "datasets",
    "list_datasets": "catalog",
    "load_canvas": "canvas",
    "load_dataset": "datasets",
    "make_loader": "loader",
    "normalize": "augment",
    "random_crop": "augment",
    "random_flip": "augment",
    "random_subset": "datasets",
    "read_coco": "detection",
    "read_image": "formats",
    "read_voc": "detection",
    "read_voc_folder": "detection",
    "write_coco_json": "canvas",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
