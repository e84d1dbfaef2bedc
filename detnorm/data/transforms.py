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
* **Optional augmentation, off by default** (so the default pipeline and its random stream are
  unchanged): ``scale_jitter=(lo, hi)`` multiplies that resize by a factor drawn uniformly from
  ``[lo, hi]`` and then crops (factor > 1, at a random position) or pads (factor < 1, zeros, at
  a random position) back to the unjittered size, image, masks and boxes together
  (:class:`ScaleJitterResize`, one interpolation; the large-scale jitter of torchvision's v2 recipes with the
  canvas of each image's own resize); ``color_jitter=(b, c, s, h)`` is albumentations'
  ``ColorJitter`` (factors in ``[1 - b, 1 + b]`` etc., hue shift in ``[-h, h]``), image only.
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
COLOR_JITTER_DEFAULT = (0.3, 0.3, 0.3, 0.05)  # brightness, contrast, saturation, hue


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


class ScaleJitterResize(ShortestEdgeResize):
    """:class:`ShortestEdgeResize` with its content zoomed by a random ``f`` in ``[low, high]``.

    The output has the plain resize's size ``(h0, w0) = (round(H * s), round(W * s))``; the
    image, resized by ``s * f`` (bilinear; masks nearest), sits at a random offset in it, so
    ``f > 1`` shows a random crop and ``f < 1`` the whole image on a zero canvas. One affine
    warp does resize, crop and pad, so the pixels are interpolated once. In continuous pixel
    coordinates ``x' = (f * w0 / W) * x - offset_x``, for the image, the masks and the boxes
    (xyxy, clipped to the output).
    """

    def __init__(self, scales: Sequence[int], max_size: int, low: float, high: float,
                 p: float = 1.0):  # fmt: skip
        super().__init__(scales, max_size, p=p)
        if not 0 < low <= high:
            raise ValueError(f"scale_jitter needs 0 < min <= max, got {low}, {high}")
        self.low, self.high = float(low), float(high)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]):
        height, width = params["shape"][:2]
        scale = super().get_params_dependent_on_data(params, data)["scale"]
        size = (max(1, round(width * scale)), max(1, round(height * scale)))  # (w0, h0)
        f = self.py_random.uniform(self.low, self.high)
        gain = (f * size[0] / width, f * size[1] / height)  # input px -> output px, per axis
        # offset < 0 when f < 1: the image sits inside the pad
        offset = (self.py_random.random() * (f - 1) * size[0],
                  self.py_random.random() * (f - 1) * size[1])  # fmt: skip
        # cv2 maps pixel centres (i + 0.5 in continuous coordinates): shift by 0.5 (gain - 1)
        matrix = np.array([[gain[0], 0, 0.5 * (gain[0] - 1) - offset[0]],
                           [0, gain[1], 0.5 * (gain[1] - 1) - offset[1]]])  # fmt: skip
        return {"matrix": matrix, "size": size, "factor": f, "offset": offset}

    @staticmethod
    def _warp(img: np.ndarray, matrix, size, interpolation, border) -> np.ndarray:
        out = cv2.warpAffine(img, matrix, size, flags=interpolation, borderMode=border,
                             borderValue=0)  # fmt: skip
        return out.reshape(size[1], size[0], *img.shape[2:])  # cv2 drops a 1-channel axis

    def apply(self, img: np.ndarray, matrix, size, factor, offset, **params: Any) -> np.ndarray:
        # edge pixels replicated (as cv2.resize does), then zeros outside the placed image
        out = self._warp(img, matrix, size, cv2.INTER_LINEAR, cv2.BORDER_REPLICATE)
        for axis, (n, off) in enumerate(zip((size[1], size[0]), (offset[1], offset[0]),
                                            strict=True)):  # fmt: skip
            centres = np.arange(n) + 0.5
            outside = (centres < -off) | (centres >= -off + factor * n)
            if outside.any():
                out[(slice(None),) * axis + (outside,)] = 0
        return out

    def apply_to_mask(self, mask: np.ndarray, matrix, size, **params: Any) -> np.ndarray:
        return self._warp(mask, matrix, size, cv2.INTER_NEAREST, cv2.BORDER_CONSTANT)

    def apply_to_masks(self, masks: np.ndarray, matrix, size, **params: Any) -> np.ndarray:
        out = np.empty((len(masks), size[1], size[0]), dtype=masks.dtype)
        for mask, dst in zip(masks, out, strict=True):
            dst[...] = self._warp(mask, matrix, size, cv2.INTER_NEAREST, cv2.BORDER_CONSTANT)
        return out

    def apply_to_bboxes(self, bboxes: np.ndarray, factor, offset, size, **params: Any):
        """``bboxes`` (N, 4 + extra): albumentations' xyxy normalized by the input size, to be
        returned normalized by the output size: ``x' = f * x - offset_x / w0``."""
        out = bboxes.copy()
        out[:, [0, 2]] = np.clip(bboxes[:, [0, 2]] * factor - offset[0] / size[0], 0, 1)
        out[:, [1, 3]] = np.clip(bboxes[:, [1, 3]] * factor - offset[1] / size[1], 0, 1)
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scales", "cap", "low", "high")


