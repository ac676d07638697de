from .augment import AugmentConfig, Preprocess, cutout, normalize, random_crop, random_flip
from .catalog import CATALOG, list_datasets
from .datasets import (
                       DatasetBundle,
                       FolderImageDataset,
                       LossyDataWarning,
                       TensorImageDataset,
                       describe_catalog,
                       load_dataset,
                       random_subset,
)
from .formats import read_image
from .loader import InMemoryLoader, make_loader

__all__ = [
                       "CATALOG",
                       "AugmentConfig",
                       "DatasetBundle",
                       "FolderImageDataset",
                       "InMemoryLoader",
                       "LossyDataWarning",
                       "random_subset",
                       "Preprocess",
                       "TensorImageDataset",
                       "cutout",
                       "describe_catalog",
                       "list_datasets",
                       "load_dataset",
                       "make_loader",
                       "normalize",
                       "random_crop",
                       "random_flip",
                       "read_image",
]
