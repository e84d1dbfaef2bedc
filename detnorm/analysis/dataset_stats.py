"""Statistics of a COCO instances file: classes, objects per image, object sizes, image sizes.

:func:`dataset_stats` returns plain dicts and lists (JSON-ready); ``detnorm.cli.inspect_data``
prints them as tables and draws them. Objects are the non-crowd annotations; crowd regions
are counted on their own. Sizes use the annotation's ``area`` (COCO's definition of small,
medium and large, which COCOeval applies; the box area ``w * h`` where ``area`` is missing)
against :data:`AREA_LIMITS`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

__all__ = ["AREA_LIMITS", "check_image_files", "dataset_stats", "size_class"]

AREA_LIMITS = (32**2, 96**2)  # COCO: small < 32^2 <= medium < 96^2 <= large (pixels)
SIZE_CLASSES = ("small", "medium", "large")
PROGRESS_MIN = 20_000  # show a progress bar from this many annotations / images on


def size_class(area: float) -> str:
    """``"small"``, ``"medium"`` or ``"large"`` for an object of ``area`` pixels."""
    return SIZE_CLASSES[int(np.searchsorted(AREA_LIMITS, area, side="right"))]


def _area(ann: dict) -> float:
    if ann.get("area") is not None:
        return float(ann["area"])
    w, h = ann["bbox"][2:4]
    return float(w) * float(h)


def dataset_stats(data: dict, *, name: str = "annotations") -> dict:
    """Statistics of a COCO dict (``images``, ``annotations``, ``categories``).

    Returns ``{"images", "objects", "crowd", "empty_images", "categories": [{"id", "name",
    "objects", "images", "crowd", "small", "medium", "large"}], "objects_per_image": {n:
    images}, "sizes": {"small", "medium", "large"}, "object_sqrt_areas": [...],
    "image_sizes": {"WxH": images}, "short_side": [min, max], "long_side": [min, max]}``.
    Annotations naming an unknown image or category raise ``ValueError`` naming the id.
    """
    images = {img["id"]: img for img in data["images"]}
    cats = {c["id"]: c for c in data["categories"]}
    per_cat = {cid: Counter() for cid in cats}
    cat_images: dict[int, set] = {cid: set() for cid in cats}
    per_image = Counter({img_id: 0 for img_id in images})
    sizes, sqrt_areas, crowd = Counter(dict.fromkeys(SIZE_CLASSES, 0)), [], 0
    anns = data["annotations"]
    for ann in tqdm(anns, desc=f"{name}: annotations", disable=len(anns) < PROGRESS_MIN):
        if ann["image_id"] not in images:
            raise ValueError(
                f"{name}: annotation {ann.get('id')} names unknown image {ann['image_id']}"
            )
        if ann["category_id"] not in cats:
            raise ValueError(f"{name}: annotation {ann.get('id')} names unknown category "
                             f"{ann['category_id']}")  # fmt: skip
        counts = per_cat[ann["category_id"]]
        if ann.get("iscrowd", 0):
            counts["crowd"] += 1
            crowd += 1
            continue
        area = _area(ann)
        size = size_class(area)
        counts["objects"] += 1
        counts[size] += 1
        sizes[size] += 1
        sqrt_areas.append(float(np.sqrt(max(area, 0.0))))
        cat_images[ann["category_id"]].add(ann["image_id"])
        per_image[ann["image_id"]] += 1
    wh = Counter(f"{img['width']}x{img['height']}" for img in images.values())
    shorts = [min(img["width"], img["height"]) for img in images.values()]
    longs = [max(img["width"], img["height"]) for img in images.values()]
    return {
        "images": len(images),
        "objects": sum(sizes.values()),
        "crowd": crowd,
        "empty_images": sum(n == 0 for n in per_image.values()),
        "categories": [
            {
                "id": cid,
                "name": c["name"],
                "objects": per_cat[cid]["objects"],
                "images": len(cat_images[cid]),
                "crowd": per_cat[cid]["crowd"],
                **{s: per_cat[cid][s] for s in SIZE_CLASSES},
            }
            for cid, c in cats.items()
        ],  # fmt: skip
        "objects_per_image": dict(sorted(Counter(per_image.values()).items())),
        "sizes": dict(sizes),
        "object_sqrt_areas": sqrt_areas,
        "image_sizes": dict(wh.most_common()),
        "short_side": [min(shorts), max(shorts)] if shorts else [0, 0],
        "long_side": [min(longs), max(longs)] if longs else [0, 0],
    }


def check_image_files(data: dict, folder: Path) -> dict:
    """Open every image's header under ``folder``: ``{"checked", "missing": [file names],
    "size_mismatch": [{"file_name", "json": [w, h], "file": [w, h]}], "unreadable": [...]}``."""
    from PIL import Image, UnidentifiedImageError

    out = {"checked": 0, "missing": [], "size_mismatch": [], "unreadable": []}
    images = data["images"]
    for img in tqdm(images, desc="image files", disable=len(images) < 1000):
        path = Path(folder) / img["file_name"]
        out["checked"] += 1
        if not path.is_file():
            out["missing"].append(img["file_name"])
            continue
        try:
            with Image.open(path) as im:
                size = list(im.size)
        except (OSError, UnidentifiedImageError):
            out["unreadable"].append(img["file_name"])
            continue
        if size != [img["width"], img["height"]]:
            out["size_mismatch"].append(
                {"file_name": img["file_name"], "json": [img["width"], img["height"]], "file": size}
            )
    return out