def build_train_transform(
    train_scales: Sequence[int] = (800,),
    max_size: int = 1333,
    flip_prob: float = 0.5,
    *,
    scale_jitter: Sequence[float] | None = None,
    color_jitter: Sequence[float] | None = None,
) -> A.Compose:
    """Training pipeline: multi-scale shortest-edge resize [with scale jitter and crop/pad] +
    horizontal flip [+ colour jitter]. ``scale_jitter``: ``(min, max)`` factors;
    ``color_jitter``: ``(brightness, contrast, saturation, hue)`` or True for
    :data:`COLOR_JITTER_DEFAULT`; None: off (the default)."""
    if scale_jitter is None:
        steps: list = [ShortestEdgeResize(train_scales, max_size)]
    else:
        steps = [ScaleJitterResize(train_scales, max_size, *scale_jitter)]
    steps.append(A.HorizontalFlip(p=flip_prob))
    if color_jitter is True:
        color_jitter = COLOR_JITTER_DEFAULT
    if color_jitter not in (None, False):
        b, c, s, h = (float(v) for v in color_jitter)
        steps.append(A.ColorJitter(brightness=(max(0, 1 - b), 1 + b), contrast=(max(0, 1 - c), 1 + c),
                                   saturation=(max(0, 1 - s), 1 + s), hue=(-h, h), p=1.0))  # fmt: skip
    return A.Compose(
        steps,
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
    that survived (boxes at least ``MIN_BOX_SIZE`` wide and high, non-empty masks). With
    :class:`ScaleJitterResize` in ``transform`` the boxes are recomputed as the tight boxes of
    the transformed masks (a crop cuts a shape, not its box); otherwise they are the
    transformed annotation boxes.
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
        if len(keep) and any(isinstance(t, ScaleJitterResize) for t in transform.transforms):
            boxes = mask_boxes(masks)
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


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) masks -> (N, 4) float32 xyxy tight boxes (pixel edges); zeros for an empty mask."""
    rows, cols = masks.any(axis=2), masks.any(axis=1)  # (N, H), (N, W)
    height, width = masks.shape[1:]
    x0, y0 = cols.argmax(axis=1), rows.argmax(axis=1)
    x1, y1 = width - cols[:, ::-1].argmax(axis=1), height - rows[:, ::-1].argmax(axis=1)
    boxes = np.stack([x0, y0, x1, y1], axis=1).astype(np.float32)
    boxes[~rows.any(axis=1)] = 0
    return boxes


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> contiguous float32 tensor (3, H, W) in [0, 1]."""
    # numpy, not torch ops: torch's intra-op thread pool stalls badly on a busy machine
    out = np.empty((3, *image.shape[:2]), np.float32)
    np.multiply(image.transpose(2, 0, 1), np.float32(1 / 255), out=out)
    return torch.from_numpy(out)
