"""A small random COCO ground truth and perturbed model outputs for it, shared by the
evaluation and ``tools/eval.py`` tests."""

from __future__ import annotations

import copy

import numpy as np
import pycocotools.mask as mask_util
import torch

CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 7, "name": "bird"}]
LABEL_TO_CAT = {1: 1, 2: 3, 3: 7}  # contiguous model labels -> sparse COCO ids


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE (column-major run lengths, starting with zeros), built by hand."""
    flat = mask.flatten(order="F").astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0, *counts]
    return {"size": list(mask.shape), "counts": counts}


def make_gt(seed: int = 0, first_id: int = 1):
    """A small random COCO GT: rectangles as polygons, ellipses as RLE, crowd regions, all sizes.

    Returns (dataset dict, {ann index: binary mask (H, W)}) with annotation ids from first_id.
    """
    rng = np.random.default_rng(seed)
    images, anns, masks = [], [], []
    for image_id in range(1, 9):
        h, w = int(rng.integers(80, 240)), int(rng.integers(80, 260))
        images.append(
            {"id": image_id * 10, "height": h, "width": w, "file_name": f"{image_id}.png"}
        )
        n = 0 if image_id == 5 else int(rng.integers(1, 6))
        for j in range(n):
            bw, bh = int(rng.integers(8, 0.7 * w)), int(rng.integers(8, 0.7 * h))
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            m = np.zeros((h, w), np.uint8)
            crowd = image_id % 3 == 0 and j == 0
            if j % 2 == 0:  # rectangle
                m[y0 : y0 + bh, x0 : x0 + bw] = 1
                seg = [[x0, y0, x0 + bw, y0, x0 + bw, y0 + bh, x0, y0 + bh]]
            else:  # ellipse
                yy, xx = np.mgrid[:h, :w]
                cy, cx = y0 + bh / 2, x0 + bw / 2
                m = (((yy - cy) / (bh / 2)) ** 2 + ((xx - cx) / (bw / 2)) ** 2 <= 1).astype(
                    np.uint8
                )
                seg = mask_util.encode(np.asfortranarray(m))
                seg["counts"] = seg["counts"].decode("ascii")
            if crowd:
                seg = uncompressed_rle(m)
            rle = mask_util.encode(np.asfortranarray(m))
            anns.append(
                {
                    "id": first_id + len(anns),
                    "image_id": image_id * 10,
                    "category_id": CATEGORIES[int(rng.integers(0, 3))]["id"],
                    "bbox": mask_util.toBbox(rle).tolist(),
                    "area": float(mask_util.area(rle)),
                    "iscrowd": int(crowd),
                    "segmentation": seg,
                }
            )
            masks.append(m)
    dataset = {"images": images, "annotations": anns, "categories": copy.deepcopy(CATEGORIES)}
    return dataset, masks


def make_outputs(dataset, masks, seed: int = 1):
    """Perturbed torchvision-style outputs (boxes xyxy, mask probabilities) for each image."""
    rng = np.random.default_rng(seed)
    cat_to_label = {c: lbl for lbl, c in LABEL_TO_CAT.items()}
    outputs, image_ids = [], []
    for img in dataset["images"]:
        h, w = img["height"], img["width"]
        dets = []
        for ann, m in zip(dataset["annotations"], masks, strict=True):
            if ann["image_id"] != img["id"] or rng.random() < 0.2:
                continue
            dy, dx = (int(v) for v in rng.integers(-3, 4, size=2))
            shifted = np.zeros_like(m)  # m moved by (dy, dx), zero-filled
            shifted[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = m[
                max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
            ]
            if not shifted.any():
                continue
            label = cat_to_label[ann["category_id"]]
            if rng.random() < 0.1:
                label = int(rng.integers(1, 4))
            dets.append((shifted, label))
        for _ in range(int(rng.integers(0, 3))):  # false positives
            fp = np.zeros((h, w), np.uint8)
            y, x = int(rng.integers(0, h - 10)), int(rng.integers(0, w - 10))
            fp[y : y + int(rng.integers(4, 40)), x : x + int(rng.integers(4, 40))] = 1
            dets.append((fp, int(rng.integers(1, 4))))
        boxes, probs = [], []
        for m, _ in dets:
            ys, xs = np.nonzero(m)
            jitter = rng.uniform(-1.5, 1.5, size=4)
            boxes.append([xs.min() + jitter[0], ys.min() + jitter[1], xs.max() + 1, ys.max() + 1])
            probs.append(m * rng.uniform(0.55, 1.0) + (1 - m) * rng.uniform(0.0, 0.45))
        outputs.append(
            {
                "boxes": torch.tensor(np.array(boxes).reshape(-1, 4), dtype=torch.float32),
                "scores": torch.tensor(rng.uniform(0.05, 1.0, len(dets)), dtype=torch.float32),
                "labels": torch.tensor([lbl for _, lbl in dets], dtype=torch.int64),
                "masks": torch.tensor(np.array(probs).reshape(-1, 1, h, w), dtype=torch.float32),
            }
        )
        image_ids.append(img["id"])
    return outputs, image_ids
