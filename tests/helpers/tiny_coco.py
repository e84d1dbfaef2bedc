"""Write tiny COCO instance datasets for tests: rectangles on noise, in detnorm's layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_split(root: Path, split: str, boxes_per_image: list[list[tuple]], size=64, seed=0):
    """``root/images/<split>_<i>.png`` and ``root/annotations/<split>.json``.

    ``boxes_per_image[i]``: ``(x, y, w, h, category_id)`` rectangles of image ``i`` (an empty
    list makes an image without annotations). Categories 1 and 2.
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i, boxes in enumerate(boxes_per_image):
        pixels = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        for x, y, w, h, cat in boxes:
            pixels[y : y + h, x : x + w] = (220, 60, 60) if cat == 1 else (60, 200, 90)
        name = f"{split}_{i}.png"
        Image.fromarray(pixels).save(root / "images" / name)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for x, y, w, h, cat in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat,
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
                         "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})  # fmt: skip
    cats = [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]
    data = {"images": images, "annotations": anns, "categories": cats}
    (root / "annotations" / f"{split}.json").write_text(json.dumps(data))
    return root
