"""COCO instance-segmentation dataset returning torchvision Mask R-CNN targets.

``CocoInstanceDataset[i]`` returns ``(image, target)``:

* ``image``: float32 tensor ``(3, H, W)``, RGB in ``[0, 1]`` (see ``transforms`` for sizes);
* ``target``: ``boxes`` (N, 4) float32 xyxy absolute pixels, ``labels`` (N,) int64 in 1..K,
  ``masks`` (N, H, W) uint8, ``image_id`` int (the COCO image id).

Crowd annotations (``iscrowd=1``) never appear in targets; they stay in the annotation file for
evaluation. Category ids (any integers, 0 included) map to labels 1..K in ascending id order,
see ``CategoryMap``. Structural problems raise at construction (``annotations.load_coco_json``);
per-annotation defects are skipped, counted in ``.defects`` and logged once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset

from .annotations import CategoryMap, clean_annotations, load_coco_json
from .image_io import DEFAULT_DECODER, read_image
from .transforms import apply_transform, image_to_tensor

log = logging.getLogger("detnorm.data")


def decode_masks(segmentations: list, height: int, width: int) -> np.ndarray:
    """Decode COCO segmentations (polygons, uncompressed or compressed RLE) to (N, H, W) uint8."""
    if not segmentations:
        return np.zeros((0, height, width), np.uint8)
    rles = []
    for seg in segmentations:
        if isinstance(seg, list):  # polygons: list of flat [x0, y0, x1, y1, ...]
            rles.append(mask_utils.merge(mask_utils.frPyObjects(seg, height, width)))
        elif isinstance(seg["counts"], list):  # uncompressed RLE
            rles.append(mask_utils.frPyObjects(seg, height, width))
        else:
            rles.append(seg)
    # decode() gives (H, W, N) in Fortran order, i.e. (N, W, H) in C order; cv2.transpose turns
    # each plane into C-order (H, W) about 3x faster than a numpy strided copy
    planes = mask_utils.decode(rles).transpose(2, 1, 0)
    out = np.empty((len(rles), height, width), np.uint8)
    for plane, dst in zip(planes, out, strict=True):
        cv2.transpose(plane, dst=dst)
    return out


class CocoInstanceDataset(Dataset):
    """Images and instance targets from a COCO JSON file.

    Args:
        ann_file: COCO instances JSON.
        image_dir: folder that ``file_name`` (subfolders allowed) is relative to.
        transform: an albumentations ``Compose`` from ``build_train_transform`` or None
            (None: original size, no augmentation).
        keep_empty: keep images that have no usable (non-crowd) annotation.
        category_map: label mapping to use (e.g. the training set's); default from this file.
        decoder: image decoder, see ``image_io.DECODERS``.
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_dir: str | os.PathLike,
        *,
        transform=None,
        keep_empty: bool = True,
        category_map: CategoryMap | None = None,
        decoder: str = DEFAULT_DECODER,
        name: str = "dataset",
    ):
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        self.transform = transform
        self.decoder = decoder
        self._seeded_for = None
        data = load_coco_json(self.ann_file)
        own_map = CategoryMap(data["categories"])
        if category_map is None:
            category_map = own_map
        else:
            unknown = sorted(set(own_map.cat_ids) - set(category_map.cat_ids))
            if unknown:
                raise ValueError(
                    f"{self.ann_file}: category ids {unknown} are not among the training "
                    f"categories {category_map.cat_ids}"
                )
        self.category_map = category_map
        per_image, self.defects = clean_annotations(data, self.ann_file)
        self.images = []
        self.records = []
        for img in data["images"]:
            anns = per_image.get(img["id"], [])
            if not anns and not keep_empty:
                continue
            path = self.image_dir / img["file_name"]
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"{self.ann_file}: image id {img['id']}: file {path} does not exist"
                )
            self.images.append(img)
            self.records.append(
                (
                    str(path),
                    np.array([a["bbox_xyxy"] for a in anns], np.float32).reshape(-1, 4),
                    np.array([category_map.label(a["category_id"]) for a in anns], np.int64),
                    [a["segmentation"] for a in anns],
                )
            )
        self.ids = [int(img["id"]) for img in self.images]
        if self.defects:
            summary = ", ".join(f"{n} {reason}" for reason, n in sorted(self.defects.items()))
            log.warning("%s %s: skipped annotations: %s", name, self.ann_file, summary)

    def __len__(self) -> int:
        return len(self.records)

    def aspect_groups(self) -> list[int]:
        """Group per image: 0 when width >= height (landscape/square), 1 when portrait."""
        return [0 if img["width"] >= img["height"] else 1 for img in self.images]

    def load_image(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB; raises if unreadable or its size disagrees with the JSON."""
        img = self.images[index]
        path = self.records[index][0]
        image = read_image(path, self.decoder)
        if image.shape[:2] != (img["height"], img["width"]):
            raise ValueError(
                f"{self.ann_file}: image id {img['id']}: file {path} is "
                f"{image.shape[1]}x{image.shape[0]} (WxH) but the annotation says "
                f"{img['width']}x{img['height']}"
            )
        return image

    def _seed_transform(self) -> None:
        """Give each loader worker its own augmentation stream (albumentations' Compose keeps a
        private RNG that would otherwise be copied identically into every worker)."""
        info = torch.utils.data.get_worker_info()
        key = (os.getpid(), None if info is None else info.id)
        if self.transform is not None and self._seeded_for != key:
            self.transform.set_random_seed(torch.initial_seed() % 2**32)
            self._seeded_for = key

    def __getitem__(self, key: int | tuple[int, int]):
        """``key`` is an index, or ``(index, augmentation_seed)`` from a sampler built with
        ``with_seeds=True`` (reproducible augmentation, also across resumes)."""
        index, aug_seed = key if isinstance(key, tuple) else (key, None)
        if aug_seed is None:
            self._seed_transform()
        elif self.transform is not None:
            self.transform.set_random_seed(aug_seed)
            self._seeded_for = None
        img = self.images[index]
        _, boxes, labels, segs = self.records[index]
        image = self.load_image(index)
        masks = decode_masks(segs, img["height"], img["width"])
        image, boxes, masks, keep = apply_transform(self.transform, image, boxes, masks)
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels[keep]),
            "masks": torch.from_numpy(masks),
            "image_id": int(img["id"]),
        }
        return image_to_tensor(image), target
