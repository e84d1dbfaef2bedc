"""detnorm data layer: COCO files -> Mask R-CNN batches, plus the embedded synthetic dataset.

See ``transforms`` for where resizing and normalization happen, ``sampler`` for DDP sharding and
mid-epoch resume, ``paths`` for the accepted layouts and ``convert`` for labelme / label-image input.
"""

from .annotations import CategoryMap, load_coco_json
from .coco import CocoInstanceDataset, decode_masks
from .datamodule import DetectionDataModule, collate_detection
from .image_io import read_image
from .paths import resolve_data_paths
from .sampler import GroupedBatchSampler
from .synthetic import ensure_default_dataset, generate_dataset
from .transforms import build_train_transform

__all__ = [
    "CategoryMap",
    "CocoInstanceDataset",
    "DetectionDataModule",
    "GroupedBatchSampler",
    "build_train_transform",
    "collate_detection",
    "decode_masks",
    "ensure_default_dataset",
    "generate_dataset",
    "load_coco_json",
    "read_image",
    "resolve_data_paths",
]
