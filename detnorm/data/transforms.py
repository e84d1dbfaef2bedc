"""Augmentations (albumentations 2.x) and where resizing and normalization happen.

Decision, done once and in one place each:

* **Training resize happens here, in the data loader.** Each training image is resized so that
  its shorter side is a random choice from ``train_scales`` while its longer side stays at most
  ``max_size`` (scale ``= min(s / short, max_size / long)``, one interpolation), then flipped
  horizontally with probability 0.5. Image (bilinear), masks (nearest) and boxes are transformed
  together by one ``albumentations.Compose``; boxes narrower or shorter than ``MIN_BOX_SIZE``
  pixels after the transform, and instances whose mask became empty, are dropped.
  Doing it in workers keeps the per-image resize off the training process, and the model's
  ``DetnormTransform`` does NOT resize in training mode.
* **Eval images are NOT resized here.** Val/test images come at their original size; the model's
  transform resizes them to its test size (``min_size``/``max_size``) in eval mode and maps the
  predicted boxes and masks back to the original image, so predictions are in the coordinates of
  the COCO ground truth.
* **Pixel normalization happens in the model** (``input_format`` "rgb": torchvision mean/std, or
  "caffe2": BGR 0-255 Detectron means), so the loader's output does not depend on which weights
  are loaded. The loader hands over float32 tensors ``3 x H x W``, RGB, values in ``[0, 1]``.

Boxes are xyxy in absolute pixels throughout (albumentations' ``pascal_voc`` format).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.augmentations.geometric.resize import MaxSizeTransform

MIN_BOX_SIZE = 1.0  # pixels; torchvision's Mask R-CNN rejects boxes with width or height <= 0


def shortest_edge_scale(height: int, width: int, short: int, max_size: int) -> float:
    """Scale that brings the short side to ``short`` unless the long side would pass ``max_size``."""
    return min(short / min(height, width), max_size / max(height, width))


class ShortestEdgeResize(MaxSizeTransform):
    """Resize to a random short side from ``scales`` with the long side capped at ``max_size``.

    Output size is ``round(H * s), round(W * s)`` with ``s = shortest_edge_scale(...)``.
    Masks use nearest-neighbour interpolation.
    """

    def __init__(self, scales: Sequence[int], max_size: int, p: float = 1.0):
        super().__init__(max_size=list(scales), p=p)
        self.scales = [int(s) for s in scales]
        self.cap = int(max_size)
        if not self.scales or min(self.scales) <= 0 or self.cap <= 0:
            raise ValueError(
                f"train_scales must be positive ints and max_size > 0, got {scales}, {max_size}"
            )

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]):
        height, width = params["shape"][:2]
        short = self.py_random.choice(self.scales)
        return {"scale": shortest_edge_scale(height, width, short, self.cap)}

    def apply(self, img: np.ndarray, scale: float, **params: Any) -> np.ndarray:
        height, width = img.shape[:2]
        if (round(height * scale), round(width * scale)) == (height, width):
            return img  # already at the target size: skip a full-image copy
        return super().apply(img, scale=scale, **params)

    def apply_to_masks(self, masks: np.ndarray, scale: float, **params: Any) -> np.ndarray:
        n, height, width = masks.shape[:3]
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if size == (width, height):
            return masks
        out = np.empty((n, size[1], size[0]), dtype=masks.dtype)
        for mask, dst in zip(masks, out, strict=True):  # per plane: no (H, W, N) transposes
            cv2.resize(mask, size, dst=dst, interpolation=cv2.INTER_NEAREST)
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scales", "cap")


def build_train_transform(
    train_scales: Sequence[int] = (800,), max_size: int = 1333, flip_prob: float = 0.5
) -> A.Compose:
    """Training pipeline: multi-scale shortest-edge resize + horizontal flip."""
    return A.Compose(
        [ShortestEdgeResize(train_scales, max_size), A.HorizontalFlip(p=flip_prob)],
        bbox_params=A.BboxParams(
            format="pascal_voc",
            label_fields=["instance_ids"],
            min_width=MIN_BOX_SIZE,
            min_height=MIN_BOX_SIZE,
            clip=True,
        ),
    )


def apply_transform(
    transform: A.Compose | None,
    image: np.ndarray,
    boxes: np.ndarray,
    masks: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Transform an image with its instances.

    Args: image (H, W, 3) uint8; boxes (N, 4) float32 xyxy pixels; masks (N, H, W) uint8.
    Returns ``(image, boxes, masks, keep)`` where ``keep`` (M,) int64 indexes the input instances
    that survived (boxes at least ``MIN_BOX_SIZE`` wide and high, non-empty masks).
    """
    n = len(boxes)
    if transform is not None:
        extra = {"masks": masks} if n else {}  # albumentations cannot stack zero masks
        out = transform(
            image=image, bboxes=boxes.reshape(-1, 4), instance_ids=np.arange(n), **extra
        )
        image = out["image"]
        keep = np.asarray(out["instance_ids"], dtype=np.int64).reshape(-1)
        boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        if n:
            masks = np.asarray(out["masks"], dtype=np.uint8).reshape(n, *image.shape[:2])
            if len(keep) < n:
                masks = masks[keep]
        else:
            masks = np.zeros((0, *image.shape[:2]), np.uint8)
    else:
        keep = np.arange(n, dtype=np.int64)
    if len(keep):
        nonempty = masks.reshape(len(keep), -1).any(axis=1)
        wide = (boxes[:, 2] - boxes[:, 0] >= MIN_BOX_SIZE) & (
            boxes[:, 3] - boxes[:, 1] >= MIN_BOX_SIZE
        )
        ok = nonempty & wide
        if not ok.all():
            keep, boxes, masks = keep[ok], boxes[ok], masks[ok]
    return image, boxes, masks, keep


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> contiguous float32 tensor (3, H, W) in [0, 1]."""
    # numpy, not torch ops: torch's intra-op thread pool stalls badly on a busy machine
    out = np.empty((3, *image.shape[:2]), np.float32)
    np.multiply(image.transpose(2, 0, 1), np.float32(1 / 255), out=out)
    return torch.from_numpy(out)
