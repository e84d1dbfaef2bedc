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
from .image_check import MAX_LISTED, BadImagesError, check_images, size_mismatch
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


def _ids(ids: list | None, limit: int = 5) -> str:
    if not ids:
        return ""
    more = f", ... ({len(ids)} in all)" if len(ids) > limit else ""
    return f" (annotation id{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids[:limit]))}{more})"


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
        skip_bad_images: leave out images whose file cannot be read (listed in
            ``skipped_images`` as ``(image_id, path, reason)``) instead of raising.
        check_images: read every image's header now (``image_check``); False only checks that
            the files exist.

    Construction raises ``image_check.BadImagesError`` listing every unreadable image (unless
    ``skip_bad_images``) and every image whose size differs from the annotation. An image that
    fails to decode later is never fatal, see ``__getitem__``.
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
        skip_bad_images: bool = False,
        check_images: bool = True,
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
        self.defect_ids: dict[str, list] = {}  # reason -> ids of the skipped annotations
        per_image, self.defects = clean_annotations(data, self.ann_file, self.defect_ids)
        self.name = name
        self.images = []
        self.records = []
        candidates = []
        for img in data["images"]:
            anns = per_image.get(img["id"], [])
            if not anns and not keep_empty:
                continue
            path = self.image_dir / img["file_name"]
            if not check_images and not os.path.isfile(path):
                raise FileNotFoundError(
                    f"{self.ann_file}: image id {img['id']}: file {path} does not exist"
                )
            candidates.append((img, anns, str(path)))
        self.skipped_images = (
            self._check_headers(candidates, skip_bad_images) if check_images else []
        )
        skipped = {image_id for image_id, _, _ in self.skipped_images}
        for img, anns, path in candidates:
            if img["id"] in skipped:
                continue
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
        self._groups: list[int] | None = None
        self._undecodable: dict[int, str] = {}  # index -> reason, in this (worker) process
        if self.defects:
            summary = ", ".join(
                f"{n} {reason}{_ids(self.defect_ids.get(reason))}"
                for reason, n in sorted(self.defects.items())
            )
            log.warning("%s %s: skipped annotations: %s", name, self.ann_file, summary)

    def _check_headers(self, candidates: list, skip: bool) -> list[tuple[int, str, str]]:
        """Run ``image_check`` over ``(img, anns, path)``; raise or return the skipped images."""
        checks, _ = check_images([c[2] for c in candidates], ann_file=self.ann_file,
                                 name=self.name)  # fmt: skip
        bad, mismatched = [], []
        for (img, _, path), check in zip(candidates, checks, strict=True):
            if check.error:
                bad.append((img["id"], path, check.error))
            elif line := size_mismatch(img["id"], path, check, img["width"], img["height"]):
                mismatched.append(line)
        if mismatched:
            raise BadImagesError(
                f"{self.ann_file}: {len(mismatched)} {self.name} image(s) differ in size from "
                f"the annotation's width/height:", mismatched,
            )  # fmt: skip
        if bad and not skip:
            raise BadImagesError(
                f"{self.ann_file}: {len(bad)} of {len(candidates)} {self.name} images cannot be "
                f"read; fix or remove them, or pass --skip-bad-images to leave them out:",
                [f"  image id {i}: {path}: {why}" for i, path, why in bad],
            )  # fmt: skip
        if bad:
            shown = "; ".join(f"id {i} ({why})" for i, _, why in bad[:MAX_LISTED])
            more = f"; ... and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
            log.warning("%s %s: skipped %d unreadable image(s) (--skip-bad-images): %s%s",
                        self.name, self.ann_file, len(bad), shown, more)  # fmt: skip
        return bad

    def __len__(self) -> int:
        return len(self.records)

    def aspect_groups(self) -> list[int]:
        """Group per image: 0 when width >= height (landscape/square), 1 when portrait."""
        return [0 if img["width"] >= img["height"] else 1 for img in self.images]

    def _replacement(self, index: int) -> int:
        """The next index after ``index`` (cyclic) in its aspect group not known to fail."""
        if self._groups is None:
            self._groups = self.aspect_groups()
        group, n = self._groups[index], len(self._groups)
        for step in range(1, n):
            j = (index + step) % n
            if self._groups[j] == group and j not in self._undecodable:
                return j
        raise RuntimeError(
            f"{self.ann_file}: no image of this aspect group decodes "
            f"({len(self._undecodable)} failed: {sorted(self._undecodable.values())[:3]})"
        )

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
        skipped = []
        while True:
            try:
                image = self.load_image(index)
                break
            except OSError as e:  # passed the header check, but the data does not decode
                img = self.images[index]
                self._undecodable[index] = str(e)
                skipped.append({"image_id": int(img["id"]), "reason": str(e)})
                if self.transform is None:  # evaluation: an image with no detections
                    return self._unreadable_sample(img, skipped)
                index = self._replacement(index)  # training: another of the same aspect
        img = self.images[index]
        _, boxes, labels, segs = self.records[index]
        masks = decode_masks(segs, img["height"], img["width"])
        image, boxes, masks, keep = apply_transform(self.transform, image, boxes, masks)
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels[keep]),
            "masks": torch.from_numpy(masks),
            "image_id": int(img["id"]),
        }
        if skipped:
            target["undecodable"] = skipped
        return image_to_tensor(image), target

    def _unreadable_sample(self, img: dict, skipped: list) -> tuple:
        """Placeholder for an evaluation image that failed to decode: a ``(3, 1, 1)`` zero
        image and a target with no objects and ``"undecodable"`` set; the module predicts
        nothing for it, so COCO evaluation counts it as an image without detections."""
        target = {
            "boxes": torch.zeros((0, 4)),
            "labels": torch.zeros((0,), dtype=torch.int64),
            "masks": torch.zeros((0, 1, 1), dtype=torch.uint8),
            "image_id": int(img["id"]),
            "undecodable": skipped,
        }
        return torch.zeros((3, 1, 1)), target
