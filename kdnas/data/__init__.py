"""Datasets, the seeded train/val/test split, and the batch sources training reads from.

Small splits live on the training device as tensors, so a training step costs no DataLoader work; large
ones stream through a DataLoader. The search ranks candidates on the validation split; the test split is
only reported. See docs/data.md.
"""

from kdnas.data._augment import Augment, augment_batch
from kdnas.data._batches import BatchSource, LoaderSource, TensorSource, normalise
from kdnas.data._preprocess import check as check_preprocess, read_inputs
from kdnas.data._sources import DATASETS, ArrayImages, DatasetSource, FileImages, Images, Location, RawDataset
from kdnas.data._split import (IN_MEMORY_MAX_BYTES, DataConfig, DataSplit, check_data_root, load_raw, load_split,
                               resolve_root)
from kdnas.data._scan import scan_image_folder

__all__ = [
    "ArrayImages", "Augment", "augment_batch", "BatchSource", "check_data_root", "check_preprocess", "DataConfig",
    "DATASETS", "DatasetSource", "DataSplit", "FileImages", "Images", "IN_MEMORY_MAX_BYTES", "load_raw",
    "load_split", "LoaderSource", "Location", "normalise", "RawDataset", "read_inputs", "resolve_root",
    "scan_image_folder", "TensorSource",
]
